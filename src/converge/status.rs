//! What each desired instance looks like on its target, in the shape of
//! `DockerContainer.status.instances[]`.

use super::model::DesiredInstance;
use crate::api::container::InstanceStatus;
use crate::api::timestamp;
use crate::docker::{ContainerState, DockerHost, HostContainer};

/// Log lines kept in `message` for a container that exited.
pub const LOG_TAIL_LINES: usize = 10;

/// The status of every desired instance: one inspect per existing container, plus the log
/// tail of those that exited. Failures to inspect become the instance's message.
pub async fn instance_statuses(
    host: &DockerHost,
    target: &str,
    desired: &[&DesiredInstance],
    observed: &[HostContainer],
) -> Vec<InstanceStatus> {
    let mut statuses = Vec::with_capacity(desired.len());
    for &instance in desired {
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
                status.started_at = details.started_at.and_then(|t| timestamp(&t));
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
