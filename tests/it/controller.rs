//! The DockerContainer and DockerTarget reconcilers against a fake API server (no real one
//! can run here) and the harness's real daemons: each test asserts the exact HTTP calls a
//! reconcile makes and what it did on the host.

use crate::common;
use crate::common::fake_api;
use crate::common::tripwire;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::TestEnv;
use common::fixture::unique;
use fake_api::{Recorded, World};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use stevedore::api::container::DockerContainerStatus;
use stevedore::api::{DockerContainer, DockerTarget, DockerTargetSpec};
use stevedore::controller::container::{self, FINALIZER};
use stevedore::controller::context::{CachesListed, Context};
use stevedore::controller::hosts::HostSignal;
use stevedore::controller::{rbac, target};
use stevedore::docker::{Call, ConnectOptions, DockerHost, connect};
use stevedore::labels::LABEL_UID;

/// A DockerTarget fixture.
fn mk_target(namespace: &str, name: &str, endpoint: &str) -> DockerTarget {
    let mut target = DockerTarget::new(
        name,
        DockerTargetSpec {
            endpoint: endpoint.into(),
            tls: None,
            ssh: None,
            allow_insecure: false,
            unschedulable: false,
            max_containers: 0,
        },
    );
    target.metadata = ObjectMeta {
        finalizers: Some(vec![target::FINALIZER.into()]),
        ..meta(namespace, name)
    };
    target
}

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: Some(unique("uid")),
        generation: Some(1),
        ..Default::default()
    }
}

/// Builder-style changes to a DockerContainer fixture.
trait ContainerFixture {
    fn finalized(self) -> Self;
    fn deleting(self) -> Self;
    fn with_status(self, status: &Value) -> Self;
}

impl ContainerFixture for DockerContainer {
    fn finalized(mut self) -> Self {
        self.metadata.finalizers = Some(vec![FINALIZER.into()]);
        self
    }

    fn deleting(mut self) -> Self {
        self.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        self
    }

    fn with_status(mut self, status: &Value) -> Self {
        self.status = Some(serde_json::from_value(status.clone()).expect("status"));
        self
    }
}

/// A DockerContainer fixture running the harness image, pinned to `target`.
fn mk_container(namespace: &str, name: &str, image: &str, target: &str) -> DockerContainer {
    let object: DockerContainer = serde_json::from_value(json!({
        "apiVersion": "stevedore.dev/v1alpha1",
        "kind": "DockerContainer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"image": image, "placement": {"target": target}, "stopTimeoutSeconds": 1},
    }))
    .expect("container fixture");
    DockerContainer {
        metadata: meta(namespace, name),
        ..object
    }
}

fn path(namespace: &str, plural: &str, name: &str) -> String {
    format!("/apis/stevedore.dev/v1alpha1/namespaces/{namespace}/{plural}/{name}")
}

async fn main_daemon(env: &TestEnv) -> DockerHost {
    let (spec, material) = common::hosts::main(env);
    connect(&spec, &material, ConnectOptions::default())
        .await
        .expect("main daemon")
}

/// One variable, `TOKEN`, from key `token` of the Secret `api-token`.
fn token_from_secret() -> Vec<stevedore::api::container::EnvVar> {
    serde_json::from_value(json!([
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "token"}}}
    ]))
    .expect("env")
}

/// Sets up a fake API server knowing `container` and a context whose caches hold the
/// target and the container.
fn setup(
    targets: Vec<DockerTarget>,
    container: &DockerContainer,
    manager: &str,
) -> (Arc<Context>, Recorded) {
    let as_json = serde_json::to_value(container).expect("json");
    let (client, recorded) = fake_api::start(&[as_json]);
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets,
            containers: vec![container.clone()],
            ..Default::default()
        },
        manager,
    );
    (ctx, recorded)
}

/// Every call was one the ClusterRole allows.
fn assert_rbac_allows(recorded: &Recorded) {
    for call in recorded.all() {
        let (group, resource, verb) = call.rbac();
        assert!(
            rbac::allows(&group, &resource, &verb),
            "{} needs {verb} on {group}/{resource}, which rbac::PERMISSIONS lacks",
            call.line()
        );
    }
}

/// The containers of owner `uid` that serve (a replica's previous one, kept stopped after
/// a replacement, is not one).
async fn owned_by(host: &DockerHost, uid: &str) -> Vec<stevedore::docker::HostContainer> {
    common::serving(host.list_labelled(LABEL_UID, uid).await.expect("list"))
}

async fn remove_all(host: &DockerHost, uid: &str) {
    common::remove_labelled(host, LABEL_UID, uid).await;
}

#[tokio::test]
async fn a_new_object_gets_the_finalizer_first_and_converges_in_the_same_pass() {
    let env = TestEnv::load();
    let ns = unique("ctl-fin");
    let target = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "local");
    let uid = web.metadata.uid.clone().expect("uid");
    let (ctx, recorded) = setup(vec![target], &web, "ctl-fin");

    container::reconcile(Arc::new(web), ctx)
        .await
        .expect("reconcile");

    // The finalizer is written before anything else, then the status of what now runs: no
    // second pass waits for the finalizer to come back through the watch.
    let object = path(&ns, "dockercontainers", "web");
    assert_eq!(
        recorded.writes_and_reads(),
        vec![format!("PATCH {object}"), format!("PATCH {object}/status")]
    );
    let patch = &recorded.all()[0].body;
    assert!(
        patch.to_string().contains(FINALIZER),
        "the first patch adds the finalizer: {patch}"
    );
    let host = main_daemon(&env).await;
    assert_eq!(
        owned_by(&host, &uid).await.len(),
        1,
        "converged in the same pass"
    );
    assert_rbac_allows(&recorded);
    remove_all(&host, &uid).await;
}

#[tokio::test]
async fn first_reconcile_creates_the_container_then_a_resync_writes_nothing() {
    let env = TestEnv::load();
    let ns = unique("ctl-first");
    let target = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "local").finalized();
    let uid = web.metadata.uid.clone().expect("uid");
    let (ctx, recorded) = setup(vec![target.clone()], &web, "ctl-first");
    let host = main_daemon(&env).await;

    let action = container::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("reconcile");
    // What runs is what is wanted, running and ready: nothing waits on the creation, so
    // no quick second look (a death or a health change would wake it through events).
    assert_ne!(
        action,
        Action::requeue(stevedore::converge::engine::LOOK_AGAIN_AFTER_CHANGES)
    );

    let status_path = format!("{}/status", path(&ns, "dockercontainers", "web"));
    assert_eq!(
        recorded.writes_and_reads(),
        vec![format!("PATCH {status_path}")]
    );
    let patch = recorded
        .all()
        .into_iter()
        .find(|c| c.path == status_path)
        .expect("status patch");
    assert!(
        patch.query.contains("fieldManager=stevedore") && patch.query.contains("force=true"),
        "server-side apply as stevedore: {}",
        patch.query
    );
    let status = patch.body["status"].clone();
    assert_eq!(status["readyReplicas"], 1, "{status:#}");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(status["instances"][0]["state"], "running");
    assert_eq!(status["instances"][0]["target"], "local");
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert!(recorded.event_reasons().contains(&"Created".to_string()));
    let running = owned_by(&host, &uid).await;
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].name, format!("{ns}_web_0"));
    assert_rbac_allows(&recorded);

    // The API server echoes the status back: the next reconcile finds nothing to do,
    // makes no API call at all, and asks the daemon for one list only.
    recorded.clear();
    let settled = web.with_status(&status);
    // Later than the list that followed the creation (which it would share; see
    // `reconciles_on_one_target_share_a_list_until_the_target_changes`).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let connected = ctx.hosts.connected();
    let before = connected[0].1.calls();
    container::reconcile(Arc::new(settled), ctx.clone())
        .await
        .expect("no-op reconcile");
    assert!(
        recorded.all().is_empty(),
        "no-op made calls: {:?}",
        recorded.writes_and_reads()
    );
    let calls = connected[0].1.calls().since(&before);
    assert_eq!(calls.get(Call::ListContainers), 1, "{calls:?}");
    assert_eq!(calls.mutating(), 0, "{calls:?}");
    assert_eq!(calls.get(Call::InspectContainer), 0, "{calls:?}");

    remove_all(&host, &uid).await;
}

#[tokio::test]
async fn reconciles_on_one_target_share_a_list_until_the_target_changes() {
    let env = TestEnv::load();
    let ns = unique("ctl-share");
    let target = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let target_uid = target.metadata.uid.clone().expect("uid");
    let image = env.get("IMAGE_V1");
    let (a, b) = (
        mk_container(&ns, "a", &image, "local").finalized(),
        mk_container(&ns, "b", &image, "local").finalized(),
    );
    let objects = [&a, &b].map(|c| serde_json::to_value(c).expect("json"));
    let (client, _recorded) = fake_api::start(&objects);
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets: vec![target],
            containers: vec![a.clone(), b.clone()],
            ..Default::default()
        },
        "ctl-share",
    );
    let host = main_daemon(&env).await;
    for object in [&a, &b] {
        container::reconcile(Arc::new(object.clone()), ctx.clone())
            .await
            .expect("first reconcile");
    }
    let lists = || {
        let connected = ctx.hosts.connected();
        connected[0].1.calls().get(Call::ListContainers)
    };

    // Due together (as a resync makes them, later than any list so far), the two make one
    // list call.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let before = lists();
    let (first, second) = tokio::join!(
        container::reconcile(Arc::new(a.clone()), ctx.clone()),
        container::reconcile(Arc::new(b.clone()), ctx.clone()),
    );
    first.expect("reconcile a");
    second.expect("reconcile b");
    assert_eq!(lists() - before, 1, "two reconciles started together");

    // Once the target changed (an event, or a write of this process), nothing listed
    // before is shared: the next reconcile asks the daemon again.
    ctx.hosts.connections().changes().record(&target_uid);
    let before = lists();
    container::reconcile(Arc::new(a.clone()), ctx.clone())
        .await
        .expect("after a change");
    assert_eq!(
        lists() - before,
        1,
        "a list from before the change was shared"
    );

    // Nor is a list that began well before the reconcile did.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let before = lists();
    container::reconcile(Arc::new(b.clone()), ctx.clone())
        .await
        .expect("later");
    assert_eq!(lists() - before, 1, "an old list was shared");

    for object in [&a, &b] {
        remove_all(&host, object.metadata.uid.as_deref().expect("uid")).await;
    }
}

#[tokio::test]
async fn delete_removes_the_containers_then_drops_the_finalizer() {
    let env = TestEnv::load();
    let ns = unique("ctl-del");
    let target = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "local").finalized();
    let uid = web.metadata.uid.clone().expect("uid");
    let (ctx, recorded) = setup(vec![target], &web, "ctl-del");
    let host = main_daemon(&env).await;
    container::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("create");
    assert_eq!(owned_by(&host, &uid).await.len(), 1);
    let status = recorded.all().last().expect("status").body["status"].clone();
    recorded.clear();

    let deleting = web.with_status(&status).deleting();
    container::reconcile(Arc::new(deleting), ctx)
        .await
        .expect("cleanup");

    assert!(owned_by(&host, &uid).await.is_empty(), "containers removed");
    assert_eq!(
        recorded.writes_and_reads(),
        vec![format!("PATCH {}", path(&ns, "dockercontainers", "web"))]
    );
    let patch = recorded
        .all()
        .into_iter()
        .find(|c| !c.is_event())
        .expect("finalizer patch");
    assert!(
        patch.body.to_string().contains("remove")
            && patch.body.to_string().contains("/metadata/finalizers/0"),
        "the finalizer is removed: {}",
        patch.body
    );
    assert!(recorded.event_reasons().contains(&"Removed".to_string()));
    assert_rbac_allows(&recorded);
}

#[tokio::test]
async fn a_target_deleted_with_its_containers_stays_until_they_are_removed() {
    // `kubectl delete namespace`, `kubectl delete -f dir/` or a GitOps prune delete the
    // DockerTarget together with its DockerContainers; their cleanups need the target.
    let env = TestEnv::load();
    let ns = unique("ctl-gone-together");
    let local = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "local").finalized();
    let uid = web.metadata.uid.clone().expect("uid");
    let (ctx, recorded) = setup(vec![local.clone()], &web, "ctl-gone-together");
    let host = main_daemon(&env).await;
    container::reconcile(Arc::new(web.clone()), ctx)
        .await
        .expect("create");
    assert_eq!(owned_by(&host, &uid).await.len(), 1);
    let status = recorded.all().last().expect("status").body["status"].clone();

    // Both are deleted: the target waits for the container's cleanup.
    let mut deleted_target = local.clone();
    deleted_target.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    let deleted_web = web.with_status(&status).deleting();
    let (client, recorded) = fake_api::start(&[
        serde_json::to_value(&deleted_target).expect("json"),
        serde_json::to_value(&deleted_web).expect("json"),
    ]);
    let (ctx, _signals) = fake_api::context(
        client.clone(),
        World {
            targets: vec![deleted_target.clone()],
            containers: vec![deleted_web.clone()],
            ..Default::default()
        },
        "ctl-gone-together",
    );
    let target_path = path(&ns, "dockertargets", "local");
    for _ in 0..2 {
        let waiting = target::reconcile(Arc::new(deleted_target.clone()), ctx.clone()).await;
        assert!(
            waiting.as_ref().is_err_and(|e| e.is_waiting()),
            "the target waits (an error keeps the finalizer): {waiting:?}"
        );
    }
    assert!(
        !recorded
            .writes_and_reads()
            .contains(&format!("PATCH {target_path}")),
        "the target let go while its DockerContainer still had containers: {:?}",
        recorded.writes_and_reads()
    );
    container::reconcile(Arc::new(deleted_web), ctx)
        .await
        .expect("cleanup");
    assert!(owned_by(&host, &uid).await.is_empty(), "containers removed");

    // The DockerContainer is gone: the target goes too.
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets: vec![deleted_target.clone()],
            ..Default::default()
        },
        "ctl-gone-together",
    );
    recorded.clear();
    let settling = target::reconcile(Arc::new(deleted_target.clone()), ctx.clone()).await;
    assert!(settling.is_err_and(|e| e.is_waiting()), "settling");
    tokio::time::sleep(std::time::Duration::from_millis(5500)).await;
    target::reconcile(Arc::new(deleted_target), ctx)
        .await
        .expect("released");
    let released = recorded
        .all()
        .into_iter()
        .find(|c| c.path == target_path && c.method == "PATCH")
        .expect("finalizer patch");
    assert!(
        released.body.to_string().contains("remove"),
        "{}",
        released.body
    );
    assert_rbac_allows(&recorded);
}

#[tokio::test]
async fn delete_with_an_unreachable_target_keeps_the_finalizer_and_says_which() {
    let env = TestEnv::load();
    let ns = unique("ctl-held");
    let local = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let gone = mk_target(&ns, "gone", &format!("unix:///tmp/{ns}-no-daemon.sock"));
    let web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "local").finalized();
    let uid = web.metadata.uid.clone().expect("uid");
    let (ctx, recorded) = setup(vec![local, gone], &web, "ctl-held");
    let host = main_daemon(&env).await;
    container::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("create");
    let mut status: DockerContainerStatus =
        serde_json::from_value(recorded.all().last().expect("status").body["status"].clone())
            .expect("status");
    // The object once had a replica on the target that is now unreachable.
    let mut elsewhere = status.instances[0].clone();
    elsewhere.target = "gone".into();
    status.instances.push(elsewhere);
    recorded.clear();

    let deleting = web
        .with_status(&serde_json::to_value(&status).expect("json"))
        .deleting();
    let result = container::reconcile(Arc::new(deleting), ctx).await;

    let error = result.expect_err("deletion must wait for the unreachable target");
    assert!(
        stevedore::error_chain::error_chain(&error).contains("gone"),
        "{error:?}"
    );
    let status_path = format!("{}/status", path(&ns, "dockercontainers", "web"));
    assert_eq!(
        recorded.writes_and_reads(),
        vec![format!("PATCH {status_path}")],
        "the finalizer stays; only the status changes"
    );
    let patch = recorded
        .all()
        .into_iter()
        .find(|c| c.path == status_path)
        .expect("status patch");
    let ready = &patch.body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "DeletionBlocked");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains("target gone (Unreachable"),
        "{ready}"
    );
    assert!(
        recorded
            .event_reasons()
            .contains(&"DeletionBlocked".to_string())
    );
    // What could be removed was removed.
    assert!(owned_by(&host, &uid).await.is_empty());
    assert_rbac_allows(&recorded);
}

#[tokio::test]
async fn a_missing_secret_is_reported_and_nothing_is_touched() {
    let env = TestEnv::load();
    let ns = unique("ctl-invalid");
    let target = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let mut web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "local").finalized();
    web.spec.env = token_from_secret();
    let uid = web.metadata.uid.clone().expect("uid");
    let (ctx, recorded) = setup(vec![target], &web, "ctl-invalid");

    let action = container::reconcile(Arc::new(web), ctx)
        .await
        .expect("reconcile");

    assert_eq!(action, kube::runtime::controller::Action::await_change());
    let patch = recorded
        .all()
        .into_iter()
        .find(|c| !c.is_event())
        .expect("status patch");
    let ready = &patch.body["status"]["conditions"][0];
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spec.env[0]")
            && ready["message"]
                .as_str()
                .unwrap_or_default()
                .contains("api-token"),
        "{ready}"
    );
    let host = main_daemon(&env).await;
    assert!(owned_by(&host, &uid).await.is_empty());
}

#[tokio::test]
async fn a_reconcile_waits_until_every_cache_has_listed() {
    // After a restart or a leader change the Secret cache may not have listed yet; a
    // reconcile then would find the Secret missing and mark a working object InvalidSpec.
    let env = TestEnv::load();
    let ns = unique("ctl-ready");
    let target = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let mut web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "local").finalized();
    web.spec.env = token_from_secret();
    let uid = web.metadata.uid.clone().expect("uid");
    let (secrets, mut secrets_writer) = fake_api::unlisted_cache();
    let listed = CachesListed::expecting(&["Secret"]);
    let (client, recorded) = fake_api::start(&[serde_json::to_value(&web).expect("json")]);
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets: vec![target],
            containers: vec![web.clone()],
            secrets_cache: Some(secrets),
            caches_listed: Some(listed.clone()),
            ..Default::default()
        },
        "ctl-ready",
    );
    let host = main_daemon(&env).await;

    let reconcile = tokio::spawn(container::reconcile(Arc::new(web), ctx));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !reconcile.is_finished(),
        "reconciled before the Secret cache had listed"
    );
    assert!(
        recorded.all().is_empty(),
        "{:?}",
        recorded.writes_and_reads()
    );
    assert!(owned_by(&host, &uid).await.is_empty());

    let secret = common::fixture::secret(&ns, "api-token", &[("token", b"t0ken".to_vec())]);
    fake_api::list_now(&mut secrets_writer, [secret]);
    listed.listed("Secret");
    tokio::time::timeout(std::time::Duration::from_secs(60), reconcile)
        .await
        .expect("reconciled once the cache listed")
        .expect("reconcile task")
        .expect("reconcile");
    let status = recorded
        .all()
        .into_iter()
        .rev()
        .find(|c| c.path.ends_with("/status"))
        .expect("status written");
    assert_ne!(
        status.body["status"]["conditions"][0]["reason"], "InvalidSpec",
        "{}",
        status.body
    );
    assert_eq!(owned_by(&host, &uid).await.len(), 1);
    remove_all(&host, &uid).await;
}

#[tokio::test]
async fn target_heartbeat_reports_the_daemon_and_writes_only_on_change() {
    let env = TestEnv::load();
    let ns = unique("ctl-target");
    let local = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let gone = mk_target(&ns, "gone", &format!("unix:///tmp/{ns}-no-daemon.sock"));
    let (client, recorded) = fake_api::start(&[
        serde_json::to_value(&local).expect("json"),
        serde_json::to_value(&gone).expect("json"),
    ]);
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets: vec![local.clone(), gone.clone()],
            ..Default::default()
        },
        "ctl-target",
    );

    target::reconcile(Arc::new(local.clone()), ctx.clone())
        .await
        .expect("heartbeat");
    target::reconcile(Arc::new(gone.clone()), ctx.clone())
        .await
        .expect("heartbeat");

    let statuses: BTreeMap<String, Value> = recorded
        .all()
        .into_iter()
        .filter(|c| c.path.ends_with("/status"))
        .map(|c| (c.path.clone(), c.body["status"].clone()))
        .collect();
    let up = &statuses[&format!("{}/status", path(&ns, "dockertargets", "local"))];
    assert_eq!(up["conditions"][0]["status"], "True");
    assert!(
        up["server"]["version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()),
        "{up}"
    );
    assert!(up["lastSeenTime"].is_string());
    assert!(
        up["images"].as_array().is_some_and(|images| images
            .iter()
            .any(|i| i["ref"] == env.get("IMAGE_V1").as_str())),
        "the host's images are listed"
    );
    let down = &statuses[&format!("{}/status", path(&ns, "dockertargets", "gone"))];
    assert_eq!(down["conditions"][0]["status"], "False");
    assert_eq!(down["conditions"][0]["reason"], "Unreachable");
    assert!(
        recorded
            .event_reasons()
            .contains(&"Unreachable".to_string())
    );
    assert_rbac_allows(&recorded);

    // The next heartbeat of an unchanged daemon writes nothing.
    recorded.clear();
    let mut seen = local.clone();
    seen.status = Some(serde_json::from_value(up.clone()).expect("status"));
    target::reconcile(Arc::new(seen), ctx)
        .await
        .expect("heartbeat");
    assert!(
        recorded.all().is_empty(),
        "{:?}",
        recorded.writes_and_reads()
    );
}

#[test]
fn the_committed_cluster_role_is_the_one_the_code_needs() {
    let committed = std::fs::read_to_string(common::repo_root().join("rbac/clusterrole.yaml"))
        .expect("rbac/clusterrole.yaml");
    let generated =
        serde_yaml_ng::to_string(&rbac::cluster_role("stevedore-controller")).expect("yaml");
    assert_eq!(
        committed, generated,
        "rbac/clusterrole.yaml is stale: run `stevedore rbac > rbac/clusterrole.yaml`"
    );
    for permission in rbac::PERMISSIONS {
        assert!(!permission.verbs.contains(&"*"), "no wildcard verbs");
        assert!(!permission.resource.contains('*'), "no wildcard resources");
    }
}

#[tokio::test]
async fn a_container_removed_by_hand_signals_its_owner_and_is_recreated() {
    let env = TestEnv::load();
    let ns = unique("ctl-drift");
    let target = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "local").finalized();
    let uid = web.metadata.uid.clone().expect("uid");
    let as_json = serde_json::to_value(&web).expect("json");
    let (client, recorded) = fake_api::start(&[as_json]);
    let (ctx, mut signals) = fake_api::context(
        client,
        World {
            targets: vec![target],
            containers: vec![web.clone()],
            ..Default::default()
        },
        "ctl-drift",
    );
    let host = main_daemon(&env).await;
    container::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("create");
    let first = owned_by(&host, &uid).await;
    assert_eq!(first.len(), 1);
    // The event stream announces itself (a resync of what its target runs) once it follows.
    let resync = tokio::time::timeout(std::time::Duration::from_secs(5), signals.recv())
        .await
        .expect("the event stream starts");
    assert_eq!(
        resync,
        Some(HostSignal::Resync {
            namespace: ns.clone(),
            target: "local".into(),
        })
    );

    host.stop(&first[0].id, &first[0].name, Some(0))
        .await
        .expect("stop");
    host.remove(&first[0].id, &first[0].name).await.expect("rm");

    let signal = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        loop {
            match signals.recv().await {
                Some(HostSignal::Owner { namespace, name }) => break (namespace, name),
                Some(_) => continue,
                None => panic!("signals closed"),
            }
        }
    })
    .await
    .expect("the daemon's event names the owner within 2 s");
    assert_eq!(signal, (ns.clone(), "web".to_string()));
    ctx.recorder.flush().await;
    recorded.clear();
    container::reconcile(Arc::new(web), ctx.clone())
        .await
        .expect("repair");
    let again = owned_by(&host, &uid).await;
    assert_eq!(again.len(), 1, "repaired, no duplicate");
    assert_ne!(again[0].id, first[0].id);
    // The same note as the first creation's: the recorder counts it on that Event.
    ctx.recorder.flush().await;
    let events = recorded.events();
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "Created" || e["series"]["count"].as_i64() >= Some(2)),
        "the repair is reported: {events:?}"
    );
    remove_all(&host, &uid).await;
}

#[tokio::test]
async fn a_spec_edit_or_a_rotated_secret_replaces_with_an_event_naming_it() {
    let env = TestEnv::load();
    let ns = unique("ctl-roll");
    let target = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let secret_value = unique("s3cret-value");
    let rotated_value = unique("r0tated-value");
    let mut web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "local").finalized();
    web.spec.env = serde_json::from_value(json!([
        {"name": "MODE", "value": "blue"},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "api-token", "key": "token"}}}
    ]))
    .expect("env");
    let uid = web.metadata.uid.clone().expect("uid");
    let host = main_daemon(&env).await;
    let token = |value: &str| {
        common::fixture::secret(&ns, "api-token", &[("token", value.as_bytes().to_vec())])
    };
    // One controller context throughout, as in a running controller: its Event recorder
    // sees every replacement, and the Secret changes in its cache.
    let (secrets, mut secrets_writer) = fake_api::unlisted_cache();
    fake_api::list_now(&mut secrets_writer, [token(&secret_value)]);
    let (client, recorded) = fake_api::start(&[serde_json::to_value(&web).expect("json")]);
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets: vec![target.clone()],
            containers: vec![web.clone()],
            secrets_cache: Some(secrets),
            ..Default::default()
        },
        "ctl-roll",
    );
    container::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("create");
    let first = owned_by(&host, &uid).await;

    // Edit the spec: the Event names the field.
    web.spec.env[0].value = Some("green".into());
    web.metadata.generation = Some(2);
    let action = container::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("edit");
    // Besides the new container, its owner has the retired one: it looks again soon.
    assert_eq!(
        action,
        Action::requeue(stevedore::converge::engine::LOOK_AGAIN_AFTER_CHANGES)
    );
    let edited = owned_by(&host, &uid).await;
    assert_eq!(edited.len(), 1);
    assert_ne!(edited[0].id, first[0].id, "replaced");
    // The replaced container is kept, stopped, as the replica's previous one.
    let all = host.list_labelled(LABEL_UID, &uid).await.expect("list");
    let previous: Vec<_> = all
        .iter()
        .filter(|c| c.name.ends_with("-previous"))
        .collect();
    assert_eq!(previous.len(), 1, "{all:#?}");
    assert_eq!(previous[0].id, first[0].id, "{all:#?}");
    ctx.recorder.flush().await;
    let replaced: Vec<Value> = recorded
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "Replaced")
        .collect();
    assert!(
        replaced
            .iter()
            .any(|e| e["note"].as_str().unwrap_or_default().contains("env MODE")),
        "{replaced:?}"
    );

    // Rotate the Secret: replaced again, and an Event of its own names the Secret, not
    // its value (a recorder that counted it as a repeat of the edit's would keep the
    // edit's note).
    ctx.recorder.flush().await;
    recorded.clear();
    secrets_writer
        .apply_watcher_event(&kube::runtime::watcher::Event::Apply(token(&rotated_value)));
    container::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("rotate");
    let rotated = owned_by(&host, &uid).await;
    assert_eq!(rotated.len(), 1);
    assert_ne!(rotated[0].id, edited[0].id, "replaced after the rotation");
    ctx.recorder.flush().await;
    let notes: Vec<String> = recorded
        .events()
        .iter()
        .filter(|e| e["reason"] == "Replaced")
        .map(|e| e["note"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(notes.iter().any(|n| n.contains("api-token")), "{notes:?}");

    // `stevedore restart`'s annotation: replaced once more, the Event saying why; the same
    // value again changes nothing.
    ctx.recorder.flush().await;
    recorded.clear();
    web.metadata.annotations = Some(
        [(
            stevedore::api::ANNOTATION_RESTARTED_AT.to_string(),
            "2026-11-30T12:00:00Z".to_string(),
        )]
        .into(),
    );
    container::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("restart");
    let restarted = owned_by(&host, &uid).await;
    assert_eq!(restarted.len(), 1);
    assert_ne!(
        restarted[0].id, rotated[0].id,
        "replaced on the restart request"
    );
    ctx.recorder.flush().await;
    assert!(
        recorded.events().iter().any(|e| e["reason"] == "Replaced"
            && e["note"]
                .as_str()
                .unwrap_or_default()
                .contains("restart requested")),
        "{:?}",
        recorded.events()
    );
    container::reconcile(Arc::new(web.clone()), ctx)
        .await
        .expect("again");
    assert_eq!(owned_by(&host, &uid).await[0].id, restarted[0].id);

    // Neither value ever reached the API server (Events, status) or the labels.
    for call in recorded.all() {
        let body = call.body.to_string();
        assert!(
            !body.contains(&secret_value) && !body.contains(&rotated_value),
            "{}",
            call.line()
        );
    }
    for c in owned_by(&host, &uid).await {
        for (_, value) in c.labels.iter() {
            assert!(
                !value.contains(rotated_value.as_str()) && !value.contains(secret_value.as_str())
            );
        }
    }
    remove_all(&host, &uid).await;
}

/// A DockerContainer `web` on `target` publishing a free host port, with a health check
/// whose first verdict comes after `health_interval` seconds.
fn mk_web(ns: &str, image: &str, target: &str, health_interval: i32) -> DockerContainer {
    let mut web = mk_container(ns, "web", image, target).finalized();
    web.spec = serde_json::from_value(json!({
        "image": image, "placement": {"target": target}, "stopTimeoutSeconds": 1,
        "env": [{"name": "MODE", "value": "one"}],
        "ports": [{"containerPort": 8080, "hostPort": common::fixture::free_port(),
                   "hostIP": "127.0.0.1"}],
        "healthCheck": {"command": ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"],
                        "intervalSeconds": health_interval, "timeoutSeconds": 1, "retries": 3},
    }))
    .expect("spec");
    web
}

/// Replaces `web` (an env edit) through a tripwire that starts the controller's drain
/// when `call` goes by; returns what runs afterwards and the Events.
async fn drain_during_a_replacement(
    call: (&'static str, &'static str),
    health_interval: i32,
) -> (String, Vec<stevedore::docker::HostContainer>, Vec<Value>) {
    let env = TestEnv::load();
    let ns = unique("ctl-drain");
    let dir = std::env::temp_dir().join(unique("tripwire"));
    std::fs::create_dir_all(&dir).expect("dir");
    let wire = tripwire::Tripwire::start(&dir, std::path::Path::new("/var/run/docker.sock"));
    let target = mk_target(&ns, "local", &wire.endpoint());
    let mut web = mk_web(&ns, &env.get("IMAGE_V1"), "local", health_interval);
    let uid = web.metadata.uid.clone().expect("uid");
    let host = main_daemon(&env).await;
    let (trigger, shutdown) =
        stevedore::shutdown::Shutdown::manual(std::time::Duration::from_secs(25));
    let (client, recorded) = fake_api::start(&[serde_json::to_value(&web).expect("json")]);
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets: vec![target],
            containers: vec![web.clone()],
            shutdown: Some(shutdown),
            ..Default::default()
        },
        &ns,
    );
    container::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("create");
    let old = owned_by(&host, &uid).await;
    assert_eq!(old.len(), 1);

    wire.arm(call, 1, std::time::Duration::from_millis(500), move || {
        trigger.drain()
    });
    web.spec.env[0].value = Some("two".into());
    web.metadata.generation = Some(2);
    ctx.recorder.flush().await;
    recorded.clear();
    let _ = container::reconcile(Arc::new(web.clone()), ctx.clone()).await;
    assert!(
        wire.fired().is_some(),
        "the replacement never reached {call:?}"
    );
    let left = owned_by(&host, &uid).await;

    // Drained: a later reconcile starts nothing, and says nothing about it.
    ctx.recorder.flush().await;
    let events = recorded.events();
    ctx.recorder.flush().await;
    recorded.clear();
    let _ = container::reconcile(Arc::new(web.clone()), ctx.clone()).await;
    let ids = |list: &[stevedore::docker::HostContainer]| -> Vec<(String, String)> {
        list.iter()
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect()
    };
    assert_eq!(
        ids(&owned_by(&host, &uid).await),
        ids(&left),
        "an action ran after the drain"
    );
    ctx.recorder.flush().await;
    assert!(
        recorded
            .events()
            .iter()
            .all(|e| e["reason"] != "Replaced" && e["reason"] != "RolledBack"),
        "{:?}",
        recorded.events()
    );
    remove_all(&host, &uid).await;
    let _ = std::fs::remove_dir_all(&dir);
    (old[0].id.clone(), left, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_while_the_old_container_stops_rolls_back_with_an_event() {
    let (old, left, events) = drain_during_a_replacement(("POST", "/stop"), 1).await;
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_eq!(left[0].id, old, "the old container serves again");
    assert_eq!(left[0].state, stevedore::docker::ContainerState::Running);
    assert!(!left[0].name.contains("-replaced-"), "{left:#?}");
    let rolled_back: Vec<&Value> = events
        .iter()
        .filter(|e| e["reason"] == "RolledBack")
        .collect();
    assert_eq!(rolled_back.len(), 1, "{events:?}");
    assert_eq!(rolled_back[0]["type"], "Normal");
    let note = rolled_back[0]["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("shutting down") && note.contains("_web_0"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_while_the_new_container_starts_finishes_the_replacement() {
    let (old, left, events) = drain_during_a_replacement(("POST", "/start"), 3).await;
    assert_eq!(left.len(), 1, "{left:#?}");
    assert_ne!(left[0].id, old, "the new container serves");
    assert_eq!(left[0].state, stevedore::docker::ContainerState::Running);
    assert!(!left[0].name.contains("-replaced-"), "{left:#?}");
    assert!(
        events.iter().any(|e| e["reason"] == "Replaced"),
        "{events:?}"
    );
}

/// `GET path` over plain HTTP/1.1; returns the status line and the body.
async fn http_get(address: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[tokio::test]
async fn metrics_health_and_readiness_are_served() {
    let env = TestEnv::load();
    let ns = unique("ctl-metrics");
    let target = mk_target(&ns, "local", &env.get("MAIN_HOST"));
    let web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "local").finalized();
    let uid = web.metadata.uid.clone().expect("uid");
    let (ctx, _recorded) = setup(vec![target], &web, "ctl-metrics");
    container::reconcile(Arc::new(web), ctx.clone())
        .await
        .expect("reconcile");

    let listener = stevedore::controller::http::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = tokio::spawn(stevedore::controller::http::serve(
        listener,
        ctx.metrics.clone(),
        ready.clone(),
    ));
    assert_eq!(http_get(address, "/healthz").await.0, "HTTP/1.1 200 OK");
    assert_eq!(
        http_get(address, "/readyz").await.0,
        "HTTP/1.1 503 Service Unavailable"
    );
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(http_get(address, "/readyz").await.0, "HTTP/1.1 200 OK");
    let (status, metrics) = http_get(address, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    for expected in [
        "stevedore_reconciles_total{kind=\"DockerContainer\"} 1",
        "stevedore_containers{state=\"running\"} 1",
        &format!("stevedore_docker_calls_total{{target=\"{ns}/local\",call=\"create\"}} 1"),
        &format!(
            "stevedore_docker_call_seconds_total{{target=\"{ns}/local\",call=\"list_containers\"}}"
        ),
    ] {
        assert!(
            metrics.contains(expected),
            "{expected} missing from:\n{metrics}"
        );
    }
    server.abort();
    remove_all(&main_daemon(&env).await, &uid).await;
}

/// The whole controller — CRD check, leader election, the watches of five kinds, the three
/// reconcilers, Events — runs against the fake API server until every permission of
/// [`rbac::PERMISSIONS`] has been used, and uses nothing else: the ClusterRole asks for
/// exactly what the controller does.
#[tokio::test]
async fn the_running_controller_uses_every_permission_it_asks_for_and_no_other() {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};
    use stevedore::controller::context::Settings;
    use stevedore::controller::{LeaderElection, Options, run_with};

    let env = TestEnv::load();
    let ns = unique("rbac");
    let registry: stevedore::api::Registry = serde_json::from_value(json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "Registry",
        "metadata": {"name": "harness", "namespace": ns, "uid": unique("uid")},
        "spec": {"server": env.get("REGISTRY"),
                 "credentials": {"secretRef": {"name": "pull"}},
                 "ca": {"secretRef": {"name": "registry-ca"}}},
    }))
    .expect("registry fixture");
    let settings: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": ns},
        "data": {"greeting": "hello"},
    }))
    .expect("config map fixture");
    let mut web = mk_container(&ns, "web", &env.get("IMAGE_V1"), "main").finalized();
    web.spec.env = serde_json::from_value(json!([{"name": "GREETING",
        "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}}}]))
    .expect("env");
    // Without the finalizer: the first reconcile adds it.
    let fresh = mk_container(&ns, "fresh", &env.get("IMAGE_V1"), "main");
    // Its name is taken on the host: every retry fails with the same note, which the
    // Event recorder counts on one Event by patch.
    let clash = mk_container(&ns, "clash", &env.get("IMAGE_V1"), "main").finalized();
    let host = main_daemon(&env).await;
    let squatter = host
        .create(
            &format!("{ns}_clash_0"),
            bollard::models::ContainerCreateBody {
                image: Some(env.get("IMAGE_V1")),
                ..Default::default()
            },
        )
        .await
        .expect("a container holding the name");
    let mut objects = vec![
        serde_json::to_value(mk_target(&ns, "main", &env.get("MAIN_HOST"))).expect("json"),
        // Unreachable: its heartbeat repeats the same Warning, which Events count by patch.
        serde_json::to_value(mk_target(&ns, "gone", "unix:///nonexistent/docker.sock"))
            .expect("json"),
        // Without the finalizer: the first reconcile adds it.
        serde_json::to_value(DockerTarget {
            metadata: meta(&ns, "new"),
            ..mk_target(&ns, "new", &env.get("MAIN_HOST"))
        })
        .expect("json"),
        serde_json::to_value(&web).expect("json"),
        serde_json::to_value(&fresh).expect("json"),
        serde_json::to_value(&clash).expect("json"),
        serde_json::to_value(&registry).expect("json"),
        serde_json::to_value(&settings).expect("json"),
    ];
    for secret in [
        common::fixture::secret(
            &ns,
            "pull",
            &[
                ("username", env.get("REGISTRY_USER").into_bytes()),
                ("password", env.get("REGISTRY_PASSWORD").into_bytes()),
            ],
        ),
        common::fixture::secret(
            &ns,
            "registry-ca",
            &[(
                "ca.crt",
                std::fs::read(env.get("REGISTRY_CA")).expect("registry CA"),
            )],
        ),
    ] {
        let mut json = serde_json::to_value(secret).expect("json");
        json["apiVersion"] = json!("v1");
        json["kind"] = json!("Secret");
        objects.push(json);
    }
    let (client, recorded) = fake_api::start(&objects);
    let options = Options {
        namespace: Some(ns.clone()),
        leader_election: Some(LeaderElection {
            lease_name: "stevedore".into(),
            lease_namespace: ns.clone(),
            identity: "replica-a".into(),
        }),
        sharding: None,
        listen: "127.0.0.1:0".parse().expect("address"),
        settings: Settings {
            manager: unique("ctl-rbac"),
            heartbeat: Duration::from_secs(1),
            ..Settings::default()
        },
    };
    let controller = tokio::spawn(run_with(client, options));

    let asked: BTreeSet<(String, String, String)> = rbac::grants();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let used: BTreeSet<_> = recorded.all().iter().map(|c| c.rbac()).collect();
        let unused: Vec<_> = asked.difference(&used).collect();
        if unused.is_empty() {
            break;
        }
        assert!(
            !controller.is_finished(),
            "the controller stopped before using {unused:?}"
        );
        assert!(
            Instant::now() < deadline,
            "asked for but never used in a minute: {unused:?}\ncalls: {:#?}",
            recorded.all().iter().map(|c| c.line()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    controller.abort();
    assert_rbac_allows(&recorded);

    let _ = host.remove(&squatter, "the squatter").await;
    for uid in [&web, &fresh].map(|c| c.metadata.uid.clone().unwrap_or_default()) {
        for c in host.list_labelled(LABEL_UID, &uid).await.expect("list") {
            let _ = host.stop(&c.id, &c.name, Some(0)).await;
            let _ = host.remove(&c.id, &c.name).await;
        }
    }
}
