//! Field types shared by the three kinds.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Names a Secret in the object's own namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Points at a Secret that holds key material.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretSource {
    /// The Secret holding the material; which keys it must have depends on the field.
    pub secret_ref: SecretReference,
}

/// Names another object of a known kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectReference {
    /// Name of the object, in the same namespace as the object that refers to it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The condition type every Stevedore kind reports: whether the object is usable.
pub const CONDITION_READY: &str = "Ready";

/// An RFC 3339 timestamp from a daemon (`2024-05-01T10:00:00.123456789Z`) as a status
/// field's time; `None` when it does not parse.
pub fn timestamp(rfc3339: &str) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    rfc3339
        .parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}
