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

use std::collections::{BTreeMap, HashMap, HashSet};

use super::model::{DesiredInstance, describe_changes, parse_field_digests, previous_name};
use crate::api::container::{DriftPolicy, ImagePullPolicy, RestartPolicy, UpdateStrategyType};
use crate::docker::{ContainerState, Health, HostContainer};
use crate::labels::{LABEL_MANAGED, LABEL_TARGET};
use crate::labels::{LABEL_MANAGER, LABEL_REPLICA, LABEL_SPEC_FIELDS, LABEL_SPEC_HASH, LABEL_UID};

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
    /// What should run here.
    pub desired: &'a [DesiredInstance],
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
    /// Every index into the plan's instances the action holds.
    fn instance_indices_mut(&mut self) -> Vec<&mut usize> {
        match self {
            Action::Pull { desired, .. }
            | Action::Create { desired, .. }
            | Action::Start { desired, .. } => vec![desired],
            Action::Replace(replacement) => vec![&mut replacement.desired],
            Action::Recreate { replacements, .. } => {
                replacements.iter_mut().map(|r| &mut r.desired).collect()
            }
            Action::Remove { .. } => Vec::new(),
        }
    }

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
    /// The desired instances the actions make containers for; an action's `desired` is an
    /// index into this list, so a plan carries everything its execution needs.
    pub instances: Vec<DesiredInstance>,
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

fn label<'a>(container: &'a HostContainer, key: &str) -> Option<&'a str> {
    container.labels.get(key).map(String::as_str)
}

/// Whether `container` is Stevedore's, placed through this target by this manager.
pub fn is_ours(container: &HostContainer, target_uid: &str, manager: &str) -> bool {
    label(container, LABEL_MANAGED) == Some("true")
        && label(container, LABEL_TARGET) == Some(target_uid)
        && label(container, LABEL_MANAGER) == Some(manager)
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
        && label(container, LABEL_UID) == Some(desired.owner.uid.as_str())
        && label(container, LABEL_REPLICA) == Some(desired.replica.to_string().as_str())
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

/// Computes the plan for one target.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut plan = Plan::default();
    let ours: Vec<&HostContainer> = input
        .observed
        .iter()
        .filter(|c| is_ours(c, input.target_uid, input.manager))
        .collect();
    let mut by_identity: BTreeMap<(&str, &str), Vec<&HostContainer>> = BTreeMap::new();
    for container in &ours {
        if let (Some(uid), Some(replica)) =
            (label(container, LABEL_UID), label(container, LABEL_REPLICA))
        {
            by_identity
                .entry((uid, replica))
                .or_default()
                .push(container);
        }
    }

    let mut order: Vec<usize> = (0..input.desired.len()).collect();
    order.sort_by(|a, b| input.desired[*a].name.cmp(&input.desired[*b].name));
    let mut pulls: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
    let mut claimed_ports: Vec<(&super::model::HostPort, &str)> = Vec::new();
    let mut matched: HashSet<&str> = HashSet::new();
    let mut steps = Vec::new();
    // Replacements per owner: how many a rolling update started, and what a Recreate
    // gathers into one step.
    let mut rolling: HashMap<&str, usize> = HashMap::new();
    let mut recreates: BTreeMap<&str, Vec<Replacement>> = BTreeMap::new();

    for index in order {
        let desired = &input.desired[index];
        let replica = desired.replica.to_string();
        let mut group = by_identity
            .get(&(desired.owner.uid.as_str(), replica.as_str()))
            .cloned()
            .unwrap_or_default();
        matched.extend(group.iter().map(|c| c.id.as_str()));
        // The replica's previous container stays while the replica does (it goes with the
        // replica, as an orphan); started by hand, it is a duplicate like any other.
        let previous_name = previous_name(&desired.name);
        let previous = group
            .iter()
            .find(|c| is_previous_of(c, desired, &previous_name))
            .map(|c| ContainerRef::of(c));
        group.retain(|c| c.name != previous_name || c.state == ContainerState::Running);

        if let Some((port, holder)) = desired.host_ports.iter().find_map(|port| {
            claimed_ports
                .iter()
                .find(|(claimed, _)| claimed.clashes_with(port))
                .map(|(_, holder)| (port, *holder))
        }) {
            plan.blocked.push(Finding {
                container: desired.name.clone(),
                reason: format!("host port {port} is already published by {holder} on this target"),
            });
            continue;
        }
        claimed_ports.extend(
            desired
                .host_ports
                .iter()
                .map(|p| (p, desired.name.as_str())),
        );

        let canonical = group.iter().copied().find(|c| c.name == desired.name);
        let extras: Vec<&HostContainer> = group
            .iter()
            .copied()
            .filter(|c| c.name != desired.name)
            .collect();
        let up_to_date =
            canonical.filter(|c| label(c, LABEL_SPEC_HASH) == Some(desired.spec_hash.as_str()));

        // A new container is needed: make sure its image can be had first.
        if up_to_date.is_none() {
            let present = input.images.contains(&desired.image);
            let needs_pull = match desired.pull_policy {
                ImagePullPolicy::Always => true,
                ImagePullPolicy::IfNotPresent => !present,
                ImagePullPolicy::Never if !present => {
                    plan.blocked.push(Finding {
                        container: desired.name.clone(),
                        reason: format!(
                            "image {} is not on this target and imagePullPolicy is Never",
                            desired.image
                        ),
                    });
                    continue;
                }
                ImagePullPolicy::Never => false,
            };
            if needs_pull {
                pulls
                    .entry(desired.image.clone())
                    .or_insert_with(|| (index, Vec::new()))
                    .1
                    .push(desired.name.clone());
            }
        }

        match (canonical, up_to_date) {
            (None, _) if extras.is_empty() => {
                if desired.drift_policy == DriftPolicy::Report
                    && input.known_containers.contains(&desired.name)
                {
                    plan.drift.push(Finding {
                        container: desired.name.clone(),
                        reason: "container is missing (removed outside Stevedore); driftPolicy \
                                 is Report, so it is not recreated"
                            .into(),
                    });
                } else {
                    steps.push(Action::Create {
                        desired: index,
                        reason: "not on this target yet".into(),
                    });
                }
            }
            (None, _) => {
                // A replacement was interrupted after the old container was renamed.
                let old = extras
                    .iter()
                    .find(|c| c.state == ContainerState::Running)
                    .or(extras.first())
                    .copied();
                if let Some(old) = old {
                    *rolling.entry(desired.owner.uid.as_str()).or_default() += 1;
                    steps.push(Action::Replace(Replacement {
                        old: ContainerRef::of(old),
                        old_running: old.state == ContainerState::Running,
                        desired: index,
                        reason: "finishing an interrupted replacement".into(),
                        previous: previous.clone(),
                    }));
                    for extra in extras.iter().filter(|c| c.id != old.id) {
                        steps.push(remove(
                            extra,
                            Some(desired.stop_timeout_seconds),
                            format!(
                                "duplicate of {} left by an interrupted replacement",
                                desired.name
                            ),
                        ));
                    }
                }
            }
            (Some(current), None) => {
                let running = parse_field_digests(label(current, LABEL_SPEC_FIELDS).unwrap_or(""));
                let changes = describe_changes(&running, desired);
                let what = if changes.is_empty() {
                    "spec hash changed".to_string()
                } else {
                    format!("changed: {}", changes.join(", "))
                };
                let replacement = Replacement {
                    old: ContainerRef::of(current),
                    old_running: current.state == ContainerState::Running,
                    desired: index,
                    reason: what,
                    previous: previous.clone(),
                };
                let strategy = &desired.update_strategy;
                if strategy.kind == UpdateStrategyType::Recreate {
                    recreates
                        .entry(desired.owner.uid.as_str())
                        .or_default()
                        .push(replacement);
                    continue;
                }
                let at_once =
                    usize::try_from(strategy.max_unavailable.saturating_add(strategy.max_surge))
                        .unwrap_or(0)
                        .max(1);
                let started = rolling.entry(desired.owner.uid.as_str()).or_default();
                if *started >= at_once {
                    plan.waiting.push(Finding {
                        container: desired.name.clone(),
                        reason: format!(
                            "waiting for its turn: the rolling update replaces {at_once} at a time"
                        ),
                    });
                    continue;
                }
                *started += 1;
                steps.push(Action::Replace(replacement));
            }
            (Some(_), Some(current)) => {
                if let Some(step) = keep_running(input, desired, index, current, &mut plan) {
                    steps.push(step);
                }
                let ready = current.state == ContainerState::Running
                    && (desired.health_check.is_none() || current.health == Some(Health::Healthy));
                if ready {
                    for extra in &extras {
                        steps.push(remove(
                            extra,
                            Some(desired.stop_timeout_seconds),
                            format!(
                                "left over from an interrupted replacement of {}",
                                desired.name
                            ),
                        ));
                    }
                }
            }
        }
    }

    let wanted_owners: HashSet<&str> = input.desired.iter().map(|d| d.owner.uid.as_str()).collect();
    for container in ours {
        if matched.contains(container.id.as_str()) {
            continue;
        }
        let owner = label(container, LABEL_UID).unwrap_or_default();
        if input.protected_owners.contains(owner) {
            continue;
        }
        let reason = if wanted_owners.contains(owner) {
            format!(
                "replica {} is no longer wanted on this target",
                label(container, LABEL_REPLICA).unwrap_or("?")
            )
        } else {
            "its DockerContainer no longer wants it on this target".to_string()
        };
        steps.push(remove(container, None, reason));
    }

    for (owner, replacements) in recreates {
        let name = input
            .desired
            .iter()
            .find(|d| d.owner.uid == owner)
            .map_or(owner, |d| d.owner.name.as_str());
        steps.push(Action::Recreate {
            reason: format!(
                "updateStrategy Recreate: {} container(s) of {name} stopped before the new ones start",
                replacements.len()
            ),
            replacements,
        });
    }

    plan.actions = pulls
        .into_iter()
        .map(|(image, (desired, names))| Action::Pull {
            reason: format!("needed by {}", names.join(", ")),
            image,
            desired,
        })
        .chain(steps)
        .collect();
    plan.instances = own_instances(&mut plan.actions, input.desired);
    plan
}

/// Copies the instances `actions` name out of `desired` (each once), and points the
/// actions at the copies.
fn own_instances(actions: &mut [Action], desired: &[DesiredInstance]) -> Vec<DesiredInstance> {
    let mut instances = Vec::new();
    let mut moved: HashMap<usize, usize> = HashMap::new();
    for index in actions.iter_mut().flat_map(Action::instance_indices_mut) {
        *index = *moved.entry(*index).or_insert_with(|| {
            instances.push(desired[*index].clone());
            instances.len() - 1
        });
    }
    instances
}

fn remove(container: &HostContainer, stop_timeout_seconds: Option<i32>, reason: String) -> Action {
    Action::Remove {
        container: ContainerRef::of(container),
        stop_timeout_seconds,
        reason,
    }
}

/// An up-to-date container that is not running: start it, report it, or wait.
fn keep_running(
    input: &PlanInput<'_>,
    desired: &DesiredInstance,
    index: usize,
    current: &HostContainer,
    plan: &mut Plan,
) -> Option<Action> {
    let exit = current
        .exit_code
        .map(|code| format!(" (exit code {code})"))
        .unwrap_or_default();
    match current.state {
        // On its way somewhere: its events say where (a start now would be refused).
        ContainerState::Running
        | ContainerState::Restarting
        | ContainerState::Removing
        | ContainerState::Stopping => None,
        ContainerState::Paused => {
            plan.drift.push(Finding {
                container: desired.name.clone(),
                reason: "paused outside Stevedore; left paused".into(),
            });
            None
        }
        ContainerState::Created => Some(Action::Start {
            container: ContainerRef::of(current),
            desired: index,
            restart: false,
            reason: "created but not started".into(),
        }),
        ContainerState::Exited | ContainerState::Dead => {
            let wanted = match desired.restart_policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => current.exit_code != Some(0),
                RestartPolicy::Never => false,
            };
            if !wanted {
                return None;
            }
            if desired.drift_policy == DriftPolicy::Report {
                plan.drift.push(Finding {
                    container: desired.name.clone(),
                    reason: format!("stopped outside Stevedore{exit}; driftPolicy is Report"),
                });
                return None;
            }
            if input.manual_stops.contains(&current.id) {
                return Some(Action::Start {
                    container: ContainerRef::of(current),
                    desired: index,
                    restart: false,
                    reason: format!("stopped outside Stevedore{exit}"),
                });
            }
            let due = input.restarts.next_start_at(&current.id, input.now);
            let attempt = input.restarts.attempts(&current.id) + 1;
            if due <= input.now {
                Some(Action::Start {
                    container: ContainerRef::of(current),
                    desired: index,
                    restart: true,
                    reason: format!("exited{exit}; restart {attempt}"),
                })
            } else {
                plan.waiting.push(Finding {
                    container: desired.name.clone(),
                    reason: format!(
                        "exited{exit}; restart {attempt} in {} s (back-off)",
                        due - input.now
                    ),
                });
                plan.retry_at = Some(plan.retry_at.map_or(due, |at| at.min(due)));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::converge::env::ResolvedEnv;
    use crate::converge::model::{InstanceContext, Owner, desired_instances};

    const TARGET: &str = "target-uid";
    const MANAGER: &str = "test";

    fn spec(command: &str, restart: &str) -> crate::api::DockerContainerSpec {
        serde_json::from_value(serde_json::json!({
            "image": "app:1", "command": [command], "restartPolicy": restart,
            "placement": {"target": "t"}
        }))
        .expect("spec")
    }

    fn owner(i: usize) -> Owner {
        Owner {
            namespace: "ns".into(),
            name: format!("app{i}"),
            uid: format!("uid-{i}"),
        }
    }

    /// Instances of `app:1` on the test target, pulled without credentials.
    fn plain_context() -> InstanceContext<'static> {
        InstanceContext {
            target_uid: TARGET,
            manager: MANAGER,
            image: "app:1",
            image_identity: "app:1",
            pull_credentials: None,
            image_source: None,
            resolved: None,
            restarted_at: None,
        }
    }

    fn desired(owners: &[(usize, Vec<u32>, &str, &str)]) -> Vec<DesiredInstance> {
        let ctx = plain_context();
        owners
            .iter()
            .flat_map(|(i, replicas, command, restart)| {
                let mut spec = spec(command, restart);
                // Owner 1 updates by Recreate, the others by the default rolling update.
                if *i == 1 {
                    spec.update_strategy.kind = UpdateStrategyType::Recreate;
                }
                desired_instances(&owner(*i), &spec, &ResolvedEnv::new(), replicas, &ctx)
                    .expect("instances")
            })
            .collect()
    }

    /// A container as Stevedore would have created it for `instance`.
    fn container_for(
        instance: &DesiredInstance,
        id: String,
        state: ContainerState,
    ) -> HostContainer {
        HostContainer {
            id,
            name: instance.name.clone(),
            labels: instance
                .body
                .labels
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            state,
            health: None,
            image_id: "sha256:app".into(),
            exit_code: (state == ContainerState::Exited).then_some(1),
        }
    }

    struct World {
        containers: Vec<HostContainer>,
        images: HashSet<String>,
        next_id: usize,
        /// IDs of containers made for another target, another manager, or by hand.
        foreign: HashSet<String>,
    }

    impl World {
        fn id(&mut self) -> String {
            self.next_id += 1;
            format!("id-{}", self.next_id)
        }

        /// Applies a plan as a flawless executor would.
        fn apply(&mut self, plan: &Plan) {
            let desired = &plan.instances;
            for action in &plan.actions {
                match action {
                    Action::Pull { image, .. } => {
                        self.images.insert(image.clone());
                    }
                    Action::Create { desired: i, .. } => {
                        assert!(
                            !self.containers.iter().any(|c| c.name == desired[*i].name),
                            "create of a name in use: {}",
                            desired[*i].name
                        );
                        let id = self.id();
                        self.containers.push(container_for(
                            &desired[*i],
                            id,
                            ContainerState::Running,
                        ));
                    }
                    Action::Start { container, .. } => {
                        for c in &mut self.containers {
                            if c.id == container.id {
                                c.state = ContainerState::Running;
                                c.exit_code = None;
                            }
                        }
                    }
                    Action::Replace(Replacement {
                        old, desired: i, ..
                    }) => {
                        self.containers.retain(|c| c.id != old.id);
                        let id = self.id();
                        self.containers.push(container_for(
                            &desired[*i],
                            id,
                            ContainerState::Running,
                        ));
                    }
                    Action::Recreate { replacements, .. } => {
                        for r in replacements {
                            self.containers.retain(|c| c.id != r.old.id);
                        }
                        for r in replacements {
                            let id = self.id();
                            self.containers.push(container_for(
                                &desired[r.desired],
                                id,
                                ContainerState::Running,
                            ));
                        }
                    }
                    Action::Remove { container, .. } => {
                        self.containers.retain(|c| c.id != container.id);
                    }
                }
            }
        }
    }

    fn plan_for(world: &World, desired: &[DesiredInstance], protected: &HashSet<String>) -> Plan {
        plan(&PlanInput {
            target_uid: TARGET,
            manager: MANAGER,
            desired,
            observed: &world.containers,
            images: &world.images,
            protected_owners: protected,
            known_containers: &HashSet::new(),
            restarts: &RestartBook::default(),
            manual_stops: &HashSet::new(),
            now: 1_000_000,
        })
    }

    /// One observed container: which owner/replica it claims, and how it differs.
    #[derive(Clone, Debug)]
    struct Seed {
        owner: usize,
        replica: u32,
        old_spec: bool,
        renamed: bool,
        state: u8,
        ours: u8,
    }

    fn seed() -> impl Strategy<Value = Seed> {
        (
            0usize..4,
            0u32..4,
            any::<bool>(),
            any::<bool>(),
            0u8..4,
            0u8..4,
        )
            .prop_map(|(owner, replica, old_spec, renamed, state, ours)| Seed {
                owner,
                replica,
                old_spec,
                renamed,
                state,
                ours,
            })
    }

    fn owners() -> impl Strategy<Value = Vec<(usize, Vec<u32>, &'static str, &'static str)>> {
        proptest::collection::btree_map(
            0usize..3,
            (
                proptest::collection::btree_set(0u32..3, 0..3),
                prop_oneof![Just("a"), Just("b")],
                prop_oneof![Just("Always"), Just("OnFailure"), Just("Never")],
            ),
            0..3,
        )
        .prop_map(|m| {
            m.into_iter()
                .map(|(i, (replicas, command, restart))| {
                    (i, replicas.into_iter().collect(), command, restart)
                })
                .collect()
        })
    }

    /// Builds the observed world from seeds: containers of current and older specs, renamed
    /// leftovers, other targets' and other managers' containers, and unmanaged ones.
    fn world(seeds: &[Seed], with_image: bool) -> World {
        let mut world = World {
            containers: Vec::new(),
            images: if with_image {
                HashSet::from(["app:1".to_string()])
            } else {
                HashSet::new()
            },
            next_id: 0,
            foreign: HashSet::new(),
        };
        for seed in seeds {
            let command = if seed.old_spec { "old" } else { "a" };
            let instance =
                desired(&[(seed.owner, vec![seed.replica], command, "Always")]).remove(0);
            let state = [
                ContainerState::Running,
                ContainerState::Exited,
                ContainerState::Created,
                ContainerState::Dead,
            ][seed.state as usize];
            let id = world.id();
            let mut container = container_for(&instance, id.clone(), state);
            // Docker names are unique: a second container for one instance is a renamed one.
            let taken = world.containers.iter().any(|c| c.name == instance.name);
            if seed.renamed || taken {
                container.name = format!("{}-replaced-{id}", instance.name);
            }
            match seed.ours {
                1 => {
                    container
                        .labels
                        .insert(LABEL_TARGET.into(), "another-target".into());
                }
                2 => {
                    container
                        .labels
                        .insert(LABEL_MANAGER.into(), "another-manager".into());
                }
                3 => {
                    container.labels = BTreeMap::from([("app".into(), "hand-made".into())]);
                    container.name = format!("hand-made-{id}");
                }
                _ => {}
            }
            if seed.ours != 0 {
                // Another target's container with this very name would make Docker refuse
                // the create (409), an error for that instance; the plan cannot see it.
                container.name = format!("{}-elsewhere-{id}", instance.name);
                world.foreign.insert(id);
            }
            world.containers.push(container);
        }
        world
    }

    fn touched(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { container, .. } | Action::Remove { container, .. } => {
                    Some(container.id.clone())
                }
                Action::Replace(replacement) => Some(replacement.old.id.clone()),
                _ => None,
            })
            .chain(plan.actions.iter().flat_map(|a| match a {
                Action::Recreate { replacements, .. } => {
                    replacements.iter().map(|r| r.old.id.clone()).collect()
                }
                _ => Vec::new(),
            }))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn applying_a_plan_converges_and_replanning_does_nothing(
            owners in owners(),
            seeds in proptest::collection::vec(seed(), 0..8),
            with_image in any::<bool>(),
        ) {
            let desired = desired(&owners);
            let mut world = world(&seeds, with_image);
            let foreign = world.foreign.clone();
            // Leftovers are removed once their replacement is up, and a rolling update
            // replaces one replica per round: at most one round per replica, plus one.
            for _ in 0..4 {
                let next = plan_for(&world, &desired, &HashSet::new());
                world.apply(&next);
            }
            let last = plan_for(&world, &desired, &HashSet::new());
            prop_assert!(last.is_empty(), "not converged: {:?}", last.actions);

            // Exactly the desired instances exist among our containers, up to date.
            let mut ours: Vec<(String, String)> = world
                .containers
                .iter()
                .filter(|c| !foreign.contains(&c.id))
                .map(|c| (c.name.clone(), c.labels[LABEL_SPEC_HASH].clone()))
                .collect();
            ours.sort();
            let mut wanted: Vec<(String, String)> =
                desired.iter().map(|d| (d.name.clone(), d.spec_hash.clone())).collect();
            wanted.sort();
            prop_assert_eq!(ours, wanted);
            // And nothing that was not ours was changed or removed.
            for id in &foreign {
                prop_assert!(world.containers.iter().any(|c| &c.id == id));
            }
        }

        #[test]
        fn containers_that_are_not_ours_never_appear_in_a_plan(
            owners in owners(),
            seeds in proptest::collection::vec(seed(), 0..8),
        ) {
            let desired = desired(&owners);
            let world = world(&seeds, true);
            let foreign = world.foreign.clone();
            let plan = plan_for(&world, &desired, &HashSet::new());
            for id in touched(&plan) {
                prop_assert!(!foreign.contains(&id), "touched {id}");
            }
        }

        #[test]
        fn a_plan_never_makes_two_containers_with_one_name(
            owners in owners(),
            seeds in proptest::collection::vec(seed(), 0..8),
        ) {
            let desired = desired(&owners);
            let world = world(&seeds, false);
            let plan = plan_for(&world, &desired, &HashSet::new());
            let mut names: Vec<&str> = plan
                .actions
                .iter()
                .flat_map(|a| match a {
                    Action::Create { desired: i, .. } => vec![*i],
                    other => other.replaced(),
                })
                .map(|i| plan.instances[i].name.as_str())
                .collect();
            let count = names.len();
            names.sort();
            names.dedup();
            prop_assert_eq!(names.len(), count);
        }

        #[test]
        fn protected_owners_containers_are_never_touched(
            seeds in proptest::collection::vec(seed(), 0..8),
        ) {
            let world = world(&seeds, true);
            let protected: HashSet<String> = (0..4).map(|i| owner(i).uid).collect();
            let plan = plan_for(&world, &[], &protected);
            prop_assert!(plan.is_empty(), "{:?}", plan.actions);
        }
    }

    #[test]
    fn a_converged_host_plans_nothing() {
        let desired = desired(&[(0, vec![0, 1], "a", "Always")]);
        let mut world = world(&[], true);
        for instance in &desired {
            let id = world.id();
            world
                .containers
                .push(container_for(instance, id, ContainerState::Running));
        }
        let plan = plan_for(&world, &desired, &HashSet::new());
        assert!(
            plan.is_empty()
                && plan.instances.is_empty()
                && plan.drift.is_empty()
                && plan.blocked.is_empty()
                && plan.waiting.is_empty()
                && plan.retry_at.is_none(),
            "{plan:?}"
        );
    }

    #[test]
    fn a_changed_spec_is_replaced_after_a_pull_with_the_field_named() {
        let old = desired(&[(0, vec![0], "a", "Always")]);
        let new = desired(&[(0, vec![0], "b", "Always")]);
        let mut world = world(&[], false);
        world.containers.push(container_for(
            &old[0],
            "old".into(),
            ContainerState::Running,
        ));
        let plan = plan_for(&world, &new, &HashSet::new());
        assert!(matches!(&plan.actions[0], Action::Pull { image, .. } if image == "app:1"));
        match &plan.actions[1] {
            Action::Replace(Replacement {
                old,
                reason,
                old_running,
                ..
            }) => {
                assert_eq!(old.id, "old");
                assert!(old_running);
                assert_eq!(reason, "changed: command");
            }
            other => panic!("expected a replace, got {other:?}"),
        }
    }

    /// A world running `old` for every instance of `new` (same names, older spec).
    fn running_old_spec(old: &[DesiredInstance]) -> World {
        let mut world = world(&[], true);
        for instance in old {
            let id = world.id();
            world
                .containers
                .push(container_for(instance, id, ContainerState::Running));
        }
        world
    }

    #[test]
    fn a_replacement_is_handed_the_replicas_earlier_previous_container_if_ours() {
        let old = desired(&[(0, vec![0], "a", "Always")]);
        let new = desired(&[(0, vec![0], "b", "Always")]);
        let mut world = running_old_spec(&old);
        let mut earlier = container_for(&old[0], "earlier".into(), ContainerState::Exited);
        earlier.name = previous_name(&old[0].name);
        world.containers.push(earlier.clone());
        let handed = |world: &World| match &plan_for(world, &new, &HashSet::new()).actions[..] {
            [Action::Replace(replacement)] => replacement.previous.clone(),
            other => panic!("expected one replace, got {other:?}"),
        };
        assert_eq!(
            handed(&world),
            Some(ContainerRef {
                id: "earlier".into(),
                name: previous_name(&old[0].name)
            })
        );
        assert_eq!(
            previous_of(&new[0], &world.containers, TARGET, MANAGER).map(|c| c.id),
            Some("earlier".to_string())
        );
        // Another manager's container of that name is not ours to remove.
        world.containers.retain(|c| c.id != "earlier");
        earlier
            .labels
            .insert(LABEL_MANAGER.into(), "someone-else".into());
        world.containers.push(earlier.clone());
        assert_eq!(handed(&world), None);
        // Nor is one of ours that runs (started by hand): it is a duplicate, removed as one.
        world.containers.retain(|c| c.id != "earlier");
        earlier.labels.insert(LABEL_MANAGER.into(), MANAGER.into());
        earlier.state = ContainerState::Running;
        world.containers.push(earlier);
        assert_eq!(handed(&world), None);
        assert_eq!(
            previous_of(&new[0], &world.containers, TARGET, MANAGER),
            None,
            "previous_of applies the plan's rule"
        );
    }

    #[test]
    fn a_rolling_update_replaces_max_unavailable_plus_max_surge_at_a_time() {
        let old = desired(&[(0, vec![0, 1, 2, 3], "a", "Always")]);
        let mut new = desired(&[(0, vec![0, 1, 2, 3], "b", "Always")]);
        let world = running_old_spec(&old);
        let replaces = |plan: &Plan| {
            plan.actions
                .iter()
                .filter(|a| matches!(a, Action::Replace(_)))
                .count()
        };
        let plan = plan_for(&world, &new, &HashSet::new());
        assert_eq!(replaces(&plan), 1, "{:?}", plan.actions);
        assert_eq!(plan.waiting.len(), 3);
        assert!(
            plan.waiting[0].reason.contains("1 at a time"),
            "{:?}",
            plan.waiting
        );

        for instance in &mut new {
            instance.update_strategy.max_unavailable = 2;
            instance.update_strategy.max_surge = 1;
        }
        let plan = plan_for(&world, &new, &HashSet::new());
        assert_eq!(replaces(&plan), 3);
        assert_eq!(plan.waiting.len(), 1);
    }

    #[test]
    fn recreate_replaces_every_old_container_of_an_owner_in_one_step() {
        let old = desired(&[(1, vec![0, 1, 2], "a", "Always")]);
        let new = desired(&[(1, vec![0, 1, 2], "b", "Always")]);
        let world = running_old_spec(&old);
        let plan = plan_for(&world, &new, &HashSet::new());
        let recreates: Vec<&Action> = plan
            .actions
            .iter()
            .filter(|a| !matches!(a, Action::Pull { .. }))
            .collect();
        assert_eq!(recreates.len(), 1, "{:?}", plan.actions);
        match recreates[0] {
            Action::Recreate {
                replacements,
                reason,
            } => {
                assert_eq!(replacements.len(), 3);
                assert!(replacements.iter().all(|r| r.old_running));
                assert!(replacements.iter().all(|r| r.reason == "changed: command"));
                assert!(reason.contains("3 container(s) of app1"), "{reason}");
            }
            other => panic!("expected a Recreate, got {other:?}"),
        }
        assert!(plan.waiting.is_empty());
    }

    #[test]
    fn report_policy_reports_a_known_container_that_went_missing() {
        let mut desired = desired(&[(0, vec![0], "a", "Always")]);
        desired[0].drift_policy = DriftPolicy::Report;
        let world = world(&[], true);
        let known = HashSet::from([desired[0].name.clone()]);
        let plan = plan(&PlanInput {
            target_uid: TARGET,
            manager: MANAGER,
            desired: &desired,
            observed: &world.containers,
            images: &world.images,
            protected_owners: &HashSet::new(),
            known_containers: &known,
            restarts: &RestartBook::default(),
            manual_stops: &HashSet::new(),
            now: 0,
        });
        assert!(plan.actions.is_empty());
        assert_eq!(plan.drift.len(), 1);
        assert!(plan.drift[0].reason.contains("removed outside Stevedore"));
    }

    #[test]
    fn restarts_back_off_from_10_seconds_to_5_minutes() {
        assert_eq!(RestartBook::delay(0), 0);
        assert_eq!(RestartBook::delay(1), 10);
        assert_eq!(RestartBook::delay(2), 20);
        assert_eq!(RestartBook::delay(6), 300);
        assert_eq!(RestartBook::delay(40), 300);

        let desired = desired(&[(0, vec![0], "a", "Always")]);
        let mut world = world(&[], true);
        world.containers.push(container_for(
            &desired[0],
            "c".into(),
            ContainerState::Exited,
        ));
        let mut book = RestartBook::default();
        book.record_restart("c", 1000);
        book.record_restart("c", 1001);
        let empty = HashSet::new();
        let input = |now| PlanInput {
            target_uid: TARGET,
            manager: MANAGER,
            desired: &desired,
            observed: &world.containers,
            images: &world.images,
            protected_owners: &empty,
            known_containers: &empty,
            restarts: &book,
            manual_stops: &empty,
            now,
        };
        let waiting = plan(&input(1010));
        assert!(waiting.actions.is_empty());
        assert_eq!(waiting.retry_at, Some(1021));
        assert!(waiting.waiting[0].reason.contains("back-off"));
        let due = plan(&input(1021));
        assert!(
            matches!(&due.actions[0], Action::Start { reason, .. } if reason.contains("exit code 1"))
        );
        // Ten minutes after the last start the series starts over.
        assert_eq!(
            book.next_start_at("c", 1001 + RESTART_BACKOFF_RESET_SECS),
            1001 + RESTART_BACKOFF_RESET_SECS
        );
    }

    #[test]
    fn equal_host_ports_on_one_target_are_blocked_not_attempted() {
        let ctx = plain_context();
        let with_port: crate::api::DockerContainerSpec =
            serde_json::from_value(serde_json::json!({
                "image": "app:1", "ports": [{"containerPort": 80, "hostPort": 8080}],
                "placement": {"target": "t"}
            }))
            .expect("spec");
        let mut desired =
            desired_instances(&owner(0), &with_port, &ResolvedEnv::new(), &[0], &ctx).expect("a");
        desired.extend(
            desired_instances(&owner(1), &with_port, &ResolvedEnv::new(), &[0], &ctx).expect("b"),
        );
        let world = world(&[], true);
        let plan = plan_for(&world, &desired, &HashSet::new());
        assert_eq!(plan.actions.len(), 1);
        assert_eq!(plan.blocked.len(), 1);
        assert!(
            plan.blocked[0].reason.contains("8080/tcp"),
            "{:?}",
            plan.blocked
        );
    }

    #[test]
    fn a_missing_image_with_pull_policy_never_is_blocked() {
        let mut desired = desired(&[(0, vec![0], "a", "Always")]);
        desired[0].pull_policy = ImagePullPolicy::Never;
        let world = world(&[], false);
        let plan = plan_for(&world, &desired, &HashSet::new());
        assert!(plan.actions.is_empty());
        assert!(plan.blocked[0].reason.contains("imagePullPolicy is Never"));
    }
}
