//! The desired side of a converge: which containers should exist on one target, named and
//! labelled so the daemon itself records what Stevedore placed there, with a spec hash that
//! changes exactly when the container must be replaced.
//!
//! Labels are the source of truth for "what we run": a Stevedore that restarts, or crashes
//! in the middle of a change, finds its work again from them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bollard::models::ContainerCreateBody;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::container_config::{ConfigError, create_body};
use super::env::{EnvOrigin, ResolvedEnv};
use crate::api::container::{
    DockerContainerSpec, DriftPolicy, ImagePullPolicy, Protocol, RestartPolicy, UpdateStrategy,
};
use crate::docker::{HostContainer, PullCredentials};
use crate::labels::{
    LABEL_MANAGED, LABEL_MANAGER, LABEL_NAME, LABEL_NAMESPACE, LABEL_REPLICA, LABEL_RESOLVED_AT,
    LABEL_RESOLVED_FROM, LABEL_RESOLVED_IMAGE, LABEL_SPEC_FIELDS, LABEL_SPEC_HASH, LABEL_TARGET,
    LABEL_UID,
};

/// The container name of one replica: `<namespace>_<name>_<replica>`. Kubernetes names
/// never contain `_`, so the name cannot collide across owners.
pub fn container_name(namespace: &str, name: &str, replica: u32) -> String {
    format!("{namespace}_{name}_{replica}")
}

/// Where a replica's last replaced container is kept, stopped, with its log: the
/// container `logs --previous` reads after a replacement (one per replica, as the kubelet
/// keeps one dead container and Docker Swarm a task history).
pub fn previous_name(current: &str) -> String {
    format!("{current}-previous")
}

/// The object that wants containers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (from the API server, or derived from kind/namespace/name without a cluster).
    pub uid: String,
}

/// A published host port, for clash detection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host address; all addresses when `None`.
    pub ip: Option<String>,
    /// Port.
    pub port: i32,
    /// Protocol.
    pub protocol: Protocol,
}

impl HostPort {
    /// Whether two bindings compete for the same socket.
    pub fn clashes_with(&self, other: &HostPort) -> bool {
        let any =
            |ip: &Option<String>| ip.as_deref().is_none_or(|ip| ip == "0.0.0.0" || ip == "::");
        self.port == other.port
            && self.protocol == other.protocol
            && (any(&self.ip) || any(&other.ip) || self.ip == other.ip)
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let protocol = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        match &self.ip {
            Some(ip) => write!(f, "{ip}:{}/{protocol}", self.port),
            None => write!(f, "{}/{protocol}", self.port),
        }
    }
}

/// The host ports a spec publishes.
pub fn host_ports(spec: &DockerContainerSpec) -> Vec<HostPort> {
    spec.ports
        .iter()
        .filter_map(|p| {
            p.host_port.map(|port| HostPort {
                ip: p.host_ip.clone(),
                port,
                protocol: p.protocol,
            })
        })
        .collect()
}

/// One container that should exist on the target.
#[derive(Clone, Debug)]
pub struct DesiredInstance {
    /// Who wants it.
    pub owner: Owner,
    /// Replica index.
    pub replica: u32,
    /// Container name.
    pub name: String,
    /// The image reference to run.
    pub image: String,
    /// When to pull.
    pub pull_policy: ImagePullPolicy,
    /// Repair or only report drift.
    pub drift_policy: DriftPolicy,
    /// Whether it should run again after it exits.
    pub restart_policy: RestartPolicy,
    /// Whether a health check gates readiness and replacements.
    pub health_check: Option<HealthTiming>,
    /// Published host ports.
    pub host_ports: Vec<HostPort>,
    /// Graceful stop timeout.
    pub stop_timeout_seconds: i32,
    /// How its owner's containers are replaced (not part of the spec hash: changing it
    /// replaces nothing).
    pub update_strategy: UpdateStrategy,
    /// Hash of everything that shapes the container.
    pub spec_hash: String,
    /// Digest per field (the `stevedore.dev/spec-fields` label, parsed).
    pub field_digests: Arc<BTreeMap<String, String>>,
    /// Where each environment variable comes from, to explain replacements.
    pub env_origins: Arc<BTreeMap<String, EnvOrigin>>,
    /// Credentials to pull `image` with.
    pub pull_credentials: Option<PullCredentials>,
    /// Where `image` comes from instead of a pull: a fetched tarball to import or build.
    pub image_source: Option<crate::registry::source::LocalSource>,
    /// The UID of the target it runs on (`stevedore.dev/target`).
    pub target_uid: String,
    /// The create body every replica of the owner shares: all but the replica's and the
    /// target's labels, which [`DesiredInstance::create_body`] adds.
    shared_body: Arc<ContainerCreateBody>,
}

impl DesiredInstance {
    /// The body to create this instance with: the owner's shared body with this replica's
    /// and this target's labels.
    pub fn create_body(&self) -> ContainerCreateBody {
        let mut body = ContainerCreateBody::clone(&self.shared_body);
        body.labels.get_or_insert_with(HashMap::new).extend([
            (LABEL_REPLICA.to_string(), self.replica.to_string()),
            (LABEL_TARGET.to_string(), self.target_uid.clone()),
        ]);
        body
    }

    /// The container among `observed` that is this instance with its current spec (its
    /// name and spec hash), if one is there.
    pub fn current_in<'a>(&self, observed: &'a [HostContainer]) -> Option<&'a HostContainer> {
        observed.iter().find(|c| {
            c.name == self.name && c.labels.get(LABEL_SPEC_HASH) == Some(self.spec_hash.as_str())
        })
    }

    /// Whether this instance runs its current spec among `observed`, and is healthy where
    /// it has a health check.
    pub fn ready_in(&self, observed: &[HostContainer]) -> bool {
        self.current_in(observed)
            .is_some_and(|c| self.ready_with(c))
    }

    /// Whether `container` (one of this instance's) is ready: running, and healthy where
    /// the instance has a health check.
    pub fn ready_with(&self, container: &HostContainer) -> bool {
        container.state == crate::docker::ContainerState::Running
            && (self.health_check.is_none()
                || container.health == Some(crate::docker::Health::Healthy))
    }
}

/// How long a health check may take to give its first verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthTiming {
    /// Seconds after start during which failures do not count.
    pub start_period_seconds: i32,
    /// Seconds between checks.
    pub interval_seconds: i32,
    /// Seconds one check may take.
    pub timeout_seconds: i32,
    /// Failures in a row that make it unhealthy.
    pub retries: i32,
}

impl HealthTiming {
    /// The longest a new container can take to turn healthy or unhealthy.
    pub fn verdict_within(&self) -> std::time::Duration {
        let seconds = self.start_period_seconds
            + (self.interval_seconds + self.timeout_seconds) * (self.retries + 1);
        std::time::Duration::from_secs(seconds.max(1) as u64)
    }
}

/// What is fixed for every instance of one owner, on whichever target.
#[derive(Clone, Debug)]
pub struct InstanceContext<'a> {
    /// The manager identity (`stevedore.dev/manager`).
    pub manager: &'a str,
    /// The reference to run (a digest-pinned one once the registry resolved it).
    pub image: &'a str,
    /// The image's identity for the hash: its ID or digest when known, else the reference.
    pub image_identity: &'a str,
    /// Credentials for the pull, when a Registry supplies them.
    pub pull_credentials: Option<&'a PullCredentials>,
    /// The fetched `imageSource`, when the image is imported or built instead of pulled.
    pub image_source: Option<&'a crate::registry::source::LocalSource>,
    /// The digest `image` was pinned to, recorded in labels (see [`LABEL_RESOLVED_IMAGE`]).
    pub resolved: Option<&'a crate::registry::pinning::Resolved>,
    /// The owner's restart request (its `stevedore.dev/restartedAt` annotation): a new
    /// value replaces every replica through the update strategy, as a changed spec does.
    pub restarted_at: Option<&'a str>,
}

/// The instances `spec` wants on the target `target_uid`: one per replica index in
/// `replicas` (see [`InstanceTemplate`]).
pub fn desired_instances(
    owner: &Owner,
    spec: &DockerContainerSpec,
    env: &ResolvedEnv,
    replicas: &[u32],
    target_uid: &str,
    ctx: &InstanceContext<'_>,
) -> Result<Vec<DesiredInstance>, ConfigError> {
    Ok(InstanceTemplate::new(owner, spec, env, ctx)?.on_target(target_uid, replicas))
}

/// What every instance of one owner shares, built once however many targets and replicas
/// it has: its digests, its hash and its create body are shared by all of them, so a
/// container placed on a thousand targets costs one body, not a thousand.
#[derive(Clone, Debug)]
pub struct InstanceTemplate {
    /// An instance with no replica index, name or target yet.
    unplaced: DesiredInstance,
}

impl InstanceTemplate {
    /// The template of `owner`'s instances; an error when `spec` cannot become a container.
    pub fn new(
        owner: &Owner,
        spec: &DockerContainerSpec,
        env: &ResolvedEnv,
        ctx: &InstanceContext<'_>,
    ) -> Result<Self, ConfigError> {
        let field_digests =
            field_digests(spec, env, ctx.image, ctx.image_identity, ctx.restarted_at);
        let spec_hash = spec_hash(&field_digests);
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.extend([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_NAMESPACE.to_string(), owner.namespace.clone()),
            (LABEL_NAME.to_string(), owner.name.clone()),
            (LABEL_UID.to_string(), owner.uid.clone()),
            (LABEL_MANAGER.to_string(), ctx.manager.to_string()),
            (LABEL_SPEC_HASH.to_string(), spec_hash.clone()),
            (
                LABEL_SPEC_FIELDS.to_string(),
                format_field_digests(&field_digests),
            ),
        ]);
        if let Some(resolved) = ctx.resolved {
            labels.extend([
                (LABEL_RESOLVED_IMAGE.to_string(), resolved.image.clone()),
                (LABEL_RESOLVED_FROM.to_string(), resolved.from.clone()),
                (LABEL_RESOLVED_AT.to_string(), resolved.at.to_string()),
            ]);
        }
        let unplaced = DesiredInstance {
            owner: owner.clone(),
            replica: 0,
            name: String::new(),
            image: ctx.image.to_string(),
            // A source image's tag names its content: present means up to date.
            pull_policy: if ctx.image_source.is_some() {
                ImagePullPolicy::IfNotPresent
            } else {
                spec.image_pull_policy
            },
            drift_policy: spec.drift_policy,
            restart_policy: spec.restart_policy,
            health_check: spec.health_check.as_ref().map(|h| HealthTiming {
                start_period_seconds: h.start_period_seconds,
                interval_seconds: h.interval_seconds,
                timeout_seconds: h.timeout_seconds,
                retries: h.retries,
            }),
            host_ports: host_ports(spec),
            stop_timeout_seconds: spec.stop_timeout_seconds,
            update_strategy: spec.update_strategy.clone(),
            spec_hash,
            field_digests: Arc::new(field_digests),
            env_origins: Arc::new(
                env.iter()
                    .map(|(k, v)| (k.clone(), v.origin.clone()))
                    .collect(),
            ),
            pull_credentials: ctx.pull_credentials.cloned(),
            image_source: ctx.image_source.cloned(),
            target_uid: String::new(),
            shared_body: Arc::new(create_body(spec, ctx.image, env, labels)?),
        };
        Ok(Self { unplaced })
    }

    /// The instances on the target `target_uid`: one per replica index in `replicas`.
    pub fn on_target(&self, target_uid: &str, replicas: &[u32]) -> Vec<DesiredInstance> {
        let owner = &self.unplaced.owner;
        replicas
            .iter()
            .map(|&replica| DesiredInstance {
                replica,
                name: container_name(&owner.namespace, &owner.name, replica),
                target_uid: target_uid.to_string(),
                ..self.unplaced.clone()
            })
            .collect()
    }
}

/// A short digest of one field's value. One-way: labels carry digests, never values.
fn digest(field: &str, value: &Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(field.as_bytes());
    hasher.update([0]);
    hasher.update(value.to_string().as_bytes());
    hex::encode(&hasher.finalize()[..6])
}

/// A digest per field that shapes the container. Env variables get one each, so a
/// replacement can name the variable (and the Secret) that changed. A restart request is
/// a field only while there is one, so objects never restarted keep the hashes they had.
pub fn field_digests(
    spec: &DockerContainerSpec,
    env: &ResolvedEnv,
    image: &str,
    image_identity: &str,
    restarted_at: Option<&str>,
) -> BTreeMap<String, String> {
    let mut fields: Vec<(String, Value)> = vec![
        ("image".into(), json!([image, image_identity])),
        ("command".into(), as_json(&spec.command)),
        ("args".into(), as_json(&spec.args)),
        ("envFrom".into(), as_json(&spec.env_from)),
        ("ports".into(), as_json(&spec.ports)),
        ("volumes".into(), as_json(&spec.volumes)),
        ("network".into(), as_json(&spec.network)),
        ("resources".into(), as_json(&spec.resources)),
        ("restartPolicy".into(), as_json(&spec.restart_policy)),
        ("healthCheck".into(), as_json(&spec.health_check)),
        ("labels".into(), as_json(&spec.labels)),
        ("user".into(), as_json(&spec.user)),
        ("workingDir".into(), as_json(&spec.working_dir)),
        ("hostname".into(), as_json(&spec.hostname)),
        ("capAdd".into(), as_json(&spec.cap_add)),
        ("capDrop".into(), as_json(&spec.cap_drop)),
        ("privileged".into(), json!(spec.privileged)),
        (
            "readOnlyRootFilesystem".into(),
            json!(spec.read_only_root_filesystem),
        ),
        (
            "stopTimeoutSeconds".into(),
            json!(spec.stop_timeout_seconds),
        ),
        ("stopSignal".into(), json!(spec.stop_signal)),
    ];
    fields.extend(
        env.iter()
            .map(|(name, value)| (format!("env.{name}"), json!(value.value))),
    );
    if let Some(at) = restarted_at {
        fields.push((RESTART_FIELD.into(), json!(at)));
    }
    fields
        .into_iter()
        .map(|(field, value)| {
            let d = digest(&field, &value);
            (field, d)
        })
        .collect()
}

/// The field a restart request adds to the digests.
const RESTART_FIELD: &str = "restartedAt";

/// The spec hash: one digest over all field digests.
pub fn spec_hash(field_digests: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (field, digest) in field_digests {
        hasher.update(field.as_bytes());
        hasher.update(b"=");
        hasher.update(digest.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(&hasher.finalize()[..8])
}

/// `a=1,b=2`: the label form of field digests.
pub fn format_field_digests(digests: &BTreeMap<String, String>) -> String {
    digests
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses the label form back; malformed entries are skipped.
pub fn parse_field_digests(label: &str) -> BTreeMap<String, String> {
    label
        .split(',')
        .filter_map(|entry| entry.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What changed between a running container's field digests and the desired ones, in
/// words: `image`, `env GREETING (ConfigMap web key greeting)`, `ports`, …
pub fn describe_changes(
    running: &BTreeMap<String, String>,
    desired: &DesiredInstance,
) -> Vec<String> {
    let mut names: Vec<&String> = desired
        .field_digests
        .keys()
        .chain(running.keys())
        .filter(|field| running.get(*field) != desired.field_digests.get(*field))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|field| match field.strip_prefix("env.") {
            Some(var) => match desired.env_origins.get(var) {
                Some(origin @ (EnvOrigin::Secret { .. } | EnvOrigin::ConfigMap { .. })) => {
                    format!("env {var} (from {origin})")
                }
                Some(EnvOrigin::Literal) => format!("env {var}"),
                None => format!("env {var} (removed)"),
            },
            None if field == RESTART_FIELD => "restart requested".to_string(),
            None => field.clone(),
        })
        .collect()
}

/// A spec part as JSON, for hashing. Spec types always serialize; `Null` is unreachable.
fn as_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::converge::env::EnvValue;

    fn spec(extra: Value) -> DockerContainerSpec {
        let mut base = json!({"image": "app:1", "placement": {"target": "t"}});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).expect("spec")
    }

    fn owner() -> Owner {
        Owner {
            namespace: "default".into(),
            name: "web".into(),
            uid: "uid-1".into(),
        }
    }

    fn ctx() -> InstanceContext<'static> {
        InstanceContext {
            manager: "test",
            image: "app:1",
            image_identity: "sha256:aaa",
            pull_credentials: None,
            image_source: None,
            resolved: None,
            restarted_at: None,
        }
    }

    fn one(spec: &DockerContainerSpec, env: &ResolvedEnv) -> DesiredInstance {
        desired_instances(&owner(), spec, env, &[0], "target-1", &ctx())
            .expect("instances")
            .remove(0)
    }

    #[test]
    fn name_and_labels_identify_the_instance() {
        let instance = one(
            &spec(json!({"labels": {"team": "edge"}})),
            &ResolvedEnv::new(),
        );
        assert_eq!(instance.name, "default_web_0");
        let labels = instance.create_body().labels.expect("labels");
        assert_eq!(labels[LABEL_MANAGED], "true");
        assert_eq!(labels[LABEL_NAMESPACE], "default");
        assert_eq!(labels[LABEL_NAME], "web");
        assert_eq!(labels[LABEL_UID], "uid-1");
        assert_eq!(labels[LABEL_REPLICA], "0");
        assert_eq!(labels[LABEL_TARGET], "target-1");
        assert_eq!(labels[LABEL_MANAGER], "test");
        assert_eq!(labels[LABEL_SPEC_HASH], instance.spec_hash);
        assert_eq!(labels["team"], "edge");
    }

    #[test]
    fn the_hash_ignores_placement_and_rollout_settings() {
        let a = one(&spec(json!({})), &ResolvedEnv::new());
        let b = one(
            &spec(
                json!({"placement": {"target": "other"}, "driftPolicy": "Report",
                "updateStrategy": {"type": "Recreate"}, "deletionPolicy": "Orphan"}),
            ),
            &ResolvedEnv::new(),
        );
        assert_eq!(a.spec_hash, b.spec_hash);
    }

    #[test]
    fn changes_are_named_by_field_and_secret() {
        let env = |v: &str| {
            ResolvedEnv::from([(
                "TOKEN".to_string(),
                EnvValue {
                    value: v.into(),
                    origin: EnvOrigin::Secret {
                        name: "creds".into(),
                        key: "token".into(),
                    },
                },
            )])
        };
        let old = one(&spec(json!({"command": ["a"]})), &env("one"));
        let new = one(&spec(json!({"command": ["b"]})), &env("two"));
        assert_ne!(old.spec_hash, new.spec_hash);
        let changes = describe_changes(&old.field_digests, &new);
        assert_eq!(
            changes,
            vec![
                "command".to_string(),
                "env TOKEN (from Secret creds key token)".to_string()
            ]
        );
        let label = format_field_digests(&old.field_digests);
        assert_eq!(parse_field_digests(&label), *old.field_digests);
        assert!(!label.contains("one"), "a value leaked into the label");
    }

    #[test]
    fn a_new_image_identity_changes_the_hash() {
        let a = one(&spec(json!({})), &ResolvedEnv::new());
        let mut c = ctx();
        c.image_identity = "sha256:bbb";
        let b = desired_instances(
            &owner(),
            &spec(json!({})),
            &ResolvedEnv::new(),
            &[0],
            "target-1",
            &c,
        )
        .expect("instances")
        .remove(0);
        assert_eq!(
            describe_changes(&a.field_digests, &b),
            vec!["image".to_string()]
        );
    }

    #[test]
    fn a_restart_request_replaces_and_says_so() {
        let spec = spec(json!({}));
        let never_restarted = one(&spec, &ResolvedEnv::new());
        // Without a request the digests are the ones every release before restarts had.
        assert!(!never_restarted.field_digests.contains_key(RESTART_FIELD));
        let restart = |at| {
            let mut c = ctx();
            c.restarted_at = Some(at);
            desired_instances(&owner(), &spec, &ResolvedEnv::new(), &[0], "target-1", &c)
                .expect("instances")
                .remove(0)
        };
        let first = restart("2026-11-30T10:00:00Z");
        let again = restart("2026-11-30T11:00:00Z");
        assert_ne!(first.spec_hash, never_restarted.spec_hash);
        assert_ne!(first.spec_hash, again.spec_hash);
        assert_eq!(
            describe_changes(&first.field_digests, &again),
            vec!["restart requested".to_string()]
        );
    }

    #[test]
    fn host_port_clashes() {
        let port = |ip: Option<&str>, port| HostPort {
            ip: ip.map(str::to_string),
            port,
            protocol: Protocol::Tcp,
        };
        assert!(port(None, 80).clashes_with(&port(Some("127.0.0.1"), 80)));
        assert!(!port(Some("127.0.0.1"), 80).clashes_with(&port(Some("127.0.0.2"), 80)));
        assert!(!port(None, 80).clashes_with(&port(None, 81)));
    }
}
