//! The calls a person makes by hand on a running container — read its output, run a
//! command in it — as opposed to the converge calls of the parent module.

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{LogsOptionsBuilder, ResizeExecOptionsBuilder};
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use std::pin::Pin;
use tokio::io::AsyncWrite;

use super::{Call, DockerError, DockerHost};

/// Which part of a container's output to read.
#[derive(Clone, Debug, Default)]
pub struct LogRequest {
    /// Keep the stream open and pass on new output as it comes.
    pub follow: bool,
    /// Only output written at or after this time (unix seconds).
    pub since: Option<i64>,
    /// Only the last this many lines (of what the other settings select).
    pub tail: Option<usize>,
    /// Prefix every line with the daemon's RFC 3339 timestamp.
    pub timestamps: bool,
}

/// One piece of a container's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Written to standard output (or to the terminal, with a TTY).
    Stdout(Bytes),
    /// Written to standard error.
    Stderr(Bytes),
}

impl Output {
    fn from_bollard(output: LogOutput) -> Option<Self> {
        match output {
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                Some(Output::Stdout(message))
            }
            LogOutput::StdErr { message } => Some(Output::Stderr(message)),
            LogOutput::StdIn { .. } => None,
        }
    }
}

/// A stream of container output.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<Output, DockerError>> + Send>>;

/// A command to run inside a container.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Give it a terminal (stdout and stderr then arrive as one stream).
    pub tty: bool,
    /// Pass input to it.
    pub stdin: bool,
}

/// A command started inside a container: its output, its input, and its ID for resizing
/// the terminal and reading the exit code.
pub struct ExecSession {
    /// The exec instance's ID.
    pub id: String,
    /// What the command writes.
    pub output: OutputStream,
    /// What the command reads (closed when `stdin` was not asked for).
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

impl DockerHost {
    /// The output of container `id`, as the daemon keeps it (json-file or local driver).
    pub fn logs(&self, id: &str, request: &LogRequest) -> OutputStream {
        let _timer = self.count(Call::Logs);
        let mut options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(request.follow)
            .timestamps(request.timestamps);
        if let Some(since) = request.since {
            options = options.since(i32::try_from(since).unwrap_or(i32::MAX));
        }
        if let Some(tail) = request.tail {
            options = options.tail(&tail.to_string());
        }
        let what = format!("failed to read the log of {id} on {}", self.endpoint);
        Box::pin(
            self.docker
                .logs(id, Some(options.build()))
                .map_err(move |e| DockerError::from_bollard(&what, e))
                .try_filter_map(|output| async move { Ok(Output::from_bollard(output)) }),
        )
    }

    /// Starts `request.command` in container `id`, attached.
    pub async fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecSession, DockerError> {
        let _timer = self.count(Call::Exec);
        let fail = |what: &str| {
            let what = format!("failed to {what} in {id} on {}", self.endpoint);
            move |e| DockerError::from_bollard(&what, e)
        };
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    attach_stdin: Some(request.stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(request.tty),
                    cmd: Some(request.command.clone()),
                    ..Default::default()
                },
            )
            .await
            .map_err(fail("create an exec"))?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: request.tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(fail("start an exec"))?;
        match started {
            StartExecResults::Attached { output, input } => {
                let what = format!("the exec in {id} on {} failed", self.endpoint);
                Ok(ExecSession {
                    id: created.id,
                    output: Box::pin(
                        output
                            .map_err(move |e| DockerError::from_bollard(&what, e))
                            .try_filter_map(|o| async move { Ok(Output::from_bollard(o)) }),
                    ),
                    input,
                })
            }
            StartExecResults::Detached => Err(DockerError::new(
                super::ErrorKind::ServerError,
                format!(
                    "the daemon {} did not attach to the exec in {id}",
                    self.endpoint
                ),
            )),
        }
    }

    /// Tells an exec's terminal its size, so full-screen programs draw right.
    pub async fn resize_exec(
        &self,
        exec_id: &str,
        rows: u16,
        columns: u16,
    ) -> Result<(), DockerError> {
        let options = ResizeExecOptionsBuilder::default()
            .h(i32::from(rows))
            .w(i32::from(columns))
            .build();
        self.docker
            .resize_exec(exec_id, options)
            .await
            .map_err(|e| DockerError::from_bollard("failed to resize the exec's terminal", e))
    }

    /// The exit code of a finished exec (`None` while it runs).
    pub async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, DockerError> {
        let inspected = self
            .docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| DockerError::from_bollard("failed to read the exec's exit code", e))?;
        Ok(if inspected.running == Some(true) {
            None
        } else {
            inspected.exit_code
        })
    }
}
