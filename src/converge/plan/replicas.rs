//! The plan, one replica at a time: what a desired instance's containers on the target ask
//! for (create, start, replace, keep, remove a leftover), then the containers nobody wants,
//! gathered into one plan with its pulls first.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::{Action, ContainerRef, Finding, Plan, PlanInput, Replacement, is_previous_of};
use crate::api::container::{DriftPolicy, ImagePullPolicy, RestartPolicy, UpdateStrategyType};
use crate::converge::model::{
    DesiredInstance, HostPort, describe_changes, parse_field_digests, previous_name,
};
use crate::docker::{ContainerState, HostContainer};
use crate::labels::{LABEL_REPLICA, LABEL_SPEC_FIELDS, LABEL_SPEC_HASH, LABEL_UID};

/// Planning one target, replica by replica.
pub(super) struct Planner<'a> {
    input: PlanInput<'a>,
    plan: Plan,
    /// Images to pull: the first instance that needs each (for its credentials) and the
    /// names of all that do.
    pulls: BTreeMap<String, (usize, Vec<String>)>,
    /// Host ports already published by an instance planned before, and by which.
    claimed_ports: Vec<(&'a HostPort, &'a str)>,
    /// Containers some desired instance accounts for.
    matched: HashSet<&'a str>,
    steps: Vec<Action>,
    /// Replacements a rolling update started, per owner.
    rolling: HashMap<&'a str, usize>,
    /// What a `Recreate` gathers into one step, per owner.
    recreates: BTreeMap<&'a str, Vec<Replacement>>,
}

impl<'a> Planner<'a> {
    pub(super) fn new(input: PlanInput<'a>) -> Self {
        Self {
            input,
            plan: Plan::default(),
            pulls: BTreeMap::new(),
            claimed_ports: Vec::new(),
            matched: HashSet::new(),
            steps: Vec::new(),
            rolling: HashMap::new(),
            recreates: BTreeMap::new(),
        }
    }

    /// The desired instance at `index` (borrowed from the input, not from the planner).
    fn desired(&self, index: usize) -> &'a DesiredInstance {
        let all: &'a [DesiredInstance] = self.input.desired;
        &all[index]
    }

    /// Plans `input.desired[index]` from `group`, the containers labelled as its replica.
    pub(super) fn replica(&mut self, index: usize, mut group: Vec<&'a HostContainer>) {
        let desired = self.desired(index);
        self.matched.extend(group.iter().map(|c| c.id.as_str()));
        // The replica's previous container stays while the replica does (it goes with the
        // replica, as an orphan); started by hand, it is a duplicate like any other.
        let previous_name = previous_name(&desired.name);
        let previous = group
            .iter()
            .find(|c| is_previous_of(c, desired, &previous_name))
            .map(|c| ContainerRef::of(c));
        group.retain(|c| c.name != previous_name || c.state == ContainerState::Running);
        if !self.claim_ports(desired) {
            return;
        }
        let canonical = group.iter().copied().find(|c| c.name == desired.name);
        let extras: Vec<&HostContainer> = group
            .iter()
            .copied()
            .filter(|c| c.name != desired.name)
            .collect();
        let up_to_date =
            canonical.filter(|c| c.labels.get(LABEL_SPEC_HASH) == Some(desired.spec_hash.as_str()));
        // A new container is needed: make sure its image can be had first.
        if up_to_date.is_none() && !self.image_for(index) {
            return;
        }
        match (canonical, up_to_date) {
            (None, _) if extras.is_empty() => self.create(index),
            (None, _) => self.finish_interrupted(index, &extras, previous),
            (Some(current), None) => self.replace(index, current, previous),
            (Some(_), Some(current)) => self.keep(index, current, &extras),
        }
    }

    /// Claims the instance's host ports; false (and blocked) when one is taken already.
    fn claim_ports(&mut self, desired: &'a DesiredInstance) -> bool {
        let clash = desired.host_ports.iter().find_map(|port| {
            self.claimed_ports
                .iter()
                .find(|(claimed, _)| claimed.clashes_with(port))
                .map(|(_, holder)| (port, *holder))
        });
        if let Some((port, holder)) = clash {
            self.plan.blocked.push(Finding {
                container: desired.name.clone(),
                reason: format!("host port {port} is already published by {holder} on this target"),
            });
            return false;
        }
        self.claimed_ports.extend(
            desired
                .host_ports
                .iter()
                .map(|p| (p, desired.name.as_str())),
        );
        true
    }

    /// Adds the pull a new container of `input.desired[index]` needs; false (and blocked)
    /// when its image is missing and may not be pulled.
    fn image_for(&mut self, index: usize) -> bool {
        let desired = self.desired(index);
        let present = self.input.images.contains(&desired.image);
        let needs_pull = match desired.pull_policy {
            ImagePullPolicy::Always => true,
            ImagePullPolicy::IfNotPresent => !present,
            ImagePullPolicy::Never if !present => {
                self.plan.blocked.push(Finding {
                    container: desired.name.clone(),
                    reason: format!(
                        "image {} is not on this target and imagePullPolicy is Never",
                        desired.image
                    ),
                });
                return false;
            }
            ImagePullPolicy::Never => false,
        };
        if needs_pull {
            self.pulls
                .entry(desired.image.clone())
                .or_insert_with(|| (index, Vec::new()))
                .1
                .push(desired.name.clone());
        }
        true
    }

    /// No container for the replica: create one, unless it went missing under
    /// `driftPolicy: Report`.
    fn create(&mut self, index: usize) {
        let desired = self.desired(index);
        if desired.drift_policy == DriftPolicy::Report
            && self.input.known_containers.contains(&desired.name)
        {
            self.plan.drift.push(Finding {
                container: desired.name.clone(),
                reason: "container is missing (removed outside Stevedore); driftPolicy is \
                         Report, so it is not recreated"
                    .into(),
            });
        } else {
            self.steps.push(Action::Create {
                desired: index,
                reason: "not on this target yet".into(),
            });
        }
    }

    /// Only containers under other names: a replacement was interrupted after the old
    /// container was renamed. Finish it, and remove the other duplicates.
    fn finish_interrupted(
        &mut self,
        index: usize,
        extras: &[&'a HostContainer],
        previous: Option<ContainerRef>,
    ) {
        let desired = self.desired(index);
        let old = extras
            .iter()
            .find(|c| c.state == ContainerState::Running)
            .or(extras.first())
            .copied();
        let Some(old) = old else { return };
        *self.rolling.entry(desired.owner.uid.as_str()).or_default() += 1;
        self.steps.push(Action::Replace(Replacement {
            old: ContainerRef::of(old),
            old_running: old.state == ContainerState::Running,
            desired: index,
            reason: "finishing an interrupted replacement".into(),
            previous,
        }));
        for extra in extras.iter().filter(|c| c.id != old.id) {
            self.steps.push(remove(
                extra,
                Some(desired.stop_timeout_seconds),
                format!(
                    "duplicate of {} left by an interrupted replacement",
                    desired.name
                ),
            ));
        }
    }

    /// The container runs another spec: replace it, as the update strategy allows.
    fn replace(
        &mut self,
        index: usize,
        current: &'a HostContainer,
        previous: Option<ContainerRef>,
    ) {
        let desired = self.desired(index);
        let running = parse_field_digests(current.labels.get(LABEL_SPEC_FIELDS).unwrap_or(""));
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
            previous,
        };
        let strategy = &desired.update_strategy;
        if strategy.kind == UpdateStrategyType::Recreate {
            self.recreates
                .entry(desired.owner.uid.as_str())
                .or_default()
                .push(replacement);
            return;
        }
        let at_once = usize::try_from(strategy.max_unavailable.saturating_add(strategy.max_surge))
            .unwrap_or(0)
            .max(1);
        let started = self.rolling.entry(desired.owner.uid.as_str()).or_default();
        if *started >= at_once {
            self.plan.waiting.push(Finding {
                container: desired.name.clone(),
                reason: format!(
                    "waiting for its turn: the rolling update replaces {at_once} at a time"
                ),
            });
            return;
        }
        *started += 1;
        self.steps.push(Action::Replace(replacement));
    }

    /// The container runs the current spec: keep it running, and once it is ready, remove
    /// what an interrupted replacement left beside it.
    fn keep(&mut self, index: usize, current: &'a HostContainer, extras: &[&'a HostContainer]) {
        let desired = self.desired(index);
        if let Some(step) = keep_running(&self.input, desired, index, current, &mut self.plan) {
            self.steps.push(step);
        }
        if desired.ready_with(current) {
            for extra in extras {
                self.steps.push(remove(
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

    /// Removes the containers no desired instance accounts for, unless their owner is
    /// protected.
    pub(super) fn remove_unwanted(&mut self, ours: &[&'a HostContainer]) {
        let wanted_owners: HashSet<&str> = self
            .input
            .desired
            .iter()
            .map(|d| d.owner.uid.as_str())
            .collect();
        for container in ours {
            if self.matched.contains(container.id.as_str()) {
                continue;
            }
            let owner = container.labels.get(LABEL_UID).unwrap_or_default();
            if self.input.protected_owners.contains(owner) {
                continue;
            }
            let reason = if wanted_owners.contains(owner) {
                format!(
                    "replica {} is no longer wanted on this target",
                    container.labels.get(LABEL_REPLICA).unwrap_or("?")
                )
            } else {
                "its DockerContainer no longer wants it on this target".to_string()
            };
            self.steps.push(remove(container, None, reason));
        }
    }

    /// The plan: pulls first, then the steps, each `Recreate` gathered into one; the plan
    /// holds the instances its actions name.
    pub(super) fn finish(mut self) -> Plan {
        for (owner, replacements) in std::mem::take(&mut self.recreates) {
            let name = self
                .input
                .desired
                .iter()
                .find(|d| d.owner.uid == owner)
                .map_or(owner, |d| d.owner.name.as_str());
            self.steps.push(Action::Recreate {
                reason: format!(
                    "updateStrategy Recreate: {} container(s) of {name} stopped before the new \
                     ones start",
                    replacements.len()
                ),
                replacements,
            });
        }
        let mut plan = self.plan;
        plan.actions = self
            .pulls
            .into_iter()
            .map(|(image, (desired, names))| Action::Pull {
                reason: format!("needed by {}", names.join(", ")),
                image,
                desired,
            })
            .chain(self.steps)
            .collect();
        plan.instances = Arc::clone(self.input.desired);
        plan
    }
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
