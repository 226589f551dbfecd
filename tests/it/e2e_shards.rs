//! A sharded controller (`--shards`) against a real Kubernetes API server and a fleet of
//! simulated daemons: three replicas, each its own process, share the fleet through
//! Leases. Each simulated daemon records which process made every call that changed it
//! (the socket's peer credentials), so the test checks every Docker write's replica.
//!
//! Gated on `STEVEDORE_E2E_KUBECONFIG` like the other e2e suites.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use stevedore::api::{DockerContainer, DockerTarget};
use stevedore::controller::shards::{SHARD_LABEL, shard_of};

use crate::common::TestEnv;
use crate::common::cluster::{
    connect as cluster, delete_namespace, fresh_namespace, install_crds, shard_holders,
};
use crate::common::sim::daemon::Filters;
use crate::common::sim::{Profile, Simulator, harness_world};
use crate::e2e_controller::{
    ControllerProcess, delete_namespace_while_the_controller_runs, is_ready, wait_for,
};

const TARGETS: usize = 36;
const SHARDS: u32 = 12;
/// Replicas of the object placed across the whole fleet.
const SPREAD: usize = 6;
const LEASE_PREFIX: &str = "stevedore-controller";
/// Targets pinned by hand to [`PINNED_SHARD`] with the shard label, as Flux shards by label.
const PINNED: usize = 3;
const PINNED_SHARD: u32 = 5;

/// The processes that made each daemon's writes (before `until`, when given).
fn writers(sim: &Simulator, after: Option<Instant>) -> Vec<BTreeSet<i32>> {
    (0..sim.len())
        .map(|i| {
            sim.daemon(i)
                .writes()
                .iter()
                .filter(|w| after.is_none_or(|at| w.at > at))
                .map(|w| w.client.unwrap_or(-1))
                .collect()
        })
        .collect()
}

fn running_names(sim: &Simulator, index: usize) -> Vec<String> {
    let listed = sim.daemon(index).list(false, &Filters(HashMap::new()));
    listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["Names"][0].as_str().map(String::from))
        .collect()
}

async fn create<K>(client: &Client, ns: &str, object: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).expect("a valid object");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("create an object");
}

/// A DockerContainer running the harness image with `placement`.
fn app(name: &str, image: &str, placement: Value) -> Value {
    json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
        "metadata": {"name": name},
        "spec": {"image": image, "stopTimeoutSeconds": 1, "placement": placement},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn three_replicas_split_the_fleet_and_a_killed_ones_shards_move_without_a_needless_write() {
    let (client, kubeconfig) = cluster("three_replicas_split_the_fleet").await;
    let env = TestEnv::load();
    install_crds(&client).await;
    let ns = fresh_namespace(&client).await;
    // The controller's own namespace holds the Leases, as in a real install: deleting the
    // fleet's namespace at the end must not take the replicas' Leases with it.
    let home = fresh_namespace(&client).await;
    let (images, registry) = harness_world(&env);
    let dir = std::env::temp_dir().join(format!("stevedore-shards-{}", std::process::id()));
    let sim = Simulator::start(&dir, TARGETS, &images, registry, Profile::docker_floor());
    let image = env.get("IMAGE_V1");

    for t in 0..TARGETS {
        let mut labels = json!({"pool": "fleet"});
        if t < PINNED {
            labels[SHARD_LABEL] = json!(PINNED_SHARD.to_string());
        }
        create::<DockerTarget>(
            &client,
            &ns,
            json!({
                "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
                "metadata": {"name": format!("t{t:02}"), "labels": labels},
                "spec": {"endpoint": sim.address(t)},
            }),
        )
        .await;
        let pinned = json!({"target": format!("t{t:02}")});
        create::<DockerContainer>(&client, &ns, app(&format!("app-{t:02}"), &image, pinned)).await;
    }
    let everywhere =
        json!({"targetSelector": {"matchLabels": {"pool": "fleet"}}, "replicas": SPREAD});
    create::<DockerContainer>(&client, &ns, app("spread", &image, everywhere)).await;

    let shards = SHARDS.to_string();
    let mut replicas: BTreeMap<String, ControllerProcess> = ["r0", "r1", "r2"]
        .into_iter()
        .map(|id| {
            let process = ControllerProcess::start(
                &kubeconfig,
                &ns,
                &[
                    "--shards",
                    &shards,
                    "--identity",
                    id,
                    "--lease-namespace",
                    &home,
                ],
            );
            (id.to_string(), process)
        })
        .collect();
    let pid_of: BTreeMap<String, i32> = replicas
        .iter()
        .map(|(id, p)| (id.clone(), i32::try_from(p.pid()).unwrap_or(-1)))
        .collect();

    let containers: Api<DockerContainer> = Api::namespaced(client.clone(), &ns);
    let every_ready = async || {
        let listed = containers.list(&ListParams::default()).await.ok()?;
        (listed.items.len() == TARGETS + 1 && listed.items.iter().all(is_ready)).then_some(())
    };
    wait_for(
        "every DockerContainer Ready",
        Duration::from_secs(180),
        every_ready,
    )
    .await;
    let spread_running = |sim: &Simulator| {
        (0..TARGETS)
            .flat_map(|t| running_names(sim, t))
            .filter(|n| n.contains("_spread_"))
            .count()
    };
    if spread_running(&sim) != SPREAD {
        eprintln!("spread runs {} containers when Ready", spread_running(&sim));
    }

    // Every shard has one holder, and each replica holds its quota.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &home);
    let held = shard_holders(&leases, LEASE_PREFIX).await;
    let mut per_replica: BTreeMap<String, usize> = BTreeMap::new();
    for holder in held.values() {
        let holder = holder.clone().expect("every shard is held");
        *per_replica.entry(holder).or_default() += 1;
    }
    assert_eq!(held.len(), SHARDS as usize);
    assert_eq!(
        per_replica,
        BTreeMap::from([("r0".into(), 4), ("r1".into(), 4), ("r2".into(), 4)])
    );

    // Every write to a daemon came from the one replica holding its target's shard.
    let targets: Api<DockerTarget> = Api::namespaced(client.clone(), &ns);
    let mut hashed_elsewhere = 0;
    let shard_of_daemon: Vec<u32> = {
        let mut by_name = BTreeMap::new();
        for target in targets
            .list(&ListParams::default())
            .await
            .expect("targets")
            .items
        {
            let name = target.metadata.name.clone().unwrap_or_default();
            let shard = shard_of(&target.metadata, SHARDS);
            let mut unlabelled = target.metadata.clone();
            unlabelled.labels = None;
            if shard_of(&unlabelled, SHARDS) != shard {
                hashed_elsewhere += 1;
            }
            by_name.insert(name, shard);
        }
        (0..TARGETS).map(|t| by_name[&format!("t{t:02}")]).collect()
    };
    // The pinned targets are in the shard their label names, which for some of them is
    // not where the hash of their UID would have put them (so the label decided).
    assert!(shard_of_daemon[..PINNED].iter().all(|s| *s == PINNED_SHARD));
    assert!(
        hashed_elsewhere > 0,
        "every pinned target hashed to shard {PINNED_SHARD}"
    );
    let before = writers(&sim, None);
    let mut targets_per_replica: BTreeMap<&str, usize> = BTreeMap::new();
    for (t, pids) in before.iter().enumerate() {
        let holder = held[&shard_of_daemon[t]].as_deref().unwrap_or_default();
        *targets_per_replica.entry(holder).or_default() += 1;
        assert_eq!(
            pids,
            &BTreeSet::from([pid_of[holder]]),
            "daemon t{t:02} (shard {}) was written by {pids:?}, not only by its holder {holder}",
            shard_of_daemon[t]
        );
    }
    eprintln!("targets per replica: {targets_per_replica:?}");
    // No duplicate: one container per pinned object, SPREAD of the spread one.
    let running: Vec<Vec<String>> = (0..TARGETS).map(|t| running_names(&sim, t)).collect();
    let spread_count = running
        .iter()
        .flatten()
        .filter(|n| n.contains("_spread_"))
        .count();
    assert_eq!(spread_count, SPREAD, "{running:?}");
    assert_eq!(running.iter().flatten().count(), TARGETS + SPREAD);

    // Kill r1 as a node failure would: no handover, its Leases just stop being renewed.
    let moved: BTreeSet<u32> = held
        .iter()
        .filter(|(_, h)| h.as_deref() == Some("r1"))
        .map(|(s, _)| *s)
        .collect();
    let woken_before = replicas["r0"].reconciles("DockerContainer").await
        + replicas["r2"].reconciles("DockerContainer").await;
    let killed_at = Instant::now();
    drop(replicas.remove("r1"));
    let taken = wait_for(
        "r1's shards taken over",
        Duration::from_secs(60),
        async || {
            let now = shard_holders(&leases, LEASE_PREFIX).await;
            now.values()
                .all(|h| matches!(h.as_deref(), Some("r0" | "r2")))
                .then_some(now)
        },
    )
    .await;
    eprintln!(
        "r1's {} shards were taken over {:.1} s after it was killed",
        moved.len(),
        killed_at.elapsed().as_secs_f64()
    );
    let shares: BTreeMap<&str, usize> = taken.values().fold(BTreeMap::new(), |mut m, h| {
        *m.entry(h.as_deref().unwrap_or_default()).or_default() += 1;
        m
    });
    assert_eq!(shares, BTreeMap::from([("r0", 6), ("r2", 6)]));

    // The new holders look at every object of the moved shards ...
    let moved_objects = (0..TARGETS)
        .filter(|t| moved.contains(&shard_of_daemon[*t]))
        .count() as u64;
    wait_for(
        "the moved shards' DockerContainers reconciled by their new holders",
        Duration::from_secs(60),
        async || {
            let now = replicas["r0"].reconciles("DockerContainer").await
                + replicas["r2"].reconciles("DockerContainer").await;
            (now >= woken_before + moved_objects).then_some(())
        },
    )
    .await;
    // ... and one edit on a moved target is carried out by its new holder.
    let edited = (0..TARGETS)
        .find(|t| moved.contains(&shard_of_daemon[*t]))
        .expect("r1 held a target");
    let new_holder = taken[&shard_of_daemon[edited]].clone().unwrap_or_default();
    let patch = json!({"spec": {"env": [{"name": "EDIT", "value": "after-takeover"}]}});
    containers
        .patch(
            &format!("app-{edited:02}"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("edit a DockerContainer");
    wait_for(
        "the edit carried out",
        Duration::from_secs(60),
        async || {
            let edited = containers.get(&format!("app-{edited:02}")).await.ok()?;
            let status = edited.status.as_ref()?;
            (is_ready(&edited)
                && status.observed_generation == edited.metadata.generation
                && status.updated_replicas == 1)
                .then_some(())
        },
    )
    .await;

    // Since the kill: no write anywhere but the edited target, and there only by its new
    // holder; no duplicate anywhere.
    let after = writers(&sim, Some(killed_at));
    for (t, pids) in after.iter().enumerate() {
        if t == edited {
            assert_eq!(pids, &BTreeSet::from([pid_of[&new_holder]]), "t{t:02}");
        } else {
            assert!(
                pids.is_empty(),
                "t{t:02} was written after the kill by {pids:?}"
            );
        }
    }
    let running: Vec<Vec<String>> = (0..TARGETS).map(|t| running_names(&sim, t)).collect();
    assert_eq!(
        running.iter().flatten().count(),
        TARGETS + SPREAD,
        "{running:?}"
    );

    // Deleting the object placed across shards removes its containers from all of them.
    containers
        .delete("spread", &DeleteParams::default())
        .await
        .expect("delete spread");
    wait_for(
        "spread and its containers gone",
        Duration::from_secs(120),
        async || {
            let gone = containers.get_opt("spread").await.ok()?.is_none();
            let left = (0..TARGETS)
                .flat_map(|t| running_names(&sim, t))
                .filter(|n| n.contains("_spread_"))
                .count();
            (gone && left == 0).then_some(())
        },
    )
    .await;

    delete_namespace_while_the_controller_runs(&client, &ns).await;
    drop(replicas);
    delete_namespace(&client, &home).await;
    drop(sim);
}
