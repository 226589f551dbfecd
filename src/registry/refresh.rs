//! One refresh of a Registry: reach it with its credentials and CA, list the catalog the
//! spec asks for, and say how it went — the same for the controller and standalone mode.

use std::collections::BTreeMap;
use std::time::Duration;

use super::catalog::{bounded, newest_tags, wanted};
use super::client::{RegistryClient, RegistryError, RegistryErrorKind};
use super::credentials::credentials_of;
use crate::api::Registry;
use crate::api::registry::{RegistryStatus, RepositoryStatus};
use crate::conditions::{ConditionType, Reason, condition};
use crate::sources::EnvSources;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// How long one registry call may take.
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(15);

/// What one refresh found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refreshed {
    /// Repositories and tags to show (bounded).
    pub repositories: Vec<RepositoryStatus>,
    /// How many repositories matched in all.
    pub matched: usize,
    /// Whether `repositories` was cut.
    pub cut: bool,
}

/// The refresh interval of a Registry (`catalog.refreshInterval`, 10 minutes by default).
pub fn refresh_interval(registry: &Registry) -> Duration {
    registry
        .spec
        .catalog
        .as_ref()
        .and_then(|c| humantime::parse_duration(&c.refresh_interval).ok())
        .unwrap_or(Duration::from_secs(600))
}

/// A client for `registry` from its Secrets (credentials, CA). A missing or unreadable
/// Secret is an `InvalidConfig` or `Unauthorized` error that names the field.
pub fn client_for(
    registry: &Registry,
    sources: &dyn EnvSources,
) -> Result<RegistryClient, RegistryError> {
    let credentials = match &registry.spec.credentials {
        Some(reference) => Some(credentials_of(registry, sources).ok_or_else(|| RegistryError {
            kind: RegistryErrorKind::Unauthorized,
            message: format!(
                "spec.credentials.secretRef: Secret {} is missing, or holds neither username and \
                 password nor a .dockerconfigjson entry for {}",
                reference.secret_ref.name, registry.spec.server
            ),
        })?),
        None => None,
    };
    let ca = match &registry.spec.ca {
        Some(reference) => Some(
            sources
                .secret(&reference.secret_ref.name)
                .and_then(|data| data.get("ca.crt"))
                .ok_or_else(|| RegistryError {
                    kind: RegistryErrorKind::InvalidConfig,
                    message: format!(
                        "spec.ca.secretRef: Secret {} is missing or has no key ca.crt",
                        reference.secret_ref.name
                    ),
                })?
                .clone(),
        ),
        None => None,
    };
    RegistryClient::new(
        &registry.spec,
        ca.as_deref(),
        credentials.as_ref(),
        REGISTRY_TIMEOUT,
    )
}

/// Reaches the registry and lists its catalog as `spec.catalog` says (every repository,
/// bounded, when it says nothing).
pub async fn refresh(
    registry: &Registry,
    sources: &(dyn EnvSources + Sync),
) -> Result<Refreshed, RegistryError> {
    let client = client_for(registry, sources)?;
    let catalog = registry.spec.catalog.clone().unwrap_or_default();
    let mut names: Vec<String> = client
        .repositories()
        .await?
        .into_iter()
        .filter(|r| wanted(&catalog.repositories, r))
        .collect();
    names.sort();
    let matched = names.len();
    let max_tags = usize::try_from(catalog.max_tags_per_repository).unwrap_or(0);
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Tags only for what the status can hold: no thousands of calls for a huge catalog.
    for name in names
        .iter()
        .take(crate::api::registry::MAX_STATUS_REPOSITORIES)
    {
        let listed = if max_tags == 0 {
            Vec::new()
        } else {
            newest_tags(client.tags(name).await?, max_tags)
        };
        tags.insert(name.clone(), listed);
    }
    let repositories = names
        .into_iter()
        .map(|name| RepositoryStatus {
            tags: tags.remove(&name).unwrap_or_default(),
            name,
        })
        .collect();
    let (repositories, cut) = bounded(repositories);
    Ok(Refreshed {
        repositories,
        matched,
        cut,
    })
}

/// Records one refresh in `status` and returns its `Ready` condition: on success the
/// catalog, its count and `lastRefreshTime` (saying so when the list was cut to fit the
/// object); on failure the last catalog stays and the condition carries the reason.
pub fn record_refresh(
    status: &mut RegistryStatus,
    result: Result<Refreshed, RegistryError>,
    now: &Time,
) -> Condition {
    match result {
        Ok(refreshed) => {
            let listed = refreshed.repositories.len();
            status.repositories = refreshed.repositories;
            status.repository_count = i32::try_from(refreshed.matched).unwrap_or(i32::MAX);
            status.last_refresh_time = Some(now.clone());
            let message = match refreshed.cut {
                false => format!("{listed} repositories listed"),
                true => format!(
                    "{listed} of {} repositories listed; the rest are counted in repositoryCount \
                     only, to keep this object within the API server's size limit",
                    refreshed.matched
                ),
            };
            condition(ConditionType::Ready, true, Reason::Refreshed, message, now)
        }
        Err(error) => condition(
            ConditionType::Ready,
            false,
            Reason::Failed(error.kind.reason()),
            error.message,
            now,
        ),
    }
}
