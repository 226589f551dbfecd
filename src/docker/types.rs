//! What the daemon reports, in Stevedore's words: containers as a list shows them, what an
//! inspect adds, container events, pull credentials.

use bollard::models::{ContainerSummary, EventMessage};

use super::engine;

/// The state of a container as the daemon reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Being restarted by the daemon's restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Being stopped: Podman shows it while a stop (or `rm -f`) waits for the process.
    Stopping,
    /// Exited (stopped).
    Exited,
    /// Dead (failed to stop or remove).
    Dead,
}

impl ContainerState {
    pub(super) fn parse(state: &str) -> Self {
        match state {
            "created" => Self::Created,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "restarting" => Self::Restarting,
            "removing" => Self::Removing,
            "stopping" => Self::Stopping,
            "dead" => Self::Dead,
            _ => Self::Exited,
        }
    }

    /// The daemon's word for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Restarting => "restarting",
            Self::Removing => "removing",
            Self::Stopping => "stopping",
            Self::Exited => "exited",
            Self::Dead => "dead",
        }
    }
}

/// The health check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// Within the start period, or no verdict yet.
    Starting,
    /// The last checks passed.
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

impl Health {
    /// Docker's word for the verdict.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
        }
    }

    pub(super) fn parse(word: &str) -> Option<Self> {
        match word {
            "starting" => Some(Self::Starting),
            "healthy" => Some(Self::Healthy),
            "unhealthy" => Some(Self::Unhealthy),
            _ => None,
        }
    }
}

/// A container as one list call shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostContainer {
    /// Container ID.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// All labels.
    pub labels: super::ListedLabels,
    /// State.
    pub state: ContainerState,
    /// Health, for containers with a health check.
    pub health: Option<Health>,
    /// The image ID the container runs.
    pub image_id: String,
    /// The image reference the container was created from, where the engine vouches that
    /// the reference still names that image on the host (Docker lists the image ID
    /// instead once the reference was removed or moved): proof that the image is present.
    pub current_image: Option<Box<str>>,
    /// Exit code, for an exited container.
    pub exit_code: Option<i64>,
}

impl HostContainer {
    /// The container a list entry of `engine` describes; `None` without an ID or a name.
    pub(super) fn from_summary(summary: ContainerSummary, engine: engine::Engine) -> Option<Self> {
        let status = summary.status.unwrap_or_default();
        let name = summary
            .names
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(|n| n.trim_start_matches('/').to_string())?;
        Some(Self {
            id: summary.id?,
            name,
            labels: summary.labels.unwrap_or_default().into_iter().collect(),
            state: ContainerState::parse(&summary.state.map(|s| s.to_string()).unwrap_or_default()),
            health: summary
                .health
                .and_then(|h| h.status)
                .and_then(|s| Health::parse(s.as_ref()))
                .or_else(|| health_from_status(&status)),
            current_image: summary
                .image
                .filter(|image| {
                    engine.lists_current_image() && Some(image) != summary.image_id.as_ref()
                })
                .map(String::into_boxed_str),
            image_id: summary.image_id.unwrap_or_default(),
            exit_code: exit_code_from_status(&status),
        })
    }
}

/// Older daemons put health only in the status text: `Up 3 minutes (healthy)`.
fn health_from_status(status: &str) -> Option<Health> {
    if status.contains("(healthy)") {
        Some(Health::Healthy)
    } else if status.contains("(unhealthy)") {
        Some(Health::Unhealthy)
    } else if status.contains("(health: starting)") {
        Some(Health::Starting)
    } else {
        None
    }
}

/// `Exited (137) 5 seconds ago` or `Restarting (7) 1 second ago` → the last exit code.
fn exit_code_from_status(status: &str) -> Option<i64> {
    let rest = status
        .strip_prefix("Exited (")
        .or_else(|| status.strip_prefix("Restarting ("))?;
    rest.split_once(')')?.0.parse().ok()
}

/// What an inspect adds to a list entry, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerDetails {
    /// RFC 3339 start time, when it ever started.
    pub started_at: Option<String>,
    /// RFC 3339 time its last run ended, when one did (before `started_at` once it was
    /// started again).
    pub finished_at: Option<String>,
    /// Exit code of the last run.
    pub exit_code: Option<i64>,
    /// Restarts done by the daemon's restart policy.
    pub restart_count: i64,
    /// `network=ip` per network.
    pub ips: Vec<String>,
    /// `hostIP:hostPort->containerPort/protocol` per published port.
    pub ports: Vec<String>,
    /// Health, with a health check.
    pub health: Option<Health>,
    /// Whether the container has a health check (its image's or its own).
    pub has_health_check: bool,
    /// Its restart policy's name (`no`, `always`, `unless-stopped`, `on-failure`).
    pub restart_policy: String,
}

/// A container event from the daemon's event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerEvent {
    /// `die`, `stop`, `kill`, `destroy`, `start`, `health_status: healthy`, …
    pub action: String,
    /// The container's ID.
    pub id: String,
    /// The container's name, when the daemon sent it.
    pub name: Option<String>,
    /// The owner's namespace and name, from the container's `stevedore.dev/namespace` and
    /// `stevedore.dev/name` labels (the daemon sends labels as event attributes).
    pub owner: Option<(String, String)>,
}

/// Credentials for one pull.
#[derive(Clone)]
pub struct PullCredentials {
    /// Registry user.
    pub username: String,
    /// Registry password or token.
    pub password: String,
    /// Registry host, e.g. `registry.example.com:5000`.
    pub server: String,
}

impl std::fmt::Debug for PullCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PullCredentials {{ server: {:?}, <redacted> }}",
            self.server
        )
    }
}

impl ContainerEvent {
    pub(super) fn from_message(event: EventMessage) -> Option<Self> {
        use crate::labels::{LABEL_NAME, LABEL_NAMESPACE};
        let actor = event.actor?;
        let attributes = actor.attributes.unwrap_or_default();
        Some(Self {
            action: engine::docker_event_action(event.action?),
            id: actor.id?,
            name: attributes.get("name").cloned(),
            owner: attributes
                .get(LABEL_NAMESPACE)
                .cloned()
                .zip(attributes.get(LABEL_NAME).cloned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_yields_health_and_exit_code() {
        assert_eq!(
            health_from_status("Up 3 minutes (healthy)"),
            Some(Health::Healthy)
        );
        assert_eq!(
            health_from_status("Up 1 second (health: starting)"),
            Some(Health::Starting)
        );
        assert_eq!(health_from_status("Up 3 minutes"), None);
        assert_eq!(
            exit_code_from_status("Exited (137) 5 seconds ago"),
            Some(137)
        );
        assert_eq!(exit_code_from_status("Up 2 hours"), None);
    }
}
