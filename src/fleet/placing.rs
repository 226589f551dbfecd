//! Placement input, built one way for both modes: the targets as they answer now, what they
//! run (their labels; while one cannot be listed, its last list and what the mode
//! recorded), and every DockerContainer of the namespace as a workload.

use super::connections::TargetSeen;
use super::{Snapshot, TargetEntry};
use crate::converge::model::host_ports;
use crate::labels::{LABEL_REPLICA, LABEL_UID};
use crate::placement::{Existing, Placements, TargetInfo, Workload, place};

/// Places every replica of every DockerContainer of the snapshot, or with `placing`, only
/// that DockerContainer's (the others count where they run). `seen` is in the snapshot's
/// target order; a target it does not reach counts as not answering since `now`. On the
/// targets `acted_on_elsewhere` names (another replica's shard, see
/// `controller::shards`), what the mode recorded counts as running even while the target
/// answers: that replica may not have carried the recorded placement out yet, and placing
/// the replica again elsewhere would start it twice.
pub fn place_snapshot<'s>(
    snapshot: &Snapshot,
    seen: impl IntoIterator<Item = &'s TargetSeen>,
    placing: Option<&str>,
    (now, grace_secs): (u64, u64),
    acted_on_elsewhere: &dyn Fn(&TargetEntry) -> bool,
) -> Placements {
    let mut seen = seen.into_iter();
    let targets: Vec<_> = snapshot.targets.iter().map(|t| (t, seen.next())).collect();
    let mut infos: Vec<TargetInfo> = targets
        .iter()
        .map(|(t, seen)| {
            let answers = seen.is_some_and(TargetSeen::answers);
            TargetInfo {
                name: t.name.clone(),
                labels: t.object.metadata.labels.clone().unwrap_or_default(),
                ready: answers,
                unreachable_since: if answers {
                    None
                } else {
                    seen.and_then(|s| s.unreachable_since).or(Some(now))
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
    for (target, seen) in &targets {
        let listed = seen
            .and_then(|s| s.known.as_deref())
            .map_or(&[][..], Vec::as_slice);
        existing.extend(listed.iter().filter_map(|c| {
            Some(Existing {
                owner_uid: c.labels.get(LABEL_UID)?.to_string(),
                replica: c.labels.get(LABEL_REPLICA)?.parse().ok()?,
                target: target.name.clone(),
            })
        }));
        if seen.is_some_and(TargetSeen::answers) && !acted_on_elsewhere(target) {
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
            settled: placing.is_some_and(|uid| uid != c.uid),
        })
        .collect();
    place(&infos, &workloads, &existing, now, grace_secs)
}
