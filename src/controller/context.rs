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

use crate::api::{DockerContainer, DockerContainerSpec, DockerTarget, Registry};
use crate::docker::HostContainer;
use crate::fleet::{ContainerEntry, Recorded, Snapshot, TargetEntry};
use crate::labels::{LABEL_NAME, LABEL_UID};
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
}

impl CachesListed {
    /// Waits for the caches named `kinds`, none listed yet.
    pub fn expecting(kinds: &[&'static str]) -> Self {
        Self {
            listed: Arc::new(watch::Sender::new(BTreeSet::new())),
            expected: Arc::new(kinds.iter().copied().collect()),
        }
    }

    /// Nothing to wait for (every cache given complete).
    pub fn complete() -> Self {
        Self::expecting(&[])
    }

    /// Records that the cache of `kind` has listed.
    pub fn listed(&self, kind: &'static str) {
        self.listed.send_if_modified(|listed| listed.insert(kind));
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
        let recorded = container
            .status
            .as_ref()
            .map(Recorded::from_status)
            .unwrap_or_default();
        let in_scope = |t: &DockerTarget| {
            let name = t.metadata.name.as_deref().unwrap_or_default();
            t.metadata.namespace.as_deref() == Some(namespace.as_str())
                && (reach.includes(name, t.metadata.labels.as_ref())
                    || recorded.replicas.iter().any(|(on, _)| on == name))
        };
        let mut targets: Vec<TargetEntry> = self
            .targets
            .state()
            .into_iter()
            .filter(|t| in_scope(t))
            .map(|t| TargetEntry {
                name: t.metadata.name.clone().unwrap_or_default(),
                uid: t.metadata.uid.clone().unwrap_or_default(),
                object: t,
            })
            .collect();
        targets.sort_by(|a, b| a.name.cmp(&b.name));
        let entry = ContainerEntry {
            name: container.metadata.name.clone().unwrap_or_default(),
            uid: container.metadata.uid.clone().unwrap_or_default(),
            object: Arc::new(container.clone()),
            recorded,
        };
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

    /// The other DockerContainers whose containers `listed` shows (by their name and UID
    /// labels), looked up one by one: they share the snapshot's targets, so placement
    /// counts their replicas there.
    pub fn neighbours<'c>(
        &self,
        snapshot: &Snapshot,
        listed: impl IntoIterator<Item = &'c HostContainer>,
    ) -> Vec<ContainerEntry> {
        let mut found: BTreeMap<&str, ContainerEntry> = BTreeMap::new();
        for container in listed {
            let (Some(uid), Some(name)) = (
                container.labels.get(LABEL_UID),
                container.labels.get(LABEL_NAME),
            ) else {
                continue;
            };
            if found.contains_key(uid.as_str()) || snapshot.container(uid).is_some() {
                continue;
            }
            let key = ObjectRef::new(name).within(&snapshot.namespace);
            let Some(object) = self.containers.get(&key) else {
                continue;
            };
            if object.metadata.uid.as_deref() != Some(uid.as_str()) {
                continue;
            }
            let recorded = object
                .status
                .as_ref()
                .map(Recorded::from_status)
                .unwrap_or_default();
            found.insert(
                uid,
                ContainerEntry {
                    name: name.clone(),
                    uid: uid.clone(),
                    object,
                    recorded,
                },
            );
        }
        found.into_values().collect()
    }
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
    /// Objects of one kind reconciled at once (0 = unbounded).
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

/// Objects of one kind reconciled at once, unless configured otherwise: enough to keep a
/// fleet's slow daemons from holding up the rest, few enough to bound memory and API load.
pub const DEFAULT_MAX_CONCURRENT_RECONCILES: u16 = 16;

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
    use super::CachesListed;
    use std::time::Duration;

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
