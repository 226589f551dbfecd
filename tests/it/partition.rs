//! Partitions and slow daemons, through a TCP proxy the test controls in front of the
//! harness's TLS daemon, driven through the controller's reconcilers (fake API server, real
//! daemons): the cut target turns not-Ready at its next heartbeat with reason Unreachable,
//! nothing is removed or moved before the grace period, the rest of the fleet converges,
//! and after healing everything is as it was.

use crate::common;
use crate::common::fake_api;
use crate::common::proxy;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestEnv;
use common::fixture::{secret, unique};
use fake_api::{Recorded, World};
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use proxy::Proxy;
use serde_json::{Value, json};
use stevedore::api::{DockerContainer, DockerTarget};
use stevedore::controller::context::Context;
use stevedore::controller::{container, target};
use stevedore::docker::{ConnectOptions, DockerHost, HostContainer, connect};
use stevedore::labels::{LABEL_SPEC_HASH, LABEL_UID};

const DOCKER_TIMEOUT: Duration = Duration::from_secs(2);

fn object<T: serde::de::DeserializeOwned>(json: Value) -> T {
    serde_json::from_value(json).expect("fixture")
}

fn with_uid<T: kube::Resource>(mut object: T) -> T {
    object.meta_mut().uid = Some(unique("uid"));
    object.meta_mut().generation = Some(1);
    object
}

fn tls_secret(env: &TestEnv, namespace: &str) -> Secret {
    let read = |key: &str| std::fs::read(env.get(key)).expect("harness file");
    secret(
        namespace,
        "edge-tls",
        &[
            ("ca.crt", read("CA")),
            ("tls.crt", read("CLIENT_CERT")),
            ("tls.key", read("CLIENT_KEY")),
        ],
    )
}

struct Fleet {
    ns: String,
    edge: DockerTarget,
    local: DockerTarget,
    solo: DockerContainer,
    spread: DockerContainer,
    ctx: Arc<Context>,
    recorded: Recorded,
    proxy: Proxy,
    edge_host: DockerHost,
    local_host: DockerHost,
}

/// Two targets — `edge` (the TLS daemon behind the proxy) and `local` (the main daemon),
/// both labelled `pool=a` — and two objects: `solo` pinned to `local`, `spread` placed by
/// selector (on `edge`, the emptier one).
async fn fleet(prefix: &str) -> Fleet {
    let env = TestEnv::load();
    let ns = unique(prefix);
    let upstream = env
        .get("TLS_HOST")
        .trim_start_matches("tcp://")
        .parse()
        .expect("TLS daemon address");
    let proxy = Proxy::start(upstream).await;
    let edge: DockerTarget = with_uid(object(json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
        "metadata": {"name": "edge", "namespace": ns, "labels": {"pool": "a"},
                     "finalizers": [target::FINALIZER]},
        "spec": {"endpoint": format!("tcp://{}", proxy.address), "tls": {"secretRef": {"name": "edge-tls"}}},
    })));
    let local: DockerTarget = with_uid(object(json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
        "metadata": {"name": "local", "namespace": ns, "labels": {"pool": "a"},
                     "finalizers": [target::FINALIZER]},
        "spec": {"endpoint": env.get("MAIN_HOST")},
    })));
    let mk = |name: &str, placement: Value| -> DockerContainer {
        with_uid(object(json!({
            "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
            "metadata": {"name": name, "namespace": ns, "finalizers": [container::FINALIZER]},
            "spec": {"image": env.get("IMAGE_V1"), "placement": placement, "stopTimeoutSeconds": 1},
        })))
    };
    let solo = mk("solo", json!({"target": "local"}));
    let spread = mk(
        "spread",
        json!({"targetSelector": {"matchLabels": {"pool": "a"}}, "replicas": 1}),
    );
    let (client, recorded) = fake_api::start(&[
        serde_json::to_value(&edge).expect("json"),
        serde_json::to_value(&local).expect("json"),
        serde_json::to_value(&solo).expect("json"),
        serde_json::to_value(&spread).expect("json"),
    ]);
    let (ctx, _signals) = fake_api::context_with(
        client,
        World {
            targets: vec![edge.clone(), local.clone()],
            containers: vec![solo.clone(), spread.clone()],
            secrets: vec![tls_secret(&env, &ns)],
            ..Default::default()
        },
        prefix,
        DOCKER_TIMEOUT,
    );
    let (tls_spec, tls_material) = common::hosts::tls(&env);
    let edge_host = connect(&tls_spec, &tls_material, ConnectOptions::default())
        .await
        .expect("TLS daemon, directly");
    let (spec, material) = common::hosts::main(&env);
    let local_host = connect(&spec, &material, ConnectOptions::default())
        .await
        .expect("main daemon");
    Fleet {
        ns,
        edge,
        local,
        solo,
        spread,
        ctx,
        recorded,
        proxy,
        edge_host,
        local_host,
    }
}

impl Fleet {
    async fn heartbeat(&self, which: &DockerTarget) -> Value {
        self.recorded.clear();
        target::reconcile(Arc::new(which.clone()), self.ctx.clone())
            .await
            .expect("heartbeat");
        self.last_status(&format!(
            "dockertargets/{}",
            which.metadata.name.as_deref().unwrap_or_default()
        ))
    }

    async fn reconcile(&self, which: &DockerContainer) -> Value {
        self.reconcile_and_requeue(which).await.0
    }

    /// The status a reconcile wrote, and when it asked to be run again.
    async fn reconcile_and_requeue(&self, which: &DockerContainer) -> (Value, Action) {
        self.recorded.clear();
        let action = container::reconcile(Arc::new(which.clone()), self.ctx.clone())
            .await
            .expect("reconcile");
        let status = self.last_status(&format!(
            "dockercontainers/{}",
            which.metadata.name.as_deref().unwrap_or_default()
        ));
        (status, action)
    }

    fn last_status(&self, suffix: &str) -> Value {
        let wanted = format!("/namespaces/{}/{suffix}/status", self.ns);
        self.recorded
            .all()
            .into_iter()
            .rev()
            .find(|c| c.path.ends_with(&wanted))
            .map(|c| c.body["status"].clone())
            .unwrap_or(Value::Null)
    }

    async fn containers(&self, host: &DockerHost, of: &DockerContainer) -> Vec<HostContainer> {
        host.list_labelled(LABEL_UID, of.metadata.uid.as_deref().unwrap_or_default())
            .await
            .expect("list")
    }

    async fn cleanup(&self) {
        for host in [&self.edge_host, &self.local_host] {
            for of in [&self.solo, &self.spread] {
                for c in self.containers(host, of).await {
                    let _ = host.stop(&c.id, &c.name, Some(0)).await;
                    let _ = host.remove(&c.id, &c.name).await;
                }
            }
        }
    }
}

fn ready_reason(status: &Value) -> (String, String) {
    let ready = &status["conditions"][0];
    (
        ready["status"].as_str().unwrap_or_default().to_string(),
        ready["reason"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn a_partition_makes_its_target_unready_and_destroys_or_moves_nothing() {
    let fleet = fleet("part").await;
    assert_eq!(ready_reason(&fleet.heartbeat(&fleet.edge).await).0, "True");
    assert_eq!(ready_reason(&fleet.heartbeat(&fleet.local).await).0, "True");
    fleet.reconcile(&fleet.solo).await;
    let spread_status = fleet.reconcile(&fleet.spread).await;
    assert_eq!(
        spread_status["instances"][0]["target"], "edge",
        "{spread_status:#}"
    );
    // The API server now holds that status; the next reconciles see it.
    let mut spread = fleet.spread.clone();
    spread.status = Some(serde_json::from_value(spread_status).expect("status"));
    let on_edge = fleet.containers(&fleet.edge_host, &fleet.spread).await;
    assert_eq!(on_edge.len(), 1);
    let solo_before = fleet.containers(&fleet.local_host, &fleet.solo).await;

    // Cut while idle: the next heartbeat says Unreachable.
    fleet.proxy.cut();
    let status = fleet.heartbeat(&fleet.edge).await;
    assert_eq!(
        ready_reason(&status),
        ("False".to_string(), "Unreachable".to_string()),
        "{status:#}"
    );
    assert!(
        fleet
            .recorded
            .event_reasons()
            .contains(&"Unreachable".to_string())
    );

    // The object on the cut target: reported, neither moved to `local` nor removed.
    let spread_status = fleet.reconcile(&spread).await;
    assert_eq!(spread_status["instances"][0]["target"], "edge");
    assert_eq!(spread_status["instances"][0]["state"], "unknown");
    spread.status = Some(serde_json::from_value(spread_status).expect("status"));
    assert!(
        fleet
            .containers(&fleet.local_host, &fleet.spread)
            .await
            .is_empty(),
        "not moved"
    );
    // The rest of the fleet converges, and does not wait on the cut target.
    let started = Instant::now();
    let solo_status = fleet.reconcile(&fleet.solo).await;
    assert!(
        started.elapsed() < DOCKER_TIMEOUT,
        "solo waited for the cut target"
    );
    assert!(solo_status.is_null() || ready_reason(&solo_status).0 == "True");
    assert_eq!(
        fleet.containers(&fleet.local_host, &fleet.solo).await,
        solo_before
    );

    // Heal: the next heartbeat reconnects and the object converges where it was.
    fleet.proxy.heal();
    assert_eq!(ready_reason(&fleet.heartbeat(&fleet.edge).await).0, "True");
    let spread_status = fleet.reconcile(&spread).await;
    assert_eq!(ready_reason(&spread_status).0, "True", "{spread_status:#}");
    let after = fleet.containers(&fleet.edge_host, &fleet.spread).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, on_edge[0].id, "the same container, untouched");
    assert!(
        fleet
            .containers(&fleet.local_host, &fleet.spread)
            .await
            .is_empty()
    );
    fleet.cleanup().await;
}

#[tokio::test]
async fn a_cut_in_the_middle_of_a_converge_fails_that_target_only_and_heals() {
    let fleet = fleet("part-mid").await;
    fleet.heartbeat(&fleet.edge).await;
    fleet.heartbeat(&fleet.local).await;
    fleet.reconcile(&fleet.solo).await;
    // `spread` lands on edge (the emptier target), and its status says so.
    let mut spread = fleet.spread.clone();
    let status = fleet.reconcile(&spread).await;
    assert_eq!(status["instances"][0]["target"], "edge", "{status:#}");
    spread.status = Some(serde_json::from_value(status).expect("status"));
    let before = fleet.containers(&fleet.edge_host, &spread).await;
    assert_eq!(before.len(), 1);

    // A spec change replaces the container; the link is cut while that is under way.
    // Wherever the cut falls — before the list, between the steps of the replacement —
    // the placement holds: nothing moves to `local`.
    spread.spec.env =
        serde_json::from_value(json!([{"name": "MODE", "value": "second"}])).expect("env");
    spread.metadata.generation = Some(2);
    let (_, _) = tokio::join!(
        async {
            container::reconcile(Arc::new(spread.clone()), fleet.ctx.clone())
                .await
                .expect("reconcile reports, never fails, on a cut target")
        },
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            fleet.proxy.cut();
        }
    );
    assert!(
        fleet
            .containers(&fleet.local_host, &spread)
            .await
            .is_empty(),
        "moved to local"
    );
    let status = fleet.heartbeat(&fleet.edge).await;
    assert_eq!(ready_reason(&status).1, "Unreachable", "{status:#}");

    // Heal: the replacement finishes on edge, with one container, of the new spec. A
    // reconcile that changed something looks again soon (the old container goes only once
    // the new one runs), and one that finds nothing to do no longer hurries.
    fleet.proxy.heal();
    fleet.heartbeat(&fleet.edge).await;
    let mut looks = 0;
    let status = loop {
        let (status, action) = fleet.reconcile_and_requeue(&spread).await;
        looks += 1;
        if action != Action::requeue(stevedore::converge::engine::LOOK_AGAIN_AFTER_CHANGES) {
            break status;
        }
        assert!(looks < 5, "still changing after {looks} looks: {status:#}");
    };
    assert_eq!(ready_reason(&status).0, "True", "{status:#}");
    // The replaced container may be kept stopped as the replica's previous one (when the
    // replacement finished before the cut): one serves.
    let after = common::serving(fleet.containers(&fleet.edge_host, &spread).await);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(
        after[0].labels.get(LABEL_SPEC_HASH),
        before[0].labels.get(LABEL_SPEC_HASH),
        "the new spec runs"
    );
    assert!(
        fleet
            .containers(&fleet.local_host, &spread)
            .await
            .is_empty()
    );
    fleet.cleanup().await;
}

#[tokio::test]
async fn a_slow_daemon_stays_ready_and_a_silent_one_times_out() {
    let fleet = fleet("part-slow").await;
    fleet.heartbeat(&fleet.local).await;
    fleet.proxy.slow_down(Duration::from_millis(150));
    let status = fleet.heartbeat(&fleet.edge).await;
    assert_eq!(
        ready_reason(&status).0,
        "True",
        "slow is not down: {status:#}"
    );
    let spread_status = fleet.reconcile(&fleet.spread).await;
    assert_eq!(ready_reason(&spread_status).0, "True", "{spread_status:#}");

    // A daemon that accepts connections and never answers: the heartbeat's calls time out.
    fleet.proxy.cut();
    let started = Instant::now();
    let status = fleet.heartbeat(&fleet.edge).await;
    assert_eq!(ready_reason(&status).1, "Unreachable", "{status:#}");
    assert!(
        started.elapsed() < DOCKER_TIMEOUT * 4,
        "bounded by the call timeout"
    );
    // The other target is unaffected.
    assert_eq!(ready_reason(&fleet.heartbeat(&fleet.local).await).0, "True");
    fleet.proxy.heal();
    fleet.cleanup().await;
}
