//! The CRDs are ones a real API server accepts: every CEL rule fits the budget the API
//! server computes when the CRD is applied, every list, map and string has a bound, and every
//! CEL function exists in the oldest Kubernetes Stevedore supports.

mod estimator;

use serde_json::{Value, json};

use estimator::{CRD_LIMIT, RULE_LIMIT, rule_costs};

fn schemas() -> Vec<(String, Value)> {
    stevedore::api::crds()
        .iter()
        .map(|crd| {
            let schema = crd.spec.versions[0]
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .map(|s| serde_json::to_value(s).unwrap_or_default())
                .unwrap_or_default();
            (crd.spec.names.kind.clone(), schema)
        })
        .collect()
}

#[test]
fn every_rule_fits_the_api_servers_cost_budget() {
    let mut over = Vec::new();
    for (kind, schema) in schemas() {
        let costs = rule_costs(&schema).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let total: u64 = costs.iter().map(|c| c.total()).sum();
        for cost in &costs {
            println!(
                "{kind} {}: {} × {} = {}  `{}`",
                cost.path,
                cost.per_call,
                cost.cardinality,
                cost.total(),
                cost.rule
            );
            if cost.total() > RULE_LIMIT {
                over.push(format!(
                    "{kind} {}: `{}` costs {} (limit {RULE_LIMIT})",
                    cost.path,
                    cost.rule,
                    cost.total()
                ));
            }
        }
        println!("{kind}: total {total} of {CRD_LIMIT}");
        if total > CRD_LIMIT {
            over.push(format!(
                "{kind}: all rules cost {total} (limit {CRD_LIMIT})"
            ));
        }
    }
    assert!(
        over.is_empty(),
        "over the API server's budget:\n{}",
        over.join("\n")
    );
}

/// Walks every schema node, calling `visit(path, node)`.
fn walk(path: &str, node: &Value, visit: &mut dyn FnMut(&str, &Value)) {
    visit(path, node);
    for (name, child) in node["properties"].as_object().into_iter().flatten() {
        walk(&format!("{path}.{name}"), child, visit);
    }
    if node["items"].is_object() {
        walk(&format!("{path}[]"), &node["items"], visit);
    }
    if node["additionalProperties"].is_object() {
        walk(&format!("{path}{{}}"), &node["additionalProperties"], visit);
    }
}

#[test]
fn every_list_map_and_string_has_a_bound() {
    let mut unbounded = Vec::new();
    for (kind, schema) in schemas() {
        for part in ["spec", "status"] {
            walk(part, &schema["properties"][part], &mut |path, node| {
                let bounded = match node["type"].as_str() {
                    Some("array") => node["maxItems"].is_u64(),
                    Some("object") if node["additionalProperties"].is_object() => {
                        node["maxProperties"].is_u64()
                    }
                    // An enum or a timestamp is bounded by what it may hold.
                    Some("string") => {
                        node["maxLength"].is_u64()
                            || node["enum"].is_array()
                            || node["format"] == "date-time"
                    }
                    _ => true,
                };
                if !bounded {
                    unbounded.push(format!("{kind} {path}"));
                }
            });
        }
    }
    assert!(
        unbounded.is_empty(),
        "without maxItems / maxProperties / maxLength:\n{}",
        unbounded.join("\n")
    );
}

#[test]
fn every_cel_function_exists_in_the_oldest_supported_kubernetes() {
    let (major, minor) = stevedore::api::MIN_KUBERNETES;
    let mut problems = Vec::new();
    for (kind, schema) in schemas() {
        walk("", &schema, &mut |path, node| {
            for rule in node["x-kubernetes-validations"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let text = rule["rule"].as_str().unwrap_or_default();
                let functions =
                    estimator::functions(text).unwrap_or_else(|e| panic!("{kind} {path}: {e}"));
                for function in functions {
                    match estimator::first_version_accepting(&function) {
                        Some(first) if first <= (major, minor) => {}
                        Some((a, b)) => problems.push(format!(
                            "{kind} {path}: {function} needs Kubernetes {a}.{b}, \
                             older than the supported {major}.{minor}"
                        )),
                        None => problems.push(format!(
                            "{kind} {path}: {function} is not in the table of CEL functions \
                             by Kubernetes version"
                        )),
                    }
                }
            }
        });
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Rule costs that the real API server's estimator (Kubernetes 1.32, `cel.Compile` with the
/// CRD validation's cardinality) gave for these schemas; the estimator here must agree.
#[test]
fn the_estimator_agrees_with_the_api_server() {
    let string = |max: Option<u64>| match max {
        Some(max) => json!({"type": "string", "maxLength": max}),
        None => json!({"type": "string"}),
    };
    let cases: Vec<(Value, u64)> = vec![
        // isIP on an unbounded string in an unbounded list: the rejected hostIP rule.
        (
            json!({"type": "object", "properties": {"ports": {"type": "array",
                "items": {"type": "object", "properties": {"hostIP": {"type": "string",
                    "x-kubernetes-validations": [{"rule": "isIP(self)"}]}}}}}}),
            329_854_746_624,
        ),
        // The same, bounded.
        (
            json!({"type": "object", "properties": {"ports": {"type": "array", "maxItems": 64,
                "items": {"type": "object", "properties": {"hostIP": {"type": "string",
                    "maxLength": 45, "x-kubernetes-validations": [{"rule": "isIP(self)"}]}}}}}}),
            1216,
        ),
        // A comprehension over a bounded map.
        (
            json!({"type": "object", "x-kubernetes-validations": [{"rule":
                "!has(self.labels) || self.labels.all(k, !k.startsWith('stevedore.dev/'))"}],
                "properties": {"labels": {"type": "object", "maxProperties": 64,
                    "additionalProperties": string(Some(1024))}}}),
            453,
        ),
        // A regular expression on a bounded string.
        (
            json!({"type": "object", "properties": {"image": {"type": "string", "maxLength": 512,
                "x-kubernetes-validations": [{"rule": "self.matches('^[A-Za-z0-9][A-Za-z0-9._/:@-]*$')"}]}}}),
            1641,
        ),
        // Quantities.
        (
            json!({"type": "object", "properties": {"cpus": {"type": "string", "maxLength": 32,
                "x-kubernetes-validations": [{"rule": "isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))"}]}}}),
            30,
        ),
        // Presence, equality and `in` on an object.
        (
            json!({"type": "object", "properties": {"mode": string(Some(255)),
                "aliases": {"type": "array", "maxItems": 32, "items": string(Some(253))}},
                "x-kubernetes-validations": [{"rule":
                "!has(self.aliases) || size(self.aliases) == 0 || !(self.mode in ['bridge', 'host', 'none'])"}]}),
            22,
        ),
        // A comprehension over an unbounded map: the map is sized from the request limit.
        (
            json!({"type": "object", "x-kubernetes-validations": [{"rule":
                "!has(self.labels) || self.labels.all(k, !k.startsWith('stevedore.dev/'))"}],
                "properties": {"labels": {"type": "object", "additionalProperties": string(None)}}}),
            2_752_510,
        ),
        // An unbounded list whose items have a required field: the cardinality comes from
        // the items' smallest serialized size.
        (
            json!({"type": "object", "properties": {"env": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": string(Some(256)), "value": string(None)},
                "x-kubernetes-validations": [{"rule": "has(self.value) != has(self.name)"}]}}}}),
            725_937,
        ),
    ];
    for (schema, expected) in cases {
        let costs = rule_costs(&json!({"type": "object", "properties": {"spec": schema}}))
            .unwrap_or_else(|e| panic!("{e}"));
        let total: u64 = costs.iter().map(|c| c.total()).sum();
        assert_eq!(total, expected, "{costs:#?}");
    }
}
