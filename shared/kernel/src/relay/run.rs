//! The relay loop: records go to the bus in order and in chunks; what the
//! bus will not take is retried, then parked.

use super::entry::{undeliverable, wire_size, NotPublished};
use super::parked::ParkedEvent;
use super::pause::{NoPause, Pause, RetryPolicy};
use super::{Outbound, RelayRecord, RelayReport, RELAY_CONSUMER};
use crate::bus::{BusEntry, MAX_ENTRIES_PER_PUT, MAX_ENTRY_BYTES};
use crate::clock::Clock;
use crate::failure::{Classify, FailureKind};
use crate::metrics::{names as metric, MetricSet, MetricsSink, NoMetrics};
use crate::ports::{DeadLetter, DeadLetterQueue, EventBus, ProgressReporter, PublishOutcome};
use chrono::{DateTime, Utc};
use std::sync::Arc;

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

/// An entry the bus did not take: its record, the entry, why (none before
/// the first call), and after how many calls.
struct Unpublished {
    record_id: String,
    entry: BusEntry,
    why: Option<NotPublished>,
    attempts: u32,
}

impl Unpublished {
    /// Why, as a dead letter's reason.
    fn reason(&self) -> String {
        self.why.as_ref().map(ToString::to_string).unwrap_or_default()
    }
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
            let letter = self.parked_letter(&u.record_id, &u.entry, u.reason(), u.attempts);
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
                why: None,
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
                Err(e) => {
                    let why = NotPublished::Call(e);
                    let kind = why.kind();
                    tracing::warn!(error = %why, %kind, entries = entries.len(), attempt, "PutEvents failed");
                    if kind == FailureKind::Poison {
                        // No retry changes this (no such bus, access denied).
                        for (mut u, place) in std::mem::take(&mut pending).into_iter().zip(places.drain(..)) {
                            u.why = Some(why.clone());
                            u.attempts = attempt;
                            given_up.push((place, u));
                        }
                    } else {
                        for u in &mut pending {
                            u.why = Some(why.clone());
                            u.attempts = attempt;
                        }
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
                        let why = NotPublished::Entry { code, message };
                        let kind = why.kind();
                        u.why = Some(why);
                        u.attempts = attempt;
                        if kind == FailureKind::Poison {
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
            u.why = u.why.take().map(|last| NotPublished::GaveUp {
                attempts: attempt,
                last: Box::new(last),
            });
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
