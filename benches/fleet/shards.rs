//! Sharded controllers against a fleet of simulated daemons and a real API server: three
//! replicas (`--shards 12`), each its own process. Measures the cold converge, how evenly
//! the targets spread, whether any daemon was written by more than one replica (each
//! simulated daemon records the process of every write), and what killing one replica
//! costs: how long until its shards are held again, and every write after the kill.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use stevedore::api::DockerTarget;
use stevedore::controller::shards::shard_of;

use super::common::cluster::{self, shard_holders};
use super::common::sim::Simulator;
use super::controller::{
    SpawnLogging, create_all, create_namespace, release, running, stop, until,
};
use super::{PER_TARGET, stevedore};

/// Replicas started.
const REPLICAS: usize = 3;
/// Shards: four per replica.
const SHARDS: u32 = 12;
const LEASE_PREFIX: &str = "stevedore-controller";

/// One row of the sharding table.
pub struct Row {
    cold: Option<f64>,
    targets_per_replica: BTreeMap<String, usize>,
    shared_targets: usize,
    takeover: Option<f64>,
    writes_after_kill: usize,
    containers_after: usize,
}

fn start(kubeconfig: &str, namespace: &str, home: &str, identity: &str, log: &Path) -> Child {
    stevedore()
        .args([
            "controller",
            "--namespace",
            namespace,
            "--lease-namespace",
            home,
        ])
        .args(["--shards", &SHARDS.to_string(), "--identity", identity])
        .args([
            "--manager",
            "bench-shards",
            "--metrics-address",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", kubeconfig)
        .spawn_logging_to(log)
}

/// Runs three sharded replicas against `sim` (whose daemons are empty) and measures them.
pub async fn measure(kubeconfig: &str, sim: &Simulator, image: &str, work: &Path) -> Row {
    let (client, _) = cluster::connect("the sharded controller benchmark").await;
    cluster::install_crds(&client).await;
    let n = sim.len();
    let namespace = format!("bench-shards-{n}-{}", std::process::id());
    let home = format!("{namespace}-home");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create_namespace(&namespaces, &namespace).await;
    create_namespace(&namespaces, &home).await;
    create_all(&client, &namespace, sim, image).await;

    let log = work.join(format!("shards-{n}.log"));
    let mut replicas: BTreeMap<String, Child> = (0..REPLICAS)
        .map(|r| {
            let id = format!("r{r}");
            let child = start(kubeconfig, &namespace, &home, &id, &log);
            (id, child)
        })
        .collect();
    let pid_of: BTreeMap<String, i32> = replicas
        .iter()
        .map(|(id, c)| (id.clone(), i32::try_from(c.id()).unwrap_or(-1)))
        .collect();
    let started = Instant::now();
    let wanted = n * PER_TARGET;
    let cold = until(Duration::from_secs(1800), || running(sim) >= wanted).await;
    eprintln!("shards {n}: cold {cold:?}");
    // The requeues after the converge settle.
    tokio::time::sleep(Duration::from_secs(30)).await;

    let leases: Api<Lease> = Api::namespaced(client.clone(), &home);
    let held = shard_holders(&leases, LEASE_PREFIX).await;
    let targets: Api<DockerTarget> = Api::namespaced(client.clone(), &namespace);
    let shard_by_name: BTreeMap<String, u32> = targets
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t.metadata.name.clone().unwrap_or_default(),
                shard_of(&t.metadata, SHARDS),
            )
        })
        .collect();
    let shard_of_daemon: Vec<u32> = (0..n)
        .map(|t| {
            shard_by_name
                .get(&format!("t{t}"))
                .copied()
                .unwrap_or_default()
        })
        .collect();
    let mut targets_per_replica = BTreeMap::new();
    let mut shared_targets = 0;
    for (t, shard) in shard_of_daemon.iter().enumerate() {
        let holder = held.get(shard).cloned().flatten().unwrap_or_default();
        *targets_per_replica.entry(holder.clone()).or_default() += 1;
        let writers: BTreeSet<i32> = sim
            .daemon(t)
            .writes()
            .iter()
            .map(|w| w.client.unwrap_or(-1))
            .collect();
        if writers != BTreeSet::from([pid_of.get(&holder).copied().unwrap_or(-2)]) {
            shared_targets += 1;
        }
    }
    eprintln!("shards {n}: targets per replica {targets_per_replica:?}, shared {shared_targets}");

    // Kill one replica as a node failure would.
    let killed_at = Instant::now();
    if let Some(mut victim) = replicas.remove("r1") {
        let _ = victim.kill();
        let _ = victim.wait();
    }
    let mut takeover = None;
    while killed_at.elapsed() < Duration::from_secs(120) {
        let now = shard_holders(&leases, LEASE_PREFIX).await;
        if now.len() == SHARDS as usize
            && now
                .values()
                .all(|h| h.as_deref().is_some_and(|h| h != "r1"))
        {
            takeover = Some(killed_at.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The new holders reconcile every object of the moved shards.
    tokio::time::sleep(Duration::from_secs(90)).await;
    let writes_after_kill = (0..n)
        .map(|t| {
            sim.daemon(t)
                .writes()
                .iter()
                .filter(|w| w.at > killed_at)
                .count()
        })
        .sum();
    let containers_after = running(sim);
    eprintln!(
        "shards {n}: takeover {takeover:?}, writes after kill {writes_after_kill}, containers {containers_after}; total {:.0} s",
        started.elapsed().as_secs_f64()
    );

    for (_, child) in replicas {
        stop(child);
    }
    release(&client, &namespace).await;
    for name in [&namespace, &home] {
        let _ = namespaces.delete(name, &DeleteParams::background()).await;
    }
    Row {
        cold,
        targets_per_replica,
        shared_targets,
        takeover,
        writes_after_kill,
        containers_after,
    }
}

/// The table's header.
pub fn header(report: &mut String) {
    let _ = writeln!(
        report,
        "\n### Sharded: {REPLICAS} replicas, {SHARDS} shards ({PER_TARGET} containers per target)\n\n\
         Three `stevedore controller --shards {SHARDS}` processes against the same real API \
         server and simulated daemons; each daemon records the process of every call that \
         changed it. One replica is then killed (SIGKILL: no handover, its member Lease just \
         stops being renewed; the lease duration is 15 s), and every write in the 90 s after \
         is counted.\n\n\
         | targets | cold | targets per replica | spread (max/min) | targets written by another replica than their shard's | shards held again after the kill | Docker writes after the kill | containers after (wanted) |\n\
         |---|---|---|---|---|---|---|---|"
    );
}

/// One row.
pub fn row(report: &mut String, n: usize, row: &Row) {
    let counts: Vec<usize> = row.targets_per_replica.values().copied().collect();
    let (min, max) = (
        counts.iter().min().copied().unwrap_or_default(),
        counts.iter().max().copied().unwrap_or_default(),
    );
    let seconds =
        |s: Option<f64>| s.map_or("not within the limit".to_string(), |s| format!("{s:.1} s"));
    let _ = writeln!(
        report,
        "| {n} | {} | {} | {:.2} | {} | {} | {} | {} ({}) |",
        seconds(row.cold),
        counts
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
        max as f64 / min.max(1) as f64,
        row.shared_targets,
        seconds(row.takeover),
        row.writes_after_kill,
        row.containers_after,
        n * PER_TARGET,
    );
}
