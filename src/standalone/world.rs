//! One round of standalone mode: connect to the targets the manifests name, read what runs
//! on them (their container labels are the record of what was placed where — no state
//! file), place every replica, and build each target's desired set.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::future::join_all;

use super::manifests::{Manifests, ObjectKey};
use crate::api::{DockerContainer, DockerTarget, Registry};
use crate::converge::engine::{DesiredSet, TargetIdentity};
use crate::converge::env::resolve_env;
use crate::converge::model::{InstanceContext, Owner, desired_instances, host_ports};
use crate::converge::plan::Finding;
use crate::docker::material::{fingerprint, target_material};
use crate::docker::{
    ConnectOptions, DockerError, DockerHost, ErrorKind, HostContainer, PullCredentials, connect,
};
use crate::labels::LABEL_TARGET;
use crate::labels::{
    LABEL_REPLICA, LABEL_RESOLVED_AT, LABEL_RESOLVED_FROM, LABEL_RESOLVED_IMAGE, LABEL_UID,
};
use crate::placement::{Existing, Placements, TargetInfo, Workload, place};
use crate::registry::credentials::{credentials_of, registry_for};
use crate::registry::pinning::{Pin, Resolved, image_to_run, pin};
use crate::registry::source::{LocalSource, SourceFetcher};
use crate::sources::StaticSources;

/// Settings of a standalone run.
#[derive(Clone, Debug)]
pub struct WorldOptions {
    /// The `stevedore.dev/manager` label value of this run.
    pub manager: String,
    /// Seconds a target may be unreachable before its replicas move.
    pub grace_secs: u64,
    /// Connection timeouts.
    pub connect: ConnectOptions,
    /// Fetches `imageSource` tarballs and contexts, remembered across rounds.
    pub fetcher: std::sync::Arc<SourceFetcher>,
}

impl Default for WorldOptions {
    fn default() -> Self {
        Self {
            manager: "standalone".into(),
            grace_secs: crate::placement::DEFAULT_GRACE_SECS,
            connect: ConnectOptions::default(),
            fetcher: Default::default(),
        }
    }
}

/// A target's connection, kept across rounds while its spec and Secrets are unchanged.
#[derive(Clone, Debug)]
pub struct Connection {
    /// Hash of the spec and the Secret material the connection was made with.
    fingerprint: u64,
    /// The connected daemon, or why not.
    pub host: Result<DockerHost, DockerError>,
    /// When it was first seen unreachable (unix seconds), while it is.
    pub unreachable_since: Option<u64>,
    /// What the last successful list call showed: while the target cannot be listed, its
    /// replicas stay placed there (until the grace period ends) instead of moving at once.
    pub last_listed: Option<Vec<HostContainer>>,
}

/// Connections by target, across rounds.
pub type Connections = BTreeMap<ObjectKey, Connection>;

/// The digest each container's image was pinned to, across the rounds of one run. A new
/// run finds its pins again in the labels of the containers it placed.
pub type Pins = BTreeMap<ObjectKey, Resolved>;

/// What a run carries from one round to the next.
#[derive(Debug, Default)]
pub struct Memory {
    /// Connections to the targets.
    pub connections: Connections,
    /// Pinned digests.
    pub pins: Pins,
}

/// One target in a round.
#[derive(Clone, Debug)]
pub struct TargetRound {
    /// The target object.
    pub target: DockerTarget,
    /// Its identity on the daemon.
    pub identity: TargetIdentity,
    /// The daemon, when reachable.
    pub host: Option<DockerHost>,
    /// Why it is not reachable.
    pub error: Option<DockerError>,
    /// Its managed containers, from one list call.
    pub observed: Vec<HostContainer>,
    /// What should run there.
    pub desired: DesiredSet,
    /// What the last converge left undone (blocked work, reported drift, failed actions),
    /// once one ran.
    pub findings: Vec<Finding>,
}

/// Everything one round decided.
#[derive(Debug, Default)]
pub struct Round {
    /// Per target.
    pub targets: BTreeMap<ObjectKey, TargetRound>,
    /// Replicas with nowhere to go, per container: (replica, reason).
    pub unplaced: BTreeMap<ObjectKey, Vec<(u32, String)>>,
    /// Problems of containers that keep them from converging (a missing Secret, say).
    pub container_errors: BTreeMap<ObjectKey, String>,
    /// The placements.
    pub placements: Placements,
    /// Each container's image pin, for those a Registry serves.
    pub pins: BTreeMap<ObjectKey, Pin>,
}

/// The UID of an object: derived from kind, namespace and name.
pub fn uid_of(key: &ObjectKey) -> String {
    key.derived_uid()
}

/// The Secrets and ConfigMaps of one namespace of the manifests.
pub(crate) fn sources_for(manifests: &Manifests, namespace: &str) -> StaticSources {
    StaticSources {
        secrets: manifests
            .secrets
            .iter()
            .filter(|(k, _)| k.namespace == namespace)
            .map(|(k, v)| (k.name.clone(), v.clone()))
            .collect(),
        config_maps: manifests
            .config_maps
            .iter()
            .filter(|(k, _)| k.namespace == namespace)
            .map(|(k, v)| (k.name.clone(), v.clone()))
            .collect(),
    }
}

/// Connects to every target (reusing unchanged connections) and forgets removed ones.
pub async fn connect_targets(
    manifests: &Manifests,
    connections: &mut Connections,
    options: &WorldOptions,
    now: u64,
) {
    connections.retain(|key, _| manifests.targets.contains_key(key));
    let mut attempts = Vec::new();
    for (key, sourced) in &manifests.targets {
        let target = &sourced.object;
        let material = target_material(&target.spec, &sources_for(manifests, &key.namespace));
        let print = fingerprint(&target.spec, &material);
        if let Some(existing) = connections.get(key)
            && existing.fingerprint == print
            && existing.host.is_ok()
        {
            continue;
        }
        let connect_options = options.connect;
        attempts.push(async move {
            let host = match material {
                Ok(material) => connect(&target.spec, &material, connect_options).await,
                Err(e) => Err(e),
            };
            (key.clone(), print, host)
        });
    }
    for (key, print, host) in join_all(attempts).await {
        let since = connections.get(&key).and_then(|c| c.unreachable_since);
        let last_listed = connections.get(&key).and_then(|c| c.last_listed.clone());
        let unreachable_since = match &host {
            Ok(_) => None,
            Err(_) => Some(since.unwrap_or(now)),
        };
        connections.insert(
            key,
            Connection {
                fingerprint: print,
                host,
                unreachable_since,
                last_listed,
            },
        );
    }
}

/// The Registry that serves a container's image, among those of its namespace.
fn registry_of<'a>(
    manifests: &'a Manifests,
    key: &ObjectKey,
    container: &DockerContainer,
) -> Option<&'a Registry> {
    let registries = manifests
        .registries
        .iter()
        .filter(|(k, _)| k.namespace == key.namespace)
        .map(|(k, r)| (k.name.as_str(), &r.object));
    let registry_ref = container
        .spec
        .registry_ref
        .as_ref()
        .map(|r| r.name.as_str());
    registry_for(&container.spec.image, registry_ref, registries).map(|(_, registry)| registry)
}

/// Credentials for a container's image, from the Registries of its namespace.
fn pull_credentials(
    manifests: &Manifests,
    key: &ObjectKey,
    container: &DockerContainer,
    sources: &StaticSources,
) -> Option<PullCredentials> {
    credentials_of(registry_of(manifests, key, container)?, sources)
}

/// The pin an earlier run left in the labels of `owner_uid`'s containers: the newest one
/// resolved from `image`. Several can be running in the middle of a rollout.
fn pin_in_labels<'a>(
    containers: impl Iterator<Item = &'a HostContainer>,
    owner_uid: &str,
    image: &str,
) -> Option<Resolved> {
    containers
        .filter(|c| c.labels.get(LABEL_UID).map(String::as_str) == Some(owner_uid))
        .filter(|c| c.labels.get(LABEL_RESOLVED_FROM).map(String::as_str) == Some(image))
        .filter_map(|c| {
            Some(Resolved {
                image: c.labels.get(LABEL_RESOLVED_IMAGE)?.clone(),
                from: image.to_string(),
                at: c.labels.get(LABEL_RESOLVED_AT)?.parse().ok()?,
            })
        })
        .max_by_key(|r| r.at)
}

/// Pins the image of every container a Registry serves to one digest for all its targets
/// (see [`crate::registry::pinning`]). What was pinned before comes from `pins` (earlier
/// rounds of this run) or else from the labels of what the targets run; `pins` keeps the
/// outcome for the next round.
pub async fn pin_images(
    manifests: &Manifests,
    connections: &Connections,
    observed: &BTreeMap<ObjectKey, Result<Vec<HostContainer>, DockerError>>,
    pins: &mut Pins,
    now: u64,
) -> BTreeMap<ObjectKey, Result<Pin, String>> {
    pins.retain(|key, _| manifests.containers.contains_key(key));
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let listed: Vec<&HostContainer> = manifests
        .targets
        .keys()
        .filter_map(|key| last_known(key, observed, connections))
        .flatten()
        .collect();
    let pinning = manifests.containers.iter().filter_map(|(key, sourced)| {
        let container = &sourced.object;
        if container.spec.image_source.is_some() {
            // A source image is named by its content's digest already.
            return None;
        }
        let registry = registry_of(manifests, key, container)?;
        let image = &container.spec.image;
        let before = pins
            .get(key)
            .filter(|p| &p.from == image)
            .cloned()
            .or_else(|| pin_in_labels(listed.iter().copied(), &uid_of(key), image));
        let sources = sources_for(manifests, &key.namespace);
        Some(async move {
            let pinned = pin(
                image,
                container.spec.image_update_policy,
                Some(registry),
                &sources,
                before,
                now,
            )
            .await;
            (key.clone(), pinned)
        })
    });
    let pinned: BTreeMap<_, _> = join_all(pinning).await.into_iter().collect();
    for (key, outcome) in &pinned {
        match outcome.as_ref().ok().and_then(|p| p.resolved.clone()) {
            Some(resolved) => pins.insert(key.clone(), resolved),
            None => pins.remove(key),
        };
    }
    pinned
}

/// Lists each reachable target's managed containers (one call each).
pub async fn observe(
    manifests: &Manifests,
    connections: &Connections,
) -> BTreeMap<ObjectKey, Result<Vec<HostContainer>, DockerError>> {
    let lists = manifests.targets.keys().filter_map(|key| {
        let host = connections.get(key)?.host.as_ref().ok()?.clone();
        let uid = uid_of(key);
        Some(async move { (key.clone(), host.list_labelled(LABEL_TARGET, &uid).await) })
    });
    join_all(lists).await.into_iter().collect()
}

/// Fetches the `imageSource` of every container that has one.
pub async fn fetch_sources(
    manifests: &Manifests,
    fetcher: &SourceFetcher,
) -> BTreeMap<ObjectKey, Result<LocalSource, String>> {
    let fetches = manifests.containers.iter().filter_map(|(key, sourced)| {
        let spec = sourced.object.spec.image_source.as_ref()?;
        Some(async move { (key.clone(), fetcher.fetch(spec).await) })
    });
    join_all(fetches).await.into_iter().collect()
}

/// What a target runs: this round's list, or while it cannot be listed, the last one.
fn last_known<'a>(
    key: &ObjectKey,
    observed: &'a BTreeMap<ObjectKey, Result<Vec<HostContainer>, DockerError>>,
    connections: &'a Connections,
) -> Option<&'a Vec<HostContainer>> {
    match observed.get(key) {
        Some(Ok(listed)) => Some(listed),
        _ => connections.get(key)?.last_listed.as_ref(),
    }
}

/// Keeps each target's latest successful list for the rounds in which it cannot be listed.
pub fn remember_listed(
    connections: &mut Connections,
    observed: &BTreeMap<ObjectKey, Result<Vec<HostContainer>, DockerError>>,
) {
    for (key, listed) in observed {
        if let (Some(connection), Ok(listed)) = (connections.get_mut(key), listed) {
            connection.last_listed = Some(listed.clone());
        }
    }
}

/// Computes one round from manifests, connections and what the daemons run.
pub fn plan_round(
    manifests: &Manifests,
    connections: &Connections,
    observed: &BTreeMap<ObjectKey, Result<Vec<HostContainer>, DockerError>>,
    sources: &BTreeMap<ObjectKey, Result<LocalSource, String>>,
    pins: &BTreeMap<ObjectKey, Result<Pin, String>>,
    options: &WorldOptions,
    now: u64,
) -> Round {
    let mut round = Round::default();
    let namespaces: HashSet<&str> = manifests
        .targets
        .keys()
        .chain(manifests.containers.keys())
        .map(|k| k.namespace.as_str())
        .collect();
    let inputs = RoundInputs {
        manifests,
        connections,
        observed,
        sources_fetched: sources,
        pins,
        options,
        now,
    };
    for namespace in namespaces {
        place_namespace(&inputs, namespace, &mut round);
    }
    round
}

/// Everything a round reads.
struct RoundInputs<'a> {
    manifests: &'a Manifests,
    connections: &'a Connections,
    observed: &'a BTreeMap<ObjectKey, Result<Vec<HostContainer>, DockerError>>,
    sources_fetched: &'a BTreeMap<ObjectKey, Result<LocalSource, String>>,
    pins: &'a BTreeMap<ObjectKey, Result<Pin, String>>,
    options: &'a WorldOptions,
    now: u64,
}

fn place_namespace(inputs: &RoundInputs<'_>, namespace: &str, round: &mut Round) {
    let RoundInputs {
        manifests,
        connections,
        observed,
        sources_fetched,
        pins,
        options,
        now,
    } = *inputs;
    let targets: Vec<(&ObjectKey, &DockerTarget)> = manifests
        .targets
        .iter()
        .filter(|(k, _)| k.namespace == namespace)
        .map(|(k, s)| (k, &s.object))
        .collect();
    // Broken targets without a good version hold their placements: unknown is not gone.
    let broken_targets = manifests
        .broken
        .iter()
        .filter(|k| k.kind == "DockerTarget" && k.namespace == namespace);
    let mut infos: Vec<TargetInfo> = targets
        .iter()
        .map(|(key, target)| {
            let connection = connections.get(*key);
            let ready = connection.is_some_and(|c| c.host.is_ok())
                && observed.get(*key).is_some_and(|o| o.is_ok());
            TargetInfo {
                name: key.name.clone(),
                labels: target.metadata.labels.clone().unwrap_or_default(),
                ready,
                unreachable_since: if ready {
                    None
                } else {
                    connection.and_then(|c| c.unreachable_since).or(Some(now))
                },
                unschedulable: target.spec.unschedulable,
                max_containers: target.spec.max_containers,
            }
        })
        .collect();
    infos.extend(broken_targets.map(|k| TargetInfo {
        name: k.name.clone(),
        ..Default::default()
    }));

    // A target that cannot be listed now keeps what it ran when it last could.
    let existing: Vec<Existing> = targets
        .iter()
        .filter_map(|(key, _)| Some((key, last_known(key, observed, connections)?)))
        .flat_map(|(key, containers)| {
            containers.iter().filter_map(|c| {
                Some(Existing {
                    owner_uid: c.labels.get(LABEL_UID)?.clone(),
                    replica: c.labels.get(LABEL_REPLICA)?.parse().ok()?,
                    target: key.name.clone(),
                })
            })
        })
        .collect();
    let containers: Vec<(&ObjectKey, &DockerContainer)> = manifests
        .containers
        .iter()
        .filter(|(k, _)| k.namespace == namespace)
        .map(|(k, s)| (k, &s.object))
        .collect();
    let workloads: Vec<Workload> = containers
        .iter()
        .map(|(key, container)| Workload {
            owner_uid: uid_of(key),
            placement: container.spec.placement.clone(),
            host_ports: host_ports(&container.spec),
        })
        .collect();
    let placements = place(&infos, &workloads, &existing, now, options.grace_secs);
    for unplaced in &placements.unplaced {
        if let Some((key, _)) = containers
            .iter()
            .find(|(k, _)| uid_of(k) == unplaced.owner_uid)
        {
            round
                .unplaced
                .entry((*key).clone())
                .or_default()
                .push((unplaced.replica, unplaced.reason.clone()));
        }
    }

    // Owners whose containers must stay as they are this round.
    let mut protected: HashSet<String> = manifests
        .broken
        .iter()
        .filter(|k| k.kind == "DockerContainer")
        .map(uid_of)
        .collect();
    let sources = sources_for(manifests, namespace);
    let mut instances_by_target: HashMap<&str, Vec<_>> = HashMap::new();
    for (key, container) in &containers {
        let uid = uid_of(key);
        let env = match resolve_env(&container.spec, &sources) {
            Ok(env) => env,
            Err(e) => {
                round.container_errors.insert((*key).clone(), e.to_string());
                protected.insert(uid);
                continue;
            }
        };
        let credentials = pull_credentials(manifests, key, container, &sources);
        let source = match sources_fetched.get(*key) {
            Some(Ok(source)) => Some(source),
            Some(Err(e)) => {
                round.container_errors.insert((*key).clone(), e.clone());
                protected.insert(uid);
                continue;
            }
            None => None,
        };
        let resolved = match pins.get(*key) {
            Some(Ok(pin)) => {
                round.pins.insert((*key).clone(), pin.clone());
                pin.resolved.as_ref()
            }
            Some(Err(e)) => {
                round.container_errors.insert((*key).clone(), e.clone());
                protected.insert(uid);
                continue;
            }
            None => None,
        };
        let (run_image, identity) = image_to_run(&container.spec.image, source, resolved);
        let owner = Owner {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            uid: uid.clone(),
        };
        for (target_key, _) in &targets {
            let replicas = placements.replicas_on(&uid, &target_key.name);
            if replicas.is_empty() {
                continue;
            }
            let target_uid = uid_of(target_key);
            let ctx = InstanceContext {
                target_uid: &target_uid,
                manager: &options.manager,
                image: &run_image,
                image_identity: &identity,
                pull_credentials: credentials.as_ref(),
                image_source: source,
                resolved,
                restarted_at: container.restarted_at(),
            };
            match desired_instances(&owner, &container.spec, &env, &replicas, &ctx) {
                Ok(instances) => instances_by_target
                    .entry(target_key.name.as_str())
                    .or_default()
                    .extend(instances),
                Err(e) => {
                    round.container_errors.insert((*key).clone(), e.to_string());
                    protected.insert(uid.clone());
                }
            }
        }
    }

    for (key, target) in targets {
        let connection = connections.get(key);
        let observed_here = observed.get(key);
        let mut protected_here = protected.clone();
        let containers_here: Vec<HostContainer> = match observed_here {
            Some(Ok(list)) => list.clone(),
            _ => Vec::new(),
        };
        if manifests.unidentified_breakage {
            // Some document could not be read at all: nothing may count as deleted.
            protected_here.extend(
                containers_here
                    .iter()
                    .filter_map(|c| c.labels.get(LABEL_UID).cloned()),
            );
        }
        let error = match (connection.map(|c| &c.host), observed_here) {
            (Some(Err(e)), _) => Some(e.clone()),
            (_, Some(Err(e))) => Some(e.clone()),
            (None, _) => Some(DockerError::new(ErrorKind::Unreachable, "not connected")),
            _ => None,
        };
        round.targets.insert(
            key.clone(),
            TargetRound {
                target: target.clone(),
                identity: TargetIdentity {
                    uid: uid_of(key),
                    manager: options.manager.clone(),
                },
                host: connection.and_then(|c| c.host.as_ref().ok().cloned()),
                error,
                observed: containers_here,
                desired: DesiredSet {
                    instances: instances_by_target
                        .remove(key.name.as_str())
                        .unwrap_or_default(),
                    protected_owners: protected_here,
                    owner_scope: None,
                },
                findings: Vec::new(),
            },
        );
    }
    round.placements.assignments.extend(placements.assignments);
    round.placements.unplaced.extend(placements.unplaced);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::ContainerState;

    /// A container of owner `uid`, with the pin `(image, from, at)` in its labels.
    fn running(uid: &str, pin: Option<(&str, &str, &str)>) -> HostContainer {
        let mut labels = BTreeMap::from([(LABEL_UID.to_string(), uid.to_string())]);
        if let Some((image, from, at)) = pin {
            labels.extend([
                (LABEL_RESOLVED_IMAGE.to_string(), image.to_string()),
                (LABEL_RESOLVED_FROM.to_string(), from.to_string()),
                (LABEL_RESOLVED_AT.to_string(), at.to_string()),
            ]);
        }
        HostContainer {
            id: "id".into(),
            name: "ns_web_0".into(),
            labels,
            state: ContainerState::Running,
            health: None,
            image_id: "sha256:img".into(),
            exit_code: None,
        }
    }

    #[test]
    fn a_pin_is_found_again_in_the_owners_labels_newest_first() {
        let live = "reg/app:live";
        let containers = [
            // Mid-rollout: the old pin and the new one.
            running("web", Some(("reg/app@sha256:old", live, "100"))),
            running("web", Some(("reg/app@sha256:new", live, "200"))),
            // Another owner's, newer still.
            running("other", Some(("reg/app@sha256:theirs", live, "300"))),
            // A pin of an image the spec no longer names.
            running("web", Some(("reg/app@sha256:before", "reg/app:old", "400"))),
            // Made before pins were recorded, and a pin whose time is not a number.
            running("web", None),
            running("web", Some(("reg/app@sha256:odd", live, "soon"))),
        ];
        assert_eq!(
            pin_in_labels(containers.iter(), "web", live),
            Some(Resolved {
                image: "reg/app@sha256:new".into(),
                from: live.into(),
                at: 200,
            })
        );
        assert_eq!(pin_in_labels(containers.iter(), "web", "reg/app:2"), None);
    }
}
