//! Placement input, built one way for both modes: the targets as they answer now, what they
//! run (their labels; while one cannot be listed, its last list and what the mode
//! recorded), and every DockerContainer of the namespace as a workload.

use std::collections::HashMap;

use super::Snapshot;
use crate::converge::model::host_ports;
use crate::docker::HostContainer;
use crate::labels::{LABEL_REPLICA, LABEL_UID};
use crate::placement::{Existing, Placements, TargetInfo, Workload, place};

/// What one target showed this round.
#[derive(Clone, Copy, Debug, Default)]
pub struct Observation<'a> {
    /// Connected and listed this round.
    pub answering: bool,
    /// Since when (unix seconds) it has not answered, if it does not.
    pub unreachable_since: Option<u64>,
    /// What it runs: this round's list or, while it cannot be listed, its last one.
    pub listed: Option<&'a [HostContainer]>,
}

/// Places every replica of every DockerContainer of the snapshot. `observed` is by target
/// name; a target missing from it counts as not answering since `now`.
pub fn place_snapshot(
    snapshot: &Snapshot,
    observed: &HashMap<&str, Observation<'_>>,
    now: u64,
    grace_secs: u64,
) -> Placements {
    let mut infos: Vec<TargetInfo> = snapshot
        .targets
        .iter()
        .map(|t| {
            let seen = observed.get(t.name.as_str()).copied().unwrap_or_default();
            TargetInfo {
                name: t.name.clone(),
                labels: t.object.metadata.labels.clone().unwrap_or_default(),
                ready: seen.answering,
                unreachable_since: if seen.answering {
                    None
                } else {
                    seen.unreachable_since.or(Some(now))
                },
                unschedulable: t.object.spec.unschedulable,
                max_containers: t.object.spec.max_containers,
            }
        })
        .collect();
    // Unknown is not gone: a held target keeps its replicas and takes no new ones.
    infos.extend(snapshot.held_targets.iter().map(|name| TargetInfo {
        name: name.clone(),
        ..Default::default()
    }));

    let mut existing = Vec::new();
    for target in &snapshot.targets {
        let seen = observed
            .get(target.name.as_str())
            .copied()
            .unwrap_or_default();
        let listed = seen.listed.unwrap_or_default();
        existing.extend(listed.iter().filter_map(|c| {
            Some(Existing {
                owner_uid: c.labels.get(LABEL_UID)?.clone(),
                replica: c.labels.get(LABEL_REPLICA)?.parse().ok()?,
                target: target.name.clone(),
            })
        }));
        if seen.answering {
            continue;
        }
        // A silent target's last list may predate what was done there since (it was
        // listed before the converge that created a replica): what the mode recorded
        // afterwards counts too.
        existing.extend(snapshot.containers.iter().flat_map(|c| {
            c.recorded
                .replicas
                .iter()
                .filter(|(on, _)| on == &target.name)
                .map(|(on, replica)| Existing {
                    owner_uid: c.uid.clone(),
                    replica: *replica,
                    target: on.clone(),
                })
        }));
    }

    let workloads: Vec<Workload> = snapshot
        .containers
        .iter()
        .map(|c| Workload {
            owner_uid: c.uid.clone(),
            placement: c.object.spec.placement.clone(),
            host_ports: host_ports(&c.object.spec),
        })
        .collect();
    place(&infos, &workloads, &existing, now, grace_secs)
}
