//! The API reference, generated from the CRDs' own schemas: every field with its type,
//! default and description (what `kubectl explain` shows), and every validation rule.
//! `docs/api-reference.md` is its output; a test keeps the two equal.

use std::fmt::Write as _;

use serde_json::Value;

/// The reference for every kind, as Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# API reference: `stevedore.dev/v1alpha1`\n\n\
         Generated from the CRD schemas by `stevedore api-reference`; do not edit by hand.\n\n\
         Every list, map and string is bounded (`≤ N` items, entries or chars), so the \
         API server can bound the cost of the validation rules; the bounds are far above what \
         a real object holds.\n",
    );
    for crd in crate::api::crds() {
        let kind = &crd.spec.names.kind;
        let short = crd.spec.names.short_names.clone().unwrap_or_default();
        let Some(version) = crd.spec.versions.first() else {
            continue;
        };
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or_default();
        let _ = write!(out, "\n## {kind}");
        if !short.is_empty() {
            let _ = write!(out, " (`{}`)", short.join("`, `"));
        }
        out.push_str("\n\n");
        if let Some(description) = schema["description"].as_str() {
            let _ = writeln!(out, "{}\n", one_line(description));
        }
        for part in ["spec", "status"] {
            let Some(section) = schema["properties"].get(part) else {
                continue;
            };
            let _ = writeln!(out, "### {kind} `.{part}`\n");
            out.push_str("| field | type | default | description |\n| --- | --- | --- | --- |\n");
            let mut rules = Vec::new();
            walk(section, part, &mut out, &mut rules);
            if !rules.is_empty() {
                let _ = writeln!(out, "\nRules the API server enforces on `.{part}`:\n");
                for (path, message) in rules {
                    let _ = writeln!(out, "- `{path}`: {message}");
                }
            }
            out.push('\n');
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// The field's type with its bound: `string, ≤ 253 chars`, `[]object, ≤ 128 items`,
/// `map[string]string, ≤ 4096 chars, ≤ 64 entries`.
fn type_of(schema: &Value) -> String {
    let bound = [
        ("maxLength", "chars"),
        ("maxItems", "items"),
        ("maxProperties", "entries"),
    ]
    .iter()
    .find_map(|(key, unit)| schema[*key].as_u64().map(|max| (max, unit)));
    let base = unbounded_type_of(schema);
    match bound {
        Some((max, unit)) => format!("{base}, ≤ {max} {unit}"),
        None => base,
    }
}

fn unbounded_type_of(schema: &Value) -> String {
    let base = schema["type"].as_str().unwrap_or("object");
    match base {
        "object" if schema["additionalProperties"].is_object() => {
            format!("map[string]{}", type_of(&schema["additionalProperties"]))
        }
        "array" => format!("[]{}", type_of(&schema["items"])),
        "string" => match schema["enum"].as_array() {
            Some(values) => values
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" \\| "),
            None => "string".into(),
        },
        other => other.into(),
    }
}

fn walk(schema: &Value, path: &str, out: &mut String, rules: &mut Vec<(String, String)>) {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(message) = rule["message"].as_str() {
            rules.push((path.to_string(), one_line(message)));
        }
    }
    let properties = schema["properties"]
        .as_object()
        .or_else(|| schema["items"]["properties"].as_object());
    let Some(properties) = properties else {
        return;
    };
    for (name, property) in properties {
        let child = if schema["items"].is_object() {
            format!("{path}[].{name}")
        } else {
            format!("{path}.{name}")
        };
        let default = match property.get("default") {
            Some(value) => format!("`{value}`"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "| `{child}` | {} | {default} | {} |",
            type_of(property),
            one_line(property["description"].as_str().unwrap_or_default())
        );
        walk(property, &child, out, rules);
    }
}
