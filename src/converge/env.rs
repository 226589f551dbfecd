//! Resolving a container's environment from its spec and the Secrets and ConfigMaps it
//! names. The values are passed in (the controller reads them from the API server,
//! standalone mode from files); nothing is fetched here.

use std::collections::BTreeMap;

use crate::api::container::{DockerContainerSpec, KeySelector};
use crate::sources::EnvSources;

/// Where a variable's value came from; used to explain a replacement without its value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EnvOrigin {
    /// A literal `value` in the spec.
    Literal,
    /// A Secret key.
    Secret {
        /// Secret name.
        name: String,
        /// Key.
        key: String,
    },
    /// A ConfigMap key.
    ConfigMap {
        /// ConfigMap name.
        name: String,
        /// Key.
        key: String,
    },
}

impl std::fmt::Display for EnvOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Literal => f.write_str("its value in the spec"),
            Self::Secret { name, key } => write!(f, "Secret {name} key {key}"),
            Self::ConfigMap { name, key } => write!(f, "ConfigMap {name} key {key}"),
        }
    }
}

/// One resolved variable.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvValue {
    /// The value; may be secret, so it is never printed by `Debug`.
    pub value: String,
    /// Where it came from.
    pub origin: EnvOrigin,
}

impl std::fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvValue {{ <redacted>, origin: {:?} }}", self.origin)
    }
}

/// The environment of a container, by variable name, in Docker's order of precedence
/// (`envFrom` first, then `env`, later entries overriding earlier ones).
pub type ResolvedEnv = BTreeMap<String, EnvValue>;

/// A reference in the spec that cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct EnvError {
    /// The spec field, e.g. `spec.env[2].valueFrom.secretKeyRef`.
    pub field: String,
    /// What is missing.
    pub message: String,
}

/// Resolves `env` and `envFrom` against `sources`. A missing object or key fails with the
/// field that names it, unless the reference is `optional`.
pub fn resolve_env(
    spec: &DockerContainerSpec,
    sources: &dyn EnvSources,
) -> Result<ResolvedEnv, EnvError> {
    let mut env = ResolvedEnv::new();
    for (i, from) in spec.env_from.iter().enumerate() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(secret) = &from.secret_ref {
            let data = sources.secret(&secret.name).ok_or_else(|| EnvError {
                field: format!("spec.envFrom[{i}].secretRef"),
                message: format!("Secret {} not found", secret.name),
            })?;
            for (key, value) in data {
                let origin = EnvOrigin::Secret {
                    name: secret.name.clone(),
                    key: key.clone(),
                };
                env.insert(format!("{prefix}{key}"), text_value(value, origin));
            }
        }
        if let Some(config_map) = &from.config_map_ref {
            let data = sources
                .config_map(&config_map.name)
                .ok_or_else(|| EnvError {
                    field: format!("spec.envFrom[{i}].configMapRef"),
                    message: format!("ConfigMap {} not found", config_map.name),
                })?;
            for (key, value) in data {
                let origin = EnvOrigin::ConfigMap {
                    name: config_map.name.clone(),
                    key: key.clone(),
                };
                env.insert(
                    format!("{prefix}{key}"),
                    EnvValue {
                        value: value.clone(),
                        origin,
                    },
                );
            }
        }
    }
    for (i, var) in spec.env.iter().enumerate() {
        if let Some(value) = &var.value {
            env.insert(
                var.name.clone(),
                EnvValue {
                    value: value.clone(),
                    origin: EnvOrigin::Literal,
                },
            );
            continue;
        }
        let Some(from) = &var.value_from else {
            continue;
        };
        let resolved = if let Some(selector) = &from.secret_key_ref {
            let field = format!("spec.env[{i}].valueFrom.secretKeyRef");
            lookup(selector, &field, "Secret", |name| {
                sources.secret(name).map(|data| {
                    data.get(&selector.key).map(|v| {
                        text_value(
                            v,
                            EnvOrigin::Secret {
                                name: selector.name.clone(),
                                key: selector.key.clone(),
                            },
                        )
                    })
                })
            })?
        } else if let Some(selector) = &from.config_map_key_ref {
            let field = format!("spec.env[{i}].valueFrom.configMapKeyRef");
            lookup(selector, &field, "ConfigMap", |name| {
                sources.config_map(name).map(|data| {
                    data.get(&selector.key).map(|v| EnvValue {
                        value: v.clone(),
                        origin: EnvOrigin::ConfigMap {
                            name: selector.name.clone(),
                            key: selector.key.clone(),
                        },
                    })
                })
            })?
        } else {
            None
        };
        match resolved {
            Some(value) => {
                env.insert(var.name.clone(), value);
            }
            None => {
                env.remove(&var.name);
            }
        }
    }
    Ok(env)
}

/// Finds `selector` with `find(name) -> Option<object> -> Option<value>`; `Ok(None)` for a
/// missing optional reference.
fn lookup(
    selector: &KeySelector,
    field: &str,
    kind: &str,
    find: impl FnOnce(&str) -> Option<Option<EnvValue>>,
) -> Result<Option<EnvValue>, EnvError> {
    match find(&selector.name) {
        Some(Some(value)) => Ok(Some(value)),
        _ if selector.optional => Ok(None),
        None => Err(EnvError {
            field: field.to_string(),
            message: format!("{kind} {} not found", selector.name),
        }),
        Some(None) => Err(EnvError {
            field: field.to_string(),
            message: format!("{kind} {} has no key {}", selector.name, selector.key),
        }),
    }
}

fn text_value(bytes: &[u8], origin: EnvOrigin) -> EnvValue {
    EnvValue {
        value: String::from_utf8_lossy(bytes).into_owned(),
        origin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::common::LocalObjectReference;
    use crate::api::container::{EnvFromSource, EnvVar, EnvVarSource};
    use crate::sources::StaticSources;

    fn spec_with(env: Vec<EnvVar>, env_from: Vec<EnvFromSource>) -> DockerContainerSpec {
        let mut spec: DockerContainerSpec = serde_json::from_value(serde_json::json!({
            "image": "app:1", "placement": {"target": "t"}
        }))
        .expect("spec");
        spec.env = env;
        spec.env_from = env_from;
        spec
    }

    fn sources() -> StaticSources {
        let mut s = StaticSources::default();
        s.secrets.insert(
            "creds".into(),
            BTreeMap::from([("token".into(), b"s3cret".to_vec())]),
        );
        s.config_maps.insert(
            "cfg".into(),
            BTreeMap::from([("MODE".into(), "fast".into()), ("LEVEL".into(), "1".into())]),
        );
        s
    }

    fn secret_var(name: &str, secret: &str, key: &str, optional: bool) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(KeySelector {
                    name: secret.into(),
                    key: key.into(),
                    optional,
                }),
                config_map_key_ref: None,
            }),
        }
    }

    #[test]
    fn env_overrides_env_from_and_keeps_origins() {
        let spec = spec_with(
            vec![
                EnvVar {
                    name: "MODE".into(),
                    value: Some("slow".into()),
                    value_from: None,
                },
                secret_var("TOKEN", "creds", "token", false),
            ],
            vec![EnvFromSource {
                secret_ref: None,
                config_map_ref: Some(LocalObjectReference { name: "cfg".into() }),
                prefix: None,
            }],
        );
        let env = resolve_env(&spec, &sources()).expect("resolves");
        assert_eq!(env["MODE"].value, "slow");
        assert_eq!(env["LEVEL"].value, "1");
        assert_eq!(env["TOKEN"].value, "s3cret");
        assert_eq!(
            env["TOKEN"].origin,
            EnvOrigin::Secret {
                name: "creds".into(),
                key: "token".into()
            }
        );
        assert!(
            !format!("{env:?}").contains("s3cret"),
            "Debug leaks a value"
        );
    }

    #[test]
    fn missing_references_name_the_field_unless_optional() {
        let spec = spec_with(vec![secret_var("T", "nope", "token", false)], vec![]);
        let error = resolve_env(&spec, &sources()).expect_err("missing secret");
        assert_eq!(error.field, "spec.env[0].valueFrom.secretKeyRef");
        assert!(error.message.contains("Secret nope not found"));

        let spec = spec_with(vec![secret_var("T", "creds", "other", false)], vec![]);
        let error = resolve_env(&spec, &sources()).expect_err("missing key");
        assert!(error.message.contains("has no key other"));

        let spec = spec_with(vec![secret_var("T", "nope", "token", true)], vec![]);
        let env = resolve_env(&spec, &sources()).expect("optional");
        assert!(!env.contains_key("T"));
    }
}
