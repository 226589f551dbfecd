//! `restart`: a rolling restart through the normal rollout path. In a cluster it sets the
//! object's `stevedore.dev/restartedAt` annotation and the controller replaces each replica
//! as `updateStrategy` says (health gate included); standalone, the executor's own replace
//! does the same, one replica at a time. Never a bare `docker restart` behind Stevedore's back.

use std::sync::Arc;

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::OperateError;
use super::locate::Cluster;
use crate::api::{ANNOTATION_RESTARTED_AT, DockerContainer};
use crate::converge::executor::Executor;
use crate::converge::plan::{Action, ContainerRef, Plan, Replacement, previous_of};
use crate::docker::ContainerState;
use crate::shutdown::Shutdown;
use crate::standalone::commands::{Source, load_manifests};
use crate::standalone::world::{self, Memory};

/// Asks the controller to restart every replica of DockerContainer `name`: returns the
/// line to print (`dockercontainer.stevedore.dev/web restarted`).
pub async fn in_cluster(cluster: &Cluster, name: &str) -> Result<String, OperateError> {
    let ns = &cluster.namespace;
    let containers: Api<DockerContainer> = Api::namespaced(cluster.client.clone(), ns);
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let patch = json!({"metadata": {"annotations": {ANNOTATION_RESTARTED_AT: now}}});
    containers
        .patch(
            name,
            &PatchParams {
                field_manager: Some("kubectl-stevedore".into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| {
            super::locate::refused(e, "patch", "dockercontainers.stevedore.dev", name, ns, None)
        })?;
    Ok(format!("dockercontainer.stevedore.dev/{name} restarted"))
}

/// Restarts the replicas of DockerContainer `name` of the manifests one at a time, each
/// replaced by a new container that must run (and be healthy, with a health check) before
/// the old one goes and the next replica's turn comes. Stops at the first replica that
/// fails; that one is rolled back and keeps running.
pub async fn in_manifests(
    source: &Source,
    name: &str,
    shutdown: &Shutdown,
) -> Result<(), OperateError> {
    let manifests = load_manifests(source).map_err(OperateError::Invalid)?;
    let ns = &source.namespace;
    let object = format!("DockerContainer {ns}/{name}");
    let mut memory = Memory::new(&source.options);
    let round = world::round(&manifests, &mut memory, &source.options).await;
    // Every replica, checked before any is touched: (replica, target, index into desired).
    let mut turns = Vec::new();
    for (target_key, target) in &round.targets {
        let instances = &target.desired.instances;
        for (i, desired) in instances.iter().enumerate() {
            if desired.owner.name != name || &desired.owner.namespace != ns {
                continue;
            }
            let Some(current) = desired.current_in(&target.observed) else {
                return Err(OperateError::Invalid(format!(
                    "{object}: replica {} on {} does not run its current spec yet; \
                     `stevedore run` converges it (which replaces it anyway)",
                    desired.replica, target_key.name
                )));
            };
            turns.push((desired.replica, target_key, target, i, current.clone()));
        }
    }
    if turns.is_empty() {
        return Err(OperateError::NotFound(format!(
            "{object} has no replica to restart (is it in the manifests, and placed?)"
        )));
    }
    turns.sort_by_key(|(replica, ..)| *replica);
    for (replica, target_key, target, desired, current) in turns {
        let Some(host) = &target.host else { continue };
        let Some(instance) = target.desired.instances.get(desired) else {
            continue;
        };
        let plan = Plan {
            actions: vec![Action::Replace(Replacement {
                old: ContainerRef::of(&current),
                old_running: current.state == ContainerState::Running,
                desired,
                reason: "restart requested".into(),
                previous: previous_of(
                    instance,
                    &target.observed,
                    &target.identity.uid,
                    &target.identity.manager,
                ),
            })],
            instances: Arc::clone(&target.desired.instances),
            ..Plan::default()
        };
        let executor = Executor::new(host.clone(), 1)
            .with_target_name(&target_key.name)
            .with_shutdown(shutdown.clone());
        for outcome in executor.run(&plan).await {
            if let Err(e) = outcome.result {
                return Err(OperateError::Invalid(format!(
                    "{object}: replica {replica} on {} was not restarted, and the replicas \
                     after it were left alone: {e}",
                    target_key.name
                )));
            }
        }
        println!(
            "replica {replica} restarted on {} ({})",
            target_key.name, current.name
        );
    }
    Ok(())
}
