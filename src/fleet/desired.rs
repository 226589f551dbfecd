//! From a placed DockerContainer to the instances each target should run: one function for
//! both modes.

use super::{ContainerEntry, Snapshot};
use crate::converge::env::ResolvedEnv;
use crate::converge::model::{DesiredInstance, InstanceContext, Owner, desired_instances};
use crate::placement::Placements;
use crate::registry::pinning::{Resolved, image_to_run};
use crate::registry::source::LocalSource;

/// How a container's image is run this round.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImageChoice<'a> {
    /// The fetched `imageSource`, when the image is imported or built.
    pub source: Option<&'a LocalSource>,
    /// The digest the tag was pinned to.
    pub resolved: Option<&'a Resolved>,
}

/// The instances `container` wants on each target of the snapshot, in the snapshot's
/// target order (empty where none of its replicas is placed). Every target's instances
/// are built before any is used, so a spec that cannot become a container fails whole.
pub fn on_targets(
    snapshot: &Snapshot,
    container: &ContainerEntry,
    placements: &Placements,
    env: &ResolvedEnv,
    image: ImageChoice<'_>,
    manager: &str,
) -> Result<Vec<Vec<DesiredInstance>>, String> {
    let spec = &container.object.spec;
    let credentials = snapshot.pull_credentials(spec);
    let (run_image, identity) = image_to_run(&spec.image, image.source, image.resolved);
    let owner = Owner {
        namespace: snapshot.namespace.clone(),
        name: container.name.clone(),
        uid: container.uid.clone(),
    };
    snapshot
        .targets
        .iter()
        .map(|target| {
            let replicas = placements.replicas_on(&container.uid, &target.name);
            if replicas.is_empty() {
                return Ok(Vec::new());
            }
            let context = InstanceContext {
                target_uid: &target.uid,
                manager,
                image: &run_image,
                image_identity: &identity,
                pull_credentials: credentials.as_ref(),
                image_source: image.source,
                resolved: image.resolved,
                restarted_at: container.object.restarted_at(),
            };
            desired_instances(&owner, spec, env, &replicas, &context).map_err(|e| e.to_string())
        })
        .collect()
}
