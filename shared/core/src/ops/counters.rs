//! The operator's counters (decision 0085): a small projection of the
//! projector group, namespace `ops-counters`, from which the overview
//! (`GET /operations/overview`) counts
//!
//! - the events of each minute: partition `events#<date>`, sort key
//!   `<hour>#<shard>`, one count per minute of the hour (field `<MM>`),
//! - the messages of each hour by channel and outcome: partition
//!   `messages#<date>`, sort key `<hour>#<shard>`, one count per
//!   `<channel>#<outcome>`,
//! - the running journeys (partition `journeys#running`, one document per
//!   journey stream, put by `JourneyStarted`, deleted by `JourneyExited`).
//!
//! Counts per bucket (decision 0088): each event adds 1 to its bucket with
//! [`ReadOp::Add`], which moves in the commit's transaction with the
//! consumer's checkpoint, so a redelivered event adds nothing and a replay
//! (from cleared documents) counts each event once. A page's adds to one
//! bucket are one write. The sort key leaves room for shards by stream
//! ([`SHARDS`], [`shard`]), but there is one: a page of ten events of ten
//! streams touched about six of eight shards, so sharding multiplied the
//! writes of a page without keeping concurrent pages apart (decision 0088,
//! last addendum). No personal data: counts by minute,
//! channel and outcome only. The buckets are the events' `recorded_at`.
//!
//! The bucket documents expire: each carries `expires_at` (epoch seconds),
//! [`EVENTS_KEPT`] and [`MESSAGES_KEPT`] after its hour starts, past
//! anything the overview reads; the DynamoDB adapter writes it as the
//! table's TTL attribute. The running journeys do not expire.

use crate::consumer::{Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Duration, DurationRound, NaiveDate, Timelike, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The projection's name (checkpoints and documents).
pub const OPS_COUNTERS: &str = "ops-counters";

const RUNNING: &str = "journeys#running";

/// How many documents share one bucket's counts (by stream). One: a page
/// of the projector's queue carries events of many streams, so its adds
/// reach every shard anyway; one bucket is one write a page. The reader
/// lists a bucket's documents by prefix, so a store written with more
/// shards still adds up.
pub const SHARDS: u32 = 1;

/// How long an hour's event counts are kept after the hour starts (the
/// overview reads the last 60 minutes: this hour and the one before).
pub const EVENTS_KEPT: Duration = Duration::hours(3);

/// How long an hour's message counts are kept after the hour starts
/// (the overview reads the last 24 hours).
pub const MESSAGES_KEPT: Duration = Duration::hours(48);

/// The shard of a stream's counts: FNV-1a of its id (stable across builds
/// and platforms, unlike the standard hasher).
pub fn shard(stream_id: &str) -> u32 {
    let hash = stream_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % u64::from(SHARDS)) as u32
}

/// When a bucket starting at `hour` may go.
fn expires_at(hour: DateTime<Utc>, kept: Duration) -> i64 {
    (hour + kept).timestamp()
}

fn events_partition(date: NaiveDate) -> String {
    format!("events#{}", date.format("%Y-%m-%d"))
}

fn messages_partition(date: NaiveDate) -> String {
    format!("messages#{}", date.format("%Y-%m-%d"))
}

/// The sort key of an hour's bucket of one shard.
fn bucket(hour: DateTime<Utc>, shard: u32) -> String {
    format!("{:02}#{shard}", hour.hour())
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

/// An add of 1 to `field` of a bucket, with its expiry.
fn count_one(partition: String, sort: String, field: String, expires_at: i64) -> ReadOp {
    ReadOp::Add {
        partition,
        sort,
        counts: BTreeMap::from([(field, 1)]),
        set: serde_json::Map::from_iter([("expires_at".to_string(), json!(expires_at))]),
    }
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
        let at = event.recorded_at;
        let hour = at.duration_trunc(Duration::hours(1)).unwrap_or(at);
        let shard = shard(&event.stream_id);
        let mut ops = vec![count_one(
            events_partition(hour.date_naive()),
            bucket(hour, shard),
            format!("{:02}", at.minute()),
            expires_at(hour, EVENTS_KEPT),
        )];
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
            ops.push(count_one(
                messages_partition(hour.date_naive()),
                bucket(hour, shard),
                format!("{channel}#{outcome}"),
                expires_at(hour, MESSAGES_KEPT),
            ));
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

/// The documents of a partition whose sort key starts with `prefix`.
async fn documents(
    docs: &dyn ReadModelStore,
    partition: &str,
    prefix: &str,
) -> Result<Vec<(String, Value)>, StoreError> {
    let mut out: Vec<(String, Value)> = Vec::new();
    loop {
        let after = out.last().map(|(sort, _)| sort.clone());
        let page = docs
            .list(OPS_COUNTERS, partition, prefix, after.as_deref(), PAGE)
            .await?;
        let full = page.len() == PAGE;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// The counts of a bucket document (its integer fields but `expires_at`).
fn counts(doc: &Value) -> impl Iterator<Item = (&str, u64)> {
    doc.as_object()
        .into_iter()
        .flatten()
        .filter(|(field, _)| field.as_str() != "expires_at")
        .filter_map(|(field, n)| Some((field.as_str(), n.as_u64()?)))
}

/// Counts the events per minute of the last hour, the messages per channel
/// and outcome of the last 24 hours, and the running journeys: the bucket
/// documents of two hours (events) and of one or two dates (messages).
pub async fn counters(docs: &dyn ReadModelStore, now: DateTime<Utc>) -> Result<Counters, StoreError> {
    let this_minute = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let this_hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
    let mut per_minute: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
    for hour in [this_hour - Duration::hours(1), this_hour] {
        let prefix = format!("{:02}#", hour.hour());
        for (_, doc) in documents(docs, &events_partition(hour.date_naive()), &prefix).await? {
            for (minute, n) in counts(&doc) {
                if let Ok(m) = minute.parse::<i64>() {
                    *per_minute.entry(hour + Duration::minutes(m)).or_default() += n;
                }
            }
        }
    }
    let events_per_minute = (0..60)
        .rev()
        .map(|back| {
            let minute = this_minute - Duration::minutes(back);
            MinuteCount {
                minute,
                events: per_minute.get(&minute).copied().unwrap_or(0),
            }
        })
        .collect();
    let first_hour = this_hour - Duration::hours(23);
    let mut dates = vec![first_hour.date_naive()];
    if this_hour.date_naive() != first_hour.date_naive() {
        dates.push(this_hour.date_naive());
    }
    let mut messages: BTreeMap<(String, String), u64> = BTreeMap::new();
    for date in dates {
        for (sort, doc) in documents(docs, &messages_partition(date), "").await? {
            let hour = sort
                .split('#')
                .next()
                .and_then(|h| h.parse::<u32>().ok())
                .and_then(|h| date.and_hms_opt(h, 0, 0))
                .map(|h| h.and_utc());
            if !hour.is_some_and(|h| first_hour <= h && h <= this_hour) {
                continue;
            }
            for (key, n) in counts(&doc) {
                if let Some((channel, outcome)) = key.split_once('#') {
                    *messages.entry((channel.to_string(), outcome.to_string())).or_default() += n;
                }
            }
        }
    }
    Ok(Counters {
        events_per_minute,
        messages_24h: messages
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|((channel, outcome), count)| MessageCount {
                channel,
                outcome,
                count,
            })
            .collect(),
        running_journeys: documents(docs, RUNNING, "").await?.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::ConsumerGroup;
    use crate::memory::InMemoryReadModels;
    use crate::ports::{AppendRequest, EventStore, ExpectedVersion};
    use crate::testing::{raw_event, test_time, InMemoryDeadLetters, InMemoryEventStore};
    use std::sync::Arc;

    #[tokio::test]
    async fn buckets_count_by_minute_and_outcome_and_expire_after_the_windows_the_overview_reads() {
        let docs = InMemoryReadModels::default();
        let mut sent = raw_event("message-m1", "MessageSent", json!({"channel": "email"}));
        sent.recorded_at = test_time() + Duration::seconds(95);
        let ops = OpsCountersProjection.project(&sent, &docs).await.expect("projected");
        let shard = shard("message-m1");
        let add = |partition: &str| {
            ops.iter().find_map(|op| match op {
                ReadOp::Add {
                    partition: p,
                    sort,
                    counts,
                    set,
                } if p == partition => Some((
                    sort.clone(),
                    counts.clone(),
                    set.get("expires_at").and_then(Value::as_i64),
                )),
                _ => None,
            })
        };
        // 12:01:35 counts in the minute 01 of the hour 12, and the hour 12.
        assert_eq!(
            add("events#2026-11-23"),
            Some((
                format!("12#{shard}"),
                BTreeMap::from([("01".to_string(), 1)]),
                Some((test_time() + EVENTS_KEPT).timestamp())
            ))
        );
        assert_eq!(
            add("messages#2026-11-23"),
            Some((
                format!("12#{shard}"),
                BTreeMap::from([("email#sent".to_string(), 1)]),
                Some((test_time() + MESSAGES_KEPT).timestamp())
            ))
        );
        assert!(EVENTS_KEPT > Duration::minutes(120) && MESSAGES_KEPT > Duration::hours(25));
        // The running journeys do not expire.
        let started = raw_event("journey-j1", "JourneyStarted", json!({}));
        let ops = OpsCountersProjection.project(&started, &docs).await.expect("projected");
        assert!(ops.iter().any(|op| matches!(op,
            ReadOp::Put { partition, body, .. } if partition == RUNNING && body.get("expires_at").is_none())));
    }

    #[test]
    fn shards_are_stable_and_every_one_is_used() {
        // FNV-1a: the same on every build (the documents outlive the binary).
        assert_eq!(shard(""), (0xcbf2_9ce4_8422_2325_u64 % u64::from(SHARDS)) as u32);
        let used: std::collections::BTreeSet<u32> = (0..200).map(|i| shard(&format!("customer-{i}"))).collect();
        assert_eq!(used.len(), SHARDS as usize);
    }

    /// 40 streams over three hours (crossing midnight): events each minute,
    /// messages of two channels, journeys started and exited.
    async fn history() -> (Arc<InMemoryEventStore>, Vec<EventEnvelope>) {
        let store = Arc::new(InMemoryEventStore::default());
        let start = test_time() + Duration::hours(10) + Duration::minutes(30); // 22:30
        let mut all = Vec::new();
        for s in 0..40 {
            let stream = format!("stream-{s}");
            let mut events = Vec::new();
            for v in 0..6i64 {
                let (kind, data) = match (s % 4, v) {
                    (0, _) => ("MessageSent", json!({"channel": "email"})),
                    (1, 5) => ("EmailBounced", json!({})),
                    (1, _) => ("MessageSuppressed", json!({"channel": "sms"})),
                    (2, 0) => ("JourneyStarted", json!({})),
                    (2, 5) if s % 8 == 2 => ("JourneyExited", json!({})),
                    _ => ("PageViewed", json!({})),
                };
                let mut e = raw_event(&stream, kind, data);
                e.recorded_at = start + Duration::minutes(s * 3 + v * 7);
                events.push(e);
            }
            let appended = store
                .append(AppendRequest {
                    stream_id: stream.clone(),
                    expected: ExpectedVersion::NoStream,
                    events,
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await
                .expect("append");
            let _ = appended;
            all.extend(store.read_stream(&stream, 0, 100).await.expect("read"));
        }
        all.sort_by_key(|e| e.recorded_at);
        (store, all)
    }

    fn group(store: Arc<InMemoryEventStore>, docs: Arc<InMemoryReadModels>) -> ConsumerGroup {
        ConsumerGroup::new(
            "projector",
            vec![Arc::new(OpsCountersProjection)],
            store,
            docs,
            Arc::new(InMemoryDeadLetters::default()),
        )
    }

    /// What the overview must say, counted from the events themselves.
    fn expected(events: &[EventEnvelope], now: DateTime<Utc>) -> Counters {
        let this_minute = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
        let this_hour = now.duration_trunc(Duration::hours(1)).unwrap_or(now);
        let minute = |e: &EventEnvelope| {
            e.recorded_at
                .duration_trunc(Duration::minutes(1))
                .unwrap_or(e.recorded_at)
        };
        let hour = |e: &EventEnvelope| {
            e.recorded_at
                .duration_trunc(Duration::hours(1))
                .unwrap_or(e.recorded_at)
        };
        let mut messages: BTreeMap<(String, String), u64> = BTreeMap::new();
        for e in events
            .iter()
            .filter(|e| hour(e) > this_hour - Duration::hours(24) && hour(e) <= this_hour)
        {
            if let Some(outcome) = message_outcome(&e.event_type) {
                let channel = e.data.get("channel").and_then(Value::as_str).unwrap_or("email");
                *messages.entry((channel.into(), outcome.into())).or_default() += 1;
            }
        }
        let started = events.iter().filter(|e| e.event_type == "JourneyStarted").count();
        let exited = events.iter().filter(|e| e.event_type == "JourneyExited").count();
        Counters {
            events_per_minute: (0..60)
                .rev()
                .map(|back| {
                    let at = this_minute - Duration::minutes(back);
                    MinuteCount {
                        minute: at,
                        events: events.iter().filter(|e| minute(e) == at).count() as u64,
                    }
                })
                .collect(),
            messages_24h: messages
                .into_iter()
                .map(|((channel, outcome), count)| MessageCount {
                    channel,
                    outcome,
                    count,
                })
                .collect(),
            running_journeys: (started - exited) as u64,
        }
    }

    #[tokio::test]
    async fn a_redelivered_page_counts_once_and_a_replay_gives_the_same_documents() {
        let (store, events) = history().await;
        let last = events.last().map(|e| e.recorded_at).expect("events");
        let docs = Arc::new(InMemoryReadModels::default());
        let projector = group(store.clone(), docs.clone());
        for page in events.chunks(7) {
            projector.handle_page(page, last).await.expect("page");
        }
        // The bus delivers again: pages of another composition, one event alone.
        for page in events.chunks(11) {
            projector.handle_page(page, last).await.expect("page again");
        }
        projector.handle(&events[3], last).await.expect("one again");
        for now in [last, last - Duration::minutes(50), last + Duration::minutes(30)] {
            assert_eq!(
                counters(docs.as_ref(), now).await.expect("counters"),
                expected(&events, now),
                "at {now}"
            );
        }
        let counted: u64 = counters(docs.as_ref(), last)
            .await
            .expect("counters")
            .events_per_minute
            .iter()
            .map(|m| m.events)
            .sum();
        assert!(counted > 20, "the last hour has events: {counted}");
        // A replay from empty documents (what a rebuild does) writes the same documents.
        let replayed = Arc::new(InMemoryReadModels::default());
        crate::ops::replay(
            &group(store.clone(), replayed.clone()),
            store.as_ref(),
            last,
            &mut |_| {},
        )
        .await
        .expect("replay");
        assert_eq!(replayed.dump(), docs.dump());
        // One event at a time, in another order of streams: the same documents.
        let one_by_one = Arc::new(InMemoryReadModels::default());
        let single = group(store.clone(), one_by_one.clone());
        for e in events.iter().rev() {
            single.handle(e, last).await.expect("one");
        }
        assert_eq!(one_by_one.dump(), docs.dump());
    }
}
