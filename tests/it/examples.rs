//! Every manifest under `examples/` parses into the Rust types and passes the same schema and
//! CEL checks the API server applies.

use crate::common;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use serde_json::Value;
use stevedore::api::validation::Admission;
use stevedore::api::{DockerContainer, DockerTarget, Registry};

fn parse<T: serde::de::DeserializeOwned>(file: &std::path::Path, doc: &Value) -> T {
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

#[test]
fn every_example_parses_and_validates() {
    let admission = Admission::stevedore().expect("schemas compile");
    let documents = common::yaml_documents_under(&common::repo_root().join("examples"));
    assert!(!documents.is_empty(), "no examples found");
    let mut kinds = Vec::new();
    let mut endpoints = Vec::new();
    for (file, doc) in &documents {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "DockerTarget" => {
                let target: DockerTarget = parse(file, doc);
                endpoints.push(target.spec.endpoint.clone());
            }
            "Registry" => {
                parse::<Registry>(file, doc);
            }
            "DockerContainer" => {
                parse::<DockerContainer>(file, doc);
            }
            "Secret" => {
                parse::<Secret>(file, doc);
            }
            "ConfigMap" => {
                parse::<ConfigMap>(file, doc);
            }
            // GitOps wiring (Flux, Argo CD, kustomize) around the manifests.
            "GitRepository" | "HelmRelease" | "Kustomization" | "Application"
                if file.components().any(|c| c.as_os_str() == "gitops") =>
            {
                assert!(doc["metadata"]["name"].is_string() || kind == "Kustomization");
            }
            other => panic!("{}: unexpected kind {other:?}", file.display()),
        }
        if admission.knows(doc["apiVersion"].as_str().unwrap_or_default(), &kind) {
            let errors = admission.validate(doc);
            assert!(
                errors.is_empty(),
                "{}: {kind} rejected: {errors:?}",
                file.display()
            );
        }
        kinds.push(kind);
    }
    for kind in [
        "DockerTarget",
        "Registry",
        "DockerContainer",
        "Secret",
        "ConfigMap",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no example of {kind}");
    }
    for scheme in ["unix://", "https://", "ssh://"] {
        assert!(
            endpoints.iter().any(|e| e.starts_with(scheme)),
            "no example target with a {scheme} endpoint"
        );
    }
}

#[test]
fn typed_examples_round_trip_without_losing_fields() {
    // What a user writes must survive parsing into the types and back: a field the types
    // dropped would silently vanish from a controller's view of the object.
    for (file, doc) in common::yaml_documents_under(&common::repo_root().join("examples")) {
        let back = match doc["kind"].as_str() {
            Some("DockerTarget") => serde_json::to_value(parse::<DockerTarget>(&file, &doc)),
            Some("Registry") => serde_json::to_value(parse::<Registry>(&file, &doc)),
            Some("DockerContainer") => serde_json::to_value(parse::<DockerContainer>(&file, &doc)),
            _ => continue,
        }
        .expect("serialize");
        assert_subset(
            &doc["spec"],
            &back["spec"],
            &format!("{}: spec", file.display()),
        );
    }
}

/// Every value in `written` appears, equal, in `parsed` (which may add defaults).
fn assert_subset(written: &Value, parsed: &Value, path: &str) {
    match (written, parsed) {
        (Value::Object(w), Value::Object(p)) => {
            for (key, value) in w {
                let other = p
                    .get(key)
                    .unwrap_or_else(|| panic!("{path}.{key} was dropped"));
                assert_subset(value, other, &format!("{path}.{key}"));
            }
        }
        (Value::Array(w), Value::Array(p)) => {
            assert_eq!(w.len(), p.len(), "{path}: list length changed");
            for (i, (a, b)) in w.iter().zip(p).enumerate() {
                assert_subset(a, b, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(written, parsed, "{path} changed"),
    }
}
