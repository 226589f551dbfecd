//! The labels Stevedore puts on every container it manages. They are how a run finds its
//! containers again without any state of its own: who owns a container, which replica it
//! is, through which target it was placed, and what it was made from.

/// The label every managed container carries; its value is `"true"`.
pub const LABEL_MANAGED: &str = "stevedore.dev/managed";
/// The label with the UID of the DockerTarget a container was placed through.
pub const LABEL_TARGET: &str = "stevedore.dev/target";

/// `stevedore.dev/namespace`: the owner's namespace.
pub const LABEL_NAMESPACE: &str = "stevedore.dev/namespace";
/// `stevedore.dev/name`: the owner's name.
pub const LABEL_NAME: &str = "stevedore.dev/name";
/// `stevedore.dev/uid`: the owner's UID.
pub const LABEL_UID: &str = "stevedore.dev/uid";
/// `stevedore.dev/replica`: the replica index.
pub const LABEL_REPLICA: &str = "stevedore.dev/replica";
/// `stevedore.dev/manager`: which controller or standalone run owns the container.
pub const LABEL_MANAGER: &str = "stevedore.dev/manager";
/// `stevedore.dev/spec-hash`: the hash of everything that shapes the container.
pub const LABEL_SPEC_HASH: &str = "stevedore.dev/spec-hash";
/// `stevedore.dev/spec-fields`: a digest per field, so a replacement can say what changed.
pub const LABEL_SPEC_FIELDS: &str = "stevedore.dev/spec-fields";
/// `stevedore.dev/resolved-image`: the `repository@digest` a tag was resolved to.
pub const LABEL_RESOLVED_IMAGE: &str = "stevedore.dev/resolved-image";
/// `stevedore.dev/resolved-from`: the `spec.image` that was resolved.
pub const LABEL_RESOLVED_FROM: &str = "stevedore.dev/resolved-from";
/// `stevedore.dev/resolved-at`: when it was resolved (unix seconds). With the two above,
/// this lets standalone mode, which keeps no state file, find its pin again after a restart.
pub const LABEL_RESOLVED_AT: &str = "stevedore.dev/resolved-at";

/// Every label above: the keys a listed container's labels keep without a copy of their
/// own.
pub const STEVEDORE_LABELS: [&str; 12] = [
    LABEL_MANAGED,
    LABEL_TARGET,
    LABEL_NAMESPACE,
    LABEL_NAME,
    LABEL_UID,
    LABEL_REPLICA,
    LABEL_MANAGER,
    LABEL_SPEC_HASH,
    LABEL_SPEC_FIELDS,
    LABEL_RESOLVED_IMAGE,
    LABEL_RESOLVED_FROM,
    LABEL_RESOLVED_AT,
];
