//! The DockerContainer reconciler: `reconcile` is the finalizer wrapper around `apply`
//! (place, resolve, converge every target it is placed on, write status) and `cleanup`
//! (remove its containers from every target, unless `deletionPolicy: Orphan`).
//!
//! ```text
//!   DockerContainer ─┐                        ┌─> converge_listed per target (owner-scoped)
//!   its targets ─────┼─> one list/target ─────┼─> placement (its replicas; the others'
//!   Secrets, maps ───┘   (shared, see observe) │   where they run)
//!                                             └─> status (server-side apply, only if changed)
//! ```
//! Its targets are those its placement may reach and those its status records, never the
//! whole namespace. A no-op reconcile costs one list call per such target, shared with the
//! other DockerContainers of the target reconciled at the same moment, and no write.
//!
//! The Docker part of a reconcile, from the first list to the last, holds one of
//! `ctx.converging`'s slots; the finalizer patch before it and the status write after it
//! do not, so that a slow API server does not leave the daemons idle.
//!
//! Sharded (`--shards`), a replica converges only the targets of its own shards; the
//! object's home replica alone places it and writes its status and finalizer (`part`).
//!
//! Files by job: `observe` (the targets and the placement input, from the fleet's
//! snapshot), `status` (instance statuses and writing them), `finalizing` (the finalizer,
//! added before the first container), `cleanup` (the finalizer's removals), `part` (what
//! falls to this replica when the fleet is sharded).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use kube::{Resource, ResourceExt};

use self::cleanup::cleanup;
pub use self::finalizing::FINALIZER;
use self::finalizing::with_finalizer;
use self::observe::{TargetView, observe_targets, owner_of, placements_for, views};
use self::part::{Part, follow_home, follow_own_writes, part_of};
use self::status::{hold, statuses, write_status};
use super::context::Context;
use super::error::{Error, Result};
use super::events::publish_outcome;
use super::shards::Acting;
use crate::api::DockerContainer;
use crate::api::container::ImageUpdatePolicy;
use crate::api::container::{DockerContainerStatus, InstanceStatus};
use crate::conditions::{container_conditions, keep_transition_times, now_time};
use crate::converge::engine::{
    DesiredSet, LOOK_AGAIN_AFTER_CHANGES, TargetIdentity, converge_listed, unix_now,
};
use crate::converge::executor::Executor;
use crate::converge::model::DesiredInstance;
use crate::converge::status::is_ready;
use crate::docker::{DockerHost, HostContainer};
use crate::fleet::connections::{Attempt, known_containers};
use crate::fleet::desired::{ImageFound, wanted};
use crate::fleet::pins::{pin_before, pin_image};
use crate::fleet::{ContainerEntry, Recorded, Snapshot};
use crate::registry::pinning::Resolved;
use crate::registry::refresh::refresh_interval;

mod cleanup;
mod finalizing;
mod observe;
mod part;
mod status;

/// How soon an object with an unreachable target is looked at again.
const RETRY_UNREACHABLE: Duration = Duration::from_secs(15);
/// How soon a home replica looks again while helpers still converge its object's
/// instances on their targets.
const AWAITING_HELPERS: Duration = Duration::from_secs(3);

/// Reconciles one DockerContainer: the finalizer first, then `apply` or `cleanup`.
pub async fn reconcile(container: Arc<DockerContainer>, ctx: Arc<Context>) -> Result<Action> {
    ctx.stores.wait_until_ready().await;
    if let Some(wait) = ctx.wait_at_start(&container) {
        return Ok(Action::requeue(wait));
    }
    let started = Instant::now();
    let namespace = container
        .namespace()
        .ok_or_else(|| Error::InvalidObject("DockerContainer has no namespace".into()))?;
    // One snapshot of its targets serves the part this replica plays and the work itself.
    let seen = ctx.stores.snapshot_for(&container);
    let result = match part_of(&ctx, &container, &seen.0) {
        // Another replica's: the gain of a shard, or a change, wakes it here.
        Part::Nothing => return Ok(Action::await_change()),
        // The home replica owns the finalizer; a helper only converges its own targets.
        Part::Helper if container.metadata.deletion_timestamp.is_some() => {
            cleanup(&container, &ctx, Part::Helper, seen.0).await
        }
        Part::Helper => apply(&container, &ctx, Part::Helper, seen).await,
        Part::Home => {
            let api: Api<DockerContainer> = Api::namespaced(ctx.client.clone(), &namespace);
            let container = with_finalizer(&api, container).await?;
            finalizer(&api, FINALIZER, container, |event| async {
                match event {
                    Event::Apply(container) => apply(&container, &ctx, Part::Home, seen).await,
                    Event::Cleanup(container) => {
                        cleanup(&container, &ctx, Part::Home, seen.0).await
                    }
                }
            })
            .await
            .map_err(|e| Error::Finalizer(Box::new(e)))
        }
    };
    ctx.metrics.reconciled("DockerContainer", started.elapsed());
    result
}

/// What converging one target found.
#[derive(Default)]
pub(super) struct TargetOutcome {
    instances: Vec<InstanceStatus>,
    updated: usize,
    problems: Vec<String>,
    retry_at: Option<u64>,
    unreachable: bool,
    /// Whether an action succeeded and left work behind it: a leftover that goes once its
    /// replacement runs, a container not running or not ready yet (failed actions wait for
    /// their back-off instead).
    look_again: bool,
    /// Whether, on a target of another replica's shard, an instance does not run the
    /// current spec yet: that replica converges it, and its work wakes nothing here.
    awaiting_helper: bool,
}

/// Places the object on the snapshot's targets, converges those this replica acts on and,
/// as its home, writes its status.
async fn apply(
    container: &DockerContainer,
    ctx: &Context,
    part: Part,
    (mut snapshot, entry): (Snapshot, ContainerEntry),
) -> Result<Action> {
    let uid = container
        .uid()
        .ok_or_else(|| Error::InvalidObject("DockerContainer has no metadata.uid".into()))?;
    if ctx.shards.is_sharded() {
        follow_own_writes(ctx, &mut snapshot, &uid, part);
    }
    // From the first look at its daemons to the last; the status is written after.
    let slot = ctx.converging.enter().await;
    let observed = observe_targets(ctx, &mut snapshot, Attempt::Reuse).await;
    let views = views(&snapshot, observed);
    let registry = snapshot.registry_for(&container.spec);
    let previous = container.status.clone().unwrap_or_default();

    let (mut placements, mut problems) = placements_for(ctx, &snapshot, &uid, &views);
    if part == Part::Helper {
        follow_home(&mut placements, &uid, &entry.recorded.replicas);
    }
    let before = pin_before(&entry, known_containers(views.iter().map(|v| &v.seen)));
    let pin = pin_image(&snapshot, &entry, before, unix_now()).await;
    let source = match &container.spec.image_source {
        Some(spec) => Some(ctx.fetcher.fetch(spec).await),
        None => None,
    };
    let image = ImageFound {
        source: source.as_ref(),
        pin: pin.as_ref(),
    };
    let wanted = match wanted(&snapshot, &entry, &placements, image, &ctx.settings.manager) {
        Ok(wanted) => wanted,
        Err(problem) => {
            drop(slot);
            return hold(container, ctx, problem, part).await;
        }
    };
    let resolved = wanted.pin.as_ref().and_then(|p| p.resolved.clone());
    problems.extend(wanted.pin.and_then(|p| p.problem));

    let reference = container.object_ref(&());
    let converges = views
        .iter()
        .zip(wanted.per_target)
        .map(|(view, instances)| {
            let acting = ctx
                .shards
                .acting_on(ctx.shards.of(&view.target.object.metadata));
            converge_target(
                ctx,
                &reference,
                &uid,
                view,
                instances,
                &previous.instances,
                Converging { acting, part },
            )
        });
    let acted = join_all(converges).await;
    drop(slot);
    let reports = views
        .iter()
        .zip(acted)
        .map(|(view, acted)| report_target(ctx, &uid, view, acted, &previous.instances));
    let outcomes = join_all(reports).await;

    let mut instances = Vec::new();
    let mut updated = 0;
    let mut retry_at: Option<u64> = None;
    let mut unreachable = false;
    let mut look_again = false;
    let mut awaiting_helper = false;
    for outcome in outcomes {
        instances.extend(outcome.instances);
        updated += outcome.updated;
        problems.extend(outcome.problems);
        retry_at = match (retry_at, outcome.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        unreachable |= outcome.unreachable;
        look_again |= outcome.look_again;
        awaiting_helper |= outcome.awaiting_helper;
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
    if part.writes_object() {
        let placed = ctx
            .shards
            .is_sharded()
            .then(|| Recorded::from_status(&status).replicas);
        write_status(ctx, container, &previous, status).await?;
        if placed.is_some() {
            ctx.remember_placed(&uid, placed);
        }
    }
    ctx.succeeded(&uid);

    let first_target = snapshot
        .targets
        .first()
        .map_or(uid.as_str(), |t| t.uid.as_str());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or_default());
    let mut wait = until_resync(ctx.settings.resync, first_target, now_ms);
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
    if look_again {
        wait = wait.min(LOOK_AGAIN_AFTER_CHANGES);
    }
    if awaiting_helper {
        // A helper's creates and starts are not disruptions, so no daemon event wakes
        // the home for them: it looks until its status can show them.
        wait = wait.min(AWAITING_HELPERS);
    }
    Ok(Action::requeue(wait))
}

/// The wait until this object's next resync, at most `resync`: at its first target's phase
/// within the period, so that the DockerContainers of one target resync at one instant
/// and share one list call (see `observe_targets`).
fn until_resync(resync: Duration, target_uid: &str, now_ms: u64) -> Duration {
    use std::hash::{Hash, Hasher};
    let period = u64::try_from(resync.as_millis()).unwrap_or(u64::MAX).max(1);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    target_uid.hash(&mut hasher);
    let phase = hasher.finish() % period;
    Duration::from_millis(period - now_ms.wrapping_add(phase) % period)
}

fn count<T>(items: impl Iterator<Item = T>) -> i32 {
    count_n(items.count())
}

fn count_n(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// What a reconcile may do on one target.
struct Converging {
    /// Present while this replica may make Docker writes on the target (it holds the
    /// target's shard); absent, it only reports what runs there.
    acting: Option<Acting>,
    /// This replica's part in the object.
    part: Part,
}

/// What converging one target left to report: the outcome, or the object's containers
/// there to read once the converge slot is free again.
enum Acted<'a> {
    /// Nothing more to read.
    Reported(TargetOutcome),
    /// Converged: what to read for the status.
    Converged(Converged<'a>),
}

/// One target's converge, before its status was read.
struct Converged<'a> {
    host: &'a DockerHost,
    desired: Arc<[DesiredInstance]>,
    /// The object's containers there before the actions.
    observed: Vec<HostContainer>,
    /// Whether an action was tried, so that only a new list shows what runs now.
    acted: bool,
    /// Whether an action succeeded.
    succeeded: bool,
    problems: Vec<String>,
    retry_at: Option<u64>,
}

/// Converges this object's containers on one target; on a target of another replica's
/// shard, only reports (for the status its home writes).
async fn converge_target<'a>(
    ctx: &Context,
    reference: &ObjectReference,
    uid: &str,
    view: &'a TargetView<'_>,
    instances: Vec<DesiredInstance>,
    previous: &[InstanceStatus],
    converging: Converging,
) -> Acted<'a> {
    let (host, listed) = match &view.seen.listed {
        Ok((host, listed)) => (host, listed),
        Err(error) => {
            if instances.is_empty() {
                return Acted::Reported(TargetOutcome::default());
            }
            return Acted::Reported(TargetOutcome {
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
            });
        }
    };
    if instances.is_empty() && !listed.iter().any(|c| owner_of(c) == Some(uid)) {
        return Acted::Reported(TargetOutcome::default());
    }
    if converging.acting.is_none() {
        if !converging.part.writes_object() {
            return Acted::Reported(TargetOutcome::default());
        }
        let observed = owned_by(listed, uid);
        let wanted = instances.len();
        let (instances, updated) =
            report_instances(host, view, &instances, &observed, previous).await;
        return Acted::Reported(TargetOutcome {
            instances,
            updated,
            awaiting_helper: updated < wanted,
            ..Default::default()
        });
    }
    let identity = TargetIdentity {
        uid: view.target.uid.clone(),
        manager: ctx.settings.manager.clone(),
    };
    let desired = DesiredSet {
        instances: instances.into(),
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
        listed.as_ref().clone(),
    )
    .await;
    let seen: Vec<String> = report.observed.iter().map(|c| c.id.clone()).collect();
    ctx.hosts.put_memory(&view.target.uid, uid, memory, &seen);
    if !report.outcomes.is_empty() {
        // No list from before these writes is shared from now on.
        ctx.hosts.connections().changes().record(&view.target.uid);
    }

    for outcome in &report.outcomes {
        publish_outcome(ctx, reference, &view.target.name, outcome);
    }
    let problems = report
        .unfinished()
        .iter()
        .map(|f| f.on(&view.target.name))
        .collect();
    Acted::Converged(Converged {
        host,
        desired: desired.instances,
        acted: !report.outcomes.is_empty(),
        succeeded: report.outcomes.iter().any(|o| o.result.is_ok()),
        observed: report.observed,
        problems,
        retry_at: report.plan.retry_at,
    })
}

/// What one target's converge left its object's containers like, read after the converge
/// slot is free: reading is not converging, and the next object's actions need not wait
/// for it.
async fn report_target(
    ctx: &Context,
    uid: &str,
    view: &TargetView<'_>,
    acted: Acted<'_>,
    previous: &[InstanceStatus],
) -> TargetOutcome {
    let Converged {
        host,
        desired,
        observed,
        acted,
        succeeded,
        problems,
        retry_at,
    } = match acted {
        Acted::Reported(outcome) => return outcome,
        Acted::Converged(converged) => converged,
    };
    // After actions, look again: the status must show what runs now.
    let observed = if acted {
        match ctx.hosts.connections().list(&view.target.uid, host).await {
            Ok(now) => owned_by(&now, uid),
            Err(_) => observed,
        }
    } else {
        observed
    };
    let (instances, updated) = report_instances(host, view, &desired, &observed, previous).await;
    // What runs now is exactly what is wanted, running and ready: a look in a moment
    // would find nothing to do, and a container that dies or changes health from now on
    // wakes its owner through the daemon's events.
    let settled = updated == desired.len()
        && observed.len() == desired.len()
        && instances.iter().all(is_ready);
    TargetOutcome {
        instances,
        updated,
        problems,
        retry_at,
        unreachable: false,
        look_again: succeeded && !settled,
        awaiting_helper: false,
    }
}

/// The containers of `listed` that the object `uid` owns.
fn owned_by(listed: &[HostContainer], uid: &str) -> Vec<HostContainer> {
    listed
        .iter()
        .filter(|c| owner_of(c) == Some(uid))
        .cloned()
        .collect()
}

/// The statuses of the object's `desired` instances on one target as `observed` shows
/// them, and how many of them run the current spec.
async fn report_instances(
    host: &DockerHost,
    view: &TargetView<'_>,
    desired: &[DesiredInstance],
    observed: &[HostContainer],
    previous: &[InstanceStatus],
) -> (Vec<InstanceStatus>, usize) {
    let updated = desired
        .iter()
        .filter(|d| d.current_in(observed).is_some())
        .count();
    let instances = statuses(host, &view.target.name, desired, observed, previous).await;
    (instances, updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_objects_of_one_target_resync_at_one_instant_within_the_period() {
        let period = Duration::from_secs(300);
        let due = |target: &str, now_ms: u64| {
            now_ms + until_resync(period, target, now_ms).as_millis() as u64
        };
        for now in [1_000_000, 1_000_001, 1_123_456, 1_299_999] {
            let wait = until_resync(period, "target-a", now);
            assert!(wait > Duration::ZERO && wait <= period, "{wait:?}");
        }
        // Finished at different moments of one period, they are due together.
        let first = due("target-a", 1_000_000);
        let spread: Vec<u64> = (0..50)
            .map(|i| due("target-a", first - 1 - i * 997))
            .collect();
        assert!(spread.iter().all(|d| *d == first), "{spread:?}");
        // Another target has its own phase.
        assert_ne!(due("target-b", 1_000_000), first);
    }
}
