//! The Helm chart, linted and rendered by the real Helm engine (`hack/helm-render.py`, through
//! PyPI's `helm-python-sdk`): default and non-default values, rejected values, RBAC equal to
//! what the controller calls, CRDs equal to `crds/`, versions equal to the crate's.

use crate::common;

use common::chart::{objects, render};

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde_json::{Value, json};
use stevedore::controller::rbac;

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn typed<T: serde::de::DeserializeOwned>(object: &Value) -> T {
    serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", object["kind"]))
}

/// Parses each rendered object into its Kubernetes type (a wrong field type fails).
fn parse_all(objects: &[Value]) {
    for object in objects {
        match object["kind"].as_str().unwrap_or_default() {
            "Deployment" => drop(typed::<Deployment>(object)),
            "Service" => drop(typed::<Service>(object)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(object)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(object)),
            "ClusterRole" => drop(typed::<ClusterRole>(object)),
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(object)),
            "Role" => drop(typed::<Role>(object)),
            "RoleBinding" => drop(typed::<RoleBinding>(object)),
            "ServiceMonitor" => {
                assert_eq!(object["apiVersion"], "monitoring.coreos.com/v1");
                assert!(object["spec"]["endpoints"].is_array());
            }
            other => panic!("unexpected kind {other}"),
        }
    }
}

fn lint_is_clean(rendered: &Value) {
    let lint = &rendered["lint"];
    assert_eq!(lint["errors"], json!([]), "{lint}");
    for message in lint["messages"].as_array().into_iter().flatten() {
        assert!(
            message["severity"].as_i64().unwrap_or(3) < 2,
            "lint: {message}"
        );
    }
}

fn controller_args(objects: &[Value]) -> Vec<String> {
    let deployment: Deployment = typed(of_kind(objects, "Deployment")[0]);
    deployment
        .spec
        .template
        .spec
        .map(|p| p.containers[0].args.clone().unwrap_or_default())
        .unwrap_or_default()
}

/// (group, resource, verb) of every rule in the rendered Roles and ClusterRoles.
fn granted(objects: &[Value]) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for object in of_kind(objects, "ClusterRole")
        .into_iter()
        .chain(of_kind(objects, "Role"))
    {
        let rules: Vec<PolicyRule> =
            serde_json::from_value(object["rules"].clone()).expect("rules");
        for rule in rules {
            for group in rule.api_groups.unwrap_or_default() {
                for resource in rule.resources.clone().unwrap_or_default() {
                    for verb in &rule.verbs {
                        granted.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    granted
}

#[test]
fn default_values_lint_clean_and_render_a_safe_two_replica_controller() {
    let rendered = render(json!({})).expect("default values render");
    lint_is_clean(&rendered);
    let objects = objects(&rendered);
    parse_all(&objects);
    let deployment = of_kind(&objects, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = controller_args(&objects);
    assert!(
        args.contains(&"--leader-elect=true".to_string()),
        "{args:?}"
    );
    assert!(!args.iter().any(|a| a.starts_with("--namespace")));
    assert!(
        args.contains(&"--shutdown-grace-period=25s".to_string()),
        "{args:?}"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    let pod = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod["runAsNonRoot"], true);
    assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault");
    assert!(container["resources"]["requests"].is_object());
    assert_eq!(of_kind(&objects, "PodDisruptionBudget").len(), 1);
    assert_eq!(of_kind(&objects, "ClusterRole").len(), 1);
    assert_eq!(of_kind(&objects, "ServiceMonitor").len(), 0);
    assert_eq!(of_kind(&objects, "Service").len(), 1);
    let notes = rendered["manifests"]["stevedore/templates/NOTES.txt"]
        .as_str()
        .unwrap_or_default();
    assert!(
        notes.contains("kind: DockerTarget"),
        "NOTES tell the next step"
    );
}

#[test]
fn one_namespace_one_replica_with_a_service_monitor() {
    let rendered = render(json!({
        "watchNamespace": "edge",
        "replicaCount": 1,
        "leaderElection": {"enabled": false},
        "serviceMonitor": {"enabled": true, "labels": {"release": "prom"}},
        "controller": {"maxConcurrentReconciles": 4, "terminationGracePeriodSeconds": 90},
    }))
    .expect("non-default values render");
    lint_is_clean(&rendered);
    let objects = objects(&rendered);
    parse_all(&objects);
    let args = controller_args(&objects);
    assert!(args.contains(&"--namespace=edge".to_string()), "{args:?}");
    assert!(
        args.contains(&"--max-concurrent-reconciles=4".to_string()),
        "{args:?}"
    );
    assert_eq!(
        of_kind(&objects, "Deployment")[0]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        90
    );
    // The controller drains within the pod's grace period, keeping 5 s to give its lease up.
    assert!(
        args.contains(&"--shutdown-grace-period=85s".to_string()),
        "{args:?}"
    );
    assert!(
        args.contains(&"--leader-elect=false".to_string()),
        "{args:?}"
    );
    assert!(
        of_kind(&objects, "ClusterRole").is_empty(),
        "nothing cluster-wide"
    );
    let roles = of_kind(&objects, "Role");
    assert_eq!(
        roles.len(),
        1,
        "no leader election Role without leader election"
    );
    assert_eq!(roles[0]["metadata"]["namespace"], "edge");
    assert_eq!(of_kind(&objects, "ServiceMonitor").len(), 1);
    assert!(of_kind(&objects, "PodDisruptionBudget").is_empty());
}

#[test]
fn sharded_replicas_all_act_and_may_use_the_shard_leases_only() {
    let objects = objects(
        &render(
            json!({"replicaCount": 3, "leaderElection": {"enabled": false},
                       "sharding": {"shards": 12}}),
        )
        .expect("a sharded controller renders"),
    );
    let args = controller_args(&objects);
    assert!(args.contains(&"--shards=12".to_string()), "{args:?}");
    assert!(
        !args.iter().any(|a| a.starts_with("--leader-elect")),
        "shards replace the election: {args:?}"
    );
    assert_eq!(granted(&objects), rbac::grants_sharded());
    let role = of_kind(&objects, "Role")[0].to_string();
    assert!(
        role.contains("delete") && !role.contains("\"get\""),
        "{role}"
    );
}

#[test]
fn bad_values_are_refused_naming_the_value() {
    for (values, names) in [
        (json!({"replicaCount": 0}), "replicaCount"),
        (
            json!({"replicaCount": 3, "leaderElection": {"enabled": false}}),
            "enabled",
        ),
        (json!({"controller": {"logFormat": "xml"}}), "logFormat"),
        (
            json!({"watchNamespace": "Not_A_Namespace"}),
            "watchNamespace",
        ),
        (json!({"replicas": 2}), "replicas"),
        (json!({"sharding": {"shards": -1}}), "shards"),
    ] {
        match render(values.clone()) {
            Ok(_) => panic!("{values} was accepted"),
            Err(message) => assert!(message.contains(names), "{values}: {message}"),
        }
    }
}

#[test]
fn the_chart_grants_exactly_what_the_controller_calls() {
    let objects = objects(&render(json!({})).expect("render"));
    let wanted: BTreeSet<(String, String, String)> = rbac::grants();
    let granted = granted(&objects);
    assert_eq!(granted, wanted);
    assert!(
        !granted
            .iter()
            .any(|(g, r, v)| g == "*" || r.contains('*') || v == "*")
    );
    // Leases only in the release namespace, never cluster-wide.
    let cluster_role = of_kind(&objects, "ClusterRole")[0].to_string();
    assert!(!cluster_role.contains("leases"));
}

#[test]
fn the_chart_ships_the_crds_and_follows_the_crate_version() {
    let rendered = render(json!({})).expect("render");
    let crds = rendered["crds"].as_array().expect("crds");
    let committed = std::fs::read_dir(common::repo_root().join("crds")).expect("crds/");
    let mut names = Vec::new();
    for entry in committed {
        let path = entry.expect("entry").path();
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let ours = std::fs::read(&path).expect("crd");
        let shipped = crds
            .iter()
            .find(|c| c["filename"].as_str().is_some_and(|f| f.ends_with(&file)))
            .unwrap_or_else(|| panic!("charts/stevedore/crds lacks {file}"));
        let data = shipped["data"].as_str().unwrap_or_default();
        // The SDK hands file data over base64-encoded.
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap_or_else(|_| data.as_bytes().to_vec());
        assert!(
            bytes == ours,
            "charts/stevedore/crds/{file} differs from crds/{file}: cp crds/*.yaml charts/stevedore/crds/"
        );
        names.push(file);
    }
    assert_eq!(crds.len(), names.len(), "the chart ships exactly crds/");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(rendered["chart"]["version"], version, "Chart.yaml version");
    assert_eq!(
        rendered["chart"]["appVersion"], version,
        "Chart.yaml appVersion"
    );
}
