//! Validation and compilation of a pattern into alternatives ("branches").
//!
//! A pattern compiles to a disjunction of branches, one per combination of
//! `$or` choices (as EventBridge's engine does). A branch is a conjunction of
//! field conditions ("atoms"), each naming an event field by its dotted path
//! (`detail.state`) and listing the values that satisfy it.

use super::cidr::{parse_ip, Cidr};
use super::error::{child_path, compact_json, describe, index_path, PatternError};
use super::matcher::{fold, AnythingBut, Matcher};
use super::numeric::{check_operand, NumericRange};
use super::wildcard::Wildcard;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// The most alternatives the `$or` lists of one pattern may combine into.
pub const MAX_BRANCHES: usize = 1024;

/// The operators, as written in patterns.
const OPERATORS: &[&str] = &[
    "prefix",
    "suffix",
    "equals-ignore-case",
    "wildcard",
    "anything-but",
    "numeric",
    "exists",
    "cidr",
];

/// Names that cannot be field names inside `$or` (EventBridge reserves
/// them, including some for future operators).
const RESERVED_IN_OR: &[&str] = &[
    "exactly",
    "equals-ignore-case",
    "prefix",
    "suffix",
    "anything-but",
    "exists",
    "wildcard",
    "numeric",
    "cidr",
    "=",
    "<",
    "<=",
    ">",
    ">=",
    "regex",
    "not-wildcard",
    "not-equals-ignore-case",
    "date-after",
    "date-on-or-after",
    "date-before",
    "date-on-or-before",
    "in-date-range",
    "ip-address-in-range",
    "ip-address-not-in-range",
];

/// What a field condition needs from the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// A value at the path must satisfy one of the matchers.
    Required,
    /// `{"exists": false}` alone: no value at the path.
    Absent,
    /// `{"exists": false}` next to other alternatives: a satisfying value,
    /// or no value at all.
    Optional,
}

/// One field condition of a branch.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Atom {
    /// The event field, keys joined with '.'.
    pub field: Arc<str>,
    /// Where the condition is written in the pattern.
    pub location: Arc<str>,
    pub presence: Presence,
    pub matchers: Arc<[Matcher]>,
}

pub(crate) type Branch = Vec<Atom>;

/// Validates a pattern and compiles it into branches.
pub(crate) fn compile(pattern: &Value) -> Result<Vec<Branch>, PatternError> {
    let Value::Object(map) = pattern else {
        return Err(PatternError::NotAnObject {
            path: "$".to_string(),
            found: describe(pattern),
        });
    };
    let branches = compile_object(map, "$", None, false)?;
    for branch in &branches {
        let mut seen = HashSet::with_capacity(branch.len());
        for atom in branch {
            if !seen.insert(atom.field.as_ref()) {
                return Err(PatternError::DuplicateField {
                    path: atom.location.to_string(),
                    field: atom.field.to_string(),
                });
            }
        }
    }
    Ok(branches)
}

fn compile_object(
    map: &Map<String, Value>,
    path: &str,
    field_prefix: Option<&str>,
    in_or: bool,
) -> Result<Vec<Branch>, PatternError> {
    if map.is_empty() {
        return Err(PatternError::EmptyObject { path: path.to_string() });
    }
    let mut branches: Vec<Branch> = vec![Vec::new()];
    for (key, value) in map {
        let key_path = child_path(path, key);
        if key == "$or" {
            let alternatives = compile_or(value, &key_path, field_prefix)?;
            branches = product(branches, alternatives, &key_path)?;
            continue;
        }
        if in_or && RESERVED_IN_OR.contains(&key.as_str()) {
            return Err(PatternError::ReservedFieldInOr {
                path: key_path,
                field: key.clone(),
            });
        }
        let field = match field_prefix {
            Some(prefix) => format!("{prefix}.{key}"),
            None => key.clone(),
        };
        match value {
            Value::Object(inner) => {
                let nested = compile_object(inner, &key_path, Some(&field), in_or)?;
                branches = product(branches, nested, &key_path)?;
            }
            Value::Array(items) => {
                let atom = compile_field(items, &key_path, field)?;
                for branch in &mut branches {
                    branch.push(atom.clone());
                }
            }
            other => {
                return Err(PatternError::NotObjectOrArray {
                    path: key_path,
                    found: describe(other),
                    found_json: compact_json(other),
                })
            }
        }
    }
    Ok(branches)
}

fn compile_or(value: &Value, path: &str, field_prefix: Option<&str>) -> Result<Vec<Branch>, PatternError> {
    let Value::Array(items) = value else {
        return Err(PatternError::InvalidOr {
            path: path.to_string(),
            reason: format!("must be an array of at least two objects, found {}", describe(value)),
        });
    };
    if items.len() < 2 {
        return Err(PatternError::InvalidOr {
            path: path.to_string(),
            reason: format!("must list at least two alternatives, found {}", items.len()),
        });
    }
    let mut alternatives = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = index_path(path, i);
        let Value::Object(map) = item else {
            return Err(PatternError::NotAnObject {
                path: item_path,
                found: describe(item),
            });
        };
        alternatives.extend(compile_object(map, &item_path, field_prefix, true)?);
        if alternatives.len() > MAX_BRANCHES {
            return Err(too_complex(path));
        }
    }
    Ok(alternatives)
}

fn too_complex(path: &str) -> PatternError {
    PatternError::TooComplex {
        path: path.to_string(),
        reason: format!("the $or lists combine into more than {MAX_BRANCHES} alternatives"),
    }
}

/// Every branch of `left` combined with every branch of `right`.
fn product(left: Vec<Branch>, right: Vec<Branch>, path: &str) -> Result<Vec<Branch>, PatternError> {
    if right.len() == 1 {
        let mut left = left;
        if let Some(only) = right.into_iter().next() {
            for branch in &mut left {
                branch.extend(only.iter().cloned());
            }
        }
        return Ok(left);
    }
    if left.len().saturating_mul(right.len()) > MAX_BRANCHES {
        return Err(too_complex(path));
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in &left {
        for r in &right {
            let mut branch = l.clone();
            branch.extend(r.iter().cloned());
            out.push(branch);
        }
    }
    Ok(out)
}

/// A field's array of alternatives.
fn compile_field(items: &[Value], path: &str, field: String) -> Result<Atom, PatternError> {
    if items.is_empty() {
        return Err(PatternError::EmptyArray { path: path.to_string() });
    }
    let mut matchers = Vec::with_capacity(items.len());
    let mut absent_ok = false;
    for (i, item) in items.iter().enumerate() {
        let item_path = index_path(path, i);
        match item {
            Value::String(s) => matchers.push(Matcher::String {
                value: s.clone(),
                ip: parse_ip(s),
            }),
            Value::Number(n) => matchers.push(Matcher::Number(n.clone())),
            Value::Bool(b) => matchers.push(Matcher::Bool(*b)),
            Value::Null => matchers.push(Matcher::Null),
            Value::Object(op) => match compile_operator(op, &item_path)? {
                Operator::Match(m) => matchers.push(m),
                Operator::NotExists => absent_ok = true,
            },
            Value::Array(_) => {
                return Err(PatternError::InvalidMatchValue {
                    path: item_path,
                    found: describe(item),
                })
            }
        }
    }
    let presence = match (matchers.is_empty(), absent_ok) {
        (true, _) => Presence::Absent,
        (false, true) => Presence::Optional,
        (false, false) => Presence::Required,
    };
    Ok(Atom {
        field: Arc::from(field),
        location: Arc::from(path),
        presence,
        matchers: Arc::from(matchers),
    })
}

enum Operator {
    Match(Matcher),
    NotExists,
}

fn single_entry<'a>(map: &'a Map<String, Value>, path: &str) -> Result<(&'a String, &'a Value), PatternError> {
    let mut entries = map.iter();
    match (entries.next(), map.len()) {
        (Some(entry), 1) => Ok(entry),
        _ => Err(PatternError::OperatorCount {
            path: path.to_string(),
            count: map.len(),
        }),
    }
}

fn compile_operator(map: &Map<String, Value>, path: &str) -> Result<Operator, PatternError> {
    let (name, operand) = single_entry(map, path)?;
    let op_path = child_path(path, name);
    let wrong_type = |expected: &str| {
        PatternError::operand(
            &op_path,
            name,
            format!("the value must be {expected}, found {}", describe(operand)),
        )
    };
    let matcher = match name.as_str() {
        "prefix" | "suffix" => {
            let is_prefix = name == "prefix";
            match operand {
                Value::String(s) if is_prefix => Matcher::Prefix(s.clone()),
                Value::String(s) => Matcher::Suffix(s.clone()),
                Value::Object(inner) => {
                    let text = ignore_case_operand(inner, &op_path, name)?;
                    if is_prefix {
                        Matcher::PrefixIgnoreCase(fold(text))
                    } else {
                        Matcher::SuffixIgnoreCase(fold(text))
                    }
                }
                _ => return Err(wrong_type("a string, or {\"equals-ignore-case\": string}")),
            }
        }
        "equals-ignore-case" => match operand {
            Value::String(s) => Matcher::EqualsIgnoreCase(fold(s)),
            _ => return Err(wrong_type("a string")),
        },
        "wildcard" => match operand {
            Value::String(s) => Matcher::Wildcard(Wildcard::parse(s, &op_path, name)?),
            _ => return Err(wrong_type("a string")),
        },
        "numeric" => Matcher::Numeric(NumericRange::parse(operand, &op_path)?),
        "exists" => match operand {
            Value::Bool(true) => Matcher::Exists,
            Value::Bool(false) => return Ok(Operator::NotExists),
            _ => return Err(wrong_type("true or false")),
        },
        "cidr" => match operand {
            Value::String(s) => Matcher::Cidr(Cidr::parse(s, &op_path)?),
            _ => return Err(wrong_type("a string such as \"10.0.0.0/24\"")),
        },
        "anything-but" => Matcher::AnythingBut(anything_but(operand, &op_path)?),
        other => {
            return Err(PatternError::UnknownOperator {
                path: path.to_string(),
                operator: other.to_string(),
                hint: operator_hint(other),
            })
        }
    };
    Ok(Operator::Match(matcher))
}

fn operator_hint(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match OPERATORS.iter().find(|op| **op == lower) {
        Some(op) => format!(" (operators are case-sensitive: write \"{op}\")"),
        None => format!(" (known operators: {})", OPERATORS.join(", ")),
    }
}

/// The inside of `{"prefix": {"equals-ignore-case": "..."}}`.
fn ignore_case_operand<'a>(inner: &'a Map<String, Value>, path: &str, outer: &str) -> Result<&'a str, PatternError> {
    let (name, value) = single_entry(inner, path)?;
    let inner_path = child_path(path, name);
    if name != "equals-ignore-case" {
        return Err(PatternError::operand(
            &inner_path,
            outer,
            format!("only \"equals-ignore-case\" can be nested in {outer}, found \"{name}\""),
        ));
    }
    match value {
        Value::String(s) => Ok(s),
        other => Err(PatternError::operand(
            &inner_path,
            "equals-ignore-case",
            format!("the value must be a string, found {}", describe(other)),
        )),
    }
}

fn anything_but(operand: &Value, path: &str) -> Result<AnythingBut, PatternError> {
    const OP: &str = "anything-but";
    match operand {
        Value::String(s) => Ok(AnythingBut::Strings(vec![s.clone()])),
        Value::Number(n) => Ok(AnythingBut::Numbers(vec![check_operand(n, path, OP)?])),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(PatternError::EmptyArray { path: path.to_string() });
            }
            if let Some(Value::Number(_)) = items.first() {
                let mut numbers = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let item_path = index_path(path, i);
                    match item {
                        Value::Number(n) => numbers.push(check_operand(n, &item_path, OP)?),
                        other => return Err(mixed_list(&item_path, other)),
                    }
                }
                Ok(AnythingBut::Numbers(numbers))
            } else {
                let mut strings = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => strings.push(s.clone()),
                        other => return Err(mixed_list(&index_path(path, i), other)),
                    }
                }
                Ok(AnythingBut::Strings(strings))
            }
        }
        Value::Object(map) => {
            let (name, value) = single_entry(map, path)?;
            let inner_path = child_path(path, name);
            let op = format!("anything-but/{name}");
            match name.as_str() {
                "prefix" | "suffix" => {
                    let list = string_list(value, &inner_path, &op)?;
                    if let Some((_, p)) = list.iter().find(|(s, _)| s.is_empty()) {
                        return Err(PatternError::operand(
                            p,
                            &op,
                            format!("an empty {name} is not allowed (it would exclude every string)"),
                        ));
                    }
                    let list = list.into_iter().map(|(s, _)| s).collect();
                    Ok(if name == "prefix" {
                        AnythingBut::Prefixes(list)
                    } else {
                        AnythingBut::Suffixes(list)
                    })
                }
                "equals-ignore-case" => Ok(AnythingBut::IgnoreCase(
                    string_list(value, &inner_path, &op)?
                        .into_iter()
                        .map(|(s, _)| fold(&s))
                        .collect(),
                )),
                "wildcard" => {
                    let mut list = Vec::new();
                    for (s, p) in string_list(value, &inner_path, &op)? {
                        list.push(Wildcard::parse(&s, &p, &op)?);
                    }
                    Ok(AnythingBut::Wildcards(list))
                }
                other => Err(PatternError::operand(
                    &inner_path,
                    OP,
                    format!(
                        "\"{other}\" cannot be used inside anything-but (use prefix, suffix, \
                         equals-ignore-case or wildcard)"
                    ),
                )),
            }
        }
        other => Err(PatternError::operand(
            path,
            OP,
            format!(
                "the value must be a string, a number, a list of strings or of numbers, or an \
                 object with prefix, suffix, equals-ignore-case or wildcard; found {}",
                describe(other)
            ),
        )),
    }
}

fn mixed_list(path: &str, found: &Value) -> PatternError {
    PatternError::operand(
        path,
        "anything-but",
        format!(
            "a list must hold only strings or only numbers, found {}",
            describe(found)
        ),
    )
}

/// A string or a non-empty list of strings, each with its path.
fn string_list(value: &Value, path: &str, op: &str) -> Result<Vec<(String, String)>, PatternError> {
    match value {
        Value::String(s) => Ok(vec![(s.clone(), path.to_string())]),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(PatternError::EmptyArray { path: path.to_string() });
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    let item_path = index_path(path, i);
                    match item {
                        Value::String(s) => Ok((s.clone(), item_path)),
                        other => Err(PatternError::operand(
                            &item_path,
                            op,
                            format!("list members must be strings, found {}", describe(other)),
                        )),
                    }
                })
                .collect()
        }
        other => Err(PatternError::operand(
            path,
            op,
            format!(
                "the value must be a string or a list of strings, found {}",
                describe(other)
            ),
        )),
    }
}
