//! What is wanted in one namespace, with each object's identity: read from the API
//! server's caches by the controller, from the manifests by standalone mode.

use std::sync::Arc;

use crate::api::container::{DockerContainerSpec, DockerContainerStatus};
use crate::api::{DockerContainer, DockerTarget, Registry};
use crate::docker::PullCredentials;
use crate::registry::credentials::{credentials_of, registry_for};
use crate::registry::pinning::Resolved;
use crate::sources::StaticSources;

/// The objects of one namespace a round (or a reconcile) works from.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The namespace.
    pub namespace: String,
    /// DockerTargets, by name.
    pub targets: Vec<TargetEntry>,
    /// Names of targets known to exist but not readable (a broken manifest with no good
    /// version): what runs there keeps its placement, nothing new goes there.
    pub held_targets: Vec<String>,
    /// DockerContainers, by name.
    pub containers: Vec<ContainerEntry>,
    /// Registries: (name, object).
    pub registries: Vec<(String, Arc<Registry>)>,
    /// Secrets and ConfigMaps, decoded.
    pub sources: StaticSources,
}

/// A DockerTarget and its identity.
#[derive(Clone, Debug)]
pub struct TargetEntry {
    /// Its name.
    pub name: String,
    /// Its UID (the `stevedore.dev/target` label of what it runs).
    pub uid: String,
    /// The object.
    pub object: Arc<DockerTarget>,
}

/// A DockerContainer, its identity and what its mode remembers of it.
#[derive(Clone, Debug)]
pub struct ContainerEntry {
    /// Its name.
    pub name: String,
    /// Its UID (the `stevedore.dev/uid` label of its containers).
    pub uid: String,
    /// The object.
    pub object: Arc<DockerContainer>,
    /// What was recorded of it before.
    pub recorded: Recorded,
}

/// What a mode remembers of a DockerContainer between rounds: the controller in its
/// status (which outlives a restart), standalone mode in memory for the length of a run.
/// What the targets run (their labels) always comes first; this fills the gaps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// (target name, replica) where its replicas last ran.
    pub replicas: Vec<(String, u32)>,
    /// The digest its image was last pinned to.
    pub pin: Option<Resolved>,
}

impl ContainerEntry {
    /// The entry of a DockerContainer read from the API server: its identity from its
    /// metadata, what its status records.
    pub fn of(object: Arc<DockerContainer>) -> Self {
        Self {
            name: object.metadata.name.clone().unwrap_or_default(),
            uid: object.metadata.uid.clone().unwrap_or_default(),
            recorded: object
                .status
                .as_ref()
                .map(Recorded::from_status)
                .unwrap_or_default(),
            object,
        }
    }
}

impl Recorded {
    /// What a DockerContainer's status records.
    pub fn from_status(status: &DockerContainerStatus) -> Self {
        let replicas = status
            .instances
            .iter()
            .filter_map(|i| {
                // Container names end in `_<replica>` (see `converge::model::container_name`).
                let replica = i.container_name.rsplit_once('_')?.1.parse().ok()?;
                Some((i.target.clone(), replica))
            })
            .collect();
        let pin = match (&status.resolved_image, &status.resolved_from) {
            (Some(image), Some(from)) => Some(Resolved {
                image: image.clone(),
                from: from.clone(),
                at: status.resolved_at.as_ref().map_or(0, |t| t.0.as_second()),
            }),
            _ => None,
        };
        Self { replicas, pin }
    }
}

impl Snapshot {
    /// The Registry that serves a container with `spec` (see [`registry_for`]).
    pub fn registry_for(&self, spec: &DockerContainerSpec) -> Option<&Registry> {
        let registry_ref = spec.registry_ref.as_ref().map(|r| r.name.as_str());
        let registries = self
            .registries
            .iter()
            .map(|(name, registry)| (name.as_str(), registry.as_ref()));
        registry_for(&spec.image, registry_ref, registries).map(|(_, registry)| registry)
    }

    /// Credentials for pulling the image of a container with `spec`.
    pub fn pull_credentials(&self, spec: &DockerContainerSpec) -> Option<PullCredentials> {
        credentials_of(self.registry_for(spec)?, &self.sources)
    }

    /// The container with this UID.
    pub fn container(&self, uid: &str) -> Option<&ContainerEntry> {
        self.containers.iter().find(|c| c.uid == uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::container::InstanceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn a_status_records_where_replicas_ran_and_the_pin() {
        let instance = |target: &str, name: &str| InstanceStatus {
            target: target.into(),
            container_name: name.into(),
            ..Default::default()
        };
        let status = DockerContainerStatus {
            instances: vec![
                instance("a", "ns_web_0"),
                instance("b", "ns_my_web_12"),
                instance("c", "not-a-replica"),
            ],
            resolved_image: Some("reg/app@sha256:1".into()),
            resolved_from: Some("reg/app:1".into()),
            resolved_at: k8s_openapi::jiff::Timestamp::from_second(100)
                .ok()
                .map(Time),
            ..Default::default()
        };
        let recorded = Recorded::from_status(&status);
        assert_eq!(recorded.replicas, vec![("a".into(), 0), ("b".into(), 12)]);
        assert_eq!(
            recorded.pin,
            Some(Resolved {
                image: "reg/app@sha256:1".into(),
                from: "reg/app:1".into(),
                at: 100,
            })
        );
        assert_eq!(
            Recorded::from_status(&DockerContainerStatus::default()),
            Recorded::default()
        );
    }
}
