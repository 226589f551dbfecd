//! The Argo CD health checks in `examples/gitops/platform/argocd/health.yaml`, run under a
//! real Lua 5.1 interpreter (what Argo CD embeds), and Flux's kstatus (gated: see
//! [`kstatus`]), against status objects the controller really wrote — its reconcilers
//! against the fake API server and the real daemon — for a ready container, one waiting
//! for its health check, one half-way through a rollout, one degraded by an unreachable
//! target, a spec the controller has not seen yet, and a reachable and an unreachable
//! target.

use crate::common;
use crate::common::fake_api;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::TestEnv;
use common::fixture::unique;
use fake_api::World;
use serde_json::{Value, json};
use stevedore::api::{DockerContainer, DockerTarget};
use stevedore::controller::{container, target};
use stevedore::labels::LABEL_UID;

/// The health script for `kind` from the example ConfigMap.
fn script(kind: &str) -> String {
    let path = common::repo_root().join("examples/gitops/platform/argocd/health.yaml");
    let text = std::fs::read_to_string(&path).expect("health.yaml");
    let config: Value = serde_yaml_ng::from_str(&text).expect("YAML");
    config["data"][format!("resource.customizations.health.stevedore.dev_{kind}")]
        .as_str()
        .unwrap_or_else(|| panic!("no health check for {kind} in {}", path.display()))
        .to_string()
}

/// `value` as a Lua expression, as Argo CD hands objects to its scripts: objects become
/// tables keyed by field name, arrays tables indexed from 1, null nothing.
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut quoted = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => quoted.push_str("\\\""),
                    '\\' => quoted.push_str("\\\\"),
                    c if (c as u32) < 0x20 => quoted.push_str(&format!("\\{:03}", c as u32)),
                    c => quoted.push(c),
                }
            }
            quoted.push('"');
            quoted
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("[{}] = {}", lua(&Value::String(k.clone())), lua(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Runs the health check of `kind` on `object` with `lua5.1`; its status and message.
fn argo_health(kind: &str, object: &Value) -> (String, String) {
    let program = format!(
        "local obj = {}\nlocal function health()\n{}\nend\nlocal hs = health()\n\
         io.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua(object),
        script(kind)
    );
    let mut child = Command::new("lua5.1")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lua5.1 (hack/test-env.sh installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(program.as_bytes())
        .expect("write the program");
    let output = child.wait_with_output().expect("lua5.1");
    assert!(
        output.status.success(),
        "lua5.1 failed: {}\n{program}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (status, message) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

fn target_object(namespace: &str, name: &str, endpoint: &str) -> DockerTarget {
    serde_json::from_value(json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
        "metadata": {"name": name, "namespace": namespace, "uid": unique("uid"), "generation": 1,
                     "finalizers": [target::FINALIZER]},
        "spec": {"endpoint": endpoint},
    }))
    .expect("target")
}

fn container_object(namespace: &str, name: &str, spec: Value) -> DockerContainer {
    serde_json::from_value(json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
        "metadata": {"name": name, "namespace": namespace, "uid": unique("uid"), "generation": 1,
                     "finalizers": [container::FINALIZER]},
        "spec": spec,
    }))
    .expect("container")
}

/// Reconciles `container` once (targets `targets`) and returns it as the API server would
/// hold it afterwards: the object with the status the controller wrote.
async fn reconciled(targets: Vec<DockerTarget>, container: DockerContainer) -> Value {
    let mut object = serde_json::to_value(&container).expect("json");
    let (client, recorded) = fake_api::start(std::slice::from_ref(&object));
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets,
            containers: vec![container.clone()],
            ..Default::default()
        },
        &unique("argo"),
    );
    let _ = container::reconcile(Arc::new(container), ctx).await;
    object["status"] = last_status(&recorded);
    object
}

fn last_status(recorded: &fake_api::Recorded) -> Value {
    recorded
        .all()
        .into_iter()
        .rfind(|c| c.path.ends_with("/status"))
        .map(|c| c.body["status"].clone())
        .expect("the controller wrote a status")
}

async fn remove_owned(env: &TestEnv, object: &Value) {
    let host = common::wait::connected(common::hosts::main(env)).await;
    let uid = object["metadata"]["uid"].as_str().unwrap_or_default();
    common::remove_labelled(&host, LABEL_UID, uid).await;
}

/// A container ready on the main daemon.
async fn ready_container(env: &TestEnv) -> Value {
    let ns = unique("health-ready");
    let local = target_object(&ns, "local", &env.get("MAIN_HOST"));
    let web = container_object(
        &ns,
        "web",
        json!({"image": env.get("IMAGE_V1"), "placement": {"target": "local"},
               "stopTimeoutSeconds": 1}),
    );
    reconciled(vec![local], web).await
}

/// A container whose first health verdict comes after 30 s: its status says "starting".
async fn starting_container(env: &TestEnv) -> Value {
    let ns = unique("health-starting");
    let local = target_object(&ns, "local", &env.get("MAIN_HOST"));
    let web = container_object(
        &ns,
        "web",
        json!({"image": env.get("IMAGE_V1"), "placement": {"target": "local"},
               "stopTimeoutSeconds": 1,
               "healthCheck": {"command": ["true"], "intervalSeconds": 30}}),
    );
    reconciled(vec![local], web).await
}

/// Two replicas on one target, the spec edited and one reconcile run: RollingUpdate
/// replaced one, the other waits its turn — every replica ready, one of two updated.
async fn rolling_container(env: &TestEnv) -> Value {
    let ns = unique("health-rolling");
    let mut local = target_object(&ns, "local", &env.get("MAIN_HOST"));
    local.metadata.labels = Some([("site".to_string(), "here".to_string())].into());
    let spec = |mode: &str| {
        json!({"image": env.get("IMAGE_V1"), "stopTimeoutSeconds": 1,
               "env": [{"name": "MODE", "value": mode}],
               "placement": {"targetSelector": {"matchLabels": {"site": "here"}}, "replicas": 2}})
    };
    let web = container_object(&ns, "web", spec("blue"));
    let mut object = serde_json::to_value(&web).expect("json");
    // One controller context for both reconciles, as in a running controller.
    let (client, recorded) = fake_api::start(std::slice::from_ref(&object));
    let (ctx, _signals) = fake_api::context(
        client,
        World {
            targets: vec![local],
            containers: vec![web.clone()],
            ..Default::default()
        },
        &ns,
    );
    container::reconcile(Arc::new(web.clone()), ctx.clone())
        .await
        .expect("create");
    let mut edited = web;
    edited.spec = serde_json::from_value(spec("green")).expect("spec");
    edited.metadata.generation = Some(2);
    object["metadata"]["generation"] = json!(2);
    container::reconcile(Arc::new(edited), ctx)
        .await
        .expect("roll");
    object["status"] = last_status(&recorded);
    object
}

/// A container placed on a target nothing answers at.
async fn unreachable_container() -> Value {
    let ns = unique("health-degraded");
    let gone = target_object(&ns, "gone", &format!("unix:///tmp/{ns}-no-daemon.sock"));
    let web = container_object(
        &ns,
        "web",
        json!({"image": "stevedore-test/busybox:v1", "placement": {"target": "gone"}}),
    );
    reconciled(vec![gone], web).await
}

/// A reachable and an unreachable target after one heartbeat each.
async fn heartbeat_targets(env: &TestEnv) -> [Value; 2] {
    let ns = unique("health-targets");
    let local = target_object(&ns, "local", &env.get("MAIN_HOST"));
    let gone = target_object(&ns, "gone", &format!("unix:///tmp/{ns}-no-daemon.sock"));
    let mut objects = Vec::new();
    for object in [local, gone] {
        let mut value = serde_json::to_value(&object).expect("json");
        let (client, recorded) = fake_api::start(std::slice::from_ref(&value));
        let (ctx, _signals) = fake_api::context(
            client,
            World {
                targets: vec![object.clone()],
                ..Default::default()
            },
            "health-targets",
        );
        target::reconcile(Arc::new(object), ctx)
            .await
            .expect("heartbeat");
        value["status"] = last_status(&recorded);
        objects.push(value);
    }
    [objects.remove(0), objects.remove(0)]
}

#[tokio::test]
async fn a_ready_container_is_healthy_and_a_newer_spec_is_progressing() {
    let env = TestEnv::load();
    let mut object = ready_container(&env).await;
    let (status, message) = argo_health("DockerContainer", &object);
    assert_eq!(status, "Healthy", "{message}\n{object:#}");
    assert_eq!(message, "1 of 1 replicas ready");

    // An edit the controller has not reconciled yet.
    object["metadata"]["generation"] = json!(2);
    let (status, message) = argo_health("DockerContainer", &object);
    assert_eq!(status, "Progressing", "{message}");
    assert!(message.contains("not seen the latest spec"), "{message}");
    remove_owned(&env, &object).await;
}

#[tokio::test]
async fn a_container_waiting_for_its_health_check_is_progressing() {
    let env = TestEnv::load();
    let object = starting_container(&env).await;
    let (status, message) = argo_health("DockerContainer", &object);
    assert_eq!(status, "Progressing", "{message}\n{object:#}");
    assert_eq!(message, "0 of 1 replicas ready");
    remove_owned(&env, &object).await;
}

#[tokio::test]
async fn a_rollout_half_done_is_progressing_though_every_replica_is_ready() {
    let env = TestEnv::load();
    let object = rolling_container(&env).await;
    let conditions = &object["status"]["conditions"];
    assert!(
        conditions
            .to_string()
            .contains(r#""message":"2 of 2 replicas ready""#),
        "every replica still serves: {conditions:#}"
    );
    let (status, message) = argo_health("DockerContainer", &object);
    assert_eq!(status, "Progressing", "{message}\n{object:#}");
    assert_eq!(message, "1 of 2 replicas run the current spec");
    remove_owned(&env, &object).await;
}

#[tokio::test]
async fn a_container_on_an_unreachable_target_is_degraded_saying_why() {
    let object = unreachable_container().await;
    let (status, message) = argo_health("DockerContainer", &object);
    assert_eq!(status, "Degraded", "{message}\n{object:#}");
    assert!(
        message.contains("target gone") && message.contains("Unreachable"),
        "{message}"
    );
}

#[tokio::test]
async fn targets_are_healthy_when_their_daemon_answers_and_degraded_when_not() {
    let env = TestEnv::load();
    let [local, gone] = heartbeat_targets(&env).await;
    for (value, expected, says) in [
        (local, "Healthy", "Connected"),
        (gone, "Degraded", "Unreachable"),
    ] {
        let (status, message) = argo_health("DockerTarget", &value);
        assert_eq!(status, expected, "{message}\n{value:#}");
        assert!(message.starts_with(says), "{message}");
    }
    // Before the first heartbeat, a target is on its way.
    let ns = unique("health-new");
    let fresh = serde_json::to_value(target_object(&ns, "new", "unix:///x.sock")).expect("json");
    assert_eq!(argo_health("DockerTarget", &fresh).0, "Progressing");
}

/// How kstatus — the library Flux's health checks use (`sigs.k8s.io/cli-utils`,
/// `pkg/kstatus/status`) — reads `object`, through the program `STEVEDORE_KSTATUS_CHECK`
/// names: it reads one object as JSON on stdin and prints `<Status>\t<message>` from
/// `status.Compute`. Go's module proxy is out of reach here, so the program is built
/// outside the repository, from a kstatus source snapshot.
fn kstatus(object: &Value) -> (String, String) {
    let program = std::env::var("STEVEDORE_KSTATUS_CHECK").unwrap_or_else(|_| {
        panic!(
            "set STEVEDORE_KSTATUS_CHECK to a program that prints kstatus's status.Compute \
             of the object on its stdin (`<Status>\\t<message>`)"
        )
    });
    let mut child = Command::new(&program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(object.to_string().as_bytes())
        .expect("write the object");
    let output = child.wait_with_output().expect("kstatus");
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string();
    let (status, message) = text.split_once('\t').unwrap_or((&text, ""));
    (status.to_string(), message.to_string())
}

#[tokio::test]
#[ignore = "needs kstatus: set STEVEDORE_KSTATUS_CHECK (see `kstatus` in this file) and pass --ignored"]
async fn flux_kstatus_reads_the_same_statuses_as_the_readme_says() {
    let env = TestEnv::load();
    let ready = ready_container(&env).await;
    assert_eq!(
        kstatus(&ready),
        ("Current".into(), "Resource is Ready".into())
    );
    let mut unseen = ready.clone();
    unseen["metadata"]["generation"] = json!(2);
    assert_eq!(kstatus(&unseen).0, "InProgress");
    let starting = starting_container(&env).await;
    assert_eq!(kstatus(&starting).0, "InProgress", "{starting:#}");
    let rolling = rolling_container(&env).await;
    assert_eq!(
        kstatus(&rolling),
        (
            "InProgress".into(),
            "1 of 2 replicas run the current spec".into()
        ),
        "{rolling:#}"
    );
    let degraded = unreachable_container().await;
    let (status, message) = kstatus(&degraded);
    assert_eq!(status, "Failed", "{degraded:#}");
    assert!(message.contains("Unreachable"), "{message}");
    let [local, gone] = heartbeat_targets(&env).await;
    assert_eq!(kstatus(&local).0, "Current", "{local:#}");
    assert_eq!(kstatus(&gone).0, "Failed", "{gone:#}");
    for object in [&ready, &starting, &rolling] {
        remove_owned(&env, object).await;
    }
}
