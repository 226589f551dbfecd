//! `DockerTarget`: one Docker daemon that Stevedore converges.

// Each `printcolumn(...)` repeats `type_ = …`; clippy reads that as one attribute twice.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretSource;

/// A Docker daemon that Stevedore places containers on, reached over a unix socket, TCP
/// (optionally with TLS client certificates) or ssh. Placement selects targets by their
/// `metadata.labels`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "stevedore.dev",
    version = "v1alpha1",
    kind = "DockerTarget",
    plural = "dockertargets",
    namespaced,
    doc = "A Docker daemon that Stevedore converges: where it is, how to reach it, and what it reports.",
    status = "DockerTargetStatus",
    shortname = "dt",
    category = "stevedore",
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".spec.endpoint"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Engine", type_ = "string", json_path = ".status.server.engine"),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.server.version"
    ),
    printcolumn(
        name = "Containers",
        type_ = "integer",
        json_path = ".status.managedContainers"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new(
        "!has(self.tls) || self.endpoint.startsWith('tcp://') || self.endpoint.startsWith('https://')"
    )
    .message("tls is only valid with a tcp:// or https:// endpoint")
    .field_path(".tls"),
    validation = Rule::new("!has(self.ssh) || self.endpoint.startsWith('ssh://')")
        .message("ssh is only valid with an ssh:// endpoint")
        .field_path(".ssh"),
)]
pub struct DockerTargetSpec {
    /// Where the daemon listens: `unix:///var/run/docker.sock`, `tcp://host:2375`,
    /// `http://host:2375`, `https://host:2376` (TLS) or `ssh://user@host[:port]`.
    /// Plain `tcp://`/`http://` to an address other than loopback needs `allowInsecure`.
    // Prefixes, not a `matches()`: kube-cel compiles a rule's regular expression again for
    // every object it checks, and a fleet's manifests hold a target per host.
    #[x_kube(
        validation = Rule::new("(self.startsWith('unix://') && self.size() > 7) || (self.startsWith('tcp://') && self.size() > 6) || (self.startsWith('http://') && self.size() > 7) || (self.startsWith('https://') && self.size() > 8) || (self.startsWith('ssh://') && self.size() > 6)")
            .message("endpoint must start with unix://, tcp://, http://, https:// or ssh:// followed by an address")
    )]
    #[schemars(length(min = 1, max = 1024))]
    pub endpoint: String,

    /// TLS client material for a `tcp://` or `https://` endpoint. The Secret holds `ca.crt`
    /// (the CA that signed the daemon's certificate), `tls.crt` and `tls.key` (the client
    /// certificate and key the daemon verifies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SecretSource>,

    /// ssh material for an `ssh://` endpoint. The Secret holds `ssh-privatekey` and
    /// optionally `known_hosts`; the remote user must be able to run
    /// `docker system dial-stdio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SecretSource>,

    /// Allows plain, unencrypted `tcp://`/`http://` to an address other than loopback.
    /// Anyone on the path can then run containers on that daemon; leave it off unless the
    /// network itself is trusted.
    #[serde(default)]
    pub allow_insecure: bool,

    /// Cordons the target: no new containers are placed on it; the ones it runs stay.
    #[serde(default)]
    pub unschedulable: bool,

    /// The most containers placement puts on this target; 0 means unlimited.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_containers: i32,
}

/// What Stevedore last observed of the daemon.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerTargetStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` is True when the daemon answers; when False its reason is one of
    /// `Unreachable`, `TLSError`, `AuthError`, `VersionUnsupported` or `ServerError`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,

    /// The daemon's own description of itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerInfo>,

    /// How many containers Stevedore manages on this target.
    #[serde(default)]
    pub managed_containers: i32,

    /// The images the daemon holds locally.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = super::MAX_STATUS_IMAGES))]
    pub images: Vec<HostImage>,

    /// When the daemon answered at the last change of this status. It is not rewritten on
    /// a timer (a fleet would write every target every interval): the `Ready` condition
    /// says whether the daemon answers now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_time: Option<Time>,
}

impl DockerTargetStatus {
    /// Records the host's images, as many as the status may hold.
    pub fn record_images(&mut self, images: Vec<HostImage>) {
        self.images = images.into_iter().take(super::MAX_STATUS_IMAGES).collect();
    }
}

/// The daemon's version and the machine it runs on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// The engine behind the Docker API: `Docker`, or `Podman` (whose Docker-compatible
    /// service differs in ways Stevedore handles; see the README's engine table).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 64))]
    pub engine: String,
    /// Engine version, e.g. `20.10.24` (Docker) or `4.3.1` (Podman).
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub version: String,
    /// The Engine API version negotiated with the daemon, e.g. `1.41`.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub api_version: String,
    /// Operating system of the host, e.g. `linux`.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub os: String,
    /// CPU architecture of the host, e.g. `x86_64`.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub arch: String,
    /// Kernel version of the host.
    #[serde(default)]
    #[schemars(length(max = 256))]
    pub kernel_version: String,
    /// Number of CPUs the daemon sees.
    #[serde(default)]
    pub cpus: i64,
    /// Memory of the host in bytes.
    #[serde(default)]
    pub memory_bytes: i64,
}

/// One image the daemon holds locally.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostImage {
    /// A reference (repository:tag) that names the image on the host.
    #[serde(rename = "ref")]
    #[schemars(length(max = 1024))]
    pub reference: String,
    /// The image ID (`sha256:…`).
    #[schemars(length(max = 128))]
    pub id: String,
    /// The registry digest the image was pulled by, when it came from a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub digest: Option<String>,
}
