//! The Stevedore API, `stevedore.dev/v1alpha1`: the three custom resources users write into
//! Git, and the schema checks that every mode of Stevedore shares.
//!
//! ```text
//!   DockerTarget ──(labels)──┐
//!   Registry ──(server)──────┼──> DockerContainer.placement / image ──> containers on hosts
//!   Secret / ConfigMap ──────┘
//! ```

mod bounds;
pub mod common;
pub mod container;
pub mod registry;
pub mod target;
pub mod validation;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use common::{CONDITION_READY, LocalObjectReference, SecretReference, SecretSource, timestamp};
pub use container::{
    ANNOTATION_RESTARTED_AT, DockerContainer, DockerContainerSpec, DockerContainerStatus,
};
pub use registry::{Registry, RegistrySpec, RegistryStatus};
pub use target::{DockerTarget, DockerTargetSpec, DockerTargetStatus};

/// The API group of every Stevedore kind.
pub const GROUP: &str = "stevedore.dev";
/// The API version of every Stevedore kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "stevedore.dev/v1alpha1";

/// The oldest Kubernetes release whose API server accepts the CRDs: every CEL function
/// their rules call is available to new rules there (the IP library, `isIP`, from 1.31).
pub const MIN_KUBERNETES: (u32, u32) = (1, 31);

/// The most `status.instances` entries a DockerContainer reports (replicas, plus the
/// containers a rollout adds for a while).
pub const MAX_STATUS_INSTANCES: usize = 2000;
/// The most `status.images` entries a DockerTarget reports.
pub const MAX_STATUS_IMAGES: usize = 1000;
/// The longest `status.instances[].message`, in characters.
pub const MAX_STATUS_MESSAGE: usize = 4096;

/// Every CRD Stevedore serves, in a stable order (targets, registries, containers).
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![DockerTarget::crd(), Registry::crd(), DockerContainer::crd()];
    for crd in &mut crds {
        bounds::bound_embedded_types(crd);
    }
    crds
}
