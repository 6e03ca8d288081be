//! Amazon EventBridge event patterns: parse, validate and match.
//!
//! The same patterns the `template.yaml` rules use on AWS, evaluated in
//! process, so the local runtime and campaign definitions ("send when an
//! event matches this pattern") behave exactly as EventBridge does.
//!
//! ```
//! use crm_core::pattern::EventPattern;
//! use serde_json::json;
//!
//! let pattern = EventPattern::parse(r#"{
//!     "source": ["crm.commerce"],
//!     "detail-type": ["OrderPlaced"],
//!     "detail": { "payload": { "total": [{ "numeric": [">=", 100] }] } }
//! }"#)?;
//! let event = json!({
//!     "source": "crm.commerce",
//!     "detail-type": "OrderPlaced",
//!     "detail": { "payload": { "total": 149.5 } }
//! });
//! assert!(pattern.matches(&event));
//! # Ok::<(), crm_core::pattern::PatternError>(())
//! ```
//!
//! # The language
//!
//! A pattern is a JSON object with the shape of the events it matches. Every
//! field it names must be in the event (AND); each leaf is an array of
//! alternatives (OR), any of which may match. When the event value is an
//! array, the field matches if any element does. The alternatives:
//!
//! | Alternative | Matches |
//! |---|---|
//! | `"text"`, `42`, `true`, `null` | that exact value (numbers by value: `300` matches `300.0`; string IP addresses as addresses) |
//! | `{"prefix": "us-"}`, `{"prefix": {"equals-ignore-case": "us-"}}` | strings starting with it |
//! | `{"suffix": ".png"}`, `{"suffix": {"equals-ignore-case": ".png"}}` | strings ending with it |
//! | `{"equals-ignore-case": "x"}` | strings equal to it ignoring case |
//! | `{"wildcard": "dir/*.png"}` | strings matching; `*` is any run of characters, `\*` a literal `*` and `\\` a literal `\` (in JSON text `"\\*"` and `"\\\\"`) |
//! | `{"anything-but": ...}` | any present value except: a string, a number, a list of strings or of numbers, `{"prefix"}`, `{"suffix"}`, `{"equals-ignore-case"}` or `{"wildcard"}` (each a string or list of strings) |
//! | `{"numeric": [">", 0, "<=", 5]}` | numbers in the range; operators `<`, `<=`, `=`, `>`, `>=`; a lower bound comes first |
//! | `{"exists": true}` / `{"exists": false}` | the field has a value (null included) / has none |
//! | `{"cidr": "10.0.0.0/24"}` | strings that are IPv4 or IPv6 addresses in the network |
//!
//! `"$or": [{...}, {...}]` at any object level matches if any of its objects
//! (at least two) matches. Keys with dots are the same as nested keys.
//! Matches respect array consistency: see [`EventPattern::matches`].
//!
//! # Validation
//!
//! Patterns are validated as EventBridge validates them (its engine is
//! aws/event-ruler); invalid ones are rejected with a [`PatternError`] that
//! says what is wrong and where. A few rules are stricter, so that a pattern
//! that is accepted here always means one thing: empty lists are rejected
//! everywhere, one event field may be constrained only once per alternative,
//! and `$or` lists may combine into at most [`MAX_BRANCHES`] alternatives.
//! Operands of `numeric` and numeric `anything-but` must lie in
//! [-5e9, 5e9] with at most six decimals ([`NUMERIC_LIMIT`]); a wildcard
//! may hold at most [`MAX_WILDCARDS`] `*`.

mod cidr;
mod error;
mod eval;
mod matcher;
mod numeric;
mod parse;
mod wildcard;

pub use error::PatternError;
pub use numeric::{MAX_DECIMALS, NUMERIC_LIMIT};
pub use parse::MAX_BRANCHES;
pub use wildcard::MAX_WILDCARDS;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;

/// A parsed and validated event pattern.
///
/// It serializes back to the JSON it was built from, and deserializes from
/// any JSON value (validating it), so it can be embedded in definitions.
/// Two patterns are equal when their JSON is equal.
#[derive(Clone, Debug, Deserialize)]
#[serde(try_from = "serde_json::Value")]
pub struct EventPattern {
    source: Value,
    branches: Vec<parse::Branch>,
}

impl EventPattern {
    /// Parses and validates a pattern from its JSON text.
    pub fn parse(json: &str) -> Result<Self, PatternError> {
        let value: Value = serde_json::from_str(json).map_err(|e| PatternError::Json { message: e.to_string() })?;
        Self::from_value(&value)
    }

    /// Validates a pattern given as a JSON value.
    pub fn from_value(value: &Value) -> Result<Self, PatternError> {
        let branches = parse::compile(value)?;
        Ok(EventPattern {
            source: value.clone(),
            branches,
        })
    }

    /// Whether the event (the full EventBridge event: `source`,
    /// `detail-type`, `detail`, ...) matches.
    ///
    /// Matching is array-consistent, as on EventBridge: the values that
    /// satisfy the fields of one alternative must not come from different
    /// elements of one array. `{"items": {"sku": ["A"], "gift": [true]}}`
    /// matches an event only if one item has both.
    pub fn matches(&self, event: &Value) -> bool {
        self.branches.iter().any(|branch| eval::branch_matches(branch, event))
    }

    /// The pattern as JSON.
    pub fn as_value(&self) -> &Value {
        &self.source
    }
}

impl PartialEq for EventPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl TryFrom<Value> for EventPattern {
    type Error = PatternError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        let branches = parse::compile(&value)?;
        Ok(EventPattern {
            source: value,
            branches,
        })
    }
}

impl TryFrom<&Value> for EventPattern {
    type Error = PatternError;

    fn try_from(value: &Value) -> Result<Self, Self::Error> {
        Self::from_value(value)
    }
}

impl FromStr for EventPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for EventPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(serializer)
    }
}

/// Compact JSON.
impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)
    }
}

#[cfg(test)]
mod tests;
