//! A DockerContainer's status: instance statuses (inspecting only what changed), writing
//! it only when it differs, and holding an object that cannot converge.

use std::time::Duration;

use kube::Resource;
use kube::runtime::controller::Action;

use super::part::Part;
use crate::api::DockerContainer;
use crate::api::container::{DockerContainerStatus, InstanceStatus};
use crate::conditions::{
    ConditionType, condition, keep_transition_times, mirror_for_kstatus, now_time,
};
use crate::controller::context::Context;
use crate::controller::error::Result;
use crate::controller::events::{EventKind, publish};
use crate::controller::outcome::apply_status;
use crate::converge::model::DesiredInstance;
use crate::converge::status::instance_statuses;
use crate::docker::{DockerHost, HostContainer};
use crate::fleet::desired::Problem;

/// Instance statuses, inspecting only containers whose list entry differs from what the
/// previous status recorded (a running container that did not change needs no call).
pub(super) async fn statuses(
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
            None => to_inspect.push(instance),
        }
    }
    kept.extend(instance_statuses(host, target, &to_inspect, observed).await);
    kept
}

/// Writes `status` by server-side apply, only when it differs from `previous`.
pub(super) async fn write_status(
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

/// How soon an object held for something that may come back (a registry, a source URL) is
/// looked at again; one held for its spec waits for a change.
const RETRY_TRANSIENT: Duration = Duration::from_secs(15);

/// Leaves every container of the object as it is and says why in its conditions (and an
/// Event, when that is news). An invalid spec waits for an edit; anything else is tried
/// again shortly.
pub(super) async fn hold(
    container: &DockerContainer,
    ctx: &Context,
    problem: Problem,
    part: Part,
) -> Result<Action> {
    let then = if problem.is_transient() {
        Action::requeue(RETRY_TRANSIENT)
    } else {
        Action::await_change()
    };
    if !part.writes_object() {
        // Its home replica says why.
        return Ok(then);
    }
    let Problem {
        reason,
        message: why,
    } = problem;
    let previous = container.status.clone().unwrap_or_default();
    let now = now_time();
    let mut conditions = vec![
        condition(ConditionType::Ready, false, reason, why.clone(), &now),
        condition(ConditionType::Progressing, false, reason, why.clone(), &now),
        condition(ConditionType::Degraded, true, reason, why.clone(), &now),
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
            reason.as_str(),
            "Validate",
            why,
        );
    }
    write_status(ctx, container, &previous, status).await?;
    Ok(then)
}
