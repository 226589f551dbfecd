//! The DockerTarget reconciler: the heartbeat of one daemon. Each run connects (reusing
//! the connection while the spec and Secrets are unchanged), asks the daemon who it is,
//! counts the managed containers, lists its images, and writes status when it changed.
//!
//! Deleting a target alone stops managing its host and leaves what runs there alone. But
//! when its DockerContainers go with it (a namespace deleted, `kubectl delete -f dir/`, a
//! GitOps prune), their cleanups need the target to reach the host: its finalizer keeps
//! it until no DockerContainer being deleted still has containers there.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::error::{Error, Result};
use super::events::{EventKind, publish};
use super::outcome::apply_status;
use crate::api::DockerTarget;
use crate::api::target::DockerTargetStatus;
use crate::conditions::{keep_transition_times, now_time, target_conditions};
use crate::docker::HostContainer;
use crate::docker::material::target_material;
use crate::labels::LABEL_MANAGER;

/// The finalizer that keeps a deleted target while DockerContainers deleted with it still
/// have containers on its host.
pub const FINALIZER: &str = "stevedore.dev/containers";

/// How long a deleted target waits for DockerContainers deleted at the same time to be
/// marked as deleted too (a namespace's objects are deleted kind by kind).
const DELETION_SETTLE: Duration = Duration::from_secs(5);

/// Checks one target and writes its status; a deleted one goes once nothing needs it.
pub async fn reconcile(target: Arc<DockerTarget>, ctx: Arc<Context>) -> Result<Action> {
    ctx.stores.wait_until_ready().await;
    if !ctx.shards.owns(&target.metadata) {
        // Another replica's shard: taking it over wakes the target here.
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let namespace = target
        .namespace()
        .ok_or_else(|| Error::InvalidObject("DockerTarget has no namespace".into()))?;
    let api: Api<DockerTarget> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, target, |event| async {
        match event {
            Event::Apply(target) => heartbeat(&target, &ctx).await,
            Event::Cleanup(target) => release(&target, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled("DockerTarget", started.elapsed());
    result
}

/// Lets a deleted target go once no DockerContainer being deleted records containers on
/// it; until then it keeps its connection for their cleanups.
async fn release(target: &DockerTarget, ctx: &Context) -> Result<Action> {
    let name = target.name_any();
    let namespace = target.namespace().unwrap_or_default();
    let uid = target.uid().unwrap_or_default();
    let settling = ctx.deletion_seen(&uid).elapsed() < DELETION_SETTLE;
    let waiting: Vec<String> = ctx
        .stores
        .containers
        .state()
        .iter()
        .filter(|c| c.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|c| c.metadata.deletion_timestamp.is_some())
        .filter(|c| {
            c.finalizers()
                .iter()
                .any(|f| f == super::container::FINALIZER)
        })
        .filter(|c| c.has_instances_on(&name))
        .map(|c| c.name_any())
        .collect();
    // Returning an error keeps the finalizer (the finalizer helper removes it on Ok).
    if !waiting.is_empty() {
        tracing::info!(target = %name, containers = ?waiting, "deleted target waits for the cleanup of its DockerContainers");
        return Err(Error::DeletionWaiting(format!(
            "the cleanup of {}",
            waiting.join(", ")
        )));
    }
    if settling {
        return Err(Error::DeletionWaiting(
            "DockerContainers deleted at the same time".into(),
        ));
    }
    ctx.forget_deletion(&uid);
    ctx.forget_count(&uid);
    // Its connection goes, and its event stream with it (with any other target's that is
    // gone from the cache): swept here, once per deletion, not on every heartbeat.
    let mut live = uids(&ctx.stores.targets);
    live.remove(&uid);
    ctx.hosts.retain(&live);
    Ok(Action::await_change())
}

/// The UIDs of every object in `store`.
fn uids<K>(store: &Store<K>) -> HashSet<String>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.state().iter().filter_map(|o| o.uid()).collect()
}

/// How many of `listed` this manager manages; those whose DockerContainer is gone are
/// logged (they are left running, not removed). Each owner is looked up by the name its
/// labels give ([`Stores::owner_of`]): the cost is the target's containers, not the
/// namespace's.
///
/// [`Stores::owner_of`]: super::context::Stores::owner_of
fn count_managed(target: &DockerTarget, listed: &[HostContainer], ctx: &Context) -> i32 {
    let ours = listed
        .iter()
        .filter(|c| c.labels.get(LABEL_MANAGER) == Some(&ctx.settings.manager));
    let unowned = ours
        .clone()
        .filter(|c| ctx.stores.owner_of(c).is_none())
        .count();
    if unowned > 0 {
        tracing::info!(
            target = %target.name_any(),
            unowned,
            "containers whose DockerContainer no longer exists are left running"
        );
    }
    i32::try_from(ours.count()).unwrap_or(i32::MAX)
}

async fn heartbeat(target: &DockerTarget, ctx: &Context) -> Result<Action> {
    let namespace = target
        .namespace()
        .ok_or_else(|| Error::InvalidObject("DockerTarget has no namespace".into()))?;
    let uid = target
        .uid()
        .ok_or_else(|| Error::InvalidObject("DockerTarget has no metadata.uid".into()))?;
    let sources = ctx.stores.sources(&namespace);
    let material = target_material(&target.spec, &sources);
    let previous = target.status.clone().unwrap_or_default();
    let mut status = DockerTargetStatus {
        observed_generation: target.metadata.generation,
        ..previous.clone()
    };
    let now = now_time();
    let checked = match ctx.hosts.check(target, material).await {
        Ok(host) => match host.server_info().await {
            Ok(info) => {
                status.server = Some(info);
                // Through the cache: a failure marks the connection, a list is remembered.
                if let Ok(listed) = ctx.hosts.connections().list(&uid, &host).await {
                    status.managed_containers = count_managed(target, &listed, ctx);
                }
                if let Ok(images) = host.list_images().await {
                    status.record_images(images);
                }
                Ok(())
            }
            Err(e) => {
                ctx.hosts.connections().mark_failed(&uid, &e);
                Err(e)
            }
        },
        Err(e) => Err(e),
    };
    status.conditions = target_conditions(
        checked
            .as_ref()
            .err()
            .map(|e| (e.kind.reason(), e.message.as_str())),
        &now,
    );
    keep_transition_times(&mut status.conditions, &previous.conditions);
    // While a fleet converges, every heartbeat finds another count: written each time, that
    // was seven writes per target of a thousand-target cold start. A count is written once
    // two heartbeats in a row found it.
    let settled = ctx.count_settled(&uid, status.managed_containers);
    if !settled && target.status.is_some() {
        status.managed_containers = previous.managed_containers;
    }
    let ready_changed = status.conditions.first().map(|c| &c.status)
        != previous.conditions.first().map(|c| &c.status);
    // Never rewritten on a timer: with a thousand targets that would be a write per target
    // per interval for nothing. Ready's condition says whether the daemon answers now.
    status.last_seen_time = match (&checked, &previous.last_seen_time) {
        (Ok(()), Some(seen)) if !differs(&status, &previous) => Some(seen.clone()),
        (Ok(()), _) => Some(now.clone()),
        (Err(_), seen) => seen.clone(),
    };
    if status != previous || target.status.is_none() {
        if ready_changed {
            let (type_, reason, note) = match &checked {
                Ok(()) => (
                    EventKind::Normal,
                    "Connected",
                    "the daemon answers".to_string(),
                ),
                Err(e) => (EventKind::Warning, e.kind.reason(), e.message.clone()),
            };
            publish(ctx, &target.object_ref(&()), type_, reason, "Connect", note);
        }
        apply_status(ctx, target, &status).await?;
    }
    ctx.succeeded(&uid);
    Ok(Action::requeue(ctx.settings.heartbeat))
}

/// Whether anything but `lastSeenTime` differs.
fn differs(a: &DockerTargetStatus, b: &DockerTargetStatus) -> bool {
    let strip = |s: &DockerTargetStatus| DockerTargetStatus {
        last_seen_time: None,
        ..s.clone()
    };
    strip(a) != strip(b)
}
