//! Kubernetes Events (`events.k8s.io/v1`) for what the controller did and why.
//!
//! kube-runtime's `Recorder` counts an Event as a repeat when type, reason and action match
//! on the same object, and keeps the first note: after a spec edit and then a Secret
//! rotation, the only `Replaced` Event would still name the edited field. Here the note is
//! part of what makes an Event the same: a repeat of the same note bumps its series count;
//! a new note is a new Event, so every replacement's own reason stays readable.
//!
//! Reconciles never wait for an Event to be written: they queue it, and a task publishes
//! the queue a few at a time, as client-go's broadcaster does. A fleet's cold start makes
//! one Event per container; written in line, each held a reconcile slot for one more API
//! round trip before the next container could start. When the API server falls this far
//! behind that the queue is full, Events are dropped (and the log says so), never the work.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PostParams};
use tokio::sync::{Mutex, mpsc, watch};

use super::context::Context;
use super::outcome::merge_patch_params;
use crate::converge::executor::Outcome;
use crate::docker::ErrorKind;

/// A repeat later than this starts a new Event instead of counting on the old one (the
/// API server keeps Events about an hour).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Series remembered at most. A fleet's cold start writes one Event per object; kept for
/// the whole window, their series would cost every object about a kilobyte long after its
/// Event mattered. Past this, the oldest half is forgotten, and a repeat of a forgotten one
/// starts a new Event (client-go's event caches hold as many).
const SERIES_KEPT: usize = 4096;

/// The longest note the API server accepts.
pub const NOTE_LIMIT: usize = 1024;

/// Events queued and not yet published, at most (about 1 KB each).
const QUEUE: usize = 4096;

/// Events written to the API server at once.
const PUBLISHING_AT_ONCE: usize = 4;

/// Whether an Event reports normal work or a problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Work done as asked.
    Normal,
    /// Something failed or needs attention.
    Warning,
}

impl EventKind {
    fn as_str(self) -> &'static str {
        match self {
            EventKind::Normal => "Normal",
            EventKind::Warning => "Warning",
        }
    }
}

/// What makes two Events the same: the object, what happened, and the note.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    uid: String,
    namespace: String,
    name: String,
    kind: EventKind,
    reason: String,
    action: String,
    note: String,
}

/// The Event last written for a key, and when.
struct Written {
    name: String,
    count: i32,
    last: SystemTime,
}

/// An Event queued for publishing.
struct Queued {
    regarding: ObjectReference,
    kind: EventKind,
    reason: String,
    action: String,
    note: String,
}

/// Queues Events for one reporting controller and instance; a task publishes them.
pub struct EventRecorder {
    queue: mpsc::Sender<Queued>,
    /// How many queued Events are not published (or given up on) yet.
    unpublished: Arc<watch::Sender<usize>>,
    /// Whether the last Event found the queue full.
    dropping: AtomicBool,
}

impl EventRecorder {
    /// A recorder reporting as `controller` (and `instance`, the replica, when known); its
    /// publishing task runs on the current Tokio runtime.
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        let publisher = Publisher {
            client,
            controller: controller.to_string(),
            instance: instance.unwrap_or_else(|| controller.to_string()),
            series: Mutex::default(),
        };
        let (queue, queued) = mpsc::channel(QUEUE);
        let unpublished = Arc::new(watch::Sender::new(0));
        tokio::spawn(publish_queued(publisher, queued, unpublished.clone()));
        Self {
            queue,
            unpublished,
            dropping: AtomicBool::new(false),
        }
    }

    /// Queues one Event about `regarding`; the note is cut to what the API server takes.
    pub fn record(
        &self,
        regarding: &ObjectReference,
        kind: EventKind,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let queued = Queued {
            regarding: regarding.clone(),
            kind,
            reason: reason.to_string(),
            action: action.to_string(),
            note: cut(note, NOTE_LIMIT),
        };
        self.unpublished.send_modify(|n| *n += 1);
        match self.queue.try_send(queued) {
            Ok(()) => {
                if self.dropping.swap(false, Ordering::Relaxed) {
                    tracing::info!("Events are queued again");
                }
            }
            Err(error) => {
                self.unpublished.send_modify(|n| *n -= 1);
                let full = matches!(error, mpsc::error::TrySendError::Full(_));
                if full && !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        queued = QUEUE,
                        "the API server is not keeping up with Events; dropping them until \
                         the queue has room"
                    );
                }
            }
        }
    }

    /// Waits until every Event queued so far is published (or failed to be).
    pub async fn flush(&self) {
        let mut unpublished = self.unpublished.subscribe();
        // The sender lives as long as `self`, so the wait cannot fail.
        let _ = unpublished.wait_for(|n| *n == 0).await;
    }
}

/// Publishes the queue, [`PUBLISHING_AT_ONCE`] at a time, until the recorder goes.
async fn publish_queued(
    publisher: Publisher,
    mut queued: mpsc::Receiver<Queued>,
    unpublished: Arc<watch::Sender<usize>>,
) {
    let publisher = &publisher;
    let unpublished = &unpublished;
    futures::stream::poll_fn(|cx| queued.poll_recv(cx))
        .for_each_concurrent(PUBLISHING_AT_ONCE, |event| async move {
            match publisher.publish(&event).await {
                Ok(()) => {}
                // A namespace being deleted takes no new objects; the work goes on without them.
                Err(kube::Error::Api(status))
                    if status.code == 403 && status.message.contains("being terminated") =>
                {
                    tracing::debug!(
                        reason = event.reason,
                        "no Event in a namespace being deleted"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, reason = event.reason, "failed to publish an Event");
                }
            }
            unpublished.send_modify(|n| *n = n.saturating_sub(1));
        })
        .await;
}

/// Writes Events as one reporting controller and instance, counting repeats.
struct Publisher {
    client: Client,
    controller: String,
    instance: String,
    series: Mutex<Series>,
}

/// The Events written lately, by what makes them the same, for counting repeats.
#[derive(Default)]
struct Series(HashMap<SeriesKey, Written>);

impl Series {
    /// The name and next count of the Event `key` repeats, if it was written within
    /// [`SERIES_WINDOW`] of `now`.
    fn repeat(&self, key: &SeriesKey, now: SystemTime) -> Option<(String, i32)> {
        self.0
            .get(key)
            .filter(|w| within_window(w, now))
            .map(|w| (w.name.clone(), w.count + 1))
    }

    /// Remembers `written`; when [`SERIES_KEPT`] are remembered, forgets those out of the
    /// window and, if that is not enough, the older half.
    fn remember(&mut self, key: SeriesKey, written: Written) {
        if self.0.len() >= SERIES_KEPT && !self.0.contains_key(&key) {
            let now = written.last;
            self.0.retain(|_, w| within_window(w, now));
            if self.0.len() >= SERIES_KEPT {
                let mut times: Vec<SystemTime> = self.0.values().map(|w| w.last).collect();
                let middle = times.len() / 2;
                let (_, median, _) = times.select_nth_unstable(middle);
                let median = *median;
                self.0.retain(|_, w| w.last > median);
            }
        }
        self.0.insert(key, written);
    }
}

fn within_window(written: &Written, now: SystemTime) -> bool {
    now.duration_since(written.last).unwrap_or_default() < SERIES_WINDOW
}

impl Publisher {
    /// Writes one Event, or counts a repeat on the one written before.
    async fn publish(&self, queued: &Queued) -> Result<(), kube::Error> {
        let Queued {
            regarding,
            kind,
            reason,
            action,
            note,
        } = queued;
        let key = SeriesKey {
            uid: regarding.uid.clone().unwrap_or_default(),
            namespace: regarding.namespace.clone().unwrap_or_default(),
            name: regarding.name.clone().unwrap_or_default(),
            kind: *kind,
            reason: reason.clone(),
            action: action.clone(),
            note: note.clone(),
        };
        let now = SystemTime::now();
        // The lock is not held across the API call: several Events are written at once.
        let repeat = self.series.lock().await.repeat(&key, now);
        let events: Api<Event> = Api::namespaced(self.client.clone(), &key.namespace);
        let written = match repeat {
            Some((name, count)) => {
                let patch = serde_json::json!({
                    "series": EventSeries { count, last_observed_time: MicroTime(Timestamp::now()) }
                });
                events
                    .patch(&name, &merge_patch_params(), &Patch::Merge(&patch))
                    .await?;
                Written {
                    name,
                    count,
                    last: now,
                }
            }
            None => {
                let event = self.event(regarding, *kind, reason, action, note.clone());
                let name = event.metadata.name.clone().unwrap_or_default();
                events.create(&PostParams::default(), &event).await?;
                Written {
                    name,
                    count: 1,
                    last: now,
                }
            }
        };
        self.series.lock().await.remember(key, written);
        Ok(())
    }

    fn event(
        &self,
        regarding: &ObjectReference,
        kind: EventKind,
        reason: &str,
        action: &str,
        note: String,
    ) -> Event {
        let now = Timestamp::now();
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                namespace: regarding.namespace.clone(),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(kind.as_str().to_string()),
            reason: Some(reason.to_string()),
            action: Some(action.to_string()),
            note: Some(note),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..Event::default()
        }
    }
}

/// Queues one Event through the context's recorder (see [`EventRecorder::record`]).
pub fn publish(
    ctx: &Context,
    regarding: &ObjectReference,
    kind: EventKind,
    reason: &str,
    action: &str,
    note: String,
) {
    ctx.recorder.record(regarding, kind, reason, action, &note);
}

/// `text` cut to at most `limit` bytes on a character boundary, marked with `...` when cut.
fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// An Event for one action the executor took on a target.
pub fn publish_outcome(
    ctx: &Context,
    reference: &ObjectReference,
    target: &str,
    outcome: &Outcome,
) {
    let interrupted = matches!(&outcome.result, Err(e) if e.kind == ErrorKind::Interrupted);
    if ctx.settings.shutdown.is_draining() || interrupted {
        // What a stopping controller finished or put back is what the next leader finds.
        let what = if outcome.rolled_back() {
            "rolled back while shutting down"
        } else if interrupted {
            "not done: shutting down"
        } else if outcome.result.is_ok() {
            "finished while shutting down"
        } else {
            "failed while shutting down"
        };
        let error = outcome.result.as_ref().err().map(ToString::to_string);
        tracing::info!(subject = %outcome.subject, target, verb = %outcome.verb, error, "{what}");
    }
    if interrupted && !outcome.rolled_back() {
        // Not an event: nothing happened to the container.
        return;
    }
    let (type_, reason, note) = match &outcome.result {
        Err(e) if e.kind == ErrorKind::Interrupted => (
            EventKind::Normal,
            "RolledBack".to_string(),
            format!("{} on {target}: {}: {e}", outcome.subject, outcome.reason),
        ),
        Ok(_) => (
            EventKind::Normal,
            outcome.verb.past_tense().to_string(),
            format!("{} on {target}: {}", outcome.subject, outcome.reason),
        ),
        Err(e) => (
            EventKind::Warning,
            format!("{}Failed", outcome.verb),
            format!("{} on {target}: {}: {e}", outcome.subject, outcome.reason),
        ),
    };
    publish(ctx, reference, type_, &reason, outcome.verb.as_str(), note);
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::{EventKind, SERIES_KEPT, SERIES_WINDOW, Series, SeriesKey, Written, cut};

    fn key(object: usize) -> SeriesKey {
        SeriesKey {
            uid: format!("uid-{object}"),
            namespace: "fleet".into(),
            name: format!("web-{object}"),
            kind: EventKind::Normal,
            reason: "Created".into(),
            action: "Create".into(),
            note: "created and started".into(),
        }
    }

    fn written(object: usize, last: SystemTime) -> Written {
        Written {
            name: format!("web-{object}.1"),
            count: 1,
            last,
        }
    }

    #[test]
    fn a_repeat_within_the_window_counts_on_the_event_written_before() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut series = Series::default();
        series.remember(key(1), written(1, start));
        let soon = start + Duration::from_secs(10);
        assert_eq!(series.repeat(&key(1), soon), Some(("web-1.1".into(), 2)));
        assert_eq!(series.repeat(&key(2), soon), None);
        let late = start + SERIES_WINDOW + Duration::from_secs(1);
        assert_eq!(series.repeat(&key(1), late), None);
    }

    #[test]
    fn a_fleet_of_events_is_remembered_in_bounded_memory_newest_first() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut series = Series::default();
        let fleet = 3 * SERIES_KEPT;
        for object in 0..fleet {
            // All within one window, one millisecond apart, as a cold start writes them.
            let at = start + Duration::from_millis(object as u64);
            series.remember(key(object), written(object, at));
            assert!(
                series.0.len() <= SERIES_KEPT,
                "{} at {object}",
                series.0.len()
            );
        }
        let now = start + Duration::from_millis(fleet as u64);
        assert!(series.repeat(&key(fleet - 1), now).is_some());
        assert!(series.repeat(&key(0), now).is_none());
    }

    #[test]
    fn a_long_note_is_cut_on_a_character_boundary() {
        let note = "é".repeat(600);
        let cut = cut(&note, 1024);
        assert!(cut.len() <= 1024);
        assert!(cut.ends_with("..."));
        assert_eq!(super::cut("short", 1024), "short");
    }
}
