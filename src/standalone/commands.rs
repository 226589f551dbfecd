//! The standalone commands: `run` (once or watching), `plan` and `status`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio::sync::{mpsc, watch};

use super::manifests::{self, DEFAULT_NAMESPACE, Manifests, ObjectKey};
use super::report::{self, StatusReport};
use super::world::{self, Memory, Round, WorldOptions};
use crate::api::validation::Admission;
use crate::converge::engine::{
    self, ConvergeReport, DesiredSet, LoopOptions, TargetMemory, observe_and_plan, unix_now,
};
use crate::converge::executor::{Executor, Progress};
use crate::converge::plan::Finding;
use crate::docker::DockerError;
use crate::shutdown::{EXIT_INTERRUPTED, Shutdown};

/// What every standalone command reads.
#[derive(Clone, Debug)]
pub struct Source {
    /// Files and directories of manifests.
    pub paths: Vec<PathBuf>,
    /// Namespace of objects that name none.
    pub namespace: String,
    /// Settings.
    pub options: WorldOptions,
}

impl Source {
    /// Manifests under `paths` in the default namespace.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            namespace: DEFAULT_NAMESPACE.into(),
            options: WorldOptions::default(),
        }
    }
}

/// How `status` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// A `List` of objects with their status, as JSON.
    Json,
    /// The same as YAML.
    Yaml,
}

fn admission() -> Option<Admission> {
    Admission::stevedore()
        .map_err(|e| eprintln!("error: {e}"))
        .ok()
}

/// The admission checks and a first load of the manifests, its problems printed; `None`
/// (after saying why) when the checks themselves cannot be built.
fn first_load(source: &Source) -> Option<(Admission, Manifests)> {
    let admission = admission()?;
    let manifests = load(source, &admission, None);
    print_errors(&manifests);
    Some((admission, manifests))
}

/// The manifests under `source`, for a command that reads them once (`logs`, `exec`,
/// `restart`); an object that breaks is left out and said so on stderr.
pub fn load_manifests(source: &Source) -> Result<Manifests, String> {
    let admission = Admission::stevedore().map_err(|e| e.to_string())?;
    let manifests = load(source, &admission, None);
    for error in &manifests.errors {
        eprintln!("warning: {error}");
    }
    Ok(manifests)
}

fn print_errors(manifests: &Manifests) {
    for error in &manifests.errors {
        eprintln!("error: {error}");
    }
}

/// Loads manifests, keeping the last good version of every object that broke.
fn load(source: &Source, admission: &Admission, last_good: Option<&Manifests>) -> Manifests {
    let mut manifests = manifests::load(&source.paths, &source.namespace, admission);
    if let Some(good) = last_good {
        keep_last_good(&mut manifests, good);
    }
    manifests
}

/// A broken object stands as it last was: never read as deleted.
fn keep_last_good(manifests: &mut Manifests, good: &Manifests) {
    fn restore<T: Clone>(
        now: &mut BTreeMap<ObjectKey, T>,
        good: &BTreeMap<ObjectKey, T>,
        key: &ObjectKey,
    ) -> bool {
        good.get(key)
            .map(|value| now.insert(key.clone(), value.clone()))
            .is_some()
    }
    let broken: Vec<ObjectKey> = manifests.broken.iter().cloned().collect();
    for key in broken {
        let restored = match key.kind.as_str() {
            "DockerTarget" => restore(&mut manifests.targets, &good.targets, &key),
            "Registry" => restore(&mut manifests.registries, &good.registries, &key),
            "DockerContainer" => restore(&mut manifests.containers, &good.containers, &key),
            "Secret" => restore(&mut manifests.secrets, &good.secrets, &key),
            "ConfigMap" => restore(&mut manifests.config_maps, &good.config_maps, &key),
            _ => false,
        };
        if restored {
            manifests.broken.remove(&key);
        }
    }
}

/// The exit code of `stevedore plan` when something would change.
pub const EXIT_CHANGES: u8 = 2;

/// `stevedore plan`: what would change on each target, nothing done. Exit 0 when nothing
/// would change, [`EXIT_CHANGES`] when something would, 1 on error. Fails only when `out`
/// does.
pub async fn plan(source: &Source, out: &mut impl Write) -> std::io::Result<ExitCode> {
    let Some((_, manifests)) = first_load(source) else {
        return Ok(ExitCode::FAILURE);
    };
    let mut memory = Memory::new(&source.options);
    let round = world::round(&manifests, &mut memory, &source.options).await;
    let mut changes = 0;
    let mut failed = !manifests.errors.is_empty();
    for (key, target) in &round.targets {
        writeln!(out, "target {}/{}:", key.namespace, key.name)?;
        let Some(host) = &target.host else {
            let why = target
                .error
                .as_ref()
                .map_or("not connected".into(), |e| e.to_string());
            writeln!(out, "  cannot plan: {why}")?;
            failed = true;
            continue;
        };
        match observe_and_plan(
            host,
            &target.identity,
            &target.desired,
            &TargetMemory::default(),
            unix_now(),
        )
        .await
        {
            Ok((_, plan)) => {
                for action in &plan.actions {
                    writeln!(
                        out,
                        "  {} {}: {}",
                        action.verb(),
                        subject(action, &plan),
                        action.reason()
                    )?;
                }
                for finding in plan.blocked.iter().chain(&plan.drift).chain(&plan.waiting) {
                    writeln!(out, "  ! {}: {}", finding.container, finding.reason)?;
                }
                if plan.actions.is_empty() {
                    writeln!(out, "  no changes")?;
                }
                changes += plan.actions.len();
            }
            Err(e) => {
                writeln!(out, "  cannot plan: {e}")?;
                failed = true;
            }
        }
    }
    for (key, problems) in &round.unplaced {
        for (replica, reason) in problems {
            writeln!(out, "! {key} replica {replica}: {reason}")?;
        }
    }
    for (key, error) in &round.container_errors {
        writeln!(out, "! {key}: {error}")?;
        failed = true;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else if changes > 0 {
        writeln!(out, "{changes} change(s)")?;
        ExitCode::from(EXIT_CHANGES)
    } else {
        writeln!(out, "no changes")?;
        ExitCode::SUCCESS
    })
}

fn subject(action: &crate::converge::plan::Action, plan: &crate::converge::plan::Plan) -> String {
    action.subjects(&plan.instances).join(", ")
}

/// `stevedore status`: every object's status, from the daemons.
pub async fn status(
    source: &Source,
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<ExitCode> {
    let Some((_, manifests)) = first_load(source) else {
        return Ok(ExitCode::FAILURE);
    };
    let mut memory = Memory::new(&source.options);
    let round = world::round(&manifests, &mut memory, &source.options).await;
    let report = report::status_report(&manifests, &round, report::Detail::Full).await;
    print_report(&report, format, out)?;
    Ok(if manifests.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(
    report: &StatusReport,
    format: Format,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let text = match format {
        Format::Table => report::table(report),
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Format::Yaml => serde_yaml_ng::to_string(report).unwrap_or_default(),
    };
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Prints progress: every action's result, and on a terminal (unless `quiet`) the pull
/// lines as one live, rewritten line.
fn spawn_progress_printer(quiet: bool) -> mpsc::UnboundedSender<Progress> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let live = !quiet && std::io::stderr().is_terminal();
    tokio::spawn(async move {
        // The last failure per subject: an action that fails the same way every round is
        // said once (until something else happens to the subject).
        let mut last_failure: HashMap<String, String> = HashMap::new();
        // What arrived together is written together: stderr is unbuffered, and a fleet's
        // converge reports thousands of actions at once.
        let mut out = String::new();
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(progress) = next {
                append_progress(progress, live, &mut last_failure, &mut out);
                next = rx.try_recv().ok();
            }
            let _ = std::io::stderr().write_all(out.as_bytes());
            out.clear();
        }
    });
    tx
}

/// Adds what `progress` says to `out`; `live` rewrites one line with the pulls' progress.
fn append_progress(
    progress: Progress,
    live: bool,
    last_failure: &mut HashMap<String, String>,
    out: &mut String,
) {
    if progress.message.starts_with("Pull: ") {
        if live {
            let line: String = format!("{}: {}", progress.subject, progress.message)
                .chars()
                .take(100)
                .collect();
            out.push_str("\r\x1b[2K");
            out.push_str(&line);
        }
        return;
    }
    // Every other line is a sentence that names its container (or image) itself. Only a
    // failure needs its shape (to say it once): not every created or started.
    let failure = progress
        .message
        .starts_with("failed to ")
        .then(|| without_digits(&progress.message));
    if failure.is_some() && last_failure.get(&progress.subject) == failure.as_ref() {
        return;
    }
    if live {
        out.push_str("\r\x1b[2K");
    }
    out.push_str(&progress.message);
    out.push('\n');
    match failure {
        Some(shape) => last_failure.insert(progress.subject, shape),
        None => last_failure.remove(&progress.subject),
    };
}

/// A line with its digits and object IDs left out: the same problem with another
/// countdown, count, or the ID of another attempt's endpoint or container (Docker names
/// them in its errors: `… on endpoint web_0 (e46d86…)`) is the same problem.
fn without_digits(line: &str) -> String {
    let mut shape = String::with_capacity(line.len());
    let mut run = String::new();
    let flush = |run: &mut String, shape: &mut String| {
        // Twelve hex characters or more: an ID (a word as `deadbeef` is shorter).
        if run.len() < 12 {
            shape.extend(run.chars().filter(|c| !c.is_ascii_digit()));
        }
        run.clear();
    };
    for c in line.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut shape);
            if !c.is_ascii_digit() {
                shape.push(c);
            }
        }
    }
    flush(&mut run, &mut shape);
    shape
}

/// Prints problems once while they last: a converge that runs every half second, or a
/// round every ten, must not repeat the same line (with a countdown in it) each time. A
/// line is printed again once it went away and came back.
#[derive(Default)]
struct Announcer {
    /// Per scope, what its previous call printed or held back, digits left out.
    last: HashMap<String, HashSet<String>>,
}

impl Announcer {
    /// Prints `lines` on stderr, leaving out those the previous call for `scope` had.
    fn announce(&mut self, scope: &str, lines: impl IntoIterator<Item = String>) {
        let before = self.last.remove(scope).unwrap_or_default();
        let mut now = HashSet::new();
        for line in lines {
            let shape = without_digits(&line);
            if !before.contains(&shape) {
                eprintln!("{line}");
            }
            now.insert(shape);
        }
        self.last.insert(scope.to_string(), now);
    }

    /// What one converge of target `key` could not do (or why it could not run).
    fn converged(&mut self, key: &ObjectKey, result: &Result<ConvergeReport, DockerError>) {
        let lines: Vec<String> = match result {
            Ok(report) => report
                .plan
                .blocked
                .iter()
                .chain(&report.plan.drift)
                .map(|f| format!("{key}: {}: {}", f.container, f.reason))
                .collect(),
            Err(e) => vec![format!("{key}: {e}")],
        };
        self.announce(&key.to_string(), lines);
    }

    /// What keeps a round's containers from converging: unplaced replicas, bad specs,
    /// digests that could not be checked.
    fn round(&mut self, round: &Round) {
        let unplaced = round.unplaced.iter().flat_map(|(key, problems)| {
            problems
                .iter()
                .map(move |(replica, reason)| format!("{key} replica {replica}: {reason}"))
        });
        let errors = round
            .container_errors
            .iter()
            .map(|(key, error)| format!("{key}: {error}"));
        let pins = round
            .pins
            .iter()
            .filter_map(|(key, pin)| Some(format!("{key}: {}", pin.problem.as_ref()?)));
        self.announce(
            "round",
            unplaced.chain(errors).chain(pins).collect::<Vec<_>>(),
        );
    }
}

/// `stevedore run --once`: converge, wait until every replica runs its current spec and is
/// ready, or `timeout` passes; print the status table. Exit 0 when that was reached, 1
/// otherwise.
///
/// Once `shutdown` drains, no new action starts; the run ends after what was under way
/// finished or rolled back, says which, and exits 130.
pub async fn run_once(
    source: &Source,
    timeout: Duration,
    quiet: bool,
    concurrency: usize,
    shutdown: &Shutdown,
) -> ExitCode {
    let Some((_, manifests)) = first_load(source) else {
        return ExitCode::FAILURE;
    };
    let progress = spawn_progress_printer(quiet);
    let mut memory = Memory::new(&source.options);
    let mut memories: HashMap<ObjectKey, TargetMemory> = HashMap::new();
    let mut announcer = Announcer::default();
    // What the last converge of each target could not do: the table reports it.
    let mut findings: HashMap<ObjectKey, Vec<Finding>> = HashMap::new();
    let mut drained = Drained::default();
    let deadline = Instant::now() + timeout;
    // When the last round's work was handed out: a target its converge listed again after
    // that (once its work was done) is not listed again by the next round.
    let mut handed_out = Instant::now();
    let settled_round = loop {
        let mut round =
            world::round_since(&manifests, &mut memory, &source.options, handed_out).await;
        handed_out = Instant::now();
        let connections = &memory.connections;
        let runs = round.targets.iter().filter_map(|(key, target)| {
            let host = target.host.clone()?;
            let executor = Executor::new(host.clone(), concurrency)
                .with_progress(progress.clone())
                .with_target_name(&key.name)
                .with_shutdown(shutdown.clone());
            let mut memory = memories.remove(key).unwrap_or_default();
            // The round listed each target it reached a moment ago: converge from that
            // list rather than asking again (a target it could not list is asked afresh).
            let listed = target
                .error
                .is_none()
                .then(|| target.observed.as_ref().clone());
            Some(async move {
                let result = match listed {
                    Some(listed) => Ok(engine::converge_listed(
                        &host,
                        &executor,
                        &target.identity,
                        &target.desired,
                        &mut memory,
                        listed,
                    )
                    .await),
                    None => {
                        engine::converge_once(
                            &host,
                            &executor,
                            &target.identity,
                            &target.desired,
                            &mut memory,
                        )
                        .await
                    }
                };
                // Work done, all of it: list the target now, while others still work. A
                // list that shows the target reached spares it another round; any other
                // list is the next round's, which then need not wait for every target.
                let mut reached = None;
                if let Ok(report) = &result
                    && !report.plan.is_empty()
                    && report.outcomes.iter().all(|o| o.result.is_ok())
                    && let Ok(listed) = connections.list(&target.identity.uid, &host).await
                    && engine::reached(
                        &host,
                        &target.identity,
                        &target.desired,
                        &memory,
                        listed.as_ref().clone(),
                    )
                    .await
                {
                    reached = Some(listed);
                }
                (key.clone(), memory, result, reached)
            })
        });
        // Done when every converge had nothing left to do (no leftovers, no orphans), or its
        // list after the work showed nothing left, and every instance was ready in what
        // was observed last.
        let mut settled = true;
        let mut all_succeeded = true;
        for (key, memory, result, reached) in join_all(runs).await {
            if shutdown.is_draining()
                && let Ok(report) = &result
            {
                drained.record(&report.outcomes);
            }
            announcer.converged(&key, &result);
            if let Ok(report) = &result {
                findings.insert(key.clone(), report.unfinished());
            }
            settled &= reached.is_some() || result.as_ref().is_ok_and(|r| r.plan.is_empty());
            all_succeeded &= result
                .as_ref()
                .is_ok_and(|r| r.outcomes.iter().all(|o| o.result.is_ok()));
            // What a target that reached its desired set runs: its list after the work.
            if let Some(listed) = reached
                && let Some(target) = round.targets.get_mut(&key)
            {
                target.observed = listed;
            }
            memories.insert(key, memory);
        }
        if shutdown.is_draining() {
            eprintln!("{}", drained.summary());
            return ExitCode::from(EXIT_INTERRUPTED);
        }
        if settled && round_ready(&round) {
            // Nothing was done in this round: what it observed is how things are.
            break Some(round);
        }
        if Instant::now() >= deadline {
            break None;
        }
        // After successful actions, look again at once; otherwise (waiting for health, or
        // something failed) give the daemons a moment.
        if settled || !all_succeeded {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.draining() => {}
            }
        }
    };
    let settled = settled_round.is_some();
    let mut round = match settled_round {
        Some(round) => round,
        None => world::round(&manifests, &mut memory, &source.options).await,
    };
    for (key, target) in &mut round.targets {
        target.findings = findings.remove(key).unwrap_or_default();
    }
    // The table needs readiness only: what the last round listed, no inspect per container.
    let report = report::status_report(&manifests, &round, report::Detail::Summary).await;
    // The table is for whoever reads stdout; if they left (`| head`), the exit code still
    // says whether the run converged.
    let _ = print_report(&report, Format::Table, &mut std::io::stdout());
    // Ready is not enough: old replicas serving a rollout that has not finished are ready.
    let converged = settled
        && report::all_ready(&report)
        && manifests.errors.is_empty()
        && round.unplaced.is_empty();
    // The process ends next. The fleet's state (a connection pool per daemon, every
    // target's containers) is freed beside the exit rather than before it: at a thousand
    // targets that took longer than printing the table.
    tokio::task::spawn_blocking(move || drop((manifests, memory, memories, round, report)));
    if converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Whether every desired instance runs its current spec, and is healthy where checked.
fn round_ready(round: &Round) -> bool {
    round.unplaced.is_empty()
        && round.container_errors.is_empty()
        && round.targets.values().all(|target| {
            target.error.is_none()
                && target
                    .desired
                    .instances
                    .iter()
                    .all(|d| d.ready_in(&target.observed))
        })
}

/// A fingerprint of the manifest files: their paths, sizes and contents.
fn files_fingerprint(paths: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match manifests::manifest_files(paths) {
        Ok(files) => {
            for file in files {
                file.hash(&mut hasher);
                std::fs::read(&file).unwrap_or_default().hash(&mut hasher);
            }
        }
        Err(e) => e.message.hash(&mut hasher),
    }
    hasher.finish()
}

/// One target's converge loop in watch mode.
struct TargetTask {
    desired: watch::Sender<Arc<DesiredSet>>,
    task: tokio::task::JoinHandle<()>,
    host: crate::docker::DockerHost,
}

/// `stevedore run`: converge, then keep converging on file changes (polled every 300 ms),
/// daemon events and resyncs until `shutdown` drains. Then no new action starts, and what
/// was under way finishes or rolls back before the drain's deadline: containers keep
/// running, and the run says what it finished and what it rolled back.
pub async fn run_watch(
    source: &Source,
    quiet: bool,
    concurrency: usize,
    resync: Duration,
    shutdown: &Shutdown,
) -> ExitCode {
    let Some(admission) = admission() else {
        return ExitCode::FAILURE;
    };
    let progress = spawn_progress_printer(quiet);
    let (reports_tx, mut reports) =
        mpsc::unbounded_channel::<(ObjectKey, Result<ConvergeReport, DockerError>)>();
    let mut memory = Memory::new(&source.options);
    let mut announcer = Announcer::default();
    let mut tasks: BTreeMap<ObjectKey, TargetTask> = BTreeMap::new();
    let mut last_good: Option<Manifests> = None;
    let mut fingerprint = None;
    let mut file_tick = tokio::time::interval(Duration::from_millis(300));
    let mut placement_tick = tokio::time::interval(Duration::from_secs(10));
    let mut manifests = Manifests::default();
    // The targets that have not converged since the last round was handed out: once none
    // is left, the round's transient memory (at first, a whole fleet's converge) is freed.
    let mut unsettled: BTreeSet<ObjectKey> = BTreeSet::new();
    loop {
        let mut reload = false;
        tokio::select! {
            deadline = shutdown.draining() => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                eprintln!(
                    "interrupted: starting nothing new; finishing or rolling back what is under \
                     way (for up to {} s; interrupt again to exit at once)",
                    left.as_millis().div_ceil(1000)
                );
                break;
            }
            Some((key, result)) = reports.recv() => {
                announcer.converged(&key, &result);
                if unsettled.remove(&key) && unsettled.is_empty() {
                    crate::memory::return_freed_pages();
                }
            }
            _ = file_tick.tick() => {
                let now = files_fingerprint(&source.paths);
                if fingerprint != Some(now) {
                    fingerprint = Some(now);
                    manifests = load(source, &admission, last_good.as_ref());
                    print_errors(&manifests);
                    // Broken objects were restored from the last good load above, so this
                    // load is the new last good one.
                    last_good = Some(manifests.clone());
                    reload = true;
                }
            }
            _ = placement_tick.tick() => reload = true,
        }
        if !reload {
            continue;
        }
        let round = world::round(&manifests, &mut memory, &source.options).await;
        announcer.round(&round);
        // Targets gone from the manifests (or unreachable) lose their loop. A removed
        // target's host is no longer managed by this run: its containers are left as they
        // are, as `run --once` would leave them; the replicas move to other targets.
        let gone: Vec<ObjectKey> = tasks
            .keys()
            .filter(|k| round.targets.get(*k).is_none_or(|t| t.host.is_none()))
            .cloned()
            .collect();
        for key in gone {
            if let Some(task) = tasks.remove(&key) {
                task.task.abort();
            }
        }
        for (key, target) in round.targets {
            let Some(host) = target.host else { continue };
            let desired = Arc::new(target.desired);
            if let Some(task) = tasks.get(&key)
                && !task.task.is_finished()
                && task.host.endpoint() == host.endpoint()
            {
                let _ = task.desired.send(desired);
                continue;
            }
            if let Some(old) = tasks.remove(&key) {
                old.task.abort();
            }
            let (tx, rx) = watch::channel(desired);
            let (target_reports_tx, mut target_reports) = mpsc::unbounded_channel();
            let forward = reports_tx.clone();
            let forward_key = key.clone();
            let executor = Executor::new(host.clone(), concurrency)
                .with_progress(progress.clone())
                .with_target_name(&key.name)
                .with_shutdown(shutdown.clone());
            let identity = target.identity.clone();
            let loop_host = host.clone();
            let task = tokio::spawn(async move {
                let options = LoopOptions {
                    resync_interval: resync,
                    ..LoopOptions::default()
                };
                let run = engine::run_target(
                    loop_host,
                    executor,
                    identity,
                    rx,
                    target_reports_tx,
                    options,
                );
                let forward = async move {
                    while let Some(result) = target_reports.recv().await {
                        if forward.send((forward_key.clone(), result)).is_err() {
                            break;
                        }
                    }
                };
                tokio::join!(run, forward);
            });
            tasks.insert(
                key,
                TargetTask {
                    desired: tx,
                    task,
                    host,
                },
            );
        }
        unsettled = tasks.keys().cloned().collect();
    }
    // Each target's loop ends after the converge under way; its report says what that
    // converge finished, rolled back or never started.
    drop(reports_tx);
    let mut drained = Drained::default();
    let give_up_at = shutdown
        .give_up_at()
        .unwrap_or_else(tokio::time::Instant::now);
    // Every target's loop holds a sender: the channel closes once the last one ended.
    let gave_up = loop {
        match tokio::time::timeout_at(give_up_at, reports.recv()).await {
            Ok(Some((key, result))) => {
                if let Ok(report) = &result {
                    drained.record(&report.outcomes);
                }
                announcer.converged(&key, &result);
            }
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    eprintln!("{}", drained.summary());
    if gave_up {
        eprintln!(
            "the grace period is over with work still under way: exiting now; the next run \
             repairs it from the containers' labels"
        );
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    ExitCode::SUCCESS
}

/// What the converges under way when the drain started did.
#[derive(Default)]
struct Drained {
    finished: Vec<String>,
    rolled_back: Vec<String>,
    not_started: usize,
    failed: Vec<String>,
}

impl Drained {
    fn record(&mut self, outcomes: &[crate::converge::executor::Outcome]) {
        for outcome in outcomes {
            let what = format!("{} {}", outcome.verb, outcome.subject);
            if outcome.not_started() {
                self.not_started += 1;
            } else if outcome.rolled_back() {
                self.rolled_back.push(what);
            } else if outcome.result.is_ok() {
                self.finished.push(what);
            } else {
                self.failed.push(what);
            }
        }
    }

    /// One line: what finished, what rolled back, what failed and how much never started.
    fn summary(&self) -> String {
        let mut parts = Vec::new();
        let mut list = |label: &str, items: &[String]| {
            if !items.is_empty() {
                parts.push(format!("{label} {}", items.join(", ")));
            }
        };
        list("finished", &self.finished);
        list("rolled back", &self.rolled_back);
        list("failed", &self.failed);
        if self.not_started > 0 {
            parts.push(format!("{} action(s) not started", self.not_started));
        }
        if parts.is_empty() {
            parts.push("nothing was under way".into());
        }
        format!("stopped: {}; containers keep running", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::without_digits;

    #[test]
    fn the_same_failure_with_other_ids_and_counts_has_one_shape() {
        let attempt = |endpoint: &str, seconds: u32| {
            format!(
                "failed to start ns_web_0 on local: ServerError: driver failed programming \
                 external connectivity on endpoint ns_web_0 ({endpoint}): Bind for \
                 127.0.0.1:25999 failed: port is already allocated; retry in {seconds} s"
            )
        };
        let first = attempt(
            "e46d8667595953e30bc0b9f28080ba64de3a3c32eaaf901fce7ad2ba663c5101",
            10,
        );
        let again = attempt(
            "c47620169d386cd50010875e289894e8b8808fde3375ea8dc8e9be5f3309f22e",
            20,
        );
        assert_eq!(without_digits(&first), without_digits(&again));
        // Words made of hex letters stay: "added" is not an ID.
        assert!(without_digits("a bad feed was added").contains("bad feed was added"));
        assert_ne!(
            without_digits("failed to start ns_web_0: port is already allocated"),
            without_digits("failed to start ns_web_0: no such image")
        );
    }
}
