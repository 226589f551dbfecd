//! The Registry API v2 client against the harness's real registries (TLS + htpasswd, and a
//! plain-HTTP one with the same auth): the catalog and tags, digests that match what a
//! daemon records after a pull, and a clear, classified error for each way it can fail.

use crate::common;
use crate::common::fake_api;

use std::time::Duration;

use common::TestEnv;
use common::fixture::free_port;
use stevedore::api::registry::RegistrySpec;
use stevedore::docker::PullCredentials;
use stevedore::registry::client::{RegistryClient, RegistryErrorKind};

fn spec(server: &str) -> RegistrySpec {
    serde_json::from_value(serde_json::json!({ "server": server })).expect("spec")
}

fn credentials(env: &TestEnv, password: &str) -> PullCredentials {
    PullCredentials {
        username: env.get("REGISTRY_USER"),
        password: password.to_string(),
        server: env.get("REGISTRY"),
    }
}

fn client(env: &TestEnv, ca: &str, password: &str) -> RegistryClient {
    let ca = std::fs::read(env.get(ca)).expect("CA");
    RegistryClient::new(
        &spec(&env.get("REGISTRY")),
        Some(&ca),
        Some(&credentials(env, password)),
        Duration::from_secs(5),
    )
    .expect("client")
}

#[tokio::test]
async fn the_catalog_lists_the_pushed_repositories_and_tags() {
    let env = TestEnv::load();
    let registry = client(&env, "REGISTRY_CA", &env.get("REGISTRY_PASSWORD"));
    let repositories = registry.repositories().await.expect("catalog");
    assert!(
        repositories.iter().any(|r| r == "stevedore/busybox"),
        "{repositories:?}"
    );
    let tags = registry.tags("stevedore/busybox").await.expect("tags");
    for tag in ["v1", "v2"] {
        assert!(tags.iter().any(|t| t == tag), "{tags:?}");
    }
}

#[tokio::test]
async fn a_digest_matches_what_the_daemon_records_after_a_pull() {
    let env = TestEnv::load();
    let registry = client(&env, "REGISTRY_CA", &env.get("REGISTRY_PASSWORD"));
    let digest = registry
        .digest("stevedore/busybox", "v1")
        .await
        .expect("digest");
    assert!(digest.starts_with("sha256:"), "{digest}");
    let other = registry
        .digest("stevedore/busybox", "v2")
        .await
        .expect("digest");
    assert_ne!(digest, other, "two images, two digests");
    // The daemon that pulls by tag records the same digest.
    let host = common::wait::connected(common::hosts::tls(&env)).await;
    let image = env.get("REGISTRY_IMAGE_V1");
    host.pull(
        &image,
        Some(&credentials(&env, &env.get("REGISTRY_PASSWORD"))),
        |_| {},
    )
    .await
    .expect("pull");
    let pulled = host
        .list_images()
        .await
        .expect("images")
        .into_iter()
        .find(|i| i.reference == image)
        .expect("the pulled image");
    assert_eq!(
        pulled.digest.as_deref(),
        Some(digest.as_str()),
        "like with like"
    );
}

#[tokio::test]
async fn each_failure_has_its_reason_and_a_message_to_act_on() {
    let env = TestEnv::load();
    let wrong_password = client(&env, "REGISTRY_CA", "not-the-password");
    let error = wrong_password.repositories().await.expect_err("refused");
    assert_eq!(error.kind, RegistryErrorKind::Unauthorized, "{error}");
    assert!(error.message.contains("spec.credentials"), "{error}");
    assert!(
        !error.message.contains("not-the-password"),
        "no secret in messages"
    );

    let wrong_ca = client(&env, "OTHER_CA", &env.get("REGISTRY_PASSWORD"));
    let error = wrong_ca.repositories().await.expect_err("untrusted");
    assert_eq!(error.kind, RegistryErrorKind::TlsError, "{error}");
    assert!(error.message.contains("spec.ca"), "{error}");

    let down = RegistryClient::new(
        &spec(&format!("127.0.0.1:{}", free_port())),
        None,
        None,
        Duration::from_secs(2),
    )
    .expect("client");
    let error = down.repositories().await.expect_err("nothing listens");
    assert_eq!(error.kind, RegistryErrorKind::Unreachable, "{error}");

    let registry = client(&env, "REGISTRY_CA", &env.get("REGISTRY_PASSWORD"));
    let error = registry
        .digest("stevedore/busybox", "no-such-tag")
        .await
        .expect_err("missing tag");
    assert_eq!(error.kind, RegistryErrorKind::NotFound, "{error}");
}

mod through_the_controller {
    use std::sync::Arc;

    use super::common::TestEnv;
    use super::common::fixture::{secret, unique};
    use super::fake_api::{self, World};
    use serde_json::{Value, json};
    use stevedore::api::Registry;
    use stevedore::controller::registry::reconcile;

    fn registry(env: &TestEnv, ns: &str, annotation: Option<&str>) -> Registry {
        let mut registry: Registry = serde_json::from_value(json!({
            "apiVersion": "stevedore.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "harness", "namespace": ns},
            "spec": {"server": env.get("REGISTRY"),
                     "credentials": {"secretRef": {"name": "pull"}},
                     "ca": {"secretRef": {"name": "ca"}},
                     "catalog": {"repositories": ["stevedore/busy*"], "maxTagsPerRepository": 1}},
        }))
        .expect("registry");
        registry.metadata.uid = Some(unique("uid"));
        registry.metadata.generation = Some(1);
        if let Some(value) = annotation {
            registry.metadata.annotations = Some(
                [(
                    stevedore::api::registry::REFRESH_REQUESTED_ANNOTATION.to_string(),
                    value.to_string(),
                )]
                .into(),
            );
        }
        registry
    }

    fn world(env: &TestEnv, ns: &str, registry: &Registry, password: &str) -> World {
        World {
            registries: vec![registry.clone()],
            secrets: vec![
                secret(
                    ns,
                    "pull",
                    &[
                        ("username", env.get("REGISTRY_USER").into_bytes()),
                        ("password", password.as_bytes().to_vec()),
                    ],
                ),
                secret(
                    ns,
                    "ca",
                    &[("ca.crt", std::fs::read(env.get("REGISTRY_CA")).expect("ca"))],
                ),
            ],
            ..Default::default()
        }
    }

    fn status_of(recorded: &super::fake_api::Recorded) -> Value {
        recorded
            .all()
            .into_iter()
            .rev()
            .find(|c| c.path.ends_with("/status"))
            .map(|c| c.body["status"].clone())
            .unwrap_or(Value::Null)
    }

    #[tokio::test]
    async fn the_status_lists_the_catalog_and_refreshes_on_request() {
        let env = TestEnv::load();
        let ns = unique("reg-ctl");
        let object = registry(&env, &ns, None);
        let (client, recorded) = fake_api::start(&[serde_json::to_value(&object).expect("json")]);
        let (ctx, _signals) = fake_api::context(
            client,
            world(&env, &ns, &object, &env.get("REGISTRY_PASSWORD")),
            "reg",
        );

        reconcile(Arc::new(object.clone()), ctx.clone())
            .await
            .expect("refresh");
        let status = status_of(&recorded);
        assert_eq!(status["conditions"][0]["status"], "True", "{status:#}");
        assert_eq!(status["repositoryCount"], 1, "{status:#}");
        assert_eq!(
            status["repositories"],
            json!([{"name": "stevedore/busybox", "tags": ["v2"]}]),
            "the newest tag only"
        );
        assert!(status["lastRefreshTime"].is_string());

        // Not due yet: nothing is asked, nothing is written.
        recorded.clear();
        let mut seen = object.clone();
        seen.status = Some(serde_json::from_value(status).expect("status"));
        reconcile(Arc::new(seen.clone()), ctx.clone())
            .await
            .expect("idle");
        assert!(
            recorded.all().is_empty(),
            "{:?}",
            recorded.writes_and_reads()
        );

        // A new value of the annotation refreshes now.
        let mut asked = registry(&env, &ns, Some("now-please"));
        asked.metadata.uid = seen.metadata.uid.clone();
        asked.status = seen.status.clone();
        reconcile(Arc::new(asked), ctx)
            .await
            .expect("refresh on request");
        let status = status_of(&recorded);
        assert_eq!(status["observedRefreshRequest"], "now-please", "{status:#}");
    }

    #[tokio::test]
    async fn a_wrong_password_is_unauthorized_with_an_event_and_no_secret() {
        let env = TestEnv::load();
        let ns = unique("reg-ctl-401");
        let object = registry(&env, &ns, None);
        let password = unique("wrong-password");
        let (client, recorded) = fake_api::start(&[serde_json::to_value(&object).expect("json")]);
        let (ctx, _signals) =
            fake_api::context(client, world(&env, &ns, &object, &password), "reg");
        reconcile(Arc::new(object), ctx).await.expect("reconcile");
        let status = status_of(&recorded);
        assert_eq!(
            status["conditions"][0]["reason"], "Unauthorized",
            "{status:#}"
        );
        assert!(
            recorded
                .event_reasons()
                .contains(&"Unauthorized".to_string())
        );
        for call in recorded.all() {
            assert!(
                !call.body.to_string().contains(&password),
                "{}",
                call.line()
            );
        }
    }
}

/// The usual lab registry: plain HTTP, htpasswd, `insecure: true`.
mod plain_http {
    use super::*;
    use common::workspace::{Workspace, containers, remove_all, target, text};

    fn client(env: &TestEnv, insecure: bool, password: &str) -> RegistryClient {
        let spec: RegistrySpec = serde_json::from_value(serde_json::json!({
            "server": env.get("PLAIN_REGISTRY"), "insecure": insecure
        }))
        .expect("spec");
        let credentials = PullCredentials {
            server: env.get("PLAIN_REGISTRY"),
            ..credentials(env, password)
        };
        RegistryClient::new(&spec, None, Some(&credentials), Duration::from_secs(5))
            .expect("client")
    }

    #[tokio::test]
    async fn catalog_tags_digests_and_refusals_work_as_over_tls() {
        let env = TestEnv::load();
        let registry = client(&env, true, &env.get("REGISTRY_PASSWORD"));
        let repositories = registry.repositories().await.expect("catalog");
        assert!(
            repositories.iter().any(|r| r == "lab/busybox"),
            "{repositories:?}"
        );
        let tags = registry.tags("lab/busybox").await.expect("tags");
        assert!(
            tags.iter().any(|t| t == "v1") && tags.iter().any(|t| t == "v2"),
            "{tags:?}"
        );
        let digest = registry.digest("lab/busybox", "v1").await.expect("digest");
        assert!(digest.starts_with("sha256:"), "{digest}");

        let refused = client(&env, true, "not-the-password");
        let error = refused.repositories().await.expect_err("refused");
        assert_eq!(error.kind, RegistryErrorKind::Unauthorized, "{error}");
        assert!(!error.message.contains("not-the-password"), "{error}");

        // Without `insecure`, HTTPS meets a plain-HTTP server: the message says what to do.
        let strict = client(&env, false, &env.get("REGISTRY_PASSWORD"));
        let error = strict.repositories().await.expect_err("not TLS");
        assert_eq!(error.kind, RegistryErrorKind::TlsError, "{error}");
        assert!(error.message.contains("spec.insecure"), "{error}");
    }

    #[tokio::test]
    async fn run_pins_and_pulls_from_it_and_status_lists_its_catalog_by_default() {
        let env = TestEnv::load();
        let host = common::wait::connected(common::hosts::main(&env)).await;
        let ws = Workspace::new();
        ws.write(
            "target.yaml",
            &target("main", &env.get("MAIN_HOST"), "here"),
        );
        ws.write(
            "registry.yaml",
            &format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: lab-pull}}\n\
                 type: kubernetes.io/basic-auth\n\
                 stringData: {{username: {user}, password: {password}}}\n---\n\
                 apiVersion: stevedore.dev/v1alpha1\nkind: Registry\nmetadata: {{name: lab}}\n\
                 spec:\n  server: \"{server}\"\n  insecure: true\n  \
                 credentials: {{secretRef: {{name: lab-pull}}}}\n",
                user = env.get("REGISTRY_USER"),
                password = env.get("REGISTRY_PASSWORD"),
                server = env.get("PLAIN_REGISTRY"),
            ),
        );
        let image = env.get("PLAIN_REGISTRY_IMAGE_V1");
        ws.write(
            "lab.yaml",
            &format!(
                "apiVersion: stevedore.dev/v1alpha1\nkind: DockerContainer\nmetadata: {{name: lab}}\n\
                 spec:\n  image: {image}\n  imageUpdatePolicy: Pinned\n  stopTimeoutSeconds: 1\n  \
                 placement: {{target: main}}\n"
            ),
        );
        let run = ws.run_once();
        assert_eq!(run.status.code(), Some(0), "{}", text(&run));
        assert_eq!(containers(&host, &ws.namespace).await.len(), 1);

        let status = ws.run(&["status", "-o", "json"]);
        assert_eq!(status.status.code(), Some(0), "{}", text(&status));
        let list: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
        let item = |kind: &str| {
            list["items"]
                .as_array()
                .expect("items")
                .iter()
                .find(|i| i["kind"] == kind)
                .cloned()
                .unwrap_or_else(|| panic!("no {kind} in {list:#}"))
        };
        let digest = client(&env, true, &env.get("REGISTRY_PASSWORD"))
            .digest("lab/busybox", "v1")
            .await
            .expect("digest");
        let container = item("DockerContainer");
        assert_eq!(
            container["status"]["resolvedImage"],
            format!("{}/lab/busybox@{digest}", env.get("PLAIN_REGISTRY")),
            "{container:#}"
        );
        // No `catalog` in the spec: the catalog is listed all the same.
        let registry = item("Registry");
        assert_eq!(
            registry["status"]["conditions"][0]["status"], "True",
            "{registry:#}"
        );
        let listed = registry["status"]["repositories"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            listed.iter().any(|r| r["name"] == "lab/busybox"
                && r["tags"] == serde_json::json!(["v1", "v2"])),
            "{registry:#}"
        );
        remove_all(&host, &ws.namespace).await;
    }
}
