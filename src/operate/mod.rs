//! Day two: what an operator does with a DockerContainer once it runs — read its logs, run a
//! command in a replica, restart it — without logging in to the host.
//!
//! ```text
//!   cluster (kubeconfig, the user's own RBAC)   status.instances ─┐
//!   manifests directory (stevedore … --filename) all its targets ─┴─> locate ─> Replica(s)
//!        Replica = target + container + a connection made with the target's Secret
//!   logs / exec talk to the Replica's daemon; restart asks for a rollout (an annotation in
//!   a cluster, the executor's replace standalone), never a bare `docker restart`.
//! ```

pub mod exec;
pub mod locate;
pub mod logs;
pub mod restart;
mod terminal;

use crate::docker::{DockerError, DockerHost, HostContainer};

/// One replica of a DockerContainer, where it runs.
#[derive(Clone, Debug)]
pub struct Replica {
    /// Its replica index.
    pub index: u32,
    /// The DockerTarget it runs on.
    pub target: String,
    /// The container, as the host lists it.
    pub container: HostContainer,
    /// The container its last replacement ended, kept stopped with its log, if the host
    /// still has it.
    pub previous: Option<HostContainer>,
    /// The connection to its host.
    pub host: DockerHost,
}

/// Which replicas a command acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// The one with this index.
    Index(u32),
    /// Every replica.
    All,
    /// The lowest-numbered one (said on stderr when there are several, as `kubectl logs`
    /// says which pod of a Deployment it picked).
    First,
}

/// Why a day-two command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    /// The object, a replica or what it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The user's RBAC does not allow a call the command needs; says which.
    #[error("{0}")]
    Forbidden(String),
    /// The request cannot be served as asked.
    #[error("{0}")]
    Invalid(String),
    /// A daemon call failed.
    #[error(transparent)]
    Docker(#[from] DockerError),
    /// An API server call failed for another reason.
    #[error("{what}: {source}")]
    Kube {
        /// The call.
        what: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Writing the command's output failed (a closed pipe is not reported: see `main`).
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The replicas `which` selects among `replicas` (sorted by index).
pub fn select(
    object: &str,
    mut replicas: Vec<Replica>,
    which: Which,
) -> Result<Vec<Replica>, OperateError> {
    replicas.sort_by_key(|r| r.index);
    if replicas.is_empty() {
        return Err(OperateError::NotFound(format!(
            "{object} has no replica running on any of its targets"
        )));
    }
    match which {
        Which::All => Ok(replicas),
        Which::First => {
            if replicas.len() > 1 {
                eprintln!(
                    "Found {} replicas, using replica {} (choose with --replica N, or --all)",
                    replicas.len(),
                    replicas[0].index
                );
            }
            replicas.truncate(1);
            Ok(replicas)
        }
        Which::Index(index) => {
            let found: Vec<u32> = replicas.iter().map(|r| r.index).collect();
            replicas.retain(|r| r.index == index);
            if replicas.is_empty() {
                Err(OperateError::NotFound(format!(
                    "{object} has no replica {index} (running: {})",
                    found
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            } else {
                Ok(replicas)
            }
        }
    }
}
