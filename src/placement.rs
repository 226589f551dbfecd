//! Placement: which target runs each replica. A pure function shared by standalone mode and
//! the controller.
//!
//! - `placement.target` pins the one replica to that target.
//! - `targetSelector` + `replicas` spreads replicas over the matching targets that are
//!   ready, schedulable and have room, fewest containers first (ties by name), never two
//!   containers publishing the same host port on one target.
//! - Placements are sticky: a replica stays where it runs (even on a cordoned target) and
//!   moves only when its target is gone, or unreachable for longer than the grace period.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use kube::core::{Selector, SelectorExt};

use crate::api::container::Placement as PlacementSpec;
use crate::converge::model::HostPort;

/// How long a target may be unreachable before its replicas move elsewhere.
pub const DEFAULT_GRACE_SECS: u64 = 300;

/// What placement needs to know of a target.
#[derive(Clone, Debug, Default)]
pub struct TargetInfo {
    /// Name (unique in its namespace).
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Whether the daemon answers now.
    pub ready: bool,
    /// When it stopped answering (unix seconds), if it is not ready.
    pub unreachable_since: Option<u64>,
    /// Cordoned: no new placements.
    pub unschedulable: bool,
    /// Most containers placed on it; 0 is unlimited.
    pub max_containers: i32,
}

/// One DockerContainer to place.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The owner's UID.
    pub owner_uid: String,
    /// `spec.placement`.
    pub placement: PlacementSpec,
    /// Host ports each replica publishes.
    pub host_ports: Vec<HostPort>,
    /// Only its running replicas count (as load and ports); none is placed anew here. A
    /// controller reconcile places one DockerContainer's replicas among its own targets
    /// and counts the others' as they run, as a scheduler places one pod at a time.
    pub settled: bool,
}

/// A replica that already runs somewhere (read from container labels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Existing {
    /// The owner's UID.
    pub owner_uid: String,
    /// Replica index.
    pub replica: u32,
    /// Target name.
    pub target: String,
}

/// Where one replica goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Assignment {
    /// The owner's UID.
    pub owner_uid: String,
    /// Replica index.
    pub replica: u32,
    /// Target name.
    pub target: String,
}

/// A replica with nowhere to go, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaced {
    /// The owner's UID.
    pub owner_uid: String,
    /// Replica index.
    pub replica: u32,
    /// Why.
    pub reason: String,
}

/// The outcome of placing every workload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placements {
    /// Replicas with a target.
    pub assignments: Vec<Assignment>,
    /// Replicas without one.
    pub unplaced: Vec<Unplaced>,
}

impl Placements {
    /// The replicas of `owner_uid`, by target name (one pass over every assignment, so
    /// that finding them on each of a fleet's targets is not one pass per target).
    pub fn replicas_of(&self, owner_uid: &str) -> HashMap<&str, Vec<u32>> {
        let mut by_target: HashMap<&str, Vec<u32>> = HashMap::new();
        for a in self.assignments.iter().filter(|a| a.owner_uid == owner_uid) {
            by_target
                .entry(a.target.as_str())
                .or_default()
                .push(a.replica);
        }
        by_target
    }
}

/// Load of one target while placing.
#[derive(Default)]
struct Load<'a> {
    containers: usize,
    ports: Vec<&'a HostPort>,
}

/// Places every replica of every workload. `existing` is what runs now; `now` and
/// `grace_secs` decide when an unreachable target's replicas move.
pub fn place(
    targets: &[TargetInfo],
    workloads: &[Workload],
    existing: &[Existing],
    now: u64,
    grace_secs: u64,
) -> Placements {
    let by_name: HashMap<&str, &TargetInfo> =
        targets.iter().map(|t| (t.name.as_str(), t)).collect();
    let holds = |target: &TargetInfo| {
        target.ready
            || target
                .unreachable_since
                .is_none_or(|since| now.saturating_sub(since) < grace_secs)
    };
    let mut load: HashMap<&str, Load<'_>> = HashMap::new();
    let mut result = Placements::default();
    let mut pending: Vec<(&Workload, u32)> = Vec::new();
    // The first place each replica runs, found in one pass (a fleet has one per replica).
    let mut running: HashMap<(&str, u32), &str> = HashMap::with_capacity(existing.len());
    for e in existing {
        running
            .entry((e.owner_uid.as_str(), e.replica))
            .or_insert(e.target.as_str());
    }

    // Keep what already runs where it may stay.
    let mut ordered: Vec<&Workload> = workloads.iter().collect();
    ordered.sort_by(|a, b| a.owner_uid.cmp(&b.owner_uid));
    for workload in &ordered {
        let replicas = wanted_replicas(&workload.placement);
        let reach = Reach::of(&workload.placement);
        for replica in 0..replicas {
            let current = running
                .get(&(workload.owner_uid.as_str(), replica))
                .and_then(|target| by_name.get(target).copied());
            let allowed = current.filter(|t| holds(t) && reach.includes(&t.name, Some(&t.labels)));
            match allowed {
                Some(target) => assign(&mut load, &mut result, workload, replica, target),
                None if workload.settled => {}
                None => pending.push((workload, replica)),
            }
        }
    }

    // Then place the rest, fewest containers first. `pending` holds each workload's
    // replicas one after another: its selector is read once, and its replicas are taken
    // from a heap of the targets that can take one, not by asking every target for
    // every replica (a fleet's cold start is thousands of replicas over as many targets).
    let mut choosing: Option<Choosing<'_>> = None;
    for (workload, replica) in pending {
        let unplaced = |reason: String| Unplaced {
            owner_uid: workload.owner_uid.clone(),
            replica,
            reason,
        };
        if let Some(pinned) = &workload.placement.target {
            match by_name.get(pinned.as_str()) {
                None => result
                    .unplaced
                    .push(unplaced(format!("DockerTarget {pinned} not found"))),
                Some(target) if !holds(target) => result.unplaced.push(unplaced(format!(
                    "DockerTarget {pinned} has been unreachable for longer than {grace_secs} s"
                ))),
                // A pinned replica goes to its target even when cordoned or full: the user
                // named it. Port clashes are left to the plan, which reports them.
                Some(target) => assign(&mut load, &mut result, workload, replica, target),
            }
            continue;
        }
        let current = choosing
            .take()
            .filter(|c| std::ptr::eq(c.workload, workload));
        let mut candidates = current.unwrap_or_else(|| Choosing::new(workload, targets, &load));
        match candidates.pick(&by_name) {
            Some(target) => {
                assign(&mut load, &mut result, workload, replica, target);
                candidates.taken(target, &load);
            }
            None => {
                let why_not = candidates.why_not(&load);
                result.unplaced.push(unplaced(if why_not.is_empty() {
                    "no DockerTarget matches targetSelector".into()
                } else {
                    format!("no DockerTarget can take it: {}", why_not.join("; "))
                }));
            }
        }
        choosing = Some(candidates);
    }
    result.assignments.sort();
    result
}

/// The targets one selector workload's replicas may go to, fewest containers first.
struct Choosing<'a> {
    workload: &'a Workload,
    /// The targets its selector matches, or why the selector cannot be used.
    selected: Result<Vec<&'a TargetInfo>, String>,
    /// Those that can take a replica now, by load and then name.
    open: BinaryHeap<Reverse<(usize, &'a str)>>,
}

impl<'a> Choosing<'a> {
    fn new(
        workload: &'a Workload,
        targets: &'a [TargetInfo],
        load: &HashMap<&str, Load<'_>>,
    ) -> Self {
        let selected = match &workload.placement.target_selector {
            None => Ok(Vec::new()),
            // As when every target was asked: no target, no selector to find unusable.
            Some(_) if targets.is_empty() => Ok(Vec::new()),
            Some(selector) => Selector::try_from(selector.clone())
                .map(|selector| {
                    targets
                        .iter()
                        .filter(|t| selector.matches(&t.labels))
                        .collect()
                })
                .map_err(|e| format!("targetSelector is not usable: {e}")),
        };
        let matching = selected.as_deref().unwrap_or_default();
        let open = matching
            .iter()
            .filter(|t| why_not(workload, t, load).is_none())
            .map(|t| Reverse((containers_on(load, t), t.name.as_str())))
            .collect();
        Self {
            workload,
            selected,
            open,
        }
    }

    /// The target with the fewest containers (ties by name) that can take a replica.
    fn pick(&mut self, by_name: &HashMap<&str, &'a TargetInfo>) -> Option<&'a TargetInfo> {
        let Reverse((_, name)) = self.open.pop()?;
        by_name.get(name).copied()
    }

    /// `target` took a replica: it stays open with its new load, if it can take another.
    fn taken(&mut self, target: &'a TargetInfo, load: &HashMap<&str, Load<'_>>) {
        if why_not(self.workload, target, load).is_none() {
            self.open
                .push(Reverse((containers_on(load, target), target.name.as_str())));
        }
    }

    /// Why no target can take a replica: an unusable selector, or each target's reason.
    fn why_not(&self, load: &HashMap<&str, Load<'_>>) -> Vec<String> {
        match &self.selected {
            Err(e) => vec![e.clone()],
            Ok(selected) => selected
                .iter()
                .filter_map(|t| why_not(self.workload, t, load))
                .collect(),
        }
    }
}

fn containers_on(load: &HashMap<&str, Load<'_>>, target: &TargetInfo) -> usize {
    load.get(target.name.as_str()).map_or(0, |l| l.containers)
}

/// Why `target` cannot take one more replica of `workload`, if it cannot.
fn why_not(
    workload: &Workload,
    target: &TargetInfo,
    load: &HashMap<&str, Load<'_>>,
) -> Option<String> {
    let current = load.get(target.name.as_str());
    let count = current.map_or(0, |l| l.containers);
    if !target.ready {
        Some(format!("{} is not ready", target.name))
    } else if target.unschedulable {
        Some(format!("{} is cordoned", target.name))
    } else if target.max_containers > 0 && count >= target.max_containers as usize {
        Some(format!("{} is full", target.name))
    } else {
        workload
            .host_ports
            .iter()
            .find(|p| current.is_some_and(|l| l.ports.iter().any(|used| used.clashes_with(p))))
            .map(|port| format!("{} already publishes {port}", target.name))
    }
}

/// Puts `replica` of `workload` on `target`, counting it towards the target's load.
fn assign<'a>(
    load: &mut HashMap<&'a str, Load<'a>>,
    result: &mut Placements,
    workload: &'a Workload,
    replica: u32,
    target: &'a TargetInfo,
) {
    let entry = load.entry(target.name.as_str()).or_default();
    entry.containers += 1;
    entry.ports.extend(workload.host_ports.iter());
    result.assignments.push(Assignment {
        owner_uid: workload.owner_uid.clone(),
        replica,
        target: target.name.clone(),
    });
}

fn wanted_replicas(placement: &PlacementSpec) -> u32 {
    u32::try_from(placement.replicas).unwrap_or(0)
}

/// Which targets a placement may put replicas on, read once and asked of many targets.
pub enum Reach<'a> {
    /// `placement.target`: that one target.
    Named(&'a str),
    /// `targetSelector`: the targets whose labels match.
    Selected(Selector),
    /// Neither, or a selector that cannot be used: no target.
    Nothing,
}

impl<'a> Reach<'a> {
    /// What `placement` may reach.
    pub fn of(placement: &'a PlacementSpec) -> Self {
        match (&placement.target, &placement.target_selector) {
            (Some(name), _) => Self::Named(name),
            (None, Some(selector)) => Selector::try_from(selector.clone())
                .map(Self::Selected)
                .unwrap_or(Self::Nothing),
            (None, None) => Self::Nothing,
        }
    }

    /// Whether the target `name` with `labels` is within reach.
    pub fn includes(&self, name: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        match self {
            Self::Named(named) => *named == name,
            Self::Selected(selector) => selector.matches(labels.unwrap_or(&BTreeMap::new())),
            Self::Nothing => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::container::Protocol;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn target(name: &str, site: &str) -> TargetInfo {
        TargetInfo {
            name: name.into(),
            labels: BTreeMap::from([("site".into(), site.into())]),
            ready: true,
            ..Default::default()
        }
    }

    fn spread(owner: &str, replicas: i32, ports: &[i32]) -> Workload {
        Workload {
            owner_uid: owner.into(),
            placement: PlacementSpec {
                target: None,
                target_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([("site".into(), "edge".into())])),
                    match_expressions: None,
                }),
                replicas,
            },
            host_ports: ports
                .iter()
                .map(|p| HostPort {
                    ip: None,
                    port: *p,
                    protocol: Protocol::Tcp,
                })
                .collect(),
            settled: false,
        }
    }

    fn targets_of(p: &Placements, owner: &str) -> Vec<String> {
        p.assignments
            .iter()
            .filter(|a| a.owner_uid == owner)
            .map(|a| a.target.clone())
            .collect()
    }

    /// Placed one replica at a time, by asking every target: what the heap must match.
    fn placed_by_asking_every_target(
        targets: &[TargetInfo],
        workloads: &[Workload],
    ) -> BTreeMap<(String, u32), String> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut ports: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        let mut placed = BTreeMap::new();
        let mut ordered: Vec<&Workload> = workloads.iter().collect();
        ordered.sort_by(|a, b| a.owner_uid.cmp(&b.owner_uid));
        for w in ordered {
            for replica in 0..wanted_replicas(&w.placement) {
                let chosen = targets
                    .iter()
                    .filter(|t| t.labels.get("site").map(String::as_str) == Some("edge"))
                    .filter(|t| t.ready && !t.unschedulable)
                    .filter(|t| {
                        t.max_containers == 0
                            || counts.get(t.name.as_str()).copied().unwrap_or(0)
                                < t.max_containers as usize
                    })
                    .filter(|t| {
                        let used = ports.get(t.name.as_str());
                        !w.host_ports
                            .iter()
                            .any(|p| used.is_some_and(|u| u.contains(&p.port)))
                    })
                    .min_by_key(|t| (counts.get(t.name.as_str()).copied().unwrap_or(0), &t.name));
                if let Some(t) = chosen {
                    *counts.entry(&t.name).or_default() += 1;
                    ports
                        .entry(&t.name)
                        .or_default()
                        .extend(w.host_ports.iter().map(|p| p.port));
                    placed.insert((w.owner_uid.clone(), replica), t.name.clone());
                }
            }
        }
        placed
    }

    #[test]
    fn many_replicas_go_where_asking_every_target_would_put_them() {
        let mut targets: Vec<TargetInfo> = (0..12)
            .map(|i| target(&format!("edge-{i:02}"), "edge"))
            .collect();
        targets.push(target("lab", "lab"));
        targets[3].max_containers = 4;
        targets[5].unschedulable = true;
        targets[7].ready = false;
        targets[7].unreachable_since = Some(0);
        let workloads = [
            spread("a", 25, &[]),
            spread("b", 9, &[8080]),
            spread("c", 11, &[8080]),
            spread("d", 4, &[9090]),
        ];
        let p = place(&targets, &workloads, &[], 0, DEFAULT_GRACE_SECS);
        let placed: BTreeMap<(String, u32), String> = p
            .assignments
            .iter()
            .map(|a| ((a.owner_uid.clone(), a.replica), a.target.clone()))
            .collect();
        let reference = placed_by_asking_every_target(&targets, &workloads);
        assert_eq!(placed, reference);
        // 8080 is taken by b on nine targets, edge-03 is full: c finds one target left.
        let waiting: Vec<(&str, u32)> = p
            .unplaced
            .iter()
            .map(|u| (u.owner_uid.as_str(), u.replica))
            .collect();
        assert_eq!(waiting, (1..11).map(|r| ("c", r)).collect::<Vec<_>>());
        assert_eq!(
            reference.get(&("c".into(), 0)).map(String::as_str),
            Some("edge-04")
        );
        assert!(
            p.unplaced[0].reason.contains("edge-05 is cordoned")
                && p.unplaced[0].reason.contains("edge-07 is not ready")
                && p.unplaced[0]
                    .reason
                    .contains("edge-00 already publishes 8080/tcp"),
            "{}",
            p.unplaced[0].reason
        );
    }

    #[test]
    fn three_replicas_over_two_targets_place_two_and_one() {
        let targets = [
            target("edge-1", "edge"),
            target("edge-2", "edge"),
            target("lab", "lab"),
        ];
        let p = place(&targets, &[spread("a", 3, &[])], &[], 0, DEFAULT_GRACE_SECS);
        assert_eq!(targets_of(&p, "a"), vec!["edge-1", "edge-2", "edge-1"]);
        assert!(p.unplaced.is_empty());
    }

    #[test]
    fn placements_are_sticky_and_cordoned_targets_keep_what_they_run() {
        let mut targets = [target("edge-1", "edge"), target("edge-2", "edge")];
        targets[1].unschedulable = true;
        let existing = [Existing {
            owner_uid: "a".into(),
            replica: 0,
            target: "edge-2".into(),
        }];
        let p = place(
            &targets,
            &[spread("a", 2, &[])],
            &existing,
            0,
            DEFAULT_GRACE_SECS,
        );
        assert_eq!(targets_of(&p, "a"), vec!["edge-2", "edge-1"]);
    }

    #[test]
    fn equal_host_ports_never_share_a_target() {
        let targets = [target("edge-1", "edge"), target("edge-2", "edge")];
        let p = place(
            &targets,
            &[spread("a", 3, &[8080])],
            &[],
            0,
            DEFAULT_GRACE_SECS,
        );
        assert_eq!(targets_of(&p, "a"), vec!["edge-1", "edge-2"]);
        assert_eq!(p.unplaced.len(), 1);
        assert!(
            p.unplaced[0].reason.contains("already publishes 8080/tcp"),
            "{:?}",
            p.unplaced
        );
    }

    #[test]
    fn replicas_move_only_after_the_grace_period_or_when_the_target_is_gone() {
        let mut targets = vec![target("edge-1", "edge"), target("edge-2", "edge")];
        targets[0].ready = false;
        targets[0].unreachable_since = Some(1000);
        let existing = [Existing {
            owner_uid: "a".into(),
            replica: 0,
            target: "edge-1".into(),
        }];
        let within = place(&targets, &[spread("a", 1, &[])], &existing, 1100, 300);
        assert_eq!(targets_of(&within, "a"), vec!["edge-1"]);
        let after = place(&targets, &[spread("a", 1, &[])], &existing, 1400, 300);
        assert_eq!(targets_of(&after, "a"), vec!["edge-2"]);
        targets.remove(0);
        let gone = place(&targets, &[spread("a", 1, &[])], &existing, 1001, 300);
        assert_eq!(targets_of(&gone, "a"), vec!["edge-2"]);
    }

    #[test]
    fn full_not_ready_and_unmatched_targets_are_explained() {
        let mut targets = [target("edge-1", "edge"), target("edge-2", "edge")];
        targets[0].max_containers = 1;
        targets[1].ready = false;
        let p = place(&targets, &[spread("a", 2, &[])], &[], 0, 300);
        assert_eq!(targets_of(&p, "a"), vec!["edge-1"]);
        assert!(p.unplaced[0].reason.contains("edge-1 is full"));
        assert!(p.unplaced[0].reason.contains("edge-2 is not ready"));
        let none = place(&[target("lab", "lab")], &[spread("b", 1, &[])], &[], 0, 300);
        assert_eq!(
            none.unplaced[0].reason,
            "no DockerTarget matches targetSelector"
        );
    }

    #[test]
    fn a_settled_workload_counts_where_it_runs_and_places_nothing() {
        let targets = [target("edge-1", "edge"), target("edge-2", "edge")];
        let running = Existing {
            owner_uid: "other".into(),
            replica: 0,
            target: "edge-1".into(),
        };
        let other = Workload {
            settled: true,
            ..spread("other", 3, &[80])
        };
        let p = place(
            &targets,
            &[other, spread("mine", 1, &[80])],
            std::slice::from_ref(&running),
            0,
            300,
        );
        // Its replica on edge-1 holds port 80 there; its two missing ones go nowhere.
        assert_eq!(targets_of(&p, "other"), ["edge-1"]);
        assert!(p.unplaced.iter().all(|u| u.owner_uid != "other"));
        assert_eq!(targets_of(&p, "mine"), ["edge-2"]);
    }

    #[test]
    fn a_pinned_replica_goes_to_its_target_or_says_it_is_missing() {
        let pinned = Workload {
            owner_uid: "p".into(),
            placement: PlacementSpec {
                target: Some("edge-1".into()),
                target_selector: None,
                replicas: 1,
            },
            host_ports: vec![],
            settled: false,
        };
        let p = place(
            &[target("edge-1", "edge")],
            std::slice::from_ref(&pinned),
            &[],
            0,
            300,
        );
        assert_eq!(targets_of(&p, "p"), vec!["edge-1"]);
        let p = place(&[], &[pinned], &[], 0, 300);
        assert_eq!(p.unplaced[0].reason, "DockerTarget edge-1 not found");
    }

    #[test]
    fn scaling_down_drops_the_highest_replicas() {
        let targets = [target("edge-1", "edge"), target("edge-2", "edge")];
        let existing: Vec<Existing> = (0..3)
            .map(|r| Existing {
                owner_uid: "a".into(),
                replica: r,
                target: if r == 1 { "edge-2" } else { "edge-1" }.into(),
            })
            .collect();
        let p = place(&targets, &[spread("a", 2, &[])], &existing, 0, 300);
        let of_a = p.replicas_of("a");
        assert_eq!(of_a.get("edge-1"), Some(&vec![0]));
        assert_eq!(of_a.get("edge-2"), Some(&vec![1]));
    }
}
