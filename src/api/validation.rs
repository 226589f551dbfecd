//! Client-side admission: checks an object against the very CRD schema the API server
//! enforces — its OpenAPI structure (types, enums, patterns, ranges, unknown fields) and
//! its `x-kubernetes-validations` CEL rules — so standalone mode and the tests reject
//! exactly what `kubectl apply` would.
//!
//! ```text
//!   crds() ──> openAPIV3Schema ──┬─> as JSON Schema (jsonschema) ──┐
//!                                └─> CEL rules (kube-cel) ─────────┴─> Vec<FieldError>
//! ```

use std::fmt;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Map, Value};

/// One reason an object is invalid, located at a field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Where in the object, e.g. `spec.ports[0].containerPort`; empty for the root.
    pub field: String,
    /// What is wrong, in words a person can act on. Never contains the field's value.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// The error for a schema that cannot be turned into a validator: a bug in Stevedore's own
/// types, never in user input.
#[derive(Debug, thiserror::Error)]
#[error("failed to compile the schema of {kind}: {reason}")]
pub struct SchemaCompileError {
    kind: String,
    reason: String,
}

/// Validators for each kind of a set of CRDs, compiled once.
pub struct Admission {
    kinds: Vec<KindValidator>,
}

struct KindValidator {
    api_version: String,
    kind: String,
    structure: jsonschema::Validator,
    rules: kube_cel::CompiledSchema,
}

impl Admission {
    /// Compiles validators for every served version of the given CRDs.
    pub fn new(crds: &[CustomResourceDefinition]) -> Result<Self, SchemaCompileError> {
        let mut kinds = Vec::new();
        for crd in crds {
            let kind = crd.spec.names.kind.clone();
            for version in &crd.spec.versions {
                let compile_error = |reason: String| SchemaCompileError {
                    kind: kind.clone(),
                    reason,
                };
                let schema = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .ok_or_else(|| compile_error("no openAPIV3Schema".into()))?;
                let schema =
                    serde_json::to_value(schema).map_err(|e| compile_error(e.to_string()))?;
                let structure =
                    jsonschema::validator_for(&with_type_meta(as_strict_json_schema(&schema)))
                        .map_err(|e| compile_error(e.to_string()))?;
                let rules = kube_cel::compile_schema(&schema);
                if let Some(first) = rules.compilation_errors().first() {
                    return Err(compile_error(format!("{first:?}")));
                }
                kinds.push(KindValidator {
                    api_version: format!("{}/{}", crd.spec.group, version.name),
                    kind: kind.clone(),
                    structure,
                    rules,
                });
            }
        }
        Ok(Self { kinds })
    }

    /// Validators for Stevedore's own kinds.
    pub fn stevedore() -> Result<Self, SchemaCompileError> {
        Self::new(&super::crds())
    }

    /// Whether `apiVersion`/`kind` is one of the kinds this admission knows.
    pub fn knows(&self, api_version: &str, kind: &str) -> bool {
        self.find(api_version, kind).is_some()
    }

    /// Checks one object (with `apiVersion` and `kind`) and returns every problem found:
    /// structural problems first, then the CEL rules (only run on a well-formed object,
    /// as the API server does).
    pub fn validate(&self, object: &Value) -> Vec<FieldError> {
        let api_version = object.get("apiVersion").and_then(Value::as_str);
        let kind = object.get("kind").and_then(Value::as_str);
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            return vec![FieldError {
                field: String::new(),
                message: "apiVersion and kind must be set".into(),
            }];
        };
        let Some(validator) = self.find(api_version, kind) else {
            return vec![FieldError {
                field: "kind".into(),
                message: format!("unknown kind {kind} in {api_version}"),
            }];
        };
        let mut errors: Vec<FieldError> = Vec::new();
        for error in validator.structure.iter_errors(object) {
            let field = pointer_to_field_path(error.instance_path().as_str());
            match error.kind() {
                // One error per unknown field, named like kubectl's strict validation does.
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    errors.extend(unexpected.iter().map(|name| FieldError {
                        field: if field.is_empty() {
                            name.clone()
                        } else {
                            format!("{field}.{name}")
                        },
                        message: "unknown field".into(),
                    }));
                }
                _ => errors.push(FieldError {
                    field,
                    message: error.masked().to_string(),
                }),
            }
        }
        if errors.is_empty()
            && let Err(failures) = kube_cel::validate_compiled(&validator.rules, object, None)
        {
            errors.extend(failures.iter().map(|f| FieldError {
                field: f.field_path.clone(),
                message: f.message.clone(),
            }));
        }
        errors
    }

    fn find(&self, api_version: &str, kind: &str) -> Option<&KindValidator> {
        self.kinds
            .iter()
            .find(|k| k.api_version == api_version && k.kind == kind)
    }
}

/// Turns a structural OpenAPI v3 schema into the JSON Schema the API server effectively
/// applies with strict field validation (`kubectl apply --validate=strict`):
/// `nullable` admits `null`, `x-kubernetes-int-or-string` admits both, and objects with
/// declared properties reject unknown ones unless they preserve unknown fields.
fn as_strict_json_schema(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let converted = match key.as_str() {
            "properties" => Value::Object(
                value
                    .as_object()
                    .map(|props| {
                        props
                            .iter()
                            .map(|(name, s)| (name.clone(), as_strict_json_schema(s)))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            "items" | "additionalProperties" | "not" => as_strict_json_schema(value),
            "allOf" | "anyOf" | "oneOf" => Value::Array(
                value
                    .as_array()
                    .map(|all| all.iter().map(as_strict_json_schema).collect())
                    .unwrap_or_default(),
            ),
            _ => value.clone(),
        };
        out.insert(key.clone(), converted);
    }
    // The CRD types hold bounds as floats (`65535.0`); on integer fields say them as integers,
    // so rejections read "maximum of 65535".
    if map.get("type").and_then(Value::as_str) == Some("integer") {
        for bound in ["minimum", "maximum"] {
            if let Some(value) = map.get(bound).and_then(Value::as_f64)
                && value.fract() == 0.0
                && value.abs() < 9.0e15
            {
                out.insert(bound.into(), Value::from(value as i64));
            }
        }
    }
    let flag = |name: &str| map.get(name) == Some(&Value::Bool(true));
    if flag("x-kubernetes-int-or-string") {
        out.remove("type");
        out.insert(
            "anyOf".into(),
            serde_json::json!([{ "type": "integer" }, { "type": "string" }]),
        );
    }
    if flag("nullable")
        && let Some(Value::String(ty)) = out.get("type").cloned()
    {
        out.insert("type".into(), serde_json::json!([ty, "null"]));
    }
    if map.contains_key("properties")
        && !map.contains_key("additionalProperties")
        && !flag("x-kubernetes-preserve-unknown-fields")
    {
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// Declares the fields every object has besides its schema's own (`apiVersion`, `kind`,
/// `metadata`), which the API server checks itself rather than through the CRD schema.
fn with_type_meta(mut schema: Value) -> Value {
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert("apiVersion".into(), serde_json::json!({ "type": "string" }));
        properties.insert("kind".into(), serde_json::json!({ "type": "string" }));
        properties.insert("metadata".into(), serde_json::json!({ "type": "object" }));
    }
    schema
}

/// `/spec/ports/0/containerPort` → `spec.ports[0].containerPort`.
fn pointer_to_field_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_pointers_become_field_paths() {
        assert_eq!(
            pointer_to_field_path("/spec/ports/0/containerPort"),
            "spec.ports[0].containerPort"
        );
        assert_eq!(pointer_to_field_path(""), "");
        assert_eq!(
            pointer_to_field_path("/spec/labels/a~1b"),
            "spec.labels.a/b"
        );
    }

    #[test]
    fn nullable_admits_null_and_declared_objects_reject_unknown_fields() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": { "a": { "type": "string", "nullable": true } }
        });
        let strict = as_strict_json_schema(&schema);
        assert_eq!(
            strict["properties"]["a"]["type"],
            serde_json::json!(["string", "null"])
        );
        assert_eq!(strict["additionalProperties"], Value::Bool(false));
    }

    #[test]
    fn preserved_objects_keep_unknown_fields() {
        let schema = serde_json::json!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
            "properties": { "a": { "type": "string" } }
        });
        assert!(
            as_strict_json_schema(&schema)
                .get("additionalProperties")
                .is_none()
        );
    }
}
