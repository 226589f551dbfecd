//! One digest everywhere: a tag is resolved to a digest once per rollout, through the
//! Registry that serves it, and every target runs that digest. `Pinned` resolves again only
//! when `spec.image` changes; `FollowTag` also every refresh interval of the Registry, so a
//! moved tag rolls out (health-gated, like any replacement).

use std::time::Duration;

use super::client::{RegistryClient, RegistryError};
use super::credentials::image_host;
use crate::api::container::ImageUpdatePolicy;
use crate::docker::split_reference;

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
