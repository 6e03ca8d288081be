//! The relay over a fake bus and dead-letter queue: order, chunks, retries,
//! parking, and what it reports.

use super::*;
use crate::bus::{BusEntry, MAX_ENTRIES_PER_PUT, MAX_ENTRY_BYTES};
use crate::clock::SystemClock;
use crate::event::EventEnvelope;
use crate::ports::{BusError, DeadLetter, DeadLetterQueue, EventBus, ProgressReporter, PublishOutcome, StoreError};
use async_trait::async_trait;
use chrono::DateTime;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

#[test]
fn why_an_entry_was_not_published_says_whether_to_send_it_again() {
    use crate::failure::{Classify, FailureKind};
    let throttled = NotPublished::Call(BusError::Unavailable("throttled".into()));
    assert_eq!(throttled.kind(), FailureKind::Retryable);
    assert_eq!(throttled.to_string(), "PutEvents failed: throttled");
    let no_bus = NotPublished::Call(BusError::Refused("no such bus".into()));
    assert_eq!(no_bus.kind(), FailureKind::Poison);
    assert_eq!(no_bus.to_string(), "PutEvents refused the call: no such bus");
    let entry = |code: &str| NotPublished::Entry {
        code: code.into(),
        message: "m".into(),
    };
    assert_eq!(entry("ThrottlingException").kind(), FailureKind::Retryable);
    assert_eq!(entry("MalformedDetail").kind(), FailureKind::Poison);
    let gave_up = NotPublished::GaveUp {
        attempts: 3,
        last: Box::new(entry("InternalFailure")),
    };
    assert_eq!(gave_up.kind(), FailureKind::Poison);
    assert_eq!(
        gave_up.to_string(),
        "not published after 3 attempt(s): PutEvents refused the entry: InternalFailure: m"
    );
    assert!(std::error::Error::source(&no_bus).is_some(), "the bus error is kept");
}
