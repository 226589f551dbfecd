//! What to reconcile at once when this replica takes a shard over: the shard's targets
//! and Registries, and the DockerContainers placed on those targets or at home in it.

use std::collections::{BTreeMap, HashSet};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::Shards;
use crate::api::{DockerContainer, DockerTarget, Registry};
use crate::controller::context::Stores;
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
    // (namespace, name) → labels of the shard's targets.
    let mut targets: BTreeMap<(String, String), Option<BTreeMap<String, String>>> = BTreeMap::new();
    for target in stores.targets.state() {
        if shards.of(&target.metadata) == shard {
            woken.targets.push(ObjectRef::from_obj(target.as_ref()));
            targets.insert(
                (target.namespace().unwrap_or_default(), target.name_any()),
                target.metadata.labels.clone(),
            );
        }
    }
    woken.registries = stores
        .registries
        .state()
        .iter()
        .filter(|r| shards.of(&r.metadata) == shard)
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect();
    let namespaces: HashSet<&str> = targets.keys().map(|(ns, _)| ns.as_str()).collect();
    for container in stores.containers.state() {
        let namespace = container.namespace().unwrap_or_default();
        let reach = Reach::of(&container.spec.placement);
        let on_shard = namespaces.contains(namespace.as_str())
            && match &reach {
                Reach::Named(name) => targets.contains_key(&(namespace.clone(), name.clone())),
                Reach::Selected(_) => targets
                    .iter()
                    .filter(|((ns, _), _)| *ns == namespace)
                    .any(|((_, name), labels)| reach.includes(name, labels.as_ref())),
                Reach::Nothing => false,
            };
        let recorded = container
            .status
            .iter()
            .flat_map(|s| &s.instances)
            .any(|i| targets.contains_key(&(namespace.clone(), i.target.clone())));
        let at_home = !matches!(reach, Reach::Named(_)) && shards.of(&container.metadata) == shard;
        if on_shard || recorded || at_home {
            woken
                .containers
                .push(ObjectRef::from_obj(container.as_ref()));
        }
    }
    woken
}
