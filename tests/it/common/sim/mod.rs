//! A fleet of simulated Docker daemons in one process, for benchmarks at a scale no machine
//! here can run for real (a thousand hosts), as KWOK simulates kubelets. Each daemon
//! serves the Engine API calls Stevedore and the docker CLI make (ping, version, info,
//! containers list/create/start/stop/kill/rename/update/remove/inspect/logs, images
//! list/inspect/pull, events) on its own unix socket, with per-call latencies from a
//! [`Profile`] taken from the real daemon's floor.
//!
//! Honest by contract: the converge scenarios that run against the real engines run,
//! unchanged, against a simulated daemon too (`Engine::Simulated`), and must pass there; a
//! behaviour it gets wrong is a bug in it. Never part of the product.

pub mod api;
pub mod daemon;
pub mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use daemon::{Daemon, Image, Refusal};

use super::TestEnv;

/// Per-call latency of a simulated daemon.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    per_call: HashMap<&'static str, Duration>,
}

impl Profile {
    /// No latency at all.
    pub fn instant() -> Self {
        Self::default()
    }

    /// Docker 20.10's per-call floor on this kind of machine (one call at a time, busybox
    /// containers): what the converge benchmark's floor divides into per-call costs.
    pub fn docker_floor() -> Self {
        Self::from_millis(&[
            ("create", 40),
            ("start", 110),
            ("stop", 20),
            ("kill", 20),
            ("remove", 30),
            ("rename", 5),
            ("update", 5),
            ("list", 3),
            ("inspect", 2),
            ("images", 2),
            ("pull", 60),
            ("logs", 3),
            ("version", 1),
        ])
    }

    /// A profile from `(call, milliseconds)` pairs; calls not named cost nothing.
    pub fn from_millis(pairs: &[(&'static str, u64)]) -> Self {
        Self {
            per_call: pairs
                .iter()
                .map(|(call, ms)| (*call, Duration::from_millis(*ms)))
                .collect(),
        }
    }

    /// The latency of `call`.
    pub fn latency(&self, call: &str) -> Duration {
        self.per_call.get(call).copied().unwrap_or_default()
    }
}

/// An image a registry serves: its content and manifest digest.
#[derive(Clone, Debug)]
pub struct Published {
    /// What a pull puts on the daemon.
    pub image: Image,
    /// `sha256:…` of the manifest.
    pub digest: String,
}

/// The registries every simulated daemon can pull from: references, digests and the
/// credentials each registry host requires.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// `host/repository:tag` → what it serves.
    pub catalog: HashMap<String, Published>,
    /// Registry host → `(user, password)` it requires.
    pub credentials: HashMap<String, (String, String)>,
}

impl Registry {
    /// Answers a pull of `reference` (a tag or a digest) with `auth` as Docker reports it.
    pub fn pull(
        &self,
        reference: &str,
        auth: Option<(String, String)>,
    ) -> Result<Published, Refusal> {
        let host = reference.split('/').next().unwrap_or_default();
        let registry_host = if reference.contains('/') && (host.contains('.') || host.contains(':'))
        {
            host.to_string()
        } else {
            "registry-1.docker.io".to_string()
        };
        if let Some(required) = self.credentials.get(&registry_host)
            && auth.as_ref() != Some(required)
        {
            return Err(Refusal {
                status: 500,
                message: format!(
                    "Head \"https://{registry_host}/v2/…/manifests/…\": no basic auth credentials"
                ),
            });
        }
        let found = match reference.split_once('@') {
            Some((repository, digest)) => self.catalog.iter().find_map(|(r, p)| {
                (r.rsplit_once(':').map(|(repo, _)| repo) == Some(repository) && p.digest == digest)
                    .then_some(p)
            }),
            None => self.catalog.get(reference),
        };
        match found {
            Some(published) => Ok(published.clone()),
            None if self.credentials.contains_key(&registry_host) => Err(Refusal {
                status: 404,
                message: format!(
                    "manifest for {reference} not found: manifest unknown: manifest unknown"
                ),
            }),
            None => Err(Refusal {
                status: 500,
                message: format!(
                    "Get \"https://{registry_host}/v2/\": dial tcp: lookup {registry_host}: no \
                     such host"
                ),
            }),
        }
    }
}

/// What all daemons of one simulator share (they stand for hosts of one network).
#[derive(Debug, Default)]
pub struct Fleet {
    /// Where pulls go.
    pub registry: Registry,
}

/// Simulated daemons, each on `<dir>/d<i>.sock`, served by a runtime of their own.
pub struct Simulator {
    dir: PathBuf,
    daemons: Vec<Arc<Daemon>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Simulator {
    /// Starts `count` daemons holding `images`, pulling from `registry`, answering with
    /// `profile`'s latencies.
    pub fn start(
        dir: &Path,
        count: usize,
        images: &[Image],
        registry: Registry,
        profile: Profile,
    ) -> Self {
        std::fs::create_dir_all(dir).expect("simulator directory");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("docker-sim")
            .enable_all()
            .build()
            .expect("simulator runtime");
        let fleet = Arc::new(Fleet { registry });
        let mut daemons = Vec::with_capacity(count);
        for index in 0..count {
            let path = dir.join(format!("d{index}.sock"));
            let _ = std::fs::remove_file(&path);
            let listener = std::os::unix::net::UnixListener::bind(&path)
                .unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
            listener.set_nonblocking(true).expect("non-blocking socket");
            let daemon = Daemon::new(
                index,
                images.to_vec(),
                profile.clone(),
                Arc::clone(&fleet),
                runtime.handle().clone(),
            );
            runtime.spawn(api::serve(Arc::clone(&daemon), listener));
            daemons.push(daemon);
        }
        Self {
            dir: dir.to_path_buf(),
            daemons,
            runtime: Some(runtime),
        }
    }

    /// Daemon `index`'s address, `unix://…`.
    pub fn address(&self, index: usize) -> String {
        format!(
            "unix://{}",
            self.dir.join(format!("d{index}.sock")).display()
        )
    }

    /// Daemon `index`.
    pub fn daemon(&self, index: usize) -> &Arc<Daemon> {
        &self.daemons[index]
    }

    /// How many daemons run.
    pub fn len(&self) -> usize {
        self.daemons.len()
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The images and registry of the test harness as a simulated daemon sees them, read from
/// the real main daemon (`docker image inspect`): the same IDs, commands and digests.
pub fn harness_world(env: &TestEnv) -> (Vec<Image>, Registry) {
    let main = env.get("MAIN_HOST");
    let inspect = |reference: &str| -> Image {
        let output = std::process::Command::new("docker")
            .args(["-H", &main, "image", "inspect", reference])
            .output()
            .expect("docker image inspect");
        assert!(
            output.status.success(),
            "docker image inspect {reference}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let parsed: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("inspect JSON");
        let image = &parsed[0];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        };
        Image {
            id: image["Id"].as_str().unwrap_or_default().to_string(),
            tags: vec![reference.to_string()],
            digests: strings(&image["RepoDigests"])
                .into_iter()
                .filter(|d| d.starts_with(reference.rsplit_once(':').map_or(reference, |(r, _)| r)))
                .collect(),
            cmd: strings(&image["Config"]["Cmd"]),
            env: strings(&image["Config"]["Env"]),
            www: None,
        }
    };
    let mut local = Vec::new();
    for (image, rootfs) in [("IMAGE_V1", "ROOTFS_V1"), ("IMAGE_V2", "ROOTFS_V2")] {
        local.push(Image {
            www: index_page(&env.get(rootfs)),
            ..inspect(&env.get(image))
        });
    }
    let mut registry = Registry::default();
    let user = env.get("REGISTRY_USER");
    let password = env.get("REGISTRY_PASSWORD");
    for host in [env.get("REGISTRY"), env.get("PLAIN_REGISTRY")] {
        registry
            .credentials
            .insert(host, (user.clone(), password.clone()));
    }
    let registries = [
        (env.get("REGISTRY_IMAGE_V1"), "https"),
        (env.get("REGISTRY_IMAGE_V2"), "https"),
        (env.get("PLAIN_REGISTRY_IMAGE_V1"), "http"),
    ];
    for (reference, scheme) in registries {
        let (digest, config) = manifest(env, &reference, scheme);
        let image = local
            .iter()
            .find(|i| i.id == config)
            .unwrap_or_else(|| panic!("{reference} is none of the harness's local images"));
        let image = Image {
            tags: Vec::new(),
            digests: Vec::new(),
            ..image.clone()
        };
        registry
            .catalog
            .insert(reference, Published { image, digest });
    }
    (local, registry)
}

/// `/www/index.html` of the rootfs archive the harness imported an image from.
fn index_page(rootfs: &str) -> Option<String> {
    let output = std::process::Command::new("tar")
        .args(["-xOf", rootfs, "./www/index.html"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The manifest digest and the config digest (the image ID) of `reference` in the
/// harness's registry, asked of the registry itself.
fn manifest(env: &TestEnv, reference: &str, scheme: &str) -> (String, String) {
    let (host, rest) = reference.split_once('/').expect("a registry reference");
    let (repository, tag) = rest.rsplit_once(':').expect("a tagged reference");
    let credentials = format!(
        "{}:{}",
        env.get("REGISTRY_USER"),
        env.get("REGISTRY_PASSWORD")
    );
    let output = std::process::Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "--cacert",
            &env.get("REGISTRY_CA"),
            "-u",
            &credentials,
        ])
        .args([
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
        ])
        .arg(format!("{scheme}://{host}/v2/{repository}/manifests/{tag}"))
        .output()
        .expect("curl the registry");
    let text = String::from_utf8_lossy(&output.stdout);
    let (headers, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let digest = headers
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("docker-content-digest")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no digest for {reference}: {headers}"));
    let parsed: serde_json::Value = serde_json::from_str(body).expect("manifest JSON");
    let config = parsed["config"]["digest"]
        .as_str()
        .expect("manifest config digest")
        .to_string();
    (digest, config)
}

/// The one simulated daemon the contract scenarios share (as they share each real engine),
/// started on first use and kept for the test process's life.
pub fn shared() -> &'static Simulator {
    static SHARED: OnceLock<Simulator> = OnceLock::new();
    SHARED.get_or_init(|| {
        let env = TestEnv::load();
        let (images, registry) = harness_world(&env);
        let dir = std::env::temp_dir().join(format!("stevedore-sim-{}", std::process::id()));
        Simulator::start(&dir, 1, &images, registry, Profile::docker_floor())
    })
}
