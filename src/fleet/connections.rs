//! One connection per target, kept while its spec and Secret material are unchanged, for
//! both modes: the controller's reconciles share one cache, a standalone run keeps one
//! across its rounds.
//!
//! A rotated certificate or key changes the fingerprint, so the next use connects anew. A
//! daemon that failed is tried again only after `retry_after` (or when the caller asks for
//! a fresh attempt), so many objects on one dead host neither hammer it nor wait on it.
//! The last list of each target is kept: while a target cannot be listed, its replicas stay
//! placed where it last showed them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::{Snapshot, TargetEntry};
use crate::api::target::DockerTargetSpec;
use crate::converge::engine::unix_now;
use crate::docker::material::{fingerprint, target_material};
use crate::docker::{
    ConnectOptions, ConnectionMaterial, DockerError, DockerHost, ErrorKind, HostContainer, connect,
};
use crate::labels::LABEL_TARGET;

/// The target a connection is for.
#[derive(Clone, Copy, Debug)]
pub struct TargetRef<'a> {
    /// Its UID: the cache key and the `stevedore.dev/target` label.
    pub uid: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// How to reach it.
    pub spec: &'a DockerTargetSpec,
}

impl<'a> TargetRef<'a> {
    /// The target of a snapshot entry.
    pub fn of(snapshot: &'a Snapshot, target: &'a TargetEntry) -> Self {
        Self {
            uid: &target.uid,
            namespace: &snapshot.namespace,
            name: &target.name,
            spec: &target.object.spec,
        }
    }
}

/// Told when a daemon session begins (a connection was made) and ends (it failed or its
/// target went): the controller follows each session's event stream.
pub trait SessionObserver: Send + Sync {
    /// A connection to `target` was made.
    fn began(&self, target: TargetRef<'_>, host: &DockerHost);
    /// The target's connection is gone.
    fn ended(&self, target_uid: &str);
}

/// How [`observe`] treats a target whose connection failed before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Reuse the known failure until `retry_after` has passed.
    Reuse,
    /// Try again now.
    Fresh,
    /// For removing containers: a working connection serves even if the target's Secret
    /// material is gone.
    Cleanup,
}

struct Entry {
    label: String,
    fingerprint: u64,
    host: Result<DockerHost, DockerError>,
    attempted: Instant,
    unreachable_since: Option<u64>,
    last_listed: Option<Arc<Vec<HostContainer>>>,
    /// When the list call behind `last_listed` began, while it may still be shared (made
    /// on this connection).
    listed_at: Option<Instant>,
    /// A list call under way: when it began, and its result for whoever may share it.
    listing: Option<(Instant, SharedList)>,
}

/// One list call's result, awaited by every reconcile that shares it.
type SharedList = Shared<BoxFuture<'static, Result<Arc<Vec<HostContainer>>, DockerError>>>;

/// When each target last changed, as far as this process knows: its daemon reported an
/// event for one of its containers, or this process wrote there. A list call that began
/// before that is not shared.
#[derive(Debug, Default)]
pub struct Changes(Mutex<HashMap<String, Instant>>);

impl Changes {
    /// Records that the target changed now.
    pub fn record(&self, target_uid: &str) {
        let mut at = self.0.lock().unwrap_or_else(|e| e.into_inner());
        at.insert(target_uid.to_string(), Instant::now());
    }

    fn last(&self, target_uid: &str) -> Option<Instant> {
        let at = self.0.lock().unwrap_or_else(|e| e.into_inner());
        at.get(target_uid).copied()
    }

    fn forget(&self, target_uid: &str) {
        let mut at = self.0.lock().unwrap_or_else(|e| e.into_inner());
        at.remove(target_uid);
    }
}

/// The connections to every target, by target UID.
pub struct Connections {
    entries: Mutex<HashMap<String, Entry>>,
    options: ConnectOptions,
    retry_after: Duration,
    observer: Option<Arc<dyn SessionObserver>>,
    changes: Arc<Changes>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("targets", &self.lock().len())
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl Connections {
    /// No connections yet. A failed daemon is tried again after `retry_after`.
    pub fn new(options: ConnectOptions, retry_after: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            options,
            retry_after,
            observer: None,
            changes: Arc::default(),
        }
    }

    /// Where changes of the targets are recorded (see [`Connections::list_since`]).
    pub fn changes(&self) -> Arc<Changes> {
        self.changes.clone()
    }

    /// Tells `observer` of every session that begins or ends.
    pub fn with_observer(mut self, observer: Arc<dyn SessionObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Every update is a single insert or field write, so a lock poisoned by a panic
        // elsewhere still guards a consistent map.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The target's connection, when one was made and works.
    pub fn working(&self, target_uid: &str) -> Option<DockerHost> {
        match self.lock().get(target_uid) {
            Some(Entry { host: Ok(host), .. }) => Some(host.clone()),
            _ => None,
        }
    }

    /// The target's connection: the existing one while its spec and Secret material are
    /// unchanged, else a new one. A target that failed is tried again after `retry_after`,
    /// or at once when `retry_now`.
    pub async fn connection(
        &self,
        target: TargetRef<'_>,
        material: Result<ConnectionMaterial, DockerError>,
        retry_now: bool,
    ) -> Result<DockerHost, DockerError> {
        // Material that vanished (a Secret deleted, as a namespace deletion does before
        // the target goes) does not replace a working connection: cleanups may still need
        // it (see `connection_for_cleanup`).
        if let Err(e) = &material
            && self.working(target.uid).is_some()
        {
            return Err(e.clone());
        }
        let print = fingerprint(target.spec, &material);
        if let Some(entry) = self.lock().get(target.uid)
            && entry.fingerprint == print
        {
            match &entry.host {
                Ok(host) => return Ok(host.clone()),
                Err(e) if !retry_now && entry.attempted.elapsed() < self.retry_after => {
                    return Err(e.clone());
                }
                Err(_) => {}
            }
        }
        let host = match material {
            Ok(material) => connect(target.spec, &material, self.options).await,
            Err(e) => Err(e),
        };
        if let Some(observer) = &self.observer {
            match &host {
                Ok(host) => observer.began(target, host),
                Err(_) => observer.ended(target.uid),
            }
        }
        let mut entries = self.lock();
        let previous = entries.remove(target.uid);
        let unreachable_since = match &host {
            Ok(_) => None,
            Err(_) => Some(
                previous
                    .as_ref()
                    .and_then(|p| p.unreachable_since)
                    .unwrap_or_else(unix_now),
            ),
        };
        entries.insert(
            target.uid.to_string(),
            Entry {
                label: format!("{}/{}", target.namespace, target.name),
                fingerprint: print,
                host: host.clone(),
                attempted: Instant::now(),
                unreachable_since,
                last_listed: previous.and_then(|p| p.last_listed),
                listed_at: None,
                listing: None,
            },
        );
        host
    }

    /// The connection for removing containers: like [`Connections::connection`], but when
    /// the target's Secret material is gone (a namespace being deleted loses its Secrets
    /// first) the connection made with it before still serves.
    pub async fn connection_for_cleanup(
        &self,
        target: TargetRef<'_>,
        material: Result<ConnectionMaterial, DockerError>,
    ) -> Result<DockerHost, DockerError> {
        if material.is_err()
            && let Some(host) = self.working(target.uid)
        {
            return Ok(host);
        }
        self.connection(target, material, false).await
    }

    /// Every container labelled for the target, from a list call made now. A success is
    /// kept as the target's last list; a failure that means the connection is gone marks
    /// it so.
    pub async fn list(
        &self,
        target_uid: &str,
        host: &DockerHost,
    ) -> Result<Arc<Vec<HostContainer>>, DockerError> {
        self.list_since(target_uid, host, Instant::now()).await
    }

    /// Like [`Connections::list`], but shares a list call that began at `fresh_after` or
    /// later (under way or done) when the target has not changed since it began: the
    /// reconciles of the DockerContainers on one target that run together make one call.
    pub async fn list_since(
        &self,
        target_uid: &str,
        host: &DockerHost,
        fresh_after: Instant,
    ) -> Result<Arc<Vec<HostContainer>>, DockerError> {
        let after = self
            .changes
            .last(target_uid)
            .map_or(fresh_after, |changed| changed.max(fresh_after));
        let (began, call) = {
            let mut entries = self.lock();
            match entries.get_mut(target_uid) {
                Some(entry) => {
                    if let (Some(at), Some(listed)) = (entry.listed_at, &entry.last_listed)
                        && at >= after
                    {
                        return Ok(listed.clone());
                    }
                    match &entry.listing {
                        Some((at, call)) if *at >= after => (*at, call.clone()),
                        _ => {
                            let began = Instant::now();
                            let call = list_call(host, target_uid);
                            entry.listing = Some((began, call.clone()));
                            (began, call)
                        }
                    }
                }
                None => (Instant::now(), list_call(host, target_uid)),
            }
        };
        let result = call.await;
        match &result {
            Ok(listed) => {
                let mut entries = self.lock();
                if let Some(entry) = entries.get_mut(target_uid) {
                    if entry.listing.as_ref().is_some_and(|(at, _)| *at == began) {
                        entry.listing = None;
                    }
                    if entry.listed_at.is_none_or(|at| at < began) {
                        entry.last_listed = Some(listed.clone());
                        entry.listed_at = Some(began);
                    }
                }
            }
            Err(e) => self.mark_failed(target_uid, e),
        }
        result
    }

    /// Records that a call to the target failed in a way that means the connection is
    /// gone: the next use connects anew (after `retry_after`).
    pub fn mark_failed(&self, target_uid: &str, error: &DockerError) {
        if !matches!(error.kind, ErrorKind::Unreachable | ErrorKind::TlsError) {
            return;
        }
        {
            let mut entries = self.lock();
            let Some(entry) = entries.get_mut(target_uid) else {
                return;
            };
            entry.unreachable_since.get_or_insert_with(unix_now);
            entry.host = Err(error.clone());
            entry.attempted = Instant::now();
            entry.listed_at = None;
            entry.listing = None;
        }
        if let Some(observer) = &self.observer {
            observer.ended(target_uid);
        }
    }

    /// Since when (unix seconds) the target has been unreachable, if it is.
    pub fn unreachable_since(&self, target_uid: &str) -> Option<u64> {
        self.lock()
            .get(target_uid)
            .and_then(|e| e.unreachable_since)
    }

    /// What the target's last successful list showed.
    pub fn last_listed(&self, target_uid: &str) -> Option<Arc<Vec<HostContainer>>> {
        self.lock()
            .get(target_uid)
            .and_then(|e| e.last_listed.clone())
    }

    /// Drops the connections of targets that no longer exist.
    pub fn retain(&self, live_target_uids: &HashSet<String>) {
        let mut gone = Vec::new();
        self.lock().retain(|uid, _| {
            let live = live_target_uids.contains(uid);
            if !live {
                gone.push(uid.clone());
            }
            live
        });
        for uid in &gone {
            self.changes.forget(uid);
        }
        if let Some(observer) = &self.observer {
            for uid in gone {
                observer.ended(&uid);
            }
        }
    }

    /// Every connected target: (`namespace/name`, host).
    pub fn connected(&self) -> Vec<(String, DockerHost)> {
        self.lock()
            .values()
            .filter_map(|e| Some((e.label.clone(), e.host.as_ref().ok()?.clone())))
            .collect()
    }
}

/// One list call of the containers labelled for the target, to be shared.
fn list_call(host: &DockerHost, target_uid: &str) -> SharedList {
    let (host, target_uid) = (host.clone(), target_uid.to_string());
    async move {
        host.list_labelled(LABEL_TARGET, &target_uid)
            .await
            .map(Arc::new)
    }
    .boxed()
    .shared()
}

/// What one target runs, from one list call, with its daemon.
pub type Listed = Result<(DockerHost, Arc<Vec<HostContainer>>), DockerError>;

/// One target as a round (or a reconcile) saw it.
#[derive(Clone, Debug)]
pub struct TargetSeen {
    /// The daemon and every container labelled for the target, or why not.
    pub listed: Listed,
    /// What it runs: this list or, while it cannot be listed, its last one.
    pub known: Option<Arc<Vec<HostContainer>>>,
    /// Since when (unix seconds) it has not answered, if it does not.
    pub unreachable_since: Option<u64>,
}

impl TargetSeen {
    /// A target nobody tried to reach.
    pub fn not_connected() -> Self {
        Self {
            listed: Err(DockerError::new(ErrorKind::Unreachable, "not connected")),
            known: None,
            unreachable_since: None,
        }
    }

    /// Whether it was connected and listed.
    pub fn answers(&self) -> bool {
        self.listed.is_ok()
    }
}

/// Every container the targets are known to run (see [`TargetSeen::known`]).
pub fn known_containers<'s>(
    seen: impl IntoIterator<Item = &'s TargetSeen>,
) -> impl Iterator<Item = &'s HostContainer> {
    seen.into_iter()
        .filter_map(|s| s.known.as_deref())
        .flatten()
}

/// Connects to every target of the snapshot (reusing what works) and lists what each runs:
/// one list call per target, or a share of one that began at `fresh_after` or later (see
/// [`Connections::list_since`]). In the snapshot's target order.
pub async fn observe(
    connections: &Connections,
    snapshot: &Snapshot,
    attempt: Attempt,
    fresh_after: Instant,
) -> Vec<TargetSeen> {
    let observing = snapshot.targets.iter().map(|target| async move {
        let target = TargetRef::of(snapshot, target);
        let material = target_material(target.spec, &snapshot.sources);
        let listed = async {
            let host = match attempt {
                Attempt::Cleanup => connections.connection_for_cleanup(target, material).await,
                Attempt::Reuse => connections.connection(target, material, false).await,
                Attempt::Fresh => connections.connection(target, material, true).await,
            }?;
            let listed = connections
                .list_since(target.uid, &host, fresh_after)
                .await?;
            Ok((host, listed))
        }
        .await;
        let known = match &listed {
            Ok((_, listed)) => Some(listed.clone()),
            Err(_) => connections.last_listed(target.uid),
        };
        TargetSeen {
            listed,
            known,
            unreachable_since: connections.unreachable_since(target.uid),
        }
    });
    futures::future::join_all(observing).await
}
