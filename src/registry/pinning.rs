//! One digest everywhere: a tag is resolved to a digest once per rollout, through the
//! Registry that serves it, and every target runs that digest. `Pinned` resolves again only
//! when `spec.image` changes; `FollowTag` also every refresh interval of the Registry, so a
//! moved tag rolls out (health-gated, like any replacement).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::client::{RegistryClient, RegistryError};
use super::credentials::image_host;
use super::refresh::{client_for, refresh_interval};
use super::source::LocalSource;
use crate::api::Registry;
use crate::api::container::ImageUpdatePolicy;
use crate::docker::split_reference;
use crate::sources::EnvSources;

/// A tag resolved to a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// `host/repository@sha256:…`: what every target runs.
    pub image: String,
    /// The `spec.image` it was resolved from.
    pub from: String,
    /// When (unix seconds).
    pub at: i64,
}

impl Resolved {
    /// When it was resolved, as `status.resolvedAt` carries it.
    pub fn at_time(&self) -> Option<Time> {
        k8s_openapi::jiff::Timestamp::from_second(self.at)
            .ok()
            .map(Time)
    }
}

/// What to do about an image this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run the reference as written (no Registry serves it, or it names a digest already).
    AsWritten,
    /// Keep running the digest resolved before.
    Keep(Resolved),
    /// Ask the registry for the tag's digest now.
    Resolve,
}

/// Decides whether `image` needs resolving, from what was resolved before.
pub fn decide(
    image: &str,
    served_by_registry: bool,
    policy: ImageUpdatePolicy,
    previous: Option<&Resolved>,
    refresh_interval: Duration,
    now: i64,
) -> Decision {
    if !served_by_registry || image.contains('@') {
        return Decision::AsWritten;
    }
    match previous {
        Some(previous) if previous.from == image => {
            let age = now.saturating_sub(previous.at).max(0) as u64;
            match policy {
                ImageUpdatePolicy::Pinned => Decision::Keep(previous.clone()),
                ImageUpdatePolicy::FollowTag if age < refresh_interval.as_secs() => {
                    Decision::Keep(previous.clone())
                }
                ImageUpdatePolicy::FollowTag => Decision::Resolve,
            }
        }
        _ => Decision::Resolve,
    }
}

/// Resolves `image` (`host/repository:tag`) to `host/repository@digest` with a manifest
/// HEAD.
pub async fn resolve(
    client: &RegistryClient,
    image: &str,
    now: i64,
) -> Result<Resolved, RegistryError> {
    let host = image_host(image).unwrap_or_default();
    let path = image
        .strip_prefix(host)
        .map(|p| p.trim_start_matches('/'))
        .unwrap_or(image);
    let (repository, tag) = split_reference(path);
    let digest = client.digest(repository, tag).await?;
    Ok(Resolved {
        image: format!("{host}/{repository}@{digest}"),
        from: image.to_string(),
        at: now,
    })
}

/// The outcome of [`pin`] for one container this round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pin {
    /// The digest to run, or `None` to run the reference as written.
    pub resolved: Option<Resolved>,
    /// A check that failed while a digest was already known: it keeps running, and this
    /// says why nothing newer was looked for.
    pub problem: Option<String>,
}

/// The digest `image` runs this round, given what was resolved `before` (from the
/// controller's status, or from the labels of the running containers in standalone mode).
///
/// `Err` when the tag must be resolved, cannot be, and nothing was resolved before: then
/// nothing may change. A failed check with a digest already known keeps that digest.
pub async fn pin(
    image: &str,
    policy: ImageUpdatePolicy,
    registry: Option<&Registry>,
    sources: &(dyn EnvSources + Sync),
    before: Option<Resolved>,
    now: i64,
) -> Result<Pin, String> {
    let interval = registry.map_or(Duration::from_secs(600), refresh_interval);
    let decision = decide(
        image,
        registry.is_some(),
        policy,
        before.as_ref(),
        interval,
        now,
    );
    let registry = match (decision, registry) {
        (Decision::AsWritten, _) | (_, None) => return Ok(Pin::default()),
        (Decision::Keep(kept), _) => {
            return Ok(Pin {
                resolved: Some(kept),
                problem: None,
            });
        }
        (Decision::Resolve, Some(registry)) => registry,
    };
    let resolved = match client_for(registry, sources) {
        Ok(client) => resolve(&client, image, now).await,
        Err(e) => Err(e),
    };
    match (resolved, before.filter(|b| b.from == image)) {
        (Ok(resolved), _) => Ok(Pin {
            resolved: Some(resolved),
            problem: None,
        }),
        (Err(e), Some(kept)) => Ok(Pin {
            problem: Some(format!(
                "could not check {image} for a new digest ({}: {}); {} keeps running",
                e.kind.reason(),
                e.message,
                kept.image
            )),
            resolved: Some(kept),
        }),
        (Err(e), None) => Err(format!(
            "spec.image: cannot resolve {image} to a digest ({}: {}); nothing is changed until \
             it can be",
            e.kind.reason(),
            e.message
        )),
    }
}

/// The reference to run and the image's identity for the spec hash: a source image by its
/// content digest, a resolved tag by its manifest digest, anything else as written.
pub fn image_to_run(
    spec_image: &str,
    source: Option<&LocalSource>,
    resolved: Option<&Resolved>,
) -> (String, String) {
    match (source, resolved) {
        (Some(source), _) => (
            source.image(spec_image),
            format!("source:{}", source.digest),
        ),
        (None, Some(r)) => (
            r.image.clone(),
            r.image
                .rsplit_once('@')
                .map_or(r.image.clone(), |(_, d)| d.to_string()),
        ),
        (None, None) => (spec_image.to_string(), spec_image.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(from: &str, at: i64) -> Resolved {
        Resolved {
            image: "reg:5000/app@sha256:aa".into(),
            from: from.into(),
            at,
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn pinned_keeps_the_digest_until_the_spec_names_another_image() {
        let before = resolved("reg:5000/app:1", 0);
        assert_eq!(
            decide(
                "reg:5000/app:1",
                true,
                ImageUpdatePolicy::Pinned,
                Some(&before),
                HOUR,
                1_000_000
            ),
            Decision::Keep(before.clone())
        );
        assert_eq!(
            decide(
                "reg:5000/app:2",
                true,
                ImageUpdatePolicy::Pinned,
                Some(&before),
                HOUR,
                10
            ),
            Decision::Resolve
        );
        assert_eq!(
            decide(
                "reg:5000/app:1",
                true,
                ImageUpdatePolicy::Pinned,
                None,
                HOUR,
                10
            ),
            Decision::Resolve
        );
    }

    #[test]
    fn follow_tag_resolves_again_after_the_refresh_interval() {
        let before = resolved("reg:5000/app:1", 100);
        assert_eq!(
            decide(
                "reg:5000/app:1",
                true,
                ImageUpdatePolicy::FollowTag,
                Some(&before),
                HOUR,
                200
            ),
            Decision::Keep(before.clone())
        );
        assert_eq!(
            decide(
                "reg:5000/app:1",
                true,
                ImageUpdatePolicy::FollowTag,
                Some(&before),
                HOUR,
                3_700
            ),
            Decision::Resolve
        );
    }

    #[test]
    fn digests_and_images_without_a_registry_run_as_written() {
        assert_eq!(
            decide(
                "reg:5000/app@sha256:bb",
                true,
                ImageUpdatePolicy::FollowTag,
                None,
                HOUR,
                0
            ),
            Decision::AsWritten
        );
        assert_eq!(
            decide(
                "busybox:1",
                false,
                ImageUpdatePolicy::FollowTag,
                None,
                HOUR,
                0
            ),
            Decision::AsWritten
        );
    }
}
