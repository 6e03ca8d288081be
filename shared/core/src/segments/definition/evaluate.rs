//! The evaluator: whether a customer's facts match a definition at an
//! instant, when the answer next changes by time alone, and what a
//! definition depends on.
//!
//! Every leaf is a step function of time over fixed facts, constant between
//! the instants it names ([`Condition::breakpoints`]) and taking its new
//! value exactly at them: an event at `t` counts in a window of `d` days
//! from `t` until just before `t + d days`, a consent is in force until
//! just before it lapses, days since the last order step up each whole day
//! after it, and logins in 7 days change at UTC midnights. So the whole
//! condition is constant between the union of its leaves' instants, and the
//! first of those after `now` at which it evaluates differently is exactly
//! when the answer changes (decision 0080).

use super::condition::{Condition, ConsentState, Engagement, FieldOp, Metric, MetricLeaf, MetricOp, PropertyTest};
use super::RuleSegment;
use crate::customer::metrics::{ActivityFacts, ProfileMetrics, LOGIN_WINDOW_DAYS};
use crate::vocabulary::{ActiveConsent, Channel, Purpose};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// The event of an email open (SES feedback).
pub const EMAIL_OPENED: &str = "EmailOpened";
/// The event of an email click (SES feedback).
pub const EMAIL_CLICKED: &str = "EmailClicked";

/// One of the customer's events that a definition may count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFact {
    pub event_type: String,
    /// When it happened (`occurred_at`).
    pub at: DateTime<Utc>,
    /// Its data. For `EmailOpened` and `EmailClicked`, the caller adds
    /// `campaign_id`, the campaign of the message (the feedback events name
    /// only the message).
    pub properties: Value,
}

/// The metrics a definition may test, as facts rather than a snapshot, so
/// that the ones that move with the clock can be evaluated at any instant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricFacts {
    pub ltv_minor: i64,
    pub orders: u64,
    pub aov_minor: i64,
    /// When the last paid order was paid.
    pub last_order_at: Option<DateTime<Utc>>,
    /// Logins per UTC day.
    pub logins_by_day: BTreeMap<NaiveDate, u64>,
}

impl MetricFacts {
    /// From the profile metrics and the activity facts of the metrics projection.
    pub fn from_metrics(metrics: &ProfileMetrics, activity: Option<&ActivityFacts>) -> Self {
        MetricFacts {
            ltv_minor: metrics.lifetime_value_minor,
            orders: metrics.orders,
            aov_minor: metrics.average_order_value_minor,
            last_order_at: metrics.last_transaction_at,
            logins_by_day: activity.map(|a| a.logins_by_day.clone()).unwrap_or_default(),
        }
    }

    /// The metric's value at `at`, if it has one.
    pub fn value(&self, metric: Metric, at: DateTime<Utc>) -> Option<i64> {
        match metric {
            Metric::LtvMinor => Some(self.ltv_minor),
            Metric::Orders => i64::try_from(self.orders).ok(),
            Metric::AovMinor => Some(self.aov_minor),
            Metric::DaysSinceLastOrder => self.last_order_at.map(|last| (at - last).num_days().max(0)),
            Metric::Logins7d => {
                // As the metrics projection counts them: the last 7 UTC days, today included.
                let from = (at - Duration::days(LOGIN_WINDOW_DAYS - 1)).date_naive();
                let sum: u64 = self.logins_by_day.range(from..=at.date_naive()).map(|(_, n)| n).sum();
                i64::try_from(sum).ok()
            }
        }
    }
}

/// What is known about one customer when a definition is evaluated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerFacts {
    /// The customer 360 with traits, as JSON.
    pub profile: Value,
    pub metrics: MetricFacts,
    /// The latest unrevoked grant of each (purpose, channel).
    pub consents: Vec<ActiveConsent>,
    /// The segments the customer is in.
    pub segments: BTreeSet<String>,
    /// The customer's events of the types the definition depends on, within
    /// its longest window ([`Dependencies::window_days`]).
    pub events: Vec<EventFact>,
}

/// The answer at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evaluation {
    pub matches: bool,
    /// The earliest instant after `now` at which the answer changes if no
    /// fact changes (an event leaves its window, a window with no event
    /// closes, a consent lapses, a day passes); `None`: never by time alone.
    pub next_change: Option<DateTime<Utc>>,
}

/// What a definition reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dependencies {
    /// The event types its windows count: an event of another type never changes the answer through them.
    pub event_types: BTreeSet<String>,
    /// The longest window, in days: older events never count.
    pub window_days: u32,
    /// Whether it reads the profile.
    pub profile: bool,
    pub metrics: BTreeSet<Metric>,
    pub consents: BTreeSet<(Purpose, Channel)>,
    /// The segments whose membership it reads.
    pub segments: BTreeSet<String>,
}

/// A JSON date (`2026-01-31`, midnight UTC) or RFC 3339 timestamp.
pub(super) fn parse_instant(value: &Value) -> Option<DateTime<Utc>> {
    let text = value.as_str()?;
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = root;
    for segment in path.split('.') {
        current = match current {
            Value::Object(map) => map.get(segment)?,
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

fn days(n: &Value) -> Option<Duration> {
    n.as_i64().map(Duration::days)
}

/// Whether `actual` (absent: `None`) passes `op value` at `at`.
fn field_holds(actual: Option<&Value>, op: FieldOp, value: Option<&Value>, at: DateTime<Utc>) -> bool {
    let Some(actual) = actual else { return false };
    let expected = value.unwrap_or(&Value::Null);
    let ordered = |want: &[Ordering]| match (actual.as_f64(), expected.as_f64()) {
        (Some(a), Some(b)) => a.partial_cmp(&b).is_some_and(|o| want.contains(&o)),
        _ => false,
    };
    match op {
        FieldOp::Exists => true,
        FieldOp::Equals => equal(actual, expected),
        FieldOp::Contains => match (actual, expected) {
            (Value::String(text), Value::String(part)) => text.contains(part.as_str()),
            (Value::Array(items), _) => items.iter().any(|item| equal(item, expected)),
            _ => false,
        },
        FieldOp::In => matches!(expected, Value::Array(items) if items.iter().any(|item| equal(actual, item))),
        FieldOp::Gt => ordered(&[Ordering::Greater]),
        FieldOp::Gte => ordered(&[Ordering::Greater, Ordering::Equal]),
        FieldOp::Lt => ordered(&[Ordering::Less]),
        FieldOp::Lte => ordered(&[Ordering::Less, Ordering::Equal]),
        FieldOp::Before => matches!((parse_instant(actual), parse_instant(expected)), (Some(a), Some(b)) if a < b),
        FieldOp::After => matches!((parse_instant(actual), parse_instant(expected)), (Some(a), Some(b)) if a > b),
        FieldOp::WithinDays => match (parse_instant(actual), days(expected)) {
            (Some(t), Some(d)) => in_window(t, d, at),
            _ => false,
        },
    }
}

/// `t` lies in the window of `d` ending at `at`: `at - d < t <= at`.
fn in_window(t: DateTime<Utc>, d: Duration, at: DateTime<Utc>) -> bool {
    t <= at && at < t + d
}

fn filters_hold(filters: &[PropertyTest], event: &EventFact, at: DateTime<Utc>) -> bool {
    filters
        .iter()
        .all(|f| field_holds(lookup(&event.properties, &f.path), f.op, f.value.as_ref(), at))
}

fn midnight(day: NaiveDate) -> Option<DateTime<Utc>> {
    day.and_hms_opt(0, 0, 0).map(|t| t.and_utc())
}

impl Condition {
    /// The events a window leaf counts, with its window; `None` for other leaves.
    fn counted<'a>(&'a self, facts: &'a CustomerFacts) -> Option<(Vec<&'a EventFact>, Duration)> {
        let (events, within): (Vec<&EventFact>, u32) = match self {
            Condition::Performed(leaf) => (
                facts
                    .events
                    .iter()
                    .filter(|e| e.event_type == leaf.performed && filters_hold(&leaf.filters, e, e.at))
                    .collect(),
                leaf.within_days,
            ),
            Condition::NotPerformed(leaf) => (
                facts
                    .events
                    .iter()
                    .filter(|e| e.event_type == leaf.not_performed && filters_hold(&leaf.filters, e, e.at))
                    .collect(),
                leaf.within_days,
            ),
            Condition::Engaged(leaf) => (
                facts
                    .events
                    .iter()
                    .filter(|e| match leaf.engaged {
                        Engagement::Opened => e.event_type == EMAIL_OPENED || e.event_type == EMAIL_CLICKED,
                        Engagement::Clicked => e.event_type == EMAIL_CLICKED,
                    })
                    .filter(|e| {
                        leaf.campaign.as_deref().is_none_or(|campaign| {
                            lookup(&e.properties, "campaign_id").and_then(Value::as_str) == Some(campaign)
                        })
                    })
                    .collect(),
                leaf.within_days,
            ),
            _ => return None,
        };
        Some((events, Duration::days(i64::from(within))))
    }

    /// Whether the condition holds for `facts` at `at`.
    pub fn holds(&self, facts: &CustomerFacts, at: DateTime<Utc>) -> bool {
        let count = || {
            self.counted(facts)
                .map(|(events, window)| events.iter().filter(|e| in_window(e.at, window, at)).count())
                .unwrap_or(0)
        };
        match self {
            Condition::All { all } => all.iter().all(|c| c.holds(facts, at)),
            Condition::Any { any } => any.iter().any(|c| c.holds(facts, at)),
            Condition::Not { not } => !not.holds(facts, at),
            Condition::Profile(leaf) => {
                field_holds(lookup(&facts.profile, &leaf.profile), leaf.op, leaf.value.as_ref(), at)
            }
            Condition::Metric(leaf) => metric_holds(leaf, &facts.metrics, at),
            Condition::Consent(leaf) => {
                let in_force = facts.consents.iter().any(|c| {
                    c.purpose == leaf.consent.purpose && c.channel == leaf.consent.channel && c.is_in_force_at(at)
                });
                in_force == (leaf.state == ConsentState::Granted)
            }
            Condition::InSegment { in_segment } => facts.segments.contains(in_segment),
            Condition::Performed(leaf) => {
                let n = match &leaf.distinct {
                    None => count(),
                    Some(path) => self
                        .counted(facts)
                        .map(|(events, window)| {
                            events
                                .iter()
                                .filter(|e| in_window(e.at, window, at))
                                .filter_map(|e| lookup(&e.properties, path).map(Value::to_string))
                                .collect::<BTreeSet<String>>()
                                .len()
                        })
                        .unwrap_or(0),
                };
                n >= leaf.min() as usize && leaf.at_most.is_none_or(|most| n <= most as usize)
            }
            Condition::NotPerformed(_) => count() == 0,
            Condition::Engaged(_) => count() > 0,
        }
    }

    /// Adds the instants at which a leaf may change its value by time
    /// alone; between them every leaf is constant.
    pub fn breakpoints(&self, facts: &CustomerFacts, out: &mut Vec<DateTime<Utc>>) {
        match self {
            Condition::All { all: items } | Condition::Any { any: items } => {
                items.iter().for_each(|c| c.breakpoints(facts, out))
            }
            Condition::Not { not } => not.breakpoints(facts, out),
            Condition::Profile(leaf) if leaf.op == FieldOp::WithinDays => {
                let field = lookup(&facts.profile, &leaf.profile).and_then(parse_instant);
                if let (Some(t), Some(d)) = (field, leaf.value.as_ref().and_then(days)) {
                    out.extend([t, t + d]);
                }
            }
            Condition::Profile(_) | Condition::InSegment { .. } => {}
            Condition::Metric(leaf) => match leaf.metric {
                Metric::DaysSinceLastOrder => {
                    if let (Some(last), true) = (facts.metrics.last_order_at, leaf.value >= 0) {
                        // The value reaches `value` and leaves it on these instants.
                        out.extend([last + Duration::days(leaf.value), last + Duration::days(leaf.value + 1)]);
                    }
                }
                Metric::Logins7d => {
                    for day in facts.metrics.logins_by_day.keys() {
                        out.extend(midnight(*day));
                        out.extend(day.checked_add_days(chrono::Days::new(7)).and_then(midnight));
                    }
                }
                Metric::LtvMinor | Metric::Orders | Metric::AovMinor => {}
            },
            Condition::Consent(leaf) => {
                for c in &facts.consents {
                    if c.purpose == leaf.consent.purpose && c.channel == leaf.consent.channel {
                        out.push(c.granted_at);
                        out.extend(c.expires_at());
                    }
                }
            }
            Condition::Performed(_) | Condition::NotPerformed(_) | Condition::Engaged(_) => {
                if let Some((events, window)) = self.counted(facts) {
                    for e in events {
                        out.extend([e.at, e.at + window]);
                    }
                }
            }
        }
    }

    fn collect(&self, deps: &mut Dependencies) {
        match self {
            Condition::All { all: items } | Condition::Any { any: items } => items.iter().for_each(|c| c.collect(deps)),
            Condition::Not { not } => not.collect(deps),
            Condition::Profile(_) => deps.profile = true,
            Condition::Metric(leaf) => {
                deps.metrics.insert(leaf.metric);
            }
            Condition::Consent(leaf) => {
                deps.consents.insert((leaf.consent.purpose, leaf.consent.channel));
            }
            Condition::InSegment { in_segment } => {
                deps.segments.insert(in_segment.clone());
            }
            Condition::Performed(leaf) => {
                deps.window_days = deps.window_days.max(leaf.within_days);
                deps.event_types.insert(leaf.performed.clone());
            }
            Condition::NotPerformed(leaf) => {
                deps.window_days = deps.window_days.max(leaf.within_days);
                deps.event_types.insert(leaf.not_performed.clone());
            }
            Condition::Engaged(leaf) => {
                deps.window_days = deps.window_days.max(leaf.within_days);
                deps.event_types.insert(EMAIL_CLICKED.to_string());
                if leaf.engaged == Engagement::Opened {
                    deps.event_types.insert(EMAIL_OPENED.to_string());
                }
            }
        }
    }
}

fn metric_holds(leaf: &MetricLeaf, metrics: &MetricFacts, at: DateTime<Utc>) -> bool {
    let Some(actual) = metrics.value(leaf.metric, at) else {
        return false;
    };
    match leaf.op {
        MetricOp::Equals => actual == leaf.value,
        MetricOp::Gt => actual > leaf.value,
        MetricOp::Gte => actual >= leaf.value,
        MetricOp::Lt => actual < leaf.value,
        MetricOp::Lte => actual <= leaf.value,
    }
}

impl RuleSegment {
    /// Whether `facts` match at `now`, and when that next changes by time alone.
    pub fn evaluate(&self, facts: &CustomerFacts, now: DateTime<Utc>) -> Evaluation {
        let matches = self.matches.holds(facts, now);
        let mut instants = Vec::new();
        self.matches.breakpoints(facts, &mut instants);
        instants.retain(|t| *t > now);
        instants.sort();
        instants.dedup();
        let next_change = instants.into_iter().find(|t| self.matches.holds(facts, *t) != matches);
        Evaluation { matches, next_change }
    }

    /// The events and facts the definition reads.
    pub fn dependencies(&self) -> Dependencies {
        let mut deps = Dependencies::default();
        self.matches.collect(&mut deps);
        deps
    }
}
