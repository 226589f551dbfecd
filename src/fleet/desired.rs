//! From a placed DockerContainer to the instances each target should run: one path for both
//! modes — its env, then its image (a fetched source, a pinned digest), then every target's
//! instances — or the [`Problem`] that keeps its containers as they are this round.

use std::fmt;

use super::{ContainerEntry, Snapshot};
use crate::conditions::Reason;
use crate::converge::env::{ResolvedEnv, resolve_env};
use crate::converge::model::{DesiredInstance, InstanceContext, InstanceTemplate, Owner};
use crate::placement::Placements;
use crate::registry::pinning::{Pin, Resolved, image_to_run};
use crate::registry::source::LocalSource;

/// Why a container gets no instances this round. Its containers stay as they are; whether
/// trying again can help is in the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// [`Reason::InvalidSpec`] when only an edit helps; [`Reason::ImageNotResolved`] or
    /// [`Reason::SourceUnavailable`] when what it needs may be there on a later try.
    pub reason: Reason,
    /// What is wrong, naming the field or the thing that failed.
    pub message: String,
}

impl Problem {
    /// A spec that cannot become a container as written.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            reason: Reason::InvalidSpec,
            message: message.into(),
        }
    }

    /// Whether a later try may succeed without an edit (a registry or a source URL that
    /// does not answer now).
    pub fn is_transient(&self) -> bool {
        self.reason != Reason::InvalidSpec
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What this round found for a container's image: its fetched `imageSource` and its pin,
/// each `None` when it has none.
#[derive(Clone, Copy, Debug, Default)]
pub struct ImageFound<'a> {
    /// The fetched `imageSource`, or why it could not be fetched.
    pub source: Option<&'a Result<LocalSource, String>>,
    /// The pin, or why the tag could not be resolved.
    pub pin: Option<&'a Result<Pin, String>>,
}

/// What a container wants this round.
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    /// Its instances on each target of the snapshot, in the snapshot's target order (empty
    /// where none of its replicas is placed).
    pub per_target: Vec<Vec<DesiredInstance>>,
    /// Its image's pin, when a Registry serves the image.
    pub pin: Option<Pin>,
}

/// What `container` wants on every target: its env, then its image, then each target's
/// instances. Every target's instances are built before any is used, so a spec that cannot
/// become a container fails whole.
pub fn wanted(
    snapshot: &Snapshot,
    container: &ContainerEntry,
    placements: &Placements,
    image: ImageFound<'_>,
    manager: &str,
) -> Result<Wanted, Problem> {
    let spec = &container.object.spec;
    let env = resolve_env(spec, &snapshot.sources).map_err(|e| Problem::invalid(e.to_string()))?;
    let source = match image.source {
        Some(Ok(source)) => Some(source),
        Some(Err(why)) => {
            return Err(Problem {
                reason: Reason::SourceUnavailable,
                message: why.clone(),
            });
        }
        None => None,
    };
    let pin = match image.pin {
        Some(Ok(pin)) => Some(pin.clone()),
        Some(Err(why)) => {
            return Err(Problem {
                reason: Reason::ImageNotResolved,
                message: why.clone(),
            });
        }
        None => None,
    };
    let resolved = pin.as_ref().and_then(|p| p.resolved.as_ref());
    let per_target = on_targets(
        snapshot, container, placements, &env, source, resolved, manager,
    )?;
    Ok(Wanted { per_target, pin })
}

fn on_targets(
    snapshot: &Snapshot,
    container: &ContainerEntry,
    placements: &Placements,
    env: &ResolvedEnv,
    source: Option<&LocalSource>,
    resolved: Option<&Resolved>,
    manager: &str,
) -> Result<Vec<Vec<DesiredInstance>>, Problem> {
    let spec = &container.object.spec;
    let credentials = snapshot.pull_credentials(spec);
    let (run_image, identity) = image_to_run(&spec.image, source, resolved);
    let owner = Owner {
        namespace: snapshot.namespace.clone(),
        name: container.name.clone(),
        uid: container.uid.clone(),
    };
    let context = InstanceContext {
        manager,
        image: &run_image,
        image_identity: &identity,
        pull_credentials: credentials.as_ref(),
        image_source: source,
        resolved,
        restarted_at: container.object.restarted_at(),
    };
    let mut placed = placements.replicas_of(&container.uid);
    if placed.is_empty() {
        return Ok(snapshot.targets.iter().map(|_| Vec::new()).collect());
    }
    // One template for all of its targets: they share its body and digests.
    let template = InstanceTemplate::new(&owner, spec, env, &context)
        .map_err(|e| Problem::invalid(e.to_string()))?;
    snapshot
        .targets
        .iter()
        .map(|target| {
            let replicas = placed.remove(target.name.as_str()).unwrap_or_default();
            Ok(template.on_target(&target.uid, &replicas))
        })
        .collect()
}
