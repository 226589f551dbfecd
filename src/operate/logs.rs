//! `logs`: a replica's output as its daemon keeps it, one replica or all of them with a
//! prefix per line, followed until Ctrl-C if asked.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::select_all;

use super::{OperateError, Replica};
use crate::docker::HostContainer;
use crate::docker::session::{LogRequest, Output};

/// What `logs` was asked for.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// Keep printing new output until interrupted.
    pub follow: bool,
    /// Only output newer than this.
    pub since: Option<Duration>,
    /// Only the last this many lines per replica.
    pub tail: Option<usize>,
    /// Keep the daemon's timestamp in front of each line.
    pub timestamps: bool,
    /// The run before the current one: the output up to the last restart in place, else
    /// the replica's previous container.
    pub previous: bool,
    /// Put `[replica N on TARGET]` in front of each line.
    pub prefix: bool,
}

/// How printing ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Every stream ended.
    Complete,
    /// Ctrl-C (or SIGTERM) while following.
    Interrupted,
}

/// Prints the output of `replicas` to stdout and stderr as they wrote it.
pub async fn print(replicas: &[Replica], options: &LogOptions) -> Result<Ended, OperateError> {
    if options.previous {
        if options.follow {
            return Err(OperateError::Invalid(
                "--previous cannot be followed: that run has ended".into(),
            ));
        }
        for replica in replicas {
            print_previous(replica, options).await?;
        }
        return Ok(Ended::Complete);
    }
    let request = LogRequest {
        follow: options.follow,
        since: options.since.map(seconds_ago),
        tail: options.tail,
        timestamps: options.timestamps,
    };
    let streams = replicas.iter().enumerate().map(|(i, replica)| {
        replica
            .host
            .logs(&replica.container.id, &request)
            .map(move |item| (i, item))
    });
    let mut merged = select_all(streams);
    let mut lines = Lines::new(replicas, options.prefix);
    let interrupted = interrupted();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            next = merged.next() => match next {
                Some((i, Ok(output))) => {
                    if lines.write(i, &output).is_err() {
                        // Whoever read stdout is gone (`| head`): nothing left to do.
                        return Ok(Ended::Complete);
                    }
                }
                Some((i, Err(e))) => {
                    lines.finish();
                    return Err(OperateError::Invalid(format!(
                        "replica {} on {}: {e}",
                        replicas[i].index, replicas[i].target
                    )));
                }
                None => break,
            },
            () = &mut interrupted => {
                lines.finish();
                return Ok(Ended::Interrupted);
            }
        }
    }
    lines.finish();
    Ok(Ended::Complete)
}

/// The output of the runs before the current one when the container was started again in
/// place (everything the daemon kept up to its last exit), else that of the replica's
/// previous container.
async fn print_previous(replica: &Replica, options: &LogOptions) -> Result<(), OperateError> {
    let details = replica.host.inspect(&replica.container.id).await?;
    let time = |at: &Option<String>| {
        at.as_deref()
            .and_then(|at| humantime::parse_rfc3339_weak(at).ok())
    };
    // Started again after its last run ended (by the daemon's restart policy, or by
    // Stevedore starting an exited container): that run is the previous one, and it wrote
    // nothing after it ended. (The start time itself is no boundary: the daemon records it
    // a moment after the new run may have written its first lines.)
    let ended = match (time(&details.finished_at), time(&details.started_at)) {
        (Some(finished), Some(started)) if finished < started => finished,
        _ => {
            let Some(previous) = &replica.previous else {
                return Err(OperateError::NotFound(format!(
                    "replica {} on {} ({}) has not restarted since it was created, and no \
                     container of an earlier replacement is kept",
                    replica.index, replica.target, replica.container.name
                )));
            };
            return print_whole(replica, previous, options).await;
        }
    };
    let request = LogRequest {
        timestamps: true,
        ..Default::default()
    };
    let mut stream = replica.host.logs(&replica.container.id, &request);
    let mut kept: Vec<(bool, String)> = Vec::new();
    while let Some(output) = stream.next().await {
        let (is_err, bytes) = match output? {
            Output::Stdout(b) => (false, b),
            Output::Stderr(b) => (true, b),
        };
        for line in String::from_utf8_lossy(&bytes).lines() {
            let (at, text) = line.split_once(' ').unwrap_or((line, ""));
            let written = humantime::parse_rfc3339_weak(at).ok();
            if written.is_some_and(|w| w <= ended) {
                kept.push((
                    is_err,
                    if options.timestamps { line } else { text }.to_string(),
                ));
            }
        }
    }
    let skip = options.tail.map_or(0, |n| kept.len().saturating_sub(n));
    let mut lines = Lines::new(std::slice::from_ref(replica), options.prefix);
    for (is_err, text) in kept.into_iter().skip(skip) {
        let bytes = bytes::Bytes::from(format!("{text}\n"));
        let output = if is_err {
            Output::Stderr(bytes)
        } else {
            Output::Stdout(bytes)
        };
        if lines.write(0, &output).is_err() {
            return Ok(());
        }
    }
    lines.finish();
    Ok(())
}

/// All the output of `container` (a replica's previous one).
async fn print_whole(
    replica: &Replica,
    container: &HostContainer,
    options: &LogOptions,
) -> Result<(), OperateError> {
    let request = LogRequest {
        tail: options.tail,
        timestamps: options.timestamps,
        ..Default::default()
    };
    let mut stream = replica.host.logs(&container.id, &request);
    let mut lines = Lines::new(std::slice::from_ref(replica), options.prefix);
    while let Some(output) = stream.next().await {
        if lines.write(0, &output?).is_err() {
            return Ok(());
        }
    }
    lines.finish();
    Ok(())
}

/// Resolves on the first Ctrl-C or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = sigterm => {}
    }
}

fn seconds_ago(ago: Duration) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(ago).as_secs() as i64
}

/// Writes output to stdout/stderr, a prefix in front of each whole line when asked (a
/// line split over two chunks gets one prefix).
struct Lines {
    prefixes: Vec<Option<String>>,
    partial: HashMap<(usize, bool), Vec<u8>>,
}

impl Lines {
    fn new(replicas: &[Replica], prefix: bool) -> Self {
        Self {
            prefixes: replicas
                .iter()
                .map(|r| prefix.then(|| format!("[replica {} on {}] ", r.index, r.target)))
                .collect(),
            partial: HashMap::new(),
        }
    }

    /// Fails only when stdout is closed.
    fn write(&mut self, replica: usize, output: &Output) -> std::io::Result<()> {
        let (is_err, bytes) = match output {
            Output::Stdout(b) => (false, b),
            Output::Stderr(b) => (true, b),
        };
        let Some(Some(prefix)) = self.prefixes.get(replica) else {
            return emit(is_err, bytes);
        };
        let pending = self.partial.entry((replica, is_err)).or_default();
        pending.extend_from_slice(bytes);
        let Some(last_newline) = pending.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let rest = pending.split_off(last_newline + 1);
        let complete = std::mem::replace(pending, rest);
        let mut out = Vec::with_capacity(complete.len() + prefix.len() * 4);
        for line in complete.split_inclusive(|b| *b == b'\n') {
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(line);
        }
        emit(is_err, &out)
    }

    /// Writes what is left of unfinished lines.
    fn finish(&mut self) {
        for ((replica, is_err), rest) in std::mem::take(&mut self.partial) {
            if rest.is_empty() {
                continue;
            }
            let prefix = self.prefixes[replica].clone().unwrap_or_default();
            let mut out = prefix.into_bytes();
            out.extend_from_slice(&rest);
            out.push(b'\n');
            let _ = emit(is_err, &out);
        }
    }
}

/// Writes to stdout, or to stderr (whose failures are nobody's concern).
fn emit(is_err: bool, bytes: &[u8]) -> std::io::Result<()> {
    if is_err {
        let _ = std::io::stderr().write_all(bytes);
        Ok(())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes).and_then(|()| out.flush())
    }
}
