//! `DockerContainer`: what should run, where, and how many.

// Each `printcolumn(...)` repeats `type_ = …`; clippy reads that as one attribute twice.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::LocalObjectReference;

/// Containers Stevedore keeps running on one or more Docker targets: the image, how it
/// runs, and where it is placed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "stevedore.dev",
    version = "v1alpha1",
    kind = "DockerContainer",
    plural = "dockercontainers",
    namespaced,
    doc = "Containers Stevedore keeps running on Docker targets, and how they are doing.",
    status = "DockerContainerStatus",
    shortname = "dc",
    category = "stevedore",
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.placement.replicas"
    ),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.labels) || self.labels.all(k, !k.startsWith('stevedore.dev/'))")
        .message("labels under stevedore.dev/ are reserved for Stevedore")
        .field_path(".labels"),
)]
pub struct DockerContainerSpec {
    /// The image to run, e.g. `registry.example.com:5000/team/app:1.3` or
    /// `app@sha256:…`. With `imageSource`, the repository the imported or built image is
    /// tagged into (the tag is derived from the source).
    #[x_kube(
        validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._/:@-]*$')")
            .message("image must be a Docker image reference such as registry:5000/team/app:1.3")
    )]
    #[schemars(length(min = 1, max = 512))]
    pub image: String,

    /// When to pull: `Always` resolves the tag at every rollout, `IfNotPresent` pulls only
    /// when the host lacks the image, `Never` only uses what the host already has.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,

    /// `Pinned` resolves the tag to a digest only when the spec changes; `FollowTag`
    /// re-resolves it on the Registry's refresh interval and rolls out a moved tag.
    #[serde(default)]
    pub image_update_policy: ImageUpdatePolicy,

    /// `Enforce` repairs containers changed, stopped or removed by hand; `Report` only
    /// records the drift in status and Events.
    #[serde(default)]
    pub drift_policy: DriftPolicy,

    /// The Registry whose credentials pull the image; by default the one whose `server`
    /// matches the image's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_ref: Option<LocalObjectReference>,

    /// Makes the image on each host from a source instead of pulling it.
    // The four optional blocks here and below are boxed: absent in most objects, they
    // would otherwise take their full size in every cached DockerContainer of a fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_source: Option<Box<ImageSource>>,

    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub command: Vec<String>,

    /// Replaces the image's default arguments (its `CMD`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 4096)))]
    pub args: Vec<String>,

    /// Environment variables, each with a literal `value` or a `valueFrom` a Secret or
    /// ConfigMap key. Changing a referenced value replaces the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 1000),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub env: Vec<EnvVar>,

    /// Secrets and ConfigMaps whose every key becomes an environment variable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env_from: Vec<EnvFromSource>,

    /// Ports the container listens on, and where they are published on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub ports: Vec<PortMapping>,

    /// Bind mounts, named volumes and tmpfs mounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub volumes: Vec<VolumeMount>,

    /// The network the container joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Box<NetworkSpec>>,

    /// CPU and memory limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Box<Resources>>,

    /// What the daemon does when the container exits: `Always` restarts it, `OnFailure`
    /// only after a non-zero exit, `Never` leaves it stopped. Stevedore adds its own
    /// restarts with exponential backoff where the daemon gives up.
    #[serde(default)]
    pub restart_policy: RestartPolicy,

    /// A command run inside the container to tell whether it is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<Box<HealthCheck>>,

    /// Labels put on the container, besides Stevedore's own `stevedore.dev/` labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 64,
        "additionalProperties" = {"type": "string", "maxLength": 4096}
    ))]
    pub labels: BTreeMap<String, String>,

    /// The user (name or uid[:gid]) the process runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub user: Option<String>,

    /// The working directory of the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub working_dir: Option<String>,

    /// The container's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub hostname: Option<String>,

    /// Linux capabilities to add, e.g. `NET_ADMIN`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    pub cap_add: Vec<String>,

    /// Linux capabilities to drop, e.g. `ALL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    pub cap_drop: Vec<String>,

    /// Runs the container with every privilege of the host. Avoid.
    #[serde(default)]
    pub privileged: bool,

    /// Mounts the container's root filesystem read-only.
    #[serde(default)]
    pub read_only_root_filesystem: bool,

    /// Seconds the container gets to stop after `stopSignal` before it is killed.
    #[serde(default = "default_stop_timeout")]
    #[schemars(range(min = 0, max = 3600))]
    pub stop_timeout_seconds: i32,

    /// The signal that asks the container to stop, e.g. `SIGTERM` or `SIGQUIT`.
    #[serde(default = "default_stop_signal")]
    #[schemars(length(max = 16), regex(pattern = r"^(SIG[A-Z0-9+-]+|[0-9]+)$"))]
    pub stop_signal: String,

    /// Which targets run the container: one pinned `target`, or `replicas` spread over the
    /// targets matching `targetSelector`.
    pub placement: Placement,

    /// How containers are replaced when the spec changes.
    #[serde(default)]
    pub update_strategy: UpdateStrategy,

    /// What happens to the containers when this object is deleted: `Delete` stops and
    /// removes them, `Orphan` leaves them running, unmanaged.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_stop_timeout() -> i32 {
    10
}

fn default_stop_signal() -> String {
    "SIGTERM".to_string()
}

/// When to pull the image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ImagePullPolicy {
    // Resolve the tag with the registry at every rollout.
    Always,
    // Pull only when the host lacks the image.
    #[default]
    IfNotPresent,
    // Never pull; the host must already have the image.
    Never,
}

/// When a tag is resolved to a digest again.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ImageUpdatePolicy {
    // Only when the spec changes.
    #[default]
    Pinned,
    // Also when the tag moves in the registry.
    FollowTag,
}

/// What to do when a host differs from the spec.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DriftPolicy {
    // Repair the host.
    #[default]
    Enforce,
    // Only report the drift.
    Report,
}

/// Makes the image on each host instead of pulling it (exactly one of `import`, `build`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.__import__) != has(self.build)")
        .message("imageSource needs exactly one of import or build")
)]
pub struct ImageSource {
    /// Imports a root filesystem tarball as the image (`docker import`).
    #[serde(default, rename = "import", skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportSource>,
    /// Builds the image from a build context (`docker build`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildSource>,
}

/// A root filesystem tarball to import as the image.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportSource {
    /// An `http://` or `https://` URL of a tar archive (optionally compressed) of the root
    /// filesystem.
    #[x_kube(
        validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
            .message("url must be an http:// or https:// URL")
    )]
    #[schemars(length(max = 2048))]
    pub url: String,
}

/// A build context to build the image from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildSource {
    /// An `http://` or `https://` URL of a tar or tar.gz build context.
    #[x_kube(
        validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')")
            .message("context must be an http:// or https:// URL")
    )]
    #[schemars(length(max = 2048))]
    pub context: String,
    /// Path of the Dockerfile inside the context.
    #[serde(default = "default_dockerfile")]
    #[schemars(length(max = 1024))]
    pub dockerfile: String,
    /// Build arguments (`ARG`) passed to the build.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 64,
        "additionalProperties" = {"type": "string", "maxLength": 4096}
    ))]
    pub build_args: BTreeMap<String, String>,
}

fn default_dockerfile() -> String {
    "Dockerfile".to_string()
}

/// One environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.value) != has(self.valueFrom)")
        .message("env needs exactly one of value or valueFrom")
)]
pub struct EnvVar {
    /// Name of the variable.
    #[schemars(
        length(min = 1, max = 256),
        regex(pattern = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    )]
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub value: Option<String>,
    /// Where the value comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// The source of an environment variable's value (exactly one of the two).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.secretKeyRef) != has(self.configMapKeyRef)")
        .message("valueFrom needs exactly one of secretKeyRef or configMapKeyRef")
)]
pub struct EnvVarSource {
    /// A key of a Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeySelector>,
    /// A key of a ConfigMap in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeySelector>,
}

/// One key of a Secret or ConfigMap.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeySelector {
    /// Name of the Secret or ConfigMap.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key whose value is used.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// When true, a missing object or key leaves the variable unset instead of failing.
    #[serde(default)]
    pub optional: bool,
}

/// A Secret or ConfigMap whose every key becomes a variable (exactly one of the two).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.secretRef) != has(self.configMapRef)")
        .message("envFrom needs exactly one of secretRef or configMapRef")
)]
pub struct EnvFromSource {
    /// A Secret in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// A ConfigMap in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<LocalObjectReference>,
    /// Prepended to every variable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub prefix: Option<String>,
}

/// A port of the container and where it is published.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The port the container listens on.
    #[schemars(range(min = 1, max = 65535))]
    pub container_port: i32,
    /// The host port it is published on; unset publishes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub host_port: Option<i32>,
    /// `TCP` or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
    /// The host address the port is published on; all addresses when unset.
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isIP(self)").message("hostIP must be an IPv4 or IPv6 address"))]
    #[schemars(length(max = 45))]
    pub host_ip: Option<String>,
}

/// A transport protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

/// A mount into the container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type != 'bind' || (has(self.source) && self.source.startsWith('/'))")
        .message("a bind volume needs an absolute source path on the host")
        .field_path(".source"),
    validation = Rule::new("self.type != 'volume' || has(self.source)")
        .message("a named volume needs a source (the volume's name)")
        .field_path(".source"),
    validation = Rule::new("self.type != 'tmpfs' || !has(self.source)")
        .message("a tmpfs volume takes no source")
        .field_path(".source"),
)]
pub struct VolumeMount {
    /// `bind` mounts a host path, `volume` a named Docker volume, `tmpfs` a memory
    /// filesystem. Stevedore never deletes volumes or host paths.
    #[serde(rename = "type")]
    pub kind: VolumeType,
    /// The host path (`bind`, absolute) or the volume name (`volume`); none for `tmpfs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub source: Option<String>,
    /// The absolute path inside the container.
    #[x_kube(
        validation = Rule::new("self.startsWith('/')").message("target must be an absolute path in the container")
    )]
    #[schemars(length(max = 4096))]
    pub target: String,
    /// Mounts read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// The kind of a mount.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    #[default]
    Bind,
    Volume,
    Tmpfs,
}

/// The network a container joins.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.aliases) || size(self.aliases) == 0 || !(self.mode in ['bridge', 'host', 'none'])")
        .message("aliases need a user-defined network; bridge, host and none take none")
        .field_path(".aliases"),
)]
pub struct NetworkSpec {
    /// `bridge`, `host`, `none`, or the name of a user-defined network on the host.
    #[serde(default = "default_network_mode")]
    #[schemars(length(min = 1, max = 255))]
    pub mode: String,
    /// Extra DNS names of the container on a user-defined network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 253)))]
    pub aliases: Vec<String>,
}

fn default_network_mode() -> String {
    "bridge".to_string()
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            mode: default_network_mode(),
            aliases: Vec::new(),
        }
    }
}

/// CPU and memory limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPUs the container may use, e.g. `0.5`, `2` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
            .message("cpus must be a positive number such as 0.5, 2 or 500m")
    )]
    #[schemars(length(max = 32))]
    pub cpus: Option<String>,
    /// Memory limit as a Kubernetes quantity, e.g. `256Mi` or `1Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))")
            .message("memory must be a positive Kubernetes quantity such as 256Mi or 1Gi")
    )]
    #[schemars(length(max = 32))]
    pub memory: Option<String>,
}

/// When the daemon restarts the container.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// A health check command.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// The command, run without a shell; exit 0 means healthy. Use `["sh", "-c", "…"]` for
    /// a shell.
    #[schemars(length(min = 1, max = 256), inner(length(max = 4096)))]
    pub command: Vec<String>,
    /// Seconds between checks.
    #[serde(default = "default_health_interval")]
    #[schemars(range(min = 1, max = 3600))]
    pub interval_seconds: i32,
    /// Seconds a check may take before it counts as failed.
    #[serde(default = "default_health_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
    /// Consecutive failures that make the container unhealthy.
    #[serde(default = "default_health_retries")]
    #[schemars(range(min = 1, max = 100))]
    pub retries: i32,
    /// Seconds after start during which failures do not count.
    #[serde(default)]
    #[schemars(range(min = 0, max = 3600))]
    pub start_period_seconds: i32,
}

fn default_health_interval() -> i32 {
    10
}

fn default_health_timeout() -> i32 {
    5
}

fn default_health_retries() -> i32 {
    3
}

/// Where the container runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.target) != has(self.targetSelector)")
        .message("placement needs exactly one of target or targetSelector"),
    validation = Rule::new("self.replicas <= 1 || has(self.targetSelector)")
        .message("replicas greater than 1 need a targetSelector")
        .field_path(".replicas"),
)]
pub struct Placement {
    /// The name of one DockerTarget in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub target: Option<String>,
    /// Selects DockerTargets in the same namespace by their labels; `replicas` are spread
    /// over the ready ones, fewest containers first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_selector: Option<LabelSelector>,
    /// How many containers to run (at most one per target when they publish a host port).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
}

fn default_replicas() -> i32 {
    1
}

/// How containers are replaced when the spec changes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.type == 'Recreate' || self.maxUnavailable > 0 || self.maxSurge > 0")
        .message("maxUnavailable and maxSurge cannot both be 0"),
)]
pub struct UpdateStrategy {
    /// `RollingUpdate` replaces `maxUnavailable + maxSurge` (at least one) containers at a
    /// time on each target, each new one started (and healthy, with a health check) before
    /// the old one is retired; `Recreate` stops every old container on a target before the
    /// first new one starts, and retires them once every new one runs. A retired container
    /// is kept stopped, as its replica's previous one, until the next replacement.
    #[serde(rename = "type", default)]
    pub kind: UpdateStrategyType,
    /// How many containers may be missing during a rolling update; with `maxSurge`, how
    /// many are replaced at once on a target.
    #[serde(default = "default_max_unavailable")]
    #[schemars(range(min = 0))]
    pub max_unavailable: i32,
    /// How many containers may run above `replicas` during a rolling update; with
    /// `maxUnavailable`, how many are replaced at once on a target.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_surge: i32,
}

fn default_max_unavailable() -> i32 {
    1
}

/// The annotation `stevedore restart` sets (as `kubectl rollout restart` sets
/// `kubectl.kubernetes.io/restartedAt` on a Deployment's template): a new value replaces
/// every replica through `updateStrategy`.
pub const ANNOTATION_RESTARTED_AT: &str = "stevedore.dev/restartedAt";

impl DockerContainer {
    /// Whether its status records instances on the target `target` (by name).
    pub fn has_instances_on(&self, target: &str) -> bool {
        self.status
            .iter()
            .flat_map(|s| &s.instances)
            .any(|i| i.target == target)
    }

    /// The restart request on this object, if any (see [`ANNOTATION_RESTARTED_AT`]).
    pub fn restarted_at(&self) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(ANNOTATION_RESTARTED_AT)
            .map(String::as_str)
    }
}

impl Default for UpdateStrategy {
    fn default() -> Self {
        Self {
            kind: UpdateStrategyType::default(),
            max_unavailable: default_max_unavailable(),
            max_surge: 0,
        }
    }
}

/// The kind of update.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpdateStrategyType {
    #[default]
    RollingUpdate,
    Recreate,
}

/// What happens to the containers when the object is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Orphan,
}

/// What runs, where, and how it is doing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerContainerStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Containers that exist for this object.
    #[serde(default)]
    pub replicas: i32,
    /// Containers running (and healthy, with a health check).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Containers running the current spec.
    #[serde(default)]
    pub updated_replicas: i32,
    /// The image reference with the digest every target runs, e.g. `app@sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub resolved_image: Option<String>,
    /// The `spec.image` that `resolvedImage` was resolved from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub resolved_from: Option<String>,
    /// When the tag was last resolved; with `imageUpdatePolicy: FollowTag` it is resolved
    /// again every `catalog.refreshInterval` of its Registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
    /// One entry per container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = super::MAX_STATUS_INSTANCES))]
    pub instances: Vec<InstanceStatus>,
    /// `Ready` (all replicas ready), `Progressing` (a rollout is under way) and `Degraded`
    /// (something needs attention; the message says what).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
}

/// One container of the object on one target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The DockerTarget it is placed on.
    #[schemars(length(max = 253))]
    pub target: String,
    /// The container's name on the daemon, `<namespace>_<name>_<replica>`.
    #[schemars(length(max = 512))]
    pub container_name: String,
    /// The container's ID, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub container_id: Option<String>,
    /// The daemon's state: `created`, `running`, `restarting`, `exited`, … or `missing`.
    #[schemars(length(max = 64))]
    pub state: String,
    /// `healthy`, `unhealthy` or `starting`, with a health check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub health: Option<String>,
    /// The digest of the image the container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub image_digest: Option<String>,
    /// The container's addresses, one per network (`network=ip`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 320)))]
    pub ips: Vec<String>,
    /// Published ports as `hostIP:hostPort->containerPort/protocol`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 128)))]
    pub ports: Vec<String>,
    /// How often the container was restarted.
    #[serde(default)]
    pub restart_count: i32,
    /// When the container last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// The exit code, for a container that exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why the container is in this state: the last action's reason, or the last lines of
    /// the log of a container that exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = super::MAX_STATUS_MESSAGE))]
    pub message: Option<String>,
}
