//! What to reconcile at once when this replica takes a shard over: the shard's targets
//! and Registries, and the DockerContainers placed on those targets or at home in it.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::Shards;
use crate::api::{DockerContainer, DockerTarget, Registry};
use crate::controller::context::{Stores, is_placed_on};
use crate::placement::Reach;

/// The objects a replica that just took `shard` reconciles now.
#[derive(Default)]
pub struct Woken {
    /// The shard's DockerTargets.
    pub targets: Vec<ObjectRef<DockerTarget>>,
    /// The shard's Registries.
    pub registries: Vec<ObjectRef<Registry>>,
    /// DockerContainers placed on (or recorded on) its targets, and those with no target
    /// whose own shard it is.
    pub containers: Vec<ObjectRef<DockerContainer>>,
}

/// The objects of `shard` in `stores` (one pass over each cache).
pub fn woken_by(stores: &Stores, shards: &Shards, shard: u32) -> Woken {
    let mut woken = Woken::default();
    // The shard's targets by namespace.
    let mut targets: BTreeMap<String, Vec<Arc<DockerTarget>>> = BTreeMap::new();
    for target in stores.targets.state() {
        if shards.of(&target.metadata) == shard {
            woken.targets.push(ObjectRef::from_obj(target.as_ref()));
            targets
                .entry(target.namespace().unwrap_or_default())
                .or_default()
                .push(target);
        }
    }
    woken.registries = stores
        .registries
        .state()
        .iter()
        .filter(|r| shards.of(&r.metadata) == shard)
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect();
    for container in stores.containers.state() {
        let reach = Reach::of(&container.spec.placement);
        let on_shard = targets
            .get(&container.namespace().unwrap_or_default())
            .into_iter()
            .flatten()
            .any(|t| {
                is_placed_on(
                    &container,
                    &reach,
                    &t.name_any(),
                    t.metadata.labels.as_ref(),
                )
            });
        let at_home = !matches!(reach, Reach::Named(_)) && shards.of(&container.metadata) == shard;
        if on_shard || at_home {
            woken
                .containers
                .push(ObjectRef::from_obj(container.as_ref()));
        }
    }
    woken
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::reflector::{self, Store};
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn store<K>(objects: Vec<serde_json::Value>) -> Store<K>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (reader, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Init);
        for object in objects {
            let object: K =
                serde_json::from_value(object).unwrap_or_else(|e| panic!("fixture: {e}"));
            writer.apply_watcher_event(&Event::InitApply(object));
        }
        writer.apply_watcher_event(&Event::InitDone);
        reader
    }

    fn target(name: &str, shard: &str) -> serde_json::Value {
        json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerTarget",
               "metadata": {"name": name, "namespace": "fleet", "uid": format!("uid-{name}"),
                            "labels": {"pool": "edge", "stevedore.dev/shard": shard}},
               "spec": {"endpoint": "unix:///var/run/docker.sock"}})
    }

    fn container(
        name: &str,
        placement: serde_json::Value,
        recorded_on: &[&str],
    ) -> serde_json::Value {
        let instances: Vec<_> = recorded_on
            .iter()
            .map(|t| json!({"target": t, "containerName": format!("fleet_{name}_0"), "state": "running"}))
            .collect();
        json!({"apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerContainer",
               "metadata": {"name": name, "namespace": "fleet", "uid": format!("uid-{name}")},
               "spec": {"image": "app:1", "placement": placement},
               "status": {"instances": instances}})
    }

    #[test]
    fn taking_a_shard_wakes_its_targets_and_what_runs_or_may_run_on_them() {
        let stores = Stores {
            targets: store(vec![target("a", "1"), target("b", "2")]),
            containers: store(vec![
                container("on-a", json!({"target": "a"}), &[]),
                container("on-b", json!({"target": "b"}), &[]),
                // Moved from a to b: a's holder still has its old container to remove.
                container("moved", json!({"target": "b"}), &["a"]),
                container(
                    "pool",
                    json!({"targetSelector": {"matchLabels": {"pool": "edge"}},
                                         "replicas": 2}),
                    &[],
                ),
            ]),
            registries: store(vec![]),
            secrets: store(vec![]),
            config_maps: store(vec![]),
            listed: crate::controller::context::CachesListed::expecting(&[]),
        };
        let shards = Shards::sharded(4);
        let woken = woken_by(&stores, &shards, 1);
        let names = |refs: &[ObjectRef<DockerContainer>]| {
            let mut names: Vec<String> = refs.iter().map(|r| r.name.clone()).collect();
            names.sort();
            names
        };
        assert_eq!(woken.targets.len(), 1);
        assert_eq!(woken.targets[0].name, "a");
        assert_eq!(names(&woken.containers), ["moved", "on-a", "pool"]);
        // A shard with no target wakes only the selector's object, if it is at home there.
        let pool = stores
            .containers
            .get(&ObjectRef::new("pool").within("fleet"))
            .map(|c| shards.of(&c.metadata));
        for shard in [0, 3] {
            let woken = woken_by(&stores, &shards, shard);
            assert!(woken.targets.is_empty());
            let expected: Vec<String> = if pool == Some(shard) {
                vec!["pool".into()]
            } else {
                vec![]
            };
            assert_eq!(names(&woken.containers), expected, "shard {shard}");
        }
    }
}
