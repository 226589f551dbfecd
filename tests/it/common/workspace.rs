//! A standalone run's world for the integration tests: a manifests directory with its own
//! namespace and manager, the `stevedore` binary run on it, and what that run left on a
//! daemon.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use stevedore::docker::{DockerHost, HostContainer};
use stevedore::labels::LABEL_NAMESPACE;

use super::TestEnv;
use super::engines::Engine;
use super::fixture::unique;

/// One test's manifests directory, namespace and manager.
pub struct Workspace {
    /// The manifests directory.
    pub dir: PathBuf,
    /// The namespace of every object.
    pub namespace: String,
    /// The run's manager identity.
    pub manager: String,
}

impl Workspace {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("stevedore-manifests"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            dir,
            namespace: unique("ns"),
            manager: unique("manager"),
        }
    }

    pub fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.join(file), text).expect("write manifest");
    }

    /// `target.yaml`: a DockerTarget `main` for the machine's own daemon.
    pub fn write_main_target(&self, env: &TestEnv) {
        self.write_engine_target(env, Engine::Docker20);
    }

    /// `target.yaml`: a DockerTarget `main` for one of the harness's engines.
    pub fn write_engine_target(&self, env: &TestEnv, engine: Engine) {
        self.write("target.yaml", &target("main", &engine.address(env), "here"));
    }

    /// `edge-1.yaml` and `edge-2.yaml`: DockerTargets labelled `site: edge` for the
    /// machine's own daemon and the second one.
    pub fn write_edge_targets(&self, env: &TestEnv) {
        self.write(
            "edge-1.yaml",
            &target("edge-1", &env.get("MAIN_HOST"), "edge"),
        );
        self.write(
            "edge-2.yaml",
            &target("edge-2", &env.get("SECOND_HOST"), "edge"),
        );
    }

    pub fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.join(file)).expect("remove manifest");
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stevedore"));
        command.args(args).arg("--filename").arg(&self.dir).args([
            "--namespace",
            &self.namespace,
            "--manager",
            &self.manager,
        ]);
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run stevedore")
    }

    pub fn run_once(&self) -> Output {
        self.run(&["run", "--once", "--timeout", "60s", "--no-progress"])
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The test's containers on `host`.
pub async fn containers(host: &DockerHost, namespace: &str) -> Vec<HostContainer> {
    let mut list = host
        .list_labelled(LABEL_NAMESPACE, namespace)
        .await
        .expect("list");
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

/// Removes the test's containers from `host`.
pub async fn remove_all(host: &DockerHost, namespace: &str) {
    super::remove_labelled(host, LABEL_NAMESPACE, namespace).await;
}

/// A DockerTarget manifest for `endpoint`, labelled `site`.
pub fn target(name: &str, endpoint: &str, site: &str) -> String {
    format!(
        "apiVersion: stevedore.dev/v1alpha1\nkind: DockerTarget\nmetadata:\n  name: {name}\n  labels:\n    site: {site}\nspec:\n  endpoint: {endpoint}\n"
    )
}

/// The answer to `GET /` on a published port.
pub async fn http_get(port: i32) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port as u16))
        .await
        .expect("connect to the published port");
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .expect("send");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("read");
    body
}

/// A running `stevedore run` (watching), stopped with SIGINT on drop.
pub struct Watcher(pub std::process::Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY-free: the `kill` command sends SIGINT, as Ctrl-C would.
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// Polls `probe` until it gives a value, failing the test after `limit`.
pub async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return (value, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "{what} did not happen within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
