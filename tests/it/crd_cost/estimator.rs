//! The static cost of a CRD's CEL rules, estimated the way kube-apiserver estimates it when
//! the CRD is created or updated (`apiextensions-apiserver`'s validation, cel-go's checker
//! cost model, the Kubernetes CEL library's call costs).
//!
//! ```text
//!   rule ──parse──> AST ──cost (sizes from the schema: maxLength × 4, maxItems, …)──> max cost
//!   schema ancestors ──maxItems × maxProperties (or 3 MiB / min size)──> cardinality
//!   rule cost = max cost × cardinality      ≤ 10,000,000 each, ≤ 100,000,000 per CRD
//! ```
//! Only the functions Stevedore's rules use are modelled; any other makes the estimate fail,
//! so a new rule cannot slip past unestimated. The numbers were checked against the real API
//! server's estimator (see `tests/it/crd_cost/`).

use cel::common::ast::{ComprehensionExpr, Expr, IdedExpr, LiteralValue};
use serde_json::Value;

/// `MaxRequestSizeBytes`: the largest object the API server accepts.
const MAX_REQUEST_SIZE: u64 = 3 * 1024 * 1024;
/// `StaticEstimatedCostLimit`: the most one rule may cost, cardinality included.
pub const RULE_LIMIT: u64 = 10_000_000;
/// `StaticEstimatedCRDCostLimit`: the most all rules of a CRD may cost together.
pub const CRD_LIMIT: u64 = 100_000_000;
/// cel-go's `StringTraversalCostFactor`.
const STRING_TRAVERSAL: f64 = 0.1;
/// cel-go's `RegexStringLengthCostFactor`.
const REGEX_LENGTH: f64 = 0.25;

/// One rule's estimate.
#[derive(Debug)]
pub struct RuleCost {
    /// Where the rule sits, e.g. `spec.ports[]`.
    pub path: String,
    /// The rule's text.
    pub rule: String,
    /// cel-go's `MaxCost` for one evaluation.
    pub per_call: u64,
    /// How often the rule can be evaluated for one object.
    pub cardinality: u64,
}

impl RuleCost {
    /// What the API server compares with [`RULE_LIMIT`] and adds to the CRD's total.
    pub fn total(&self) -> u64 {
        self.per_call.saturating_mul(self.cardinality)
    }
}

/// Every rule of an `openAPIV3Schema`, with its estimate; an error names a rule the
/// estimator cannot cost.
pub fn rule_costs(root: &Value) -> Result<Vec<RuleCost>, String> {
    let mut out = Vec::new();
    walk(root, "", Some(1), &mut out)?;
    Ok(out)
}

fn walk(
    schema: &Value,
    path: &str,
    cardinality: Option<u64>,
    out: &mut Vec<RuleCost>,
) -> Result<(), String> {
    for rule in schema["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let text = rule["rule"].as_str().unwrap_or_default();
        let ast = cel::parser::Parser::new()
            .parse(text)
            .map_err(|e| format!("{path}: cannot parse `{text}`: {e:?}"))?;
        let per_call = Coster::new(schema)
            .cost(&ast, &[])
            .map_err(|e| format!("{path}: `{text}`: {e}"))?
            .0;
        let cardinality =
            cardinality.unwrap_or_else(|| MAX_REQUEST_SIZE / (min_serialized_size(schema) + 1));
        out.push(RuleCost {
            path: path.to_string(),
            rule: text.to_string(),
            per_call,
            cardinality,
        });
    }
    // A child may occur as often as its parent times the parent's element bound.
    let child_cardinality = match (cardinality, max_elements_factor(schema)) {
        (Some(c), Some(f)) => Some(c.saturating_mul(f)),
        _ => None,
    };
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            walk(child, &child_path, child_cardinality, out)?;
        }
    }
    if schema["items"].is_object() {
        walk(
            &schema["items"],
            &format!("{path}[]"),
            child_cardinality,
            out,
        )?;
    }
    if schema["additionalProperties"].is_object() {
        walk(
            &schema["additionalProperties"],
            &format!("{path}{{}}"),
            child_cardinality,
            out,
        )?;
    }
    Ok(())
}

/// `extractMaxElements`: by how much a node multiplies its children's cardinality; `None`
/// for an unbounded list or map.
fn max_elements_factor(schema: &Value) -> Option<u64> {
    match schema["type"].as_str() {
        Some("array") => schema["maxItems"].as_u64(),
        Some("object") if schema["additionalProperties"].is_object() => {
            schema["maxProperties"].as_u64()
        }
        _ => Some(1),
    }
}

/// `DeclType.MinSerializedSize`: the fewest JSON bytes a value of the schema takes.
fn min_serialized_size(schema: &Value) -> u64 {
    if schema["x-kubernetes-int-or-string"].as_bool() == Some(true) {
        return 1;
    }
    match schema["type"].as_str() {
        Some("string") => match schema["format"].as_str() {
            Some("duration") => 3,
            Some("date") => 12,
            Some("date-time") => 21,
            _ => 2,
        },
        Some("integer" | "number") => 1,
        Some("boolean") => 4,
        Some("object") if schema["properties"].is_object() => {
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let properties = schema["properties"].as_object();
            2 + properties
                .into_iter()
                .flatten()
                .filter(|(name, p)| required.contains(&name.as_str()) && p.get("default").is_none())
                .map(|(name, p)| name.len() as u64 + min_serialized_size(p) + 4)
                .sum::<u64>()
        }
        _ => 2,
    }
}

/// `DeclType.MaxElements`: the size the estimator assumes for a value of the schema
/// (characters of a string, items of a list, entries of a map).
fn max_elements(schema: &Value) -> u64 {
    if schema["x-kubernetes-int-or-string"].as_bool() == Some(true) {
        return MAX_REQUEST_SIZE - 2;
    }
    match schema["type"].as_str() {
        Some("string") => match schema["format"].as_str() {
            Some("date") => 12,
            Some("duration" | "date-time") => 32,
            // maxLength counts code points; the estimator allows 4 bytes each.
            _ => match schema["maxLength"].as_u64() {
                Some(max) => max * 4,
                None => match schema["enum"].as_array() {
                    Some(values) if !values.is_empty() => values
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|v| v.len() as u64)
                        .max()
                        .unwrap_or(0),
                    _ => MAX_REQUEST_SIZE - 2,
                },
            },
        },
        Some("array") => schema["maxItems"].as_u64().unwrap_or_else(|| {
            (MAX_REQUEST_SIZE - 2) / (min_serialized_size(&schema["items"]) + 1)
        }),
        Some("object") if schema["additionalProperties"].is_object() => {
            schema["maxProperties"].as_u64().unwrap_or_else(|| {
                (MAX_REQUEST_SIZE - 2) / (min_serialized_size(&schema["additionalProperties"]) + 6)
            })
        }
        _ => 0,
    }
}

/// What the estimator knows of an expression's value.
#[derive(Clone, Copy, Debug)]
enum Shape<'a> {
    /// A value described by a schema node (reached from `self` by field selection).
    Schema(&'a Value),
    /// A key of a schema map.
    MapKey,
    /// A literal, or a call result of known size.
    Sized(u64),
    /// A boolean, integer or other scalar without a schema path.
    Scalar,
    /// A `quantity` value.
    Quantity,
}

impl Shape<'_> {
    /// cel-go's `sizeEstimate`: computed size, else the schema's, else 1 for scalars.
    fn size(self) -> u64 {
        match self {
            Shape::Schema(schema) => max_elements(schema),
            // Map keys are the plain string type, whose MaxElements is never set.
            Shape::MapKey => 0,
            Shape::Sized(size) => size,
            Shape::Scalar => 1,
            Shape::Quantity => u64::MAX,
        }
    }
}

fn traversal(size: u64, factor: f64) -> u64 {
    (size as f64 * factor).ceil() as u64
}

struct Coster<'a> {
    self_schema: &'a Value,
}

type Costed<'a> = (u64, Shape<'a>);

impl<'a> Coster<'a> {
    fn new(self_schema: &'a Value) -> Self {
        Self { self_schema }
    }

    fn cost(&self, e: &IdedExpr, scope: &[(&str, Shape<'a>)]) -> Result<Costed<'a>, String> {
        match &e.expr {
            Expr::Literal(literal) => Ok((0, literal_shape(literal))),
            Expr::Ident(name) if name == "self" => Ok((1, Shape::Schema(self.self_schema))),
            Expr::Ident(name) => match scope.iter().rev().find(|(n, _)| n == name) {
                Some((_, shape)) => Ok((1, *shape)),
                None => Err(format!("unknown identifier {name}")),
            },
            Expr::Select(select) => {
                let (operand, shape) = self.cost(&select.operand, scope)?;
                if select.test {
                    // has(): presence tests are free in Kubernetes (PresenceTestHasCost(false)).
                    return Ok((operand, Shape::Scalar));
                }
                let Shape::Schema(schema) = shape else {
                    return Err(format!("cannot select {} here", select.field));
                };
                let field = &schema["properties"][unescape(&select.field)];
                if !field.is_object() {
                    return Err(format!("no field {}", select.field));
                }
                Ok((operand.saturating_add(1), Shape::Schema(field)))
            }
            Expr::List(list) => {
                let mut sum = 10u64; // ListCreateBaseCost
                for element in &list.elements {
                    sum = sum.saturating_add(self.cost(element, scope)?.0);
                }
                Ok((sum, Shape::Sized(list.elements.len() as u64)))
            }
            Expr::Comprehension(comprehension) => self.comprehension(comprehension, scope),
            Expr::Call(call) => {
                let mut args = Vec::new();
                let mut arg_cost = 0u64;
                for arg in &call.args {
                    let (cost, shape) = self.cost(arg, scope)?;
                    arg_cost = arg_cost.saturating_add(cost);
                    args.push(shape);
                }
                let target = match &call.target {
                    Some(target) => Some(self.cost(target, scope)?),
                    None => None,
                };
                let target_cost = target.map_or(0, |t| t.0);
                let (function_cost, result) =
                    function_cost(&call.func_name, target.map(|t| t.1), &args)?;
                Ok((
                    target_cost
                        .saturating_add(arg_cost)
                        .saturating_add(function_cost),
                    result,
                ))
            }
            other => Err(format!("no estimate for {other:?}")),
        }
    }

    fn comprehension(
        &self,
        c: &ComprehensionExpr,
        scope: &[(&str, Shape<'a>)],
    ) -> Result<Costed<'a>, String> {
        let (range_cost, range) = self.cost(&c.iter_range, scope)?;
        let (init_cost, _) = self.cost(&c.accu_init, scope)?;
        let element = match range {
            Shape::Schema(schema) if schema["type"] == "array" => Shape::Schema(&schema["items"]),
            Shape::Schema(schema) if schema["additionalProperties"].is_object() => Shape::MapKey,
            _ => return Err("comprehension over something other than a list or map".into()),
        };
        let mut inner: Vec<(&str, Shape<'a>)> = scope.to_vec();
        inner.push((&c.iter_var, element));
        inner.push((&c.accu_var, Shape::Scalar));
        let (loop_cost, _) = self.cost(&c.loop_cond, &inner)?;
        let (step_cost, _) = self.cost(&c.loop_step, &inner)?;
        let mut outer: Vec<(&str, Shape<'a>)> = scope.to_vec();
        outer.push((&c.accu_var, Shape::Scalar));
        let (result_cost, _) = self.cost(&c.result, &outer)?;
        let per_element = loop_cost.saturating_add(step_cost);
        let total = range_cost
            .saturating_add(init_cost)
            .saturating_add(result_cost)
            .saturating_add(range.size().saturating_mul(per_element));
        Ok((total, Shape::Scalar))
    }
}

fn literal_shape(literal: &LiteralValue) -> Shape<'static> {
    match literal {
        LiteralValue::String(s) => Shape::Sized(s.inner().chars().count() as u64),
        LiteralValue::Bytes(b) => Shape::Sized(b.inner().len() as u64),
        _ => Shape::Sized(1),
    }
}

/// CEL escapes property names that are keywords (`import` is `__import__`).
fn unescape(field: &str) -> &str {
    field
        .strip_prefix("__")
        .and_then(|f| f.strip_suffix("__"))
        .unwrap_or(field)
}

/// The call's own cost (without its target's and arguments'), and the shape of its result.
fn function_cost<'a>(
    name: &str,
    target: Option<Shape<'a>>,
    args: &[Shape<'a>],
) -> Result<(u64, Shape<'a>), String> {
    let arg = |i: usize| {
        args.get(i)
            .copied()
            .ok_or_else(|| format!("{name} needs argument {i}"))
    };
    Ok(match (name, target) {
        // Short-circuit operators cost only their operands.
        ("_&&_" | "_||_", None) => (0, Shape::Scalar),
        // Comparison by size: the shorter operand is traversed.
        ("_==_" | "_!=_", None) => match (arg(0)?, arg(1)?) {
            (Shape::Quantity, _) | (_, Shape::Quantity) => (1, Shape::Scalar),
            (lhs, rhs) => (
                traversal(lhs.size().min(rhs.size()), STRING_TRAVERSAL),
                Shape::Scalar,
            ),
        },
        ("@in", None) => (arg(1)?.size(), Shape::Scalar),
        ("startsWith" | "endsWith", Some(_)) => {
            (traversal(arg(0)?.size(), STRING_TRAVERSAL), Shape::Scalar)
        }
        ("matches", Some(subject)) => {
            let subject = traversal(subject.size().saturating_add(1), STRING_TRAVERSAL);
            let regex = traversal(arg(0)?.size(), REGEX_LENGTH);
            (subject.saturating_mul(regex), Shape::Scalar)
        }
        // Kubernetes library functions that parse a string once.
        ("isIP" | "isCIDR" | "isQuantity", None) => {
            (traversal(arg(0)?.size(), STRING_TRAVERSAL), Shape::Scalar)
        }
        ("quantity", None) => (traversal(arg(0)?.size(), STRING_TRAVERSAL), Shape::Quantity),
        ("isGreaterThan" | "isLessThan" | "compareTo", Some(Shape::Quantity)) => (1, Shape::Scalar),
        // O(1) operators and functions.
        ("!_" | "@not_strictly_false" | "size" | "_<_" | "_<=_" | "_>_" | "_>=_", _) => {
            (1, Shape::Scalar)
        }
        _ => return Err(format!("no cost model for function {name}")),
    })
}

/// The Kubernetes version whose API server first accepts `function` in a new CRD rule
/// (a library is usable in new rules one minor release after it was introduced, for
/// rollback safety), or `None` for a function the table does not know.
pub fn first_version_accepting(function: &str) -> Option<(u32, u32)> {
    match function {
        // The CEL standard library, the operators and macros.
        "_&&_"
        | "_||_"
        | "_==_"
        | "_!=_"
        | "@in"
        | "!_"
        | "@not_strictly_false"
        | "size"
        | "_<_"
        | "_<=_"
        | "_>_"
        | "_>=_"
        | "startsWith"
        | "endsWith"
        | "matches" => Some((1, 25)),
        // Kubernetes' quantity library: introduced in 1.28.
        "isQuantity" | "quantity" | "isGreaterThan" | "isLessThan" | "compareTo" => Some((1, 29)),
        // Kubernetes' IP and CIDR library: introduced in 1.30.
        "isIP" | "isCIDR" => Some((1, 31)),
        _ => None,
    }
}

/// Every function a rule calls.
pub fn functions(rule: &str) -> Result<Vec<String>, String> {
    let ast = cel::parser::Parser::new()
        .parse(rule)
        .map_err(|e| format!("cannot parse `{rule}`: {e:?}"))?;
    let mut out = Vec::new();
    collect_functions(&ast, &mut out);
    Ok(out)
}

fn collect_functions(e: &IdedExpr, out: &mut Vec<String>) {
    match &e.expr {
        Expr::Call(call) => {
            out.push(call.func_name.clone());
            if let Some(target) = &call.target {
                collect_functions(target, out);
            }
            for arg in &call.args {
                collect_functions(arg, out);
            }
        }
        Expr::Select(select) => collect_functions(&select.operand, out),
        Expr::List(list) => list.elements.iter().for_each(|e| collect_functions(e, out)),
        Expr::Comprehension(c) => {
            for part in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                collect_functions(part, out);
            }
        }
        _ => {}
    }
}
