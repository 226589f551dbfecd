//! Secret values never leak. Every kind of secret material Stevedore handles — a registry
//! password (right and wrong), a TLS client key, an ssh private key and an env value from a
//! Secret — is used for real against the harness's TLS daemon, ssh endpoint and
//! authenticated registry, with logging turned all the way up; then the logs, every
//! Kubernetes API call (status, Events, finalizer patches), `stevedore run`/`plan`/`status`
//! output and the containers' labels are searched for each value.
//!
//! This file is one test binary so that its global log subscriber sees every thread.

use crate::common;
use crate::common::fake_api;

use std::io::Write;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::TestEnv;
use common::fixture::{secret, unique};
use common::wait::connected;
use fake_api::World;
use serde_json::{Value, json};
use stevedore::api::{DockerContainer, DockerTarget, Registry};
use stevedore::controller::{container, registry, target};
use stevedore::docker::{DockerHost, HostContainer};
use stevedore::labels::{LABEL_NAMESPACE, LABEL_UID};

/// The `RUST_LOG` a person debugging a host would set.
const VERBOSE: &str = "debug,stevedore=trace";

/// What the process logged with [`VERBOSE`], through the filter the binary uses, with
/// records of the `log` crate (which the Docker client logs through) bridged in as the
/// binary's subscriber does.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter(stevedore::logging::filter(Some(VERBOSE), "info"))
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init()
            .expect("the only subscriber, with the log bridge");
        logs
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The secret values a test hands Stevedore, each with what it is, and the forms it could
/// leak in (a basic-auth header carries `user:password` in base64).
struct Needles(Vec<(String, String)>);

impl Needles {
    fn new(env: &TestEnv, token: &str, wrong_password: &str) -> Self {
        let user = env.get("REGISTRY_USER");
        let password = env.get("REGISTRY_PASSWORD");
        let mut needles = vec![
            ("the registry password".to_string(), password.clone()),
            (
                "the registry basic-auth header".to_string(),
                BASE64.encode(format!("{user}:{password}")),
            ),
            (
                "the wrong registry password".to_string(),
                wrong_password.to_string(),
            ),
            (
                "the wrong basic-auth header".to_string(),
                BASE64.encode(format!("{user}:{wrong_password}")),
            ),
            ("the env Secret value".to_string(), token.to_string()),
        ];
        for (what, file) in [
            ("the TLS client key", "CLIENT_KEY"),
            ("the ssh private key", "SSH_KEY"),
        ] {
            let pem = std::fs::read_to_string(env.get(file)).expect("key file");
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            // Any 40 characters of the key's body would be a leak; these are its first.
            needles.push((what.to_string(), body.chars().take(40).collect()));
            needles.push((format!("{what}, base64"), BASE64.encode(&pem)[..40].into()));
        }
        Self(needles)
    }

    /// Fails naming the value and where it was found, with the text around it (the value
    /// itself masked).
    fn assert_absent(&self, place: &str, haystack: &str) {
        for (what, value) in &self.0 {
            if let Some(at) = haystack.find(value.as_str()) {
                let line_start = haystack[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = haystack[at..].find('\n').map_or(haystack.len(), |i| at + i);
                let line = haystack[line_start..line_end].replace(value.as_str(), "<SECRET>");
                panic!("{what} appears in {place}: {line}");
            }
        }
    }
}

fn object<T: kube::Resource + serde::de::DeserializeOwned>(json: Value) -> T {
    let mut object: T = serde_json::from_value(json).expect("fixture");
    object.meta_mut().uid = Some(unique("uid"));
    object.meta_mut().generation = Some(1);
    object
}

/// Every label of every container on `host` carrying `label=value`, as one text.
async fn labels_text(host: &DockerHost, label: &str, value: &str) -> (Vec<HostContainer>, String) {
    let listed = host.list_labelled(label, value).await.expect("list");
    let text = listed
        .iter()
        .flat_map(|c| c.labels.iter())
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    (listed, text)
}

async fn remove(host: &DockerHost, containers: &[HostContainer]) {
    for c in containers {
        let _ = host.stop(&c.id, &c.name, Some(0)).await;
        let _ = host.remove(&c.id, &c.name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_never_logs_reports_or_labels_a_secret_value() {
    let logs = captured_logs();
    let env = TestEnv::load();
    let ns = unique("secrets");
    let token = unique("env-token-value");
    let wrong_password = unique("wrong-password");
    let needles = Needles::new(&env, &token, &wrong_password);
    let read = |key: &str| std::fs::read(env.get(key)).expect("harness file");

    let edge: DockerTarget = object(json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
        "metadata": {"name": "edge", "namespace": ns, "finalizers": [target::FINALIZER]},
        "spec": {"endpoint": env.get("TLS_HOST"), "tls": {"secretRef": {"name": "edge-tls"}}},
    }));
    let registry_of = |name: &str, credentials: &str| -> Registry {
        object(json!({
            "apiVersion": "stevedore.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"server": env.get("REGISTRY"),
                     "credentials": {"secretRef": {"name": credentials}},
                     "ca": {"secretRef": {"name": "registry-ca"}}},
        }))
    };
    let harness = registry_of("harness", "pull");
    let wrong = registry_of("wrong", "wrong-pull");
    // `app` pulls with the right password and takes a Secret into its env; `denied` is
    // made to pull with the wrong one, so the failure paths log and report too.
    let app: DockerContainer = object(json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
        "metadata": {"name": "app", "namespace": ns, "finalizers": [container::FINALIZER]},
        "spec": {"image": env.get("REGISTRY_IMAGE_V1"), "imagePullPolicy": "Always",
                 "registryRef": {"name": "harness"},
                 "command": ["sleep", "3600"], "stopTimeoutSeconds": 1,
                 "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "app", "key": "token"}}}],
                 "placement": {"target": "edge"}},
    }));
    let denied: DockerContainer = object(json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
        "metadata": {"name": "denied", "namespace": ns, "finalizers": [container::FINALIZER]},
        "spec": {"image": env.get("REGISTRY_IMAGE_V2"), "imagePullPolicy": "Always",
                 "registryRef": {"name": "wrong"}, "stopTimeoutSeconds": 1,
                 "placement": {"target": "edge"}},
    }));
    let user = env.get("REGISTRY_USER").into_bytes();
    let world = World {
        targets: vec![edge.clone()],
        containers: vec![app.clone(), denied.clone()],
        registries: vec![harness.clone(), wrong.clone()],
        secrets: vec![
            secret(
                &ns,
                "edge-tls",
                &[
                    ("ca.crt", read("CA")),
                    ("tls.crt", read("CLIENT_CERT")),
                    ("tls.key", read("CLIENT_KEY")),
                ],
            ),
            secret(
                &ns,
                "pull",
                &[
                    ("username", user.clone()),
                    ("password", env.get("REGISTRY_PASSWORD").into_bytes()),
                ],
            ),
            secret(
                &ns,
                "wrong-pull",
                &[
                    ("username", user),
                    ("password", wrong_password.clone().into_bytes()),
                ],
            ),
            secret(&ns, "registry-ca", &[("ca.crt", read("REGISTRY_CA"))]),
            secret(&ns, "app", &[("token", token.clone().into_bytes())]),
        ],
        ..Default::default()
    };
    let objects: Vec<Value> = [
        serde_json::to_value(&edge),
        serde_json::to_value(&harness),
        serde_json::to_value(&wrong),
        serde_json::to_value(&app),
        serde_json::to_value(&denied),
    ]
    .into_iter()
    .map(|o| o.expect("json"))
    .collect();
    let (client, recorded) = fake_api::start(&objects);
    let (ctx, _signals) = fake_api::context(client, world, &ns);

    target::reconcile(Arc::new(edge), ctx.clone())
        .await
        .expect("target");
    for object in [&harness, &wrong] {
        registry::reconcile(Arc::new(object.clone()), ctx.clone())
            .await
            .expect("registry");
    }
    for object in [&app, &denied] {
        container::reconcile(Arc::new(object.clone()), ctx.clone())
            .await
            .expect("container");
    }

    // The secrets were really used: the TLS daemon is reached, the right password pulled
    // and started `app` with its env, the wrong one was refused.
    let host = connected(common::hosts::tls(&env)).await;
    let uid = app.metadata.uid.clone().expect("uid");
    let (running, labels) = labels_text(&host, LABEL_UID, &uid).await;
    assert_eq!(running.len(), 1, "app runs on the TLS daemon");
    let container_env = Command::new("docker")
        .args(["-H", &env.get("TLS_UNIX_HOST"), "inspect", "--format"])
        .arg("{{json .Config.Env}}")
        .arg(&running[0].id)
        .output()
        .expect("docker inspect");
    assert!(
        String::from_utf8_lossy(&container_env.stdout).contains(&format!("TOKEN={token}")),
        "the env value reached the container (where it belongs)"
    );
    let calls = recorded.all();
    let statuses: Vec<&Value> = calls
        .iter()
        .filter(|c| c.path.ends_with("/status"))
        .map(|c| &c.body)
        .collect();
    assert!(
        statuses
            .iter()
            .any(|s| s.to_string().contains("Unauthorized")),
        "the wrong password was refused: {statuses:?}"
    );
    let log_text = String::from_utf8_lossy(&logs.lock().expect("logs")).to_string();
    assert!(
        log_text.contains("TRACE") || log_text.contains("DEBUG"),
        "logging at debug was captured"
    );

    for call in &calls {
        needles.assert_absent(&format!("API call {}", call.line()), &call.body.to_string());
    }
    needles.assert_absent("the controller's logs", &log_text);
    needles.assert_absent("the container's labels", &labels);

    remove(&host, &running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stevedore_run_plan_and_status_never_print_a_secret_value() {
    let env = TestEnv::load();
    let ns = unique("secrets-run");
    let manager = unique("manager");
    let token = unique("env-token-value");
    let wrong_password = unique("wrong-password");
    let needles = Needles::new(&env, &token, &wrong_password);
    let encoded = |key: &str| BASE64.encode(std::fs::read(env.get(key)).expect("harness file"));
    let dir = std::env::temp_dir().join(unique("stevedore-secrets"));
    std::fs::create_dir_all(&dir).expect("dir");
    let user = env.get("REGISTRY_USER");
    let manifests = format!(
        r#"apiVersion: v1
kind: Secret
metadata: {{name: edge-tls}}
data: {{ca.crt: {ca}, tls.crt: {cert}, tls.key: {key}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: edge-ssh}}
data: {{ssh-privatekey: {ssh_key}, known_hosts: {known_hosts}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: pull}}
type: kubernetes.io/basic-auth
stringData: {{username: {user}, password: {password}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: wrong-pull}}
type: kubernetes.io/basic-auth
stringData: {{username: {user}, password: {wrong_password}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: registry-ca}}
data: {{ca.crt: {registry_ca}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: app}}
stringData: {{token: {token}}}
---
apiVersion: stevedore.dev/v1alpha1
kind: DockerTarget
metadata: {{name: edge}}
spec: {{endpoint: "{tls_host}", tls: {{secretRef: {{name: edge-tls}}}}}}
---
apiVersion: stevedore.dev/v1alpha1
kind: DockerTarget
metadata: {{name: remote}}
spec: {{endpoint: "{ssh_host}", ssh: {{secretRef: {{name: edge-ssh}}}}}}
---
apiVersion: stevedore.dev/v1alpha1
kind: Registry
metadata: {{name: harness}}
spec: {{server: "{registry}", credentials: {{secretRef: {{name: pull}}}}, ca: {{secretRef: {{name: registry-ca}}}}}}
---
apiVersion: stevedore.dev/v1alpha1
kind: Registry
metadata: {{name: wrong}}
spec: {{server: "{registry}", credentials: {{secretRef: {{name: wrong-pull}}}}, ca: {{secretRef: {{name: registry-ca}}}}}}
---
apiVersion: stevedore.dev/v1alpha1
kind: DockerContainer
metadata: {{name: app}}
spec:
  image: "{image_v1}"
  imagePullPolicy: Always
  registryRef: {{name: harness}}
  command: [sleep, "3600"]
  stopTimeoutSeconds: 1
  env: [{{name: TOKEN, valueFrom: {{secretKeyRef: {{name: app, key: token}}}}}}]
  placement: {{target: edge}}
---
apiVersion: stevedore.dev/v1alpha1
kind: DockerContainer
metadata: {{name: over-ssh}}
spec:
  image: "{image_v1}"
  imagePullPolicy: Always
  registryRef: {{name: harness}}
  command: [sleep, "3600"]
  stopTimeoutSeconds: 1
  env: [{{name: TOKEN, valueFrom: {{secretKeyRef: {{name: app, key: token}}}}}}]
  placement: {{target: remote}}
---
apiVersion: stevedore.dev/v1alpha1
kind: DockerContainer
metadata: {{name: denied}}
spec:
  image: "{image_v2}"
  imagePullPolicy: Always
  registryRef: {{name: wrong}}
  stopTimeoutSeconds: 1
  placement: {{target: edge}}
"#,
        ca = encoded("CA"),
        cert = encoded("CLIENT_CERT"),
        key = encoded("CLIENT_KEY"),
        ssh_key = encoded("SSH_KEY"),
        known_hosts = encoded("SSH_KNOWN_HOSTS"),
        password = env.get("REGISTRY_PASSWORD"),
        registry_ca = encoded("REGISTRY_CA"),
        tls_host = env.get("TLS_HOST"),
        ssh_host = env.get("SSH_HOST"),
        registry = env.get("REGISTRY"),
        image_v1 = env.get("REGISTRY_IMAGE_V1"),
        image_v2 = env.get("REGISTRY_IMAGE_V2"),
    );
    std::fs::write(dir.join("fleet.yaml"), manifests).expect("manifests");
    let stevedore = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stevedore"))
            .args(args)
            .arg("-f")
            .arg(&dir)
            .args(["--namespace", &ns, "--manager", &manager])
            .env("RUST_LOG", VERBOSE)
            .output()
            .expect("run stevedore")
    };
    let run = stevedore(&["run", "--once", "--timeout", "20s", "--no-progress"]);
    let plan = stevedore(&["plan"]);
    let status = stevedore(&["status", "-o", "yaml"]);
    let printed = |output: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };

    // The secrets were really used: `app` runs on the TLS daemon, `over-ssh` on the daemon
    // behind ssh, and `denied` failed on the wrong password (so `run` exits 1).
    assert_eq!(run.status.code(), Some(1), "{}", printed(&run));
    assert!(
        printed(&status).contains("denied"),
        "status names the failing container"
    );
    let tls = connected(common::hosts::tls(&env)).await;
    let over_ssh = connected(common::hosts::second(&env)).await;
    let (on_tls, tls_labels) = labels_text(&tls, LABEL_NAMESPACE, &ns).await;
    let (on_ssh, ssh_labels) = labels_text(&over_ssh, LABEL_NAMESPACE, &ns).await;
    assert_eq!(on_tls.len(), 1, "app on the TLS daemon: {}", printed(&run));
    assert_eq!(on_ssh.len(), 1, "over-ssh on the daemon behind ssh");

    for (what, output) in [("run", &run), ("plan", &plan), ("status", &status)] {
        needles.assert_absent(&format!("`stevedore {what}` output"), &printed(output));
    }
    needles.assert_absent("the containers' labels", &(tls_labels + &ssh_labels));

    remove(&tls, &on_tls).await;
    remove(&over_ssh, &on_ssh).await;
    let _ = std::fs::remove_dir_all(&dir);
}
