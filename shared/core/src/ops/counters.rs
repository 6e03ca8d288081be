//! The operator's counters (decision 0085): a small projection of the
//! projector group, namespace `ops-counters`, from which the overview
//! (`GET /operations/overview`) counts
//!
//! - the events of each minute (partition `events#<minute>`, one document
//!   per event, sort key its event id),
//! - the messages of each hour by channel and outcome (partition
//!   `messages#<hour>`, sort key `<channel>#<outcome>#<event id>`),
//! - the running journeys (partition `journeys#running`, one document per
//!   journey stream, put by `JourneyStarted`, deleted by `JourneyExited`).
//!
//! One document per event rather than a counter per bucket: concurrent
//! commits of different streams never overwrite each other's count, and a
//! redelivered event writes the same document again (decision 0088 weighs
//! the alternatives). No personal data: event ids, types, channels and
//! stream ids only. The buckets are the events' `recorded_at`.
//!
//! The bucket documents expire (decision 0088): each carries `expires_at`
//! (epoch seconds), [`EVENTS_KEPT`] after its minute and [`MESSAGES_KEPT`]
//! after its hour, past anything the overview reads; the DynamoDB adapter
//! writes it as the table's TTL attribute. The running journeys do not.

use crate::consumer::{Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The projection's name (checkpoints and documents).
pub const OPS_COUNTERS: &str = "ops-counters";

const RUNNING: &str = "journeys#running";

/// How long a minute's event documents are kept after the minute starts
/// (the overview reads the last 60 minutes).
pub const EVENTS_KEPT: Duration = Duration::hours(2);

/// How long an hour's message documents are kept after the hour starts
/// (the overview reads the last 24 hours).
pub const MESSAGES_KEPT: Duration = Duration::hours(48);

/// When a document of the bucket starting at `bucket` may go.
fn expires_at(bucket: DateTime<Utc>, kept: Duration) -> i64 {
    (bucket + kept).timestamp()
}

fn minute_key(at: DateTime<Utc>) -> String {
    format!("events#{}", at.format("%Y-%m-%dT%H:%M"))
}

fn hour_key(at: DateTime<Utc>) -> String {
    format!("messages#{}", at.format("%Y-%m-%dT%H"))
}

/// The outcome a message event records, by its type (`None`: not a message outcome).
pub fn message_outcome(event_type: &str) -> Option<&'static str> {
    Some(match event_type {
        "MessageRequested" => "requested",
        "MessageSent" => "sent",
        "MessageSuppressed" => "suppressed",
        "MessageDeferred" => "deferred",
        "MessageFailed" => "failed",
        "MessageOutcomeUnknown" => "unknown",
        "MessageNotAccepted" => "not_accepted",
        "MessageAccepted" => "accepted",
        "MessageContentRejected" => "rejected",
        "EmailDelivered" => "delivered",
        "EmailBounced" => "bounced",
        "EmailComplained" => "complained",
        _ => return None,
    })
}

/// The counters projection (projector group).
pub struct OpsCountersProjection;

#[async_trait]
impl Projection for OpsCountersProjection {
    fn name(&self) -> &'static str {
        OPS_COUNTERS
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    async fn project(&self, event: &EventEnvelope, _docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let id = event.event_id.to_string();
        let at = event.recorded_at;
        let minute = at.duration_trunc(Duration::minutes(1)).unwrap_or(at);
        let mut ops = vec![ReadOp::Put {
            partition: minute_key(at),
            sort: id.clone(),
            body: json!({ "type": event.event_type, "expires_at": expires_at(minute, EVENTS_KEPT) }),
        }];
        if let Some(outcome) = message_outcome(&event.event_type) {
            let channel =
                event
                    .data
                    .get("channel")
                    .and_then(Value::as_str)
                    .unwrap_or(if event.event_type.starts_with("Email") {
                        "email"
                    } else {
                        "unknown"
                    });
            let hour = at.duration_trunc(Duration::hours(1)).unwrap_or(at);
            ops.push(ReadOp::Put {
                partition: hour_key(at),
                sort: format!("{channel}#{outcome}#{id}"),
                body: json!({ "expires_at": expires_at(hour, MESSAGES_KEPT) }),
            });
        }
        match event.event_type.as_str() {
            "JourneyStarted" => ops.push(ReadOp::Put {
                partition: RUNNING.into(),
                sort: event.stream_id.clone(),
                body: json!({ "started_at": event.occurred_at }),
            }),
            "JourneyExited" => ops.push(ReadOp::Delete {
                partition: RUNNING.into(),
                sort: event.stream_id.clone(),
            }),
            _ => {}
        }
        Ok(ops)
    }
}

/// The events of one minute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MinuteCount {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub events: u64,
}

/// The messages of one channel with one outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageCount {
    pub channel: String,
    pub outcome: String,
    pub count: u64,
}

/// What the counters say at `now`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// The last 60 minutes, oldest first (the current minute last).
    pub events_per_minute: Vec<MinuteCount>,
    /// The messages of the last 24 hours (whole hours, the current one included).
    pub messages_24h: Vec<MessageCount>,
    pub running_journeys: u64,
}

/// The most documents read per page.
const PAGE: usize = 1000;

/// The sort keys of a partition.
async fn keys(docs: &dyn ReadModelStore, partition: &str) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = docs.list(OPS_COUNTERS, partition, "", after.as_deref(), PAGE).await?;
        let full = page.len() == PAGE;
        out.extend(page.into_iter().map(|(sort, _)| sort));
        match (full, out.last()) {
            (true, Some(last)) => after = Some(last.clone()),
            _ => return Ok(out),
        }
    }
}

/// Counts the events per minute of the last hour, the messages per channel
/// and outcome of the last 24 hours, and the running journeys.
pub async fn counters(docs: &dyn ReadModelStore, now: DateTime<Utc>) -> Result<Counters, StoreError> {
    let this_minute = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let mut events_per_minute = Vec::with_capacity(60);
    for back in (0..60).rev() {
        let minute = this_minute - Duration::minutes(back);
        let n = keys(docs, &minute_key(minute)).await?.len();
        events_per_minute.push(MinuteCount {
            minute,
            events: n as u64,
        });
    }
    let this_hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let mut messages: BTreeMap<(String, String), u64> = BTreeMap::new();
    for back in 0..24 {
        for sort in keys(docs, &hour_key(this_hour - Duration::hours(back))).await? {
            let mut parts = sort.splitn(3, '#');
            if let (Some(channel), Some(outcome)) = (parts.next(), parts.next()) {
                *messages.entry((channel.to_string(), outcome.to_string())).or_default() += 1;
            }
        }
    }
    Ok(Counters {
        events_per_minute,
        messages_24h: messages
            .into_iter()
            .map(|((channel, outcome), count)| MessageCount {
                channel,
                outcome,
                count,
            })
            .collect(),
        running_journeys: keys(docs, RUNNING).await?.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryReadModels;
    use crate::testing::{raw_event, test_time};

    #[tokio::test]
    async fn bucket_documents_expire_after_the_windows_the_overview_reads() {
        let docs = InMemoryReadModels::default();
        let mut sent = raw_event("message-m1", "MessageSent", json!({"channel": "email"}));
        sent.recorded_at = test_time() + Duration::seconds(95);
        let ops = OpsCountersProjection.project(&sent, &docs).await.expect("projected");
        let expiry = |partition: &str| {
            ops.iter()
                .find_map(|op| match op {
                    ReadOp::Put { partition: p, body, .. } if p == partition => body.get("expires_at").cloned(),
                    _ => None,
                })
                .and_then(|v| v.as_i64())
        };
        // 12:01:35 counts in the minute 12:01 and the hour 12.
        let minute = test_time() + Duration::minutes(1);
        assert_eq!(
            expiry("events#2026-11-23T12:01"),
            Some((minute + EVENTS_KEPT).timestamp())
        );
        assert_eq!(
            expiry("messages#2026-11-23T12"),
            Some((test_time() + MESSAGES_KEPT).timestamp())
        );
        assert!(EVENTS_KEPT > Duration::minutes(60) && MESSAGES_KEPT > Duration::hours(25));
        // The running journeys do not expire.
        let started = raw_event("journey-j1", "JourneyStarted", json!({}));
        let ops = OpsCountersProjection.project(&started, &docs).await.expect("projected");
        assert!(ops.iter().any(|op| matches!(op,
            ReadOp::Put { partition, body, .. } if partition == RUNNING && body.get("expires_at").is_none())));
    }
}
