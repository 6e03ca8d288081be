//! Errors for invalid event patterns, and the JSON paths that locate them.

use serde_json::Value;

/// Why an event pattern was rejected. Every variant carries `path`, the
/// location of the offending part inside the pattern, written as a JSON path
/// from the pattern root `$` (for example `$.detail.state[0].anything-but`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatternError {
    /// The text is not JSON at all.
    #[error("event pattern is not valid JSON: {message}")]
    Json { message: String },

    /// The pattern, or a member of a `$or` list, must be a JSON object.
    #[error("invalid event pattern at {path}: expected a JSON object, found {found}")]
    NotAnObject { path: String, found: String },

    /// `{}` is not a pattern.
    #[error("invalid event pattern at {path}: empty objects are not allowed")]
    EmptyObject { path: String },

    /// `[]` matches nothing and is rejected.
    #[error("invalid event pattern at {path}: empty arrays are not allowed")]
    EmptyArray { path: String },

    /// A field must hold a nested object or an array of values to match,
    /// e.g. `"source": ["crm.customer"]`, not `"source": "crm.customer"`.
    #[error(
        "invalid event pattern at {path}: a field must be an object or an array of values to \
         match, found {found} (write [{found_json}])"
    )]
    NotObjectOrArray {
        path: String,
        found: String,
        found_json: String,
    },

    /// An element of a value array is neither a literal nor an operator object.
    #[error(
        "invalid event pattern at {path}: a match value must be a string, number, true, false, \
         null or an operator object, found {found}"
    )]
    InvalidMatchValue { path: String, found: String },

    /// An operator object names an operator that does not exist (operators
    /// are case-sensitive).
    #[error("invalid event pattern at {path}: unknown operator \"{operator}\"{hint}")]
    UnknownOperator {
        path: String,
        operator: String,
        hint: String,
    },

    /// An operator object must hold exactly one operator.
    #[error(
        "invalid event pattern at {path}: an operator object must hold exactly one operator, \
         found {count}"
    )]
    OperatorCount { path: String, count: usize },

    /// The operand of an operator has the wrong type or an invalid value.
    #[error("invalid event pattern at {path}: {operator}: {reason}")]
    InvalidOperand {
        path: String,
        operator: String,
        reason: String,
    },

    /// `$or` must be an array of at least two non-empty objects.
    #[error("invalid event pattern at {path}: $or {reason}")]
    InvalidOr { path: String, reason: String },

    /// Operator names cannot be used as field names inside `$or`.
    #[error(
        "invalid event pattern at {path}: \"{field}\" is an operator name and cannot be used as \
         a field name inside $or"
    )]
    ReservedFieldInOr { path: String, field: String },

    /// The same event field is constrained twice in one alternative, e.g.
    /// `{"a.b": [1], "a": {"b": [2]}}` or a field repeated inside `$or`.
    #[error(
        "invalid event pattern at {path}: the event field \"{field}\" is already constrained \
         elsewhere in the same alternative of the pattern"
    )]
    DuplicateField { path: String, field: String },

    /// The pattern would be too expensive to evaluate.
    #[error("invalid event pattern at {path}: pattern is too complex: {reason}")]
    TooComplex { path: String, reason: String },
}

impl PatternError {
    /// The JSON path in the pattern where the problem is (`$` for the root,
    /// empty for a JSON syntax error).
    pub fn path(&self) -> &str {
        match self {
            PatternError::Json { .. } => "",
            PatternError::NotAnObject { path, .. }
            | PatternError::EmptyObject { path }
            | PatternError::EmptyArray { path }
            | PatternError::NotObjectOrArray { path, .. }
            | PatternError::InvalidMatchValue { path, .. }
            | PatternError::UnknownOperator { path, .. }
            | PatternError::OperatorCount { path, .. }
            | PatternError::InvalidOperand { path, .. }
            | PatternError::InvalidOr { path, .. }
            | PatternError::ReservedFieldInOr { path, .. }
            | PatternError::DuplicateField { path, .. }
            | PatternError::TooComplex { path, .. } => path,
        }
    }

    pub(crate) fn operand(path: &str, operator: &str, reason: impl Into<String>) -> Self {
        PatternError::InvalidOperand {
            path: path.to_string(),
            operator: operator.to_string(),
            reason: reason.into(),
        }
    }
}

/// `parent.key`, or `parent["key"]` when the key is not a plain name.
pub(crate) fn child_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '$'));
    if plain {
        format!("{parent}.{key}")
    } else {
        // A JSON string literal is always a valid bracketed key.
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("\"{key}\""));
        format!("{parent}[{quoted}]")
    }
}

/// `parent[index]`.
pub(crate) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// A short description of a JSON value for error messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => {
            let shown: String = s.chars().take(60).collect();
            let ellipsis = if shown.len() < s.len() { "…" } else { "" };
            format!("the string \"{shown}{ellipsis}\"")
        }
        Value::Array(a) if a.is_empty() => "an empty array".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Object(o) if o.is_empty() => "an empty object".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// A compact JSON rendering, shortened, for "write this instead" hints.
pub(crate) fn compact_json(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        let mut short: String = text.chars().take(60).collect();
        short.push('…');
        short
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_quote_keys_that_are_not_plain_names() {
        assert_eq!(child_path("$", "detail"), "$.detail");
        assert_eq!(child_path("$", "detail-type"), "$.detail-type");
        assert_eq!(child_path("$", "state.status"), "$[\"state.status\"]");
        assert_eq!(child_path("$", ""), "$[\"\"]");
        assert_eq!(index_path("$.a", 2), "$.a[2]");
    }

    #[test]
    fn every_error_names_its_path() {
        let e = PatternError::EmptyArray {
            path: "$.resources".into(),
        };
        assert_eq!(e.path(), "$.resources");
        assert!(e.to_string().contains("$.resources"));
    }
}
