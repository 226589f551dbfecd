//! The `stevedore` command line; it only wires the library together.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod daytwo;

use clap::{Args, Parser, Subcommand, ValueEnum};
use stevedore::shutdown::Shutdown;
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
        /// Converge, wait until every replica runs its current spec and is ready (or
        /// --timeout), print the status and exit: 0 when that was reached, 1 otherwise.
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
        /// On SIGINT or SIGTERM, how long what is under way may take to finish or roll back
        /// before Stevedore exits; a second signal exits at once.
        #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
        shutdown_grace_period: Duration,
    },
    /// Show what would change on each target, with the reason for each action; change
    /// nothing. Exit 0: no changes, 2: changes, 1: error.
    Plan {
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Run the Kubernetes controllers (in-cluster config or KUBECONFIG) until SIGTERM.
    Controller(ControllerArgs),
    /// Print the ClusterRole the controller needs (exactly the API calls it makes).
    Rbac,
    /// Print the API reference (Markdown), generated from the CRD schemas.
    ApiReference,
    /// Show the status of every object, computed from the daemons.
    Status {
        #[command(flatten)]
        source: SourceArgs,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    #[command(flatten)]
    DayTwo(daytwo::Command),
}

#[derive(Args)]
struct ControllerArgs {
    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = "STEVEDORE_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Take part in leader election on a Lease, so several replicas are safe; use
    /// `--leader-elect=false` for a single replica.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "stevedore-controller")]
    lease_name: String,
    /// Namespace of the Lease (the controller's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the election.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Split the fleet into this many shards, each held through a Lease
    /// (`<lease-name>-shard-<k>`) by one replica, so that every replica acts at once on
    /// its own targets; 0 keeps one acting replica (leader election). Use several shards
    /// per replica (4 × replicas is a good start) so that they spread evenly.
    #[arg(long, default_value_t = 0)]
    shards: u32,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_address: std::net::SocketAddr,
    /// This controller's identity on the daemons (`stevedore.dev/manager`).
    #[arg(long, default_value = "controller")]
    manager: String,
    /// Reconcile every object at least this often.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    resync: Duration,
    /// How often each DockerTarget's daemon is checked.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// Actions run at once per target and object.
    #[arg(long, default_value_t = stevedore::converge::executor::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Objects reconciled at once, per kind (0 = unbounded); for DockerContainers, those at
    /// work on their daemons at once, their finalizer and status writes overlapping.
    #[arg(long, default_value_t = stevedore::controller::context::DEFAULT_MAX_CONCURRENT_RECONCILES)]
    max_concurrent_reconciles: u16,
    /// On SIGTERM, how long reconciles under way may take to finish or roll back their
    /// Docker actions before the controller gives its lease up and exits (keep it below the
    /// pod's terminationGracePeriodSeconds); a second signal exits at once.
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    shutdown_grace_period: Duration,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
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
    // Installed as `kubectl-stevedore`, kubectl runs it as `kubectl stevedore …`.
    if daytwo::invoked_as_kubectl_plugin() {
        return daytwo::plugin_main();
    }
    let cli = Cli::parse();
    let (default_level, json) = match &cli.command {
        Command::Controller(args) => ("info", matches!(args.log_format, LogFormat::Json)),
        _ => ("warn", false),
    };
    init_logging(default_level, json);
    finish(match cli.command {
        Command::ApiReference => print_out(&stevedore::reference::markdown()),
        Command::Rbac => {
            let role = stevedore::controller::rbac::cluster_role("stevedore-controller");
            serde_yaml_ng::to_string(&role)
                .map_err(|e| format!("failed to render YAML: {e}").into())
                .and_then(|yaml| print_out(&yaml))
        }
        Command::Crds { output_dir } => print_crds(output_dir),
        command => block_on(run_async(command)),
    })
}

/// What a command ends with: its exit code, or why it could not run.
type Outcome = Result<ExitCode, Box<dyn std::error::Error>>;

/// The exit code of `outcome`, the error said on stderr. Whoever read stdout leaving early
/// (`stevedore status | head`) is not an error: the command just had nothing more to do.
fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(code) => code,
        Err(error) if closed_pipe(error.as_ref()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "error: {}",
                stevedore::error_chain::error_chain(error.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

/// Whether `error` is, or was caused by, writing to a pipe nobody reads any more.
fn closed_pipe(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Writes `text` to stdout.
fn print_out(text: &str) -> Outcome {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr: text for a person, JSON for the controller's log collector.
fn init_logging(default_level: &str, json: bool) {
    let directives = std::env::var(tracing_subscriber::EnvFilter::DEFAULT_ENV).ok();
    let filter = stevedore::logging::filter(directives.as_deref(), default_level);
    // Colour codes only where a person reads them, never into a file or a log collector.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

/// Runs `work` on a multi-threaded runtime.
fn block_on(work: impl std::future::Future<Output = Outcome>) -> Outcome {
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("failed to start the async runtime: {e}"))?;
    let outcome = runtime.block_on(work);
    // The command is done: what its tasks still hold (a fleet's thousands of idle
    // connections) goes with the process, not one drop after another before it exits.
    runtime.shutdown_background();
    outcome
}

async fn run_async(command: Command) -> Outcome {
    match command {
        Command::Crds { .. } | Command::Rbac | Command::ApiReference => Ok(ExitCode::FAILURE),
        Command::DayTwo(command) => Ok(command.run().await?),
        Command::Controller(args) => Ok(run_controller(args).await),
        Command::Run {
            source,
            once,
            timeout,
            no_progress,
            concurrency,
            resync,
            shutdown_grace_period,
        } => {
            let source = source.source();
            let shutdown = Shutdown::on_signals(shutdown_grace_period, |why| eprintln!("{why}"));
            Ok(if once {
                commands::run_once(&source, timeout, no_progress, concurrency, &shutdown).await
            } else {
                commands::run_watch(&source, no_progress, concurrency, resync, &shutdown).await
            })
        }
        Command::Plan { source } => {
            Ok(commands::plan(&source.source(), &mut std::io::stdout()).await?)
        }
        Command::Status { source, output } => {
            let format = match output {
                OutputFormat::Table => Format::Table,
                OutputFormat::Json => Format::Json,
                OutputFormat::Yaml => Format::Yaml,
            };
            Ok(commands::status(&source.source(), format, &mut std::io::stdout()).await?)
        }
    }
}

fn print_crds(output_dir: Option<PathBuf>) -> Outcome {
    let documents = stevedore::crd::documents()?;
    match output_dir {
        Some(dir) => {
            stevedore::crd::write_dir(&documents, &dir)?;
            Ok(ExitCode::SUCCESS)
        }
        None => print_out(&stevedore::crd::multi_document(&documents)),
    }
}

async fn run_controller(args: ControllerArgs) -> ExitCode {
    use stevedore::controller::shards::leases::Config as ShardLeases;
    use stevedore::controller::{LeaderElection, Options, Sharding, context::Settings};
    let identity = args.identity.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| format!("stevedore-{}", std::process::id()))
    });
    // Shards replace the election: every replica acts, each on its own shards.
    let sharding = (args.shards > 0).then(|| Sharding {
        shards: args.shards,
        leases: ShardLeases {
            name: args.lease_name.clone(),
            namespace: args.lease_namespace.clone(),
            identity: identity.clone(),
        },
    });
    let options = Options {
        namespace: args.namespace,
        leader_election: (args.leader_elect && sharding.is_none()).then_some(LeaderElection {
            lease_name: args.lease_name,
            lease_namespace: args.lease_namespace,
            identity,
        }),
        sharding,
        listen: args.metrics_address,
        settings: Settings {
            manager: args.manager,
            concurrency: args.concurrency,
            max_concurrent_reconciles: args.max_concurrent_reconciles,
            resync: args.resync,
            heartbeat: args.heartbeat,
            shutdown: Shutdown::on_signals(args.shutdown_grace_period, |why| {
                tracing::warn!("{why}");
            }),
            ..Settings::default()
        },
    };
    match stevedore::controller::run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The controller's log collector reads JSON lines: the error goes there.
            let error = stevedore::error_chain::error_chain(&error);
            tracing::error!(%error, "controller stopped");
            ExitCode::FAILURE
        }
    }
}
