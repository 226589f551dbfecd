//! The cleanup finalizer: on every DockerContainer before the first of its containers is
//! created, added by its reconcile or, when many objects wait, ahead of it.
//!
//! Each new object costs one write for its finalizer before any Docker work. Made in the
//! reconcile, that write's round trip holds one of the few reconcile slots while no daemon
//! works; at a controller's start, or after a large apply, that is one round trip per
//! object in line. [`spawn_finalizers_ahead`] takes new objects off the watch as they arrive and adds
//! their finalizers while the objects before them are converged, so their reconciles find
//! the finalizer there.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use crate::api::DockerContainer;
use crate::controller::error::{Result, kube_failed};

/// The finalizer that removes an object's containers before it goes.
pub const FINALIZER: &str = "stevedore.dev/cleanup";

/// Finalizer writes made ahead at once: enough to keep ahead of the reconciles, few
/// enough to leave the API server to them.
const AHEAD_AT_ONCE: usize = 8;

/// Whether `container` still needs [`FINALIZER`]: it lacks it and is not being deleted.
pub(crate) fn lacks_finalizer(container: &DockerContainer) -> bool {
    container.metadata.deletion_timestamp.is_none()
        && !container.finalizers().iter().any(|f| f == FINALIZER)
}

/// A DockerContainer seen without [`FINALIZER`]: where it is, and what it held then.
#[derive(Debug)]
pub(crate) struct Unfinalized {
    namespace: String,
    name: String,
    resource_version: Option<String>,
    finalizers: Vec<String>,
}

impl Unfinalized {
    /// `container`, when it still needs the finalizer.
    pub(crate) fn of(container: &DockerContainer) -> Option<Self> {
        lacks_finalizer(container).then(|| Self {
            namespace: container.namespace().unwrap_or_default(),
            name: container.name_any(),
            resource_version: container.resource_version(),
            finalizers: container.finalizers().to_vec(),
        })
    }
}

/// Starts the task that adds [`FINALIZER`] to every object sent, [`AHEAD_AT_ONCE`] at a
/// time. Each write is conditional on the version seen: an object that changed since is
/// left to its reconcile, which adds the finalizer itself if it is still missing.
pub(crate) fn spawn_finalizers_ahead(client: Client) -> mpsc::UnboundedSender<Unfinalized> {
    let (sender, mut waiting) = mpsc::unbounded_channel::<Unfinalized>();
    tokio::spawn(async move {
        let client = &client;
        futures::stream::poll_fn(|cx| waiting.poll_recv(cx))
            .for_each_concurrent(AHEAD_AT_ONCE, |object| async move {
                let api = Api::<DockerContainer>::namespaced(client.clone(), &object.namespace);
                let added = add(
                    &api,
                    &object.name,
                    object.finalizers,
                    object.resource_version,
                )
                .await;
                if let Err(error) = added {
                    // Its reconcile adds it; a conflict only means the object moved on.
                    tracing::debug!(object = %object.name, %error, "finalizer not added ahead");
                }
            })
            .await;
    });
    sender
}

/// The object with [`FINALIZER`], added unless it has it or is being deleted.
///
/// kube-runtime's finalizer helper adds it too, but then ends the reconcile and waits for
/// the change to come back through the watch: a second pass, queued behind every other
/// object, before a new object's first container is created. Added here, the same pass
/// goes on to converge. When the write conflicts, because the finalizer was added ahead
/// meanwhile or the object changed, the object is read again.
pub(super) async fn with_finalizer(
    api: &Api<DockerContainer>,
    container: Arc<DockerContainer>,
) -> Result<Arc<DockerContainer>> {
    if !lacks_finalizer(&container) {
        return Ok(container);
    }
    let name = container.name_any();
    let added = add(
        api,
        &name,
        container.finalizers().to_vec(),
        container.resource_version(),
    )
    .await;
    let failed = || {
        kube_failed(format!(
            "add the cleanup finalizer to DockerContainer {name}"
        ))
    };
    match added {
        Ok(patched) => Ok(Arc::new(patched)),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let now = api.get(&name).await.map_err(failed())?;
            if lacks_finalizer(&now) {
                return Err(failed()(kube::Error::Api(status)));
            }
            Ok(Arc::new(now))
        }
        Err(error) => Err(failed()(error)),
    }
}

/// Adds [`FINALIZER`] to `finalizers`, the list the object held at `resource_version`; the
/// write fails with a conflict if the object changed since.
async fn add(
    api: &Api<DockerContainer>,
    name: &str,
    mut finalizers: Vec<String>,
    resource_version: Option<String>,
) -> kube::Result<DockerContainer> {
    finalizers.push(FINALIZER.to_string());
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": resource_version,
        }
    });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}
