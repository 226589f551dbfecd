//! The plan: a pure function from what should run and what runs on one target to the
//! actions that make them equal, each with the reason a person will read.
//!
//! Rules, in order of precedence:
//! - only containers labelled for this target and manager are ever touched;
//! - a container whose spec hash differs is replaced (the image pulled first): with
//!   `RollingUpdate`, at most `maxUnavailable + maxSurge` (at least one) of an owner's
//!   containers at once on one target; with `Recreate`, all of them in one step that stops
//!   every old container before the first new one starts;
//! - a container that is missing, created or exited is created or started — unless the
//!   owner's `driftPolicy` is `Report` and Stevedore had seen it before, then it is reported;
//! - exited containers are restarted with back-off (10 s doubling to 5 min);
//! - a replaced container is kept, stopped, as its replica's previous one (see
//!   [`previous_name`]) until the replica goes;
//! - a managed container nobody wants is removed, unless its owner is protected (its
//!   manifest is broken: unknown is not the same as gone).

mod replicas;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::model::{DesiredInstance, previous_name};
use crate::docker::{ContainerState, HostContainer};
use crate::labels::{LABEL_MANAGED, LABEL_TARGET};
use crate::labels::{LABEL_MANAGER, LABEL_REPLICA, LABEL_UID};

/// First restart delay after the first quick retry.
pub const RESTART_BACKOFF_INITIAL_SECS: u64 = 10;
/// Longest restart delay.
pub const RESTART_BACKOFF_MAX_SECS: u64 = 300;
/// A container that ran this long since its last start has its back-off reset.
pub const RESTART_BACKOFF_RESET_SECS: u64 = 600;

/// Restarts Stevedore made, per container ID, for back-off.
#[derive(Clone, Debug, Default)]
pub struct RestartBook {
    records: HashMap<String, RestartRecord>,
}

#[derive(Clone, Copy, Debug)]
struct RestartRecord {
    attempts: u32,
    last_start: u64,
}

impl RestartBook {
    /// The delay before restart number `attempts` (0-based): the first is immediate (a
    /// container stopped by hand comes back at once), then 10 s, 20 s, … up to 5 min.
    pub fn delay(attempts: u32) -> u64 {
        match attempts {
            0 => 0,
            n => RESTART_BACKOFF_INITIAL_SECS
                .saturating_mul(1u64 << (n - 1).min(16))
                .min(RESTART_BACKOFF_MAX_SECS),
        }
    }

    /// When the exited container `id` may be started again.
    pub fn next_start_at(&self, id: &str, now: u64) -> u64 {
        match self.records.get(id) {
            None => now,
            Some(r) if now.saturating_sub(r.last_start) >= RESTART_BACKOFF_RESET_SECS => now,
            Some(r) => r.last_start + Self::delay(r.attempts),
        }
    }

    /// How many restarts Stevedore made of `id` in the current back-off series.
    pub fn attempts(&self, id: &str) -> u32 {
        self.records.get(id).map_or(0, |r| r.attempts)
    }

    /// Records that Stevedore (re)started `id` at `now`.
    pub fn record_restart(&mut self, id: &str, now: u64) {
        let record = self.records.entry(id.to_string()).or_insert(RestartRecord {
            attempts: 0,
            last_start: now,
        });
        if now.saturating_sub(record.last_start) >= RESTART_BACKOFF_RESET_SECS {
            record.attempts = 0;
        }
        record.attempts += 1;
        record.last_start = now;
    }

    /// Whether no restart is on record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Forgets containers that no longer exist.
    pub fn retain(&mut self, live_ids: &HashSet<&str>) {
        self.records.retain(|id, _| live_ids.contains(id.as_str()));
    }
}

/// Everything the plan looks at. Pure data: no daemon, no clock.
#[derive(Clone, Copy, Debug)]
pub struct PlanInput<'a> {
    /// The target's UID.
    pub target_uid: &'a str,
    /// This manager's identity.
    pub manager: &'a str,
    /// What should run here (the plan shares it: its actions index into it).
    pub desired: &'a Arc<[DesiredInstance]>,
    /// What one list call returned.
    pub observed: &'a [HostContainer],
    /// Image references and IDs the host holds.
    pub images: &'a HashSet<String>,
    /// Owner UIDs whose containers must be left as they are.
    pub protected_owners: &'a HashSet<String>,
    /// Container names Stevedore has seen on this target before (to tell drift from a
    /// first creation under `driftPolicy: Report`).
    pub known_containers: &'a HashSet<String>,
    /// Restart back-off state.
    pub restarts: &'a RestartBook,
    /// IDs of containers the daemon reported stopped or killed from outside (a `kill` or
    /// `stop` event, not a crash): started again at once, without back-off.
    pub manual_stops: &'a HashSet<String>,
    /// Unix time in seconds.
    pub now: u64,
}

/// A container on the host, as an action names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// ID.
    pub id: String,
    /// Name.
    pub name: String,
}

impl ContainerRef {
    /// The reference to a listed container.
    pub fn of(container: &HostContainer) -> Self {
        Self {
            id: container.id.clone(),
            name: container.name.clone(),
        }
    }
}

/// One step that changes the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pull an image (before any create or replace that needs it).
    Pull {
        /// Reference.
        image: String,
        /// The desired instance whose credentials to use (index into the plan's
        /// `instances`).
        desired: usize,
        /// Why.
        reason: String,
    },
    /// Create and start a container for `desired`.
    Create {
        /// Index into the plan's `instances`.
        desired: usize,
        /// Why.
        reason: String,
    },
    /// Start an existing container that is up to date.
    Start {
        /// The container.
        container: ContainerRef,
        /// Index into the plan's `instances`.
        desired: usize,
        /// Whether this restarts an exited container (it counts towards back-off).
        restart: bool,
        /// Why.
        reason: String,
    },
    /// Replace the old container with a new one: the old one is retired (kept stopped as
    /// the replica's previous one) only after the new one runs (and is healthy, with a
    /// health check).
    Replace(Replacement),
    /// Replace every listed container of one owner with `Recreate`: all old ones stopped
    /// first, then the new ones started; the old ones are removed only after every new one
    /// runs (and is healthy, with a health check), and all restored if one fails.
    Recreate {
        /// One entry per replica.
        replacements: Vec<Replacement>,
        /// Why.
        reason: String,
    },
    /// Stop (gracefully) and remove a container nobody wants. Never its volumes.
    Remove {
        /// The container.
        container: ContainerRef,
        /// Seconds to wait for a graceful stop; the container's own setting when `None`.
        stop_timeout_seconds: Option<i32>,
        /// Why.
        reason: String,
    },
}

/// A container and what replaces it: one [`Action::Replace`], or one replica of an
/// [`Action::Recreate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// The container being replaced.
    pub old: ContainerRef,
    /// Whether `old` is running now.
    pub old_running: bool,
    /// Index into the plan's `instances`.
    pub desired: usize,
    /// What changed.
    pub reason: String,
    /// The replica's earlier previous container (ours, stopped), which goes when `old`
    /// takes its place.
    pub previous: Option<ContainerRef>,
}

impl Action {
    /// The desired instances (indices) a `Replace` or `Recreate` makes new containers for.
    pub fn replaced(&self) -> Vec<usize> {
        match self {
            Action::Replace(replacement) => vec![replacement.desired],
            Action::Recreate { replacements, .. } => {
                replacements.iter().map(|r| r.desired).collect()
            }
            _ => Vec::new(),
        }
    }

    /// What the action is about: the image of a pull, the container(s) of the others (a
    /// desired instance of the plan's `instances` by its name; an index the plan does not
    /// hold as `desired[i]`).
    pub fn subjects(&self, desired: &[DesiredInstance]) -> Vec<String> {
        let name = |i: usize| {
            desired
                .get(i)
                .map_or_else(|| format!("desired[{i}]"), |d| d.name.clone())
        };
        match self {
            Action::Pull { image, .. } => vec![image.clone()],
            Action::Create { desired, .. } => vec![name(*desired)],
            Action::Replace(replacement) => vec![name(replacement.desired)],
            Action::Recreate { replacements, .. } => {
                replacements.iter().map(|r| name(r.desired)).collect()
            }
            Action::Start { container, .. } | Action::Remove { container, .. } => {
                vec![container.name.clone()]
            }
        }
    }

    /// The action's reason.
    pub fn reason(&self) -> &str {
        match self {
            Action::Pull { reason, .. }
            | Action::Create { reason, .. }
            | Action::Start { reason, .. }
            | Action::Replace(Replacement { reason, .. })
            | Action::Recreate { reason, .. }
            | Action::Remove { reason, .. } => reason,
        }
    }

    /// What kind of action this is.
    pub fn verb(&self) -> Verb {
        match self {
            Action::Pull { .. } => Verb::Pull,
            Action::Create { .. } => Verb::Create,
            Action::Start { .. } => Verb::Start,
            Action::Replace(_) => Verb::Replace,
            Action::Recreate { .. } => Verb::Recreate,
            Action::Remove { .. } => Verb::Remove,
        }
    }
}

/// The kind of an [`Action`], as logs, Events and progress lines name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// An image pull.
    Pull,
    /// A new container, created and started.
    Create,
    /// An existing container started.
    Start,
    /// One container replaced.
    Replace,
    /// An owner's containers replaced together (`updateStrategy: Recreate`).
    Recreate,
    /// A container stopped and removed.
    Remove,
}

impl Verb {
    /// The verb as a word: `Pull`, `Create`, … (an Event's action, a failure's reason).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Pull => "Pull",
            Verb::Create => "Create",
            Verb::Start => "Start",
            Verb::Replace => "Replace",
            Verb::Recreate => "Recreate",
            Verb::Remove => "Remove",
        }
    }

    /// An Event's reason once it is done: `Pulled`, `Created`, …
    pub fn past_tense(self) -> &'static str {
        match self {
            Verb::Pull => "Pulled",
            Verb::Create => "Created",
            Verb::Start => "Started",
            Verb::Replace => "Replaced",
            Verb::Recreate => "Recreated",
            Verb::Remove => "Removed",
        }
    }

    /// How a progress line says it happened, and that it is under way.
    pub fn progress_forms(self) -> (&'static str, &'static str) {
        match self {
            Verb::Pull => ("pulled", "pulling"),
            Verb::Create => ("created and started", "creating"),
            Verb::Start => ("started", "starting"),
            Verb::Replace => ("replaced", "replacing"),
            Verb::Recreate => ("recreated", "recreating"),
            Verb::Remove => ("stopped and removed", "removing"),
        }
    }
}

impl std::fmt::Display for Verb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something about one container that is not an action: drift reported instead of
/// repaired, work that cannot be done, or a restart waiting for its back-off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Container name.
    pub container: String,
    /// What and why.
    pub reason: String,
}

impl Finding {
    /// `<container> on <target>: <reason>`, as conditions and the status table say it.
    pub fn on(&self, target: &str) -> String {
        format!("{} on {target}: {}", self.container, self.reason)
    }
}

/// The outcome of planning one target.
#[derive(Clone, Default)]
pub struct Plan {
    /// Steps to run, pulls first.
    pub actions: Vec<Action>,
    /// The desired instances it was planned from, shared with the `DesiredSet`; an
    /// action's `desired` is an index into them, so a plan carries everything its
    /// execution needs.
    pub instances: Arc<[DesiredInstance]>,
    /// Differences reported, not repaired (`driftPolicy: Report`).
    pub drift: Vec<Finding>,
    /// Desired containers that cannot be made as asked (a host port clash, a missing image
    /// with `imagePullPolicy: Never`).
    pub blocked: Vec<Finding>,
    /// Restarts waiting for their back-off.
    pub waiting: Vec<Finding>,
    /// The earliest time (unix seconds) a waiting restart becomes due.
    pub retry_at: Option<u64>,
}

/// The instances show by name only: their bodies hold env values, Secret ones among them,
/// and a plan is printed in logs and test failures.
impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.instances.iter().map(|d| d.name.as_str()).collect();
        f.debug_struct("Plan")
            .field("actions", &self.actions)
            .field("instances", &names)
            .field("drift", &self.drift)
            .field("blocked", &self.blocked)
            .field("waiting", &self.waiting)
            .field("retry_at", &self.retry_at)
            .finish()
    }
}

impl Plan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Whether `container` is Stevedore's, placed through this target by this manager.
pub fn is_ours(container: &HostContainer, target_uid: &str, manager: &str) -> bool {
    container.labels.get(LABEL_MANAGED) == Some("true")
        && container.labels.get(LABEL_TARGET) == Some(target_uid)
        && container.labels.get(LABEL_MANAGER) == Some(manager)
}

/// Whether `container` (one of ours) is the stopped previous container of `desired`'s
/// replica, which the plan keeps while the replica exists.
fn is_previous_of(
    container: &HostContainer,
    desired: &DesiredInstance,
    previous_name: &str,
) -> bool {
    container.name == previous_name
        && container.state != ContainerState::Running
        && container.labels.get(LABEL_UID) == Some(desired.owner.uid.as_str())
        && container.labels.get(LABEL_REPLICA) == Some(desired.replica.to_string().as_str())
}

/// The previous container of `desired`'s replica among `observed` (see [`is_previous_of`]),
/// for a replacement that does not come from a plan (`stevedore restart`).
pub fn previous_of(
    desired: &DesiredInstance,
    observed: &[HostContainer],
    target_uid: &str,
    manager: &str,
) -> Option<ContainerRef> {
    let previous_name = previous_name(&desired.name);
    observed
        .iter()
        .find(|c| is_ours(c, target_uid, manager) && is_previous_of(c, desired, &previous_name))
        .map(ContainerRef::of)
}

/// Computes the plan for one target: each desired instance in name order (its replica's
/// containers decide between create, start, replace and keep), then what nobody wants.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let input = *input;
    let ours: Vec<&HostContainer> = input
        .observed
        .iter()
        .filter(|c| is_ours(c, input.target_uid, input.manager))
        .collect();
    let mut by_replica: BTreeMap<(&str, &str), Vec<&HostContainer>> = BTreeMap::new();
    for container in &ours {
        if let (Some(uid), Some(replica)) = (
            container.labels.get(LABEL_UID),
            container.labels.get(LABEL_REPLICA),
        ) {
            by_replica
                .entry((uid, replica))
                .or_default()
                .push(container);
        }
    }
    let mut order: Vec<usize> = (0..input.desired.len()).collect();
    order.sort_by(|a, b| input.desired[*a].name.cmp(&input.desired[*b].name));
    let mut planner = replicas::Planner::new(input);
    for index in order {
        let desired = &input.desired[index];
        let replica = desired.replica.to_string();
        let group = by_replica
            .get(&(desired.owner.uid.as_str(), replica.as_str()))
            .cloned()
            .unwrap_or_default();
        planner.replica(index, group);
    }
    planner.remove_unwanted(&ours);
    planner.finish()
}
