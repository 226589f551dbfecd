//! Helpers shared by the integration tests: the harness's addresses and JSON fixtures.
#![allow(dead_code)] // each test crate uses a different part of this module

pub mod cases;
pub mod chart;
pub mod cluster;
pub mod engines;
pub mod fake_api;
pub mod proxy;
pub mod sim;
pub mod tripwire;
pub mod workspace;

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;

/// Where `hack/test-env.sh` writes the addresses of what it started.
pub fn env_file() -> PathBuf {
    let dir =
        std::env::var("STEVEDORE_TEST_DIR").unwrap_or_else(|_| "/tmp/stevedore-test-env".into());
    PathBuf::from(dir).join("env")
}

/// The harness's addresses and credentials (`STEVEDORE_TEST_*`). Panics with the command to
/// run when the harness is not up: these tests talk to real daemons and never pretend.
pub struct TestEnv(HashMap<String, String>);

impl TestEnv {
    pub fn load() -> Self {
        let path = env_file();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the test harness is not up ({}: {e}); run `hack/test-env.sh up` first",
                path.display()
            )
        });
        let vars = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self(vars)
    }

    /// One variable, without its `STEVEDORE_TEST_` prefix, e.g. `get("TLS_HOST")`.
    pub fn get(&self, name: &str) -> String {
        let key = format!("STEVEDORE_TEST_{name}");
        self.0
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} missing from {}", env_file().display()))
    }
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// JSON merge patch (RFC 7386): `patch` over `base`; `null` removes a key.
pub fn merged(base: &Value, patch: &Value) -> Value {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            let mut out = base.clone();
            for (key, value) in patch {
                if value.is_null() {
                    out.remove(key);
                } else {
                    let next = merged(out.get(key).unwrap_or(&Value::Null), value);
                    out.insert(key.clone(), next);
                }
            }
            Value::Object(out)
        }
        (_, patch) => patch.clone(),
    }
}

/// Every YAML document of every `.yaml` file under `dir`, with the file it came from.
pub fn yaml_documents_under(dir: &std::path::Path) -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    collect_yaml_files(dir, &mut files);
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read example");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                documents.push((file.clone(), value));
            }
        }
    }
    documents
}

fn collect_yaml_files(dir: &std::path::Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect_yaml_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
}

/// The harness's transports, each as a target spec plus its Secret material.
pub mod hosts {
    use super::TestEnv;
    use stevedore::api::DockerTargetSpec;
    use stevedore::api::SecretSource;
    use stevedore::docker::{ConnectionMaterial, SshMaterial, TlsMaterial};

    fn read(path: &str) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A target spec for `endpoint`, with no Secrets and default settings.
    pub fn spec(endpoint: &str) -> DockerTargetSpec {
        DockerTargetSpec {
            endpoint: endpoint.to_string(),
            tls: None,
            ssh: None,
            allow_insecure: false,
            unschedulable: false,
            max_containers: 0,
        }
    }

    fn secret(name: &str) -> Option<SecretSource> {
        Some(SecretSource {
            secret_ref: stevedore::api::SecretReference { name: name.into() },
        })
    }

    /// The machine's own daemon over its unix socket.
    pub fn main(env: &TestEnv) -> (DockerTargetSpec, ConnectionMaterial) {
        (spec(&env.get("MAIN_HOST")), ConnectionMaterial::default())
    }

    /// The harness's second daemon over its unix socket.
    pub fn second(env: &TestEnv) -> (DockerTargetSpec, ConnectionMaterial) {
        (spec(&env.get("SECOND_HOST")), ConnectionMaterial::default())
    }

    /// TLS material trusting `ca` (a path) with the harness's client certificate.
    pub fn tls_material(env: &TestEnv, ca: &str) -> TlsMaterial {
        TlsMaterial {
            ca: read(ca),
            cert: read(&env.get("CLIENT_CERT")),
            key: read(&env.get("CLIENT_KEY")),
        }
    }

    /// The TLS daemon, trusting the harness CA.
    pub fn tls(env: &TestEnv) -> (DockerTargetSpec, ConnectionMaterial) {
        let mut spec = spec(&env.get("TLS_HOST"));
        spec.tls = secret("tls");
        let material = ConnectionMaterial {
            tls: Some(tls_material(env, &env.get("CA"))),
            ssh: None,
        };
        (spec, material)
    }

    /// ssh material with the harness's client key and known_hosts.
    pub fn ssh_material(env: &TestEnv) -> SshMaterial {
        SshMaterial {
            private_key: read(&env.get("SSH_KEY")),
            known_hosts: Some(read(&env.get("SSH_KNOWN_HOSTS"))),
        }
    }

    /// The ssh endpoint (which reaches the second daemon).
    pub fn ssh(env: &TestEnv) -> (DockerTargetSpec, ConnectionMaterial) {
        let mut spec = spec(&env.get("SSH_HOST"));
        spec.ssh = secret("ssh");
        let material = ConnectionMaterial {
            tls: None,
            ssh: Some(ssh_material(env)),
        };
        (spec, material)
    }
}

/// Building desired instances and isolating tests that share a daemon.
pub mod fixture {
    use std::sync::atomic::{AtomicU32, Ordering};

    use serde_json::Value;
    use stevedore::api::DockerContainerSpec;
    use stevedore::converge::engine::{DesiredSet, TargetIdentity, TargetMemory};
    use stevedore::converge::env::ResolvedEnv;
    use stevedore::converge::executor::Executor;
    use stevedore::converge::model::{DesiredInstance, InstanceContext, Owner, desired_instances};
    use stevedore::docker::DockerHost;
    use stevedore::labels::LABEL_TARGET;

    /// A Secret `namespace/name` holding `data`.
    pub fn secret(
        namespace: &str,
        name: &str,
        data: &[(&str, Vec<u8>)],
    ) -> k8s_openapi::api::core::v1::Secret {
        k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v.clone())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    /// A name no other test (or earlier run) uses: `prefix-<pid>-<n>`.
    pub fn unique(prefix: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A loopback port nothing listens on right now.
    pub fn free_port() -> i32 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        i32::from(listener.local_addr().expect("addr").port())
    }

    /// A DockerContainer spec from JSON (placement filled in).
    pub fn spec(json: Value) -> DockerContainerSpec {
        let mut json = json;
        if let Some(map) = json.as_object_mut() {
            map.entry("placement")
                .or_insert(serde_json::json!({"target": "t"}));
        }
        serde_json::from_value(json).expect("container spec")
    }

    /// A running converge loop: send new desired sets, read its reports.
    pub struct ConvergeLoop {
        /// The desired set it converges to.
        pub desired: tokio::sync::watch::Sender<std::sync::Arc<DesiredSet>>,
        /// One report per converge.
        pub reports: tokio::sync::mpsc::UnboundedReceiver<
            Result<stevedore::converge::engine::ConvergeReport, stevedore::docker::DockerError>,
        >,
        /// The loop's task.
        pub task: tokio::task::JoinHandle<()>,
    }

    impl ConvergeLoop {
        /// Asks for `instances` from now on.
        pub fn want(&self, instances: Vec<DesiredInstance>) {
            let _ = self.desired.send(std::sync::Arc::new(DesiredSet {
                instances: instances.into(),
                ..Default::default()
            }));
        }

        /// Ends the loop (closing its desired set) and waits for it, briefly.
        pub async fn stop(self) {
            drop(self.desired);
            drop(self.reports);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), self.task).await;
        }
    }

    /// One test's view of one target: its own target UID, so tests sharing a daemon never
    /// see each other's containers.
    pub struct Target {
        /// The connected daemon.
        pub host: DockerHost,
        /// The executor.
        pub executor: Executor,
        /// Target UID and manager.
        pub identity: TargetIdentity,
        /// Memory across converges.
        pub memory: TargetMemory,
        /// Namespace used for owners in this test.
        pub namespace: String,
    }

    impl Target {
        /// A fresh identity on `host`.
        pub fn new(host: DockerHost) -> Self {
            Self {
                executor: Executor::new(host.clone(), 4),
                host,
                identity: TargetIdentity {
                    uid: unique("target"),
                    manager: "stevedore-tests".into(),
                },
                memory: TargetMemory::default(),
                namespace: unique("ns"),
            }
        }

        /// The owner named `name` in this test's namespace.
        pub fn owner(&self, name: &str) -> Owner {
            Owner {
                namespace: self.namespace.clone(),
                name: name.into(),
                uid: format!("{}-{name}", self.namespace),
            }
        }

        /// Desired instances of `spec` for `replicas`, with the image's real ID.
        pub async fn instances(
            &self,
            name: &str,
            spec: &DockerContainerSpec,
            env: &ResolvedEnv,
            replicas: &[u32],
        ) -> Vec<DesiredInstance> {
            let identity = self
                .host
                .image_id(&spec.image)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| spec.image.clone());
            let ctx = InstanceContext {
                manager: &self.identity.manager,
                image: &spec.image,
                image_identity: &identity,
                pull_credentials: None,
                image_source: None,
                resolved: None,
                restarted_at: None,
            };
            desired_instances(
                &self.owner(name),
                spec,
                env,
                replicas,
                &self.identity.uid,
                &ctx,
            )
            .expect("instances")
        }

        /// Converges `instances` once.
        pub async fn converge(
            &mut self,
            instances: Vec<DesiredInstance>,
        ) -> stevedore::converge::engine::ConvergeReport {
            let desired = DesiredSet {
                instances: instances.into(),
                ..Default::default()
            };
            stevedore::converge::engine::converge_once(
                &self.host,
                &self.executor,
                &self.identity,
                &desired,
                &mut self.memory,
            )
            .await
            .expect("converge")
        }

        /// Whether a list of the daemon made now shows `instances` reached (see
        /// [`stevedore::converge::engine::reached`]).
        pub async fn reached(&self, instances: Vec<DesiredInstance>) -> bool {
            let desired = DesiredSet {
                instances: instances.into(),
                ..Default::default()
            };
            let listed = self.containers().await;
            stevedore::converge::engine::reached(
                &self.host,
                &self.identity,
                &desired,
                &self.memory,
                listed,
            )
            .await
        }

        /// This test's containers on the daemon.
        pub async fn containers(&self) -> Vec<stevedore::docker::HostContainer> {
            self.host
                .list_labelled(LABEL_TARGET, &self.identity.uid)
                .await
                .expect("list")
        }

        /// Starts the continuous converge loop (`run_target`) for `instances`.
        pub fn spawn_loop(
            &self,
            instances: Vec<DesiredInstance>,
            options: stevedore::converge::engine::LoopOptions,
        ) -> ConvergeLoop {
            let (desired, desired_rx) =
                tokio::sync::watch::channel(std::sync::Arc::new(DesiredSet {
                    instances: instances.into(),
                    ..Default::default()
                }));
            let (reports_tx, reports) = tokio::sync::mpsc::unbounded_channel();
            let task = tokio::spawn(stevedore::converge::engine::run_target(
                self.host.clone(),
                self.executor.clone(),
                self.identity.clone(),
                desired_rx,
                reports_tx,
                options,
            ));
            ConvergeLoop {
                desired,
                reports,
                task,
            }
        }

        /// Removes every container this test made.
        pub async fn cleanup(&self) {
            for c in self.containers().await {
                let _ = self.host.stop(&c.id, &c.name, Some(0)).await;
                let _ = self.host.remove(&c.id, &c.name).await;
            }
        }
    }
}

/// The containers that serve: all but the replicas' previous ones, which a replacement
/// keeps stopped for `logs --previous` (each checked to be stopped: a previous container
/// that runs would serve twice).
pub fn serving(
    list: Vec<stevedore::docker::HostContainer>,
) -> Vec<stevedore::docker::HostContainer> {
    let (previous, serving): (Vec<_>, Vec<_>) = list
        .into_iter()
        .partition(|c| c.name.ends_with("-previous"));
    for kept in &previous {
        assert_ne!(
            kept.state,
            stevedore::docker::ContainerState::Running,
            "a previous container runs: {kept:?}"
        );
    }
    serving
}

/// Stops and removes every container on `host` labelled `label=value`: a test's cleanup.
pub async fn remove_labelled(host: &stevedore::docker::DockerHost, label: &str, value: &str) {
    for c in host.list_labelled(label, value).await.expect("list") {
        let _ = host.stop(&c.id, &c.name, Some(0)).await;
        let _ = host.remove(&c.id, &c.name).await;
    }
}

/// Waiting for the daemons, and connecting to them.
/// The harness's registry.
pub mod registry {
    use std::process::Command;

    use super::TestEnv;

    /// Pushes a local image to the harness registry under `target`, with a private docker
    /// config (the machine's own login is not touched).
    pub fn push(env: &TestEnv, local: &str, target: &str) {
        let config = std::env::temp_dir().join(super::fixture::unique("docker-config"));
        std::fs::create_dir_all(&config).expect("config dir");
        let docker = |args: &[&str], stdin: Option<&str>| {
            let mut command = Command::new("docker");
            command.arg("--config").arg(&config).args(args);
            if stdin.is_some() {
                command.stdin(std::process::Stdio::piped());
            }
            let mut child = command.spawn().expect("docker CLI");
            if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
                use std::io::Write as _;
                input.write_all(text.as_bytes()).expect("stdin");
            }
            let status = child.wait().expect("docker");
            assert!(status.success(), "docker {args:?} failed");
        };
        let user = env.get("REGISTRY_USER");
        docker(
            &[
                "login",
                "-u",
                &user,
                "--password-stdin",
                &env.get("REGISTRY"),
            ],
            Some(&env.get("REGISTRY_PASSWORD")),
        );
        docker(&["tag", local, target], None);
        docker(&["push", target], None);
        let _ = std::fs::remove_dir_all(&config);
    }

    /// `registry/repository@digest` for what `tag` names now, asked of the registry
    /// directly (not through anything under test but the client).
    pub async fn pinned_image(env: &TestEnv, repository: &str, tag: &str) -> String {
        let registry: stevedore::api::RegistrySpec =
            serde_json::from_value(serde_json::json!({"server": env.get("REGISTRY")}))
                .expect("registry spec");
        let client = stevedore::registry::client::RegistryClient::new(
            &registry,
            Some(&std::fs::read(env.get("REGISTRY_CA")).expect("registry CA")),
            Some(&stevedore::docker::PullCredentials {
                username: env.get("REGISTRY_USER"),
                password: env.get("REGISTRY_PASSWORD"),
                server: env.get("REGISTRY"),
            }),
            std::time::Duration::from_secs(5),
        )
        .expect("registry client");
        let digest = client.digest(repository, tag).await.expect("digest");
        format!("{}/{repository}@{digest}", env.get("REGISTRY"))
    }
}

pub mod wait {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use stevedore::api::DockerTargetSpec;
    use stevedore::docker::{
        ConnectOptions, ConnectionMaterial, DockerHost, HostContainer, connect,
    };

    /// Connects to one of the harness's transports (see [`super::hosts`]).
    pub async fn connected(pair: (DockerTargetSpec, ConnectionMaterial)) -> DockerHost {
        connect(&pair.0, &pair.1, ConnectOptions::default())
            .await
            .expect("connect")
    }

    /// Polls (every 100 ms, at most `limit`) until `check` holds for the containers
    /// carrying `label`; panics naming `what` otherwise.
    pub async fn until(
        host: &DockerHost,
        label: (&str, &str),
        limit: Duration,
        what: &str,
        check: impl Fn(&[HostContainer]) -> bool,
    ) -> Vec<HostContainer> {
        let started = Instant::now();
        loop {
            if let Ok(list) = host.list_labelled(label.0, label.1).await
                && check(&list)
            {
                return list;
            }
            assert!(
                started.elapsed() < limit,
                "{what} did not happen within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether no two containers share a name.
    pub fn no_duplicate_names(list: &[HostContainer]) -> bool {
        let names: HashSet<&str> = list.iter().map(|c| c.name.as_str()).collect();
        names.len() == list.len()
    }
}
