//! One round of standalone mode: connect to the targets the manifests name, read what runs
//! on them (their container labels are the record of what was placed where — no state
//! file), place every replica, and build each target's desired set.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::manifests::{Manifests, ObjectKey};
use crate::api::DockerTarget;
use crate::converge::engine::{DesiredSet, TargetIdentity, unix_now};
use crate::converge::model::DesiredInstance;
use crate::converge::plan::Finding;
use crate::docker::{ConnectOptions, DockerError, DockerHost, HostContainer};
use crate::fleet::connections::{Attempt, Connections, TargetSeen, known_containers, observe};
use crate::fleet::desired::{ImageFound, wanted};
use crate::fleet::pins::{pin_before, pin_image};
use crate::fleet::placing::place_snapshot;
use crate::fleet::{ContainerEntry, Recorded, Snapshot, TargetEntry};
use crate::labels::LABEL_UID;
use crate::placement::Placements;
use crate::registry::pinning::{Pin, Resolved};
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

/// The digest each container's image was pinned to, across the rounds of one run. A new
/// run finds its pins again in the labels of the containers it placed.
pub type Pins = BTreeMap<ObjectKey, Resolved>;

/// What a run carries from one round to the next.
#[derive(Debug)]
pub struct Memory {
    /// Connections to the targets (and each one's last list).
    pub connections: Connections,
    /// Pinned digests.
    pub pins: Pins,
}

impl Memory {
    /// Nothing remembered yet.
    pub fn new(options: &WorldOptions) -> Self {
        Self {
            // Rounds come seconds apart, and each one tries a failed target again.
            connections: Connections::new(options.connect, Duration::ZERO),
            pins: Pins::new(),
        }
    }
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
    /// Its managed containers, from one list call (shared with the connection's memory of
    /// it, not copied).
    pub observed: Arc<Vec<HostContainer>>,
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

/// One namespace of the manifests, as both modes' pipeline reads it.
pub fn snapshot(manifests: &Manifests, namespace: &str, pins: &Pins) -> Snapshot {
    let in_namespace = |key: &&ObjectKey| key.namespace == namespace;
    Snapshot {
        namespace: namespace.to_string(),
        targets: manifests
            .targets
            .iter()
            .filter(|(k, _)| in_namespace(k))
            .map(|(key, sourced)| TargetEntry {
                name: key.name.clone(),
                uid: uid_of(key),
                object: sourced.object.clone(),
            })
            .collect(),
        held_targets: manifests
            .broken
            .iter()
            .filter(|k| k.kind == "DockerTarget" && in_namespace(k))
            .map(|k| k.name.clone())
            .collect(),
        containers: manifests
            .containers
            .iter()
            .filter(|(k, _)| in_namespace(k))
            .map(|(key, sourced)| ContainerEntry {
                name: key.name.clone(),
                uid: uid_of(key),
                object: sourced.object.clone(),
                recorded: Recorded {
                    // The labels of what runs are this mode's only record of placements.
                    replicas: Vec::new(),
                    pin: pins.get(key).cloned(),
                },
            })
            .collect(),
        registries: manifests
            .registries
            .iter()
            .filter(|(k, _)| in_namespace(k))
            .map(|(key, sourced)| (key.name.clone(), sourced.object.clone()))
            .collect(),
        sources: sources_for(manifests, namespace),
    }
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

/// One namespace as this round found it.
struct Seen {
    snapshot: Snapshot,
    /// Per target (in the snapshot's order): what its list showed, or why not.
    observed: Vec<TargetSeen>,
    /// Per target: the connection, when it works though the list failed.
    working: Vec<Option<DockerHost>>,
}

/// What a round found on the daemons and registries, before anything is decided.
pub struct Observed {
    namespaces: Vec<Seen>,
    fetched: BTreeMap<ObjectKey, Result<LocalSource, String>>,
    pinned: BTreeMap<ObjectKey, Result<Pin, String>>,
}

impl Observed {
    /// No target reached, no registry asked: what a round decides from the manifests
    /// alone (for checking them without touching anything).
    pub fn nothing(manifests: &Manifests) -> Self {
        let namespaces = namespaces(manifests)
            .into_iter()
            .map(|namespace| {
                let snapshot = snapshot(manifests, namespace, &Pins::new());
                let n = snapshot.targets.len();
                Seen {
                    observed: vec![TargetSeen::not_connected(); n],
                    working: vec![None; n],
                    snapshot,
                }
            })
            .collect();
        Self {
            namespaces,
            fetched: BTreeMap::new(),
            pinned: BTreeMap::new(),
        }
    }
}

fn namespaces(manifests: &Manifests) -> BTreeSet<&str> {
    manifests
        .targets
        .keys()
        .chain(manifests.containers.keys())
        .map(|k| k.namespace.as_str())
        .collect()
}

/// One round over the manifests: connect to every target, list what each runs, pin images,
/// place every replica and build each target's desired set.
pub async fn round(manifests: &Manifests, memory: &mut Memory, options: &WorldOptions) -> Round {
    round_since(manifests, memory, options, Instant::now()).await
}

/// Like [`round`], but a target listed at `fresh_after` or later (its converge listed it
/// again once its work was done) is not listed again.
pub async fn round_since(
    manifests: &Manifests,
    memory: &mut Memory,
    options: &WorldOptions,
    fresh_after: Instant,
) -> Round {
    let now = unix_now();
    let observed = observe_round(manifests, memory, options, now, fresh_after).await;
    plan_round(manifests, &observed, options, now)
}

/// The observing half of a round: connect, list (one call per target, unless listed at
/// `fresh_after` or later), fetch sources and pin images.
pub async fn observe_round(
    manifests: &Manifests,
    memory: &mut Memory,
    options: &WorldOptions,
    now: u64,
    fresh_after: Instant,
) -> Observed {
    let live: HashSet<String> = manifests.targets.keys().map(uid_of).collect();
    memory.connections.retain(&live);
    memory
        .pins
        .retain(|key, _| manifests.containers.contains_key(key));
    let connections = &memory.connections;
    let seeing = namespaces(manifests).into_iter().map(|namespace| {
        let snapshot = snapshot(manifests, namespace, &memory.pins);
        async move {
            let observed = observe(connections, &snapshot, Attempt::Fresh, fresh_after).await;
            let working = snapshot
                .targets
                .iter()
                .map(|t| connections.working(&t.uid))
                .collect();
            Seen {
                snapshot,
                observed,
                working,
            }
        }
    });
    let namespaces = join_all(seeing).await;
    let fetched = fetch_sources(manifests, &options.fetcher).await;
    let pinned = pin_images(&namespaces, &mut memory.pins, now).await;
    Observed {
        namespaces,
        fetched,
        pinned,
    }
}

/// The deciding half of a round (no call to anything): place every replica and build each
/// target's desired set from what was observed.
pub fn plan_round(
    manifests: &Manifests,
    observed: &Observed,
    options: &WorldOptions,
    now: u64,
) -> Round {
    let mut round = Round::default();
    for namespace in &observed.namespaces {
        let inputs = RoundInputs {
            manifests,
            fetched: &observed.fetched,
            pinned: &observed.pinned,
            options,
            now,
        };
        place_namespace(&inputs, namespace, &mut round);
    }
    round
}

/// Pins the image of every container a Registry serves to one digest for all its targets
/// (see [`crate::fleet::pins`]); `pins` keeps the outcome for the next round.
async fn pin_images(
    seen: &[Seen],
    pins: &mut Pins,
    now: u64,
) -> BTreeMap<ObjectKey, Result<Pin, String>> {
    let pinning = seen.iter().flat_map(|namespace| {
        // Each DockerContainer's containers, sorted out once: not a scan of every listed
        // container for each DockerContainer (at 1,000 targets that is 10,000 per object).
        let mut by_owner: HashMap<&str, Vec<&HostContainer>> = HashMap::new();
        for listed in known_containers(&namespace.observed) {
            if let Some(owner) = listed.labels.get(LABEL_UID) {
                by_owner.entry(owner).or_default().push(listed);
            }
        }
        namespace.snapshot.containers.iter().map(move |container| {
            let owned = by_owner.get(container.uid.as_str()).into_iter().flatten();
            let before = pin_before(container, owned.copied());
            let key = ObjectKey::new(
                "DockerContainer",
                &namespace.snapshot.namespace,
                &container.name,
            );
            async move {
                (
                    key,
                    pin_image(&namespace.snapshot, container, before, now).await,
                )
            }
        })
    });
    let mut pinned = BTreeMap::new();
    for (key, outcome) in join_all(pinning).await {
        let Some(outcome) = outcome else { continue };
        match outcome.as_ref().ok().and_then(|p| p.resolved.clone()) {
            Some(resolved) => pins.insert(key.clone(), resolved),
            None => pins.remove(&key),
        };
        pinned.insert(key, outcome);
    }
    pinned
}

/// Everything a round reads besides the namespace itself.
struct RoundInputs<'a> {
    manifests: &'a Manifests,
    fetched: &'a BTreeMap<ObjectKey, Result<LocalSource, String>>,
    pinned: &'a BTreeMap<ObjectKey, Result<Pin, String>>,
    options: &'a WorldOptions,
    now: u64,
}

fn place_namespace(inputs: &RoundInputs<'_>, seen: &Seen, round: &mut Round) {
    let RoundInputs {
        manifests,
        fetched,
        pinned,
        options,
        now,
    } = *inputs;
    let snapshot = &seen.snapshot;
    let key_of = |kind: &str, name: &str| ObjectKey::new(kind, &snapshot.namespace, name);
    let placements = place_snapshot(
        snapshot,
        &seen.observed,
        None,
        (now, options.grace_secs),
        &|_| false,
    );
    for unplaced in &placements.unplaced {
        if let Some(container) = snapshot.container(&unplaced.owner_uid) {
            round
                .unplaced
                .entry(key_of("DockerContainer", &container.name))
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
    let mut instances_by_target: Vec<Vec<DesiredInstance>> =
        vec![Vec::new(); snapshot.targets.len()];
    for container in &snapshot.containers {
        let key = key_of("DockerContainer", &container.name);
        let image = ImageFound {
            source: fetched.get(&key),
            pin: pinned.get(&key),
        };
        match wanted(snapshot, container, &placements, image, &options.manager) {
            Ok(wanted) => {
                if let Some(pin) = wanted.pin {
                    round.pins.insert(key, pin);
                }
                for (all, mine) in instances_by_target.iter_mut().zip(wanted.per_target) {
                    all.extend(mine);
                }
            }
            Err(problem) => {
                round.container_errors.insert(key, problem.to_string());
                protected.insert(container.uid.clone());
            }
        }
    }

    for (((target, observed), working), instances) in snapshot
        .targets
        .iter()
        .zip(&seen.observed)
        .zip(&seen.working)
        .zip(instances_by_target)
    {
        let mut protected_here = protected.clone();
        let (host, error, containers_here) = match &observed.listed {
            Ok((host, listed)) => (Some(host.clone()), None, listed.clone()),
            Err(e) => (working.clone(), Some(e.clone()), Arc::default()),
        };
        if manifests.unidentified_breakage {
            // Some document could not be read at all: nothing may count as deleted.
            protected_here.extend(
                containers_here
                    .iter()
                    .filter_map(|c| c.labels.get(LABEL_UID).map(str::to_string)),
            );
        }
        round.targets.insert(
            key_of("DockerTarget", &target.name),
            TargetRound {
                target: target.object.as_ref().clone(),
                identity: TargetIdentity {
                    uid: target.uid.clone(),
                    manager: options.manager.clone(),
                },
                host,
                error,
                observed: containers_here,
                desired: DesiredSet {
                    instances: instances.into(),
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
