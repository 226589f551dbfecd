//! What one replica does with the shard Leases in one round, decided from what it read of
//! them: how many shards it should hold, which free ones to take, which to hand over.
//!
//! Every replica computes every replica's quota alike: the live replicas sorted by
//! identity, `count / live` shards each, and one more for the first `count % live`. So
//! the shards spread evenly without any replica telling another what to do: one over its
//! quota hands shards over, one under it takes free ones.

use std::collections::{BTreeMap, BTreeSet};

/// One replica's member Lease as a round reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its identity (the pod's name).
    pub identity: String,
    /// Whether it was renewed within the lease duration.
    pub live: bool,
}

/// What a round decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// How many shards this replica should hold.
    pub quota: u32,
    /// The shards it holds and keeps.
    pub keep: BTreeSet<u32>,
    /// Free shards to take (no holder, or a holder that is not live).
    pub take: Vec<u32>,
    /// Shards to hand over, once no action on them is under way.
    pub release: Vec<u32>,
}

/// Decides a round for `me`: `holders` maps each shard Lease that exists to its holder
/// (`None`: free), `members` are the member Leases read.
pub fn plan(
    me: &str,
    count: u32,
    members: &[Member],
    holders: &BTreeMap<u32, Option<String>>,
) -> Plan {
    let live: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.live)
        .map(|m| m.identity.as_str())
        .chain([me])
        .collect();
    let rank = live.iter().position(|m| *m == me).unwrap_or_default();
    let replicas = u32::try_from(live.len()).unwrap_or(u32::MAX).max(1);
    let quota =
        count / replicas + u32::from(u32::try_from(rank).unwrap_or(u32::MAX) < count % replicas);

    let holder_of = |shard: u32| holders.get(&shard).and_then(|h| h.as_deref());
    let mine: Vec<u32> = (0..count).filter(|s| holder_of(*s) == Some(me)).collect();
    let free: Vec<u32> = (0..count)
        .filter(|s| holder_of(*s).is_none_or(|h| !live.contains(h)))
        .collect();

    let held = u32::try_from(mine.len()).unwrap_or(u32::MAX);
    let mut plan = Plan {
        quota,
        ..Plan::default()
    };
    if held > quota {
        // Hand over the highest-numbered first: the same ones every round.
        let keep = usize::try_from(quota).unwrap_or(usize::MAX);
        plan.keep = mine[..keep].iter().copied().collect();
        plan.release = mine[keep..].to_vec();
    } else {
        plan.keep = mine.into_iter().collect();
        // Replicas taking at once start at different places, so that they rarely race
        // for one Lease.
        let wanted = usize::try_from(quota - held).unwrap_or(usize::MAX);
        let start = (rank * free.len()) / live.len().max(1);
        plan.take = free
            .iter()
            .cycle()
            .skip(start)
            .take(free.len())
            .copied()
            .take(wanted)
            .collect();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(live: &[&str], dead: &[&str]) -> Vec<Member> {
        live.iter()
            .map(|m| (m, true))
            .chain(dead.iter().map(|m| (m, false)))
            .map(|(m, live)| Member {
                identity: m.to_string(),
                live,
            })
            .collect()
    }

    /// Runs rounds for every live replica in turn, applying what each decided, until
    /// nothing changes; the holders then.
    fn settle(
        count: u32,
        live: &[&str],
        dead: &[&str],
        mut holders: BTreeMap<u32, Option<String>>,
    ) -> BTreeMap<u32, Option<String>> {
        for _ in 0..20 {
            let before = holders.clone();
            for me in live {
                let plan = plan(me, count, &members(live, dead), &holders);
                for shard in plan.release {
                    holders.insert(shard, None);
                }
                for shard in plan.take {
                    holders.insert(shard, Some(me.to_string()));
                }
            }
            if holders == before {
                return holders;
            }
        }
        panic!("the shards never settled: {holders:?}");
    }

    fn per_replica(holders: &BTreeMap<u32, Option<String>>) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for holder in holders.values().flatten() {
            *counts.entry(holder.clone()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn shards_spread_evenly_and_each_has_one_holder() {
        let holders = settle(12, &["a", "b", "c"], &[], BTreeMap::new());
        assert_eq!(holders.len(), 12);
        assert!(holders.values().all(Option::is_some), "{holders:?}");
        assert_eq!(
            per_replica(&holders),
            BTreeMap::from([("a".into(), 4), ("b".into(), 4), ("c".into(), 4)])
        );

        // Ten over three: the first replica by identity carries the one left over.
        let holders = settle(10, &["a", "b", "c"], &[], BTreeMap::new());
        assert_eq!(
            per_replica(&holders),
            BTreeMap::from([("a".into(), 4), ("b".into(), 3), ("c".into(), 3)])
        );
    }

    #[test]
    fn a_dead_replicas_shards_go_to_the_others_and_a_new_one_gets_its_share() {
        let three = settle(12, &["a", "b", "c"], &[], BTreeMap::new());
        let of_b: BTreeSet<u32> = three
            .iter()
            .filter(|(_, h)| h.as_deref() == Some("b"))
            .map(|(s, _)| *s)
            .collect();
        let two = settle(12, &["a", "c"], &["b"], three.clone());
        assert_eq!(
            per_replica(&two),
            BTreeMap::from([("a".into(), 6), ("c".into(), 6)])
        );
        // Only b's shards moved.
        for (shard, holder) in &three {
            if !of_b.contains(shard) {
                assert_eq!(&two[shard], holder, "shard {shard} moved needlessly");
            }
        }
        // A replacement joins: the others hand over until each has four.
        let again = settle(12, &["a", "c", "d"], &["b"], two);
        assert_eq!(
            per_replica(&again),
            BTreeMap::from([("a".into(), 4), ("c".into(), 4), ("d".into(), 4)])
        );
    }

    #[test]
    fn a_live_holder_keeps_its_shard_from_a_replica_with_room() {
        let holders = BTreeMap::from([(0, Some("a".to_string())), (1, None)]);
        let plan = plan("b", 2, &members(&["a", "b"], &[]), &holders);
        assert_eq!(plan.take, vec![1]);
        assert!(plan.release.is_empty());
        // Nobody else alive: b takes both, a's included.
        let plan = super::plan("b", 2, &members(&["b"], &["a"]), &holders);
        assert_eq!(plan.take.len(), 2);
    }
}
