//! The validating loader: every problem reported with its path, beyond
//! what the JSON Schema can check (depth, number of leaves, bounds, dates,
//! a segment naming itself).

use super::condition::{
    Condition, EngagedLeaf, FieldOp, MetricLeaf, NotPerformedLeaf, PerformedLeaf, ProfileLeaf, PropertyTest, KINDS,
};
use super::evaluate::parse_instant;
use super::{RuleError, RuleSegment, MAX_COUNT, MAX_DEPTH, MAX_IN_VALUES, MAX_LEAVES, MAX_WHERE, MAX_WINDOW_DAYS};
use serde::de::DeserializeOwned;
use serde_json::Value;

fn join(prefix: &str, inner: &str) -> String {
    if inner.is_empty() || inner == "." {
        prefix.to_string()
    } else if prefix.is_empty() {
        inner.to_string()
    } else if inner.starts_with('[') {
        format!("{prefix}{inner}")
    } else {
        format!("{prefix}.{inner}")
    }
}

pub(super) fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text.split('-').all(|part| !part.is_empty())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_event_type(text: &str) -> bool {
    text.as_bytes().first().is_some_and(u8::is_ascii_uppercase) && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_field_path(text: &str) -> bool {
    !text.is_empty() && text.split('.').all(|s| !s.is_empty())
}

/// What is wrong with `op` and `value`, as `(field, message)`.
/// `within_days` is allowed on profile fields only.
fn op_problem(op: FieldOp, value: Option<&Value>, profile: bool) -> Option<(&'static str, String)> {
    let name = op.as_str();
    let value = match (op, value) {
        (FieldOp::Exists, Some(_)) => return Some(("value", "exists takes no value".into())),
        (FieldOp::Exists, None) => return None,
        (FieldOp::WithinDays, _) if !profile => {
            return Some((
                "op",
                "within_days tests profile fields; an event's window is its leaf's within_days".into(),
            ))
        }
        (_, None) | (_, Some(Value::Null)) => return Some(("value", format!("{name} needs a value"))),
        (_, Some(value)) => value,
    };
    let problem = match op {
        FieldOp::Exists | FieldOp::Equals => None,
        FieldOp::Contains => (!matches!(value, Value::String(_) | Value::Number(_) | Value::Bool(_)))
            .then(|| "contains needs a string, number or boolean".to_string()),
        FieldOp::In => match value {
            Value::Array(items) if !items.is_empty() && items.len() <= MAX_IN_VALUES => None,
            _ => Some(format!("in needs a list of 1 to {MAX_IN_VALUES} values")),
        },
        FieldOp::Gt | FieldOp::Gte | FieldOp::Lt | FieldOp::Lte => {
            (!value.is_number()).then(|| format!("{name} needs a number"))
        }
        FieldOp::Before | FieldOp::After => parse_instant(value)
            .is_none()
            .then(|| format!("{name} needs a date (2026-01-31) or an RFC 3339 timestamp")),
        FieldOp::WithinDays => (!value
            .as_u64()
            .is_some_and(|d| (1..=u64::from(MAX_WINDOW_DAYS)).contains(&d)))
        .then(|| format!("within_days needs a whole number of days from 1 to {MAX_WINDOW_DAYS}")),
    };
    problem.map(|message| ("value", message))
}

#[derive(Default)]
pub(super) struct Loader {
    pub(super) errors: Vec<RuleError>,
    leaves: usize,
    /// The segment's own id, which no `in_segment` may name.
    own_id: Option<String>,
}

impl Loader {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(RuleError::new(path, message));
    }

    fn de<T: DeserializeOwned>(&mut self, value: &Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.error(join(path, &e.path().to_string()), e.inner().to_string());
                None
            }
        }
    }

    pub(super) fn segment(&mut self, raw: &Value) -> Option<RuleSegment> {
        let Value::Object(map) = raw else {
            self.error("", "a segment definition must be a mapping");
            return None;
        };
        const FIELDS: [&str; 4] = ["id", "name", "description", "match"];
        for key in map.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
            self.error(
                key.clone(),
                format!("unknown field `{key}`, expected one of {}", FIELDS.join(", ")),
            );
        }
        let required = |loader: &mut Loader, key: &str| {
            let value = map.get(key);
            if value.is_none() {
                loader.error(key, format!("missing field `{key}`"));
            }
            value
        };
        let id: Option<String> = required(self, "id").and_then(|v| self.de(v, "id"));
        let name: Option<String> = required(self, "name").and_then(|v| self.de(v, "name"));
        let matches = required(self, "match");
        let description: Option<Option<String>> = match map.get("description") {
            None => Some(None),
            Some(v) => self.de(v, "description"),
        };
        if let Some(id) = &id {
            if !is_slug(id) {
                self.error(
                    "id",
                    format!("\"{id}\" is not a slug (lowercase letters, digits, single dashes)"),
                );
            }
        }
        if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            self.error("name", "must not be empty");
        }
        self.own_id = id.clone();
        let matches = matches.and_then(|m| self.condition(m, "match", 1));
        Some(RuleSegment {
            id: id?,
            name: name?,
            description: description?,
            matches: matches?,
        })
    }

    fn condition(&mut self, raw: &Value, path: &str, depth: usize) -> Option<Condition> {
        let Value::Object(map) = raw else {
            self.error(
                path,
                format!("a condition must be a mapping with one of {}", KINDS.join(", ")),
            );
            return None;
        };
        let kinds: Vec<&str> = KINDS.iter().copied().filter(|k| map.contains_key(*k)).collect();
        let kind = match kinds.as_slice() {
            [kind] => *kind,
            [] => {
                self.error(path, format!("a condition needs one of {}", KINDS.join(", ")));
                return None;
            }
            several => {
                self.error(
                    path,
                    format!(
                        "a condition has exactly one kind; this one has {}",
                        several.join(" and ")
                    ),
                );
                return None;
            }
        };
        if matches!(kind, "all" | "any" | "not") {
            for key in map.keys().filter(|k| k.as_str() != kind) {
                self.error(
                    format!("{path}.{key}"),
                    format!("unknown field `{key}`: `{kind}` stands alone"),
                );
            }
            if depth >= MAX_DEPTH {
                self.error(
                    path,
                    format!("conditions nest at most {MAX_DEPTH} levels deep (all, any and not each add one)"),
                );
                return None;
            }
            let inner = &map[kind];
            if kind == "not" {
                let not = self.condition(inner, &format!("{path}.not"), depth + 1)?;
                return Some(Condition::Not { not: Box::new(not) });
            }
            let Value::Array(items) = inner else {
                self.error(format!("{path}.{kind}"), "expected a list of conditions");
                return None;
            };
            if items.is_empty() {
                self.error(format!("{path}.{kind}"), "needs at least one condition");
                return None;
            }
            let parsed: Vec<Option<Condition>> = items
                .iter()
                .enumerate()
                .map(|(i, item)| self.condition(item, &format!("{path}.{kind}[{i}]"), depth + 1))
                .collect();
            let parsed: Vec<Condition> = parsed.into_iter().collect::<Option<_>>()?;
            return Some(if kind == "all" {
                Condition::All { all: parsed }
            } else {
                Condition::Any { any: parsed }
            });
        }
        self.leaves += 1;
        if self.leaves == MAX_LEAVES + 1 {
            self.error(path, format!("a definition holds at most {MAX_LEAVES} conditions"));
        }
        match kind {
            "profile" => {
                let leaf: ProfileLeaf = self.de(raw, path)?;
                if !is_field_path(&leaf.profile) {
                    self.error(
                        format!("{path}.profile"),
                        "a dotted path into the profile (traits.plan), with no empty part",
                    );
                }
                if let Some((field, message)) = op_problem(leaf.op, leaf.value.as_ref(), true) {
                    self.error(format!("{path}.{field}"), message);
                }
                Some(Condition::Profile(leaf))
            }
            "metric" => {
                let leaf: MetricLeaf = self.de(raw, path)?;
                if leaf.metric.is_count() && leaf.value < 0 {
                    self.error(format!("{path}.value"), "this metric is never negative");
                }
                Some(Condition::Metric(leaf))
            }
            "consent" => Some(Condition::Consent(self.de(raw, path)?)),
            "in_segment" => {
                let Some(Value::String(segment)) = map.get("in_segment") else {
                    self.error(format!("{path}.in_segment"), "expected a segment id");
                    return None;
                };
                for key in map.keys().filter(|k| k.as_str() != "in_segment") {
                    self.error(
                        format!("{path}.{key}"),
                        format!("unknown field `{key}`: `in_segment` stands alone"),
                    );
                }
                if !is_slug(segment) {
                    self.error(format!("{path}.in_segment"), format!("\"{segment}\" is not a slug"));
                } else if self.own_id.as_deref() == Some(segment.as_str()) {
                    self.error(format!("{path}.in_segment"), "a segment cannot be defined by itself");
                }
                Some(Condition::InSegment {
                    in_segment: segment.clone(),
                })
            }
            "performed" => {
                let leaf: PerformedLeaf = self.de(raw, path)?;
                self.check_event(&leaf.performed, &format!("{path}.performed"));
                self.check_filters(&leaf.filters, path);
                self.check_window(leaf.within_days, path);
                if leaf.distinct.as_deref().is_some_and(|d| !is_field_path(d)) {
                    self.error(
                        format!("{path}.distinct"),
                        "a dotted path into the event's properties (product_id), with no empty part",
                    );
                }
                for (key, bound) in [("at_least", leaf.at_least), ("at_most", leaf.at_most)] {
                    if bound.is_some_and(|n| n > MAX_COUNT) {
                        self.error(format!("{path}.{key}"), format!("at most {MAX_COUNT}"));
                    }
                }
                if leaf.at_least == Some(0) {
                    self.error(
                        format!("{path}.at_least"),
                        "at_least 0 holds for everyone: leave it out, or use not_performed",
                    );
                }
                if let (Some(least), Some(most)) = (leaf.at_least, leaf.at_most) {
                    if least > most {
                        self.error(format!("{path}.at_most"), format!("less than at_least ({least})"));
                    }
                }
                Some(Condition::Performed(leaf))
            }
            "not_performed" => {
                let leaf: NotPerformedLeaf = self.de(raw, path)?;
                self.check_event(&leaf.not_performed, &format!("{path}.not_performed"));
                self.check_filters(&leaf.filters, path);
                self.check_window(leaf.within_days, path);
                Some(Condition::NotPerformed(leaf))
            }
            _ => {
                let leaf: EngagedLeaf = self.de(raw, path)?;
                if let Some(campaign) = &leaf.campaign {
                    if !is_slug(campaign) {
                        self.error(format!("{path}.campaign"), format!("\"{campaign}\" is not a slug"));
                    }
                }
                self.check_window(leaf.within_days, path);
                Some(Condition::Engaged(leaf))
            }
        }
    }

    fn check_event(&mut self, event_type: &str, path: &str) {
        if !is_event_type(event_type) {
            self.error(
                path,
                format!("\"{event_type}\" is not an event type (PascalCase letters and digits)"),
            );
        }
    }

    fn check_window(&mut self, days: u32, path: &str) {
        if !(1..=MAX_WINDOW_DAYS).contains(&days) {
            self.error(
                format!("{path}.within_days"),
                format!("a window of 1 to {MAX_WINDOW_DAYS} days"),
            );
        }
    }

    fn check_filters(&mut self, filters: &[PropertyTest], path: &str) {
        if filters.len() > MAX_WHERE {
            self.error(format!("{path}.where"), format!("at most {MAX_WHERE} property tests"));
        }
        for (i, test) in filters.iter().enumerate() {
            let at = format!("{path}.where[{i}]");
            if !is_field_path(&test.path) {
                self.error(
                    format!("{at}.path"),
                    "a dotted path into the event's properties (category), with no empty part",
                );
            }
            if let Some((field, message)) = op_problem(test.op, test.value.as_ref(), false) {
                self.error(format!("{at}.{field}"), message);
            }
        }
    }
}
