//! The digest each container's image runs this round (see [`crate::registry::pinning`]),
//! remembered one way for both modes: what the mode recorded (status, or the run's memory)
//! while it names the same image, else the newest pin in the labels of what the targets run.

use super::{ContainerEntry, Snapshot};
use crate::docker::HostContainer;
use crate::labels::{LABEL_RESOLVED_AT, LABEL_RESOLVED_FROM, LABEL_RESOLVED_IMAGE, LABEL_UID};
use crate::registry::pinning::{Pin, Resolved, pin};

/// The pin from before for `container`: its record, else the labels of its containers
/// among `listed`.
pub fn pin_before<'a>(
    container: &ContainerEntry,
    listed: impl IntoIterator<Item = &'a HostContainer>,
) -> Option<Resolved> {
    let image = &container.object.spec.image;
    container
        .recorded
        .pin
        .clone()
        .filter(|p| &p.from == image)
        .or_else(|| pin_in_labels(listed, &container.uid, image))
}

/// The pin an earlier round left in the labels of `owner_uid`'s containers: the newest one
/// resolved from `image`. Several can be running in the middle of a rollout.
fn pin_in_labels<'a>(
    containers: impl IntoIterator<Item = &'a HostContainer>,
    owner_uid: &str,
    image: &str,
) -> Option<Resolved> {
    containers
        .into_iter()
        .filter(|c| c.labels.get(LABEL_UID) == Some(owner_uid))
        .filter(|c| c.labels.get(LABEL_RESOLVED_FROM) == Some(image))
        .filter_map(|c| {
            Some(Resolved {
                image: c.labels.get(LABEL_RESOLVED_IMAGE)?.to_string(),
                from: image.to_string(),
                at: c.labels.get(LABEL_RESOLVED_AT)?.parse().ok()?,
            })
        })
        .max_by_key(|r| r.at)
}

/// Pins `container`'s image for this round, or `None` when there is nothing to pin (no
/// Registry serves it, or its `imageSource` names it by content already).
pub async fn pin_image(
    snapshot: &Snapshot,
    container: &ContainerEntry,
    before: Option<Resolved>,
    now: u64,
) -> Option<Result<Pin, String>> {
    let spec = &container.object.spec;
    if spec.image_source.is_some() {
        return None;
    }
    let registry = snapshot.registry_for(spec)?;
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    Some(
        pin(
            &spec.image,
            spec.image_update_policy,
            Some(registry),
            &snapshot.sources,
            before,
            now,
        )
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::DockerContainer;
    use crate::docker::ContainerState;
    use crate::fleet::Recorded;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A container of owner `uid`, with the pin `(image, from, at)` in its labels.
    fn running(uid: &str, pin: Option<(&str, &str, &str)>) -> HostContainer {
        let mut labels = BTreeMap::from([(LABEL_UID.to_string(), uid.to_string())]);
        if let Some((image, from, at)) = pin {
            labels.extend([
                (LABEL_RESOLVED_IMAGE.to_string(), image.to_string()),
                (LABEL_RESOLVED_FROM.to_string(), from.to_string()),
                (LABEL_RESOLVED_AT.to_string(), at.to_string()),
            ]);
        }
        HostContainer {
            id: "id".into(),
            name: "ns_web_0".into(),
            labels: labels.into_iter().collect(),
            state: ContainerState::Running,
            health: None,
            image_id: "sha256:img".into(),
            current_image: None,
            exit_code: None,
        }
    }

    fn entry(image: &str, recorded: Option<Resolved>) -> ContainerEntry {
        let spec = serde_json::from_value(serde_json::json!({ "image": image, "placement": {} }))
            .expect("spec");
        let object = DockerContainer::new("web", spec);
        ContainerEntry {
            name: "web".into(),
            uid: "web".into(),
            object: Arc::new(object),
            recorded: Recorded {
                replicas: Vec::new(),
                pin: recorded,
            },
        }
    }

    #[test]
    fn a_pin_is_found_again_in_the_owners_labels_newest_first() {
        let live = "reg/app:live";
        let containers = [
            // Mid-rollout: the old pin and the new one.
            running("web", Some(("reg/app@sha256:old", live, "100"))),
            running("web", Some(("reg/app@sha256:new", live, "200"))),
            // Another owner's, newer still.
            running("other", Some(("reg/app@sha256:theirs", live, "300"))),
            // A pin of an image the spec no longer names.
            running("web", Some(("reg/app@sha256:before", "reg/app:old", "400"))),
            // Made before pins were recorded, and a pin whose time is not a number.
            running("web", None),
            running("web", Some(("reg/app@sha256:odd", live, "soon"))),
        ];
        let found = Resolved {
            image: "reg/app@sha256:new".into(),
            from: live.into(),
            at: 200,
        };
        assert_eq!(
            pin_before(&entry(live, None), &containers),
            Some(found.clone())
        );
        assert_eq!(pin_before(&entry("reg/app:2", None), &containers), None);

        // What the mode recorded comes first while it names the same image.
        let recorded = Resolved {
            image: "reg/app@sha256:recorded".into(),
            from: live.into(),
            at: 50,
        };
        assert_eq!(
            pin_before(&entry(live, Some(recorded.clone())), &containers),
            Some(recorded.clone())
        );
        let stale = Resolved {
            from: "reg/app:old".into(),
            ..recorded
        };
        assert_eq!(
            pin_before(&entry(live, Some(stale)), &containers),
            Some(found)
        );
    }
}
