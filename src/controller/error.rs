//! The controller's errors, classified for `error_policy`: an object that can never work as
//! written waits for a change; anything else is retried with back-off.

use crate::docker::DockerError;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call.
    #[error("failed to {action}")]
    Kube {
        /// What was being done, e.g. "patch the status of DockerContainer default/web".
        action: String,
        /// The API's error.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the finalizer failed.
    #[error("failed to manage the finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The object can never converge as written (a bad field, a missing Secret key);
    /// the condition says which, and the controller waits for a change.
    #[error("{0}")]
    InvalidObject(String),
    /// A target holds containers this object still owns but cannot be reached; deletion
    /// waits for it.
    #[error("waiting for {0}")]
    CleanupBlocked(String),
    /// A deleted DockerTarget waits for the DockerContainers deleted with it to remove
    /// their containers (not a failure: the finalizer helper keeps a finalizer only while
    /// its cleanup errs).
    #[error("deleted target waits for {0}")]
    DeletionWaiting(String),
    /// A daemon failed.
    #[error("docker target {target} failed")]
    Docker {
        /// The DockerTarget's name.
        target: String,
        /// The daemon's error.
        #[source]
        source: DockerError,
    },
}

impl Error {
    /// A short label for the `reason` of error metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::InvalidObject(_) => "invalid_object",
            Error::CleanupBlocked(_) => "cleanup_blocked",
            Error::DeletionWaiting(_) => "deletion_waiting",
            Error::Docker { .. } => "docker",
        }
    }

    /// Whether this is an expected wait rather than a failure, to be looked at again soon:
    /// a deleted target waiting for cleanups, or a finalizer added from a cache that had
    /// not yet seen the previous add (the server's `test` operation refuses it).
    pub fn is_waiting(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::DeletionWaiting(_) => true,
            Error::Finalizer(inner) => match inner.as_ref() {
                F::CleanupFailed(e) => e.is_waiting(),
                F::AddFinalizer(kube::Error::Api(status)) => status.code == 422,
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether the object went while the finalizer was being removed (a reconcile of an
    /// older copy): nothing is left to do.
    pub fn object_gone(&self) -> bool {
        matches!(
            self,
            Error::Finalizer(inner) if matches!(
                inner.as_ref(),
                kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(status))
                    if status.code == 404
            )
        )
    }

    /// Whether retrying without a change to the object cannot help.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::InvalidObject(_) => true,
            Error::Finalizer(inner) => matches!(
                inner.as_ref(),
                kube::runtime::finalizer::Error::ApplyFailed(e)
                    | kube::runtime::finalizer::Error::CleanupFailed(e) if e.is_permanent()
            ),
            _ => false,
        }
    }
}

/// A closure that wraps a `kube::Error` with what was being done.
pub fn kube_failed(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Result with the controller's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
