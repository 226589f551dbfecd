//! End-to-end checks against a real Kubernetes API server: the CRDs install, every example
//! is accepted, and every invalid case is rejected by the server itself with a message that
//! names the field.
//!
//! Gated on `STEVEDORE_E2E_KUBECONFIG` (a kubeconfig path for a disposable cluster, e.g.
//! kind or k3d). `cargo test` lists these tests as ignored, with the reason; run them with
//! `STEVEDORE_E2E_KUBECONFIG=~/.kube/config cargo test --test it -- --ignored --test-threads=1 e2e_kube`.
//! Asked to run without the variable, each fails. The tests apply the
//! CRDs cluster-wide and work in a fresh namespace they delete afterwards.

use crate::common;

use common::cluster::{FIELD_MANAGER, delete_namespace, fresh_namespace, install_crds};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

/// A client for the test cluster; fails `test` when there is none.
async fn cluster(test: &str) -> Client {
    common::cluster::connect(test).await.0
}

/// Server-side applies one object (with strict field validation) into `namespace`, as
/// `kubectl apply -n` does with a manifest that names no namespace (the fixtures name
/// `default`; the API server refuses a body whose namespace differs from the request's).
async fn apply(client: &Client, namespace: &str, object: &Value) -> Result<(), kube::Error> {
    let mut object = object.clone();
    object["metadata"]["namespace"] = json!(namespace);
    let object = &object;
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, _) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).validation_strict();
    api.patch(name, &params, &Patch::Apply(object))
        .await
        .map(|_| ())
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn crds_install_and_every_example_is_accepted() {
    let client = cluster("crds_install_and_every_example_is_accepted").await;
    install_crds(&client).await;
    let namespace = fresh_namespace(&client).await;
    let mut refused = Vec::new();
    for (file, doc) in common::yaml_documents_under(&common::repo_root().join("examples")) {
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        // GitOps wiring needs Flux or Argo CD installed; the kinds themselves are checked.
        if !(api_version == "v1" || api_version.starts_with("stevedore.dev/")) {
            continue;
        }
        // The Argo CD health ConfigMap belongs to the argocd namespace.
        if doc["metadata"]["namespace"].is_string() {
            continue;
        }
        if let Err(e) = apply(&client, &namespace, &doc).await {
            refused.push(format!("{}: {e}", file.display()));
        }
    }
    delete_namespace(&client, &namespace).await;
    assert!(
        refused.is_empty(),
        "examples refused:\n{}",
        refused.join("\n")
    );
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn every_invalid_case_is_rejected_by_the_api_server_naming_the_field() {
    let client = cluster("every_invalid_case_is_rejected_by_the_api_server_naming_the_field").await;
    install_crds(&client).await;
    let namespace = fresh_namespace(&client).await;
    let mut rule_messages = String::new();
    for crd in stevedore::api::crds() {
        rule_messages.push_str(&serde_json::to_string(&crd).expect("crd"));
    }
    let mut failures = Vec::new();
    for (i, case) in common::cases::all_cases().into_iter().enumerate() {
        // Each object new, as a user's first apply is: applied over an earlier version of
        // itself, server-side apply's field ownership could change what the server sees.
        let (mut valid, mut invalid) = (case.valid.clone(), case.invalid.clone());
        valid["metadata"]["name"] = json!(format!("valid-{i}"));
        invalid["metadata"]["name"] = json!(format!("invalid-{i}"));
        if let Err(e) = apply(&client, &namespace, &valid).await {
            failures.push(format!("{}: valid object refused: {e}", case.name));
        }
        match apply(&client, &namespace, &invalid).await {
            Ok(()) => failures.push(format!("{}: invalid object accepted", case.name)),
            Err(e) => {
                let text = e.to_string();
                // The server words structural errors its own way; CEL messages are ours.
                let is_cel_rule = rule_messages.contains(case.message);
                if !text.contains(case.field) || (is_cel_rule && !text.contains(case.message)) {
                    failures.push(format!(
                        "{}: expected {} / {}, got {text}",
                        case.name, case.field, case.message
                    ));
                }
            }
        }
    }
    delete_namespace(&client, &namespace).await;
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
#[ignore = "needs a Kubernetes API server: set STEVEDORE_E2E_KUBECONFIG and pass --ignored"]
async fn the_chart_installs_and_its_crds_and_rbac_are_accepted() {
    let client = cluster("the_chart_installs_and_its_crds_and_rbac_are_accepted").await;
    install_crds(&client).await;
    let namespace = fresh_namespace(&client).await;
    // One namespace keeps the test's RBAC inside what it deletes afterwards.
    let rendered = common::chart::render_in(json!({"watchNamespace": namespace}), &namespace)
        .expect("chart renders");
    let mut refused = Vec::new();
    let mut kinds = Vec::new();
    for object in common::chart::objects(&rendered) {
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        if kind == "ServiceMonitor" {
            continue;
        }
        if let Err(e) = apply(&client, &namespace, &object).await {
            refused.push(format!("{kind}: {e}"));
        }
        kinds.push(kind);
    }
    delete_namespace(&client, &namespace).await;
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
    for kind in [
        "Deployment",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "Service",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} not rendered");
    }
}
