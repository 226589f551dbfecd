//! The controllers' connections: the fleet's connection cache (shared with standalone mode,
//! see [`crate::fleet::connections`]), with each daemon's event stream followed for as long
//! as its connection lives.
//!
//! ```text
//!   DockerTarget + Secret material ──> Connections ──> DockerHost (reused while the spec
//!                                          │            and Secrets are unchanged)
//!                                          └─> session began: follow_events ──> HostSignal
//!                                              ──> reconcile the owning DockerContainer
//! ```
//! A daemon that failed is tried again by the DockerTarget heartbeat, or by anyone after
//! `retry_after`, so a fleet of objects on one dead host neither hammers it nor waits on it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::api::DockerTarget;
use crate::converge::engine::TargetMemory;
use crate::converge::events::{self, Heard};
use crate::docker::{ConnectOptions, ConnectionMaterial, DockerError, DockerHost};
use crate::fleet::connections::{Changes, Connections, SessionObserver, TargetRef};

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
    /// DockerContainer placed, or placeable, on the target.
    Resync {
        /// The target's namespace.
        namespace: String,
        /// The target's name.
        target: String,
    },
}

/// What the controllers keep per target beside its connection.
#[derive(Default)]
struct Session {
    /// Follows the daemon's event stream while the connection lives.
    watcher: Option<tokio::task::AbortHandle>,
    /// IDs of containers stopped or killed from outside, from the event stream.
    manual_stops: Arc<Mutex<HashSet<String>>>,
    /// Restart back-off and known names, per owner UID (each DockerContainer converges
    /// its own containers).
    memories: HashMap<String, KeptMemory>,
}

/// An owner's converge memory while no reconcile holds it. A fleet keeps one per
/// DockerContainer and target, and nearly all of them only know their containers' names:
/// those keep just the names, not four empty collections.
enum KeptMemory {
    /// Only the names of the containers seen.
    Names(Box<[String]>),
    /// Restarts, outside stops or held rollouts to remember as well.
    Whole(Box<TargetMemory>),
}

impl KeptMemory {
    fn keep(memory: TargetMemory) -> Self {
        if memory.remembers_only_names() {
            Self::Names(memory.known.into_iter().collect())
        } else {
            Self::Whole(Box::new(memory))
        }
    }

    fn into_memory(self) -> TargetMemory {
        match self {
            Self::Names(names) => TargetMemory {
                known: names.into_vec().into_iter().collect(),
                ..TargetMemory::default()
            },
            Self::Whole(memory) => *memory,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(watcher) = &self.watcher {
            watcher.abort();
        }
    }
}

/// Every target's session, by target UID; told by the connections when one begins or
/// ends.
struct Sessions {
    entries: Mutex<HashMap<String, Session>>,
    signals: mpsc::UnboundedSender<HostSignal>,
    /// Where every event is recorded as a change of its target, before anyone is woken.
    changes: Arc<Changes>,
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        // Every update is a single insert or field write, so a poisoned lock still guards
        // a consistent map.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SessionObserver for Sessions {
    fn began(&self, target: TargetRef<'_>, host: &DockerHost) {
        let mut entries = self.lock();
        let session = entries.entry(target.uid.to_string()).or_default();
        if let Some(old) = session.watcher.take() {
            old.abort();
        }
        let watcher = tokio::spawn(follow_events(
            host.clone(),
            target.uid.to_string(),
            (target.namespace.to_string(), target.name.to_string()),
            self.signals.clone(),
            self.changes.clone(),
            session.manual_stops.clone(),
        ));
        session.watcher = Some(watcher.abort_handle());
    }

    fn ended(&self, target_uid: &str) {
        if let Some(watcher) = self
            .lock()
            .get_mut(target_uid)
            .and_then(|s| s.watcher.take())
        {
            watcher.abort();
        }
    }
}

/// The connections to every target (see [`Connections`]), each followed by its event
/// stream, and what the reconciles remember per target and owner.
pub struct Hosts {
    connections: Connections,
    sessions: Arc<Sessions>,
}

impl Hosts {
    /// No connections yet; daemon events will be sent to `signals`. A failed daemon is
    /// tried again after `retry_after` (or by the DockerTarget heartbeat).
    pub fn new(
        signals: mpsc::UnboundedSender<HostSignal>,
        options: ConnectOptions,
        retry_after: Duration,
    ) -> Self {
        let connections = Connections::new(options, retry_after);
        let sessions = Arc::new(Sessions {
            entries: Mutex::default(),
            signals,
            changes: connections.changes(),
        });
        Self {
            connections: connections.with_observer(sessions.clone()),
            sessions,
        }
    }

    /// The connection cache itself.
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// The target's connection, tried anew if it failed (the DockerTarget heartbeat).
    pub async fn check(
        &self,
        target: &DockerTarget,
        material: Result<ConnectionMaterial, DockerError>,
    ) -> Result<DockerHost, DockerError> {
        let target = TargetRef {
            uid: target.metadata.uid.as_deref().unwrap_or_default(),
            namespace: target.metadata.namespace.as_deref().unwrap_or_default(),
            name: target.metadata.name.as_deref().unwrap_or_default(),
            spec: &target.spec,
        };
        self.connections.connection(target, material, true).await
    }

    /// The converge memory of one owner on one target (empty the first time), with the
    /// target's outside stops; give it back with [`Hosts::put_memory`].
    pub fn take_memory(&self, target_uid: &str, owner_uid: &str) -> TargetMemory {
        let mut sessions = self.sessions.lock();
        let Some(session) = sessions.get_mut(target_uid) else {
            return TargetMemory::default();
        };
        let mut memory = session
            .memories
            .remove(owner_uid)
            .map(KeptMemory::into_memory)
            .unwrap_or_default();
        if let Ok(stops) = session.manual_stops.lock() {
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
        let mut sessions = self.sessions.lock();
        if let Some(session) = sessions.get_mut(target_uid) {
            if let Ok(mut stops) = session.manual_stops.lock() {
                stops.retain(|id| !seen.contains(id) || memory.manual_stops.contains(id));
            }
            session
                .memories
                .insert(owner_uid.to_string(), KeptMemory::keep(memory));
        }
    }

    /// Forgets what an owner left behind (it was deleted).
    pub fn forget_owner(&self, owner_uid: &str) {
        for session in self.sessions.lock().values_mut() {
            session.memories.remove(owner_uid);
        }
    }

    /// Drops the connections of targets that no longer exist.
    pub fn retain(&self, live_target_uids: &HashSet<String>) {
        self.connections.retain(live_target_uids);
        self.sessions
            .lock()
            .retain(|uid, _| live_target_uids.contains(uid));
    }

    /// Every connected target: (`namespace/name`, host), for metrics.
    pub fn connected(&self) -> Vec<(String, DockerHost)> {
        self.connections.connected()
    }
}

/// Follows a daemon's events for one target's containers until aborted: every event is a
/// change of the target (no list from before it is shared), every disruptive one
/// reconciles the container's owner, every (re)connect resyncs what the target runs.
async fn follow_events(
    host: DockerHost,
    target_uid: String,
    (namespace, target): (String, String),
    signals: mpsc::UnboundedSender<HostSignal>,
    changes: Arc<Changes>,
    manual_stops: Arc<Mutex<HashSet<String>>>,
) {
    let uid = target_uid.clone();
    events::follow(host, target_uid, manual_stops, |heard| {
        changes.record(&uid);
        let signal = match heard {
            Heard::Connected => HostSignal::Resync {
                namespace: namespace.clone(),
                target: target.clone(),
            },
            Heard::Disruption(event) => match event.owner {
                Some((namespace, name)) => HostSignal::Owner { namespace, name },
                None => return true,
            },
            Heard::Activity => return true,
        };
        // The receiver is gone only when the controller stops.
        signals.send(signal).is_ok()
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_memory_gives_back_what_it_was_given() {
        let mut names_only = TargetMemory::default();
        names_only
            .known
            .extend(["ns_web_0".to_string(), "ns_web_1".to_string()]);
        let kept = KeptMemory::keep(names_only.clone());
        assert!(
            matches!(kept, KeptMemory::Names(_)),
            "names alone keep no collections"
        );
        assert_eq!(kept.into_memory().known, names_only.known);

        let mut restarted = names_only.clone();
        restarted.restarts.record_restart("c1", 100);
        restarted.manual_stops.insert("c2".into());
        restarted.failed_rollouts.insert("hash".into(), 400);
        let back = KeptMemory::keep(restarted).into_memory();
        assert_eq!(back.known, names_only.known);
        assert_eq!(back.restarts.attempts("c1"), 1);
        assert!(back.manual_stops.contains("c2"));
        assert_eq!(back.failed_rollouts.get("hash"), Some(&400));
    }
}
