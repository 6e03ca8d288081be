//! The read side: [`SegmentMembersProjection`] indexes the membership events
//! (members per segment, segments per customer, the segments seen), and the
//! queries the read routes and the export make of it.

use super::rules::{affinity_rule, is_computed, AFFINITY_PREFIX, MANUAL_RULE, SEGMENTS};
use super::{SegmentEvent, SEGMENT_EVENT_TYPES, SEGMENT_MEMBERS};
use crate::consumer::{Projection, ProjectionError};
use crate::event::{DomainEvent, EventEnvelope};
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

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
