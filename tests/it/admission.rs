//! Every validation of the CRDs — each CEL rule and the structural checks people trip on —
//! with an object it accepts and one it rejects, evaluated offline from the generated schema.
//! The same cases are applied to a real API server by `tests/it/e2e_kube.rs`.

use crate::common;

use common::cases::{Case, all_cases};
use serde_json::Value;
use stevedore::api::validation::Admission;

fn admission() -> Admission {
    Admission::stevedore().expect("schemas compile")
}

#[test]
fn every_case_accepts_its_valid_object_and_rejects_its_invalid_one() {
    let admission = admission();
    let mut failures = Vec::new();
    for Case {
        name,
        valid,
        invalid,
        field,
        message,
    } in all_cases()
    {
        let errors = admission.validate(&valid);
        if !errors.is_empty() {
            failures.push(format!("{name}: valid object rejected: {errors:?}"));
        }
        let errors = admission.validate(&invalid);
        let named = errors
            .iter()
            .any(|e| e.field == field && e.message.contains(message));
        if !named {
            failures.push(format!(
                "{name}: expected `{field}: …{message}…`, got {errors:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Collects the message of every `x-kubernetes-validations` rule in a schema.
fn rule_messages(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(rules) = map
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
            {
                for rule in rules {
                    let message = rule.get("message").and_then(Value::as_str);
                    out.push(message.expect("every rule has a message").to_string());
                }
            }
            map.values().for_each(|v| rule_messages(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| rule_messages(v, out)),
        _ => {}
    }
}

#[test]
fn every_cel_rule_has_a_case() {
    let cases = all_cases();
    let mut messages = Vec::new();
    for crd in stevedore::api::crds() {
        rule_messages(
            &serde_json::to_value(&crd).expect("crd as JSON"),
            &mut messages,
        );
    }
    assert!(
        messages.len() >= 20,
        "expected the CRDs to carry their rules"
    );
    let uncovered: Vec<_> = messages
        .iter()
        .filter(|m| !cases.iter().any(|c| m.contains(c.message)))
        .collect();
    assert!(
        uncovered.is_empty(),
        "rules without a test case: {uncovered:#?}"
    );
}

#[test]
fn unknown_kinds_and_missing_type_information_are_rejected() {
    let admission = admission();
    let errors = admission.validate(&serde_json::json!({"metadata": {"name": "x"}}));
    assert_eq!(errors[0].message, "apiVersion and kind must be set");
    let errors = admission.validate(&serde_json::json!({
        "apiVersion": "stevedore.dev/v1alpha1", "kind": "DockerVolume", "metadata": {"name": "x"}
    }));
    assert_eq!(errors[0].field, "kind");
}

#[test]
fn rejection_messages_never_echo_the_rejected_value() {
    // A value typed into the wrong field may be a secret; errors name the field, not it.
    let secret = "hunter2-very-secret";
    let object = common::merged(
        &common::cases::container(),
        &serde_json::json!({"spec": {"imagePullPolicy": secret, "ports": [{"containerPort": secret}]}}),
    );
    let errors = admission().validate(&object);
    assert!(errors.len() >= 2, "{errors:?}");
    for error in errors {
        assert!(!error.to_string().contains(secret), "{error}");
    }
}
