//! Rendering the Helm chart with the real Helm engine (`hack/helm-render.py`).

use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

fn chart_dir() -> std::path::PathBuf {
    super::repo_root().join("charts/stevedore")
}

/// Renders the chart with `values`; `Err` carries Helm's message when it refuses them.
pub fn render(values: Value) -> Result<Value, String> {
    render_in(values, "stevedore-system")
}

/// Renders the chart as a release in `namespace`.
pub fn render_in(values: Value, namespace: &str) -> Result<Value, String> {
    let output = Command::new("python3")
        .arg(super::repo_root().join("hack/helm-render.py"))
        .arg(chart_dir())
        .arg(values.to_string())
        .arg(namespace)
        .output()
        .expect("run python3 hack/helm-render.py");
    let result: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "helm-render.py printed no JSON ({e}); stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert_ne!(
        output.status.code(),
        Some(3),
        "{}",
        result["error"].as_str().unwrap_or_default()
    );
    match result.get("error") {
        Some(error) => Err(error.as_str().unwrap_or_default().to_string()),
        None => Ok(result),
    }
}

/// Every rendered Kubernetes object (NOTES.txt aside), as JSON.
pub fn objects(rendered: &Value) -> Vec<Value> {
    let mut objects = Vec::new();
    for (template, text) in rendered["manifests"].as_object().expect("manifests") {
        if template.ends_with("NOTES.txt") {
            continue;
        }
        for document in serde_yaml_ng::Deserializer::from_str(text.as_str().unwrap_or_default()) {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{template} is not YAML: {e}"));
            if value.is_null() {
                continue;
            }
            for field in ["apiVersion", "kind"] {
                assert!(value[field].is_string(), "{template}: no {field}: {value}");
            }
            assert!(
                value["metadata"]["name"].is_string(),
                "{template}: no metadata.name"
            );
            objects.push(value);
        }
    }
    objects
}
