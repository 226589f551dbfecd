//! How every reconcile ends, whatever the kind: its status written by server-side apply as
//! `stevedore`, or its failure logged, counted and retried (or not, when retrying cannot
//! help).

use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::context::Context;
use super::error::{Error, Result, kube_failed};

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "stevedore";

/// The parameters of every merge patch the controller makes: named as its field manager,
/// so an object's managedFields say which fields Stevedore wrote, not "unknown".
pub fn merge_patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Writes `status` into `object`'s status subresource by server-side apply, owning exactly
/// the fields it sets.
pub async fn apply_status<K>(ctx: &Context, object: &K, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let kind = K::kind(&());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({ "apiVersion": K::api_version(&()), "kind": kind, "status": status });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_failed(format!(
        "patch the status of {kind} {namespace}/{name}"
    )))?;
    Ok(())
}

/// What to do after a failed reconcile: wait for a change when retrying cannot help (the
/// object itself is wrong), else retry with the object's back-off. Daemon failures are not
/// errors here — they are status — so what reaches this is the API server or the object.
pub fn error_policy<K>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    if error.object_gone() {
        return Action::await_change();
    }
    if error.is_waiting() {
        tracing::debug!(kind = %K::kind(&()), name = object.name_any(), %error, "waiting");
        return Action::requeue(std::time::Duration::from_secs(1));
    }
    ctx.metrics.failed(&K::kind(&()), error.metric_label());
    tracing::warn!(
        kind = %K::kind(&()),
        namespace = object.namespace().unwrap_or_default(),
        name = object.name_any(),
        error = %crate::error_chain::error_chain(error),
        "reconcile failed"
    );
    if error.is_permanent() {
        Action::await_change()
    } else {
        Action::requeue(ctx.retry_delay(&object.uid().unwrap_or_default()))
    }
}
