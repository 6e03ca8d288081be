//! The relay: stored events onto the bus (ARCHITECTURE.md §2, the outbox).
//!
//! The event table's stream hands the relay its new items in order; the relay
//! publishes each event as a [`BusEntry`] and reports, Lambda
//! `batchItemFailures` style, the first record it could not get onto the bus:
//!
//! - entries go out in order, at most [`MAX_ENTRIES_PER_PUT`] a call and at
//!   most [`MAX_ENTRY_BYTES`] a call (PutEvents' limit on a whole request);
//! - only the entries the bus reports failed are sent again, a bounded number
//!   of times with a growing pause between attempts;
//! - an entry the bus can never take (over [`MAX_ENTRY_BYTES`]) and a record
//!   that is not a readable event (poison) are parked on the dead-letter queue
//!   with the reason, so they never block the stream;
//! - once a record cannot be published (or parked) after its retries, the
//!   relay stops and names that record in [`RelayReport::first_failure`]: the
//!   caller has it and everything after it delivered again. Entries after it
//!   that did go out are published twice then; consumers are idempotent
//!   (§6), so that is harmless, while skipping one would not be.
//!
//! Nothing here knows about Lambda or EventBridge: the bus and the dead-letter
//! queue are ports, and the pause between attempts is injected (a no-op by
//! default) so crm-core needs no async runtime.

use crate::bus::{BusEntry, MAX_ENTRIES_PER_PUT, MAX_ENTRY_BYTES};
use crate::clock::Clock;
use crate::metrics::{names as metric, MetricSet, MetricsSink, NoMetrics};
use crate::ports::{DeadLetter, DeadLetterQueue, EventBus, PublishOutcome};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// The `consumer` of the relay's dead letters.
pub const RELAY_CONSUMER: &str = "relay";

/// PutEvents counts an entry's `Time` as 14 bytes; the EventBridge adapter
/// always sets it (to `occurred_at`).
pub const TIME_FIELD_BYTES: usize = 14;

/// The size PutEvents counts for `entry` as the relay sends it.
pub fn wire_size(entry: &BusEntry) -> usize {
    entry.size_bytes().saturating_add(TIME_FIELD_BYTES)
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
    /// The first record, in input order, that could be neither published nor
    /// parked: it and every record after it must be delivered again.
    pub first_failure: Option<String>,
}

impl RelayReport {
    pub fn is_complete(&self) -> bool {
        self.first_failure.is_none()
    }
}

/// How often and how patiently entries the bus refused are sent again.
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
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// How a chunk went: how many entries were published and, if any could not
/// be, the first of them.
struct ChunkResult {
    published: usize,
    first_failure: Option<String>,
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
        }
    }

    /// The same relay, reporting its lag and throughput to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Reports one batch: how many events went onto the bus and, when the
    /// caller knows when its oldest record was written, how far behind the
    /// relay is (`ConsumerLag`, like Lambda's IteratorAge but per batch).
    pub fn record_batch(&self, oldest_record: Option<DateTime<Utc>>, report: &RelayReport) {
        let now = self.clock.now();
        let mut set = MetricSet::new(now)
            .dimension("Consumer", RELAY_CONSUMER)
            .count(metric::EVENTS_RELAYED, report.published as u64);
        if let Some(written) = oldest_record {
            set = set.millis(metric::CONSUMER_LAG, (now - written).num_milliseconds());
        }
        self.metrics.emit(set);
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

    /// Publishes or parks every record in order, and stops at the first one
    /// that can be neither (see the module docs).
    pub async fn run(&self, records: Vec<RelayRecord>) -> RelayReport {
        let mut report = RelayReport::default();
        let mut chunk: Vec<(String, BusEntry)> = Vec::new();
        let mut chunk_bytes = 0usize;

        for RelayRecord { record_id, outbound } in records {
            match outbound {
                Outbound::Publish(entry) => {
                    let size = wire_size(&entry);
                    if size > MAX_ENTRY_BYTES {
                        // Whatever came before goes first, so the order holds.
                        if !self.flush(&mut chunk, &mut report).await {
                            return report;
                        }
                        chunk_bytes = 0;
                        let letter = self.oversize_letter(&record_id, &entry, size);
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

    /// Publishes the pending chunk; false (with `first_failure` set) if some
    /// entry of it could not be published.
    async fn flush(&self, chunk: &mut Vec<(String, BusEntry)>, report: &mut RelayReport) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let result = self.publish_chunk(std::mem::take(chunk)).await;
        report.published += result.published;
        match result.first_failure {
            None => true,
            Some(id) => {
                report.first_failure = Some(id);
                false
            }
        }
    }

    /// Puts one chunk (at most [`MAX_ENTRIES_PER_PUT`] entries), sending again
    /// only the entries the bus refused.
    async fn publish_chunk(&self, chunk: Vec<(String, BusEntry)>) -> ChunkResult {
        let (mut ids, mut entries): (Vec<String>, Vec<BusEntry>) = chunk.into_iter().unzip();
        let mut published = 0;
        let attempts = self.policy.max_attempts.max(1);
        for attempt in 1..=attempts {
            let outcomes = match self.bus.put(&entries).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    // The whole call failed: this chunk and everything after
                    // it goes back to the stream.
                    tracing::warn!(error = %e, entries = entries.len(), attempt, "PutEvents failed");
                    return ChunkResult {
                        published,
                        first_failure: ids.into_iter().next(),
                    };
                }
            };
            let mut outcomes = outcomes.into_iter();
            let mut failed_ids = Vec::new();
            let mut failed_entries = Vec::new();
            for (id, entry) in ids.into_iter().zip(entries) {
                match outcomes.next() {
                    Some(PublishOutcome::Published) => published += 1,
                    Some(PublishOutcome::Failed { code, message }) => {
                        tracing::warn!(
                            record = %id,
                            event_id = %entry.detail.event_id,
                            %code,
                            %message,
                            attempt,
                            "bus refused an entry"
                        );
                        failed_ids.push(id);
                        failed_entries.push(entry);
                    }
                    None => {
                        tracing::warn!(record = %id, attempt, "bus gave no outcome for an entry");
                        failed_ids.push(id);
                        failed_entries.push(entry);
                    }
                }
            }
            ids = failed_ids;
            entries = failed_entries;
            if ids.is_empty() {
                return ChunkResult {
                    published,
                    first_failure: None,
                };
            }
            if attempt < attempts {
                self.pause.pause(self.policy.delay(attempt)).await;
            }
        }
        ChunkResult {
            published,
            first_failure: ids.into_iter().next(),
        }
    }

    /// Parks a letter; false (with `first_failure` set) if the queue refused it.
    async fn park(&self, record_id: String, letter: DeadLetter, report: &mut RelayReport) -> bool {
        tracing::warn!(record = %record_id, reason = %letter.reason, "parking a record");
        match self.dead_letters.park(letter).await {
            Ok(()) => {
                report.parked += 1;
                true
            }
            Err(e) => {
                tracing::error!(record = %record_id, error = %e, "could not park a record");
                report.first_failure = Some(record_id);
                false
            }
        }
    }

    /// The dead letter of an entry too large for the bus. It names the event
    /// but leaves its data out (the letter must fit a queue message; the event
    /// itself stays in the event store).
    fn oversize_letter(&self, record_id: &str, entry: &BusEntry, size: usize) -> DeadLetter {
        let e = &entry.detail;
        self.dead_letter(
            format!(
                "entry of {size} bytes is over the bus limit of {MAX_ENTRY_BYTES} bytes; \
                 {} {} v{} stays in the event store",
                e.event_type, e.stream_id, e.version
            ),
            serde_json::json!({
                "record_id": record_id,
                "source": entry.source,
                "detail-type": entry.detail_type,
                "event_id": e.event_id,
                "stream_id": e.stream_id,
                "version": e.version,
                "customer_id": e.customer_id,
                "size_bytes": size,
            }),
        )
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
            if s.failing_calls.contains(&call) {
                return Err(BusError::Unavailable("connection reset".into()));
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
                    if flaky || s.broken.contains(&v) {
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
                parked: 0,
                first_failure: None
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
                parked: 0,
                first_failure: None
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
    async fn a_persistent_failure_names_the_first_failing_record_and_stops() {
        let bus = FakeBus::with(|s| {
            s.broken.insert(14);
            s.broken.insert(12);
        });
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let report = relay(bus.clone(), Arc::default())
            .with_retry(policy, Arc::new(NoPause))
            .publish(records(1..=25))
            .await;
        assert_eq!(report.first_failure, Some(seq(12)));
        assert!(!report.is_complete());
        // 1..=10, then 11, 13, 15..=20 of the second chunk.
        assert_eq!(report.published, 18);
        // Three attempts at the second chunk's failures; the third chunk is
        // never sent (it goes back to the stream with record 12).
        assert_eq!(
            bus.calls(),
            vec![
                (1..=10).collect::<Vec<_>>(),
                (11..=20).collect(),
                vec![12, 14],
                vec![12, 14]
            ]
        );
    }

    #[tokio::test]
    async fn a_missing_outcome_counts_as_a_failure() {
        let bus = FakeBus::with(|s| s.short = true);
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let report = relay(bus.clone(), Arc::default())
            .with_retry(policy, Arc::new(NoPause))
            .publish(records(1..=3))
            .await;
        // Each call answers one short: 3 is never confirmed.
        assert_eq!(report.first_failure, Some(seq(3)));
        assert_eq!(report.published, 2);
        assert_eq!(bus.calls(), vec![vec![1, 2, 3], vec![3]]);
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
        assert!(
            serde_json::to_vec(&letters[0]).map(|v| v.len()).unwrap_or(usize::MAX) < 4096,
            "the letter leaves the event's data out"
        );
    }

    #[tokio::test]
    async fn an_entry_exactly_at_the_limit_is_published() {
        let bus = FakeBus::with(|_| {});
        let mut e = entry(1, serde_json::json!({ "blob": "" }));
        let pad = MAX_ENTRY_BYTES - wire_size(&e);
        e = entry(1, serde_json::json!({ "blob": "x".repeat(pad) }));
        assert_eq!(wire_size(&e), MAX_ENTRY_BYTES);
        let report = relay(bus.clone(), Arc::default()).publish(vec![(seq(1), e)]).await;
        assert_eq!(report.published, 1);
        assert_eq!(report.parked, 0);
    }

    #[tokio::test]
    async fn a_whole_call_failure_fails_its_chunk_and_everything_after() {
        let bus = FakeBus::with(|s| {
            s.failing_calls.insert(1);
        });
        let report = relay(bus.clone(), Arc::default()).publish(records(1..=25)).await;
        assert_eq!(
            report,
            RelayReport {
                published: 10,
                parked: 0,
                first_failure: Some(seq(11))
            }
        );
        assert_eq!(bus.calls().len(), 2, "no call after the failed one");
    }

    #[tokio::test]
    async fn a_whole_call_failure_on_a_retry_names_the_first_still_pending() {
        let bus = FakeBus::with(|s| {
            s.flaky.insert(4, 1);
            s.flaky.insert(6, 1);
            s.failing_calls.insert(1);
        });
        let report = relay(bus.clone(), Arc::default()).publish(records(1..=8)).await;
        assert_eq!(report.first_failure, Some(seq(4)));
        assert_eq!(report.published, 6);
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
                parked: 0,
                first_failure: Some(seq(2))
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

    #[test]
    fn a_batch_reports_its_lag_and_what_it_published() {
        use crate::clock::VirtualClock;
        use crate::metrics::{EmfWriter, SharedBuffer};
        let now = DateTime::parse_from_rfc3339("2026-11-30T01:00:05Z")
            .map(|t| t.to_utc())
            .unwrap_or_default();
        let buffer = SharedBuffer::default();
        let relay = Relay::new(
            FakeBus::with(|_| {}),
            Arc::new(FakeDlq::default()),
            Arc::new(VirtualClock::starting_at(now)),
        )
        .with_metrics(Arc::new(EmfWriter::new("Crm", Box::new(buffer.clone()))));
        let report = RelayReport {
            published: 7,
            ..RelayReport::default()
        };
        relay.record_batch(Some(now - chrono::Duration::seconds(5)), &report);
        relay.record_batch(None, &report);
        let docs = buffer.documents();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["Consumer"], "relay");
        assert_eq!(docs[0]["ConsumerLag"], serde_json::json!(5000.0));
        assert_eq!(docs[0]["EventsRelayed"], serde_json::json!(7.0));
        assert_eq!(
            docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["Consumer"]])
        );
        // Without a record time there is no lag to report, only the count.
        assert!(docs[1].get("ConsumerLag").is_none());
        assert_eq!(docs[1]["EventsRelayed"], serde_json::json!(7.0));
    }
}
