//! What every reconcile shares: the client, the watched objects, the daemon connections,
//! Events and metrics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::watch;

use super::events::EventRecorder;
use super::hosts::Hosts;
use super::metrics::Metrics;
use super::shards::Shards;

use crate::api::{DockerContainer, DockerContainerSpec, DockerTarget, Registry};
use crate::docker::HostContainer;
use crate::fleet::{ContainerEntry, Snapshot, TargetEntry};
use crate::labels::{LABEL_NAME, LABEL_NAMESPACE, LABEL_UID};
use crate::placement::Reach;
use crate::registry::credentials::registry_for;
use crate::shutdown::Shutdown;
use crate::sources::StaticSources;

/// The objects the controllers watch, read from their caches (never fetched per reconcile).
#[derive(Clone)]
pub struct Stores {
    /// DockerTargets.
    pub targets: Store<DockerTarget>,
    /// DockerContainers.
    pub containers: Store<DockerContainer>,
    /// Registries.
    pub registries: Store<Registry>,
    /// Secrets (TLS and ssh material, registry credentials, env values).
    pub secrets: Store<Secret>,
    /// ConfigMaps (env values).
    pub config_maps: Store<ConfigMap>,
    /// Which of them have listed once.
    pub listed: CachesListed,
}

/// Which watched caches have completed their first list.
///
/// kube-runtime's `Store::wait_until_ready` wakes only the last of several tasks waiting
/// at once (and the controllers' own runners wait on it too), so reconciles wait on this
/// instead: each cache's watch stream reports its first complete list here.
#[derive(Clone, Debug)]
pub struct CachesListed {
    listed: Arc<watch::Sender<BTreeSet<&'static str>>>,
    expected: Arc<BTreeSet<&'static str>>,
    /// When the last expected cache listed.
    complete_at: Arc<std::sync::OnceLock<Instant>>,
}

impl CachesListed {
    /// Waits for the caches named `kinds`, none listed yet.
    pub fn expecting(kinds: &[&'static str]) -> Self {
        Self {
            listed: Arc::new(watch::Sender::new(BTreeSet::new())),
            expected: Arc::new(kinds.iter().copied().collect()),
            complete_at: Arc::default(),
        }
    }

    /// Nothing to wait for (every cache given complete).
    pub fn complete() -> Self {
        Self::expecting(&[])
    }

    /// Records that the cache of `kind` has listed.
    pub fn listed(&self, kind: &'static str) {
        self.listed.send_if_modified(|listed| {
            let added = listed.insert(kind);
            if self.expected.is_subset(listed) {
                let _ = self.complete_at.set(Instant::now());
            }
            added
        });
    }

    /// How long ago every expected cache had listed; `None` while one has not.
    pub fn complete_for(&self) -> Option<Duration> {
        self.complete_at.get().map(Instant::elapsed)
    }

    /// Waits until every expected cache has listed.
    pub async fn wait(&self) {
        let mut receiver = self.listed.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = receiver
            .wait_for(|listed| self.expected.is_subset(listed))
            .await;
    }
}

impl Stores {
    /// Waits until every store has listed its objects once. A reconcile before that (after
    /// a restart or a leader change) could miss a Registry or Secret that exists: a
    /// dropped pin, a spurious `InvalidSpec`, a container touched for nothing.
    pub async fn wait_until_ready(&self) {
        self.listed.wait().await;
    }

    /// The Secrets and ConfigMaps of one namespace, decoded.
    pub fn sources(&self, namespace: &str) -> StaticSources {
        let in_namespace = |ns: &Option<String>| ns.as_deref() == Some(namespace);
        StaticSources {
            secrets: self
                .secrets
                .state()
                .iter()
                .filter(|s| in_namespace(&s.metadata.namespace))
                .map(|s| (s.metadata.name.clone().unwrap_or_default(), secret_bytes(s)))
                .collect(),
            config_maps: self
                .config_maps
                .state()
                .iter()
                .filter(|c| in_namespace(&c.metadata.namespace))
                .map(|c| {
                    (
                        c.metadata.name.clone().unwrap_or_default(),
                        c.data.clone().unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }

    /// What one DockerContainer's reconcile works from, read from the caches: the targets
    /// its placement may reach or its status records instances on, the object itself as it
    /// was handed over (the cache may not hold it yet), and its namespace's registries and
    /// sources. The other DockerContainers join later, through what those targets run (see
    /// [`Stores::neighbours`]): a reconcile costs what its own targets cost, not what the
    /// namespace holds.
    pub fn snapshot_for(&self, container: &DockerContainer) -> (Snapshot, ContainerEntry) {
        let namespace = container.metadata.namespace.clone().unwrap_or_default();
        let reach = Reach::of(&container.spec.placement);
        let in_scope: Vec<Arc<DockerTarget>> = match &reach {
            // Pinned: its target and those its status names, looked up by name (a fleet's
            // thousands of targets are not walked for one object).
            Reach::Named(pinned) => {
                let recorded = container.status.iter().flat_map(|s| &s.instances);
                let names: BTreeSet<&str> = recorded
                    .map(|i| i.target.as_str())
                    .chain([*pinned])
                    .collect();
                names
                    .into_iter()
                    .filter_map(|name| self.targets.get(&ObjectRef::new(name).within(&namespace)))
                    .collect()
            }
            Reach::Selected(_) | Reach::Nothing => self
                .targets
                .state()
                .into_iter()
                .filter(|t| {
                    let name = t.metadata.name.as_deref().unwrap_or_default();
                    t.metadata.namespace.as_deref() == Some(namespace.as_str())
                        && is_placed_on(container, &reach, name, t.metadata.labels.as_ref())
                })
                .collect(),
        };
        let mut targets: Vec<TargetEntry> = in_scope
            .into_iter()
            .map(|t| TargetEntry {
                name: t.metadata.name.clone().unwrap_or_default(),
                uid: t.metadata.uid.clone().unwrap_or_default(),
                object: t,
            })
            .collect();
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        let entry = ContainerEntry::of(Arc::new(container.clone()));
        let mut registries: Vec<(String, Arc<Registry>)> = self
            .registries
            .state()
            .into_iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .map(|r| (r.metadata.name.clone().unwrap_or_default(), r))
            .collect();
        registries.sort_by(|a, b| a.0.cmp(&b.0));
        let snapshot = Snapshot {
            sources: self.sources(&namespace),
            namespace,
            targets,
            held_targets: Vec::new(),
            containers: vec![entry.clone()],
            registries,
        };
        (snapshot, entry)
    }

    /// The other DockerContainers whose containers `listed` shows, looked up one by one
    /// (see [`Stores::owner_of`]): they share the snapshot's targets, so placement counts
    /// their replicas there.
    pub fn neighbours<'c>(
        &self,
        snapshot: &Snapshot,
        listed: impl IntoIterator<Item = &'c HostContainer>,
    ) -> Vec<ContainerEntry> {
        let mut found: BTreeMap<&str, ContainerEntry> = BTreeMap::new();
        for container in listed {
            let Some(uid) = container.labels.get(LABEL_UID) else {
                continue;
            };
            if found.contains_key(uid) || snapshot.container(uid).is_some() {
                continue;
            }
            if let Some(owner) = self.owner_of(container) {
                found.insert(uid, ContainerEntry::of(owner));
            }
        }
        found.into_values().collect()
    }

    /// The DockerContainer that owns a managed container, found by the namespace and name
    /// its labels give (one lookup, not a walk of the cache) and only if its UID is the
    /// labelled one: an object deleted and made again under the same name owns nothing of
    /// its predecessor's.
    pub fn owner_of(&self, container: &HostContainer) -> Option<Arc<DockerContainer>> {
        let label = |key: &str| container.labels.get(key);
        let (namespace, name, uid) = (
            label(LABEL_NAMESPACE)?,
            label(LABEL_NAME)?,
            label(LABEL_UID)?,
        );
        self.containers
            .get(&ObjectRef::new(name).within(namespace))
            .filter(|owner| owner.metadata.uid.as_deref() == Some(uid))
    }
}

/// Whether a DockerContainer whose placement reaches `reach` concerns the target `name`
/// labelled `labels`: it may place replicas there, or its status records some there (they
/// may have to leave).
pub fn is_placed_on(
    container: &DockerContainer,
    reach: &Reach<'_>,
    name: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    reach.includes(name, labels) || container.has_instances_on(name)
}

/// A Secret's data, decoded.
pub fn secret_bytes(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    // The API server folds stringData into data; a cache fed from a manifest may still
    // hold it.
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

/// The Registry in `registries` that serves a container of `namespace` with `spec` (see
/// [`registry_for`]).
pub fn registry_serving(
    registries: &Store<Registry>,
    namespace: &str,
    spec: &DockerContainerSpec,
) -> Option<Arc<Registry>> {
    let state = registries.state();
    let in_namespace = state
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(namespace))
        .map(|r| (r.metadata.name.as_deref().unwrap_or_default(), r.as_ref()));
    let registry_ref = spec.registry_ref.as_ref().map(|r| r.name.as_str());
    let (name, _) = registry_for(&spec.image, registry_ref, in_namespace)?;
    state
        .iter()
        .find(|r| {
            r.metadata.namespace.as_deref() == Some(namespace)
                && r.metadata.name.as_deref() == Some(name)
        })
        .cloned()
}

/// Tunables of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `stevedore.dev/manager` label of every container this controller makes.
    pub manager: String,
    /// Actions run at once per target and object.
    pub concurrency: usize,
    /// Objects of one kind reconciled at once (0 = unbounded); for DockerContainers, the
    /// objects converging on their daemons at once (see [`ConvergeSlots`]).
    pub max_concurrent_reconciles: u16,
    /// Reconcile every object at least this often, events or not.
    pub resync: Duration,
    /// How often a DockerTarget is checked (its heartbeat).
    pub heartbeat: Duration,
    /// How long a target may be unreachable before its replicas move elsewhere.
    pub grace: Duration,
    /// How the controller stops: once it drains, no reconcile starts and the Docker actions
    /// under way finish or roll back before its deadline.
    pub shutdown: Shutdown,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            manager: "controller".into(),
            concurrency: crate::converge::executor::DEFAULT_CONCURRENCY,
            max_concurrent_reconciles: DEFAULT_MAX_CONCURRENT_RECONCILES,
            resync: Duration::from_secs(300),
            heartbeat: Duration::from_secs(15),
            grace: Duration::from_secs(crate::placement::DEFAULT_GRACE_SECS),
            shutdown: Shutdown::never(),
        }
    }
}

/// For how long after a start changed DockerContainers are reconciled before the others
/// (see [`Context::wait_at_start`]).
pub const CHANGED_FIRST: Duration = Duration::from_secs(5);

/// Over how long the unchanged ones are spread after that.
const UNCHANGED_SPREAD: Duration = Duration::from_secs(3);

/// How long a DockerContainer reconciled `since_start` after the controllers started (at
/// `started_unix`, in seconds) waits, when its status shows it converged to its current
/// spec before that start: those changed while no controller ran go first (a fleet's start
/// reconciles every object, and one edited in the meantime would otherwise wait for its
/// turn among ten thousand). `None`: now. Objects of one target wait until one instant, so
/// that they share one list call.
pub fn wait_at_start(
    (since_start, started_unix): (Duration, i64),
    container: &DockerContainer,
) -> Option<Duration> {
    if since_start >= CHANGED_FIRST || !converged_before(container, started_unix) {
        return None;
    }
    let phase_of = match &container.spec.placement.target {
        Some(target) => target.as_str(),
        None => container.metadata.uid.as_deref().unwrap_or_default(),
    };
    let spread = u64::try_from(UNCHANGED_SPREAD.as_millis())
        .unwrap_or(1)
        .max(1);
    let phase = Duration::from_millis(super::shards::fnv1a(phase_of.as_bytes()) % spread);
    Some(CHANGED_FIRST - since_start + phase)
}

/// Whether the object's status says it has run its current spec everywhere, ready, since
/// before `started_unix` (so an earlier process, not this one, saw it so), with no restart
/// requested (a restart request is an annotation, which status does not record).
fn converged_before(container: &DockerContainer, started_unix: i64) -> bool {
    let Some(status) = &container.status else {
        return false;
    };
    let ready = status.conditions.iter().any(|c| {
        crate::conditions::ConditionType::Ready.is(c)
            && c.status == "True"
            && c.last_transition_time.0.as_second() < started_unix
    });
    ready
        && status.observed_generation == container.metadata.generation
        && container.restarted_at().is_none()
        && container.metadata.deletion_timestamp.is_none()
}

/// Objects of one kind reconciled at once, unless configured otherwise: enough to keep a
/// fleet's slow daemons from holding up the rest, few enough to bound memory and API load.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 16;

/// How many more DockerContainer reconciles run than converge at once: the others are
/// adding their finalizer or writing their status. Each such write waits on the API
/// server for about as long as the Docker work of a new container takes, and several
/// times as long when the API server is busy, so without them the daemons would idle
/// while reconciles wait on their writes.
pub const API_WRITES_IN_FLIGHT_PER_SLOT: u16 = 7;

/// Bounds the DockerContainers converging on their daemons at once: the part of a
/// reconcile that lists, creates, starts and removes. Its API writes (the finalizer
/// before, the status after) are made outside it, so that the slot goes to the next
/// object's Docker work meanwhile.
pub struct ConvergeSlots(Option<tokio::sync::Semaphore>);

impl ConvergeSlots {
    /// `slots` at once; 0 leaves them unbounded.
    pub fn new(slots: u16) -> Self {
        Self((slots > 0).then(|| tokio::sync::Semaphore::new(usize::from(slots))))
    }

    /// Waits for a slot (first come, first served); it is free again when the permit drops.
    pub async fn enter(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        // The semaphore is never closed, so acquiring fails never.
        self.0.as_ref()?.acquire().await.ok()
    }

    /// The DockerContainer reconciles to run at once so that `slots` objects converge
    /// while the others write to the API server (0: unbounded).
    pub fn reconciles_for(slots: u16) -> u16 {
        slots.saturating_mul(1 + API_WRITES_IN_FLIGHT_PER_SLOT)
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// Publishes `events.k8s.io` Events.
    pub recorder: EventRecorder,
    /// The watched objects.
    pub stores: Stores,
    /// Connections to the daemons.
    pub hosts: Arc<Hosts>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Tunables.
    pub settings: Settings,
    /// Failures in a row per object UID, for the retry back-off.
    pub failures: Mutex<HashMap<String, u32>>,
    /// Fetches `imageSource` tarballs and build contexts (conditionally, cached by URL).
    pub fetcher: crate::registry::source::SourceFetcher,
    /// When this replica first saw each deleted DockerTarget, by UID.
    pub deletions: Mutex<HashMap<String, Instant>>,
    /// The shards this replica acts on (all of them without sharding).
    pub shards: Arc<Shards>,
    /// Sharded: the placement (target, replica) this replica, as their home, last wrote
    /// into each DockerContainer's status, by UID. Its cache may not show that write yet,
    /// and a helper may already act on it: placing from the older status would start a
    /// replica twice.
    pub placed: Mutex<HashMap<String, Vec<(String, u32)>>>,
    /// The managed-container count each target's last heartbeat found, by UID.
    pub counts: Mutex<HashMap<String, i32>>,
    /// When this replica's controllers started.
    pub started: Instant,
    /// The DockerContainers converging on their daemons at once.
    pub converging: ConvergeSlots,
}

impl Context {
    /// The delay before retrying an object that failed `n` times in a row: 5 s doubling
    /// to 5 min.
    pub fn retry_delay(&self, object_uid: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(object_uid.to_string()).or_default();
        *n = n.saturating_add(1);
        Duration::from_secs(5u64.saturating_mul(1 << (*n - 1).min(6)).min(300))
    }

    /// When this replica first saw the object with this UID deleted.
    pub fn deletion_seen(&self, object_uid: &str) -> Instant {
        *self
            .deletions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(object_uid.to_string())
            .or_insert_with(Instant::now)
    }

    /// Forgets a deleted object once it is gone.
    pub fn forget_deletion(&self, object_uid: &str) {
        self.deletions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(object_uid);
    }

    /// What this replica last wrote of `uid`'s placement as its home, if anything.
    pub fn placed(&self, uid: &str) -> Option<Vec<(String, u32)>> {
        self.placed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .cloned()
    }

    /// Remembers `uid`'s placement as written into its status, or forgets it (`None`:
    /// this replica is not, or no longer, its home).
    pub fn remember_placed(&self, uid: &str, replicas: Option<Vec<(String, u32)>>) {
        let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        match replicas {
            Some(replicas) => placed.insert(uid.to_string(), replicas),
            None => placed.remove(uid),
        };
    }

    /// Whether the previous heartbeat of the target `uid` found `count` managed containers
    /// too; records `count` for the next one.
    pub fn count_settled(&self, target_uid: &str, count: i32) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.insert(target_uid.to_string(), count) == Some(count)
    }

    /// Forgets a deleted target's count.
    pub fn forget_count(&self, target_uid: &str) {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(target_uid);
    }

    /// How long a DockerContainer reconciled now waits (see [`wait_at_start`]); the start is
    /// counted from when the caches had listed, which takes a while on a fleet.
    pub fn wait_at_start(&self, container: &DockerContainer) -> Option<Duration> {
        let since_start = self
            .stores
            .listed
            .complete_for()
            .unwrap_or_else(|| self.started.elapsed());
        let running_for = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
        let started_unix = crate::conditions::now_time()
            .0
            .as_second()
            .saturating_sub(running_for);
        wait_at_start((since_start, started_unix), container)
    }

    /// Forgets an object's failures after a success.
    pub fn succeeded(&self, object_uid: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(object_uid);
    }
}

#[cfg(test)]
mod tests {
    use super::{CHANGED_FIRST, CachesListed, wait_at_start};
    use crate::api::DockerContainer;
    use std::time::Duration;

    fn container(generation: i64, status: serde_json::Value) -> DockerContainer {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "stevedore.dev/v1alpha1",
            "kind": "DockerContainer",
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "generation": generation},
            "spec": {"image": "busybox", "placement": {"target": "t1"}},
            "status": status,
        }))
        .expect("a DockerContainer")
    }

    /// When the test's Ready conditions turned True, and a start after that.
    const READY_AT: i64 = 1_767_225_600;
    const START: i64 = READY_AT + 60;

    fn converged(observed: i64, ready: &str) -> serde_json::Value {
        serde_json::json!({
            "observedGeneration": observed,
            "conditions": [{"type": "Ready", "status": ready, "reason": "R", "message": "",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        })
    }

    #[test]
    fn at_start_what_changed_goes_first_and_the_rest_waits_for_one_instant_per_target() {
        let early = Duration::from_secs(1);
        // Edited while no controller ran, never reconciled, or not ready: now.
        assert_eq!(
            wait_at_start((early, START), &container(2, converged(1, "True"))),
            None
        );
        assert_eq!(
            wait_at_start((early, START), &container(1, serde_json::Value::Null)),
            None
        );
        assert_eq!(
            wait_at_start((early, START), &container(1, converged(1, "False"))),
            None
        );
        let mut restarted = container(1, converged(1, "True"));
        restarted.metadata.annotations =
            Some([("stevedore.dev/restartedAt".to_string(), "now".to_string())].into());
        assert_eq!(wait_at_start((early, START), &restarted), None);
        // Converged as recorded: after the changed ones, at its target's instant.
        let unchanged = container(1, converged(1, "True"));
        let wait = wait_at_start((early, START), &unchanged).expect("waits");
        assert!(wait >= CHANGED_FIRST - early, "{wait:?}");
        let mut neighbour = container(3, converged(3, "True"));
        neighbour.metadata.uid = Some("u2".into());
        let later = Duration::from_secs(2);
        let neighbour_wait = wait_at_start((later, START), &neighbour).expect("waits");
        assert_eq!(
            early + wait,
            later + neighbour_wait,
            "one instant per target"
        );
        // Ready since this process started: this process has seen it, nothing waits.
        assert_eq!(
            wait_at_start((early, READY_AT), &unchanged),
            None,
            "became ready after the start"
        );
        // Once the start is over, nothing waits.
        assert_eq!(wait_at_start((CHANGED_FIRST, START), &unchanged), None);
    }

    #[tokio::test]
    async fn every_waiting_reconcile_wakes_once_every_cache_has_listed() {
        let listed = CachesListed::expecting(&["targets", "secrets"]);
        // Many reconciles wait at once (kube-runtime's store readiness woke only the last).
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let listed = listed.clone();
                tokio::spawn(async move { listed.wait().await })
            })
            .collect();
        listed.listed("targets");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "woke before the Secrets listed"
        );
        listed.listed("secrets");
        for waiter in waiters {
            tokio::time::timeout(Duration::from_secs(1), waiter)
                .await
                .expect("every waiter wakes")
                .expect("waiter task");
        }
        // Later reconciles pass at once.
        tokio::time::timeout(Duration::from_millis(100), listed.wait())
            .await
            .expect("ready stays ready");
    }
}
