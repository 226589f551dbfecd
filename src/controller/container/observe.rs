//! The targets as one reconcile sees them, and the placement input built from the fleet's
//! snapshot of the namespace.

use std::sync::Arc;

use kube::ResourceExt;

use crate::api::DockerContainer;
use crate::controller::context::Context;
use crate::converge::engine::unix_now;
use crate::docker::HostContainer;
use crate::fleet::connections::{Attempt, TargetSeen, observe};
use crate::fleet::placing::place_snapshot;
use crate::fleet::{ContainerEntry, Recorded, Snapshot, TargetEntry};
use crate::labels::LABEL_UID;
use crate::placement::Placements;

/// One target as this reconcile sees it.
pub(super) struct TargetView<'a> {
    /// The target.
    pub target: &'a TargetEntry,
    /// What one list call (or the last one) showed.
    pub seen: TargetSeen,
}

/// Connects to (or reuses the connection of) every target of the namespace and lists its
/// managed containers: one list call per target.
pub(super) async fn observe_targets<'a>(
    ctx: &Context,
    snapshot: &'a Snapshot,
    attempt: Attempt,
) -> Vec<TargetView<'a>> {
    let observed = observe(ctx.hosts.connections(), snapshot, attempt).await;
    snapshot
        .targets
        .iter()
        .zip(observed)
        .map(|(target, seen)| TargetView { target, seen })
        .collect()
}

pub(super) fn owner_of(container: &HostContainer) -> Option<&str> {
    container.labels.get(LABEL_UID).map(String::as_str)
}

/// The snapshot of the container's namespace, with the object being reconciled as it was
/// handed over (the cache may not hold it yet), and that object's entry.
pub(super) fn snapshot_with(
    ctx: &Context,
    container: &DockerContainer,
) -> (Snapshot, ContainerEntry) {
    let namespace = container.namespace().unwrap_or_default();
    let mut snapshot = ctx.stores.snapshot(&namespace);
    let entry = ContainerEntry {
        name: container.name_any(),
        uid: container.uid().unwrap_or_default(),
        object: Arc::new(container.clone()),
        recorded: container
            .status
            .as_ref()
            .map(Recorded::from_status)
            .unwrap_or_default(),
    };
    snapshot.containers.retain(|c| c.uid != entry.uid);
    snapshot.containers.push(entry.clone());
    snapshot.containers.sort_by(|a, b| a.name.cmp(&b.name));
    (snapshot, entry)
}

/// Places every replica of every DockerContainer of the namespace from what the daemons
/// run (see [`place_snapshot`]), and says which of `uid`'s replicas have nowhere to go.
pub(super) fn placements_for(
    ctx: &Context,
    snapshot: &Snapshot,
    uid: &str,
    views: &[TargetView<'_>],
) -> (Placements, Vec<String>) {
    let placements = place_snapshot(
        snapshot,
        views.iter().map(|v| &v.seen),
        unix_now(),
        ctx.settings.grace.as_secs(),
    );
    let unplaced = placements
        .unplaced
        .iter()
        .filter(|u| u.owner_uid == uid)
        .map(|u| format!("replica {} not placed: {}", u.replica, u.reason))
        .collect();
    (placements, unplaced)
}
