//! A listed container's labels, kept small.
//!
//! Every target's last list is kept for as long as the process runs (it is shared by the
//! reconciles of one target and serves while the daemon is unreachable), so a fleet holds
//! one label set per container it manages. A map of owned strings costs a tree node and
//! two allocations per label; here the labels are one sorted slice, and Stevedore's own
//! keys, which every managed container carries, point at the constants instead of being
//! copied.

use crate::labels::STEVEDORE_LABELS;
use std::borrow::Cow;

/// A container's labels as a list showed them: every label, sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListedLabels(Box<[(Cow<'static, str>, Box<str>)]>);

impl ListedLabels {
    /// The value of `key`, if the container has that label.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_ref())
    }

    /// Every label, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// Sets `key` to `value`, replacing what it had (tests build listed containers with it;
    /// the product only reads what a list gave).
    #[cfg(test)]
    pub fn insert(&mut self, key: &str, value: &str) {
        let labels = self.iter().chain([(key, value)]);
        *self = labels
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }
}

impl FromIterator<(String, String)> for ListedLabels {
    /// The labels, sorted; of a key given twice, the last value counts.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(labels: I) -> Self {
        let mut labels: Vec<(Cow<'static, str>, Box<str>)> = labels
            .into_iter()
            .map(|(key, value)| {
                let key = match STEVEDORE_LABELS.iter().find(|known| **known == key) {
                    Some(known) => Cow::Borrowed(*known),
                    None => Cow::Owned(key),
                };
                (key, value.into_boxed_str())
            })
            .collect();
        // Reversed first, so that the stable sort puts a repeated key's last value first,
        // where the dedup keeps it.
        labels.reverse();
        labels.sort_by(|(a, _), (b, _)| a.cmp(b));
        labels.dedup_by(|later, kept| later.0 == kept.0);
        Self(labels.into_boxed_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{LABEL_MANAGED, LABEL_REPLICA, LABEL_SPEC_HASH, LABEL_UID};

    #[test]
    fn finds_every_label_whatever_its_key() {
        let labels: ListedLabels = [
            (LABEL_UID.to_string(), "u-1".to_string()),
            (
                "org.opencontainers.image.version".to_string(),
                "1.2".to_string(),
            ),
            (LABEL_MANAGED.to_string(), "true".to_string()),
            ("app".to_string(), "web".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(labels.get(LABEL_UID), Some("u-1"));
        assert_eq!(labels.get(LABEL_MANAGED), Some("true"));
        assert_eq!(labels.get("org.opencontainers.image.version"), Some("1.2"));
        assert_eq!(labels.get("app"), Some("web"));
        assert_eq!(labels.get(LABEL_REPLICA), None);
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "app",
                "org.opencontainers.image.version",
                LABEL_MANAGED,
                LABEL_UID
            ],
            "sorted by key"
        );
    }

    #[test]
    fn stevedores_keys_are_not_copied_and_others_are() {
        let labels: ListedLabels = [
            (LABEL_SPEC_HASH.to_string(), "abc".to_string()),
            (
                "stevedore.dev/from-a-later-version".to_string(),
                "x".to_string(),
            ),
        ]
        .into_iter()
        .collect();
        let borrowed = |key: &str| {
            labels
                .0
                .iter()
                .find(|(k, _)| k == key)
                .map(|(k, _)| matches!(k, Cow::Borrowed(_)))
        };
        assert_eq!(borrowed(LABEL_SPEC_HASH), Some(true));
        assert_eq!(borrowed("stevedore.dev/from-a-later-version"), Some(false));
    }

    #[test]
    fn an_insert_replaces_or_adds_and_keeps_the_order() {
        let mut labels: ListedLabels = [
            ("b".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            labels.get("b"),
            Some("2"),
            "the last of a repeated key counts"
        );
        labels.insert("a", "0");
        labels.insert("b", "3");
        assert_eq!(labels.iter().collect::<Vec<_>>(), [("a", "0"), ("b", "3")]);
    }
}
