//! The `stevedore` command line; it only wires the library together.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use stevedore::standalone::commands::{self, Format, Source};

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
    /// Converge the Docker targets the manifests describe, then keep them converged
    /// (file changes, daemon events) until interrupted. No cluster needed.
    Run {
        #[command(flatten)]
        source: SourceArgs,
        /// Converge, wait until every container is ready (or --timeout), print the status
        /// and exit: 0 when all are ready, 1 otherwise.
        #[arg(long)]
        once: bool,
        /// How long `--once` waits for readiness, e.g. 120s or 5m.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Plain lines only, no live progress.
        #[arg(long)]
        no_progress: bool,
        /// Actions run at once on one target.
        #[arg(long, default_value_t = stevedore::converge::executor::DEFAULT_CONCURRENCY)]
        concurrency: usize,
        /// Converge every target at least this often, events or not.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        resync: Duration,
    },
    /// Show what would change on each target, with the reason for each action; change
    /// nothing. Exit 0: no changes, 2: changes, 1: error.
    Plan {
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Show the status of every object, computed from the daemons.
    Status {
        #[command(flatten)]
        source: SourceArgs,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

#[derive(Args)]
struct SourceArgs {
    /// Manifest files or directories (multi-document YAML); repeat for several.
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// Namespace of objects that name none.
    #[arg(short, long, default_value = "default")]
    namespace: String,
    /// This run's identity on the daemons (`stevedore.dev/manager`): runs with different
    /// managers never touch each other's containers.
    #[arg(long, default_value = "standalone")]
    manager: String,
}

impl SourceArgs {
    fn source(self) -> Source {
        let mut source = Source::new(self.files);
        source.namespace = self.namespace;
        source.options.manager = self.manager;
        source
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
    Yaml,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Crds { output_dir } => match print_crds(output_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {}", stevedore::docker::error::error_chain(&error));
                ExitCode::FAILURE
            }
        },
        command => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("error: failed to start the async runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            let code = runtime.block_on(run_async(command));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
    }
}

async fn run_async(command: Command) -> i32 {
    match command {
        Command::Crds { .. } => 1,
        Command::Run {
            source,
            once,
            timeout,
            no_progress,
            concurrency,
            resync,
        } => {
            let source = source.source();
            if once {
                commands::run_once(&source, timeout, no_progress, concurrency).await
            } else {
                commands::run_watch(&source, no_progress, concurrency, resync).await
            }
        }
        Command::Plan { source } => commands::plan(&source.source(), &mut std::io::stdout()).await,
        Command::Status { source, output } => {
            let format = match output {
                OutputFormat::Table => Format::Table,
                OutputFormat::Json => Format::Json,
                OutputFormat::Yaml => Format::Yaml,
            };
            commands::status(&source.source(), format, &mut std::io::stdout()).await
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
