//! One connection per DockerTarget, shared by the controllers, with the daemon's event
//! stream followed for as long as the connection lives.
//!
//! ```text
//!   DockerTarget + Secret material ──> Hosts::connection ──> DockerHost (reused while the
//!                                          │                 spec and Secrets are unchanged)
//!                                          └─> follow_events ──> HostSignal ──> reconcile
//!                                                                the owning DockerContainer
//! ```
//! A rotated certificate or key changes the fingerprint, so the next use connects anew.
//! A daemon that failed is tried again by the DockerTarget heartbeat, or by anyone after
//! `retry_after`, so a fleet of objects on one dead host neither hammers it nor waits on it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::api::DockerTarget;
use crate::converge::engine::{TargetMemory, unix_now};
use crate::converge::events::{self, Heard};
use crate::docker::material::fingerprint;
use crate::docker::{
    ConnectOptions, ConnectionMaterial, DockerError, DockerHost, ErrorKind, connect,
};

/// What a daemon's event stream asks of the DockerContainer controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostSignal {
    /// A container of this DockerContainer died, stopped, vanished or changed health:
    /// reconcile it now.
    Owner {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The stream (re)connected and may have missed events: reconcile every
    /// DockerContainer of the target's namespace.
    Resync {
        /// The target's namespace.
        namespace: String,
    },
}

/// One target's connection and what the controllers remember about it.
struct Entry {
    /// `namespace/name` of the DockerTarget, for logs and metrics.
    name: String,
    fingerprint: u64,
    host: Result<DockerHost, DockerError>,
    attempted: Instant,
    unreachable_since: Option<u64>,
    watcher: Option<tokio::task::AbortHandle>,
    /// IDs of containers stopped or killed from outside, from the event stream.
    manual_stops: Arc<Mutex<HashSet<String>>>,
    /// Restart back-off and known names, per owner UID (each DockerContainer converges
    /// its own containers).
    memories: HashMap<String, TargetMemory>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
    }
}

/// The connections to every target, by target UID.
pub struct Hosts {
    entries: Mutex<HashMap<String, Entry>>,
    signals: mpsc::UnboundedSender<HostSignal>,
    options: ConnectOptions,
    retry_after: Duration,
}

impl Hosts {
    /// No connections yet; daemon events will be sent to `signals`.
    pub fn new(
        signals: mpsc::UnboundedSender<HostSignal>,
        options: ConnectOptions,
        retry_after: Duration,
    ) -> Self {
        Self {
            entries: Mutex::default(),
            signals,
            options,
            retry_after,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (every update
        // is a single insert or field write), so a poisoned lock is still usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection for removing containers: like [`Hosts::connection`], but when the
    /// target's Secret material is gone (a namespace being deleted loses its Secrets
    /// first) the connection made with it before still serves.
    pub async fn connection_for_cleanup(
        &self,
        target: &DockerTarget,
        material: Result<ConnectionMaterial, DockerError>,
    ) -> Result<DockerHost, DockerError> {
        if material.is_err()
            && let Some(host) = self.working(target)
        {
            return Ok(host);
        }
        self.connection(target, material, false).await
    }

    /// The target's connection, when one was made and works.
    fn working(&self, target: &DockerTarget) -> Option<DockerHost> {
        let uid = target.metadata.uid.as_deref().unwrap_or_default();
        match self.lock().get(uid) {
            Some(Entry { host: Ok(host), .. }) => Some(host.clone()),
            _ => None,
        }
    }

    /// The target's connection: the existing one while its spec and Secret material are
    /// unchanged, else a new one. A target that failed is retried after `retry_after`,
    /// or at once when `fresh` (the DockerTarget heartbeat).
    pub async fn connection(
        &self,
        target: &DockerTarget,
        material: Result<ConnectionMaterial, DockerError>,
        fresh: bool,
    ) -> Result<DockerHost, DockerError> {
        let uid = target.metadata.uid.clone().unwrap_or_default();
        // Material that vanished (a Secret deleted, as a namespace deletion does before
        // the target goes) does not replace a working connection: cleanups may still
        // need it (see `connection_for_cleanup`).
        if let Err(e) = &material
            && self.working(target).is_some()
        {
            return Err(e.clone());
        }
        let print = fingerprint(&target.spec, &material);
        if let Some(entry) = self.lock().get(&uid)
            && entry.fingerprint == print
        {
            match &entry.host {
                Ok(host) => return Ok(host.clone()),
                // Only the heartbeat (or a long silence) tries a failed daemon again: a
                // partitioned host must not make every reconcile of its namespace wait
                // for a timeout.
                Err(e) if !fresh && entry.attempted.elapsed() < self.retry_after => {
                    return Err(e.clone());
                }
                Err(_) => {}
            }
        }
        let host = match material {
            Ok(material) => connect(&target.spec, &material, self.options).await,
            Err(e) => Err(e),
        };
        let namespace = target.metadata.namespace.clone().unwrap_or_default();
        let name = format!(
            "{namespace}/{}",
            target.metadata.name.as_deref().unwrap_or_default()
        );
        let mut entries = self.lock();
        let previous = entries.remove(&uid);
        let manual_stops = previous
            .as_ref()
            .map(|p| p.manual_stops.clone())
            .unwrap_or_default();
        let watcher = host.as_ref().ok().map(|host| {
            tokio::spawn(follow_events(
                host.clone(),
                uid.clone(),
                namespace,
                self.signals.clone(),
                manual_stops.clone(),
            ))
            .abort_handle()
        });
        let unreachable_since = match &host {
            Ok(_) => None,
            Err(_) => Some(
                previous
                    .as_ref()
                    .and_then(|p| p.unreachable_since)
                    .unwrap_or_else(unix_now),
            ),
        };
        let memories = previous
            .map(|mut p| std::mem::take(&mut p.memories))
            .unwrap_or_default();
        entries.insert(
            uid,
            Entry {
                name,
                fingerprint: print,
                host: host.clone(),
                attempted: Instant::now(),
                unreachable_since,
                watcher,
                manual_stops,
                memories,
            },
        );
        host
    }

    /// Records that a call to the target failed in a way that means the connection is
    /// gone: the next use connects anew (after `retry_after`).
    pub fn mark_failed(&self, target_uid: &str, error: &DockerError) {
        if !matches!(error.kind, ErrorKind::Unreachable | ErrorKind::TlsError) {
            return;
        }
        if let Some(entry) = self.lock().get_mut(target_uid) {
            if let Some(watcher) = entry.watcher.take() {
                watcher.abort();
            }
            entry.unreachable_since.get_or_insert_with(unix_now);
            entry.host = Err(error.clone());
            entry.attempted = Instant::now();
        }
    }

    /// Since when (unix seconds) the target has been unreachable, if it is.
    pub fn unreachable_since(&self, target_uid: &str) -> Option<u64> {
        self.lock()
            .get(target_uid)
            .and_then(|e| e.unreachable_since)
    }

    /// The converge memory of one owner on one target (empty the first time), with the
    /// target's outside stops; give it back with [`Hosts::put_memory`].
    pub fn take_memory(&self, target_uid: &str, owner_uid: &str) -> TargetMemory {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(target_uid) else {
            return TargetMemory::default();
        };
        let mut memory = entry.memories.remove(owner_uid).unwrap_or_default();
        if let Ok(stops) = entry.manual_stops.lock() {
            memory.manual_stops.extend(stops.iter().cloned());
        }
        memory
    }

    /// Stores an owner's memory after a converge; outside stops it handled are forgotten.
    pub fn put_memory(
        &self,
        target_uid: &str,
        owner_uid: &str,
        memory: TargetMemory,
        seen: &[String],
    ) {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(target_uid) {
            if let Ok(mut stops) = entry.manual_stops.lock() {
                stops.retain(|id| !seen.contains(id) || memory.manual_stops.contains(id));
            }
            entry.memories.insert(owner_uid.to_string(), memory);
        }
    }

    /// Forgets what an owner left behind (it was deleted).
    pub fn forget_owner(&self, owner_uid: &str) {
        for entry in self.lock().values_mut() {
            entry.memories.remove(owner_uid);
        }
    }

    /// Drops the connections of targets that no longer exist.
    pub fn retain(&self, live_target_uids: &HashSet<String>) {
        self.lock().retain(|uid, _| live_target_uids.contains(uid));
    }

    /// Every connected target: (`namespace/name`, host), for metrics.
    pub fn connected(&self) -> Vec<(String, DockerHost)> {
        self.lock()
            .values()
            .filter_map(|e| Some((e.name.clone(), e.host.as_ref().ok()?.clone())))
            .collect()
    }
}

/// Follows a daemon's events for one target's containers until aborted: every disruptive
/// event reconciles the container's owner; every (re)connect resyncs the namespace.
async fn follow_events(
    host: DockerHost,
    target_uid: String,
    namespace: String,
    signals: mpsc::UnboundedSender<HostSignal>,
    manual_stops: Arc<Mutex<HashSet<String>>>,
) {
    events::follow(host, target_uid, manual_stops, |heard| {
        let signal = match heard {
            Heard::Connected => HostSignal::Resync {
                namespace: namespace.clone(),
            },
            Heard::Disruption(event) => match event.owner {
                Some((namespace, name)) => HostSignal::Owner { namespace, name },
                None => return true,
            },
        };
        // The receiver is gone only when the controller stops.
        signals.send(signal).is_ok()
    })
    .await;
}
