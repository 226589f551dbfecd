//! `Registry`: where images come from, with credentials and a catalog of its images.

// Each `printcolumn(...)` repeats `type_ = …`; clippy reads that as one attribute twice.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretSource;

/// Annotation whose every change asks for a catalog refresh now.
pub const REFRESH_REQUESTED_ANNOTATION: &str = "stevedore.dev/refresh-requested";

/// The most repositories kept in `status.repositories`; the rest are counted only.
pub const MAX_STATUS_REPOSITORIES: usize = 500;

/// A container registry (Registry API v2). Containers whose image host matches `server`,
/// or that name this object in `registryRef`, are pulled with its credentials and CA.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "stevedore.dev",
    version = "v1alpha1",
    kind = "Registry",
    plural = "registries",
    namespaced,
    doc = "A container registry Stevedore pulls from, with its credentials and a catalog of its images.",
    status = "RegistryStatus",
    shortname = "reg",
    category = "stevedore",
    printcolumn(name = "Server", type_ = "string", json_path = ".spec.server"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Repositories",
        type_ = "integer",
        json_path = ".status.repositoryCount"
    ),
    printcolumn(
        name = "Refreshed",
        type_ = "date",
        json_path = ".status.lastRefreshTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.ca) && self.insecure)")
        .message("set either ca or insecure, not both")
        .field_path(".insecure"),
)]
pub struct RegistrySpec {
    /// The registry's host and optional port, without scheme, e.g.
    /// `registry.example.com:5000`. Images whose reference starts with it use this Registry.
    #[x_kube(
        validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$')")
            .message("server must be a host name or IP with an optional :port, without scheme or path")
    )]
    #[schemars(length(min = 1, max = 255))]
    pub server: String,

    /// Credentials for pulls and catalog listing: a `kubernetes.io/dockerconfigjson` Secret
    /// (key `.dockerconfigjson`) or a `kubernetes.io/basic-auth` Secret (keys `username`,
    /// `password`). Without it the registry is used anonymously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretSource>,

    /// A Secret whose `ca.crt` holds the CA that signed the registry's certificate. The
    /// Docker daemons that pull must trust it too (`/etc/docker/certs.d/<server>/ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretSource>,

    /// Speaks to the registry as Docker speaks to an insecure one: HTTPS without verifying
    /// its certificate, else plain HTTP. Only for registries on a network you trust; the
    /// daemons that pull must allow it too (`insecure-registries`, or any registry on
    /// 127.0.0.0/8).
    #[serde(default)]
    pub insecure: bool,

    /// What to list from the registry's catalog into `status.repositories`, and how often;
    /// without it, every repository (bounded) with its newest 50 tags, every 10 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogSpec>,
}

/// Which repositories of the registry's catalog to list, and how often to refresh them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogSpec {
    /// How often the catalog is listed again, as a duration such as `30s`, `10m` or `1h`.
    #[serde(default = "default_refresh_interval")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub refresh_interval: String,

    /// Glob patterns (`*` matches within a path segment, `**` across segments) of the
    /// repositories to list; empty lists every repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(max = 255)))]
    pub repositories: Vec<String>,

    /// The most tags listed per repository (the newest by name order); 0 lists none.
    #[serde(default = "default_max_tags")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_tags_per_repository: i32,
}

fn default_refresh_interval() -> String {
    "10m".to_string()
}

fn default_max_tags() -> i32 {
    50
}

impl Default for CatalogSpec {
    fn default() -> Self {
        Self {
            refresh_interval: default_refresh_interval(),
            repositories: Vec::new(),
            max_tags_per_repository: default_max_tags(),
        }
    }
}

/// The registry's reachability and the repositories last listed from it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` is True when the registry answered with the given credentials; when False
    /// its reason is one of `Unreachable`, `Unauthorized`, `TLSError` or `NotFound`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,

    /// Repositories matching `catalog.repositories`, with their tags. Bounded in size: when
    /// the registry has more, the list is cut and `repositoryCount` tells the full number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_STATUS_REPOSITORIES))]
    pub repositories: Vec<RepositoryStatus>,

    /// How many repositories matched, including those cut from `repositories`.
    #[serde(default)]
    pub repository_count: i32,

    /// When the catalog was last listed successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<Time>,

    /// The value of the `stevedore.dev/refresh-requested` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub observed_refresh_request: Option<String>,
}

/// One repository of the registry and some of its tags.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryStatus {
    /// Repository name, e.g. `team/app`.
    #[schemars(length(max = 255))]
    pub name: String,
    /// Tags of the repository, at most `catalog.maxTagsPerRepository`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(max = 128)))]
    pub tags: Vec<String>,
}
