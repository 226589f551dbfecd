//! The binary's day-two command line — `logs`, `exec`, `restart` — both as `stevedore`
//! subcommands and as the kubectl plugin `kubectl stevedore` (the same binary, installed
//! or linked as `kubectl-stevedore`). The work is in [`stevedore::operate`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use stevedore::operate::exec::ExecOptions;
use stevedore::operate::locate::{self, Cluster, Located};
use stevedore::operate::logs::{Ended, LogOptions};
use stevedore::operate::{OperateError, Which, exec, logs, restart, select};
use stevedore::shutdown::{EXIT_INTERRUPTED, Shutdown};
use stevedore::standalone::commands::Source;

/// `kubectl logs`-style examples for the command line `program` (`stevedore` or
/// `kubectl stevedore`); the first names the manifests form too.
fn logs_examples(program: &str) -> String {
    let mut text = format!(
        "Examples:
  # The output of web's only replica (or of replica 0, saying so, when it has several)
  {program} logs web -n edge

  # Follow replica 2's output from the last 10 minutes, until Ctrl-C
  {program} logs web -n edge --replica 2 -f --since 10m

  # The last 20 lines of every replica, each line prefixed with its replica and target
  {program} logs web -n edge --all --tail 20

  # What replica 1's previous run wrote (before a crash, or before a replacement)
  {program} logs web -n edge --replica 1 -p"
    );
    if program == STEVEDORE {
        text.push_str(
            "

  # Without a cluster, from the manifests `stevedore run` reads (-f is --follow here,
  # as in kubectl and docker; the manifests take --filename)
  stevedore logs web --filename deploy/ -f",
        );
    }
    text
}

fn exec_examples(program: &str) -> String {
    let mut text = format!(
        "Examples:
  # A shell in web's replica 0, with a terminal
  {program} exec -it web -n edge -- sh

  # A command in replica 2; its output and its exit code come back
  {program} exec web -n edge --replica 2 -- cat /etc/hostname

  # Input from a pipe
  echo hello | {program} exec -i web -n edge -- cat"
    );
    if program == STEVEDORE {
        text.push_str(
            "

  # Without a cluster
  stevedore exec -it web --filename deploy/ -- sh",
        );
    }
    text
}

fn restart_examples(program: &str) -> String {
    let mut text = format!(
        "Examples:
  # Restart every replica of web as its updateStrategy rolls a change, health gate included
  {program} restart web -n edge"
    );
    if program == STEVEDORE {
        text.push_str(
            "

  # Without a cluster: each replica replaced in turn, the next once the last is healthy
  stevedore restart web --filename deploy/",
        );
    }
    text
}

const STEVEDORE: &str = "stevedore";
const PLUGIN: &str = "kubectl stevedore";

/// The day-two subcommands of `stevedore`.
#[derive(Subcommand)]
pub enum Command {
    /// Print the logs of a DockerContainer's replica (or of all of them).
    #[command(after_help = logs_examples(STEVEDORE))]
    Logs {
        #[command(flatten)]
        logs: LogsArgs,
        #[command(flatten)]
        place: Place,
    },
    /// Execute a command in a DockerContainer's replica.
    #[command(after_help = exec_examples(STEVEDORE))]
    Exec {
        #[command(flatten)]
        exec: ExecArgs,
        #[command(flatten)]
        place: Place,
    },
    /// Restart every replica of a DockerContainer through its rollout (never a bare
    /// `docker restart`).
    #[command(after_help = restart_examples(STEVEDORE))]
    Restart {
        #[command(flatten)]
        restart: RestartArgs,
        #[command(flatten)]
        place: Place,
    },
}

/// Look at and restart the replicas of Stevedore's DockerContainers: their logs, a command
/// run inside one, a rolling restart. Acts with your own kubeconfig and RBAC.
#[derive(Parser)]
#[command(name = PLUGIN, bin_name = PLUGIN, version)]
struct Plugin {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Print the logs of a DockerContainer's replica (or of all of them).
    #[command(after_help = logs_examples(PLUGIN))]
    Logs {
        #[command(flatten)]
        logs: LogsArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Execute a command in a DockerContainer's replica.
    #[command(after_help = exec_examples(PLUGIN))]
    Exec {
        #[command(flatten)]
        exec: ExecArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Restart every replica of a DockerContainer through its rollout.
    #[command(after_help = restart_examples(PLUGIN))]
    Restart {
        #[command(flatten)]
        restart: RestartArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// Where the object is: a cluster (the default) or a manifests directory.
#[derive(Args)]
pub struct Place {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Read the object from these manifests (files or directories) instead of a cluster,
    /// as `stevedore run` does. Long form only: `-f` is --follow in `logs`.
    #[arg(long = "filename", value_name = "DIR")]
    files: Vec<PathBuf>,
    /// With --filename: the run's identity on the daemons (`stevedore.dev/manager`).
    #[arg(long, default_value = "standalone", requires = "files")]
    manager: String,
}

/// How to reach the cluster, as kubectl does.
#[derive(Args)]
struct ClusterArgs {
    /// The namespace (default: the context's, else `default`).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long)]
    context: Option<String>,
}

#[derive(Args)]
pub struct LogsArgs {
    /// The DockerContainer.
    name: String,
    /// The replica to read.
    #[arg(long, value_name = "N", conflicts_with = "all")]
    replica: Option<u32>,
    /// Every replica, each line prefixed with `[replica N on TARGET]`.
    #[arg(long)]
    all: bool,
    /// Keep printing new output until Ctrl-C.
    #[arg(short, long)]
    follow: bool,
    /// Only output newer than this, e.g. 10s, 5m, 2h.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Only the last N lines (per replica).
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Put the daemon's timestamp in front of each line.
    #[arg(long)]
    timestamps: bool,
    /// The run before the current one: what the container wrote before the daemon last
    /// restarted it, else the container the last replacement ended.
    #[arg(short, long)]
    previous: bool,
    /// Prefix each line with its replica and target (the default with --all).
    #[arg(long)]
    prefix: bool,
}

#[derive(Args)]
pub struct ExecArgs {
    /// The DockerContainer.
    name: String,
    /// The replica to run in (default: the lowest-numbered, said when there are several).
    #[arg(long, value_name = "N")]
    replica: Option<u32>,
    /// Pass stdin to the command.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Give the command a terminal.
    #[arg(short = 't', long)]
    tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

#[derive(Args)]
pub struct RestartArgs {
    /// The DockerContainer.
    name: String,
}

/// Whether this process was started as `kubectl-stevedore` (kubectl's plugin lookup).
pub fn invoked_as_kubectl_plugin() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|name| name.starts_with("kubectl-stevedore"))
}

/// `kubectl stevedore …`.
pub fn plugin_main() -> ExitCode {
    let plugin = Plugin::parse();
    super::init_logging("warn", false);
    let command = match plugin.command {
        PluginCommand::Logs { logs, cluster } => Command::Logs {
            logs,
            place: Place::cluster(cluster),
        },
        PluginCommand::Exec { exec, cluster } => Command::Exec {
            exec,
            place: Place::cluster(cluster),
        },
        PluginCommand::Restart { restart, cluster } => Command::Restart {
            restart,
            place: Place::cluster(cluster),
        },
    };
    super::finish(super::block_on(async { Ok(command.run().await?) }))
}

impl Place {
    fn cluster(cluster: ClusterArgs) -> Self {
        Self {
            cluster,
            files: Vec::new(),
            manager: "standalone".into(),
        }
    }

    /// The manifests source, when --filename was given.
    fn manifests(&self) -> Option<Source> {
        if self.files.is_empty() {
            return None;
        }
        let mut source = Source::new(self.files.clone());
        if let Some(namespace) = &self.cluster.namespace {
            source.namespace = namespace.clone();
        }
        source.options.manager = self.manager.clone();
        Some(source)
    }

    async fn connect(&self) -> Result<Cluster, OperateError> {
        let args = &self.cluster;
        Cluster::connect(
            args.kubeconfig.as_deref(),
            args.context.as_deref(),
            args.namespace.as_deref(),
        )
        .await
    }

    async fn locate(&self, name: &str) -> Result<Located, OperateError> {
        match self.manifests() {
            Some(source) => locate::in_manifests(&source, name).await,
            None => self.connect().await?.locate(name).await,
        }
    }
}

impl Command {
    /// Runs the command: its exit code, or why it could not run.
    pub async fn run(self) -> Result<ExitCode, OperateError> {
        match self {
            Command::Logs { logs, place } => run_logs(logs, &place).await,
            Command::Exec { exec, place } => run_exec(exec, &place).await,
            Command::Restart { restart, place } => run_restart(restart, &place).await,
        }
    }
}

async fn run_logs(args: LogsArgs, place: &Place) -> Result<ExitCode, OperateError> {
    let located = place.locate(&args.name).await?;
    let which = match (args.replica, args.all) {
        (Some(index), _) => Which::Index(index),
        (None, true) => Which::All,
        (None, false) => Which::First,
    };
    let replicas = select(&located.object, located.replicas, which)?;
    let options = LogOptions {
        follow: args.follow,
        since: args.since,
        tail: args.tail,
        timestamps: args.timestamps,
        previous: args.previous,
        prefix: args.prefix || args.all,
    };
    Ok(match logs::print(&replicas, &options).await? {
        Ended::Complete => ExitCode::SUCCESS,
        Ended::Interrupted => ExitCode::from(EXIT_INTERRUPTED),
    })
}

async fn run_exec(args: ExecArgs, place: &Place) -> Result<ExitCode, OperateError> {
    let located = place.locate(&args.name).await?;
    let which = args.replica.map_or(Which::First, Which::Index);
    let replicas = select(&located.object, located.replicas, which)?;
    let Some(replica) = replicas.first() else {
        return Ok(ExitCode::FAILURE);
    };
    let options = ExecOptions {
        command: args.command,
        tty: args.tty,
        stdin: args.stdin,
    };
    let code = exec::run(replica, &options).await?;
    // The command's own exit code, as `docker exec` passes it on.
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

async fn run_restart(args: RestartArgs, place: &Place) -> Result<ExitCode, OperateError> {
    match place.manifests() {
        Some(source) => {
            let shutdown = Shutdown::on_signals(Duration::from_secs(25), |why| eprintln!("{why}"));
            restart::in_manifests(&source, &args.name, &shutdown).await?;
            Ok(if shutdown.is_draining() {
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                ExitCode::SUCCESS
            })
        }
        None => {
            let cluster = place.connect().await?;
            let done = restart::in_cluster(&cluster, &args.name).await?;
            writeln!(std::io::stdout(), "{done}")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
