//! Which engine answers behind the Docker API, and the facts one engine's container list
//! leaves out. Docker reports a health check's verdict in every list entry (a `Health`
//! field, or `(healthy)` in the status text on older daemons); Podman's Docker-compatible
//! list reports neither, so on Podman the verdict comes from inspect — only for containers
//! known to have a health check, each learnt once, so a steady host costs one inspect per
//! health-checked container per list, not one per container.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bollard::models::{ContainerInspectResponse, ContainerSummary, SystemVersion};
use serde_json::Value;

/// The engine behind a Docker API endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Docker Engine (moby).
    Docker,
    /// Podman's Docker-compatible service (`podman system service`).
    Podman,
}

impl Engine {
    /// Tells the engine from its `/version` answer: Podman names a `Podman Engine` component.
    pub fn from_version(version: &SystemVersion) -> Self {
        let podman = version
            .components
            .iter()
            .flatten()
            .any(|component| component.name.starts_with("Podman"));
        if podman { Self::Podman } else { Self::Docker }
    }

    /// Whether a container list carries each container's health verdict.
    pub fn lists_health(self) -> bool {
        self == Self::Docker
    }

    /// Whether a container list names a container's image by the reference it was created
    /// from only while that reference still names the image (Docker; Podman always repeats
    /// the reference given at create).
    pub fn lists_current_image(self) -> bool {
        self == Self::Docker
    }

    /// The engine's name, for status and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "Docker",
            Self::Podman => "Podman",
        }
    }
}

/// Which containers have a health check, learnt from inspect once per container (a
/// container's health check never changes), for engines whose list does not say.
///
/// Entries are grouped by the list filter that found them, and a list with that filter
/// forgets those it no longer returns, so removed containers do not pile up.
#[derive(Debug, Default)]
pub struct HealthCheckMemory {
    by_filter: Mutex<HashMap<String, HashMap<String, bool>>>,
}

impl HealthCheckMemory {
    /// Whether container `id`, found by `filter`, has a health check; `None` if not yet known.
    pub fn has_check(&self, filter: &str, id: &str) -> Option<bool> {
        let memory = self.by_filter.lock().unwrap_or_else(|e| e.into_inner());
        memory.get(filter).and_then(|ids| ids.get(id)).copied()
    }

    /// Records what inspect said about container `id`.
    pub fn learn(&self, filter: &str, id: &str, has_check: bool) {
        let mut memory = self.by_filter.lock().unwrap_or_else(|e| e.into_inner());
        memory
            .entry(filter.to_string())
            .or_default()
            .insert(id.to_string(), has_check);
    }

    /// Forgets the containers of `filter` that its latest list no longer returned.
    pub fn keep_only(&self, filter: &str, listed: &HashSet<&str>) {
        let mut memory = self.by_filter.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ids) = memory.get_mut(filter) {
            ids.retain(|id, _| listed.contains(id.as_str()));
        }
    }
}

/// Reads a container list whose states bollard does not know: Podman 4's list says
/// `stopped` for a container that has exited and not been cleaned up yet, and `configured`
/// or `initialized` for one created but never started; every other field is Docker's.
pub fn summaries_with_foreign_states(json: &str) -> serde_json::Result<Vec<ContainerSummary>> {
    let mut entries: Vec<Value> = serde_json::from_str(json)?;
    for entry in &mut entries {
        translate_state(entry.get_mut("State"));
    }
    serde_json::from_value(Value::Array(entries))
}

/// Reads an inspect answer whose `State.Status` bollard does not know (as
/// [`summaries_with_foreign_states`] for a list).
pub fn inspect_with_foreign_state(json: &str) -> serde_json::Result<ContainerInspectResponse> {
    let mut inspect: Value = serde_json::from_str(json)?;
    translate_state(inspect.pointer_mut("/State/Status"));
    serde_json::from_value(inspect)
}

/// Docker's word for an event action another engine names differently: Podman says
/// `remove` where Docker says `destroy`.
pub fn docker_event_action(action: String) -> String {
    match action.as_str() {
        "remove" => "destroy".to_string(),
        _ => action,
    }
}

fn translate_state(state: Option<&mut Value>) {
    if let Some(state) = state
        && let Some(word) = state.as_str()
    {
        *state = Value::from(docker_state_word(word));
    }
}

/// Docker's word for a container state another engine names differently.
fn docker_state_word(word: &str) -> &str {
    match word {
        "stopped" => "exited",
        "configured" | "initialized" => "created",
        known @ ("created" | "running" | "paused" | "restarting" | "exited" | "removing"
        | "dead" | "stopping" | "") => known,
        // Better "dead" (not running, not ours to start) than failing the whole list.
        _ => "dead",
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::SystemVersionComponents;

    use super::*;

    fn version_with(components: &[&str]) -> SystemVersion {
        SystemVersion {
            components: Some(
                components
                    .iter()
                    .map(|name| SystemVersionComponents {
                        name: name.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn podman_is_told_by_its_engine_component() {
        let podman = version_with(&["Podman Engine", "Conmon", "OCI Runtime (runc)"]);
        assert_eq!(Engine::from_version(&podman), Engine::Podman);
        assert!(!Engine::Podman.lists_health());
        let docker = version_with(&["Engine", "containerd", "runc", "docker-init"]);
        assert_eq!(Engine::from_version(&docker), Engine::Docker);
        assert_eq!(
            Engine::from_version(&SystemVersion::default()),
            Engine::Docker
        );
    }

    #[test]
    fn podman_states_read_as_dockers() {
        let json = r#"[{"Id":"a","Names":["/a"],"State":"stopped","Status":"Exited (0) 1 second ago"},
                       {"Id":"b","Names":["/b"],"State":"configured","Status":"Created"},
                       {"Id":"c","Names":["/c"],"State":"running","Status":"Up 1 second"},
                       {"Id":"d","Names":["/d"],"State":"frozen-solid","Status":""}]"#;
        let states: Vec<String> = summaries_with_foreign_states(json)
            .expect("parsed")
            .into_iter()
            .map(|s| s.state.map(|s| s.to_string()).unwrap_or_default())
            .collect();
        assert_eq!(states, ["exited", "created", "running", "dead"]);
        let inspect = inspect_with_foreign_state(r#"{"Id":"a","State":{"Status":"stopped"}}"#)
            .expect("parsed");
        let status = inspect.state.and_then(|s| s.status).map(|s| s.to_string());
        assert_eq!(status.as_deref(), Some("exited"));
    }

    #[test]
    fn podmans_remove_event_is_dockers_destroy() {
        assert_eq!(docker_event_action("remove".into()), "destroy");
        assert_eq!(docker_event_action("die".into()), "die");
    }

    #[test]
    fn memory_forgets_what_its_filter_no_longer_lists() {
        let memory = HealthCheckMemory::default();
        memory.learn("a=1", "x", true);
        memory.learn("a=1", "y", false);
        memory.learn("b=2", "z", true);
        assert_eq!(memory.has_check("a=1", "x"), Some(true));
        assert_eq!(memory.has_check("a=1", "y"), Some(false));
        memory.keep_only("a=1", &HashSet::from(["y"]));
        assert_eq!(memory.has_check("a=1", "x"), None);
        assert_eq!(memory.has_check("a=1", "y"), Some(false));
        assert_eq!(
            memory.has_check("b=2", "z"),
            Some(true),
            "other filters kept"
        );
    }
}
