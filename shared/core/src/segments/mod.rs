//! Segments (seed 000, "Purchase-Based Customer Segmentation";
//! docs/decisions/0013-profile-metrics-and-segments.md).
//!
//! Membership is a function of a customer's profile metrics at a moment:
//! RFM scores (1 to 5) and the seed's RFM segments, `high-value`, `buyers`
//! and `affinity-<category>`. The [`SegmentEvaluator`] recomputes it after
//! every commerce event of the customer and appends the difference to the
//! customer's `segments-<customer id>` stream as `CustomerSegmentAdded` /
//! `CustomerSegmentRemoved` (bus source `crm.segments`), with
//! `ExpectedVersion::Exactly`: the stream is the membership, so a redelivered
//! event finds nothing left to change and appends nothing. Because recency
//! moves with the clock, [`reevaluate_buyers`] re-evaluates every buyer (the
//! daily re-evaluation). The [`SegmentMembersProjection`] indexes the
//! membership events for the read routes.

use crate::clock::Clock;
use crate::consumer::{Projection, ProjectionError};
use crate::customer::metrics::{profile_metrics, ProfileMetrics};
use crate::event::{Actor, DomainEvent, EventEnvelope};
use crate::ports::{AppendError, AppendRequest, EventStore, ExpectedVersion, ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

#[cfg(test)]
mod tests;

/// The stream of customer `id`'s segment membership.
pub use crate::vocabulary::streams::segments_stream_id as stream_id;

pub const SEGMENT_EVALUATOR: &str = "segment-evaluator";
pub const SEGMENT_MEMBERS: &str = "segment-members";

/// An affinity segment's id is this prefix and the category's slug.
pub const AFFINITY_PREFIX: &str = "affinity-";
/// More than this share of purchased items in one category is an affinity (seed: 0.7).
pub const AFFINITY_THRESHOLD: f64 = 0.7;
/// High value: lifetime value above this (minor units: 1000.00) ...
pub const HIGH_VALUE_LTV_MINOR: i64 = 100_000;
/// ... and more than this many paid orders (seed: `ltv > 1000 && orderFrequency > 5`).
pub const HIGH_VALUE_MIN_ORDERS: u64 = 5;

/// A fixed segment: its id and the rule that decides membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SegmentDefinition {
    pub id: &'static str,
    pub name: &'static str,
    pub rule: &'static str,
}

/// The fixed segments; `affinity-<category>` ones appear as categories are bought.
pub const SEGMENTS: &[SegmentDefinition] = &[
    SegmentDefinition {
        id: "champions",
        name: "Champions",
        rule: "RFM recency >= 4, frequency >= 4 and monetary >= 4",
    },
    SegmentDefinition {
        id: "loyal-customers",
        name: "Loyal customers",
        rule: "RFM frequency >= 4 (not a champion)",
    },
    SegmentDefinition {
        id: "at-risk",
        name: "At risk",
        rule: "RFM recency <= 2, frequency >= 3 and monetary >= 3 (not loyal)",
    },
    SegmentDefinition {
        id: "new-customers",
        name: "New customers",
        rule: "RFM recency >= 4 and frequency <= 2",
    },
    SegmentDefinition {
        id: "needs-attention",
        name: "Needs attention",
        rule: "every other buyer (RFM)",
    },
    SegmentDefinition {
        id: "high-value",
        name: "High value customers",
        rule: "lifetime value > 1000.00 and more than 5 paid orders",
    },
    SegmentDefinition {
        id: "buyers",
        name: "Buyers",
        rule: "at least one paid order (first purchase)",
    },
];

/// The rule of an affinity segment.
pub fn affinity_rule(category: &str) -> String {
    format!("more than 70 % of purchased items in category {category}")
}

/// Is `id` a computed segment (fixed or affinity)? The others are manual:
/// journeys add and remove customers with `update_segment` steps.
pub fn is_computed(id: &str) -> bool {
    SEGMENTS.iter().any(|s| s.id == id) || id.starts_with(AFFINITY_PREFIX)
}

/// The rule of a manual segment.
pub const MANUAL_RULE: &str = "added and removed by campaigns (update_segment steps)";

/// A computed segment's rule, if `id` names one.
pub fn rule_of(id: &str) -> Option<String> {
    SEGMENTS
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.rule.to_string())
        .or_else(|| id.strip_prefix(AFFINITY_PREFIX).map(affinity_rule))
}

/// RFM scores, each 1 (worst) to 5 (best).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rfm {
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
}

/// Recency: days since the last paid order (<= 30: 5, <= 60: 4, <= 90: 3, <= 180: 2, else 1).
pub fn score_recency(days: i64) -> u8 {
    match days {
        ..=30 => 5,
        31..=60 => 4,
        61..=90 => 3,
        91..=180 => 2,
        _ => 1,
    }
}

/// Frequency: paid orders (1: 1, 2: 2, 3-4: 3, 5-7: 4, 8+: 5).
pub fn score_frequency(orders: u64) -> u8 {
    match orders {
        0 | 1 => 1,
        2 => 2,
        3 | 4 => 3,
        5..=7 => 4,
        _ => 5,
    }
}

/// Monetary: lifetime value in minor units (< 100.00: 1, < 250.00: 2, < 500.00: 3, < 1000.00: 4, else 5).
pub fn score_monetary(ltv_minor: i64) -> u8 {
    match ltv_minor {
        ..=9_999 => 1,
        10_000..=24_999 => 2,
        25_000..=49_999 => 3,
        50_000..=99_999 => 4,
        _ => 5,
    }
}

impl Rfm {
    /// The scores of a buyer; `None` before the first paid order.
    pub fn of(m: &ProfileMetrics) -> Option<Rfm> {
        let days = m.days_since_last_transaction?;
        Some(Rfm {
            recency: score_recency(days),
            frequency: score_frequency(m.orders),
            monetary: score_monetary(m.lifetime_value_minor),
        })
    }

    /// The seed's `determineRFMSegment`, rule for rule, in its order.
    pub fn segment(&self) -> &'static str {
        if self.recency >= 4 && self.frequency >= 4 && self.monetary >= 4 {
            "champions"
        } else if self.frequency >= 4 {
            "loyal-customers"
        } else if self.recency <= 2 && self.frequency >= 3 && self.monetary >= 3 {
            "at-risk"
        } else if self.recency >= 4 && self.frequency <= 2 {
            "new-customers"
        } else {
            "needs-attention"
        }
    }
}

/// The segments a customer with metrics `m` belongs to, each with why.
pub fn evaluate(m: &ProfileMetrics) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(rfm) = Rfm::of(m) else { return out };
    out.insert(
        rfm.segment().to_string(),
        format!("rfm {}-{}-{}", rfm.recency, rfm.frequency, rfm.monetary),
    );
    out.insert("buyers".into(), "first purchase".into());
    if m.lifetime_value_minor > HIGH_VALUE_LTV_MINOR && m.orders > HIGH_VALUE_MIN_ORDERS {
        out.insert(
            "high-value".into(),
            format!("lifetime value {} over {} orders", m.lifetime_value_minor, m.orders),
        );
    }
    for (category, affinity) in &m.category_affinity {
        if *affinity > AFFINITY_THRESHOLD {
            out.insert(
                format!("{AFFINITY_PREFIX}{category}"),
                format!("affinity {affinity:.2}"),
            );
        }
    }
    out
}

/// A membership change, on the customer's `segments-<id>` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum SegmentEvent {
    CustomerSegmentAdded {
        segment: String,
        customer_id: String,
        reason: String,
    },
    CustomerSegmentRemoved {
        segment: String,
        customer_id: String,
        reason: String,
    },
}

impl DomainEvent for SegmentEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

pub const SEGMENT_EVENT_TYPES: &[&str] = &["CustomerSegmentAdded", "CustomerSegmentRemoved"];

/// Why a re-evaluation did not finish; nothing half-done is left (each
/// append is atomic, and a retry finds what is still to do).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("segments of {customer_id} kept changing concurrently")]
    Contended { customer_id: String },
    #[error("segment event unreadable: {0}")]
    Codec(String),
}

/// The segments customer `customer_id` is in, from their stream, and its version.
async fn current_membership(
    store: &dyn EventStore,
    customer_id: &str,
) -> Result<(BTreeMap<String, String>, u64), SegmentError> {
    let events = store.read_stream(&stream_id(customer_id), 0, usize::MAX).await?;
    let mut members = BTreeMap::new();
    let mut version = 0;
    for e in &events {
        version = e.version;
        match SegmentEvent::from_envelope(e).map_err(|err| SegmentError::Codec(err.to_string()))? {
            SegmentEvent::CustomerSegmentAdded { segment, reason, .. } => {
                members.insert(segment, reason);
            }
            SegmentEvent::CustomerSegmentRemoved { segment, .. } => {
                members.remove(&segment);
            }
        }
    }
    Ok((members, version))
}

/// Brings the customer's `segments-<id>` stream in line with their metrics at
/// `now`; returns the events appended (none when it already was).
/// `cause` is the event that led here, for causation and correlation.
pub async fn reconcile(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    customer_id: &str,
    now: DateTime<Utc>,
    cause: Option<&EventEnvelope>,
) -> Result<Vec<EventEnvelope>, SegmentError> {
    for _ in 0..8 {
        let metrics = profile_metrics(docs, customer_id, now).await?;
        let desired = evaluate(&metrics);
        let (current, version) = current_membership(store, customer_id).await?;
        let mut changes = Vec::new();
        // Manual segments are not the evaluator's to remove.
        for (segment, _) in current
            .iter()
            .filter(|(s, _)| is_computed(s) && !desired.contains_key(*s))
        {
            changes.push(SegmentEvent::CustomerSegmentRemoved {
                segment: segment.clone(),
                customer_id: customer_id.to_string(),
                reason: format!("no longer matches: {}", rule_of(segment).unwrap_or_default()),
            });
        }
        for (segment, reason) in desired.iter().filter(|(s, _)| !current.contains_key(*s)) {
            changes.push(SegmentEvent::CustomerSegmentAdded {
                segment: segment.clone(),
                customer_id: customer_id.to_string(),
                reason: reason.clone(),
            });
        }
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let stream = stream_id(customer_id);
        let events = changes
            .iter()
            .map(|c| envelope_of(c, customer_id, now, cause))
            .collect::<Result<Vec<_>, SegmentError>>()?;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exactly(version)
        };
        match store
            .append(AppendRequest {
                stream_id: stream,
                expected,
                events,
                reservations: Vec::new(),
                receipt: None,
            })
            .await
        {
            Ok(appended) => return Ok(appended.events),
            // Another evaluation got there first: look again.
            Err(AppendError::Conflict { .. }) => continue,
            Err(AppendError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(StoreError::Failed(e.to_string()).into()),
        }
    }
    Err(SegmentError::Contended {
        customer_id: customer_id.to_string(),
    })
}

fn envelope_of(
    change: &SegmentEvent,
    customer_id: &str,
    now: DateTime<Utc>,
    cause: Option<&EventEnvelope>,
) -> Result<EventEnvelope, SegmentError> {
    let (event_type, data) = change.to_parts().map_err(|e| SegmentError::Codec(e.to_string()))?;
    Ok(EventEnvelope {
        event_id: uuid::Uuid::now_v7(),
        stream_id: stream_id(customer_id),
        version: 0,
        event_type,
        schema_version: 1,
        customer_id: Some(customer_id.to_string()),
        occurred_at: now,
        recorded_at: now,
        causation_id: cause.map(|c| c.event_id),
        correlation_id: cause.map_or_else(uuid::Uuid::now_v7, |c| c.correlation_id),
        actor: Actor::system("segments").as_str().to_string(),
        data,
    })
}

/// A journey's `update_segment` step (`SegmentMembershipRequested`): adds
/// the customer to a manual segment or removes them, if that changes
/// anything. Computed segments are not writable: such a request is ignored.
pub async fn apply_request(
    store: &dyn EventStore,
    customer_id: &str,
    segment: &str,
    add: bool,
    now: DateTime<Utc>,
    cause: Option<&EventEnvelope>,
) -> Result<Vec<EventEnvelope>, SegmentError> {
    if is_computed(segment) {
        tracing::info!(
            segment,
            customer_id,
            "a computed segment is not writable by campaigns; request ignored"
        );
        return Ok(Vec::new());
    }
    let reason = match cause {
        Some(c) => format!("requested by {}", c.actor),
        None => "requested".to_string(),
    };
    for _ in 0..8 {
        let (current, version) = current_membership(store, customer_id).await?;
        let change = match (add, current.contains_key(segment)) {
            (true, false) => SegmentEvent::CustomerSegmentAdded {
                segment: segment.to_string(),
                customer_id: customer_id.to_string(),
                reason: reason.clone(),
            },
            (false, true) => SegmentEvent::CustomerSegmentRemoved {
                segment: segment.to_string(),
                customer_id: customer_id.to_string(),
                reason: reason.clone(),
            },
            _ => return Ok(Vec::new()),
        };
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exactly(version)
        };
        match store
            .append(AppendRequest {
                stream_id: stream_id(customer_id),
                expected,
                events: vec![envelope_of(&change, customer_id, now, cause)?],
                reservations: Vec::new(),
                receipt: None,
            })
            .await
        {
            Ok(appended) => return Ok(appended.events),
            Err(AppendError::Conflict { .. }) => continue,
            Err(AppendError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(StoreError::Failed(e.to_string()).into()),
        }
    }
    Err(SegmentError::Contended {
        customer_id: customer_id.to_string(),
    })
}

/// Re-evaluates every buyer at `now` (recency moves with the clock): the
/// daily re-evaluation. Returns how many events it appended.
pub async fn reevaluate_buyers(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    now: DateTime<Utc>,
) -> Result<usize, SegmentError> {
    let mut appended = 0;
    let mut after: Option<String> = None;
    loop {
        let page = members(docs, "buyers", after.as_deref(), 500).await?;
        for m in &page {
            appended += reconcile(store, docs, &m.customer_id, now, None).await?.len();
        }
        if page.len() < 500 {
            return Ok(appended);
        }
        after = page.last().map(|m| m.customer_id.clone());
    }
}

/// Re-evaluates a customer's segments after each of their commerce events
/// (in the projector, after the profile metrics).
pub struct SegmentEvaluator {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
}

impl SegmentEvaluator {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        SegmentEvaluator { store, clock }
    }
}

#[async_trait]
impl Projection for SegmentEvaluator {
    fn name(&self) -> &'static str {
        SEGMENT_EVALUATOR
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "OrderPlaced" | "PaymentSucceeded" | "RefundRequested" | "OrderAmended" | "SegmentMembershipRequested"
        )
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let customer = event.customer_id.as_deref().ok_or_else(|| {
            ProjectionError::Invalid(format!("{} {} has no customer_id", event.event_type, event.event_id))
        })?;
        let done = if event.event_type == "SegmentMembershipRequested" {
            let segment = event.data.get("segment").and_then(Value::as_str);
            let action = event.data.get("action").and_then(Value::as_str);
            let (Some(segment), Some(action @ ("add" | "remove"))) = (segment, action) else {
                return Err(ProjectionError::Invalid(format!(
                    "SegmentMembershipRequested {} needs a segment and an action (add, remove)",
                    event.event_id
                )));
            };
            apply_request(
                self.store.as_ref(),
                customer,
                segment,
                action == "add",
                self.clock.now(),
                Some(event),
            )
            .await
        } else {
            reconcile(self.store.as_ref(), docs, customer, self.clock.now(), Some(event)).await
        };
        match done {
            Ok(_) => Ok(Vec::new()),
            Err(SegmentError::Store(e)) => Err(ProjectionError::Store(e)),
            Err(SegmentError::Contended { customer_id }) => Err(ProjectionError::Store(StoreError::Unavailable(
                format!("segments of {customer_id} kept changing"),
            ))),
            Err(SegmentError::Codec(m)) => Err(ProjectionError::Invalid(m)),
        }
    }
}

/// One member of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub segment: String,
    pub customer_id: String,
    pub since: DateTime<Utc>,
    pub reason: String,
}

const CATALOG: &str = "catalog";

fn segment_partition(segment: &str) -> String {
    format!("segment#{segment}")
}

fn customer_partition(customer_id: &str) -> String {
    format!("customer#{customer_id}")
}

/// Indexes the membership events: members per segment, segments per customer.
pub struct SegmentMembersProjection;

#[async_trait]
impl Projection for SegmentMembersProjection {
    fn name(&self) -> &'static str {
        SEGMENT_MEMBERS
    }

    fn handles(&self, event_type: &str) -> bool {
        SEGMENT_EVENT_TYPES.contains(&event_type)
    }

    async fn project(&self, event: &EventEnvelope, _docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        Ok(match SegmentEvent::from_envelope(event)? {
            SegmentEvent::CustomerSegmentAdded {
                segment,
                customer_id,
                reason,
            } => {
                let member = Member {
                    segment: segment.clone(),
                    customer_id: customer_id.clone(),
                    since: event.occurred_at,
                    reason,
                };
                let body = serde_json::to_value(&member).map_err(|e| ProjectionError::Invalid(e.to_string()))?;
                vec![
                    ReadOp::Put {
                        partition: segment_partition(&segment),
                        sort: customer_id.clone(),
                        body: body.clone(),
                    },
                    ReadOp::Put {
                        partition: customer_partition(&customer_id),
                        sort: segment.clone(),
                        body,
                    },
                    // The same content whoever writes it: safe across streams.
                    ReadOp::Put {
                        partition: CATALOG.into(),
                        sort: segment.clone(),
                        body: json!({ "id": segment }),
                    },
                ]
            }
            SegmentEvent::CustomerSegmentRemoved {
                segment, customer_id, ..
            } => vec![
                ReadOp::Delete {
                    partition: segment_partition(&segment),
                    sort: customer_id.clone(),
                },
                ReadOp::Delete {
                    partition: customer_partition(&customer_id),
                    sort: segment,
                },
            ],
        })
    }
}

fn decode_member(v: Value) -> Result<Member, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Failed(format!("segment member unreadable: {e}")))
}

/// A page of `segment`'s members, by customer id, after `after`.
pub async fn members(
    docs: &dyn ReadModelStore,
    segment: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Member>, StoreError> {
    docs.list(SEGMENT_MEMBERS, &segment_partition(segment), "", after, limit)
        .await?
        .into_iter()
        .map(|(_, v)| decode_member(v))
        .collect()
}

/// How many members `segment` has (counted page by page).
pub async fn member_count(docs: &dyn ReadModelStore, segment: &str) -> Result<u64, StoreError> {
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let page = docs
            .list(SEGMENT_MEMBERS, &segment_partition(segment), "", after.as_deref(), 1000)
            .await?;
        count += page.len() as u64;
        if page.len() < 1000 {
            return Ok(count);
        }
        after = page.last().map(|(k, _)| k.clone());
    }
}

/// The segments `customer_id` is in.
pub async fn customer_segments(docs: &dyn ReadModelStore, customer_id: &str) -> Result<Vec<Member>, StoreError> {
    docs.list(SEGMENT_MEMBERS, &customer_partition(customer_id), "", None, 1000)
        .await?
        .into_iter()
        .map(|(_, v)| decode_member(v))
        .collect()
}

/// Is `customer_id` in `segment`?
pub async fn is_member(docs: &dyn ReadModelStore, segment: &str, customer_id: &str) -> Result<bool, StoreError> {
    Ok(docs
        .get(SEGMENT_MEMBERS, &customer_partition(customer_id), segment)
        .await?
        .is_some())
}

/// Is `customer_id` in `segment`, as their segments stream says? Strongly
/// consistent (the index may lag behind): what the journey engine's
/// `entry.segment` checks, one stream read.
pub async fn is_member_now(store: &dyn EventStore, segment: &str, customer_id: &str) -> Result<bool, StoreError> {
    match current_membership(store, customer_id).await {
        Ok((members, _)) => Ok(members.contains_key(segment)),
        Err(SegmentError::Store(e)) => Err(e),
        Err(e) => Err(StoreError::Failed(e.to_string())),
    }
}

/// Every segment: the fixed ones and the affinity segments seen so far, with rules.
pub async fn all_segments(docs: &dyn ReadModelStore) -> Result<Vec<(String, String, String)>, StoreError> {
    let mut out: Vec<(String, String, String)> = SEGMENTS
        .iter()
        .map(|s| (s.id.to_string(), s.name.to_string(), s.rule.to_string()))
        .collect();
    let mut after: Option<String> = None;
    loop {
        let page = docs.list(SEGMENT_MEMBERS, CATALOG, "", after.as_deref(), 1000).await?;
        for (id, _) in &page {
            if let Some(category) = id.strip_prefix(AFFINITY_PREFIX) {
                out.push((id.clone(), format!("Affinity: {category}"), affinity_rule(category)));
            } else if !is_computed(id) {
                out.push((id.clone(), id.clone(), MANUAL_RULE.to_string()));
            }
        }
        if page.len() < 1000 {
            return Ok(out);
        }
        after = page.last().map(|(k, _)| k.clone());
    }
}
