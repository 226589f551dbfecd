//! The Stevedore API, `stevedore.dev/v1alpha1`: the three custom resources users write into
//! Git, and the schema checks that every mode of Stevedore shares.
//!
//! ```text
//!   DockerTarget ──(labels)──┐
//!   Registry ──(server)──────┼──> DockerContainer.placement / image ──> containers on hosts
//!   Secret / ConfigMap ──────┘
//! ```

pub mod common;
pub mod container;
pub mod registry;
pub mod target;
pub mod validation;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use common::{CONDITION_READY, LocalObjectReference, SecretReference, SecretSource};
pub use container::{DockerContainer, DockerContainerSpec, DockerContainerStatus};
pub use registry::{Registry, RegistrySpec, RegistryStatus};
pub use target::{DockerTarget, DockerTargetSpec, DockerTargetStatus};

/// The API group of every Stevedore kind.
pub const GROUP: &str = "stevedore.dev";
/// The API version of every Stevedore kind.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "stevedore.dev/v1alpha1";

/// Every CRD Stevedore serves, in a stable order (targets, registries, containers).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![DockerTarget::crd(), Registry::crd(), DockerContainer::crd()]
}
