//! Which changes of a DockerContainer's dependencies (its DockerTargets, its Registry)
//! wake it: only what it depends on, and nothing the start already covers.
//!
//! A target's heartbeat writes its status every few seconds (when it was seen, its images,
//! how many containers it runs); none of that changes where a DockerContainer may go. Each
//! change that does pass reaches every DockerContainer placed on the target, found by a
//! walk of the whole cache, so what passes here must be rare.

use std::collections::{HashMap, HashSet};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use super::hash_of;
use crate::api::{DockerTarget, Registry};

/// What of a DockerTarget its namespace's DockerContainers depend on: the spec, the labels
/// placement selects by, whether it is Ready, whether and how it is being deleted.
pub(super) fn what_placement_sees(target: &DockerTarget) -> u64 {
    let ready = target
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| crate::conditions::ConditionType::Ready.is(c))
        .map(|c| c.status.clone());
    hash_of(&(
        &target.metadata.generation,
        &target.metadata.labels,
        ready,
        target.metadata.deletion_timestamp.is_some(),
        &target.metadata.finalizers,
    ))
}

/// What of a Registry the DockerContainers pulling from it depend on: its spec and
/// whether and how it is being deleted.
pub(super) fn what_pulls_see(registry: &Registry) -> u64 {
    hash_of(&(
        &registry.metadata.generation,
        registry.metadata.deletion_timestamp.is_some(),
        &registry.metadata.finalizers,
    ))
}

/// The objects of a dependency's watch `events` that changed in what `matters`, as
/// kube-runtime's `touched_objects` would give them, with three differences:
///
/// - The first complete list passes nothing (at start every DockerContainer is reconciled
///   from its own list anyway, so waking them for their targets would only queue each one
///   again, ten times over on a fleet of ten per target), but what it shows is remembered:
///   the first event of each object after it (a heartbeat's status write, most often) passes
///   only if something that matters differs from the list. Not remembering it once woke
///   every target's DockerContainers, through a walk of all of them, in a fleet's cold start.
/// - A later list (after a broken watch) passes the objects that changed while it was down.
/// - A deletion always passes: what was placed on a deleted target has to move.
pub(super) fn changes_after_first_list<K, S, F>(
    events: S,
    matters: F,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    F: Fn(&K) -> u64 + Send + 'static,
{
    let mut seen = Seen::<K>::default();
    events.filter_map(move |event| std::future::ready(seen.pass(event, &matters)))
}

/// What [`changes_after_first_list`] remembers: what mattered of each object when last seen.
struct Seen<K: Resource> {
    /// Per object, the hash of what matters. An object deleted and made again under the
    /// same name starts afresh: its `Delete`, or a list without it, forgot the old one.
    known: HashMap<ObjectRef<K>, u64>,
    /// While a list is under way, the objects it showed so far: the others are forgotten
    /// when it is done (deleted while the watch was down).
    listing: Option<HashSet<ObjectRef<K>>>,
    /// Whether the first complete list is over.
    listed_once: bool,
}

impl<K: Resource> Default for Seen<K> {
    fn default() -> Self {
        Self {
            known: HashMap::new(),
            listing: None,
            listed_once: false,
        }
    }
}

impl<K> Seen<K>
where
    K: Resource,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    fn pass(
        &mut self,
        event: Result<watcher::Event<K>, watcher::Error>,
        matters: &impl Fn(&K) -> u64,
    ) -> Option<Result<K, watcher::Error>> {
        let event = match event {
            Ok(event) => event,
            Err(error) => return Some(Err(error)),
        };
        match event {
            watcher::Event::Init => {
                self.listing = Some(HashSet::new());
                None
            }
            watcher::Event::InitApply(object) => {
                let key = ObjectRef::from_obj(&object);
                let changed = self.remember(key.clone(), matters(&object));
                if let Some(listing) = self.listing.as_mut() {
                    listing.insert(key);
                }
                (self.listed_once && changed).then_some(Ok(object))
            }
            watcher::Event::InitDone => {
                if let Some(listed) = self.listing.take() {
                    self.known.retain(|key, _| listed.contains(key));
                }
                self.listed_once = true;
                None
            }
            watcher::Event::Apply(object) => {
                let changed = self.remember(ObjectRef::from_obj(&object), matters(&object));
                changed.then_some(Ok(object))
            }
            watcher::Event::Delete(object) => {
                self.known.remove(&ObjectRef::from_obj(&object));
                Some(Ok(object))
            }
        }
    }

    /// Records `hash` for `key`; whether it differs from what was known (or nothing was).
    fn remember(&mut self, key: ObjectRef<K>, hash: u64) -> bool {
        self.known.insert(key, hash) != Some(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event as WatchEvent;
    use serde_json::json;

    #[test]
    fn only_what_containers_depend_on_wakes_them() {
        let target = |status: serde_json::Value, labels: serde_json::Value| -> DockerTarget {
            serde_json::from_value(json!({
                "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
                "metadata": {"name": "edge", "namespace": "a", "generation": 1, "labels": labels},
                "spec": {"endpoint": "unix:///var/run/docker.sock"},
                "status": status,
            }))
            .unwrap_or_else(|e| panic!("target fixture: {e}"))
        };
        let ready = |status: &str| {
            json!({"conditions": [{"type": "Ready", "status": status, "reason": "Connected",
                "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
        };
        let base = what_placement_sees(&target(ready("True"), json!({"pool": "a"})));
        let mut heartbeat = ready("True");
        heartbeat["lastSeenTime"] = json!("2026-06-01T00:00:00Z");
        heartbeat["images"] = json!([{"ref": "app:1", "id": "sha256:1"}]);
        heartbeat["managedContainers"] = json!(3);
        assert_eq!(
            what_placement_sees(&target(heartbeat, json!({"pool": "a"}))),
            base,
            "a heartbeat's status wakes nobody"
        );
        assert_ne!(
            what_placement_sees(&target(ready("False"), json!({"pool": "a"}))),
            base,
            "Ready matters to placement"
        );
        assert_ne!(
            what_placement_sees(&target(ready("True"), json!({"pool": "b"}))),
            base,
            "labels matter to placement"
        );

        let registry = |status: serde_json::Value, generation: i64| -> Registry {
            serde_json::from_value(json!({
                "apiVersion": "stevedore.dev/v1alpha1", "kind": "Registry",
                "metadata": {"name": "corp", "namespace": "a", "generation": generation},
                "spec": {"server": "reg.example.com"},
                "status": status,
            }))
            .unwrap_or_else(|e| panic!("registry fixture: {e}"))
        };
        let listed = json!({"repositories": [{"name": "team/app", "tags": ["1"]}]});
        assert_eq!(
            what_pulls_see(&registry(json!({}), 1)),
            what_pulls_see(&registry(listed, 1)),
            "a catalog refresh wakes nobody"
        );
        assert_ne!(
            what_pulls_see(&registry(json!({}), 1)),
            what_pulls_see(&registry(json!({}), 2)),
            "a spec change does"
        );
    }

    fn target(name: &str, ready: &str, seen: &str) -> DockerTarget {
        serde_json::from_value(json!({
            "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
            "metadata": {"name": name, "namespace": "a", "uid": format!("uid-{name}"), "generation": 1},
            "spec": {"endpoint": "unix:///var/run/docker.sock"},
            "status": {"lastSeenTime": seen, "conditions": [{"type": "Ready", "status": ready,
                "reason": "Connected", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap_or_else(|e| panic!("target fixture {name}: {e}"))
    }

    async fn passed(events: Vec<WatchEvent<DockerTarget>>) -> Vec<String> {
        let events = futures::stream::iter(events.into_iter().map(Ok));
        changes_after_first_list(events, what_placement_sees)
            .filter_map(|o| async move { o.ok().and_then(|o| o.metadata.name) })
            .collect()
            .await
    }

    #[tokio::test]
    async fn the_first_list_wakes_nobody_and_a_heartbeat_after_it_neither() {
        let passed = passed(vec![
            WatchEvent::Init,
            WatchEvent::InitApply(target("t1", "True", "2026-06-01T00:00:00Z")),
            WatchEvent::InitApply(target("t2", "True", "2026-06-01T00:00:00Z")),
            WatchEvent::InitDone,
            // Each target's first event after the start: a heartbeat.
            WatchEvent::Apply(target("t1", "True", "2026-06-01T00:00:15Z")),
            WatchEvent::Apply(target("t2", "True", "2026-06-01T00:00:15Z")),
            // A change that matters.
            WatchEvent::Apply(target("t2", "False", "2026-06-01T00:00:30Z")),
            WatchEvent::Apply(target("t2", "False", "2026-06-01T00:00:45Z")),
        ])
        .await;
        assert_eq!(passed, ["t2"]);
    }

    #[tokio::test]
    async fn a_later_list_passes_what_changed_while_the_watch_was_down() {
        let passed = passed(vec![
            WatchEvent::Init,
            WatchEvent::InitApply(target("t1", "True", "2026-06-01T00:00:00Z")),
            WatchEvent::InitApply(target("t2", "True", "2026-06-01T00:00:00Z")),
            WatchEvent::InitDone,
            WatchEvent::Init,
            WatchEvent::InitApply(target("t1", "True", "2026-06-01T00:01:00Z")),
            WatchEvent::InitApply(target("t2", "False", "2026-06-01T00:01:00Z")),
            // Unseen before: new while the watch was down.
            WatchEvent::InitApply(target("t3", "True", "2026-06-01T00:01:00Z")),
            WatchEvent::InitDone,
        ])
        .await;
        assert_eq!(passed, ["t2", "t3"]);
    }

    #[test]
    fn a_deletion_always_passes_and_is_forgotten() {
        let mut seen = Seen::<DockerTarget>::default();
        let pass = |seen: &mut Seen<DockerTarget>, event| {
            seen.pass(Ok(event), &what_placement_sees)
                .and_then(|o| o.ok())
                .and_then(|o| o.metadata.name)
        };
        let at = "2026-06-01T00:00:00Z";
        assert_eq!(pass(&mut seen, WatchEvent::Init), None);
        for name in ["t1", "t2"] {
            assert_eq!(
                pass(&mut seen, WatchEvent::InitApply(target(name, "True", at))),
                None
            );
        }
        assert_eq!(pass(&mut seen, WatchEvent::InitDone), None);
        let deleted = pass(&mut seen, WatchEvent::Delete(target("t1", "True", at)));
        assert_eq!(deleted.as_deref(), Some("t1"));
        let t1 = ObjectRef::new("t1").within("a");
        assert!(
            !seen.known.contains_key(&t1),
            "a deleted target is forgotten"
        );
        // A later list that no longer shows t2 (deleted while the watch was down).
        assert_eq!(pass(&mut seen, WatchEvent::Init), None);
        assert_eq!(pass(&mut seen, WatchEvent::InitDone), None);
        assert!(seen.known.is_empty(), "{:?}", seen.known.keys());
    }
}
