//! One digest everywhere, through the controller's reconciler (fake API server) and the
//! harness's real registry and daemons: an image only in the private registry is pulled
//! with the Registry's credentials on two daemons, which run the same digest; a tag pushed
//! anew leaves `Pinned` alone, rolls `FollowTag` out, and a new image that fails its health
//! check stops the rollout while the old containers keep serving.

use crate::common;
use crate::common::fake_api;

use std::sync::Arc;
use std::time::Duration;

use common::TestEnv;
use common::fixture::{secret, unique};
use common::registry::{pinned_image, push};
use fake_api::{Recorded, World};
use serde_json::{Value, json};
use stevedore::api::{DockerContainer, DockerTarget, Registry};
use stevedore::controller::container;
use stevedore::controller::context::Context;
use stevedore::docker::{DockerHost, HostContainer};
use stevedore::labels::LABEL_UID;

fn with_meta<T: kube::Resource>(mut object: T, ns: &str) -> T {
    let meta = object.meta_mut();
    meta.namespace = Some(ns.into());
    meta.uid = Some(unique("uid"));
    meta.generation = Some(1);
    object
}

fn object<T: serde::de::DeserializeOwned>(json: Value) -> T {
    serde_json::from_value(json).expect("fixture")
}

/// A DockerContainer whose status follows what the reconciler writes, as the API server's
/// would.
struct Tracked {
    object: DockerContainer,
}

impl Tracked {
    async fn reconcile(&mut self, ctx: &Arc<Context>, recorded: &Recorded) -> Value {
        recorded.clear();
        container::reconcile(Arc::new(self.object.clone()), ctx.clone())
            .await
            .expect("reconcile");
        let name = self.object.metadata.name.clone().unwrap_or_default();
        if let Some(call) = recorded.all().into_iter().rev().find(|c| {
            c.path
                .ends_with(&format!("/dockercontainers/{name}/status"))
        }) {
            self.object.status =
                Some(serde_json::from_value(call.body["status"].clone()).expect("status"));
        }
        serde_json::to_value(&self.object.status).expect("status")
    }

    /// Reconciles until every replica is ready (a health check needs its first run).
    async fn until_ready(&mut self, ctx: &Arc<Context>, recorded: &Recorded) -> Value {
        let started = std::time::Instant::now();
        loop {
            let status = self.reconcile(ctx, recorded).await;
            if status["readyReplicas"] == 2 {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "never ready: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn uid(&self) -> String {
        self.object.metadata.uid.clone().unwrap_or_default()
    }
}

/// The owner's containers that serve (not the replicas' previous ones).
async fn running(host: &DockerHost, uid: &str) -> Vec<HostContainer> {
    common::serving(host.list_labelled(LABEL_UID, uid).await.expect("list"))
}

#[tokio::test]
async fn one_digest_everywhere_pinned_follow_tag_and_a_failed_rollout() {
    let env = TestEnv::load();
    let ns = unique("pin");
    let repository = format!("stevedore/{ns}");
    let image = format!("{}/{repository}:live", env.get("REGISTRY"));
    push(&env, &env.get("IMAGE_V1"), &image);

    let target = |name: &str, endpoint: String| -> DockerTarget {
        with_meta(
            object(
                json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
                "metadata": {"name": name, "labels": {"pool": "pin"}},
                "spec": {"endpoint": endpoint}}),
            ),
            &ns,
        )
    };
    let targets = vec![
        target("tls", env.get("TLS_UNIX_HOST")),
        target("second", env.get("SECOND_HOST")),
    ];
    let registry: Registry = with_meta(
        object(
            json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "harness"},
            "spec": {"server": env.get("REGISTRY"),
                     "credentials": {"secretRef": {"name": "pull"}},
                     "ca": {"secretRef": {"name": "ca"}},
                     "catalog": {"refreshInterval": "1s"}}}),
        ),
        &ns,
    );
    let dc = |name: &str, policy: &str, health: bool| -> DockerContainer {
        let mut spec = json!({"image": image, "imageUpdatePolicy": policy, "stopTimeoutSeconds": 1,
            "placement": {"targetSelector": {"matchLabels": {"pool": "pin"}}, "replicas": 2}});
        if health {
            spec["healthCheck"] = json!({"command": ["grep", "-q", "v1", "/etc/stevedore-image-version"],
                "intervalSeconds": 1, "timeoutSeconds": 1, "retries": 1, "startPeriodSeconds": 0});
        }
        let mut object: DockerContainer = with_meta(
            object(
                json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
                "metadata": {"name": name, "finalizers": [container::FINALIZER]}, "spec": spec}),
            ),
            &ns,
        );
        object.metadata.name = Some(name.into());
        object
    };
    let mut pinned = Tracked {
        object: dc("pinned", "Pinned", false),
    };
    let mut follow = Tracked {
        object: dc("follow", "FollowTag", false),
    };
    let mut guarded = Tracked {
        object: dc("guarded", "FollowTag", true),
    };
    let all = [&pinned, &follow, &guarded];
    let (client, recorded) = fake_api::start(
        &all.iter()
            .map(|t| serde_json::to_value(&t.object).expect("json"))
            .collect::<Vec<_>>(),
    );
    let password = env.get("REGISTRY_PASSWORD");
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets,
            containers: all.iter().map(|t| t.object.clone()).collect(),
            registries: vec![registry],
            secrets: vec![
                secret(
                    &ns,
                    "pull",
                    &[
                        ("username", env.get("REGISTRY_USER").into_bytes()),
                        ("password", password.clone().into_bytes()),
                    ],
                ),
                secret(
                    &ns,
                    "ca",
                    &[("ca.crt", std::fs::read(env.get("REGISTRY_CA")).expect("ca"))],
                ),
            ],
            ..Default::default()
        },
        &ns,
    );
    let hosts = [
        common::wait::connected(common::hosts::tls(&env)).await,
        common::wait::connected(common::hosts::second(&env)).await,
    ];
    let first_image = pinned_image(&env, &repository, "live").await;

    // Pulled with the Registry's credentials on both daemons; one digest on both.
    for tracked in [&mut pinned, &mut follow, &mut guarded] {
        let status = tracked.until_ready(&ctx, &recorded).await;
        assert_eq!(status["resolvedImage"], first_image.as_str(), "{status:#}");
        let mut images = Vec::new();
        for host in &hosts {
            let here = running(host, &tracked.uid()).await;
            assert_eq!(here.len(), 1, "one replica per daemon");
            images.push(here[0].image_id.clone());
        }
        assert_eq!(images[0], images[1], "the same image on both daemons");
    }
    assert!(
        recorded
            .all()
            .iter()
            .all(|c| !c.body.to_string().contains(&password))
    );
    let before = |t: &Tracked| {
        let uid = t.uid();
        let hosts = &hosts;
        async move {
            let mut ids = Vec::new();
            for host in hosts {
                ids.extend(running(host, &uid).await.into_iter().map(|c| c.id));
            }
            ids.sort();
            ids
        }
    };
    let pinned_ids = before(&pinned).await;
    let guarded_ids = before(&guarded).await;

    // The tag moves to another image.
    push(&env, &env.get("IMAGE_V2"), &image);
    let second_image = pinned_image(&env, &repository, "live").await;
    assert_ne!(second_image, first_image);
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the 1 s refresh interval

    // Pinned: nothing changes.
    let status = pinned.reconcile(&ctx, &recorded).await;
    assert_eq!(status["resolvedImage"], first_image.as_str());
    assert_eq!(
        before(&pinned).await,
        pinned_ids,
        "Pinned keeps its containers"
    );

    // FollowTag: rolled out on both daemons, to the one new digest.
    let status = follow.reconcile(&ctx, &recorded).await;
    assert_eq!(status["resolvedImage"], second_image.as_str(), "{status:#}");
    assert_eq!(status["updatedReplicas"], 2, "{status:#}");
    assert!(
        recorded
            .event_reasons()
            .iter()
            .filter(|r| *r == "Replaced")
            .count()
            == 2,
        "{:?}",
        recorded.event_reasons()
    );
    let mut images = Vec::new();
    for host in &hosts {
        let here = running(host, &follow.uid()).await;
        assert_eq!(here.len(), 1);
        images.push(here[0].image_id.clone());
    }
    assert_eq!(images[0], images[1]);

    // FollowTag with a health check the new image fails: the rollout stops, the old
    // containers keep serving, and the conditions say so.
    let status = guarded.reconcile(&ctx, &recorded).await;
    assert_eq!(
        before(&guarded).await,
        guarded_ids,
        "the old containers serve: {status:#}"
    );
    let degraded = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Degraded"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(degraded["status"], "True", "{status:#}");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap_or_default()
            .contains("unhealthy"),
        "{degraded}"
    );
    // And it stays stopped: the next reconcile does not try again at once.
    let status = guarded.reconcile(&ctx, &recorded).await;
    assert!(
        !recorded
            .event_reasons()
            .iter()
            .any(|r| r == "ReplaceFailed"),
        "tried again: {:?}",
        recorded.event_reasons()
    );
    assert!(
        status["conditions"].to_string().contains("rollout stopped"),
        "{status:#}"
    );
    assert_eq!(before(&guarded).await, guarded_ids);

    for tracked in [&pinned, &follow, &guarded] {
        for host in &hosts {
            common::remove_labelled(host, LABEL_UID, &tracked.uid()).await;
        }
    }
}
