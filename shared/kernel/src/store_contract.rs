//! The event-store contract: one suite, written once, run against every
//! adapter (SQLite in crm-local, DynamoDB in crm-aws). Use
//! [`event_store_contract!`](crate::event_store_contract) in the adapter's tests.

use crate::event::EventEnvelope;
use crate::ports::*;
use chrono::{TimeZone, Utc};
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

/// Generates one `#[tokio::test]` per contract case. `$make` names an async fn,
/// in the calling module, returning a fresh, empty `Arc<dyn EventStore>`.
#[macro_export]
macro_rules! event_store_contract {
    ($make:ident) => {
        mod event_store_contract {
            use $crate::store_contract as contract;
            $crate::event_store_contract!(@cases $make;
                append_and_load, conflict_detection, append_any_goes_to_the_end,
                reservations_are_atomic_with_events, receipts_answer_retries,
                sixteen_concurrent_writers, snapshots_bound_loading, read_all_pages_through_everything,
                oversized_append_is_refused, receipts_read_and_written_together);
        }
    };
    (@cases $make:ident; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                contract::$case(super::$make().await).await;
            }
        )*
    };
}

fn unique_stream(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

/// A test event (the store assigns the version).
pub fn event(stream_id: &str, n: u64) -> EventEnvelope {
    let id = Uuid::now_v7();
    EventEnvelope {
        event_id: id,
        stream_id: stream_id.to_string(),
        version: 0,
        event_type: "ContractTested".into(),
        schema_version: 1,
        customer_id: Some("c-1".into()),
        occurred_at: Utc
            .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .single()
            .unwrap_or_default()
            + chrono::Duration::nanoseconds(123_456_789),
        recorded_at: Utc::now(),
        causation_id: Some(Uuid::now_v7()),
        correlation_id: id,
        actor: "system:contract".into(),
        data: serde_json::json!({ "n": n, "text": "grüße \"quoted\"", "nested": { "list": [1, 2.5, null, true] } }),
    }
}

fn request(stream_id: &str, expected: ExpectedVersion, events: Vec<EventEnvelope>) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.to_string(),
        expected,
        events,
        reservations: Vec::new(),
        receipt: None,
    }
}

fn receipt(key: &str, body: &str) -> CommandReceipt {
    CommandReceipt {
        key: key.to_string(),
        request_hash: format!("hash-of-{body}"),
        status: 201,
        body: serde_json::json!({ "answer": body }),
        recorded_at: Utc
            .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
            .single()
            .unwrap_or_default(),
    }
}

async fn versions(store: &dyn EventStore, stream: &str) -> Vec<u64> {
    let events = store.read_stream(stream, 0, usize::MAX).await.expect("read stream");
    events.iter().map(|e| e.version).collect()
}

pub async fn append_and_load(store: Arc<dyn EventStore>) {
    let s = unique_stream("customer");
    let e1 = event(&s, 1);
    let e2 = event(&s, 2);
    let appended = store
        .append(request(&s, ExpectedVersion::NoStream, vec![e1.clone(), e2.clone()]))
        .await
        .expect("first append");
    assert_eq!(appended.version, 2);
    assert_eq!(
        appended.events.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2]
    );

    let loaded = store.load(&s).await.expect("load");
    assert_eq!(loaded.version, 2);
    assert!(loaded.snapshot.is_none());
    let mut want1 = e1;
    want1.version = 1;
    let mut want2 = e2;
    want2.version = 2;
    assert_eq!(
        loaded.events,
        vec![want1, want2.clone()],
        "envelopes round-trip exactly"
    );
    assert_eq!(store.read_stream(&s, 1, 10).await.expect("read"), vec![want2]);
    assert_eq!(store.read_stream(&s, 0, 1).await.expect("read").len(), 1);

    let missing = store.load(&unique_stream("nobody")).await.expect("load missing");
    assert_eq!(missing.version, 0);
    assert!(missing.events.is_empty());
}

pub async fn conflict_detection(store: Arc<dyn EventStore>) {
    let s = unique_stream("customer");
    store
        .append(request(&s, ExpectedVersion::NoStream, vec![event(&s, 1), event(&s, 2)]))
        .await
        .expect("seed");
    for expected in [
        ExpectedVersion::NoStream,
        ExpectedVersion::Exactly(1),
        ExpectedVersion::Exactly(5),
        ExpectedVersion::Exactly(0),
    ] {
        let err = store
            .append(request(&s, expected, vec![event(&s, 9)]))
            .await
            .expect_err("a stale or wrong expected version must conflict");
        assert!(matches!(err, AppendError::Conflict { .. }), "{expected:?} gave {err:?}");
    }
    assert_eq!(
        versions(store.as_ref(), &s).await,
        vec![1, 2],
        "nothing written on conflict"
    );
    store
        .append(request(&s, ExpectedVersion::Exactly(2), vec![event(&s, 3)]))
        .await
        .expect("right expected version");
    assert_eq!(versions(store.as_ref(), &s).await, vec![1, 2, 3]);
}

pub async fn append_any_goes_to_the_end(store: Arc<dyn EventStore>) {
    let s = unique_stream("order");
    store
        .append(request(&s, ExpectedVersion::Any, vec![event(&s, 1)]))
        .await
        .expect("any on empty");
    let a = store
        .append(request(&s, ExpectedVersion::Any, vec![event(&s, 2), event(&s, 3)]))
        .await
        .expect("any");
    assert_eq!(a.version, 3);
    assert_eq!(versions(store.as_ref(), &s).await, vec![1, 2, 3]);
}

pub async fn reservations_are_atomic_with_events(store: Arc<dyn EventStore>) {
    let a = unique_stream("customer");
    let b = unique_stream("customer");
    let key = format!("email#{}", Uuid::now_v7().simple());
    let key2 = format!("email#{}", Uuid::now_v7().simple());
    let claim = |key: &str, owner: &str| ReservationChange::Claim {
        key: key.into(),
        owner: owner.into(),
    };
    let release = |key: &str, owner: &str| ReservationChange::Release {
        key: key.into(),
        owner: owner.into(),
    };

    let mut first = request(&a, ExpectedVersion::NoStream, vec![event(&a, 1)]);
    first.reservations = vec![claim(&key, &a)];
    store.append(first).await.expect("a claims the key");
    assert_eq!(store.reservation_owner(&key).await.expect("owner"), Some(a.clone()));

    // b cannot take it: none of b's events are written.
    let mut second = request(&b, ExpectedVersion::NoStream, vec![event(&b, 1), event(&b, 2)]);
    second.reservations = vec![claim(&key, &b)];
    let err = store.append(second).await.expect_err("key is a's");
    assert_eq!(err, AppendError::ReservationTaken { key: key.clone() });
    assert!(versions(store.as_ref(), &b).await.is_empty(), "all or nothing");

    // b cannot release a's key either.
    let mut steal = request(&b, ExpectedVersion::NoStream, vec![event(&b, 1)]);
    steal.reservations = vec![release(&key, &b)];
    assert!(matches!(
        store.append(steal).await,
        Err(AppendError::ReservationTaken { .. })
    ));
    assert!(versions(store.as_ref(), &b).await.is_empty());

    // A version conflict takes no reservation.
    let mut stale = request(&a, ExpectedVersion::Exactly(0), vec![event(&a, 2)]);
    stale.reservations = vec![claim(&key2, &a)];
    assert!(matches!(store.append(stale).await, Err(AppendError::Conflict { .. })));
    assert_eq!(store.reservation_owner(&key2).await.expect("owner"), None);

    // a moves from key to key2 in one write; then b can take key.
    let mut moving = request(&a, ExpectedVersion::Exactly(1), vec![event(&a, 2)]);
    moving.reservations = vec![claim(&key2, &a), release(&key, &a)];
    store.append(moving).await.expect("move reservation");
    assert_eq!(store.reservation_owner(&key).await.expect("owner"), None);
    assert_eq!(store.reservation_owner(&key2).await.expect("owner"), Some(a.clone()));
    let mut third = request(&b, ExpectedVersion::NoStream, vec![event(&b, 1)]);
    third.reservations = vec![claim(&key, &b)];
    store.append(third).await.expect("b takes the released key");
    assert_eq!(store.reservation_owner(&key).await.expect("owner"), Some(b));
}

pub async fn receipts_answer_retries(store: Arc<dyn EventStore>) {
    let s = unique_stream("customer");
    let key = format!("command#{}", Uuid::now_v7().simple());
    assert_eq!(store.receipt(&key).await.expect("no receipt yet"), None);
    let mut first = request(&s, ExpectedVersion::NoStream, vec![event(&s, 1)]);
    first.receipt = Some(receipt(&key, "first"));
    store.append(first).await.expect("first");
    assert_eq!(
        store.receipt(&key).await.expect("receipt"),
        Some(receipt(&key, "first"))
    );

    // The retry carries the same receipt key: it is refused with the first answer.
    let mut retry = request(&s, ExpectedVersion::Any, vec![event(&s, 2)]);
    retry.receipt = Some(receipt(&key, "second"));
    match store.append(retry).await {
        Err(AppendError::DuplicateCommand(r)) => assert_eq!(*r, receipt(&key, "first")),
        other => panic!("expected DuplicateCommand, got {other:?}"),
    }
    assert_eq!(versions(store.as_ref(), &s).await, vec![1], "the retry wrote nothing");

    // A command that changes nothing can still keep its receipt.
    let key2 = format!("command#{}", Uuid::now_v7().simple());
    let mut only = request(&s, ExpectedVersion::Exactly(1), Vec::new());
    only.receipt = Some(receipt(&key2, "noop"));
    store.append(only).await.expect("receipt only");
    assert_eq!(
        store.receipt(&key2).await.expect("receipt").map(|r| r.body),
        Some(serde_json::json!({"answer": "noop"}))
    );
    assert_eq!(versions(store.as_ref(), &s).await, vec![1]);
}

pub async fn sixteen_concurrent_writers(store: Arc<dyn EventStore>) {
    const WRITERS: u64 = 16;
    const EACH: u64 = 3;
    let s = unique_stream("customer");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut conflicts = 0u32;
            for i in 0..EACH {
                loop {
                    let version = store.load(&s).await.expect("load").version;
                    let expected = if version == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exactly(version)
                    };
                    let e = event(&s, w * 100 + i);
                    match store.append(request(&s, expected, vec![e.clone()])).await {
                        Ok(_) => {
                            accepted.push(e.event_id);
                            break;
                        }
                        Err(AppendError::Conflict { .. }) => {
                            conflicts += 1;
                            assert!(conflicts < 10_000, "writer {w} starved");
                        }
                        Err(other) => panic!("writer {w}: {other:?}"),
                    }
                }
            }
            accepted
        }));
    }
    let mut accepted = HashSet::new();
    for t in tasks {
        accepted.extend(t.await.expect("writer task"));
    }
    let stored = store.read_stream(&s, 0, usize::MAX).await.expect("read");
    let want: Vec<u64> = (1..=WRITERS * EACH).collect();
    assert_eq!(
        stored.iter().map(|e| e.version).collect::<Vec<_>>(),
        want,
        "gapless versions"
    );
    let ids: HashSet<Uuid> = stored.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, accepted, "every accepted event is stored, nothing else");
}

pub async fn snapshots_bound_loading(store: Arc<dyn EventStore>) {
    let s = unique_stream("customer");
    store
        .append(request(
            &s,
            ExpectedVersion::NoStream,
            vec![event(&s, 1), event(&s, 2), event(&s, 3)],
        ))
        .await
        .expect("seed");
    let snap = Snapshot {
        stream_id: s.clone(),
        version: 2,
        state_schema: 1,
        state: serde_json::json!({ "folded": 2 }),
    };
    store.save_snapshot(snap.clone()).await.expect("save snapshot");
    let loaded = store.load(&s).await.expect("load");
    assert_eq!(loaded.snapshot, Some(snap));
    assert_eq!(loaded.events.iter().map(|e| e.version).collect::<Vec<_>>(), vec![3]);
    assert_eq!(loaded.version, 3);
    // Snapshots are not events.
    assert_eq!(versions(store.as_ref(), &s).await, vec![1, 2, 3]);
}

pub async fn read_all_pages_through_everything(store: Arc<dyn EventStore>) {
    let streams: Vec<String> = (0..3).map(|_| unique_stream("customer")).collect();
    let mut written = HashSet::new();
    for (i, s) in streams.iter().enumerate() {
        let events: Vec<_> = (0..=i as u64).map(|n| event(s, n)).collect();
        written.extend(events.iter().map(|e| e.event_id));
        let mut req = request(s, ExpectedVersion::NoStream, events);
        req.reservations = vec![ReservationChange::Claim {
            key: format!("email#{}", Uuid::now_v7().simple()),
            owner: s.clone(),
        }];
        req.receipt = Some(receipt(&format!("command#{}", Uuid::now_v7().simple()), "x"));
        store.append(req).await.expect("append");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page = store.read_all(cursor.as_deref(), 2).await.expect("page");
        assert!(page.events.len() <= 2);
        seen.extend(page.events);
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "paging ended");
    let ours: Vec<&EventEnvelope> = seen.iter().filter(|e| written.contains(&e.event_id)).collect();
    assert_eq!(
        ours.len(),
        written.len(),
        "every event once, no reservations or receipts"
    );
    for s in &streams {
        let v: Vec<u64> = ours.iter().filter(|e| &e.stream_id == s).map(|e| e.version).collect();
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(v, sorted, "per-stream order holds");
    }
}

pub async fn oversized_append_is_refused(store: Arc<dyn EventStore>) {
    let s = unique_stream("customer");
    let events: Vec<_> = (0..=MAX_EVENTS_PER_APPEND as u64).map(|n| event(&s, n)).collect();
    let err = store
        .append(request(&s, ExpectedVersion::NoStream, events))
        .await
        .expect_err("too many events for one atomic write");
    assert!(matches!(err, AppendError::TooLarge(_)), "{err:?}");
    assert!(versions(store.as_ref(), &s).await.is_empty());
}

/// Several commands' receipts: read together, in the order asked, across
/// more than one request's worth of keys (DynamoDB's BatchGetItem takes 100);
/// written with the events in one atomic write, or not at all (decision 0056).
pub async fn receipts_read_and_written_together(store: Arc<dyn EventStore>) {
    let s = unique_stream("activity");
    let key = |i: usize| format!("ingest#{}-{i}", s);
    let none = store.receipts(&[key(0), key(1)]).await.expect("no receipts yet");
    assert_eq!(none, vec![None, None]);

    // Three appends of the most receipts one may carry, one event each.
    let rounds = 3;
    for round in 0..rounds {
        let receipts: Vec<_> = (0..MAX_RECEIPTS_PER_APPEND)
            .map(|i| receipt(&key(round * MAX_RECEIPTS_PER_APPEND + i), &format!("m{i}")))
            .collect();
        let events: Vec<_> = (0..MAX_RECEIPTS_PER_APPEND as u64).map(|n| event(&s, n)).collect();
        let appended = store
            .append_with_receipts(request(&s, ExpectedVersion::Any, events), receipts)
            .await
            .expect("events and their receipts");
        assert_eq!(appended.version, ((round + 1) * MAX_RECEIPTS_PER_APPEND) as u64);
    }
    let written = rounds * MAX_RECEIPTS_PER_APPEND;
    // Every key written, and some never written, in a mixed order.
    let mut asked: Vec<String> = (0..written + 10).rev().map(key).collect();
    asked.swap(0, written / 2);
    let found = store.receipts(&asked).await.expect("receipts");
    assert_eq!(found.len(), asked.len());
    for (k, r) in asked.iter().zip(&found) {
        let i: usize = k.rsplit('-').next().and_then(|n| n.parse().ok()).expect("an index");
        match r {
            Some(r) if i < written => {
                assert_eq!(r.key, *k);
                assert_eq!(
                    r.body,
                    serde_json::json!({ "answer": format!("m{}", i % MAX_RECEIPTS_PER_APPEND) })
                );
            }
            None if i >= written => {}
            other => panic!("{k}: {other:?}"),
        }
    }

    // One receipt already there refuses the whole write: nothing of it stays.
    let before = versions(store.as_ref(), &s).await;
    let fresh = format!("ingest#{s}-fresh");
    let again = vec![receipt(&fresh, "fresh"), receipt(&key(7), "again")];
    let events = vec![event(&s, 1), event(&s, 2)];
    match store
        .append_with_receipts(request(&s, ExpectedVersion::Any, events), again)
        .await
    {
        Err(AppendError::DuplicateCommand(r)) => assert_eq!(*r, receipt(&key(7), "m7")),
        other => panic!("expected DuplicateCommand, got {other:?}"),
    }
    assert_eq!(
        versions(store.as_ref(), &s).await,
        before,
        "the events were not written"
    );
    assert_eq!(
        store.receipt(&fresh).await.expect("receipt"),
        None,
        "nor the new receipt"
    );

    // Too many receipts, or one key twice, are refused before any write.
    let too_many: Vec<_> = (0..=MAX_RECEIPTS_PER_APPEND)
        .map(|i| receipt(&format!("{fresh}-{i}"), "x"))
        .collect();
    let err = store
        .append_with_receipts(request(&s, ExpectedVersion::Any, vec![event(&s, 1)]), too_many)
        .await
        .expect_err("too many receipts");
    assert!(matches!(err, AppendError::TooLarge(_)), "{err:?}");
    let twice = vec![receipt(&fresh, "a"), receipt(&fresh, "b")];
    store
        .append_with_receipts(request(&s, ExpectedVersion::Any, vec![event(&s, 1)]), twice)
        .await
        .expect_err("one key twice");
    assert_eq!(versions(store.as_ref(), &s).await, before);
    assert_eq!(store.receipt(&fresh).await.expect("receipt"), None);
}

#[cfg(test)]
mod in_memory {
    use crate::ports::EventStore;
    use std::sync::Arc;

    async fn make() -> Arc<dyn EventStore> {
        Arc::new(crate::testing::InMemoryEventStore::default())
    }

    crate::event_store_contract!(make);
}
