//! The relay: stored events onto the bus (ARCHITECTURE.md §2, the outbox;
//! decision 0030).
//!
//! The event table's stream hands the relay its new items in order; the relay
//! publishes each event as a [`BusEntry`] and never lets the stream skip one:
//!
//! - entries go out in order, at most [`MAX_ENTRIES_PER_PUT`] a call and at
//!   most [`MAX_ENTRY_BYTES`] a call (PutEvents' limit on a whole request);
//! - a call that fails as a whole (`BusError::Unavailable`: throttled, 5xx,
//!   connection lost) and the entries the bus refused one by one
//!   (`ThrottlingException`, `InternalFailure`, ...) are sent again, a
//!   bounded number of times ([`RetryPolicy`]) with a doubling pause between
//!   attempts; only what is still pending goes again. A refusal that no retry
//!   can change (`BusError::Refused`: no such bus, access denied; or a
//!   per-entry code in [`PERMANENT_ENTRY_CODES`]) is not retried;
//! - an event still not published after its attempts is parked on the
//!   dead-letter queue *whole*, as a [`ParkedEvent`]: its key in the events
//!   table (`pk` = stream id, `sk` = version), its id and type, and the bus
//!   entry itself (the envelope as stored, personal fields still encrypted),
//!   with the last error as the reason. An entry too large for the bus (over
//!   [`MAX_ENTRY_BYTES`]) or for a consumer's queue (the EventBridge event a
//!   rule delivers over [`MAX_QUEUE_MESSAGE_BYTES`]) is parked at once, and
//!   an entry too large for a dead-letter message (over
//!   [`MAX_PARKED_ENTRY_BYTES`]) is parked by its key alone: the event stays
//!   in the table and is re-read from there;
//! - a record that is not a readable event (poison) is parked with its
//!   reason and the stream record as received (its `Keys` name the item);
//! - only a record that could not even be parked stops the run: it is named
//!   in [`RelayReport::first_failure`] and the caller has it and everything
//!   after it delivered again. Entries after it that did go out are published
//!   twice then; consumers are idempotent (§6), so that is harmless, while
//!   skipping one would not be.
//!
//! `crm-ops dlq redrive --to relay` publishes parked events again and
//! `crm-ops republish` a time range straight from the table, both through
//! this relay.
//!
//! Nothing here knows about Lambda or EventBridge: the bus and the dead-letter
//! queue are ports, and the pause between attempts is injected (a no-op by
//! default) so crm-core needs no async runtime.

use crate::bus::{BusEntry, MAX_ENTRIES_PER_PUT, MAX_ENTRY_BYTES};
use crate::clock::Clock;
use crate::metrics::{names as metric, MetricSet, MetricsSink, NoMetrics};
use crate::ports::{BusError, DeadLetter, DeadLetterQueue, EventBus, ProgressReporter, PublishOutcome};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The `consumer` of the relay's dead letters.
pub const RELAY_CONSUMER: &str = "relay";

/// PutEvents counts an entry's `Time` as 14 bytes; the EventBridge adapter
/// always sets it (to `occurred_at`).
pub const TIME_FIELD_BYTES: usize = 14;

/// The largest entry a [`ParkedEvent`] carries whole. A queue message holds
/// 256 KB (body and attributes); the letter's other fields, its reason and
/// the attributes stay well inside the 16 KB left. A larger entry is parked
/// by its key and re-read from the events table on redrive.
pub const MAX_PARKED_ENTRY_BYTES: usize = 240 * 1024;

/// Per-entry PutEvents error codes no retry can change: the entry is parked
/// at once. Every other code (`ThrottlingException`, `InternalFailure`, ...)
/// is retried.
pub const PERMANENT_ENTRY_CODES: &[&str] = &[
    "MalformedDetail",
    "InvalidArgument",
    "ValidationException",
    "AccessDeniedException",
    "NotAuthorizedForSourceException",
    "NotAuthorizedForDetailTypeException",
];

/// The size PutEvents counts for `entry` as the relay sends it.
pub fn wire_size(entry: &BusEntry) -> usize {
    entry.size_bytes().saturating_add(TIME_FIELD_BYTES)
}

/// SQS's classic message size limit. A consumer's queue receives each event
/// as the EventBridge event JSON (decision 0029), which is larger than the
/// entry: an entry the bus takes may still not fit the queue.
pub const MAX_QUEUE_MESSAGE_BYTES: usize = 256 * 1024;

/// What EventBridge adds around an entry stays well under this.
const EVENT_FRAME_BYTES: usize = 1024;

/// The size of `entry` as a consumer's queue receives it: the EventBridge
/// event JSON, with the longest account id and region names.
pub fn delivered_size(entry: &BusEntry) -> usize {
    serde_json::to_vec(&entry.to_event_json("123456789012", "ap-southeast-5"))
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

/// Why `entry` can never be delivered (too large for the bus or for a
/// consumer's queue), if it cannot.
pub fn undeliverable(entry: &BusEntry) -> Option<String> {
    let e = &entry.detail;
    let size = wire_size(entry);
    let what = format!(
        "{} {} v{} stays in the event store",
        e.event_type, e.stream_id, e.version
    );
    if size > MAX_ENTRY_BYTES {
        return Some(format!(
            "entry of {size} bytes is over the bus limit of {MAX_ENTRY_BYTES} bytes; {what}"
        ));
    }
    if size + EVENT_FRAME_BYTES > MAX_QUEUE_MESSAGE_BYTES {
        let delivered = delivered_size(entry);
        if delivered > MAX_QUEUE_MESSAGE_BYTES {
            return Some(format!(
                "as the event a rule delivers it is {delivered} bytes, over the queue limit of \
                 {MAX_QUEUE_MESSAGE_BYTES} bytes; {what}"
            ));
        }
    }
    None
}

/// An event's key in the events table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventKey {
    /// The stream id.
    pub pk: String,
    /// The version.
    pub sk: u64,
}

/// The payload of the relay's dead letter for an event it could not put on
/// the bus: enough to publish it again without the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// Where the event lives in the events table.
    pub key: EventKey,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    /// The stream record it came from (its sequence number), or the caller's
    /// id for it (`crm-ops republish`: `pk/sk`).
    pub record_id: String,
    /// Its size as PutEvents counts it.
    pub size_bytes: usize,
    /// The bus entry as the relay built it, the envelope as stored (personal
    /// fields encrypted); absent when over [`MAX_PARKED_ENTRY_BYTES`]: then
    /// the event is re-read from the table by `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<BusEntry>,
}

impl ParkedEvent {
    /// `entry` of record `record_id` as parked: whole when it fits a queue
    /// message, else by its key.
    pub fn of(record_id: impl Into<String>, entry: &BusEntry) -> Self {
        let size_bytes = wire_size(entry);
        let e = &entry.detail;
        ParkedEvent {
            key: EventKey {
                pk: e.stream_id.clone(),
                sk: e.version,
            },
            event_id: e.event_id,
            event_type: e.event_type.clone(),
            record_id: record_id.into(),
            size_bytes,
            stored: (size_bytes <= MAX_PARKED_ENTRY_BYTES).then(|| entry.clone()),
        }
    }
}

/// What the relay parked, read back from a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayLetter {
    /// An event it could not publish.
    Event(Box<ParkedEvent>),
    /// A stream record it could not read as an event; the key, when the
    /// record carries one (`dynamodb.Keys`), names the item to read again.
    Poison { key: Option<EventKey> },
}

impl RelayLetter {
    /// The relay's letter in `letter`; `None` for another consumer's.
    pub fn from_letter(letter: &DeadLetter) -> Option<Self> {
        if letter.consumer != RELAY_CONSUMER {
            return None;
        }
        if let Ok(parked) = serde_json::from_value::<ParkedEvent>(letter.payload.clone()) {
            return Some(RelayLetter::Event(Box::new(parked)));
        }
        Some(RelayLetter::Poison {
            key: stream_record_key(&letter.payload),
        })
    }

    /// The key of the event to read again, when there is one.
    pub fn key(&self) -> Option<&EventKey> {
        match self {
            RelayLetter::Event(p) => Some(&p.key),
            RelayLetter::Poison { key } => key.as_ref(),
        }
    }
}

/// The item key of a DynamoDB stream record as Lambda delivers it
/// (`dynamodb.Keys.pk.S`, `dynamodb.Keys.sk.N`).
pub fn stream_record_key(record: &serde_json::Value) -> Option<EventKey> {
    let keys = record.get("dynamodb")?.get("Keys")?;
    Some(EventKey {
        pk: keys.get("pk")?.get("S")?.as_str()?.to_string(),
        sk: keys.get("sk")?.get("N")?.as_str()?.parse().ok()?,
    })
}

/// What to do with one record of the stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Put it on the bus.
    Publish(BusEntry),
    /// Park it on the dead-letter queue (a record that is not a readable event).
    Park(DeadLetter),
}

/// One record of the stream, identified for a retry by `record_id` (the
/// stream record's sequence number).
#[derive(Debug, Clone, PartialEq)]
pub struct RelayRecord {
    pub record_id: String,
    pub outbound: Outbound,
}

impl RelayRecord {
    pub fn publish(record_id: impl Into<String>, entry: BusEntry) -> Self {
        RelayRecord {
            record_id: record_id.into(),
            outbound: Outbound::Publish(entry),
        }
    }

    pub fn park(record_id: impl Into<String>, letter: DeadLetter) -> Self {
        RelayRecord {
            record_id: record_id.into(),
            outbound: Outbound::Park(letter),
        }
    }
}

/// What a relay run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Entries the bus accepted (including any after `first_failure`).
    pub published: usize,
    /// Records parked on the dead-letter queue.
    pub parked: usize,
    /// The ids of the parked records, in order.
    pub parked_records: Vec<String>,
    /// The first record, in input order, that could be neither published nor
    /// parked: it and every record after it must be delivered again.
    pub first_failure: Option<String>,
}

impl RelayReport {
    pub fn is_complete(&self) -> bool {
        self.first_failure.is_none()
    }
}

/// How often and how patiently calls and entries the bus refused are sent
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls per entry in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The pause after the first failed attempt; it doubles after each.
    pub base_delay: Duration,
    /// The longest pause.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1 for the first).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

/// Waits between attempts (a runtime's sleep; a no-op in tests).
#[async_trait]
pub trait Pause: Send + Sync {
    async fn pause(&self, delay: Duration);
}

/// Retries at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPause;

#[async_trait]
impl Pause for NoPause {
    async fn pause(&self, _delay: Duration) {}
}

/// The relay over a bus and a dead-letter queue.
#[derive(Clone)]
pub struct Relay {
    bus: Arc<dyn EventBus>,
    dead_letters: Arc<dyn DeadLetterQueue>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    pause: Arc<dyn Pause>,
    metrics: Arc<dyn MetricsSink>,
    progress: Option<Arc<ProgressReporter>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// An entry the bus did not take: its record, the entry, why, and after how
/// many calls.
struct Unpublished {
    record_id: String,
    entry: BusEntry,
    reason: String,
    attempts: u32,
}

/// How a chunk went: how many entries were published, and the ones that
/// were not (in input order).
struct ChunkResult {
    published: usize,
    unpublished: Vec<Unpublished>,
}

impl Relay {
    /// A relay with the default [`RetryPolicy`] and no pause between attempts.
    pub fn new(bus: Arc<dyn EventBus>, dead_letters: Arc<dyn DeadLetterQueue>, clock: Arc<dyn Clock>) -> Self {
        Relay {
            bus,
            dead_letters,
            clock,
            policy: RetryPolicy::default(),
            pause: Arc::new(NoPause),
            metrics: Arc::new(NoMetrics),
            progress: None,
        }
    }

    /// The same relay, leaving its iterator age as its progress for `/health`.
    pub fn with_progress(mut self, progress: Arc<ProgressReporter>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The same relay, reporting its lag and throughput to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Reports one batch: how many events went onto the bus and, when the
    /// caller knows when its oldest record was written, how far behind the
    /// relay is (`ConsumerLag`, like Lambda's IteratorAge but per batch),
    /// also as its progress when it has a [`ProgressReporter`].
    pub async fn record_batch(&self, oldest_record: Option<DateTime<Utc>>, report: &RelayReport) {
        let now = self.clock.now();
        let mut set = MetricSet::new(now)
            .dimension("Consumer", RELAY_CONSUMER)
            .count(metric::EVENTS_RELAYED, report.published as u64);
        if let Some(written) = oldest_record {
            set = set.millis(metric::CONSUMER_LAG, (now - written).num_milliseconds());
        }
        self.metrics.emit(set);
        if let Some(progress) = &self.progress {
            progress.batch_handled(oldest_record, now).await;
        }
    }

    /// The same relay, retrying by `policy` and waiting with `pause`.
    pub fn with_retry(mut self, policy: RetryPolicy, pause: Arc<dyn Pause>) -> Self {
        self.policy = policy;
        self.pause = pause;
        self
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// A dead letter of the relay's, stamped now.
    pub fn dead_letter(&self, reason: impl Into<String>, payload: serde_json::Value) -> DeadLetter {
        DeadLetter {
            consumer: RELAY_CONSUMER.to_string(),
            reason: reason.into(),
            payload,
            failed_at: self.clock.now(),
            attempts: 1,
        }
    }

    /// Publishes `(record_id, entry)` pairs in order (see the module docs).
    pub async fn publish(&self, records: Vec<(String, BusEntry)>) -> RelayReport {
        self.run(
            records
                .into_iter()
                .map(|(id, entry)| RelayRecord::publish(id, entry))
                .collect(),
        )
        .await
    }

    /// Publishes or parks every record in order, and stops only at a record
    /// that can be neither (see the module docs).
    pub async fn run(&self, records: Vec<RelayRecord>) -> RelayReport {
        let mut report = RelayReport::default();
        let mut chunk: Vec<(String, BusEntry)> = Vec::new();
        let mut chunk_bytes = 0usize;

        for RelayRecord { record_id, outbound } in records {
            match outbound {
                Outbound::Publish(entry) => {
                    let size = wire_size(&entry);
                    if let Some(reason) = undeliverable(&entry) {
                        // Whatever came before goes first, so the order holds.
                        if !self.flush(&mut chunk, &mut report).await {
                            return report;
                        }
                        chunk_bytes = 0;
                        let letter = self.parked_letter(&record_id, &entry, reason, 0);
                        if !self.park(record_id, letter, &mut report).await {
                            return report;
                        }
                        continue;
                    }
                    if chunk.len() == MAX_ENTRIES_PER_PUT || chunk_bytes + size > MAX_ENTRY_BYTES {
                        if !self.flush(&mut chunk, &mut report).await {
                            return report;
                        }
                        chunk_bytes = 0;
                    }
                    chunk.push((record_id, entry));
                    chunk_bytes += size;
                }
                Outbound::Park(letter) => {
                    if !self.flush(&mut chunk, &mut report).await {
                        return report;
                    }
                    chunk_bytes = 0;
                    if !self.park(record_id, letter, &mut report).await {
                        return report;
                    }
                }
            }
        }
        self.flush(&mut chunk, &mut report).await;
        report
    }

    /// Publishes the pending chunk and parks what the bus would not take;
    /// false (with `first_failure` set) if one of those could not be parked.
    async fn flush(&self, chunk: &mut Vec<(String, BusEntry)>, report: &mut RelayReport) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let result = self.publish_chunk(std::mem::take(chunk)).await;
        report.published += result.published;
        for u in result.unpublished {
            let letter = self.parked_letter(&u.record_id, &u.entry, u.reason, u.attempts);
            if !self.park(u.record_id, letter, report).await {
                return false;
            }
        }
        true
    }

    /// Puts one chunk (at most [`MAX_ENTRIES_PER_PUT`] entries), sending again
    /// only what is still pending: every entry after a call that failed as a
    /// whole, the refused entries after a partial failure. What is left after
    /// the last attempt comes back unpublished, in input order.
    async fn publish_chunk(&self, chunk: Vec<(String, BusEntry)>) -> ChunkResult {
        let mut pending: Vec<Unpublished> = chunk
            .into_iter()
            .map(|(record_id, entry)| Unpublished {
                record_id,
                entry,
                reason: String::new(),
                attempts: 0,
            })
            .collect();
        // Refused for good, with their place in the chunk.
        let mut given_up: Vec<(usize, Unpublished)> = Vec::new();
        let mut places: Vec<usize> = (0..pending.len()).collect();
        let mut published = 0;
        let attempts = self.policy.max_attempts.max(1);
        let mut attempt = 0;
        while attempt < attempts && !pending.is_empty() {
            attempt += 1;
            let entries: Vec<BusEntry> = pending.iter().map(|u| u.entry.clone()).collect();
            match self.bus.put(&entries).await {
                Err(BusError::Refused(message)) => {
                    // No retry changes this (no such bus, access denied).
                    tracing::warn!(error = %message, entries = entries.len(), attempt, "PutEvents refused");
                    let reason = format!("PutEvents refused the call: {message}");
                    for (mut u, place) in std::mem::take(&mut pending).into_iter().zip(places.drain(..)) {
                        u.reason.clone_from(&reason);
                        u.attempts = attempt;
                        given_up.push((place, u));
                    }
                }
                Err(BusError::Unavailable(message)) => {
                    tracing::warn!(error = %message, entries = entries.len(), attempt, "PutEvents failed");
                    let reason = format!("PutEvents failed: {message}");
                    for u in &mut pending {
                        u.reason.clone_from(&reason);
                        u.attempts = attempt;
                    }
                }
                Ok(outcomes) => {
                    let mut outcomes = outcomes.into_iter();
                    let mut still = Vec::new();
                    let mut still_places = Vec::new();
                    for (mut u, place) in std::mem::take(&mut pending).into_iter().zip(places.drain(..)) {
                        let (code, message) = match outcomes.next() {
                            Some(PublishOutcome::Published) => {
                                published += 1;
                                continue;
                            }
                            Some(PublishOutcome::Failed { code, message }) => (code, message),
                            None => ("MissingResult".to_string(), "the bus gave no outcome".to_string()),
                        };
                        tracing::warn!(
                            record = %u.record_id,
                            event_id = %u.entry.detail.event_id,
                            %code,
                            %message,
                            attempt,
                            "bus refused an entry"
                        );
                        u.reason = format!("PutEvents refused the entry: {code}: {message}");
                        u.attempts = attempt;
                        if PERMANENT_ENTRY_CODES.contains(&code.as_str()) {
                            given_up.push((place, u));
                        } else {
                            still.push(u);
                            still_places.push(place);
                        }
                    }
                    pending = still;
                    places = still_places;
                }
            }
            if !pending.is_empty() && attempt < attempts {
                self.pause.pause(self.policy.delay(attempt)).await;
            }
        }
        for (mut u, place) in pending.into_iter().zip(places) {
            u.reason = format!("not published after {attempt} attempt(s): {}", u.reason);
            given_up.push((place, u));
        }
        given_up.sort_by_key(|(place, _)| *place);
        ChunkResult {
            published,
            unpublished: given_up.into_iter().map(|(_, u)| u).collect(),
        }
    }

    /// Parks a letter; false (with `first_failure` set) if the queue refused it.
    async fn park(&self, record_id: String, letter: DeadLetter, report: &mut RelayReport) -> bool {
        tracing::warn!(record = %record_id, reason = %crate::privacy::scrub::scrub(&letter.reason), "parking a record");
        match self.dead_letters.park(letter).await {
            Ok(()) => {
                report.parked += 1;
                report.parked_records.push(record_id);
                true
            }
            Err(e) => {
                tracing::error!(record = %record_id, error = %e, "could not park a record");
                report.first_failure = Some(record_id);
                false
            }
        }
    }

    /// The dead letter of an event the bus did not take: a [`ParkedEvent`]
    /// (whole, or by its key when too large for a queue message).
    fn parked_letter(&self, record_id: &str, entry: &BusEntry, reason: String, attempts: u32) -> DeadLetter {
        let parked = ParkedEvent::of(record_id, entry);
        let payload = serde_json::to_value(&parked).unwrap_or_else(|e| {
            // A BusEntry always serialises; should it not, the key still goes.
            serde_json::json!({
                "key": parked.key,
                "event_id": parked.event_id,
                "event_type": parked.event_type,
                "record_id": parked.record_id,
                "size_bytes": parked.size_bytes,
                "unserialisable": e.to_string(),
            })
        });
        DeadLetter {
            attempts,
            ..self.dead_letter(reason, payload)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::event::EventEnvelope;
    use crate::ports::{BusError, StoreError};
    use std::collections::{HashMap, HashSet};
    use std::sync::Mutex;

    /// A bus that refuses chosen entries (by version): some a number of times,
    /// some always, and fails whole calls on demand.
    #[derive(Default)]
    struct FakeBus {
        state: Mutex<BusState>,
    }

    #[derive(Default)]
    struct BusState {
        /// The versions sent, call by call.
        calls: Vec<Vec<u64>>,
        /// Refused this many more times.
        flaky: HashMap<u64, u32>,
        /// Always refused.
        broken: HashSet<u64>,
        /// Calls (0-based) that fail as a whole.
        failing_calls: HashSet<usize>,
        /// Every call fails as a whole (transient).
        down: bool,
        /// Every call is refused as a whole (no such bus).
        missing: bool,
        /// Refused with a code no retry changes.
        malformed: HashSet<u64>,
        /// Answer one outcome short.
        short: bool,
    }

    impl FakeBus {
        fn with(f: impl FnOnce(&mut BusState)) -> Arc<Self> {
            let bus = FakeBus::default();
            if let Ok(mut s) = bus.state.lock() {
                f(&mut s);
            }
            Arc::new(bus)
        }

        fn calls(&self) -> Vec<Vec<u64>> {
            self.state.lock().map(|s| s.calls.clone()).unwrap_or_default()
        }
    }

    #[async_trait]
    impl EventBus for FakeBus {
        async fn put(&self, entries: &[BusEntry]) -> Result<Vec<PublishOutcome>, BusError> {
            let mut s = self
                .state
                .lock()
                .map_err(|_| BusError::Unavailable("poisoned".into()))?;
            assert!(entries.len() <= MAX_ENTRIES_PER_PUT, "too many entries");
            let call = s.calls.len();
            s.calls.push(entries.iter().map(|e| e.detail.version).collect());
            if s.failing_calls.contains(&call) || s.down {
                return Err(BusError::Unavailable("connection reset".into()));
            }
            if s.missing {
                return Err(BusError::Refused("ResourceNotFoundException: no such bus".into()));
            }
            let mut outcomes: Vec<PublishOutcome> = entries
                .iter()
                .map(|e| {
                    let v = e.detail.version;
                    let flaky = s.flaky.get_mut(&v).is_some_and(|n| {
                        let refuse = *n > 0;
                        *n = n.saturating_sub(1);
                        refuse
                    });
                    if s.malformed.contains(&v) {
                        PublishOutcome::Failed {
                            code: "MalformedDetail".into(),
                            message: "Detail is malformed".into(),
                        }
                    } else if flaky || s.broken.contains(&v) {
                        PublishOutcome::Failed {
                            code: "ThrottlingException".into(),
                            message: "Rate exceeded".into(),
                        }
                    } else {
                        PublishOutcome::Published
                    }
                })
                .collect();
            if s.short {
                outcomes.pop();
            }
            Ok(outcomes)
        }
    }

    #[derive(Default)]
    struct FakeDlq {
        letters: Mutex<Vec<DeadLetter>>,
        refuse: bool,
    }

    impl FakeDlq {
        fn letters(&self) -> Vec<DeadLetter> {
            self.letters.lock().map(|l| l.clone()).unwrap_or_default()
        }
    }

    #[async_trait]
    impl DeadLetterQueue for FakeDlq {
        async fn park(&self, letter: DeadLetter) -> Result<(), StoreError> {
            if self.refuse {
                return Err(StoreError::Unavailable("queue down".into()));
            }
            self.letters
                .lock()
                .map_err(|_| StoreError::Failed("poisoned".into()))?
                .push(letter);
            Ok(())
        }
    }

    #[derive(Default)]
    struct RecordingPause(Mutex<Vec<Duration>>);

    #[async_trait]
    impl Pause for RecordingPause {
        async fn pause(&self, delay: Duration) {
            if let Ok(mut d) = self.0.lock() {
                d.push(delay);
            }
        }
    }

    fn seq(v: u64) -> String {
        format!("{}", 4_421_584_500_000_000_017_450_439_000u128 + u128::from(v))
    }

    fn entry(version: u64, data: serde_json::Value) -> BusEntry {
        let at = crate::testing::test_time();
        BusEntry::for_event(EventEnvelope {
            event_id: uuid::Uuid::now_v7(),
            stream_id: "customer-1".into(),
            version,
            event_type: "CustomerProfileUpdated".into(),
            schema_version: 1,
            customer_id: Some("1".into()),
            occurred_at: at,
            recorded_at: at,
            causation_id: None,
            correlation_id: uuid::Uuid::now_v7(),
            actor: "api:test".into(),
            data,
        })
    }

    fn records(versions: std::ops::RangeInclusive<u64>) -> Vec<(String, BusEntry)> {
        versions
            .map(|v| (seq(v), entry(v, serde_json::json!({"n": v}))))
            .collect()
    }

    fn relay(bus: Arc<FakeBus>, dlq: Arc<FakeDlq>) -> Relay {
        Relay::new(bus, dlq, Arc::new(SystemClock))
    }

    #[tokio::test]
    async fn publishes_in_order_in_chunks_of_ten() {
        let bus = FakeBus::with(|_| {});
        let dlq = Arc::new(FakeDlq::default());
        let report = relay(bus.clone(), dlq.clone()).publish(records(1..=23)).await;
        assert_eq!(
            report,
            RelayReport {
                published: 23,
                ..RelayReport::default()
            }
        );
        let calls = bus.calls();
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
        assert_eq!(calls.concat(), (1..=23).collect::<Vec<_>>());
        assert!(dlq.letters().is_empty());
    }

    #[tokio::test]
    async fn nothing_to_do_calls_nothing() {
        let bus = FakeBus::with(|_| {});
        let report = relay(bus.clone(), Arc::default()).publish(vec![]).await;
        assert_eq!(report, RelayReport::default());
        assert!(bus.calls().is_empty());
    }

    #[tokio::test]
    async fn chunks_also_respect_the_request_size_limit() {
        let bus = FakeBus::with(|_| {});
        let big = "x".repeat(100 * 1024);
        let input = (1..=5)
            .map(|v| (seq(v), entry(v, serde_json::json!({ "blob": big }))))
            .collect();
        let report = relay(bus.clone(), Arc::default()).publish(input).await;
        assert_eq!(report.published, 5);
        assert_eq!(bus.calls(), vec![vec![1, 2], vec![3, 4], vec![5]]);
    }

    #[tokio::test]
    async fn only_refused_entries_are_retried_until_they_go() {
        let bus = FakeBus::with(|s| {
            s.flaky.insert(3, 1);
            s.flaky.insert(7, 2);
        });
        let pause = Arc::new(RecordingPause::default());
        let report = relay(bus.clone(), Arc::default())
            .with_retry(RetryPolicy::default(), pause.clone())
            .publish(records(1..=12))
            .await;
        assert_eq!(
            report,
            RelayReport {
                published: 12,
                ..RelayReport::default()
            }
        );
        assert_eq!(
            bus.calls(),
            vec![(1..=10).collect::<Vec<_>>(), vec![3, 7], vec![7], vec![11, 12]]
        );
        let pauses = pause.0.lock().map(|p| p.clone()).unwrap_or_default();
        assert_eq!(pauses, [Duration::from_millis(50), Duration::from_millis(100)]);
    }

    #[tokio::test]
    async fn an_entry_still_refused_after_its_attempts_is_parked_whole_and_the_rest_goes_on() {
        let bus = FakeBus::with(|s| {
            s.broken.insert(14);
            s.broken.insert(12);
        });
        let dlq = Arc::new(FakeDlq::default());
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let input = records(1..=25);
        let (twelve, fourteen) = (input[11].1.clone(), input[13].1.clone());
        let report = relay(bus.clone(), dlq.clone())
            .with_retry(policy, Arc::new(NoPause))
            .publish(input)
            .await;
        assert_eq!(
            report,
            RelayReport {
                published: 23,
                parked: 2,
                parked_records: vec![seq(12), seq(14)],
                first_failure: None
            }
        );
        // Three attempts at the second chunk's failures, then the third chunk.
        assert_eq!(
            bus.calls(),
            vec![
                (1..=10).collect::<Vec<_>>(),
                (11..=20).collect(),
                vec![12, 14],
                vec![12, 14],
                (21..=25).collect()
            ]
        );
        let letters = dlq.letters();
        assert_eq!(letters.len(), 2);
        for (letter, (entry, version)) in letters.iter().zip([(&twelve, 12), (&fourteen, 14)]) {
            assert_eq!(letter.consumer, RELAY_CONSUMER);
            assert_eq!(letter.attempts, 3);
            assert!(
                letter.reason.contains("after 3 attempt(s)") && letter.reason.contains("ThrottlingException"),
                "{}",
                letter.reason
            );
            let Some(RelayLetter::Event(parked)) = RelayLetter::from_letter(letter) else {
                panic!("a parked event: {letter:?}");
            };
            assert_eq!(parked.stored.as_ref(), Some(entry), "parked whole, as built");
            assert_eq!(
                parked.key,
                EventKey {
                    pk: "customer-1".into(),
                    sk: version
                }
            );
            assert_eq!(parked.record_id, seq(version));
            assert_eq!(parked.event_id, entry.detail.event_id);
            assert_eq!(parked.size_bytes, wire_size(entry));
        }
    }

    #[tokio::test]
    async fn a_missing_outcome_counts_as_a_failure() {
        let bus = FakeBus::with(|s| s.short = true);
        let dlq = Arc::new(FakeDlq::default());
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let report = relay(bus.clone(), dlq.clone())
            .with_retry(policy, Arc::new(NoPause))
            .publish(records(1..=3))
            .await;
        // Each call answers one short: 3 is never confirmed, so it is parked.
        assert_eq!(report.published, 2);
        assert_eq!(report.parked_records, [seq(3)]);
        assert!(report.is_complete());
        assert_eq!(bus.calls(), vec![vec![1, 2, 3], vec![3]]);
        assert!(dlq.letters()[0].reason.contains("MissingResult"));
    }

    #[tokio::test]
    async fn a_bus_down_for_every_attempt_parks_every_entry_whole_in_order() {
        let bus = FakeBus::with(|s| s.down = true);
        let dlq = Arc::new(FakeDlq::default());
        let pause = Arc::new(RecordingPause::default());
        let input = records(1..=12);
        let entries: Vec<BusEntry> = input.iter().map(|(_, e)| e.clone()).collect();
        let report = relay(bus.clone(), dlq.clone())
            .with_retry(RetryPolicy::default(), pause.clone())
            .publish(input)
            .await;
        assert_eq!(report.published, 0);
        assert_eq!(report.parked, 12);
        assert!(
            report.is_complete(),
            "the batch succeeds: nothing is left to the stream"
        );
        // Four attempts per chunk, with the pauses between them.
        assert_eq!(bus.calls().len(), 8);
        let pauses = pause.0.lock().map(|p| p.clone()).unwrap_or_default();
        assert_eq!(pauses.len(), 6);
        assert_eq!(pauses[..3], [50, 100, 200].map(Duration::from_millis));
        let letters = dlq.letters();
        let parked: Vec<Option<BusEntry>> = letters
            .iter()
            .map(|l| match RelayLetter::from_letter(l) {
                Some(RelayLetter::Event(p)) => p.stored,
                _ => None,
            })
            .collect();
        assert_eq!(parked, entries.into_iter().map(Some).collect::<Vec<_>>());
        assert!(letters[0].reason.contains("connection reset"), "{}", letters[0].reason);
        assert_eq!(letters[0].attempts, 4);
    }

    #[tokio::test]
    async fn a_refused_call_and_a_malformed_entry_are_parked_without_retrying() {
        let bus = FakeBus::with(|s| s.missing = true);
        let dlq = Arc::new(FakeDlq::default());
        let report = relay(bus.clone(), dlq.clone()).publish(records(1..=3)).await;
        assert_eq!(report.parked, 3);
        assert_eq!(bus.calls().len(), 1, "no retry can create the bus");
        assert!(dlq.letters()[0].reason.contains("no such bus"));
        assert_eq!(dlq.letters()[0].attempts, 1);

        let bus = FakeBus::with(|s| {
            s.malformed.insert(2);
            s.flaky.insert(3, 1);
        });
        let dlq = Arc::new(FakeDlq::default());
        let report = relay(bus.clone(), dlq.clone()).publish(records(1..=3)).await;
        assert_eq!(report.published, 2);
        assert_eq!(report.parked_records, [seq(2)]);
        assert_eq!(bus.calls(), vec![vec![1, 2, 3], vec![3]], "only 3 is retried");
        assert!(dlq.letters()[0].reason.contains("MalformedDetail"));
    }

    #[tokio::test]
    async fn an_unpublished_entry_that_cannot_be_parked_fails_the_run_there() {
        let bus = FakeBus::with(|s| {
            s.broken.insert(4);
        });
        let dlq = Arc::new(FakeDlq {
            refuse: true,
            ..FakeDlq::default()
        });
        let report = relay(bus.clone(), dlq).publish(records(1..=25)).await;
        // 1..=10 went (4 excepted); 4 could be neither published nor parked.
        assert_eq!(
            report,
            RelayReport {
                published: 9,
                first_failure: Some(seq(4)),
                ..RelayReport::default()
            }
        );
        assert_eq!(bus.calls().len(), 4, "nothing after the chunk of the failure");
    }

    #[tokio::test]
    async fn an_entry_too_large_for_a_queue_message_is_parked_by_its_key() {
        let bus = FakeBus::with(|s| {
            s.broken.insert(1);
        });
        let dlq = Arc::new(FakeDlq::default());
        let e = entry(1, serde_json::json!({ "blob": "x".repeat(MAX_PARKED_ENTRY_BYTES) }));
        assert!(wire_size(&e) <= MAX_ENTRY_BYTES, "the bus would take it");
        let report = relay(bus.clone(), dlq.clone()).publish(vec![(seq(1), e.clone())]).await;
        assert_eq!(report.parked, 1);
        let letters = dlq.letters();
        let Some(RelayLetter::Event(parked)) = RelayLetter::from_letter(&letters[0]) else {
            panic!("a parked event");
        };
        assert_eq!(parked.stored, None);
        assert_eq!(parked.key.pk, "customer-1");
        assert_eq!(parked.key.sk, 1);
        assert_eq!(parked.size_bytes, wire_size(&e));
    }

    #[test]
    fn relay_letters_read_back() {
        let r = relay(FakeBus::with(|_| {}), Arc::default());
        let record = serde_json::json!({
            "eventID": "1",
            "dynamodb": {"Keys": {"pk": {"S": "customer-9"}, "sk": {"N": "7"}}}
        });
        assert_eq!(
            RelayLetter::from_letter(&r.dead_letter("unreadable", record)),
            Some(RelayLetter::Poison {
                key: Some(EventKey {
                    pk: "customer-9".into(),
                    sk: 7
                })
            })
        );
        let bare = RelayLetter::from_letter(&r.dead_letter("?", serde_json::json!({"x": 1})));
        assert_eq!(bare, Some(RelayLetter::Poison { key: None }));
        assert_eq!(bare.as_ref().and_then(RelayLetter::key), None);
        let mut other = r.dead_letter("?", serde_json::json!({}));
        other.consumer = "projector".into();
        assert_eq!(RelayLetter::from_letter(&other), None);
    }

    #[tokio::test]
    async fn oversize_entries_are_parked_not_published() {
        let bus = FakeBus::with(|_| {});
        let dlq = Arc::new(FakeDlq::default());
        let mut input = records(1..=4);
        input[1].1 = entry(2, serde_json::json!({ "blob": "x".repeat(MAX_ENTRY_BYTES) }));
        let event_id = input[1].1.detail.event_id;
        let report = relay(bus.clone(), dlq.clone()).publish(input).await;
        assert_eq!(
            report,
            RelayReport {
                published: 3,
                parked: 1,
                parked_records: vec![seq(2)],
                first_failure: None
            }
        );
        // What came before the parked record went first.
        assert_eq!(bus.calls(), vec![vec![1], vec![3, 4]]);
        let letters = dlq.letters();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].consumer, RELAY_CONSUMER);
        assert!(
            letters[0].reason.contains("over the bus limit"),
            "{}",
            letters[0].reason
        );
        assert_eq!(letters[0].payload["event_id"], event_id.to_string());
        assert_eq!(letters[0].payload["record_id"], seq(2));
        assert_eq!(
            letters[0].payload["key"],
            serde_json::json!({"pk": "customer-1", "sk": 2})
        );
        assert!(letters[0].payload.get("stored").is_none(), "re-read by its key");
        assert!(
            serde_json::to_vec(&letters[0]).map(|v| v.len()).unwrap_or(usize::MAX) < 4096,
            "the letter leaves the event's data out"
        );
    }

    #[tokio::test]
    async fn an_entry_whose_delivered_event_is_exactly_at_the_queue_limit_is_published() {
        let bus = FakeBus::with(|_| {});
        let dlq = Arc::new(FakeDlq::default());
        let padded = |pad: usize| entry(1, serde_json::json!({ "blob": "x".repeat(pad) }));
        let pad = MAX_QUEUE_MESSAGE_BYTES - delivered_size(&padded(0));
        let at_limit = padded(pad);
        assert_eq!(delivered_size(&at_limit), MAX_QUEUE_MESSAGE_BYTES);
        assert!(wire_size(&at_limit) < MAX_ENTRY_BYTES);
        let report = relay(bus.clone(), dlq.clone()).publish(vec![(seq(1), at_limit)]).await;
        assert_eq!((report.published, report.parked), (1, 0));

        // One byte more: the bus would take it, a consumer's queue would not.
        let over = padded(pad + 1);
        assert!(wire_size(&over) <= MAX_ENTRY_BYTES, "the bus would take it");
        let report = relay(bus.clone(), dlq.clone()).publish(vec![(seq(2), over)]).await;
        assert_eq!((report.published, report.parked), (0, 1));
        assert_eq!(bus.calls().len(), 1, "never sent");
        let letters = dlq.letters();
        assert!(
            letters[0].reason.contains("over the queue limit"),
            "{}",
            letters[0].reason
        );
        assert_eq!(letters[0].payload["key"]["sk"], 1);
    }

    #[tokio::test]
    async fn a_whole_call_failure_is_retried_with_a_pause() {
        let bus = FakeBus::with(|s| {
            s.failing_calls.insert(1);
        });
        let pause = Arc::new(RecordingPause::default());
        let report = relay(bus.clone(), Arc::default())
            .with_retry(RetryPolicy::default(), pause.clone())
            .publish(records(1..=25))
            .await;
        assert_eq!(
            report,
            RelayReport {
                published: 25,
                ..RelayReport::default()
            }
        );
        assert_eq!(
            bus.calls(),
            vec![
                (1..=10).collect::<Vec<_>>(),
                (11..=20).collect(),
                (11..=20).collect(),
                (21..=25).collect()
            ]
        );
        let pauses = pause.0.lock().map(|p| p.clone()).unwrap_or_default();
        assert_eq!(pauses, [Duration::from_millis(50)]);
    }

    #[tokio::test]
    async fn a_whole_call_failure_on_a_retry_sends_the_still_pending_again() {
        let bus = FakeBus::with(|s| {
            s.flaky.insert(4, 1);
            s.flaky.insert(6, 1);
            s.failing_calls.insert(1);
        });
        let report = relay(bus.clone(), Arc::default()).publish(records(1..=8)).await;
        assert_eq!(report.published, 8);
        assert!(report.is_complete());
        assert_eq!(bus.calls(), vec![(1..=8).collect::<Vec<_>>(), vec![4, 6], vec![4, 6]]);
    }

    #[tokio::test]
    async fn poison_records_are_parked_in_order() {
        let bus = FakeBus::with(|_| {});
        let dlq = Arc::new(FakeDlq::default());
        let r = relay(bus.clone(), dlq.clone());
        let mut input: Vec<RelayRecord> = records(1..=3)
            .into_iter()
            .map(|(id, e)| RelayRecord::publish(id, e))
            .collect();
        let letter = r.dead_letter("not an event", serde_json::json!({"kind": "?"}));
        input.insert(1, RelayRecord::park("poison", letter.clone()));
        let report = r.run(input).await;
        assert_eq!(report.parked, 1);
        assert_eq!(report.published, 3);
        assert_eq!(bus.calls(), vec![vec![1], vec![2, 3]]);
        assert_eq!(dlq.letters(), vec![letter]);
    }

    #[tokio::test]
    async fn a_record_that_cannot_be_parked_is_a_failure() {
        let bus = FakeBus::with(|_| {});
        let dlq = Arc::new(FakeDlq {
            refuse: true,
            ..FakeDlq::default()
        });
        let mut input = records(1..=3);
        input[1].1 = entry(2, serde_json::json!({ "blob": "x".repeat(MAX_ENTRY_BYTES) }));
        let report = relay(bus.clone(), dlq).publish(input).await;
        assert_eq!(
            report,
            RelayReport {
                published: 1,
                first_failure: Some(seq(2)),
                ..RelayReport::default()
            }
        );
        assert_eq!(bus.calls(), vec![vec![1]]);
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1), Duration::from_millis(50));
        assert_eq!(p.delay(2), Duration::from_millis(100));
        assert_eq!(p.delay(5), Duration::from_millis(800));
        assert_eq!(p.delay(6), Duration::from_secs(1));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_batch_reports_its_lag_and_what_it_published() {
        use crate::clock::VirtualClock;
        use crate::metrics::RecordedMetrics;
        let now = DateTime::parse_from_rfc3339("2026-11-30T01:00:05Z")
            .map(|t| t.to_utc())
            .unwrap_or_default();
        let buffer = RecordedMetrics::default();
        let relay = Relay::new(
            FakeBus::with(|_| {}),
            Arc::new(FakeDlq::default()),
            Arc::new(VirtualClock::starting_at(now)),
        )
        .with_metrics(Arc::new(buffer.clone()));
        let progress = Arc::new(crate::memory::InMemoryProgressLog::default());
        let relay = relay.with_progress(Arc::new(ProgressReporter::new(progress.clone(), RELAY_CONSUMER)));
        let report = RelayReport {
            published: 7,
            ..RelayReport::default()
        };
        relay
            .record_batch(Some(now - chrono::Duration::seconds(5)), &report)
            .await;
        relay.record_batch(None, &report).await;
        // The progress for /health: the first batch's iterator age.
        let recorded = progress.records();
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(
            (recorded[0].consumer.as_str(), recorded[0].oldest_age_seconds),
            ("relay", 5)
        );
        let docs = buffer.documents();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["Consumer"], "relay");
        assert_eq!(docs[0]["ConsumerLag"], serde_json::json!(5000.0));
        assert_eq!(docs[0]["EventsRelayed"], serde_json::json!(7.0));
        assert_eq!(buffer.sets()[0].dimensions, vec![("Consumer", "relay".to_string())]);
        // Without a record time there is no lag to report, only the count.
        assert!(docs[1].get("ConsumerLag").is_none());
        assert_eq!(docs[1]["EventsRelayed"], serde_json::json!(7.0));
    }
}
