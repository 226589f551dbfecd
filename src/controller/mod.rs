//! `stevedore controller`: kube-runtime controllers for the three kinds, in a cluster.
//!
//! ```text
//!   API server ──watch──> stores (targets, containers, registries, Secrets, ConfigMaps)
//!        │                   │
//!        │    Secret/ConfigMap/target change ──> triggers ──┐
//!        │    daemon /events (Hosts) ──> HostSignal ────────┼─> DockerContainer reconcile
//!        │                                                  │     (finalizer → apply | cleanup)
//!        │    heartbeat timer ──────────────────────────────┼─> DockerTarget reconcile
//!        │                                                  └─> Registry reconcile
//!        └──< status (server-side apply, field manager `stevedore`), Events, finalizer
//! ```
//! With leader election, one replica acts at a time: the controllers start only while
//! this process holds the `Lease`, and the process exits when it loses it. With shards
//! (`--shards N`), every replica acts at once, each on the targets of the shards it holds
//! (see [`shards`]).

pub mod container;
pub mod context;
mod dependencies;
pub mod error;
pub mod events;
pub mod hosts;
pub mod http;
pub mod metrics;
pub mod outcome;
pub mod rbac;
pub mod registry;
pub mod shards;
pub mod target;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ListParams};
use kube::runtime::PredicateConfig;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use self::context::{
    CachesListed, Context, ConvergeSlots, Settings, Stores, is_placed_on, registry_serving,
};
use self::dependencies::{changes_after_first_list, what_placement_sees, what_pulls_see};
use self::events::EventRecorder;
use self::hosts::{HostSignal, Hosts};
use self::metrics::Metrics;
use self::outcome::error_policy;
use self::shards::Shards;
use self::shards::leases::ShardLeases;
use crate::api::{DockerContainer, DockerTarget, Registry};
use crate::docker::ConnectOptions;
use crate::placement::Reach;
use crate::shutdown::Shutdown;

/// How long a stopping controller waits for its queued Events to be published.
const EVENTS_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often the controller hands the pages its allocator freed back to the system: its
/// cold converge of a fleet leaves a peak that is mostly free once it is over.
const FREED_PAGES_RETURNED: std::time::Duration = std::time::Duration::from_secs(30);

/// Leader election settings.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    /// The `Lease`'s name.
    pub lease_name: String,
    /// The `Lease`'s namespace (the controller's own).
    pub lease_namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
}

/// Sharding settings: every replica acts at once, each on the targets of the shards it
/// holds (see [`shards`]).
#[derive(Clone, Debug)]
pub struct Sharding {
    /// How many shards the fleet is split into.
    pub shards: u32,
    /// Where the shard Leases live and who this replica is.
    pub leases: shards::leases::Config,
}

/// How the controller runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch one namespace only; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Leader election; `None` runs as the only replica (or as one of the shards').
    pub leader_election: Option<LeaderElection>,
    /// Sharding; `None` acts on the whole fleet (after winning the election, if any).
    pub sharding: Option<Sharding>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub listen: SocketAddr,
    /// Tunables.
    pub settings: Settings,
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No Kubernetes configuration could be found or used.
    #[error("failed to configure the Kubernetes client (in-cluster or KUBECONFIG)")]
    Config(#[source] kube::Error),
    /// The CRDs are not installed.
    #[error(
        "the stevedore.dev CRDs are not installed in this cluster; install them with \
         `stevedore crds | kubectl apply -f -`"
    )]
    MissingCrds,
    /// The API server refused a call at start.
    #[error("failed to {0}")]
    Kube(String, #[source] kube::Error),
    /// The HTTP endpoints could not be served.
    #[error("failed to listen on {0}")]
    Listen(SocketAddr, #[source] std::io::Error),
    /// Leader election failed.
    #[error("leader election failed")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    /// Another replica took the lease; exiting lets Kubernetes restart this one as a
    /// standby.
    #[error("lost the leader lease")]
    LostLease,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Fails with [`RunError::MissingCrds`] when the API server does not know the kinds.
async fn check_crds(client: &Client, namespace: Option<&str>) -> Result<(), RunError> {
    let containers: Api<DockerContainer> = api(client, namespace);
    match containers.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(RunError::MissingCrds),
        Err(e) => Err(RunError::Kube("list DockerContainers".into(), e)),
    }
}

/// A cache of `K` and the stream of its watch events (already applied to the cache); the
/// cache reports its first complete list to `listed`.
fn cache<K>(
    api: Api<K>,
    listed: &CachesListed,
) -> (
    Store<K>,
    impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, writer) = reflector::store();
    let kind = std::any::type_name::<K>();
    let listed = listed.clone();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(slim),
    )
    .inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            listed.listed(kind);
        }
    });
    (reader, stream)
}

/// The annotation in which `kubectl apply` keeps a copy of the object it applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the caches keep of an object: not its managedFields, nor the copy `kubectl apply`
/// leaves in an annotation. Nothing reads them, and together they can double an object's
/// size in a cache that holds a fleet's tens of thousands.
fn slim<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// A cache of `K`, driven by a task that calls `on_change` for every object applied or
/// deleted.
fn reflect<K>(
    api: Api<K>,
    listed: &CachesListed,
    on_change: impl Fn(&K) + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (reader, stream) = cache(api, listed);
    let stream = stream.touched_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(object) => on_change(&object),
                Err(error) => tracing::warn!(%error, "watch failed; retrying"),
            }
        }
    });
    reader
}

/// What of an object its own reconcile acts on: its spec, labels (a shard pin) and
/// annotations (restart and refresh requests), whether it is being deleted. Not its status:
/// the controller writes it, and without this filter every status write would queue the
/// object once more.
fn what_its_reconcile_sees<K: Resource>(object: &K) -> u64 {
    let meta = object.meta();
    hash_of(&(
        &meta.generation,
        &meta.labels,
        &meta.annotations,
        meta.deletion_timestamp.is_some(),
    ))
}

/// [`what_its_reconcile_sees`] for a DockerTarget, and its finalizers: its reconcile adds
/// them through kube-runtime's finalizer helper, which waits for the change to come back
/// before it goes on.
fn what_a_finalized_reconcile_sees<K: Resource>(object: &K) -> Option<u64> {
    Some(hash_of(&(
        what_its_reconcile_sees(object),
        &object.meta().finalizers,
    )))
}

/// [`what_its_reconcile_sees`] for a DockerContainer (whose reconcile adds its finalizer and
/// goes on in the same pass) and, sharded, the placement and the image its home replica
/// recorded in status, which the helper replicas follow.
fn what_a_container_reconcile_sees(sharded: bool) -> impl Fn(&DockerContainer) -> Option<u64> {
    move |container| {
        let recorded = sharded.then(|| {
            container.status.as_ref().map(|status| {
                let placed: Vec<(&str, &str)> = status
                    .instances
                    .iter()
                    .map(|i| (i.target.as_str(), i.container_name.as_str()))
                    .collect();
                (placed, &status.resolved_image, &status.resolved_from)
            })
        });
        Some(hash_of(&(what_its_reconcile_sees(container), recorded)))
    }
}

fn hash_of(value: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Which DockerContainers of a namespace use a Secret or ConfigMap of that name.
fn users_of(
    containers: &Store<DockerContainer>,
    registries: &Store<Registry>,
    namespace: &str,
    name: &str,
    secret: bool,
) -> Vec<ObjectRef<DockerContainer>> {
    containers
        .state()
        .iter()
        .filter(|c| c.metadata.namespace.as_deref() == Some(namespace))
        .filter(|c| {
            let spec = &c.spec;
            let in_env = spec.env.iter().any(|e| {
                e.value_from.as_ref().is_some_and(|from| {
                    let key = if secret {
                        &from.secret_key_ref
                    } else {
                        &from.config_map_key_ref
                    };
                    key.as_ref().is_some_and(|k| k.name == name)
                })
            });
            let in_env_from = spec.env_from.iter().any(|e| {
                let reference = if secret {
                    &e.secret_ref
                } else {
                    &e.config_map_ref
                };
                reference.as_ref().is_some_and(|r| r.name == name)
            });
            let in_registry = secret
                && registry_serving(registries, namespace, spec).is_some_and(|r| {
                    r.spec
                        .credentials
                        .as_ref()
                        .is_some_and(|c| c.secret_ref.name == name)
                });
            in_env || in_env_from || in_registry
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// The DockerContainers a change of the target `name` in `namespace`, labelled `labels`,
/// concerns (see [`is_placed_on`]).
fn placed_on(
    containers: &Store<DockerContainer>,
    namespace: &str,
    name: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Vec<ObjectRef<DockerContainer>> {
    // Asked of every cached DockerContainer: compared in place, nothing copied per object.
    containers
        .state()
        .iter()
        .filter(|c| c.metadata.namespace.as_deref() == Some(namespace))
        .filter(|c| is_placed_on(c, &Reach::of(&c.spec.placement), name, labels))
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

/// The DockerContainers whose image the Registry serves.
fn pulling_from(
    containers: &Store<DockerContainer>,
    registries: &Store<Registry>,
    registry: &Registry,
) -> Vec<ObjectRef<DockerContainer>> {
    let namespace = registry.namespace().unwrap_or_default();
    containers
        .state()
        .iter()
        .filter(|c| c.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|c| {
            registry_serving(registries, &namespace, &c.spec)
                .is_some_and(|r| r.metadata.name == registry.metadata.name)
        })
        .map(|c| ObjectRef::from_obj(c.as_ref()))
        .collect()
}

fn channel_stream<T: Send + 'static>(
    mut receiver: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// Runs the controller until a shutdown signal (SIGTERM, Ctrl-C) or the loss of the lease,
/// with the in-cluster or `KUBECONFIG` configuration.
pub async fn run(options: Options) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Config)?;
    run_with(client, options).await
}

/// Like [`run`], through `client`.
pub async fn run_with(client: Client, options: Options) -> Result<(), RunError> {
    let namespace = options.namespace.as_deref();
    let (signals_tx, signals_rx) = mpsc::unbounded_channel();
    let hosts = Arc::new(Hosts::new(
        signals_tx,
        ConnectOptions::default(),
        // Longer than a heartbeat: between heartbeats, reconciles use the known failure.
        options.settings.heartbeat * 4,
    ));
    let metrics = Arc::new(Metrics::new(hosts.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    let listener = http::bind(options.listen)
        .await
        .map_err(|e| RunError::Listen(options.listen, e))?;
    let server = tokio::spawn(http::serve(listener, metrics.clone(), ready.clone()));
    check_crds(&client, namespace).await?;
    ready.store(true, Ordering::Relaxed);

    let shutdown = options.settings.shutdown.clone();
    tokio::spawn(announce_drain(shutdown.clone()));
    tokio::spawn(crate::memory::return_freed_pages_every(
        FREED_PAGES_RETURNED,
    ));
    let lease = match &options.leader_election {
        // A standby told to stop has nothing under way: it stops at once.
        Some(election) => tokio::select! {
            lease = become_leader(&client, election) => Some(lease?),
            _ = shutdown.draining() => {
                server.abort();
                return Ok(());
            }
        },
        None => None,
    };
    let lost_lease = async {
        match &lease {
            Some((receiver, _)) => {
                let mut receiver = receiver.clone();
                let _ = receiver.wait_for(|leader| !*leader).await;
            }
            None => std::future::pending::<()>().await,
        }
    };

    // Events name the replica that acted.
    let identity = options
        .leader_election
        .as_ref()
        .map(|e| e.identity.clone())
        .or_else(|| options.sharding.as_ref().map(|s| s.leases.identity.clone()))
        .or_else(|| std::env::var("POD_NAME").ok());
    let (gained_tx, gained_rx) = mpsc::unbounded_channel();
    let (shards, mut shard_leases) = match &options.sharding {
        Some(sharding) => {
            let shards = Shards::sharded(sharding.shards);
            let leases = ShardLeases::new(
                client.clone(),
                sharding.leases.clone(),
                shards.clone(),
                gained_tx,
            );
            (shards, Some(leases))
        }
        None => (Shards::single(), None),
    };
    if let Some(leases) = shard_leases.as_mut() {
        // The first reconciles find their shards held already.
        leases.join().await;
        if let Err(error) = leases.round().await {
            tracing::warn!(%error, "shard leases: the first round failed; retrying");
        }
    }
    let controllers = run_controllers(
        client,
        namespace,
        hosts,
        metrics,
        options.settings.clone(),
        signals_rx,
        identity,
        (shards, gained_rx),
    );
    let result = tokio::select! {
        () = controllers => Ok(()),
        () = keep_shards(shard_leases.as_mut()) => Ok(()),
        () = lost_lease => Err(RunError::LostLease),
        () = grace_period_over(&shutdown) => {
            tracing::warn!(
                "the shutdown grace period is over with reconciles still running; the next \
                 leader repairs what was under way from the containers' labels"
            );
            Ok(())
        }
    };
    server.abort();
    if let Some(lease) = lease {
        release_lease(lease).await;
    }
    if let Some(leases) = shard_leases.as_mut() {
        leases.release_all().await;
    }
    result
}

/// Keeps this replica's shard Leases for as long as the controllers run; never returns.
async fn keep_shards(leases: Option<&mut ShardLeases>) {
    match leases {
        Some(leases) => leases.run_until(std::future::pending()).await,
        None => std::future::pending().await,
    }
}

/// Resolves once `shutdown` drains: the controllers then start no reconcile.
async fn drained(shutdown: Shutdown) {
    shutdown.draining().await;
}

/// Says when the drain starts, and for how long reconciles under way may go on.
async fn announce_drain(shutdown: Shutdown) {
    let deadline = shutdown.draining().await;
    let seconds = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .as_secs();
    tracing::info!(
        grace_seconds = seconds,
        "shutting down: no new reconciles; Docker actions under way finish or roll back"
    );
}

/// Resolves when the drain has given up on work under way; never while running.
async fn grace_period_over(shutdown: &Shutdown) {
    let deadline = shutdown.draining().await;
    tokio::time::sleep_until(shutdown.give_up_at().unwrap_or(deadline)).await;
}

type LeaseHandle = (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
);

/// Gives the lease up, so that a standby takes over at once instead of after the lease
/// duration: dropping the last receiver makes the lease task release it and end.
async fn release_lease((receiver, task): LeaseHandle) {
    drop(receiver);
    match tokio::time::timeout(std::time::Duration::from_secs(5), task).await {
        Ok(Ok(Ok(_))) => tracing::info!("released the leader lease"),
        Ok(Ok(Err(error))) => tracing::warn!(%error, "failed to release the leader lease"),
        Ok(Err(error)) => tracing::warn!(%error, "the lease task failed"),
        Err(_) => tracing::warn!("releasing the leader lease timed out"),
    }
}

/// Waits until this replica holds the lease; the handle keeps it renewed.
async fn become_leader(
    client: &Client,
    election: &LeaderElection,
) -> Result<LeaseHandle, RunError> {
    let build = || {
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &election.lease_name)
            .with_namespace(&election.lease_namespace)
            .with_identity(&election.identity)
            .with_duration(15)
            .with_grace(5)
            .with_field_manager(outcome::FIELD_MANAGER)
            .build()
    };
    tracing::info!(identity = %election.identity, lease = %election.lease_name, "waiting for the leader lease");
    // A standby's lease manager sleeps until the holder's lease would expire; a holder that
    // released it on SIGTERM would leave nobody leading for up to the lease duration. So a
    // standby also looks at the Lease every second and, once it is free, tries at once with
    // a fresh manager (the old one would trust its cached view of the holder).
    let leases: Api<Lease> = Api::namespaced(client.clone(), &election.lease_namespace);
    let manager = loop {
        let manager = build().await.map_err(RunError::Lease)?;
        tokio::select! {
            leading = manager.changed() => {
                if leading.map_err(RunError::Lease)? {
                    break manager;
                }
            }
            () = lease_released(&leases, &election.lease_name) => {}
        }
    };
    let (receiver, task) = manager.watch().await;
    tracing::info!(identity = %election.identity, "leading");
    Ok((receiver, task))
}

/// Returns once the Lease has no holder (or cannot be read, so that the manager looks).
async fn lease_released(leases: &Api<Lease>, name: &str) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let holder = match leases.get_opt(name).await {
            Ok(Some(lease)) => lease.spec.and_then(|s| s.holder_identity),
            Ok(None) | Err(_) => None,
        };
        if holder.is_none_or(|h| h.is_empty()) {
            return;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_controllers(
    client: Client,
    namespace: Option<&str>,
    hosts: Arc<Hosts>,
    metrics: Arc<Metrics>,
    settings: Settings,
    signals: mpsc::UnboundedReceiver<HostSignal>,
    identity: Option<String>,
    (shards, gained): (Arc<Shards>, mpsc::UnboundedReceiver<u32>),
) {
    // Five caches; no reconcile runs before each has listed once.
    let listed = CachesListed::expecting(&[
        std::any::type_name::<DockerContainer>(),
        std::any::type_name::<DockerTarget>(),
        std::any::type_name::<Registry>(),
        std::any::type_name::<Secret>(),
        std::any::type_name::<ConfigMap>(),
    ]);
    let bounded = ControllerConfig::default().concurrency(settings.max_concurrent_reconciles);
    // Bounded by `ctx.converging` where they reach the daemons; their API writes overlap.
    let containers_bounded = ControllerConfig::default().concurrency(
        ConvergeSlots::reconciles_for(settings.max_concurrent_reconciles),
    );
    let (containers, container_events) = cache(api::<DockerContainer>(&client, namespace), &listed);
    let (targets, target_events) = cache(api::<DockerTarget>(&client, namespace), &listed);
    let (registries, registry_events) = cache(api::<Registry>(&client, namespace), &listed);
    let container_controller = Controller::for_stream(
        container_events.applied_objects().predicate_filter(
            what_a_container_reconcile_sees(shards.is_sharded()),
            PredicateConfig::default(),
        ),
        containers.clone(),
    )
    .with_config(containers_bounded);
    let target_controller = Controller::for_stream(
        target_events.applied_objects().predicate_filter(
            what_a_finalized_reconcile_sees::<DockerTarget>,
            PredicateConfig::default(),
        ),
        targets.clone(),
    )
    .with_config(bounded.clone());
    let registry_controller = Controller::for_stream(
        registry_events.applied_objects().predicate_filter(
            |registry: &Registry| Some(what_its_reconcile_sees(registry)),
            PredicateConfig::default(),
        ),
        registries.clone(),
    )
    .with_config(bounded);

    let (container_tx, container_rx) = mpsc::unbounded_channel::<ObjectRef<DockerContainer>>();
    let (target_tx, target_rx) = mpsc::unbounded_channel::<ObjectRef<DockerTarget>>();
    let (registry_tx, registry_rx) = mpsc::unbounded_channel::<ObjectRef<Registry>>();

    // A rotated Secret reaches every object that uses it at once.
    let secrets = {
        let (containers, registries, targets) =
            (containers.clone(), registries.clone(), targets.clone());
        let (container_tx, target_tx, registry_tx) =
            (container_tx.clone(), target_tx.clone(), registry_tx.clone());
        reflect(
            api::<Secret>(&client, namespace),
            &listed,
            move |secret: &Secret| {
                let ns = secret.namespace().unwrap_or_default();
                let name = secret.name_any();
                for user in users_of(&containers, &registries, &ns, &name, true) {
                    let _ = container_tx.send(user);
                }
                for target in targets.state().iter().filter(|t| {
                    t.namespace().as_deref() == Some(ns.as_str())
                        && (t
                            .spec
                            .tls
                            .as_ref()
                            .is_some_and(|s| s.secret_ref.name == name)
                            || t.spec
                                .ssh
                                .as_ref()
                                .is_some_and(|s| s.secret_ref.name == name))
                }) {
                    let _ = target_tx.send(ObjectRef::from_obj(target.as_ref()));
                }
                for registry in registries.state().iter().filter(|r| {
                    r.namespace().as_deref() == Some(ns.as_str())
                        && r.spec
                            .credentials
                            .as_ref()
                            .is_some_and(|c| c.secret_ref.name == name)
                }) {
                    let _ = registry_tx.send(ObjectRef::from_obj(registry.as_ref()));
                }
            },
        )
    };
    let config_maps = {
        let (containers, registries) = (containers.clone(), registries.clone());
        let container_tx = container_tx.clone();
        reflect(
            api::<ConfigMap>(&client, namespace),
            &listed,
            move |map: &ConfigMap| {
                let ns = map.namespace().unwrap_or_default();
                for user in users_of(&containers, &registries, &ns, &map.name_any(), false) {
                    let _ = container_tx.send(user);
                }
            },
        )
    };

    // Daemon events: the owner of a container that died or vanished, or everything placed
    // on the target after the stream reconnected.
    {
        let (containers, targets) = (containers.clone(), targets.clone());
        let container_tx = container_tx.clone();
        let mut signals = signals;
        tokio::spawn(async move {
            while let Some(signal) = signals.recv().await {
                let refs = match signal {
                    HostSignal::Owner { namespace, name } => {
                        vec![ObjectRef::new(&name).within(&namespace)]
                    }
                    HostSignal::Resync { namespace, target } => {
                        let known = targets.get(&ObjectRef::new(&target).within(&namespace));
                        let labels = known.as_ref().and_then(|t| t.metadata.labels.as_ref());
                        placed_on(&containers, &namespace, &target, labels)
                    }
                };
                for r in refs {
                    let _ = container_tx.send(r);
                }
            }
        });
    }

    let stores = Stores {
        targets: targets.clone(),
        containers: containers.clone(),
        registries: registries.clone(),
        secrets,
        config_maps,
        listed,
    };
    // A shard taken over: its objects are reconciled here now.
    {
        let (stores, shards) = (stores.clone(), shards.clone());
        let (container_tx, target_tx, registry_tx) =
            (container_tx.clone(), target_tx.clone(), registry_tx.clone());
        let mut gained = gained;
        tokio::spawn(async move {
            while let Some(shard) = gained.recv().await {
                stores.wait_until_ready().await;
                let woken = shards::wake::woken_by(&stores, &shards, shard);
                woken
                    .targets
                    .into_iter()
                    .for_each(|t| drop(target_tx.send(t)));
                woken
                    .registries
                    .into_iter()
                    .for_each(|r| drop(registry_tx.send(r)));
                woken
                    .containers
                    .into_iter()
                    .for_each(|c| drop(container_tx.send(c)));
            }
        });
    }
    let converging = ConvergeSlots::new(settings.max_concurrent_reconciles);
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: EventRecorder::new(client.clone(), "stevedore", identity),
        stores,
        hosts,
        metrics,
        settings,
        failures: Mutex::new(HashMap::new()),
        fetcher: Default::default(),
        deletions: Default::default(),
        shards,
        placed: Default::default(),
        counts: Default::default(),
        started: std::time::Instant::now(),
        converging,
    });

    // A target's change reaches the DockerContainers placed on it, a Registry's those
    // pulling from it: never the whole namespace (a fleet has thousands).
    let target_changes = {
        let containers = containers.clone();
        move |target: DockerTarget| {
            let namespace = target.namespace().unwrap_or_default();
            let labels = target.metadata.labels.as_ref();
            placed_on(&containers, &namespace, &target.name_any(), labels)
        }
    };
    let registry_changes = {
        let (containers, registries) = (containers.clone(), registries.clone());
        move |registry: Registry| pulling_from(&containers, &registries, &registry)
    };
    // Only what DockerContainers depend on wakes them: not a target's heartbeat, images
    // or container count, not a Registry's catalog.
    let target_stream = changes_after_first_list(
        watcher(
            api::<DockerTarget>(&client, namespace),
            watcher::Config::default(),
        )
        .default_backoff(),
        what_placement_sees,
    );
    let registry_stream = changes_after_first_list(
        watcher(
            api::<Registry>(&client, namespace),
            watcher::Config::default(),
        )
        .default_backoff(),
        what_pulls_see,
    );
    let containers_done = container_controller
        .watches_stream(target_stream, target_changes)
        .watches_stream(registry_stream, registry_changes)
        .reconcile_on(channel_stream(container_rx))
        .graceful_shutdown_on(drained(ctx.settings.shutdown.clone()))
        .run(container::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let targets_done = target_controller
        .reconcile_on(channel_stream(target_rx))
        .graceful_shutdown_on(drained(ctx.settings.shutdown.clone()))
        .run(target::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let registries_done = registry_controller
        .reconcile_on(channel_stream(registry_rx))
        .graceful_shutdown_on(drained(ctx.settings.shutdown.clone()))
        .run(registry::reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    tracing::info!(
        namespace = namespace.unwrap_or("<all>"),
        "controllers running"
    );
    tokio::join!(containers_done, targets_done, registries_done);
    // What the last reconciles queued is published before the process goes.
    if tokio::time::timeout(EVENTS_AT_EXIT, ctx.recorder.flush())
        .await
        .is_err()
    {
        tracing::warn!("some Events were not published before exiting");
    }
    tracing::info!("controllers stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event as WatchEvent;
    use serde_json::json;

    fn mk_container(namespace: &str, name: &str, spec: serde_json::Value) -> DockerContainer {
        serde_json::from_value(json!({
            "apiVersion": "stevedore.dev/v1alpha1",
            "kind": "DockerContainer",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
    }

    fn mk_store<K>(objects: Vec<K>) -> Store<K>
    where
        K: Resource + Clone + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (reader, mut writer) = reflector::store();
        writer.apply_watcher_event(&WatchEvent::Init);
        for object in objects {
            writer.apply_watcher_event(&WatchEvent::InitApply(object));
        }
        writer.apply_watcher_event(&WatchEvent::InitDone);
        reader
    }

    #[test]
    fn a_target_change_reaches_only_what_is_placed_on_it() {
        let mut recorded = mk_container(
            "a",
            "was-there",
            json!({"image": "x", "placement": {"target": "other"}}),
        );
        recorded.status = serde_json::from_value(json!({
            "instances": [{"target": "edge-1", "containerName": "a_was-there_0", "state": "running"}]
        }))
        .unwrap_or_else(|e| panic!("status fixture: {e}"));
        let containers = mk_store(vec![
            mk_container(
                "a",
                "pinned",
                json!({"image": "x", "placement": {"target": "edge-1"}}),
            ),
            mk_container(
                "a",
                "pinned-elsewhere",
                json!({"image": "x", "placement": {"target": "edge-2"}}),
            ),
            mk_container(
                "a",
                "selects",
                json!({"image": "x", "placement": {"targetSelector": {"matchLabels": {"site": "north"}}}}),
            ),
            mk_container(
                "a",
                "selects-others",
                json!({"image": "x", "placement": {"targetSelector": {"matchLabels": {"site": "south"}}}}),
            ),
            recorded,
            mk_container(
                "b",
                "same-name-other-namespace",
                json!({"image": "x", "placement": {"target": "edge-1"}}),
            ),
        ]);
        let labels = BTreeMap::from([("site".to_string(), "north".to_string())]);
        let mut names: Vec<String> = placed_on(&containers, "a", "edge-1", Some(&labels))
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(names, ["pinned", "selects", "was-there"]);
        let unlabelled: Vec<String> = placed_on(&containers, "a", "edge-2", None)
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(unlabelled, ["pinned-elsewhere"]);
    }

    #[test]
    fn a_secret_or_config_map_change_reaches_exactly_its_users() {
        let placement = json!({"target": "t"});
        let containers = mk_store(vec![
            mk_container(
                "a",
                "by-env",
                json!({"image": "x", "placement": placement,
                "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "k"}}}]}),
            ),
            mk_container(
                "a",
                "by-env-from",
                json!({"image": "x", "placement": placement,
                "envFrom": [{"secretRef": {"name": "tok"}}, {"configMapRef": {"name": "cfg"}}]}),
            ),
            mk_container(
                "a",
                "by-registry",
                json!({"image": "reg.example.com/app", "placement": placement}),
            ),
            mk_container(
                "a",
                "unrelated",
                json!({"image": "x", "placement": placement}),
            ),
            mk_container(
                "b",
                "other-namespace",
                json!({"image": "x", "placement": placement,
                "envFrom": [{"secretRef": {"name": "tok"}}]}),
            ),
        ]);
        let registry: Registry = serde_json::from_value(json!({
            "apiVersion": "stevedore.dev/v1alpha1", "kind": "Registry",
            "metadata": {"name": "corp", "namespace": "a"},
            "spec": {"server": "reg.example.com", "credentials": {"secretRef": {"name": "pull"}}},
        }))
        .unwrap_or_else(|e| panic!("registry fixture: {e}"));
        let registries = mk_store(vec![registry]);
        let names = |refs: Vec<ObjectRef<DockerContainer>>| {
            let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
            names.sort();
            names
        };
        assert_eq!(
            names(users_of(&containers, &registries, "a", "tok", true)),
            ["by-env", "by-env-from"]
        );
        assert_eq!(
            names(users_of(&containers, &registries, "a", "cfg", false)),
            ["by-env-from"]
        );
        assert_eq!(
            names(users_of(&containers, &registries, "a", "pull", true)),
            ["by-registry"]
        );
        assert!(users_of(&containers, &registries, "a", "tok", false).is_empty());
        assert_eq!(
            names(pulling_from(
                &containers,
                &registries,
                &registries.state()[0]
            )),
            ["by-registry"]
        );
    }
}
