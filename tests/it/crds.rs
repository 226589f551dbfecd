//! The committed `crds/` is exactly what the types generate, and every schema is one the
//! API server accepts as structural.

use crate::common;

use serde_json::Value;
use stevedore::crd;

#[test]
fn committed_crds_equal_the_generated_ones() {
    for doc in crd::documents().expect("render CRDs") {
        let path = common::repo_root().join("crds").join(&doc.file_name);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run `cargo run -- crds --output-dir crds`",
                path.display()
            )
        });
        assert!(
            committed == doc.yaml,
            "{} differs from the types; run `cargo run -- crds --output-dir crds`",
            path.display()
        );
    }
}

#[test]
fn crds_subcommand_prints_the_committed_files_as_one_stream() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stevedore"))
        .arg("crds")
        .output()
        .expect("run stevedore crds");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let committed: String = crd::documents()
        .expect("render CRDs")
        .iter()
        .map(|doc| {
            let text =
                std::fs::read_to_string(common::repo_root().join("crds").join(&doc.file_name))
                    .expect("read committed CRD");
            format!("---\n{text}")
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&output.stdout), committed);
}

#[test]
fn text_logs_written_to_a_file_carry_no_colour_codes() {
    // No cluster to reach: the controller logs why and stops, into a pipe, not a terminal.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stevedore"))
        .args(["controller", "--log-format", "text", "--leader-elect=false"])
        .args(["--metrics-address", "127.0.0.1:0"])
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run stevedore controller");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("controller stopped"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log file: {stderr:?}"
    );
}

#[test]
fn version_flag_prints_the_crate_version() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stevedore"))
        .arg("--version")
        .output()
        .expect("run stevedore --version");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("stevedore {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn every_crd_is_namespaced_with_status_columns_short_names_and_category() {
    let expected = [
        ("DockerTarget", "dt"),
        ("Registry", "reg"),
        ("DockerContainer", "dc"),
    ];
    let crds = stevedore::api::crds();
    assert_eq!(crds.len(), expected.len());
    for (crd, (kind, short)) in crds.iter().zip(expected) {
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.group, "stevedore.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["stevedore".to_string()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind} has no status subresource"
        );
        let columns = version
            .additional_printer_columns
            .as_deref()
            .unwrap_or_default();
        assert!(
            columns.iter().any(|c| c.name == "Age"),
            "{kind} lacks an Age column"
        );
        assert!(columns.len() >= 4, "{kind} has too few printer columns");
    }
}

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("openAPIV3Schema");
    serde_json::to_value(schema).expect("schema as JSON")
}

/// Walks every schema node, calling `visit(path, node)`.
fn walk(path: &str, node: &Value, visit: &mut dyn FnMut(&str, &Value)) {
    visit(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(&format!("{path}.{name}"), child, visit);
        }
    }
    if let Some(items) = node.get("items") {
        walk(&format!("{path}[]"), items, visit);
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(&format!("{path}{{}}"), values, visit);
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        for (i, child) in node
            .get(junctor)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            walk(&format!("{path}/{junctor}[{i}]"), child, visit);
        }
    }
}

#[test]
fn every_schema_is_structural() {
    for crd in stevedore::api::crds() {
        let kind = crd.spec.names.kind.clone();
        let mut problems = Vec::new();
        walk(&kind, &schema_of(&crd), &mut |path, node| {
            let in_junctor =
                path.contains("/allOf[") || path.contains("/anyOf[") || path.contains("/oneOf[");
            let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
            if !in_junctor && !int_or_string && node.get("type").is_none() {
                problems.push(format!("{path}: no type"));
            }
            if node.get("properties").is_some() && node.get("additionalProperties").is_some() {
                problems.push(format!("{path}: both properties and additionalProperties"));
            }
            if node.get("x-kubernetes-preserve-unknown-fields").is_some() {
                problems.push(format!(
                    "{path}: preserves unknown fields, which no Stevedore field means to"
                ));
            }
            if node.get("type") == Some(&Value::String("array".into()))
                && node.get("items").is_none()
            {
                problems.push(format!("{path}: array without items"));
            }
            for forbidden in ["$ref", "definitions", "$defs", "$schema"] {
                if node.get(forbidden).is_some() {
                    problems.push(format!("{path}: uses {forbidden}"));
                }
            }
            if in_junctor {
                for forbidden in [
                    "type",
                    "description",
                    "default",
                    "nullable",
                    "additionalProperties",
                ] {
                    if node.get(forbidden).is_some() {
                        problems.push(format!("{path}: {forbidden} inside a logical junctor"));
                    }
                }
            }
            // Properties explain themselves; list items and map values share their field's text.
            let is_property = path != kind && !path.ends_with("[]") && !path.ends_with("{}");
            if is_property && !in_junctor && node.get("description").is_none() {
                problems.push(format!(
                    "{path}: no description (kubectl explain shows nothing)"
                ));
            }
        });
        assert!(
            problems.is_empty(),
            "{kind} is not structural:\n{}",
            problems.join("\n")
        );
    }
}

#[test]
fn every_default_satisfies_its_own_field() {
    // The API server rejects a CRD whose defaults do not validate; check each default is
    // of the field's type and within its enum.
    for crd in stevedore::api::crds() {
        let kind = crd.spec.names.kind.clone();
        walk(&kind, &schema_of(&crd), &mut |path, node| {
            let Some(default) = node.get("default") else {
                return;
            };
            let type_ok = match node.get("type").and_then(Value::as_str) {
                Some("string") => default.is_string(),
                Some("integer") => default.is_i64(),
                Some("boolean") => default.is_boolean(),
                Some("object") => default.is_object(),
                Some("array") => default.is_array(),
                _ => true,
            };
            assert!(
                type_ok,
                "{path}: default {default} is not of the field's type"
            );
            if let Some(values) = node.get("enum").and_then(Value::as_array) {
                assert!(
                    values.contains(default),
                    "{path}: default {default} not in its enum"
                );
            }
        });
    }
}

#[test]
fn the_committed_api_reference_is_the_generated_one() {
    let committed = std::fs::read_to_string(common::repo_root().join("docs/api-reference.md"))
        .expect("docs/api-reference.md");
    assert!(
        committed == stevedore::reference::markdown(),
        "docs/api-reference.md is stale: run `stevedore api-reference > docs/api-reference.md`"
    );
    // Every field of every kind is in it.
    for field in [
        "spec.imagePullPolicy",
        "spec.placement.targetSelector",
        "status.instances[].containerName",
        "spec.catalog.maxTagsPerRepository",
    ] {
        assert!(committed.contains(&format!("`{field}`")), "{field} missing");
    }
}
