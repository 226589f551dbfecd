//! `exec`: a command inside a replica, with the local terminal passed through (`-t`) or
//! plain streams, ending with the command's own exit code.

use std::io::{IsTerminal, Read, Write};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::terminal::{self, RawMode};
use super::{OperateError, Replica};
use crate::docker::session::{ExecRequest, Output};

/// What `exec` was asked for.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// `-t`: a terminal for the command.
    pub tty: bool,
    /// `-i`: pass stdin to the command.
    pub stdin: bool,
}

/// Runs the command in `replica` and returns its exit code.
pub async fn run(replica: &Replica, options: &ExecOptions) -> Result<i64, OperateError> {
    if options.command.is_empty() {
        return Err(OperateError::Invalid(
            "no command given: put it after --, e.g. `-- sh`".into(),
        ));
    }
    let mut tty = options.tty;
    if tty && !std::io::stdin().is_terminal() {
        // What kubectl does: say so and go on without one.
        eprintln!("Unable to use a TTY - input is not a terminal");
        tty = false;
    }
    let request = ExecRequest {
        command: options.command.clone(),
        tty,
        stdin: options.stdin,
    };
    let host = &replica.host;
    let mut session = host.exec(&replica.container.id, &request).await?;
    let raw = if tty { RawMode::enter() } else { None };
    if tty && let Some((rows, columns)) = terminal::size() {
        // A failed resize leaves an 80×24 terminal: worth no error.
        let _ = host.resize_exec(&session.id, rows, columns).await;
    }
    let mut keys = options.stdin.then(read_stdin);
    let mut input = Some(session.input);
    loop {
        tokio::select! {
            output = session.output.next() => match output {
                Some(Ok(output)) => write_output(&output),
                Some(Err(e)) => {
                    drop(raw);
                    return Err(e.into());
                }
                None => break,
            },
            chunk = next_chunk(&mut keys) => match chunk {
                Some(bytes) => {
                    if let Some(writer) = input.as_mut()
                        && writer.write_all(&bytes).await.is_err()
                    {
                        input = None;
                    }
                }
                None => {
                    // End of input: close the command's stdin, as `docker exec -i` does.
                    keys = None;
                    if let Some(mut writer) = input.take() {
                        let _ = writer.shutdown().await;
                    }
                }
            },
        }
    }
    drop(raw);
    exit_code(replica, &session.id).await
}

/// The exit code, once the daemon has it (the output can end a moment before).
async fn exit_code(replica: &Replica, exec_id: &str) -> Result<i64, OperateError> {
    for _ in 0..50 {
        if let Some(code) = replica.host.exec_exit_code(exec_id).await? {
            return Ok(code);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Err(OperateError::Invalid(format!(
        "the command in replica {} on {} ended its output but did not exit",
        replica.index, replica.target
    )))
}

/// The next chunk of stdin; never resolves once stdin is not read.
async fn next_chunk(keys: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match keys {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads stdin on a thread of its own: a read blocked on a terminal must not keep the
/// process from exiting when the command ends.
fn read_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buffer = [0u8; 4096];
        loop {
            match stdin.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.blocking_send(buffer[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    receiver
}

fn write_output(output: &Output) {
    // A closed stdout or stderr ends nothing here: the command decides when it is done.
    match output {
        Output::Stdout(bytes) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes).and_then(|()| out.flush());
        }
        Output::Stderr(bytes) => {
            let _ = std::io::stderr().write_all(bytes);
        }
    }
}
