//! The Kubernetes API calls the controller makes, as RBAC rules: the single source for
//! `rbac/clusterrole.yaml` (a test keeps the file equal) and for the check that every call
//! the reconcilers make is allowed (the mock API-server tests record each call).

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::ObjectMeta;

/// One resource and the verbs used on it, with why.
#[derive(Clone, Copy, Debug)]
pub struct Permission {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource (with subresource, e.g. `dockercontainers/status`).
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Which part of the controller needs it.
    pub why: &'static str,
}

/// Everything the controller does with the API server.
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        group: "stevedore.dev",
        resource: "dockercontainers",
        verbs: &["list", "watch", "patch"],
        why: "the DockerContainer controller; patch adds and removes the finalizer",
    },
    Permission {
        group: "stevedore.dev",
        resource: "dockercontainers/status",
        verbs: &["patch"],
        why: "status by server-side apply",
    },
    Permission {
        group: "stevedore.dev",
        resource: "dockertargets",
        verbs: &["list", "watch", "patch"],
        why: "the DockerTarget controller and placement; patch adds and removes the finalizer",
    },
    Permission {
        group: "stevedore.dev",
        resource: "dockertargets/status",
        verbs: &["patch"],
        why: "status by server-side apply",
    },
    Permission {
        group: "stevedore.dev",
        resource: "registries",
        verbs: &["list", "watch"],
        why: "pull credentials and the Registry controller",
    },
    Permission {
        group: "stevedore.dev",
        resource: "registries/status",
        verbs: &["patch"],
        why: "status by server-side apply",
    },
    Permission {
        group: "",
        resource: "secrets",
        verbs: &["list", "watch"],
        why: "TLS and ssh material, registry credentials, env values",
    },
    Permission {
        group: "",
        resource: "configmaps",
        verbs: &["list", "watch"],
        why: "env values",
    },
    Permission {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        why: "an Event for every action and failure (patch counts repeats)",
    },
    Permission {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "patch"],
        why: "leader election",
    },
];

/// Whether `verb` on `group`/`resource` is among [`PERMISSIONS`].
pub fn allows(group: &str, resource: &str, verb: &str) -> bool {
    PERMISSIONS
        .iter()
        .any(|p| p.group == group && p.resource == resource && p.verbs.contains(&verb))
}

/// What a sharded controller (`--shards`) does with Leases instead of leader election:
/// lists its shard set's, creates and patches its member and shard Leases, and deletes its
/// member Lease on the way out (and those of replicas gone for good).
pub const SHARD_LEASES: Permission = Permission {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["list", "create", "patch", "delete"],
    why: "shards held through Leases",
};

/// Every `(group, resource, verb)` of [`PERMISSIONS`], one entry per verb.
pub fn grants() -> std::collections::BTreeSet<(String, String, String)> {
    grants_of(PERMISSIONS.iter())
}

/// Like [`grants`], for a sharded controller: [`SHARD_LEASES`] instead of leader election.
pub fn grants_sharded() -> std::collections::BTreeSet<(String, String, String)> {
    grants_of(
        PERMISSIONS
            .iter()
            .filter(|p| p.resource != SHARD_LEASES.resource)
            .chain([&SHARD_LEASES]),
    )
}

fn grants_of<'p>(
    permissions: impl Iterator<Item = &'p Permission>,
) -> std::collections::BTreeSet<(String, String, String)> {
    permissions
        .flat_map(|p| {
            p.verbs
                .iter()
                .map(|v| (p.group.to_string(), p.resource.to_string(), v.to_string()))
        })
        .collect()
}

/// The ClusterRole the controller needs: exactly [`PERMISSIONS`].
pub fn cluster_role(name: &str) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        rules: Some(
            PERMISSIONS
                .iter()
                .map(|p| PolicyRule {
                    api_groups: Some(vec![p.group.to_string()]),
                    resources: Some(vec![p.resource.to_string()]),
                    verbs: p.verbs.iter().map(|v| v.to_string()).collect(),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }
}
