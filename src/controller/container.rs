//! The DockerContainer reconciler: `reconcile` is the finalizer wrapper around `apply`
//! (place, resolve, converge every target it is placed on, write status) and `cleanup`
//! (remove its containers from every target, unless `deletionPolicy: Orphan`).
//!
//! ```text
//!   DockerContainer ─┐                     ┌─> converge_listed per target (owner-scoped)
//!   targets (store) ─┼─> one list/target ──┼─> placement (all owners' labels)
//!   Secrets, maps ───┘                     └─> status (server-side apply, only if changed)
//! ```
//! A no-op reconcile costs one list call per target of the namespace and no write.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::error::{Error, Result};
use super::events::{EventKind, publish};
use super::outcome::apply_status;
use crate::api::container::ImageUpdatePolicy;
use crate::api::container::{DeletionPolicy, DockerContainerStatus, InstanceStatus};
use crate::api::{CONDITION_READY, DockerContainer};
use crate::conditions::{
    CONDITION_DEGRADED, CONDITION_PROGRESSING, condition, container_conditions,
    keep_transition_times, mirror_for_kstatus, now_time,
};
use crate::converge::engine::{
    DesiredSet, LOOK_AGAIN_AFTER_CHANGES, TargetIdentity, converge_listed, unix_now,
};
use crate::converge::env::resolve_env;
use crate::converge::executor::{Executor, Outcome};
use crate::converge::model::DesiredInstance;
use crate::converge::plan::{Action as PlanAction, ContainerRef, Plan};
use crate::converge::status::{instance_statuses, is_ready};
use crate::docker::{DockerError, DockerHost, ErrorKind, HostContainer};
use crate::fleet::connections::{Attempt, observe};
use crate::fleet::desired::{ImageChoice, on_targets};
use crate::fleet::pins::{pin_before, pin_image};
use crate::fleet::placing::{Observation, place_snapshot};
use crate::fleet::{ContainerEntry, Recorded, Snapshot, TargetEntry};
use crate::labels::LABEL_UID;
use crate::placement::Placements;
use crate::registry::pinning::Resolved;
use crate::registry::refresh::refresh_interval;

/// The finalizer that removes an object's containers before it goes.
pub const FINALIZER: &str = "stevedore.dev/cleanup";
/// How soon an object with an unreachable target is looked at again.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(15);

/// Reconciles one DockerContainer: the finalizer first, then `apply` or `cleanup`.
pub async fn reconcile(container: Arc<DockerContainer>, ctx: Arc<Context>) -> Result<Action> {
    ctx.stores.wait_until_ready().await;
    let started = Instant::now();
    let namespace = container
        .namespace()
        .ok_or_else(|| Error::InvalidObject("DockerContainer has no namespace".into()))?;
    let api: Api<DockerContainer> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, container, |event| async {
        match event {
            Event::Apply(container) => apply(&container, &ctx).await,
            Event::Cleanup(container) => cleanup(&container, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.reconciled("DockerContainer", started.elapsed());
    result
}

/// One target as this reconcile sees it.
struct TargetView<'a> {
    target: &'a TargetEntry,
    /// The daemon and every container labelled for the target, or why not.
    state: Result<(DockerHost, Vec<HostContainer>), DockerError>,
}

/// Connects to (or reuses the connection of) every target of the namespace and lists its
/// managed containers: one list call per target.
async fn observe_targets<'a>(
    ctx: &Context,
    snapshot: &'a Snapshot,
    attempt: Attempt,
) -> Vec<TargetView<'a>> {
    let observed = observe(ctx.hosts.connections(), snapshot, attempt).await;
    snapshot
        .targets
        .iter()
        .zip(observed)
        .map(|(target, state)| TargetView { target, state })
        .collect()
}

fn owner_of(container: &HostContainer) -> Option<&str> {
    container.labels.get(LABEL_UID).map(String::as_str)
}

/// The snapshot of the container's namespace, with the object being reconciled as it was
/// handed over (the cache may not hold it yet), and that object's entry.
fn snapshot_with(ctx: &Context, container: &DockerContainer) -> (Snapshot, ContainerEntry) {
    let namespace = container.namespace().unwrap_or_default();
    let mut snapshot = ctx.stores.snapshot(&namespace);
    let entry = ContainerEntry {
        name: container.name_any(),
        uid: container.uid().unwrap_or_default(),
        object: Arc::new(container.clone()),
        recorded: container
            .status
            .as_ref()
            .map(Recorded::from_status)
            .unwrap_or_default(),
    };
    snapshot.containers.retain(|c| c.uid != entry.uid);
    snapshot.containers.push(entry.clone());
    snapshot.containers.sort_by(|a, b| a.name.cmp(&b.name));
    (snapshot, entry)
}

/// What each target runs: this reconcile's list or, while it cannot be listed, its last.
fn known_lists(ctx: &Context, views: &[TargetView<'_>]) -> Vec<Option<Arc<Vec<HostContainer>>>> {
    views
        .iter()
        .map(|v| match &v.state {
            Ok((_, listed)) => Some(Arc::new(listed.clone())),
            Err(_) => ctx.hosts.connections().last_listed(&v.target.uid),
        })
        .collect()
}

/// Places every replica of every DockerContainer of the namespace from what the daemons
/// run (see [`place_snapshot`]), and says which of `uid`'s replicas have nowhere to go.
fn placements_for(
    ctx: &Context,
    snapshot: &Snapshot,
    uid: &str,
    views: &[TargetView<'_>],
    known: &[Option<Arc<Vec<HostContainer>>>],
) -> (Placements, Vec<String>) {
    let observations = views
        .iter()
        .zip(known)
        .map(|(v, known)| {
            let observation = Observation {
                answering: v.state.is_ok(),
                unreachable_since: ctx.hosts.unreachable_since(&v.target.uid),
                listed: known.as_deref().map(Vec::as_slice),
            };
            (v.target.name.as_str(), observation)
        })
        .collect();
    let placements = place_snapshot(
        snapshot,
        &observations,
        unix_now(),
        ctx.settings.grace.as_secs(),
    );
    let unplaced = placements
        .unplaced
        .iter()
        .filter(|u| u.owner_uid == uid)
        .map(|u| format!("replica {} not placed: {}", u.replica, u.reason))
        .collect();
    (placements, unplaced)
}

/// What converging one target found.
#[derive(Default)]
struct TargetOutcome {
    instances: Vec<InstanceStatus>,
    updated: usize,
    problems: Vec<String>,
    retry_at: Option<u64>,
    unreachable: bool,
    /// Whether an action succeeded (failed ones wait for their back-off instead).
    changed: bool,
}

async fn apply(container: &DockerContainer, ctx: &Context) -> Result<Action> {
    let uid = container
        .uid()
        .ok_or_else(|| Error::InvalidObject("DockerContainer has no metadata.uid".into()))?;
    let (snapshot, entry) = snapshot_with(ctx, container);
    let env = match resolve_env(&container.spec, &snapshot.sources) {
        Ok(env) => env,
        Err(e) => return invalid(container, ctx, e.to_string()).await,
    };
    let registry = snapshot.registry_for(&container.spec);
    let previous = container.status.clone().unwrap_or_default();

    let views = observe_targets(ctx, &snapshot, Attempt::Reuse).await;
    let known = known_lists(ctx, &views);
    let (placements, mut problems) = placements_for(ctx, &snapshot, &uid, &views, &known);
    let before = pin_before(&entry, known.iter().flatten().flat_map(|l| l.iter()));
    let resolved = match pin_image(&snapshot, &entry, before, unix_now()).await {
        None => None,
        Some(Ok(pinned)) => {
            problems.extend(pinned.problem);
            pinned.resolved
        }
        Some(Err(why)) => {
            return hold(
                container,
                ctx,
                "ImageNotResolved",
                why,
                Action::requeue(RETRY_UNREACHABLE),
            )
            .await;
        }
    };
    let source = match &container.spec.image_source {
        Some(spec) => match ctx.fetcher.fetch(spec).await {
            Ok(source) => Some(source),
            Err(why) => {
                return hold(
                    container,
                    ctx,
                    "SourceUnavailable",
                    why,
                    Action::requeue(RETRY_UNREACHABLE),
                )
                .await;
            }
        },
        None => None,
    };
    let image = ImageChoice {
        source: source.as_ref(),
        resolved: resolved.as_ref(),
    };
    // Every target's instances are built first: a spec that cannot become a container
    // fails before anything is touched anywhere.
    let manager = &ctx.settings.manager;
    let wanted = match on_targets(&snapshot, &entry, &placements, &env, image, manager) {
        Ok(wanted) => wanted,
        Err(e) => return invalid(container, ctx, e).await,
    };

    let reference = container.object_ref(&());
    let converges = views.iter().zip(wanted).map(|(view, instances)| {
        converge_target(ctx, &reference, &uid, view, instances, &previous.instances)
    });
    let outcomes = join_all(converges).await;

    let mut instances = Vec::new();
    let mut updated = 0;
    let mut retry_at: Option<u64> = None;
    let mut unreachable = false;
    let mut changed = false;
    for outcome in outcomes {
        instances.extend(outcome.instances);
        updated += outcome.updated;
        problems.extend(outcome.problems);
        retry_at = match (retry_at, outcome.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        unreachable |= outcome.unreachable;
        changed |= outcome.changed;
    }
    instances.sort_by(|a, b| a.container_name.cmp(&b.container_name));
    ctx.metrics
        .set_container_states(&uid, instances.iter().map(|i| i.state.as_str()));

    let wanted_replicas = container.spec.placement.replicas;
    let ready = count(instances.iter().filter(|i| is_ready(i)));
    let now = now_time();
    let mut conditions =
        container_conditions(wanted_replicas, ready, count_n(updated), &problems, &now);
    keep_transition_times(&mut conditions, &previous.conditions);
    let replicas = count(instances.iter().filter(|i| i.container_id.is_some()));
    instances.truncate(crate::api::MAX_STATUS_INSTANCES);
    let status = DockerContainerStatus {
        observed_generation: container.metadata.generation,
        replicas,
        ready_replicas: ready,
        updated_replicas: count_n(updated),
        resolved_image: resolved.as_ref().map(|r| r.image.clone()),
        resolved_from: resolved.as_ref().map(|r| r.from.clone()),
        resolved_at: resolved.as_ref().and_then(Resolved::at_time),
        instances,
        conditions,
    };
    write_status(ctx, container, &previous, status).await?;
    ctx.succeeded(&uid);

    let mut wait = ctx.settings.resync;
    if let (Some(registry), ImageUpdatePolicy::FollowTag) =
        (registry, container.spec.image_update_policy)
    {
        wait = wait.min(refresh_interval(registry));
    }
    if let Some(at) = retry_at {
        wait = wait.min(Duration::from_secs(at.saturating_sub(unix_now()).max(1)));
    }
    if unreachable {
        wait = wait.min(RETRY_UNREACHABLE);
    }
    if changed {
        wait = wait.min(LOOK_AGAIN_AFTER_CHANGES);
    }
    Ok(Action::requeue(wait))
}

fn count<T>(items: impl Iterator<Item = T>) -> i32 {
    count_n(items.count())
}

fn count_n(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Converges this object's containers on one target and reports what they look like.
async fn converge_target(
    ctx: &Context,
    reference: &ObjectReference,
    uid: &str,
    view: &TargetView<'_>,
    instances: Vec<DesiredInstance>,
    previous: &[InstanceStatus],
) -> TargetOutcome {
    let (host, listed) = match &view.state {
        Ok((host, listed)) => (host, listed),
        Err(error) => {
            if instances.is_empty() {
                return TargetOutcome::default();
            }
            return TargetOutcome {
                problems: vec![format!("target {}: {error}", view.target.name)],
                instances: instances
                    .iter()
                    .map(|d| InstanceStatus {
                        target: view.target.name.clone(),
                        container_name: d.name.clone(),
                        state: "unknown".into(),
                        message: Some(error.to_string()),
                        ..Default::default()
                    })
                    .collect(),
                unreachable: true,
                ..Default::default()
            };
        }
    };
    if instances.is_empty() && !listed.iter().any(|c| owner_of(c) == Some(uid)) {
        return TargetOutcome::default();
    }
    let identity = TargetIdentity {
        uid: view.target.uid.clone(),
        manager: ctx.settings.manager.clone(),
    };
    let desired = DesiredSet {
        instances,
        owner_scope: Some(uid.to_string()),
        ..Default::default()
    };
    let executor = Executor::new(host.clone(), ctx.settings.concurrency)
        .with_shutdown(ctx.settings.shutdown.clone());
    let mut memory = ctx.hosts.take_memory(&view.target.uid, uid);
    let report = converge_listed(
        host,
        &executor,
        &identity,
        &desired,
        &mut memory,
        listed.clone(),
    )
    .await;
    let seen: Vec<String> = report.observed.iter().map(|c| c.id.clone()).collect();
    ctx.hosts.put_memory(&view.target.uid, uid, memory, &seen);

    for outcome in &report.outcomes {
        publish_outcome(ctx, reference, &view.target.name, outcome).await;
    }
    let problems = report
        .unfinished()
        .iter()
        .map(|f| f.on(&view.target.name))
        .collect();
    // After changes, look again: the status must show what runs now.
    let observed = if report.outcomes.is_empty() {
        report.observed
    } else {
        match ctx.hosts.connections().list(&view.target.uid, host).await {
            Ok(mut now) => {
                now.retain(|c| owner_of(c) == Some(uid));
                now
            }
            Err(_) => report.observed,
        }
    };
    let updated = desired
        .instances
        .iter()
        .filter(|d| d.current_in(&observed).is_some())
        .count();
    TargetOutcome {
        instances: statuses(
            host,
            &view.target.name,
            &desired.instances,
            &observed,
            previous,
        )
        .await,
        updated,
        problems,
        retry_at: report.plan.retry_at,
        unreachable: false,
        changed: report.outcomes.iter().any(|o| o.result.is_ok()),
    }
}

/// Instance statuses, inspecting only containers whose list entry differs from what the
/// previous status recorded (a running container that did not change needs no call).
async fn statuses(
    host: &DockerHost,
    target: &str,
    desired: &[DesiredInstance],
    observed: &[HostContainer],
    previous: &[InstanceStatus],
) -> Vec<InstanceStatus> {
    let mut kept = Vec::new();
    let mut to_inspect = Vec::new();
    for instance in desired {
        let unchanged = observed
            .iter()
            .find(|c| c.name == instance.name)
            .and_then(|c| {
                previous.iter().find(|p| {
                    p.target == target
                        && p.container_id.as_deref() == Some(c.id.as_str())
                        && p.state == c.state.as_str()
                        && c.state.as_str() == "running"
                        && p.health.as_deref() == c.health.map(|h| h.as_str())
                })
            });
        match unchanged {
            Some(p) => kept.push(p.clone()),
            None => to_inspect.push(instance.clone()),
        }
    }
    kept.extend(instance_statuses(host, target, &to_inspect, observed).await);
    kept
}

/// Writes `status` by server-side apply, only when it differs from `previous`.
async fn write_status(
    ctx: &Context,
    container: &DockerContainer,
    previous: &DockerContainerStatus,
    status: DockerContainerStatus,
) -> Result<()> {
    if &status == previous && container.status.is_some() {
        return Ok(());
    }
    apply_status(ctx, container, &status).await
}

/// An object that cannot converge as written: say why in its conditions (and an Event,
/// once), touch nothing on the hosts, and wait for a change.
async fn invalid(container: &DockerContainer, ctx: &Context, why: String) -> Result<Action> {
    hold(container, ctx, "InvalidSpec", why, Action::await_change()).await
}

/// Leaves every container of the object as it is and says why in its conditions (and an
/// Event, when that is news); `then` says when to look again.
async fn hold(
    container: &DockerContainer,
    ctx: &Context,
    reason: &str,
    why: String,
    then: Action,
) -> Result<Action> {
    let previous = container.status.clone().unwrap_or_default();
    let now = now_time();
    let mut conditions = vec![
        condition(CONDITION_READY, false, reason, why.clone(), &now),
        condition(CONDITION_PROGRESSING, false, reason, why.clone(), &now),
        condition(CONDITION_DEGRADED, true, reason, why.clone(), &now),
    ];
    mirror_for_kstatus(&mut conditions);
    keep_transition_times(&mut conditions, &previous.conditions);
    let status = DockerContainerStatus {
        observed_generation: container.metadata.generation,
        conditions,
        ..previous.clone()
    };
    if status != previous {
        publish(
            ctx,
            &container.object_ref(&()),
            EventKind::Warning,
            reason,
            "Validate",
            why,
        )
        .await;
    }
    write_status(ctx, container, &previous, status).await?;
    Ok(then)
}

/// Removes the object's containers from every target (gracefully), unless its
/// `deletionPolicy` is `Orphan`. A target that is unreachable and holds some of them
/// keeps the finalizer, and the conditions say which; other objects are not held up.
async fn cleanup(container: &DockerContainer, ctx: &Context) -> Result<Action> {
    let uid = container.uid().unwrap_or_default();
    let reference = container.object_ref(&());
    if container.spec.deletion_policy == DeletionPolicy::Orphan {
        publish(
            ctx,
            &reference,
            EventKind::Normal,
            "Orphaned",
            "Delete",
            "deletionPolicy is Orphan: its containers are left running".into(),
        )
        .await;
        forget(ctx, &uid);
        return Ok(Action::await_change());
    }
    let (snapshot, _) = snapshot_with(ctx, container);
    let views = observe_targets(ctx, &snapshot, Attempt::Cleanup).await;
    let recorded: HashSet<&str> = container
        .status
        .iter()
        .flat_map(|s| &s.instances)
        .map(|i| i.target.as_str())
        .collect();
    let removals = views.iter().map(|view| async {
        match &view.state {
            Ok((host, listed)) => {
                let mine: Vec<&HostContainer> = listed
                    .iter()
                    .filter(|c| owner_of(c) == Some(uid.as_str()))
                    .collect();
                remove_all(ctx, &reference, container, view, host, &mine).await
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
    if blocked.is_empty() {
        forget(ctx, &uid);
        return Ok(Action::await_change());
    }
    let why = format!(
        "deletion waits for {} to remove its containers; the finalizer {FINALIZER} stays until then",
        blocked.join(", ")
    );
    let previous = container.status.clone().unwrap_or_default();
    let mut conditions = previous.conditions.clone();
    let mut holding = condition(
        CONDITION_READY,
        false,
        "DeletionBlocked",
        why.clone(),
        &now_time(),
    );
    keep_transition_times(std::slice::from_mut(&mut holding), &previous.conditions);
    conditions.retain(|c| c.type_ != CONDITION_READY);
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
            "DeletionBlocked",
            "Delete",
            why.clone(),
        )
        .await;
    }
    write_status(ctx, container, &previous, status).await?;
    Err(Error::CleanupBlocked(blocked.join(", ")))
}

/// Stops and removes `containers` on one target, with Events.
async fn remove_all(
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
    let mut failed = Vec::new();
    for outcome in &outcomes {
        publish_outcome(ctx, reference, &view.target.name, outcome).await;
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

fn forget(ctx: &Context, uid: &str) {
    ctx.hosts.forget_owner(uid);
    ctx.metrics.set_container_states(uid, std::iter::empty());
    ctx.succeeded(uid);
}

/// An Event for one action the executor took on a target.
async fn publish_outcome(
    ctx: &Context,
    reference: &ObjectReference,
    target: &str,
    outcome: &Outcome,
) {
    let interrupted = matches!(&outcome.result, Err(e) if e.kind == ErrorKind::Interrupted);
    if ctx.settings.shutdown.is_draining() || interrupted {
        // What a stopping controller finished or put back is what the next leader finds.
        let what = if outcome.rolled_back() {
            "rolled back while shutting down"
        } else if interrupted {
            "not done: shutting down"
        } else if outcome.result.is_ok() {
            "finished while shutting down"
        } else {
            "failed while shutting down"
        };
        let error = outcome.result.as_ref().err().map(ToString::to_string);
        tracing::info!(subject = %outcome.subject, target, verb = %outcome.verb, error, "{what}");
    }
    if interrupted && !outcome.rolled_back() {
        // Not an event: nothing happened to the container.
        return;
    }
    let (type_, reason, note) = match &outcome.result {
        Err(e) if e.kind == ErrorKind::Interrupted => (
            EventKind::Normal,
            "RolledBack".to_string(),
            format!("{} on {target}: {}: {e}", outcome.subject, outcome.reason),
        ),
        Ok(_) => (
            EventKind::Normal,
            outcome.verb.past_tense().to_string(),
            format!("{} on {target}: {}", outcome.subject, outcome.reason),
        ),
        Err(e) => (
            EventKind::Warning,
            format!("{}Failed", outcome.verb),
            format!("{} on {target}: {}: {e}", outcome.subject, outcome.reason),
        ),
    };
    publish(ctx, reference, type_, &reason, outcome.verb.as_str(), note).await;
}
