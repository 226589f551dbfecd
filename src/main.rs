//! The `stevedore` command line; it only wires the library together.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Converges fleets of Docker hosts from Kubernetes custom resources.
#[derive(Parser)]
#[command(name = "stevedore", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CRD as multi-document YAML (`stevedore crds | kubectl apply -f -`).
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Crds { output_dir } => print_crds(output_dir),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

fn print_crds(output_dir: Option<PathBuf>) -> stevedore::Result<()> {
    let documents = stevedore::crd::documents()?;
    match output_dir {
        Some(dir) => stevedore::crd::write_dir(&documents, &dir),
        None => {
            print!("{}", stevedore::crd::multi_document(&documents));
            Ok(())
        }
    }
}

/// The error and its causes, joined by ": ".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
