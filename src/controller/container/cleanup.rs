//! The finalizer's side: removing a deleted DockerContainer's containers from every
//! target, unless its `deletionPolicy` is `Orphan`.

use std::collections::HashSet;

use futures::future::join_all;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::FINALIZER;
use super::observe::{TargetView, observe_targets, owner_of, views};
use super::part::Part;
use super::status::write_status;
use crate::api::DockerContainer;
use crate::api::container::{DeletionPolicy, DockerContainerStatus};
use crate::conditions::{ConditionType, Reason, condition, keep_transition_times, now_time};
use crate::controller::context::Context;
use crate::controller::error::{Error, Result};
use crate::controller::events::{EventKind, publish, publish_outcome};
use crate::converge::executor::Executor;
use crate::converge::plan::{Action as PlanAction, ContainerRef, Plan};
use crate::docker::{DockerHost, HostContainer};
use crate::fleet::Snapshot;
use crate::fleet::connections::Attempt;

/// Removes the object's containers from every target (gracefully), unless its
/// `deletionPolicy` is `Orphan`. A target that is unreachable and holds some of them
/// keeps the finalizer, and the conditions say which; other objects are not held up.
///
/// Sharded, each replica removes them from the targets of its own shards; the home
/// replica keeps the finalizer until the others' targets show none either.
pub(super) async fn cleanup(
    container: &DockerContainer,
    ctx: &Context,
    part: Part,
    mut snapshot: Snapshot,
) -> Result<Action> {
    let uid = container.uid().unwrap_or_default();
    let reference = container.object_ref(&());
    if container.spec.deletion_policy == DeletionPolicy::Orphan {
        if !part.writes_object() {
            return Ok(Action::await_change());
        }
        publish(
            ctx,
            &reference,
            EventKind::Normal,
            "Orphaned",
            "Delete",
            "deletionPolicy is Orphan: its containers are left running".into(),
        );
        forget(ctx, &uid);
        return Ok(Action::await_change());
    }
    let slot = ctx.converging.enter().await;
    let observed = observe_targets(ctx, &mut snapshot, Attempt::Cleanup).await;
    let views = views(&snapshot, observed);
    let recorded: HashSet<&str> = container
        .status
        .iter()
        .flat_map(|s| &s.instances)
        .map(|i| i.target.as_str())
        .collect();
    let removals = views.iter().map(|view| async {
        match &view.seen.listed {
            Ok((host, listed)) => {
                let mine: Vec<&HostContainer> = listed
                    .iter()
                    .filter(|c| owner_of(c) == Some(uid.as_str()))
                    .collect();
                let shard = ctx.shards.of(&view.target.object.metadata);
                match ctx.shards.acting_on(shard) {
                    Some(_acting) => {
                        remove_all(ctx, &reference, container, view, host, &mine).await
                    }
                    None if mine.is_empty() => Ok(()),
                    None => Err(format!(
                        "target {} (shard {shard}, whose replica removes them)",
                        view.target.name
                    )),
                }
            }
            // Only a target this object was placed on can hold its containers.
            Err(e) if recorded.contains(view.target.name.as_str()) => Err(format!(
                "target {} ({}: {})",
                view.target.name,
                e.kind.reason(),
                e.message
            )),
            Err(_) => Ok(()),
        }
    });
    let blocked: Vec<String> = join_all(removals)
        .await
        .into_iter()
        .filter_map(|r| r.err())
        .collect();
    drop(slot);
    if blocked.is_empty() {
        forget(ctx, &uid);
        return Ok(Action::await_change());
    }
    if !part.writes_object() {
        // Its own targets are done or failed; the home replica reports and retries.
        return Ok(Action::requeue(super::RETRY_UNREACHABLE));
    }
    let why = format!(
        "deletion waits for {} to remove its containers; the finalizer {FINALIZER} stays until then",
        blocked.join(", ")
    );
    let previous = container.status.clone().unwrap_or_default();
    let mut conditions = previous.conditions.clone();
    let mut holding = condition(
        ConditionType::Ready,
        false,
        Reason::DeletionBlocked,
        why.clone(),
        &now_time(),
    );
    keep_transition_times(std::slice::from_mut(&mut holding), &previous.conditions);
    conditions.retain(|c| !ConditionType::Ready.is(c));
    conditions.insert(0, holding);
    let status = DockerContainerStatus {
        conditions,
        ..previous.clone()
    };
    if status != previous {
        publish(
            ctx,
            &reference,
            EventKind::Warning,
            Reason::DeletionBlocked.as_str(),
            "Delete",
            why.clone(),
        );
    }
    write_status(ctx, container, &previous, status).await?;
    Err(Error::CleanupBlocked(blocked.join(", ")))
}

/// Stops and removes `containers` on one target, with Events.
pub(super) async fn remove_all(
    ctx: &Context,
    reference: &ObjectReference,
    container: &DockerContainer,
    view: &TargetView<'_>,
    host: &DockerHost,
    containers: &[&HostContainer],
) -> Result<(), String> {
    if containers.is_empty() {
        return Ok(());
    }
    let plan = Plan {
        actions: containers
            .iter()
            .map(|c| PlanAction::Remove {
                container: ContainerRef {
                    id: c.id.clone(),
                    name: c.name.clone(),
                },
                stop_timeout_seconds: Some(container.spec.stop_timeout_seconds),
                reason: format!("DockerContainer {} was deleted", container.name_any()),
            })
            .collect(),
        ..Default::default()
    };
    let outcomes = Executor::new(host.clone(), ctx.settings.concurrency)
        .with_shutdown(ctx.settings.shutdown.clone())
        .run(&plan)
        .await;
    ctx.hosts.connections().changes().record(&view.target.uid);
    let mut failed = Vec::new();
    for outcome in &outcomes {
        publish_outcome(ctx, reference, &view.target.name, outcome);
        if let Err(e) = &outcome.result {
            failed.push(format!("{}: {e}", outcome.subject));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "target {} ({})",
            view.target.name,
            failed.join("; ")
        ))
    }
}

pub(super) fn forget(ctx: &Context, uid: &str) {
    ctx.hosts.forget_owner(uid);
    ctx.remember_placed(uid, None);
    ctx.metrics.set_container_states(uid, std::iter::empty());
    ctx.succeeded(uid);
}
