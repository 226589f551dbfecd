//! Converging one target, once or continuously: observe with one list call, plan, execute,
//! remember restarts; and a loop that converges again whenever the daemon reports a managed
//! container died or vanished, the desired set changes, a back-off expires, or the resync
//! interval passes.
//!
//! ```text
//!   daemon /events (filtered to this target's containers) ──┐  reconnect with back-off,
//!   desired set changes (watch channel) ────────────────────┼─> converge_once ──> reports
//!   resync timer, back-off timer ───────────────────────────┘  resync after reconnect
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc, watch};

use super::events;
use super::executor::{Executor, Outcome};
use super::model::DesiredInstance;
use super::plan::{Action, Finding, Plan, PlanInput, RestartBook, Verb, plan};
use crate::docker::{DockerError, DockerHost, HostContainer};
use crate::labels::LABEL_TARGET;
use crate::labels::{LABEL_SPEC_HASH, LABEL_UID};

/// What one target remembers between converges.
#[derive(Clone, Debug, Default)]
pub struct TargetMemory {
    /// Restart back-off per container.
    pub restarts: RestartBook,
    /// Container names seen on the target, to tell drift from a first creation.
    pub known: HashSet<String>,
    /// Containers stopped or killed from outside since the last converge.
    pub manual_stops: HashSet<String>,
    /// Spec hashes whose replacement failed its health check, with the time (unix
    /// seconds) until which the rollout stays stopped and the old containers serve.
    pub failed_rollouts: HashMap<String, u64>,
}

impl TargetMemory {
    /// Whether all it holds is the names of the containers seen.
    pub fn remembers_only_names(&self) -> bool {
        self.restarts.is_empty() && self.manual_stops.is_empty() && self.failed_rollouts.is_empty()
    }
}

/// How long a rollout whose new container failed its health check stays stopped before
/// it is tried again (a spec change tries at once: it has another hash).
pub const FAILED_ROLLOUT_HOLD_SECS: u64 = 300;

/// Who converges which target.
#[derive(Clone, Debug)]
pub struct TargetIdentity {
    /// The target's UID (`stevedore.dev/target`).
    pub uid: String,
    /// The manager identity (`stevedore.dev/manager`).
    pub manager: String,
}

/// What should run on one target.
#[derive(Clone, Debug, Default)]
pub struct DesiredSet {
    /// The instances, shared with the plans made from them (a plan's actions index into
    /// this slice, so planning copies none of them).
    pub instances: Arc<[DesiredInstance]>,
    /// Owners whose containers must be left alone (their manifests are broken).
    pub protected_owners: HashSet<String>,
    /// When set, only containers of this owner UID are looked at: the controller
    /// converges one DockerContainer at a time, and the others' containers on the same
    /// target are neither its business nor orphans.
    pub owner_scope: Option<String>,
}

/// The result of one converge.
#[derive(Debug)]
pub struct ConvergeReport {
    /// What was planned.
    pub plan: Plan,
    /// What each action did.
    pub outcomes: Vec<Outcome>,
    /// The managed containers the list call returned, before the actions ran.
    pub observed: Vec<HostContainer>,
}

impl ConvergeReport {
    /// What this converge left undone, per container: work it could not do, drift it only
    /// reports, and actions that failed. A failed pull is not listed itself: the create or
    /// replace that waited for the image fails with it, and names the container.
    pub fn unfinished(&self) -> Vec<Finding> {
        let failed = self.outcomes.iter().filter(|o| o.verb != Verb::Pull);
        self.plan
            .blocked
            .iter()
            .chain(&self.plan.drift)
            .cloned()
            .chain(failed.filter_map(|outcome| {
                Some(Finding {
                    container: outcome.subject.clone(),
                    reason: format!(
                        "{} failed: {}",
                        outcome.verb,
                        outcome.result.as_ref().err()?
                    ),
                })
            }))
            .collect()
    }
}

/// Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Observes one target (one list call, plus an image inspect for each image a new
/// container would need that no listed container shows) and plans it, without changing
/// anything.
pub async fn observe_and_plan(
    host: &DockerHost,
    identity: &TargetIdentity,
    desired: &DesiredSet,
    memory: &TargetMemory,
    now: u64,
) -> Result<(Vec<HostContainer>, Plan), DockerError> {
    let listed = host.list_labelled(LABEL_TARGET, &identity.uid).await?;
    Ok(plan_listed(host, identity, desired, memory, listed, now).await)
}

/// Plans one target from what a list call of its managed containers (`listed`) returned:
/// the owner scope applied, images inspected only where a new container needs one.
async fn plan_listed(
    host: &DockerHost,
    identity: &TargetIdentity,
    desired: &DesiredSet,
    memory: &TargetMemory,
    mut observed: Vec<HostContainer>,
    now: u64,
) -> (Vec<HostContainer>, Plan) {
    // An image that a listed container (of any owner) shows by its reference is on the
    // host as of that list, as an inspect would have said.
    let mut images: HashSet<String> = observed
        .iter()
        .filter_map(|c| c.current_image.as_deref())
        .filter(|image| desired.instances.iter().any(|d| d.image == *image))
        .map(str::to_string)
        .collect();
    if let Some(owner) = &desired.owner_scope {
        observed.retain(|c| c.labels.get(LABEL_UID) == Some(owner));
    }
    // Only instances without an up-to-date container may need their image; inspect those
    // images alone (a converged host needs no image call at all).
    let mut needed: Vec<&str> = desired
        .instances
        .iter()
        .filter(|d| {
            !observed.iter().any(|c| {
                c.name == d.name && c.labels.get(LABEL_SPEC_HASH) == Some(d.spec_hash.as_str())
            })
        })
        .map(|d| d.image.as_str())
        .filter(|image| !images.contains(*image))
        .collect();
    needed.sort_unstable();
    needed.dedup();
    for image in needed {
        // A reference the daemon cannot even look up (malformed, say) counts as absent:
        // its pull then fails for the instances that use it, not for the whole target.
        if let Ok(Some(_)) = host.image_id(image).await {
            images.insert(image.to_string());
        }
    }
    let plan = plan(&PlanInput {
        target_uid: &identity.uid,
        manager: &identity.manager,
        desired: &desired.instances,
        observed: &observed,
        images: &images,
        protected_owners: &desired.protected_owners,
        known_containers: &memory.known,
        restarts: &memory.restarts,
        manual_stops: &memory.manual_stops,
        now,
    });
    (observed, plan)
}

/// Whether `listed`, a list of the target made after a converge, shows `desired` reached:
/// nothing left to do or to report, and every instance running its current spec (healthy
/// where it has a health check). What another converge from that list would find, with no
/// call besides the image inspects a missing instance needs.
pub async fn reached(
    host: &DockerHost,
    identity: &TargetIdentity,
    desired: &DesiredSet,
    memory: &TargetMemory,
    listed: Vec<HostContainer>,
) -> bool {
    let (observed, plan) = plan_listed(host, identity, desired, memory, listed, unix_now()).await;
    plan.is_empty()
        && plan.blocked.is_empty()
        && plan.drift.is_empty()
        && plan.waiting.is_empty()
        && desired.instances.iter().all(|d| d.ready_in(&observed))
}

/// Converges one target once. A host that needs nothing costs exactly one list call.
pub async fn converge_once(
    host: &DockerHost,
    executor: &Executor,
    identity: &TargetIdentity,
    desired: &DesiredSet,
    memory: &mut TargetMemory,
) -> Result<ConvergeReport, DockerError> {
    let listed = host.list_labelled(LABEL_TARGET, &identity.uid).await?;
    Ok(converge_listed(host, executor, identity, desired, memory, listed).await)
}

/// Converges one target once from a list call the caller already made (`listed`: every
/// container labelled for the target): no second list.
pub async fn converge_listed(
    host: &DockerHost,
    executor: &Executor,
    identity: &TargetIdentity,
    desired: &DesiredSet,
    memory: &mut TargetMemory,
    listed: Vec<HostContainer>,
) -> ConvergeReport {
    let now = unix_now();
    memory.failed_rollouts.retain(|_, until| *until > now);
    // A rollout that failed its health check stays stopped: its owner's containers are
    // left as they are (the old ones serve) until the hold ends or the spec changes.
    let held: Vec<&DesiredInstance> = desired
        .instances
        .iter()
        .filter(|d| memory.failed_rollouts.contains_key(&d.spec_hash))
        .collect();
    let holding;
    let desired = if held.is_empty() {
        desired
    } else {
        let owners: HashSet<&str> = held.iter().map(|d| d.owner.uid.as_str()).collect();
        let mut set = desired.clone();
        set.instances = set
            .instances
            .iter()
            .filter(|d| !owners.contains(d.owner.uid.as_str()))
            .cloned()
            .collect();
        set.protected_owners
            .extend(owners.iter().map(|o| o.to_string()));
        holding = set;
        &holding
    };
    let (observed, mut plan) = plan_listed(host, identity, desired, memory, listed, now).await;
    for instance in held {
        let until = memory
            .failed_rollouts
            .get(&instance.spec_hash)
            .copied()
            .unwrap_or(now);
        plan.blocked.push(Finding {
            container: instance.name.clone(),
            reason: format!(
                "the rollout stopped: the new container failed its health check, so the old \
                 one keeps serving; it is tried again in {} s or on the next spec change",
                until.saturating_sub(now)
            ),
        });
    }
    let outcomes = if plan.is_empty() {
        Vec::new()
    } else {
        executor.run(&plan).await
    };
    remember(memory, &plan, &outcomes, &observed, &desired.instances, now);
    ConvergeReport {
        plan,
        outcomes,
        observed,
    }
}

fn remember(
    memory: &mut TargetMemory,
    plan: &Plan,
    outcomes: &[Outcome],
    observed: &[HostContainer],
    desired: &[DesiredInstance],
    now: u64,
) {
    let succeeded = |name: &str| {
        outcomes
            .iter()
            .any(|o| o.subject == name && o.result.is_ok())
    };
    for action in &plan.actions {
        if let Action::Start {
            container,
            restart: true,
            ..
        } = action
            && succeeded(&container.name)
        {
            memory.restarts.record_restart(&container.id, now);
        }
    }
    for instance in desired {
        if observed.iter().any(|c| c.name == instance.name) || succeeded(&instance.name) {
            memory.known.insert(instance.name.clone());
        }
    }
    let replaced = plan.actions.iter().flat_map(Action::replaced);
    for instance in replaced.filter_map(|index| desired.get(index)) {
        if outcomes.iter().any(|o| {
            o.subject == instance.name
                && matches!(&o.result, Err(e) if e.kind == crate::docker::ErrorKind::Unhealthy)
        }) {
            memory
                .failed_rollouts
                .insert(instance.spec_hash.clone(), now + FAILED_ROLLOUT_HOLD_SECS);
        }
    }
    let live: HashSet<&str> = observed.iter().map(|c| c.id.as_str()).collect();
    memory.restarts.retain(&live);
    memory.manual_stops.retain(|id| {
        live.contains(id.as_str())
            && !plan.actions.iter().any(|a| {
                matches!(a, Action::Start { container, .. } if &container.id == id
                    && succeeded(&container.name))
            })
    });
}

/// How soon a converge whose actions changed something is followed by another: a change
/// can leave work that waits on it (a leftover removed only once its replacement runs),
/// and a look that finds nothing to do costs one list call. The controller requeues by it
/// too.
pub const LOOK_AGAIN_AFTER_CHANGES: Duration = Duration::from_secs(2);

/// How soon an event-triggered converge that found nothing to do looks once more.
const EVENT_RECHECK: Duration = Duration::from_millis(200);

/// How a continuously converging target behaves.
#[derive(Clone, Copy, Debug)]
pub struct LoopOptions {
    /// Converge at least this often even without events.
    pub resync_interval: Duration,
    /// After a wake-up, wait this long for a burst of events to settle.
    pub debounce: Duration,
    /// After a failed converge (host unreachable), try again after this long.
    pub retry_after_error: Duration,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(60),
            debounce: Duration::from_millis(50),
            retry_after_error: Duration::from_secs(5),
        }
    }
}

/// Converges one target until `desired` is closed or the executor's shutdown drains: at
/// start, on disruptive daemon events, on every change of the desired set, when a restart
/// back-off expires and on resync. Each converge's report (or error) goes to `reports`; a
/// converge under way when the drain starts ends first (its actions finished or rolled
/// back) and is reported.
pub async fn run_target(
    host: DockerHost,
    executor: Executor,
    identity: TargetIdentity,
    mut desired: watch::Receiver<Arc<DesiredSet>>,
    reports: mpsc::UnboundedSender<Result<ConvergeReport, DockerError>>,
    options: LoopOptions,
) {
    let wake = Arc::new(Notify::new());
    let manual_stops = Arc::new(Mutex::new(HashSet::new()));
    // Every (re)connect and every disruption wakes the loop (not its own creates and
    // starts).
    let waker = wake.clone();
    let watcher = tokio::spawn(events::follow(
        host.clone(),
        identity.uid.clone(),
        manual_stops.clone(),
        move |heard| {
            if !matches!(heard, events::Heard::Activity) {
                waker.notify_one();
            }
            true
        },
    ));
    let mut memory = TargetMemory::default();
    // Set after a wake-up by an event: the daemon may report a container's death a moment
    // before its list shows it, so a converge that found nothing looks once more, shortly.
    let mut look_again = false;
    loop {
        let current = desired.borrow_and_update().clone();
        if let Ok(mut stops) = manual_stops.lock() {
            memory.manual_stops.extend(stops.drain());
        }
        let result = converge_once(&host, &executor, &identity, &current, &mut memory).await;
        let mut wait = match &result {
            Ok(report) => report
                .plan
                .retry_at
                .map(|at| Duration::from_secs(at.saturating_sub(unix_now())))
                .map_or(options.resync_interval, |d| d.min(options.resync_interval)),
            Err(_) => options.retry_after_error.min(options.resync_interval),
        };
        if std::mem::take(&mut look_again) && result.as_ref().is_ok_and(|r| r.plan.is_empty()) {
            wait = wait.min(EVENT_RECHECK);
        }
        if result
            .as_ref()
            .is_ok_and(|r| r.outcomes.iter().any(|o| o.result.is_ok()))
        {
            wait = wait.min(LOOK_AGAIN_AFTER_CHANGES);
        }
        if reports.send(result).is_err() || executor.shutdown().is_draining() {
            break;
        }
        tokio::select! {
            _ = executor.shutdown().draining() => break,
            _ = wake.notified() => {
                tokio::time::sleep(options.debounce).await;
                look_again = true;
            }
            changed = desired.changed() => if changed.is_err() { break },
            _ = tokio::time::sleep(wait) => {}
        }
    }
    watcher.abort();
}
