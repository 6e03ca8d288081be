//! Rule-based segments defined as data (issue 20 item 1, decision 0080).
//!
//! A definition is `{id, name, description?, match: <condition>}`, where a
//! condition combines leaves with `all`, `any` and `not`. The leaves test
//! the customer's profile and traits, their metrics, a consent in force,
//! their membership of another segment, how often they performed an event
//! in a window (with property tests), that they did not, and whether they
//! opened or clicked an email. [`RuleSegment::from_yaml`] and
//! [`RuleSegment::from_value`] validate a document and report every problem
//! with its path (`match.all[1].within_days`), as the campaign loader does;
//! the format is published in `schemas/segment.schema.json`.
//!
//! [`RuleSegment::evaluate`] says whether a customer's facts
//! ([`CustomerFacts`]) match at an instant and when the answer next changes
//! by time alone, so the caller can set a timer at that exact instant;
//! [`RuleSegment::dependencies`] says which events and facts a definition
//! reads, so an incremental evaluator knows which events are relevant.
//!
//! This is the domain step only: no route, no stream, no projection yet
//! (decision 0080 lists what the next step adds).

pub mod catalog;
mod condition;
mod evaluate;
pub mod facts;
mod load;
pub mod preview;
#[cfg(test)]
mod tests;

pub use catalog::{
    defined_segment, defined_segments, DefinedSegment, DefinitionError, SegmentDefinitionEvent, SegmentDefinitions,
    SegmentIndexEvent, SEGMENT_DEFINITION_EVENT_TYPES,
};
pub use condition::{
    Condition, ConsentLeaf, ConsentRef, ConsentState, EngagedLeaf, Engagement, FieldOp, Metric, MetricLeaf, MetricOp,
    NotPerformedLeaf, PerformedLeaf, ProfileLeaf, PropertyTest,
};
pub use evaluate::{CustomerFacts, Dependencies, Evaluation, EventFact, MetricFacts, EMAIL_CLICKED, EMAIL_OPENED};

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The deepest nesting of `all`, `any` and `not` (the top condition is level 1).
pub const MAX_DEPTH: usize = 8;
/// The most leaves one definition may hold.
pub const MAX_LEAVES: usize = 50;
/// The longest window, in days (`within_days`).
pub const MAX_WINDOW_DAYS: u32 = 365;
/// The largest `at_least` / `at_most`.
pub const MAX_COUNT: u32 = 10_000;
/// The most property tests in one `where`.
pub const MAX_WHERE: usize = 10;
/// The most values in one `in` list.
pub const MAX_IN_VALUES: usize = 100;

/// A segment defined by rules: who is in it is whoever `matches`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleSegment {
    /// A slug: lowercase letters, digits and single dashes.
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "match")]
    pub matches: Condition,
}

/// One problem in a definition: where (`match.all[1].within_days`) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuleError {
    pub path: String,
    pub message: String,
}

impl RuleError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        RuleError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl RuleSegment {
    /// Loads and validates a definition written in YAML. On failure, every
    /// problem found is returned, each with the path of the offending part.
    pub fn from_yaml(text: &str) -> Result<RuleSegment, Vec<RuleError>> {
        let raw: Value =
            serde_yaml::from_str(text).map_err(|e| vec![RuleError::new("", format!("invalid YAML: {e}"))])?;
        Self::from_value(&raw)
    }

    /// Validates a definition given as JSON (the API's form of the same document).
    pub fn from_value(raw: &Value) -> Result<RuleSegment, Vec<RuleError>> {
        let mut loader = load::Loader::default();
        match loader.segment(raw) {
            Some(segment) if loader.errors.is_empty() => Ok(segment),
            _ => Err(loader.errors),
        }
    }
}

/// A stored definition reads through the same validation as a new one.
impl<'de> Deserialize<'de> for RuleSegment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Value::deserialize(deserializer)?;
        RuleSegment::from_value(&raw).map_err(|errors| {
            serde::de::Error::custom(errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        })
    }
}
