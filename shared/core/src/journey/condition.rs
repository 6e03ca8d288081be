//! Conditions: tests on the triggering event, on the customer's profile
//! (the customer 360 read model) or on the customer's segment membership
//! (decision 0086) that an event pattern cannot express, such as
//! comparisons with profile fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::BTreeSet;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    NotIn,
    Exists,
    NotExists,
}

impl Op {
    /// `exists` and `not_exists` take no value; every other operator needs one.
    pub fn takes_value(self) -> bool {
        !matches!(self, Op::Exists | Op::NotExists)
    }
}

/// One test: `path` `op` `value`.
///
/// `path` is `event.<field>...` (the full bus event: `event.detail.data.total_value_minor`)
/// or `profile.<field>...` (the customer 360 view). Segments are separated by
/// dots; a segment of digits indexes an array.
///
/// `segments.<segment-id>` (decision 0086) tests the customer's membership
/// of a segment of any kind (fixed, manual, rule-based), as their segments
/// stream has it when the condition is evaluated: `exists` holds for a
/// member, `not_exists` for anyone else; no other operator applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub path: String,
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// Where a condition path points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    Event,
    Profile,
    /// `segments.<segment-id>`: the customer's membership of a segment.
    Segments,
}

/// Splits `event.a.b` into its root and segments, or says why it cannot.
pub fn parse_path(path: &str) -> Result<(Root, Vec<&str>), String> {
    let mut parts = path.split('.');
    let root = match parts.next() {
        Some("event") => Root::Event,
        Some("profile") => Root::Profile,
        Some("segments") => Root::Segments,
        _ => {
            return Err(format!(
                "path \"{path}\" must start with \"event.\", \"profile.\" or \"segments.\""
            ))
        }
    };
    let segments: Vec<&str> = parts.collect();
    if segments.is_empty() || segments.iter().any(|s| s.is_empty()) {
        return Err(format!(
            "path \"{path}\" must name a field after its root, with no empty segments"
        ));
    }
    if root == Root::Segments {
        let id = segments.join(".");
        if segments.len() != 1 || !is_segment_id(&id) {
            return Err(format!(
                "path \"{path}\": \"{id}\" is not a segment id (a slug: lowercase letters, digits, single dashes)"
            ));
        }
    }
    Ok((root, segments))
}

/// A segment id: a slug (lowercase letters, digits, single dashes), as
/// `entry.segment` and `PUT /segments/{id}` take.
fn is_segment_id(text: &str) -> bool {
    !text.is_empty()
        && text.split('-').all(|part| !part.is_empty())
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The value at `segments` inside `root`, if any. JSON `null` counts as absent.
pub fn lookup<'a>(root: &'a Value, segments: &[&str]) -> Option<&'a Value> {
    let mut current = root;
    for segment in segments {
        current = match current {
            Value::Object(map) => map.get(*segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!current.is_null()).then_some(current)
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

impl Condition {
    /// The segment a `segments.<segment-id>` condition tests, if it is one
    /// (and its path is valid).
    pub fn segment(&self) -> Option<&str> {
        match parse_path(&self.path) {
            Ok((Root::Segments, segments)) => segments.first().copied(),
            _ => None,
        }
    }

    /// [`Condition::holds_in`] for a customer in no segment.
    #[cfg(test)]
    pub fn holds(&self, event: &Value, profile: Option<&Value>) -> bool {
        self.holds_in(event, profile, None)
    }

    /// Whether the condition holds for `event` (the full bus event), the
    /// customer's `profile`, if one is known, and the `segments` they are
    /// in, if read (decision 0086: read only for a campaign whose
    /// conditions name a segment; unread, the customer is in none).
    ///
    /// Numbers compare numerically (`5000` equals `5000.0`), strings
    /// lexicographically; other ordered comparisons fail. A missing path
    /// (absent, `null`, or a profile that is not known) fails every operator
    /// except `not_exists` and `ne`. A condition with an invalid path never
    /// holds (definitions are validated when loaded, so this does not happen).
    pub fn holds_in(&self, event: &Value, profile: Option<&Value>, member_of: Option<&BTreeSet<String>>) -> bool {
        let Ok((root, segments)) = parse_path(&self.path) else {
            return false;
        };
        let actual = match root {
            Root::Event => lookup(event, &segments),
            Root::Profile => profile.and_then(|p| lookup(p, &segments)),
            Root::Segments => {
                let member = member_of.is_some_and(|m| segments.first().is_some_and(|s| m.contains(*s)));
                return match self.op {
                    Op::Exists => member,
                    Op::NotExists => !member,
                    // Refused when loaded.
                    _ => false,
                };
            }
        };
        let Some(actual) = actual else {
            return matches!(self.op, Op::NotExists | Op::Ne);
        };
        let expected = self.value.as_ref().unwrap_or(&Value::Null);
        let in_list = || match expected {
            Value::Array(items) => items.iter().any(|item| equal(actual, item)),
            _ => false,
        };
        match self.op {
            Op::Exists => true,
            Op::NotExists => false,
            Op::Eq => equal(actual, expected),
            Op::Ne => !equal(actual, expected),
            Op::Gt => compare(actual, expected) == Some(Ordering::Greater),
            Op::Gte => matches!(compare(actual, expected), Some(Ordering::Greater | Ordering::Equal)),
            Op::Lt => compare(actual, expected) == Some(Ordering::Less),
            Op::Lte => matches!(compare(actual, expected), Some(Ordering::Less | Ordering::Equal)),
            Op::In => in_list(),
            Op::NotIn => matches!(expected, Value::Array(_)) && !in_list(),
        }
    }

    /// What is wrong with the condition, as `(field, message)` pairs with the
    /// field relative to the condition.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        match parse_path(&self.path) {
            Err(message) => problems.push(("path", message)),
            Ok((Root::Segments, _)) if self.op.takes_value() => {
                let op = serde_json::to_value(self.op).ok();
                problems.push((
                    "op",
                    format!(
                        "a segment condition ({}) takes exists (a member) or not_exists (not a member), not {}",
                        self.path,
                        op.as_ref().and_then(Value::as_str).unwrap_or_default()
                    ),
                ));
                // Its value means nothing either way.
                return problems;
            }
            Ok(_) => {}
        }
        match (&self.value, self.op.takes_value()) {
            (Some(_), false) => problems.push(("value", "exists and not_exists take no value".to_string())),
            (None, true) => problems.push(("value", format!("operator {:?} needs a value", self.op).to_lowercase())),
            (Some(value), true) => match self.op {
                Op::In | Op::NotIn if !matches!(value, Value::Array(items) if !items.is_empty()) => {
                    problems.push(("value", "in and not_in need a non-empty list".to_string()))
                }
                Op::Gt | Op::Gte | Op::Lt | Op::Lte if !(value.is_number() || value.is_string()) => {
                    problems.push(("value", "ordered comparisons need a number or a string".to_string()))
                }
                _ => {}
            },
            (None, false) => {}
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(path: &str, op: Op, value: Option<Value>) -> Condition {
        Condition {
            path: path.to_string(),
            op,
            value,
        }
    }

    fn cart(total: Value) -> Value {
        json!({
            "source": "crm.commerce",
            "detail-type": "CartAbandoned",
            "detail": { "data": { "cart_id": "c-1", "total_value_minor": total, "currency": "EUR",
                                  "items": [{ "sku": "A", "category": "consumables" }] } }
        })
    }

    const TOTAL: &str = "event.detail.data.total_value_minor";

    #[test]
    fn numbers_compare_numerically() {
        let threshold = cond(TOTAL, Op::Gte, Some(json!(5000)));
        assert!(threshold.holds(&cart(json!(5000)), None));
        assert!(threshold.holds(&cart(json!(5000.0)), None));
        assert!(threshold.holds(&cart(json!(12000)), None));
        assert!(!threshold.holds(&cart(json!(4999)), None));
        assert!(cond(TOTAL, Op::Eq, Some(json!(5000.0))).holds(&cart(json!(5000)), None));
        assert!(cond(TOTAL, Op::Gt, Some(json!(4999.5))).holds(&cart(json!(5000)), None));
        assert!(cond(TOTAL, Op::Lt, Some(json!(10000))).holds(&cart(json!(5000)), None));
        assert!(cond(TOTAL, Op::Lte, Some(json!(5000))).holds(&cart(json!(5000)), None));
        // A string is not a number: ordered comparisons across types fail.
        assert!(!threshold.holds(&cart(json!("9000")), None));
        assert!(!cond(TOTAL, Op::Lt, Some(json!(5000))).holds(&cart(json!("1")), None));
    }

    #[test]
    fn strings_compare_lexicographically() {
        let event = json!({ "time": "2026-03-01T10:00:00Z" });
        assert!(cond("event.time", Op::Gte, Some(json!("2026-01-01"))).holds(&event, None));
        assert!(!cond("event.time", Op::Lt, Some(json!("2026-01-01"))).holds(&event, None));
    }

    #[test]
    fn missing_paths_fail_all_but_not_exists_and_ne() {
        let event = cart(json!(100));
        let missing = "event.detail.data.coupon";
        for (op, value, expected) in [
            (Op::Eq, Some(json!("X")), false),
            (Op::Ne, Some(json!("X")), true),
            (Op::Gt, Some(json!(1)), false),
            (Op::Gte, Some(json!(1)), false),
            (Op::Lt, Some(json!(1)), false),
            (Op::Lte, Some(json!(1)), false),
            (Op::In, Some(json!(["X"])), false),
            (Op::NotIn, Some(json!(["X"])), false),
            (Op::Exists, None, false),
            (Op::NotExists, None, true),
        ] {
            assert_eq!(cond(missing, op, value.clone()).holds(&event, None), expected, "{op:?}");
            // Profile paths with no profile known are missing too.
            assert_eq!(
                cond("profile.tier", op, value).holds(&event, None),
                expected,
                "{op:?} profile"
            );
        }
        // null counts as missing; walking through a scalar is missing.
        let event = json!({ "detail": { "data": { "coupon": null, "n": 3 } } });
        assert!(cond("event.detail.data.coupon", Op::NotExists, None).holds(&event, None));
        assert!(!cond("event.detail.data.n.x", Op::Exists, None).holds(&event, None));
    }

    #[test]
    fn in_and_not_in() {
        let event = cart(json!(100));
        let currency = "event.detail.data.currency";
        assert!(cond(currency, Op::In, Some(json!(["EUR", "GBP"]))).holds(&event, None));
        assert!(!cond(currency, Op::In, Some(json!(["USD"]))).holds(&event, None));
        assert!(cond(currency, Op::NotIn, Some(json!(["USD"]))).holds(&event, None));
        assert!(!cond(currency, Op::NotIn, Some(json!(["EUR"]))).holds(&event, None));
        assert!(cond(TOTAL, Op::In, Some(json!([100.0, 200]))).holds(&event, None));
        // Array indexes.
        let first_category = "event.detail.data.items.0.category";
        assert!(cond(first_category, Op::Eq, Some(json!("consumables"))).holds(&event, None));
        assert!(!cond("event.detail.data.items.1.category", Op::Exists, None).holds(&event, None));
    }

    #[test]
    fn profile_fields() {
        let profile = json!({ "lifetime_value_minor": 250000, "segments": ["vip"], "email_verified": true });
        let event = cart(json!(100));
        assert!(cond("profile.lifetime_value_minor", Op::Gt, Some(json!(100000))).holds(&event, Some(&profile)));
        assert!(cond("profile.email_verified", Op::Eq, Some(json!(true))).holds(&event, Some(&profile)));
        assert!(cond("profile.segments.0", Op::In, Some(json!(["vip"]))).holds(&event, Some(&profile)));
        assert!(!cond("profile.email_verified", Op::Ne, Some(json!(true))).holds(&event, Some(&profile)));
    }

    #[test]
    fn problems_are_reported_by_field() {
        assert!(cond(TOTAL, Op::Gte, Some(json!(1))).problems().is_empty());
        assert!(cond(TOTAL, Op::Exists, None).problems().is_empty());
        let fields = |c: Condition| c.problems().into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(fields(cond("detail.x", Op::Eq, Some(json!(1)))), vec!["path"]);
        assert_eq!(fields(cond("event..x", Op::Eq, Some(json!(1)))), vec!["path"]);
        assert_eq!(fields(cond("profile", Op::Eq, Some(json!(1)))), vec!["path"]);
        assert_eq!(fields(cond(TOTAL, Op::Eq, None)), vec!["value"]);
        assert_eq!(fields(cond(TOTAL, Op::Exists, Some(json!(true)))), vec!["value"]);
        assert_eq!(fields(cond(TOTAL, Op::In, Some(json!("EUR")))), vec!["value"]);
        assert_eq!(fields(cond(TOTAL, Op::In, Some(json!([])))), vec!["value"]);
        assert_eq!(fields(cond(TOTAL, Op::Gt, Some(json!([1])))), vec!["value"]);
        assert!(!cond("bogus", Op::Exists, None).holds(&json!({}), None));
    }

    #[test]
    fn segment_conditions_test_membership() {
        let event = cart(json!(100));
        let member_of: BTreeSet<String> = ["de-speakers".to_string(), "vip".to_string()].into();
        let is = cond("segments.de-speakers", Op::Exists, None);
        let is_not = cond("segments.de-speakers", Op::NotExists, None);
        assert_eq!(is.segment(), Some("de-speakers"));
        assert!(is.holds_in(&event, None, Some(&member_of)));
        assert!(!is_not.holds_in(&event, None, Some(&member_of)));
        let other: BTreeSet<String> = ["vip".to_string()].into();
        assert!(!is.holds_in(&event, None, Some(&other)));
        assert!(is_not.holds_in(&event, None, Some(&other)));
        // Unread membership: in no segment.
        assert!(!is.holds_in(&event, None, None));
        assert!(is_not.holds_in(&event, None, None));
        // A profile's `segments` field is not the segments root.
        let profile = json!({ "segments": { "de-speakers": true } });
        assert!(!is.holds_in(&event, Some(&profile), None));
        // Other operators never hold (they are refused when loaded).
        assert!(!cond("segments.vip", Op::Eq, Some(json!(true))).holds_in(&event, None, Some(&member_of)));
        assert_eq!(cond("profile.x", Op::Exists, None).segment(), None);
        assert_eq!(cond("segments.Bad", Op::Exists, None).segment(), None);
    }

    #[test]
    fn segment_conditions_take_a_slug_and_exists_or_not_exists() {
        let problems = |c: Condition| c.problems();
        assert!(problems(cond("segments.de-speakers", Op::Exists, None)).is_empty());
        assert!(problems(cond("segments.rfm-champions", Op::NotExists, None)).is_empty());
        for bad in [
            "segments",
            "segments.",
            "segments.De",
            "segments.a--b",
            "segments.a.b",
            "segments.-a",
            "segments.a_b",
        ] {
            let found = problems(cond(bad, Op::Exists, None));
            assert_eq!(found.len(), 1, "{bad}: {found:?}");
            assert_eq!(found[0].0, "path", "{bad}");
        }
        let found = problems(cond("segments.vip", Op::Eq, Some(json!(true))));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "op");
        assert!(
            found[0].1.contains("segments.vip") && found[0].1.contains("not eq"),
            "{}",
            found[0].1
        );
        // No value error on top of the operator's.
        let found = problems(cond("segments.vip", Op::In, None));
        assert_eq!(found.iter().map(|(f, _)| *f).collect::<Vec<_>>(), vec!["op"]);
        assert_eq!(
            problems(cond("segments.vip", Op::Exists, Some(json!(true))))
                .iter()
                .map(|(f, _)| *f)
                .collect::<Vec<_>>(),
            vec!["value"]
        );
    }
}
