//! The condition language: `all`, `any`, `not` and the leaves.

use crate::vocabulary::{Channel, Purpose};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A condition. Written as a mapping with exactly one of the keys `all`,
/// `any`, `not`, `profile`, `metric`, `consent`, `in_segment`, `performed`,
/// `not_performed` and `engaged`, which names its kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Condition {
    /// Every one holds (at least one condition).
    All {
        all: Vec<Condition>,
    },
    /// At least one holds (at least one condition).
    Any {
        any: Vec<Condition>,
    },
    /// It does not hold.
    Not {
        not: Box<Condition>,
    },
    Profile(ProfileLeaf),
    Metric(MetricLeaf),
    Consent(ConsentLeaf),
    /// The customer is in segment `in_segment` (any kind: fixed, manual, rules).
    InSegment {
        in_segment: String,
    },
    Performed(PerformedLeaf),
    NotPerformed(NotPerformedLeaf),
    Engaged(EngagedLeaf),
}

/// The keys that name a condition's kind.
pub(super) const KINDS: [&str; 10] = [
    "all",
    "any",
    "not",
    "profile",
    "metric",
    "consent",
    "in_segment",
    "performed",
    "not_performed",
    "engaged",
];

/// How a profile field or an event property is tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldOp {
    /// Equal to `value` (numbers compare numerically).
    Equals,
    /// A string holding `value`, or a list with an element equal to it.
    Contains,
    /// Present and not null (no `value`).
    Exists,
    /// Equal to one of the list `value`.
    In,
    Gt,
    Gte,
    Lt,
    Lte,
    /// A date or timestamp before `value` (a date `2026-01-31` or an RFC 3339 timestamp).
    Before,
    /// A date or timestamp after `value`.
    After,
    /// A date or timestamp in the last `value` days (profile fields only):
    /// `now - value days < field <= now`.
    WithinDays,
}

impl FieldOp {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldOp::Equals => "equals",
            FieldOp::Contains => "contains",
            FieldOp::Exists => "exists",
            FieldOp::In => "in",
            FieldOp::Gt => "gt",
            FieldOp::Gte => "gte",
            FieldOp::Lt => "lt",
            FieldOp::Lte => "lte",
            FieldOp::Before => "before",
            FieldOp::After => "after",
            FieldOp::WithinDays => "within_days",
        }
    }
}

/// A test of the customer's profile (the customer 360, traits included):
/// `profile` is a dotted path into it (`address.country`, `traits.plan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileLeaf {
    pub profile: String,
    pub op: FieldOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// A test of an event's properties (its data): `path` is a dotted path
/// into them (`category`, `utm.campaign`). `within_days` is not allowed here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyTest {
    pub path: String,
    pub op: FieldOp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// A profile metric (`customer::metrics::ProfileMetrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Lifetime value: paid less refunded, in minor units.
    #[serde(rename = "ltv_minor")]
    LtvMinor,
    /// Paid orders, ever.
    #[serde(rename = "orders")]
    Orders,
    /// Lifetime value per paid order, in minor units.
    #[serde(rename = "aov_minor")]
    AovMinor,
    /// Whole days since the last paid order; no value before the first.
    #[serde(rename = "days_since_last_order")]
    DaysSinceLastOrder,
    /// Logins on the last 7 UTC days, today included.
    #[serde(rename = "logins_7d")]
    Logins7d,
}

impl Metric {
    /// Whether the metric is a count or a number of days (never negative).
    pub fn is_count(self) -> bool {
        !matches!(self, Metric::LtvMinor | Metric::AovMinor)
    }
}

/// How a metric is compared with its `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricOp {
    Equals,
    Gt,
    Gte,
    Lt,
    Lte,
}

/// `metric` `op` `value` (a whole number). A metric with no value (days
/// since the last order of a customer who never ordered) fails every test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricLeaf {
    pub metric: Metric,
    pub op: MetricOp,
    pub value: i64,
}

/// A (purpose, channel) pair of consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRef {
    pub purpose: Purpose,
    pub channel: Channel,
}

/// Whether consent is in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// Given and not revoked or lapsed (`ActiveConsent::is_in_force_at`).
    Granted,
    /// Never given, revoked, or lapsed.
    NotGranted,
}

/// The customer's consent for `consent` is in `state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentLeaf {
    pub consent: ConsentRef,
    pub state: ConsentState,
}

/// The customer performed event `performed` (an event type), with every
/// `where` test holding on its properties, at least `at_least` and at most
/// `at_most` times in the last `within_days` days. With neither bound it
/// means at least once. With `distinct` (a path into the properties,
/// `product_id`), what is counted is the distinct values there, and an
/// event without one does not count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerformedLeaf {
    pub performed: String,
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<PropertyTest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distinct: Option<String>,
    pub within_days: u32,
}

impl PerformedLeaf {
    /// The fewest events that satisfy it.
    pub fn min(&self) -> u32 {
        match (self.at_least, self.at_most) {
            (Some(n), _) => n,
            (None, Some(_)) => 0,
            (None, None) => 1,
        }
    }
}

/// The customer did not perform `not_performed` (with every `where` test
/// holding) in the last `within_days` days.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotPerformedLeaf {
    pub not_performed: String,
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<PropertyTest>,
    pub within_days: u32,
}

/// What an email engagement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engagement {
    /// Opened an email (a click counts: it proves the open the pixel missed).
    Opened,
    /// Clicked a link in an email.
    Clicked,
}

/// The customer opened or clicked an email (of campaign `campaign`, if
/// given) in the last `within_days` days, from SES feedback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngagedLeaf {
    pub engaged: Engagement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    pub within_days: u32,
}
