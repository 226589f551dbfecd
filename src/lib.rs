//! Stevedore converges fleets of Docker hosts from Kubernetes custom resources.
//!
//! The crate is one library with one binary (`stevedore`); the binary only wires the
//! library's pieces to a command line.
//!
//! - [`api`]: the `stevedore.dev/v1alpha1` kinds and the client-side admission checks.
//! - [`crd`]: rendering the CRDs as YAML, the form `crds/` holds.
//! - [`converge`]: desired instances, the pure plan and its execution on one host.
//! - [`docker`]: connecting to daemons and every call made to them.
//! - [`placement`]: which target runs each replica.
//! - [`fleet`]: what is wanted (one snapshot, from either mode), the connections to the
//!   targets, and the one path from them to each target's desired instances.
//! - [`logging`]: the log filter, which keeps Secret values out of logs.
//! - [`controller`]: `stevedore controller`, the kube-runtime controllers.
//! - [`registry`]: which Registry serves an image, and its credentials.
//! - [`standalone`]: `stevedore run`, the same kinds from files, without a cluster.
//! - [`operate`]: day two — `logs`, `exec` and `restart` on a DockerContainer's replicas.
//! - [`memory`]: returning freed pages to the system after a settled round.
//! - [`shutdown`]: draining on SIGINT/SIGTERM, so that stopping Stevedore stops no service.

#![deny(rust_2018_idioms)]
// One call into the C allocator (`memory`) is the only unsafe code, allowed there alone.
#![deny(unsafe_code)]

pub mod api;
pub mod conditions;
pub mod controller;
pub mod converge;
pub mod crd;
pub mod docker;
pub mod error_chain;
pub mod fleet;
pub mod labels;
pub mod logging;
pub mod memory;
pub mod operate;
pub mod placement;
pub mod reference;
pub mod registry;
pub mod shutdown;
pub mod sources;
pub mod standalone;

/// Errors of the Stevedore library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value could not be rendered as YAML.
    #[error("failed to render YAML")]
    Yaml(#[source] serde_yaml_ng::Error),
    /// Reading or writing a file failed.
    #[error("failed to access {path}")]
    Io {
        /// The file or directory involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result with Stevedore's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
