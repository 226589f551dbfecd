//! The catalog a Registry's status shows: repositories matching `catalog.repositories`
//! globs, each with its newest tags, bounded so the object stays far below the API
//! server's size limit however large the registry is.

use crate::api::registry::{MAX_STATUS_REPOSITORIES, RepositoryStatus};
/// The most bytes of repository names and tags kept in `status.repositories`.
pub const MAX_STATUS_BYTES: usize = 256 * 1024;

/// Whether `name` matches `pattern`: `*` matches within a path segment, `**` across
/// segments, everything else literally.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    fn matches(p: &[u8], n: &[u8]) -> bool {
        match p {
            [] => n.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=n.len()).any(|i| matches(rest, &n[i..])),
            [b'*', rest @ ..] => {
                let segment = n.iter().position(|&c| c == b'/').unwrap_or(n.len());
                (0..=segment).any(|i| matches(rest, &n[i..]))
            }
            [c, rest @ ..] => n.first() == Some(c) && matches(rest, &n[1..]),
        }
    }
    matches(pattern.as_bytes(), name.as_bytes())
}

/// Whether a repository is wanted: no patterns lists everything.
pub fn wanted(patterns: &[String], repository: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| glob_matches(p, repository))
}

/// The newest `max` tags by name order (the list the status keeps), oldest first.
pub fn newest_tags(mut tags: Vec<String>, max: usize) -> Vec<String> {
    tags.sort();
    let skip = tags.len().saturating_sub(max);
    tags.split_off(skip)
}

/// Cuts `repositories` to what the status may hold; returns the kept ones and whether
/// anything was cut.
pub fn bounded(repositories: Vec<RepositoryStatus>) -> (Vec<RepositoryStatus>, bool) {
    let total = repositories.len();
    let mut bytes = 0;
    let kept: Vec<RepositoryStatus> = repositories
        .into_iter()
        .take(MAX_STATUS_REPOSITORIES)
        .take_while(|r| {
            bytes += r.name.len() + r.tags.iter().map(|t| t.len() + 3).sum::<usize>() + 16;
            bytes <= MAX_STATUS_BYTES
        })
        .collect();
    let cut = kept.len() < total;
    (kept, cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_and_across_segments() {
        assert!(glob_matches("team/*", "team/app"));
        assert!(!glob_matches("team/*", "team/app/sub"));
        assert!(glob_matches("team/**", "team/app/sub"));
        assert!(glob_matches("*/app", "team/app"));
        assert!(glob_matches("stevedore/busy*", "stevedore/busybox"));
        assert!(!glob_matches("team/*", "other/app"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(wanted(&[], "anything/at/all"));
    }

    #[test]
    fn the_newest_tags_by_name_are_kept() {
        let tags = ["1.1", "1.3", "1.2", "1.0"].map(String::from).to_vec();
        assert_eq!(newest_tags(tags.clone(), 2), ["1.2", "1.3"]);
        assert!(newest_tags(tags, 0).is_empty());
    }

    #[test]
    fn ten_thousand_repositories_are_cut_to_a_bounded_list() {
        let repositories: Vec<RepositoryStatus> = (0..10_000)
            .map(|i| RepositoryStatus {
                name: format!("team/service-{i:05}"),
                tags: (0..50).map(|t| format!("1.{t}.0-build.{i}")).collect(),
            })
            .collect();
        let (kept, cut) = bounded(repositories);
        assert!(cut);
        assert!(kept.len() <= MAX_STATUS_REPOSITORIES);
        let size = serde_json::to_vec(&kept)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        assert!(size < 1_000_000, "status.repositories is {size} bytes");
    }
}
