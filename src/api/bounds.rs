//! Bounds for the Kubernetes types embedded in Stevedore's schemas (`Condition`,
//! `LabelSelector`), whose generated schemas have none. Without a bound on every list, map
//! and string, the API server's CEL cost estimate assumes each could fill a whole request,
//! and rejects the CRD. Stevedore's own fields carry their bounds on the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use serde_json::{Value, json};

/// Adds bounds to every `Condition` and `LabelSelector` in the CRD's schemas; the values
/// are those of the upstream types' own validation (`metav1.Condition`) or the label rules.
pub fn bound_embedded_types(crd: &mut CustomResourceDefinition) {
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        let Ok(mut value) = serde_json::to_value(&*schema) else {
            continue;
        };
        bound(&mut value);
        if let Ok(bounded) = serde_json::from_value::<JSONSchemaProps>(value) {
            *schema = bounded;
        }
    }
}

fn has_properties(node: &Value, names: &[&str]) -> bool {
    names.iter().all(|n| node["properties"].get(*n).is_some())
}

/// Sets `key` on the schema node at `path` below `node`, when that node exists.
fn set(node: &mut Value, path: &[&str], key: &str, bound: u64) {
    let pointer: String = path.iter().map(|step| format!("/{step}")).collect();
    if let Some(Value::Object(target)) = node.pointer_mut(&pointer) {
        target.insert(key.to_string(), json!(bound));
    }
}

fn bound(node: &mut Value) {
    if has_properties(
        node,
        &["lastTransitionTime", "message", "reason", "status", "type"],
    ) {
        set(node, &["properties", "type"], "maxLength", 316);
        set(node, &["properties", "reason"], "maxLength", 1024);
        set(node, &["properties", "message"], "maxLength", 32768);
        if let Some(Value::Object(status)) = node.pointer_mut("/properties/status") {
            status.insert("enum".into(), json!(["True", "False", "Unknown"]));
        }
    }
    if has_properties(node, &["matchLabels", "matchExpressions"]) {
        set(node, &["properties", "matchLabels"], "maxProperties", 64);
        set(
            node,
            &["properties", "matchLabels", "additionalProperties"],
            "maxLength",
            63,
        );
        set(node, &["properties", "matchExpressions"], "maxItems", 16);
        let expression = ["properties", "matchExpressions", "items", "properties"];
        let at = |rest: &[&'static str]| [&expression[..], rest].concat();
        set(node, &at(&["key"]), "maxLength", 317);
        set(node, &at(&["operator"]), "maxLength", 16);
        set(node, &at(&["values"]), "maxItems", 64);
        set(node, &at(&["values", "items"]), "maxLength", 63);
    }
    if let Some(properties) = node.get_mut("properties").and_then(Value::as_object_mut) {
        properties.values_mut().for_each(bound);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = node.get_mut(key).filter(|c| c.is_object()) {
            bound(child);
        }
    }
}
