//! Every Docker call is counted and timed by kind, so tests and benchmarks can say "a
//! no-op converge made one list call and no mutating call" and the metrics can show
//! where time goes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// The kinds of Docker calls, counted separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    /// `GET /version`, `GET /info`.
    Info,
    /// `GET /containers/json`.
    ListContainers,
    /// `GET /containers/{id}/json`.
    InspectContainer,
    /// `GET /containers/{id}/logs`.
    Logs,
    /// `GET /images/json`, `GET /images/{name}/json`.
    Images,
    /// `GET /events` (one per stream opened).
    Events,
    /// `POST /images/create`.
    Pull,
    /// `POST /containers/create`.
    Create,
    /// `POST /containers/{id}/start`.
    Start,
    /// `POST /containers/{id}/stop`.
    Stop,
    /// `DELETE /containers/{id}`.
    Remove,
    /// `POST /containers/{id}/rename`.
    Rename,
    /// `POST /images/create?fromSrc=-` (a root filesystem import).
    Import,
    /// `POST /build`.
    Build,
    /// `POST /containers/{id}/exec` and `POST /exec/{id}/start` (a person's command).
    Exec,
    /// `POST /containers/{id}/update`.
    Update,
}

impl Call {
    const ALL: [Call; 16] = [
        Call::Info,
        Call::ListContainers,
        Call::InspectContainer,
        Call::Logs,
        Call::Images,
        Call::Events,
        Call::Pull,
        Call::Create,
        Call::Start,
        Call::Stop,
        Call::Remove,
        Call::Rename,
        Call::Import,
        Call::Build,
        Call::Exec,
        Call::Update,
    ];

    /// A name for metrics: `list_containers`, `pull`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Info => "info",
            Call::ListContainers => "list_containers",
            Call::InspectContainer => "inspect_container",
            Call::Logs => "logs",
            Call::Images => "images",
            Call::Events => "events",
            Call::Pull => "pull",
            Call::Create => "create",
            Call::Start => "start",
            Call::Stop => "stop",
            Call::Remove => "remove",
            Call::Rename => "rename",
            Call::Import => "import",
            Call::Build => "build",
            Call::Exec => "exec",
            Call::Update => "update",
        }
    }

    /// Every kind of call.
    pub fn all() -> &'static [Call] {
        &Self::ALL
    }

    /// Whether the call changes anything on the host.
    pub fn is_mutating(self) -> bool {
        matches!(
            self,
            Call::Pull
                | Call::Create
                | Call::Start
                | Call::Stop
                | Call::Remove
                | Call::Rename
                | Call::Import
                | Call::Build
                | Call::Exec
                | Call::Update
        )
    }
}

/// Counters of the calls made through one [`DockerHost`](super::DockerHost) (and its
/// clones).
#[derive(Debug, Default)]
pub(super) struct CallCounter {
    counts: [AtomicU64; Call::ALL.len()],
    /// Time spent in calls of each kind, in microseconds.
    micros: [AtomicU64; Call::ALL.len()],
}

/// Adds the time from its making to its drop to one kind of call.
pub(super) struct CallTimer<'a> {
    counter: &'a CallCounter,
    position: Option<usize>,
    started: std::time::Instant,
}

impl Drop for CallTimer<'_> {
    fn drop(&mut self) {
        if let Some(position) = self.position {
            let micros = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.counter.micros[position].fetch_add(micros, Ordering::Relaxed);
        }
    }
}

/// A snapshot of call counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounts(pub BTreeMap<Call, u64>);

impl CallCounts {
    /// Calls of one kind.
    pub fn get(&self, call: Call) -> u64 {
        self.0.get(&call).copied().unwrap_or(0)
    }

    /// Calls that changed something on the host.
    pub fn mutating(&self) -> u64 {
        self.0
            .iter()
            .filter(|(call, _)| call.is_mutating())
            .map(|(_, n)| n)
            .sum()
    }

    /// The calls made since `earlier`.
    pub fn since(&self, earlier: &CallCounts) -> CallCounts {
        CallCounts(
            self.0
                .iter()
                .map(|(call, n)| (*call, n - earlier.get(*call)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }
}

impl CallCounter {
    /// Counts one call and times it until the returned guard is dropped.
    pub(super) fn count(&self, call: Call) -> CallTimer<'_> {
        let position = Call::ALL.iter().position(|c| *c == call);
        if let Some(position) = position {
            self.counts[position].fetch_add(1, Ordering::Relaxed);
        }
        CallTimer {
            counter: self,
            position,
            started: std::time::Instant::now(),
        }
    }

    /// How many calls of each kind were made so far.
    pub(super) fn snapshot(&self) -> CallCounts {
        CallCounts(
            Call::ALL
                .iter()
                .zip(&self.counts)
                .map(|(call, n)| (*call, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    /// Seconds spent in calls of each kind so far.
    pub(super) fn seconds(&self) -> BTreeMap<Call, f64> {
        Call::ALL
            .iter()
            .zip(&self.micros)
            .map(|(call, micros)| (*call, micros.load(Ordering::Relaxed) as f64 / 1e6))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_counts_tell_mutating_calls_apart() {
        let before = CallCounts(BTreeMap::from([(Call::ListContainers, 2)]));
        let after = CallCounts(BTreeMap::from([
            (Call::ListContainers, 3),
            (Call::Create, 1),
            (Call::Start, 1),
        ]));
        let delta = after.since(&before);
        assert_eq!(delta.get(Call::ListContainers), 1);
        assert_eq!(delta.mutating(), 2);
    }
}
