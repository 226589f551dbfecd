//! Status of every object, computed from the daemons, in the shape of the CRDs' `status`;
//! and how it is shown: a table like `kubectl get`, JSON or YAML.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use futures::future::join_all;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use serde::ser::{SerializeSeq, SerializeStruct, Serializer};

use super::manifests::{Manifests, ObjectKey};
use super::world::{Round, TargetRound, sources_for, uid_of};
use crate::api::API_VERSION;
use crate::api::container::{DockerContainerStatus, InstanceStatus};
use crate::api::registry::RegistryStatus;
use crate::api::target::{DockerTargetStatus, ServerInfo};
use crate::conditions::{ConditionType, container_conditions, now_time, target_conditions};
use crate::converge::status::{instance_statuses, is_ready};
use crate::docker::ErrorKind;
use crate::registry::pinning::Resolved;
use crate::registry::refresh::{record_refresh, refresh};

/// One object with its status, as `kubectl get -o json` would show it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus<S> {
    /// `stevedore.dev/v1alpha1`.
    pub api_version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Name and namespace.
    pub metadata: Metadata,
    /// The status.
    pub status: S,
}

/// Name and namespace.
#[derive(Clone, Debug, Serialize)]
pub struct Metadata {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

/// The status of everything in the manifests. Serialized, it is a `v1` `List`, like
/// `kubectl get -o json`: targets first, then registries, then containers, each sorted by
/// namespace and name.
#[derive(Clone, Debug)]
pub struct StatusReport {
    /// Targets.
    pub targets: Vec<ObjectStatus<DockerTargetStatus>>,
    /// Registries (only in a [`Detail::Full`] report).
    pub registries: Vec<ObjectStatus<RegistryStatus>>,
    /// Containers, each with its image and the replicas it wants.
    pub containers: Vec<(ObjectStatus<DockerContainerStatus>, String, i32)>,
}

impl Serialize for StatusReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut list = serializer.serialize_struct("List", 3)?;
        list.serialize_field("apiVersion", "v1")?;
        list.serialize_field("kind", "List")?;
        list.serialize_field("items", &Items(self))?;
        list.end()
    }
}

/// The objects of a report as one list, serialized where they are: a table never needs
/// them as JSON values (at a thousand targets, making them took longer than the table).
struct Items<'a>(&'a StatusReport);

impl Serialize for Items<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let StatusReport {
            targets,
            registries,
            containers,
        } = self.0;
        let count = targets.len() + registries.len() + containers.len();
        let mut items = serializer.serialize_seq(Some(count))?;
        for target in targets {
            items.serialize_element(target)?;
        }
        for registry in registries {
            items.serialize_element(registry)?;
        }
        for (container, _, _) in containers {
            items.serialize_element(container)?;
        }
        items.end()
    }
}

/// How much a status report asks the daemons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Everything: the daemon's info and images per target, each Registry reached and its
    /// catalog listed, one inspect per container (addresses, ports, start time, exit code
    /// and log of exited containers).
    Full,
    /// What the round's list calls already showed, and each daemon's engine version: enough
    /// for readiness and the table.
    Summary,
}

/// One target's status: what the round found, and what `detail` asks its daemon.
async fn target_status(
    key: &ObjectKey,
    target: &TargetRound,
    detail: Detail,
    now: &Time,
) -> ObjectStatus<DockerTargetStatus> {
    let mut status = DockerTargetStatus {
        managed_containers: i32::try_from(target.observed.len()).unwrap_or(i32::MAX),
        ..Default::default()
    };
    let mut ready = match (&target.host, &target.error) {
        (Some(_), None) => Ok(()),
        (_, Some(e)) => Err((e.kind.reason(), e.message.clone())),
        (None, None) => Err((ErrorKind::Unreachable.reason(), "not connected".to_string())),
    };
    match (&target.host, &ready, detail) {
        (Some(host), Ok(()), Detail::Full) => {
            match host.server_info().await {
                Ok(info) => status.server = Some(info),
                Err(e) => ready = Err((e.kind.reason(), e.message)),
            }
            if let Ok(images) = host.list_images().await {
                status.record_images(images);
            }
            status.last_seen_time = Some(now.clone());
        }
        // The table's VERSION column: what the daemon said when connected, no call.
        (Some(host), Ok(()), Detail::Summary) => {
            status.server = Some(ServerInfo {
                engine: host.engine().as_str().to_string(),
                version: host.engine_version().to_string(),
                ..Default::default()
            });
        }
        _ => {}
    }
    let problem = ready.as_ref().err();
    status.conditions = target_conditions(
        problem.map(|(kind, message)| (*kind, message.as_str())),
        now,
    );
    ObjectStatus {
        api_version: API_VERSION,
        kind: "DockerTarget",
        metadata: metadata(key),
        status,
    }
}

/// Computes every object's status from the round.
pub async fn status_report(manifests: &Manifests, round: &Round, detail: Detail) -> StatusReport {
    let now = now_time();
    // Every target at once: one by one, a fleet's thousand version calls made the table
    // wait seconds after the work was done.
    let targets = join_all(
        round
            .targets
            .iter()
            .map(|(key, target)| target_status(key, target, detail, &now)),
    )
    .await;

    let registries = match detail {
        Detail::Full => registry_statuses(manifests, &now).await,
        Detail::Summary => Vec::new(),
    };

    let mut containers = Vec::new();
    for (key, sourced) in &manifests.containers {
        let uid = uid_of(key);
        let wanted = sourced.object.spec.placement.replicas;
        let mut instances: Vec<InstanceStatus> = Vec::new();
        let mut updated = 0;
        let mut problems: Vec<String> = Vec::new();
        // Inspected on every target at once, as the targets' statuses are.
        let mut inspecting = Vec::new();
        for (target_key, target) in &round.targets {
            let desired: Vec<_> = target
                .desired
                .instances
                .iter()
                .filter(|d| d.owner.uid == uid)
                .collect();
            if desired.is_empty() {
                continue;
            }
            problems.extend(
                target
                    .findings
                    .iter()
                    .filter(|f| desired.iter().any(|d| d.name == f.container))
                    .map(|f| f.on(&target_key.name)),
            );
            updated += desired
                .iter()
                .filter(|d| d.current_in(&target.observed).is_some())
                .count();
            match &target.host {
                Some(host) if detail == Detail::Full => inspecting.push(async move {
                    instance_statuses(host, &target_key.name, &desired, &target.observed).await
                }),
                Some(_) => instances.extend(listed_statuses(
                    &target_key.name,
                    &desired,
                    &target.observed,
                )),
                None => {
                    let why = target
                        .error
                        .as_ref()
                        .map_or_else(|| "target not connected".to_string(), |e| e.to_string());
                    problems.push(format!("target {}: {why}", target_key.name));
                    instances.extend(desired.iter().map(|d| InstanceStatus {
                        target: target_key.name.clone(),
                        container_name: d.name.clone(),
                        state: "unknown".into(),
                        message: Some(why.clone()),
                        ..Default::default()
                    }));
                }
            }
        }
        instances.extend(join_all(inspecting).await.into_iter().flatten());
        instances.sort_by(|a, b| a.container_name.cmp(&b.container_name));
        if let Some(error) = round.container_errors.get(key) {
            problems.push(error.clone());
        }
        let pin = round.pins.get(key);
        problems.extend(pin.and_then(|p| p.problem.clone()));
        let resolved = pin.and_then(|p| p.resolved.as_ref());
        for (replica, reason) in round.unplaced.get(key).into_iter().flatten() {
            problems.push(format!("replica {replica} not placed: {reason}"));
        }
        for instance in &instances {
            if instance.state != "running" {
                problems.push(format!(
                    "{} on {}: {}{}",
                    instance.container_name,
                    instance.target,
                    instance.state,
                    instance
                        .message
                        .as_ref()
                        .map(|m| format!(": {}", m.lines().last().unwrap_or_default()))
                        .unwrap_or_default()
                ));
            }
        }
        let ready_count = instances.iter().filter(|i| is_ready(i)).count();
        let ready_count = i32::try_from(ready_count).unwrap_or(i32::MAX);
        let updated = i32::try_from(updated).unwrap_or(i32::MAX);
        let conditions = container_conditions(wanted, ready_count, updated, &problems, &now);
        let status = DockerContainerStatus {
            observed_generation: sourced.object.metadata.generation,
            replicas: i32::try_from(
                instances
                    .iter()
                    .filter(|i| i.container_id.is_some())
                    .count(),
            )
            .unwrap_or(i32::MAX),
            ready_replicas: ready_count,
            updated_replicas: updated,
            resolved_image: resolved.map(|r| r.image.clone()),
            resolved_from: resolved.map(|r| r.from.clone()),
            resolved_at: resolved.and_then(Resolved::at_time),
            instances,
            conditions,
        };
        containers.push((
            ObjectStatus {
                api_version: API_VERSION,
                kind: "DockerContainer",
                metadata: metadata(key),
                status,
            },
            sourced.object.spec.image.clone(),
            wanted,
        ));
    }

    StatusReport {
        targets,
        registries,
        containers,
    }
}

/// Every Registry reached with its own Secrets and its catalog listed, all at once.
async fn registry_statuses(manifests: &Manifests, now: &Time) -> Vec<ObjectStatus<RegistryStatus>> {
    let refreshes = manifests
        .registries
        .iter()
        .map(|(key, sourced)| async move {
            let sources = sources_for(manifests, &key.namespace);
            let registry = &sourced.object;
            let mut status = RegistryStatus {
                observed_generation: registry.metadata.generation,
                ..Default::default()
            };
            let result = refresh(registry, &sources).await;
            let ready = record_refresh(&mut status, result, now);
            status.conditions = vec![ready];
            ObjectStatus {
                api_version: API_VERSION,
                kind: "Registry",
                metadata: metadata(key),
                status,
            }
        });
    futures::future::join_all(refreshes).await
}

/// Instance statuses from list data alone (no inspect).
fn listed_statuses(
    target: &str,
    desired: &[&crate::converge::model::DesiredInstance],
    observed: &[crate::docker::HostContainer],
) -> Vec<InstanceStatus> {
    desired
        .iter()
        .map(|d| match observed.iter().find(|c| c.name == d.name) {
            Some(c) => InstanceStatus {
                target: target.to_string(),
                container_name: c.name.clone(),
                container_id: Some(c.id.clone()),
                state: c.state.as_str().to_string(),
                health: c.health.map(|h| h.as_str().to_string()),
                image_digest: Some(c.image_id.clone()).filter(|id| !id.is_empty()),
                exit_code: c.exit_code,
                ..Default::default()
            },
            None => InstanceStatus {
                target: target.to_string(),
                container_name: d.name.clone(),
                state: "missing".into(),
                ..Default::default()
            },
        })
        .collect()
}

fn metadata(key: &ObjectKey) -> Metadata {
    Metadata {
        name: key.name.clone(),
        namespace: key.namespace.clone(),
    }
}

/// Whether every container is ready.
pub fn all_ready(report: &StatusReport) -> bool {
    report.containers.iter().all(|(c, _, _)| {
        c.status
            .conditions
            .iter()
            .any(|cond| ConditionType::Ready.is_true(cond))
    })
}

/// The report as aligned tables, like `kubectl get`, with the reason of every object that
/// is not ready underneath.
pub fn table(report: &StatusReport) -> String {
    let mut rows: Vec<Vec<String>> = vec![vec![
        "NAMESPACE".into(),
        "TARGET".into(),
        "READY".into(),
        "ENGINE".into(),
        "VERSION".into(),
        "CONTAINERS".into(),
    ]];
    let mut notes = Vec::new();
    for target in &report.targets {
        let ready = target.status.conditions.first();
        rows.push(vec![
            target.metadata.namespace.clone(),
            target.metadata.name.clone(),
            ready.map(|c| c.status.clone()).unwrap_or_default(),
            target
                .status
                .server
                .as_ref()
                .map(|s| s.engine.clone())
                .unwrap_or_default(),
            target
                .status
                .server
                .as_ref()
                .map(|s| s.version.clone())
                .unwrap_or_default(),
            target.status.managed_containers.to_string(),
        ]);
        if let Some(c) = ready.filter(|c| c.status != "True") {
            notes.push(format!(
                "target {}/{}: {}: {}",
                target.metadata.namespace, target.metadata.name, c.reason, c.message
            ));
        }
    }
    let mut out = align(&rows);
    if !report.registries.is_empty() {
        let mut rows: Vec<Vec<String>> = vec![vec![
            "NAMESPACE".into(),
            "REGISTRY".into(),
            "READY".into(),
            "REPOSITORIES".into(),
        ]];
        for registry in &report.registries {
            let ready = registry.status.conditions.first();
            rows.push(vec![
                registry.metadata.namespace.clone(),
                registry.metadata.name.clone(),
                ready.map(|c| c.status.clone()).unwrap_or_default(),
                registry.status.repository_count.to_string(),
            ]);
            if let Some(c) = ready.filter(|c| c.status != "True") {
                notes.push(format!(
                    "registry {}/{}: {}: {}",
                    registry.metadata.namespace, registry.metadata.name, c.reason, c.message
                ));
            }
        }
        out.push('\n');
        out.push_str(&align(&rows));
    }
    let mut rows: Vec<Vec<String>> = vec![vec![
        "NAMESPACE".into(),
        "CONTAINER".into(),
        "READY".into(),
        "IMAGE".into(),
        "STATUS".into(),
    ]];
    for (container, image, wanted) in &report.containers {
        let status = &container.status;
        let ready = status
            .conditions
            .iter()
            .find(|c| ConditionType::Ready.is(c));
        rows.push(vec![
            container.metadata.namespace.clone(),
            container.metadata.name.clone(),
            format!("{}/{}", status.ready_replicas, wanted),
            image.clone(),
            ready.map(|c| c.reason.clone()).unwrap_or_default(),
        ]);
        if let Some(degraded) = status
            .conditions
            .iter()
            .find(|c| ConditionType::Degraded.is_true(c))
        {
            notes.push(format!(
                "container {}/{}: {}",
                container.metadata.namespace, container.metadata.name, degraded.message
            ));
        }
    }
    out.push('\n');
    out.push_str(&align(&rows));
    if !notes.is_empty() {
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
    }
    out
}

fn align(rows: &[Vec<String>]) -> String {
    let mut widths: BTreeMap<usize, usize> = BTreeMap::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = widths.entry(i).or_default();
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<width$}", width = widths[&i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    out
}
