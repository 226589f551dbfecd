//! The targets as one reconcile sees them, and the placement input built from the fleet's
//! snapshot of the namespace.

use std::time::{Duration, Instant};

use crate::controller::context::Context;
use crate::converge::engine::unix_now;
use crate::docker::HostContainer;
use crate::fleet::connections::{Attempt, TargetSeen, known_containers, observe};
use crate::fleet::placing::place_snapshot;
use crate::fleet::{Snapshot, TargetEntry};
use crate::labels::LABEL_UID;
use crate::placement::Placements;

/// How long before a reconcile starts a list call of its target may have begun and still
/// be shared with it: reconciles due at one instant start a few moments apart.
const SHARE_LIST_STARTED_WITHIN: Duration = Duration::from_millis(250);

/// One target as this reconcile sees it.
pub(super) struct TargetView<'a> {
    /// The target.
    pub target: &'a TargetEntry,
    /// What one list call (or the last one) showed.
    pub seen: TargetSeen,
}

/// Connects to (or reuses the connection of) each target of the snapshot and lists its
/// managed containers: one list call per target, in the snapshot's target order. The
/// DockerContainers whose containers those lists show join the snapshot, so that
/// placement counts them.
pub(super) async fn observe_targets(
    ctx: &Context,
    snapshot: &mut Snapshot,
    attempt: Attempt,
) -> Vec<TargetSeen> {
    // Reconciles that start together (the DockerContainers of one target, due at the
    // same resync) share one list call; never one older than this reconcile, nor one from
    // before the target last changed.
    let fresh_after = Instant::now()
        .checked_sub(SHARE_LIST_STARTED_WITHIN)
        .unwrap_or_else(Instant::now);
    let observed = observe(ctx.hosts.connections(), snapshot, attempt, fresh_after).await;
    let neighbours = ctx
        .stores
        .neighbours(snapshot, known_containers(observed.iter()));
    snapshot.containers.extend(neighbours);
    snapshot.containers.sort_by(|a, b| a.name.cmp(&b.name));
    observed
}

/// Each target of the snapshot with what [`observe_targets`] saw of it.
pub(super) fn views(snapshot: &Snapshot, observed: Vec<TargetSeen>) -> Vec<TargetView<'_>> {
    snapshot
        .targets
        .iter()
        .zip(observed)
        .map(|(target, seen)| TargetView { target, seen })
        .collect()
}

pub(super) fn owner_of(container: &HostContainer) -> Option<&str> {
    container.labels.get(LABEL_UID)
}

/// Places `uid`'s replicas on the snapshot's targets, counting the others' as they run (see
/// [`place_snapshot`]), and says which of its replicas have nowhere to go.
pub(super) fn placements_for(
    ctx: &Context,
    snapshot: &Snapshot,
    uid: &str,
    views: &[TargetView<'_>],
) -> (Placements, Vec<String>) {
    let placements = place_snapshot(
        snapshot,
        views.iter().map(|v| &v.seen),
        Some(uid),
        (unix_now(), ctx.settings.grace.as_secs()),
        &|target| !ctx.shards.owns(&target.object.metadata),
    );
    let unplaced = placements
        .unplaced
        .iter()
        .filter(|u| u.owner_uid == uid)
        .map(|u| format!("replica {} not placed: {}", u.replica, u.reason))
        .collect();
    (placements, unplaced)
}
