//! The cleanup finalizer: on every DockerContainer before the first of its containers is
//! created, added by the reconcile that goes on to converge it.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Api, Patch};

use crate::api::DockerContainer;
use crate::controller::error::{Result, kube_failed};
use crate::controller::outcome::merge_patch_params;

/// The finalizer that removes an object's containers before it goes.
pub const FINALIZER: &str = "stevedore.dev/cleanup";

/// Whether `container` still needs [`FINALIZER`]: it lacks it and is not being deleted.
fn lacks_finalizer(container: &DockerContainer) -> bool {
    container.metadata.deletion_timestamp.is_none()
        && !container.finalizers().iter().any(|f| f == FINALIZER)
}

/// The object with [`FINALIZER`], added unless it has it or is being deleted.
///
/// kube-runtime's finalizer helper adds it too, but then ends the reconcile and waits for
/// the change to come back through the watch: a second pass, queued behind every other
/// object, before a new object's first container is created. Added here, the same pass
/// goes on to converge. The write is conditional on the version read, so that no other
/// writer's finalizer is lost; when it conflicts, the object is read again, and if the
/// finalizer is there by then (another leader during a handover added it), the pass goes
/// on with it.
pub(super) async fn with_finalizer(
    api: &Api<DockerContainer>,
    container: Arc<DockerContainer>,
) -> Result<Arc<DockerContainer>> {
    if !lacks_finalizer(&container) {
        return Ok(container);
    }
    let name = container.name_any();
    let mut finalizers = container.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    let patch = serde_json::json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": container.resource_version(),
        }
    });
    let added = api
        .patch(&name, &merge_patch_params(), &Patch::Merge(&patch))
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
