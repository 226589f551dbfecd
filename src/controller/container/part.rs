//! Which part of a DockerContainer's work falls to this replica when the fleet is sharded
//! (see [`crate::controller::shards`]).

use crate::api::DockerContainer;
use crate::controller::context::Context;
use crate::fleet::Snapshot;
use crate::placement::{Assignment, Placements};

/// What this replica does for one DockerContainer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// It holds the object's home shard, that of its first target by name (of the object
    /// itself while it has none): it converges the targets it holds and writes the
    /// object's status and finalizer, from what every target of the object shows.
    Home,
    /// It holds some of the object's targets but not its home: it converges those only,
    /// and writes nothing to the object.
    Helper,
    /// None of it: other replicas'.
    Nothing,
}

impl Part {
    /// Whether this replica writes the object's status, finalizer and object Events.
    pub(super) fn writes_object(self) -> bool {
        self == Part::Home
    }
}

/// This replica's part in `container`, whose targets `snapshot` holds (always
/// [`Part::Home`] without sharding).
pub(super) fn part_of(ctx: &Context, container: &DockerContainer, snapshot: &Snapshot) -> Part {
    let shards = &ctx.shards;
    if !shards.is_sharded() {
        return Part::Home;
    }
    let home = snapshot.targets.first().map_or_else(
        || shards.of(&container.metadata),
        |target| shards.of(&target.object.metadata),
    );
    if shards.holds(home) {
        Part::Home
    } else if snapshot
        .targets
        .iter()
        .any(|target| shards.owns(&target.object.metadata))
    {
        Part::Helper
    } else {
        Part::Nothing
    }
}

/// Makes `uid`'s placement its home replica's, as the object's status records it, so
/// that a helper never places a replica by its own, possibly different, view of the fleet:
/// two replicas deciding apart could both start one replica index, each on its own target.
pub(super) fn follow_home(placements: &mut Placements, uid: &str, recorded: &[(String, u32)]) {
    placements.assignments.retain(|a| a.owner_uid != uid);
    placements.unplaced.retain(|u| u.owner_uid != uid);
    placements
        .assignments
        .extend(recorded.iter().map(|(target, replica)| Assignment {
            owner_uid: uid.to_string(),
            replica: *replica,
            target: target.clone(),
        }));
}

/// Sharded, the home replica places from the placement it wrote last, not from its cached
/// status, which may not show that write yet while a helper already acts on it; any other
/// replica forgets what it wrote as the home it no longer is.
pub(super) fn follow_own_writes(ctx: &Context, snapshot: &mut Snapshot, uid: &str, part: Part) {
    if part != Part::Home {
        ctx.remember_placed(uid, None);
        return;
    }
    let (Some(placed), Some(entry)) = (
        ctx.placed(uid),
        snapshot.containers.iter_mut().find(|c| c.uid == uid),
    ) else {
        return;
    };
    entry.recorded.replicas = placed;
}
