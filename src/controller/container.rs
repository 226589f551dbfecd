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

use super::context::{Context, registry_serving};
use super::error::{Error, Result};
use super::events::{EventKind, publish};
use super::outcome::apply_status;
use crate::api::container::ImageUpdatePolicy;
use crate::api::container::{DeletionPolicy, DockerContainerStatus, InstanceStatus};
use crate::api::{CONDITION_READY, DockerContainer, DockerTarget};
use crate::conditions::{
    CONDITION_DEGRADED, CONDITION_PROGRESSING, condition, container_conditions,
    keep_transition_times, mirror_for_kstatus, now_time,
};
use crate::converge::engine::{
    DesiredSet, LOOK_AGAIN_AFTER_CHANGES, TargetIdentity, converge_listed, unix_now,
};
use crate::converge::env::resolve_env;
use crate::converge::executor::{Executor, Outcome};
use crate::converge::model::{
    DesiredInstance, InstanceContext, Owner, desired_instances, host_ports,
};
use crate::converge::plan::{Action as PlanAction, ContainerRef, Plan};
use crate::converge::status::{instance_statuses, is_ready};
use crate::docker::material::target_material;
use crate::docker::{DockerError, DockerHost, ErrorKind, HostContainer};
use crate::labels::LABEL_TARGET;
use crate::labels::{LABEL_REPLICA, LABEL_UID};
use crate::placement::{Existing, TargetInfo, Workload, place};
use crate::registry::credentials::credentials_of;
use crate::registry::pinning::{Resolved, image_to_run, pin};
use crate::registry::refresh::refresh_interval;
use crate::sources::StaticSources;

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
struct TargetView {
    target: Arc<DockerTarget>,
    uid: String,
    name: String,
    /// The daemon and every container labelled for the target, or why not.
    state: Result<(DockerHost, Vec<HostContainer>), DockerError>,
}

/// Connects to (or reuses the connection of) every target of the namespace and lists its
/// managed containers: one list call per target.
async fn observe_targets(
    ctx: &Context,
    namespace: &str,
    sources: &StaticSources,
    for_cleanup: bool,
) -> Vec<TargetView> {
    let views = ctx.stores.targets_in(namespace).into_iter().map(|target| {
        let material = target_material(&target.spec, sources);
        async move {
            let uid = target.uid().unwrap_or_default();
            let name = target.name_any();
            let connection = if for_cleanup {
                ctx.hosts.connection_for_cleanup(&target, material).await
            } else {
                ctx.hosts.connection(&target, material, false).await
            };
            let state = match connection {
                Ok(host) => match host.list_labelled(LABEL_TARGET, &uid).await {
                    Ok(listed) => Ok((host, listed)),
                    Err(e) => {
                        ctx.hosts.mark_failed(&uid, &e);
                        Err(e)
                    }
                },
                Err(e) => Err(e),
            };
            TargetView {
                target,
                uid,
                name,
                state,
            }
        }
    });
    join_all(views).await
}

fn owner_of(container: &HostContainer) -> Option<&str> {
    container.labels.get(LABEL_UID).map(String::as_str)
}

/// Places every replica of every DockerContainer of the namespace from what the daemons
/// run, and returns this object's share: (target name, replicas) and the unplaced ones.
fn placements_for(
    ctx: &Context,
    container: &DockerContainer,
    uid: &str,
    views: &[TargetView],
) -> (Vec<(String, Vec<u32>)>, Vec<String>) {
    let now = unix_now();
    let infos: Vec<TargetInfo> = views
        .iter()
        .map(|v| TargetInfo {
            name: v.name.clone(),
            labels: v.target.labels().clone(),
            ready: v.state.is_ok(),
            unreachable_since: match v.state {
                Ok(_) => None,
                Err(_) => ctx.hosts.unreachable_since(&v.uid).or(Some(now)),
            },
            unschedulable: v.target.spec.unschedulable,
            max_containers: v.target.spec.max_containers,
        })
        .collect();
    let existing: Vec<Existing> = views
        .iter()
        .filter_map(|v| Some((v, &v.state.as_ref().ok()?.1)))
        .flat_map(|(v, listed)| {
            listed.iter().filter_map(|c| {
                Some(Existing {
                    owner_uid: owner_of(c)?.to_string(),
                    replica: c.labels.get(LABEL_REPLICA)?.parse().ok()?,
                    target: v.name.clone(),
                })
            })
        })
        .collect();
    let namespace = container.namespace();
    // A target that cannot be listed now keeps what status last recorded there: placements
    // are sticky, and unknown is not the same as gone.
    let silent: HashSet<&str> = views
        .iter()
        .filter(|v| v.state.is_err())
        .map(|v| v.name.as_str())
        .collect();
    let mut existing = existing;
    if !silent.is_empty() {
        let store = ctx.stores.containers.state();
        let recorded = std::iter::once(container)
            .chain(
                store
                    .iter()
                    .map(AsRef::as_ref)
                    .filter(|c| c.namespace() == namespace && c.uid().as_deref() != Some(uid)),
            )
            .flat_map(|c| {
                let owner = c.uid().unwrap_or_default();
                c.status
                    .iter()
                    .flat_map(|s| &s.instances)
                    .filter(|i| silent.contains(i.target.as_str()))
                    .filter_map(move |i| {
                        Some(Existing {
                            owner_uid: owner.clone(),
                            replica: i.container_name.rsplit_once('_')?.1.parse().ok()?,
                            target: i.target.clone(),
                        })
                    })
            });
        existing.extend(recorded);
    }
    let mut others: Vec<Arc<DockerContainer>> = ctx
        .stores
        .containers
        .state()
        .into_iter()
        .filter(|c| c.namespace() == namespace && c.uid().as_deref() != Some(uid))
        .collect();
    others.sort_by_key(|c| c.name_any());
    let workload = |c: &DockerContainer| Workload {
        owner_uid: c.uid().unwrap_or_default(),
        placement: c.spec.placement.clone(),
        host_ports: host_ports(&c.spec),
    };
    let workloads: Vec<Workload> = std::iter::once(workload(container))
        .chain(others.iter().map(|c| workload(c)))
        .collect();
    let placements = place(
        &infos,
        &workloads,
        &existing,
        now,
        ctx.settings.grace.as_secs(),
    );
    let mine = views
        .iter()
        .map(|v| (v.name.clone(), placements.replicas_on(uid, &v.name)))
        .collect();
    let unplaced = placements
        .unplaced
        .iter()
        .filter(|u| u.owner_uid == uid)
        .map(|u| format!("replica {} not placed: {}", u.replica, u.reason))
        .collect();
    (mine, unplaced)
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
    let namespace = container.namespace().unwrap_or_default();
    let name = container.name_any();
    let uid = container
        .uid()
        .ok_or_else(|| Error::InvalidObject("DockerContainer has no metadata.uid".into()))?;
    let sources = ctx.stores.sources(&namespace);
    let env = match resolve_env(&container.spec, &sources) {
        Ok(env) => env,
        Err(e) => return invalid(container, ctx, e.to_string()).await,
    };
    let registry = registry_serving(&ctx.stores.registries, &namespace, &container.spec);
    let registry = registry.as_deref();
    let credentials = registry.and_then(|registry| credentials_of(registry, &sources));
    let previous = container.status.clone().unwrap_or_default();

    let views = observe_targets(ctx, &namespace, &sources, false).await;
    let (placed, mut problems) = placements_for(ctx, container, &uid, &views);
    let resolved =
        match resolve_image(container, registry, &sources, &previous, &mut problems).await {
            Ok(resolved) => resolved,
            Err(why) => {
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
    let (run_image, image_identity) =
        image_to_run(&container.spec.image, source.as_ref(), resolved.as_ref());
    let owner = Owner {
        namespace: namespace.clone(),
        name: name.clone(),
        uid: uid.clone(),
    };
    // Build every target's instances first: a spec that cannot become a container fails
    // before anything is touched anywhere.
    let mut wanted = Vec::with_capacity(views.len());
    for (view, (_, replicas)) in views.iter().zip(&placed) {
        let ctx_instance = InstanceContext {
            target_uid: &view.uid,
            manager: &ctx.settings.manager,
            image: &run_image,
            image_identity: &image_identity,
            pull_credentials: credentials.as_ref(),
            image_source: source.as_ref(),
            resolved: resolved.as_ref(),
            restarted_at: container.restarted_at(),
        };
        match desired_instances(&owner, &container.spec, &env, replicas, &ctx_instance) {
            Ok(instances) => wanted.push(instances),
            Err(e) => return invalid(container, ctx, e.to_string()).await,
        }
    }

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
    view: &TargetView,
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
                problems: vec![format!("target {}: {error}", view.name)],
                instances: instances
                    .iter()
                    .map(|d| InstanceStatus {
                        target: view.name.clone(),
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
        uid: view.uid.clone(),
        manager: ctx.settings.manager.clone(),
    };
    let desired = DesiredSet {
        instances,
        owner_scope: Some(uid.to_string()),
        ..Default::default()
    };
    let executor = Executor::new(host.clone(), ctx.settings.concurrency)
        .with_shutdown(ctx.settings.shutdown.clone());
    let mut memory = ctx.hosts.take_memory(&view.uid, uid);
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
    ctx.hosts.put_memory(&view.uid, uid, memory, &seen);

    for outcome in &report.outcomes {
        publish_outcome(ctx, reference, &view.name, outcome).await;
    }
    let problems = report
        .unfinished()
        .iter()
        .map(|f| f.on(&view.name))
        .collect();
    // After changes, look again: the status must show what runs now.
    let observed = if report.outcomes.is_empty() {
        report.observed
    } else {
        match host.list_labelled(LABEL_TARGET, &view.uid).await {
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
        instances: statuses(host, &view.name, &desired.instances, &observed, previous).await,
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

/// The digest to run, when a Registry serves the image (see [`crate::registry::pinning`]),
/// remembered between reconciles in `status.resolvedImage`.
async fn resolve_image(
    container: &DockerContainer,
    registry: Option<&crate::api::Registry>,
    sources: &StaticSources,
    previous: &DockerContainerStatus,
    problems: &mut Vec<String>,
) -> Result<Option<Resolved>, String> {
    if container.spec.image_source.is_some() {
        // A source image is named by its content's digest already.
        return Ok(None);
    }
    let before = match (&previous.resolved_image, &previous.resolved_from) {
        (Some(resolved), Some(from)) => Some(Resolved {
            image: resolved.clone(),
            from: from.clone(),
            at: previous.resolved_at.as_ref().map_or(0, |t| t.0.as_second()),
        }),
        _ => None,
    };
    let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
    let pinned = pin(
        &container.spec.image,
        container.spec.image_update_policy,
        registry,
        sources,
        before,
        now,
    )
    .await?;
    problems.extend(pinned.problem);
    Ok(pinned.resolved)
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
    let namespace = container.namespace().unwrap_or_default();
    let sources = ctx.stores.sources(&namespace);
    let views = observe_targets(ctx, &namespace, &sources, true).await;
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
            Err(e) if recorded.contains(view.name.as_str()) => Err(format!(
                "target {} ({}: {})",
                view.name,
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
    view: &TargetView,
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
        .run(&plan, &[])
        .await;
    let mut failed = Vec::new();
    for outcome in &outcomes {
        publish_outcome(ctx, reference, &view.name, outcome).await;
        if let Err(e) = &outcome.result {
            failed.push(format!("{}: {e}", outcome.subject));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("target {} ({})", view.name, failed.join("; ")))
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
