//! Shards: with `--shards N`, every replica acts at once, each on its own part of the fleet.
//!
//! ```text
//!   DockerTarget / Registry ──(label stevedore.dev/shard, else hash of UID)──> shard k
//!   shard k ── Lease `<name>-shard-<k>` ── holder: one replica ── its member Lease fresh
//! ```
//! A target (and a Registry) belongs to one of N shards: the one its
//! `stevedore.dev/shard` label names (manual pinning, as Flux shards by label), else a
//! stable hash of its UID. Each shard is held through a Lease by one replica at a time
//! (see [`leases`]); a replica makes Docker writes only on the targets of the shards it
//! holds, so no two replicas ever act on one target. A DockerContainer placed on targets
//! of several shards is converged by each holder on its own targets; one of them, the
//! holder of its first target's shard (its *home*), writes its status and its finalizer.
//!
//! Without sharding, [`Shards::single`] holds the one shard for good: every check passes.

pub mod leases;
pub mod plan;
pub mod wake;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kube::api::ObjectMeta;

/// The label that pins a DockerTarget or Registry to a shard (its number, from 0).
pub const SHARD_LABEL: &str = "stevedore.dev/shard";

/// Which of `count` shards an object belongs to: the one its [`SHARD_LABEL`] names, else a
/// hash of its UID that every replica computes alike. A label that names no shard (not a
/// number, or too large) is ignored with a warning naming the object.
pub fn shard_of(meta: &ObjectMeta, count: u32) -> u32 {
    if count <= 1 {
        return 0;
    }
    if let Some(pinned) = meta.labels.as_ref().and_then(|l| l.get(SHARD_LABEL)) {
        match pinned.parse::<u32>() {
            Ok(shard) if shard < count => return shard,
            _ => tracing::warn!(
                object = %format!(
                    "{}/{}",
                    meta.namespace.as_deref().unwrap_or_default(),
                    meta.name.as_deref().unwrap_or_default()
                ),
                label = SHARD_LABEL,
                value = %pinned,
                shards = count,
                "the shard label names no shard (0 to shards-1); using the hash of the UID"
            ),
        }
    }
    let key = meta.uid.as_deref().unwrap_or_default();
    u32::try_from(fnv1a(key.as_bytes()) % u64::from(count)).unwrap_or_default()
}

/// FNV-1a, 64 bits: stable across processes and releases, unlike the standard library's
/// hasher, so that every replica puts an object in the same shard.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The shards this replica holds, and the Docker actions under way on their targets.
pub struct Shards {
    count: u32,
    /// Whether the shards are held through Leases (else one is held for good).
    sharded: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Shards whose Lease this replica holds.
    held: BTreeSet<u32>,
    /// Held shards being handed over: no action starts on them.
    leaving: BTreeSet<u32>,
    /// Until when the holds count: this replica's member Lease, renewed last, minus a
    /// margin. `None` without sharding: for good.
    valid_until: Option<Instant>,
    /// Actions under way per shard (see [`Acting`]).
    in_flight: BTreeMap<u32, usize>,
}

impl Shards {
    /// One shard, held for good: the controller without sharding.
    pub fn single() -> Arc<Self> {
        Arc::new(Self {
            count: 1,
            sharded: false,
            state: Mutex::new(State {
                held: BTreeSet::from([0]),
                ..State::default()
            }),
        })
    }

    /// `count` shards, none held yet; [`leases::run`] takes them.
    pub fn sharded(count: u32) -> Arc<Self> {
        Arc::new(Self {
            count: count.max(1),
            sharded: true,
            state: Mutex::new(State {
                valid_until: Some(Instant::now()),
                ..State::default()
            }),
        })
    }

    /// How many shards there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether this replica shares the fleet with others.
    pub fn is_sharded(&self) -> bool {
        self.sharded
    }

    /// The shard of an object (see [`shard_of`]).
    pub fn of(&self, meta: &ObjectMeta) -> u32 {
        shard_of(meta, self.count)
    }

    /// Whether this replica may act on the objects of `shard` now.
    pub fn holds(&self, shard: u32) -> bool {
        self.lock().may_act(shard)
    }

    /// Whether this replica may act on `meta`'s object now.
    pub fn owns(&self, meta: &ObjectMeta) -> bool {
        self.holds(self.of(meta))
    }

    /// Permission to act on the targets of `shard` for as long as the returned value
    /// lives; a shard being handed over waits for it. `None` when this replica may not.
    pub fn acting_on(self: &Arc<Self>, shard: u32) -> Option<Acting> {
        let mut state = self.lock();
        if !state.may_act(shard) {
            return None;
        }
        *state.in_flight.entry(shard).or_default() += 1;
        Some(Acting {
            shards: Arc::clone(self),
            shard,
        })
    }

    /// The shards held now.
    pub fn held(&self) -> BTreeSet<u32> {
        self.lock().held.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records what the Lease loop holds after a round, and until when.
    pub(crate) fn set_held(&self, held: BTreeSet<u32>, valid_until: Instant) {
        let mut state = self.lock();
        state.leaving.retain(|s| held.contains(s));
        state.held = held;
        state.valid_until = Some(valid_until);
    }

    /// Stops new actions on `shard` and says whether none is under way any more.
    pub(crate) fn leave(&self, shard: u32) -> bool {
        let mut state = self.lock();
        state.leaving.insert(shard);
        state.in_flight.get(&shard).copied().unwrap_or_default() == 0
    }

    /// Takes back a `leave` that did not end in a release.
    pub(crate) fn stay(&self, shard: u32) {
        self.lock().leaving.remove(&shard);
    }
}

impl State {
    fn may_act(&self, shard: u32) -> bool {
        self.held.contains(&shard)
            && !self.leaving.contains(&shard)
            && self.valid_until.is_none_or(|until| Instant::now() < until)
    }
}

/// Actions under way on the targets of one shard: while one lives, the shard is not
/// handed over.
pub struct Acting {
    shards: Arc<Shards>,
    shard: u32,
}

impl Drop for Acting {
    fn drop(&mut self) {
        let mut state = self.shards.lock();
        if let Some(n) = state.in_flight.get_mut(&self.shard) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn meta(uid: &str, label: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("t".into()),
            namespace: Some("fleet".into()),
            uid: Some(uid.into()),
            labels: label.map(|l| BTreeMap::from([(SHARD_LABEL.to_string(), l.to_string())])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_label_pins_the_shard_and_the_hash_spreads_the_rest() {
        assert_eq!(shard_of(&meta("a", Some("2")), 4), 2);
        // A pin that names no shard falls back to the hash, like no pin at all.
        let hashed = shard_of(&meta("a", None), 4);
        assert_eq!(shard_of(&meta("a", Some("9")), 4), hashed);
        assert_eq!(shard_of(&meta("a", Some("two")), 4), hashed);
        assert_eq!(shard_of(&meta("a", Some("3")), 1), 0, "one shard holds all");

        // 1,000 UIDs over 12 shards: every shard gets its share, within a fifth.
        let mut per_shard = [0u32; 12];
        for i in 0..1000 {
            let uid = format!("5c1e7a10-0000-4000-8000-{i:012}");
            per_shard[shard_of(&meta(&uid, None), 12) as usize] += 1;
        }
        let (min, max) = (per_shard.iter().min(), per_shard.iter().max());
        assert!(
            min.zip(max)
                .is_some_and(|(min, max)| *min >= 62 && *max <= 105),
            "{per_shard:?}"
        );
    }

    #[test]
    fn a_shard_being_handed_over_waits_for_the_actions_under_way() {
        let shards = Shards::sharded(4);
        assert!(
            !shards.holds(1),
            "nothing is held before the Leases are taken"
        );
        shards.set_held(
            BTreeSet::from([1, 3]),
            Instant::now() + Duration::from_secs(10),
        );
        assert!(shards.holds(1) && shards.holds(3) && !shards.holds(0));

        let acting = shards.acting_on(1);
        assert!(acting.is_some());
        assert!(!shards.leave(1), "an action is under way");
        assert!(
            shards.acting_on(1).is_none(),
            "no new action on a leaving shard"
        );
        drop(acting);
        assert!(shards.leave(1), "the last action ended");
        shards.stay(1);
        assert!(shards.holds(1));

        // Holds end with the member Lease, renewed or not.
        shards.set_held(BTreeSet::from([1]), Instant::now());
        assert!(!shards.holds(1));
    }

    #[test]
    fn without_sharding_everything_is_held_for_good() {
        let shards = Shards::single();
        assert!(!shards.is_sharded());
        assert!(shards.owns(&meta("any", Some("7"))));
        assert!(shards.acting_on(0).is_some());
    }
}
