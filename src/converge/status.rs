//! What each desired instance looks like on its target, in the shape of
//! `DockerContainer.status.instances[]`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::model::DesiredInstance;
use crate::api::CONDITION_READY;
use crate::api::container::InstanceStatus;
use crate::docker::{ContainerState, DockerHost, HostContainer};

/// Log lines kept in `message` for a container that exited.
pub const LOG_TAIL_LINES: usize = 10;

/// The status of every desired instance: one inspect per existing container, plus the log
/// tail of those that exited. Failures to inspect become the instance's message.
pub async fn instance_statuses(
    host: &DockerHost,
    target: &str,
    desired: &[DesiredInstance],
    observed: &[HostContainer],
) -> Vec<InstanceStatus> {
    let mut statuses = Vec::with_capacity(desired.len());
    for instance in desired {
        let Some(container) = observed.iter().find(|c| c.name == instance.name) else {
            statuses.push(InstanceStatus {
                target: target.to_string(),
                container_name: instance.name.clone(),
                state: "missing".into(),
                ..Default::default()
            });
            continue;
        };
        let mut status = InstanceStatus {
            target: target.to_string(),
            container_name: container.name.clone(),
            container_id: Some(container.id.clone()),
            state: container.state.as_str().to_string(),
            health: container.health.map(|h| h.as_str().to_string()),
            image_digest: Some(container.image_id.clone()).filter(|id| !id.is_empty()),
            exit_code: container.exit_code,
            ..Default::default()
        };
        match host.inspect(&container.id).await {
            Ok(details) => {
                status.ips = details.ips;
                status.ports = details.ports;
                status.restart_count = i32::try_from(details.restart_count).unwrap_or(i32::MAX);
                status.started_at = details
                    .started_at
                    .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                    .map(Time);
                status.health = details
                    .health
                    .map(|h| h.as_str().to_string())
                    .or(status.health);
                // A crash loop shows as `restarting` between runs: its last exit and log
                // are what a person needs to see there too.
                if matches!(
                    container.state,
                    ContainerState::Exited | ContainerState::Dead | ContainerState::Restarting
                ) {
                    // The list's status text names the exit that made it so; the inspect, a
                    // moment later, may already see the next run (exit code 0).
                    status.exit_code = status.exit_code.or(details.exit_code);
                    status.message = match host.log_tail(&container.id, LOG_TAIL_LINES).await {
                        Ok(log) if !log.trim().is_empty() => {
                            Some(last_chars(log.trim_end(), crate::api::MAX_STATUS_MESSAGE))
                        }
                        Ok(_) => None,
                        Err(e) => Some(e.to_string()),
                    };
                }
            }
            Err(e) => status.message = Some(e.to_string()),
        }
        statuses.push(status);
    }
    statuses
}

/// The end of `text`, at most `limit` characters: a log's last lines are the ones that
/// explain an exit.
fn last_chars(text: &str, limit: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(limit)).collect()
}

/// Running, and healthy when it has a health check.
pub fn is_ready(instance: &InstanceStatus) -> bool {
    instance.state == "running" && instance.health.as_deref().is_none_or(|h| h == "healthy")
}

/// One condition; `ok` makes its status `True`.
pub fn condition(kind: &str, ok: bool, reason: &str, message: String, now: &Time) -> Condition {
    Condition {
        type_: kind.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        last_transition_time: now.clone(),
        observed_generation: None,
    }
}

/// A DockerTarget's `Ready`: `Connected` while the daemon answers, else the reason (as
/// [`crate::docker::ErrorKind::reason`] names it) and what went wrong.
pub fn target_ready(problem: Option<(&str, &str)>, now: &Time) -> Condition {
    match problem {
        None => condition(
            CONDITION_READY,
            true,
            "Connected",
            "the daemon answers".into(),
            now,
        ),
        Some((reason, message)) => {
            condition(CONDITION_READY, false, reason, message.to_string(), now)
        }
    }
}

/// The current time in whole seconds, as the API server stores it.
pub fn now_time() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// A DockerContainer's `Ready`, `Progressing` and `Degraded` conditions from its counts
/// and the problems found (each a sentence a person can act on).
pub fn container_conditions(
    wanted: i32,
    ready: i32,
    updated: i32,
    problems: &[String],
    now: &Time,
) -> Vec<Condition> {
    let all_ready = ready >= wanted && problems.is_empty();
    let rolling = updated < wanted;
    let counted = format!("{ready} of {wanted} replicas ready");
    // Enough replicas may be ready while something else is wrong: say what, so the
    // condition never reads False with a message that sounds like True.
    let (reason, message) = match (all_ready, ready >= wanted) {
        (true, _) => ("AllReplicasReady", counted),
        (false, true) => (
            "Problems",
            format!("{counted}, but: {}", problems.join("; ")),
        ),
        (false, false) => ("NotReady", counted),
    };
    vec![
        condition(CONDITION_READY, all_ready, reason, message, now),
        condition(
            "Progressing",
            rolling,
            if rolling { "RollingOut" } else { "Complete" },
            format!("{updated} of {wanted} replicas run the current spec"),
            now,
        ),
        condition(
            "Degraded",
            !problems.is_empty(),
            if problems.is_empty() {
                "AsExpected"
            } else {
                "Problems"
            },
            problems.join("; "),
            now,
        ),
    ]
}

/// Keeps the `lastTransitionTime` of every condition whose status did not change, as the
/// Kubernetes API conventions ask (and so an unchanged status stays byte-identical).
pub fn keep_transition_times(new: &mut [Condition], old: &[Condition]) {
    for condition in new {
        if let Some(previous) = old
            .iter()
            .find(|o| o.type_ == condition.type_ && o.status == condition.status)
        {
            condition.last_transition_time = previous.last_transition_time.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_false_never_reads_like_true() {
        let now = now_time();
        let problems = vec!["web_0 on edge: Create failed: the name is taken".to_string()];
        let conditions = container_conditions(1, 1, 1, &problems, &now);
        let ready = &conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Problems")
        );
        assert!(
            ready.message.contains("but: web_0 on edge"),
            "{}",
            ready.message
        );
        let ready = &container_conditions(2, 1, 2, &[], &now)[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NotReady")
        );
        assert_eq!(ready.message, "1 of 2 replicas ready");
    }

    #[test]
    fn transition_time_kept_only_while_the_status_stays() {
        let earlier = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap_or_default());
        let now = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).unwrap_or_default());
        let old = container_conditions(1, 1, 1, &[], &earlier);
        let mut same = container_conditions(1, 1, 1, &[], &now);
        keep_transition_times(&mut same, &old);
        assert_eq!(same, old);
        let mut changed = container_conditions(1, 0, 1, &[], &now);
        keep_transition_times(&mut changed, &old);
        let ready = &changed[0];
        assert_eq!(
            (ready.status.as_str(), &ready.last_transition_time),
            ("False", &now)
        );
        // Progressing and Degraded did not change: their times stay.
        assert_eq!(changed[1].last_transition_time, earlier);
        assert_eq!(changed[2].last_transition_time, earlier);
    }
}
