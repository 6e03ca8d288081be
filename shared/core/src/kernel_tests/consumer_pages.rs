//! A page has the effect of its events delivered one at a time: the same
//! read models, whatever the page size, with duplicates, gaps, poison events
//! and refused commits in it.

use crate::consumer::{ConsumerGroup, ProjectionError};
use crate::event::EventEnvelope;
use crate::ports::{Commit, CommitError, ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;

use crate::consumer::Projection;
use crate::insights::tests as fixtures;
use crate::ports::{DeadLetter, EventStore};
use crate::testing::{InMemoryDeadLetters, InMemoryEventStore, InMemoryReadModels};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

type Dump = BTreeMap<(String, String, String), Value>;

fn projections() -> Vec<Arc<dyn Projection>> {
    let mut all = fixtures::projections();
    all.extend([
        Arc::new(crate::customer::views::CustomerProfileProjection) as Arc<dyn Projection>,
        Arc::new(crate::customer::views::TimelineProjection),
        Arc::new(crate::customer::metrics::ProfileMetricsProjection),
        Arc::new(crate::customer::streams::CustomerStreamsProjection),
        Arc::new(crate::consent::ledger::ConsentLedgerProjection),
        // Counts (ReadOp::Add): a redelivered or reordered page adds nothing twice.
        Arc::new(crate::ops::counters::OpsCountersProjection),
    ]);
    all
}

fn group(store: Arc<InMemoryEventStore>, docs: Arc<dyn ReadModelStore>) -> (ConsumerGroup, Arc<InMemoryDeadLetters>) {
    let dead = Arc::new(InMemoryDeadLetters::default());
    (
        ConsumerGroup::new("projector", projections(), store, docs, dead.clone()),
        dead,
    )
}

fn letters(dead: &InMemoryDeadLetters) -> Vec<DeadLetter> {
    dead.letters.lock().map(|l| l.clone()).unwrap_or_default()
}

async fn history() -> (Arc<InMemoryEventStore>, Vec<EventEnvelope>) {
    let mut rng = fixtures::Rng(0x9A6E_5EED);
    let store = fixtures::random_history(40, &mut rng).await;
    let events = fixtures::all_events(&store).await;
    assert!(events.len() > 200, "a meaningful history ({} events)", events.len());
    (store, events)
}

/// The read models of `events` handed to the group one at a time.
async fn one_at_a_time(store: &Arc<InMemoryEventStore>, events: &[EventEnvelope]) -> Dump {
    let docs = Arc::new(InMemoryReadModels::default());
    let (group, dead) = group(store.clone(), docs.clone());
    for e in events {
        group.handle(e, fixtures::t()).await.expect("one event");
    }
    assert!(letters(&dead).is_empty());
    docs.dump()
}

#[tokio::test]
async fn pages_of_any_size_give_the_read_models_of_one_event_at_a_time() {
    let (store, events) = history().await;
    let expected = one_at_a_time(&store, &events).await;
    assert!(expected.len() > 100, "{} documents", expected.len());
    for size in [1, 7, 64, events.len()] {
        let docs = Arc::new(InMemoryReadModels::default());
        let (group, dead) = group(store.clone(), docs.clone());
        let mut applied = 0;
        for page in events.chunks(size) {
            applied += group.handle_page(page, fixtures::t()).await.expect("page").applied;
        }
        let handled: usize = projections()
            .iter()
            .map(|p| events.iter().filter(|e| p.handles(&e.event_type)).count())
            .sum();
        assert_eq!(
            applied, handled as u64,
            "page size {size}: one per handled (consumer, event)"
        );
        assert!(letters(&dead).is_empty());
        assert_eq!(docs.dump(), expected, "page size {size}");
        // The same events again change nothing (events that made nothing
        // from the event alone recorded nothing, so they are projected
        // again, to nothing again).
        let again = group.handle_page(&events, fixtures::t()).await.expect("again");
        assert_eq!(again.parked, 0);
        assert!(again.applied < applied / 2, "{} of {applied} again", again.applied);
        assert_eq!(docs.dump(), expected, "page size {size}, delivered twice");
    }
}

#[tokio::test]
async fn duplicated_and_reordered_pages_give_the_same_read_models() {
    let (store, events) = history().await;
    let expected = one_at_a_time(&store, &events).await;
    let mut rng = fixtures::Rng(31);
    let mut deliveries: Vec<EventEnvelope> = Vec::new();
    for e in &events {
        for _ in 0..(1 + rng.below(3)) {
            deliveries.push(e.clone());
        }
    }
    for i in (1..deliveries.len()).rev() {
        deliveries.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let docs = Arc::new(InMemoryReadModels::default());
    let (group, _) = group(store.clone(), docs.clone());
    for page in deliveries.chunks(50) {
        group.handle_page(page, fixtures::t()).await.expect("page");
    }
    assert_eq!(docs.dump(), expected);
}

/// Read models that refuse every `every`-th page commit as a conflict.
struct Refusing {
    inner: InMemoryReadModels,
    every: usize,
    calls: AtomicUsize,
}

#[async_trait]
impl ReadModelStore for Refusing {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        self.inner.checkpoint(consumer, stream_id).await
    }
    async fn commit(&self, c: &str, s: &str, expected: u64, new: u64, ops: Vec<ReadOp>) -> Result<(), CommitError> {
        self.inner.commit(c, s, expected, new, ops).await
    }
    async fn commit_all(&self, commits: Vec<Commit>) -> Result<(), CommitError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) % self.every == 0 {
            let first = commits
                .first()
                .map(|c| (c.consumer.clone(), c.stream_id.clone(), c.expected));
            let (consumer, stream_id, expected) = first.unwrap_or_default();
            return Err(CommitError::Conflict {
                consumer,
                stream_id,
                expected,
            });
        }
        self.inner.commit_all(commits).await
    }
    async fn get(&self, c: &str, p: &str, s: &str) -> Result<Option<Value>, StoreError> {
        self.inner.get(c, p, s).await
    }
    async fn list(
        &self,
        c: &str,
        p: &str,
        pre: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        self.inner.list(c, p, pre, after, limit).await
    }
}

#[tokio::test]
async fn a_refused_page_commit_falls_back_to_one_event_at_a_time() {
    let (store, events) = history().await;
    let expected = one_at_a_time(&store, &events).await;
    let docs = Arc::new(Refusing {
        inner: InMemoryReadModels::default(),
        every: 3,
        calls: AtomicUsize::new(0),
    });
    let (group, dead) = group(store.clone(), docs.clone());
    for page in events.chunks(40) {
        group.handle_page(page, fixtures::t()).await.expect("page");
    }
    assert!(docs.calls.load(Ordering::SeqCst) > 3, "some pages were refused");
    assert!(letters(&dead).is_empty());
    assert_eq!(docs.inner.dump(), expected);
}

#[tokio::test]
async fn a_poison_event_in_a_page_is_parked_once_and_the_rest_applied() {
    let (store, _) = history().await;
    let poison_stream = "customer-poison";
    let mut poison = crate::testing::raw_event(poison_stream, "CustomerRegistered", json!({ "nonsense": true }));
    poison.customer_id = Some("poison".into());
    store
        .append(crate::ports::AppendRequest {
            stream_id: poison_stream.into(),
            expected: crate::ports::ExpectedVersion::NoStream,
            events: vec![poison],
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
    let with_poison = fixtures::all_events(&store).await;
    let clean: Vec<EventEnvelope> = with_poison
        .iter()
        .filter(|e| e.stream_id != poison_stream)
        .cloned()
        .collect();
    let expected = one_at_a_time(&store, &clean).await;

    let docs = Arc::new(InMemoryReadModels::default());
    let (group, dead) = group(store.clone(), docs.clone());
    let mut parked = 0;
    for page in with_poison.chunks(100) {
        parked += group.handle_page(page, fixtures::t()).await.expect("page").parked;
    }
    let letters = letters(&dead);
    assert!(
        parked >= 1 && letters.len() as u64 == parked,
        "{parked} parked, {} letters",
        letters.len()
    );
    assert!(
        letters.iter().all(|l| l.payload["stream_id"] == poison_stream),
        "{letters:?}"
    );
    // The counters count the poison event too (they take any event).
    let counters = crate::ops::counters::OPS_COUNTERS;
    let without_poison: Dump = docs
        .dump()
        .into_iter()
        .filter(|((c, p, _), _)| !p.contains("poison") && c != counters)
        .collect();
    let expected: Dump = expected.into_iter().filter(|((c, _, _), _)| c != counters).collect();
    assert_eq!(without_poison, expected);
}

/// Records, per stream, the versions of `Handled` events it applied, in the
/// order it applied them (so a double or out-of-order application shows).
struct AppliedOrder;

#[async_trait]
impl Projection for AppliedOrder {
    fn name(&self) -> &'static str {
        "applied-order"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "Handled"
    }
    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let mut seen = docs
            .get("applied-order", &event.stream_id, "versions")
            .await?
            .unwrap_or_else(|| json!([]));
        if let Some(list) = seen.as_array_mut() {
            list.push(json!(event.version));
        }
        Ok(vec![ReadOp::Put {
            partition: event.stream_id.clone(),
            sort: "versions".into(),
            body: seen,
        }])
    }
}

/// Read models that count what they are asked, around the in-memory ones.
#[derive(Default)]
struct Counted {
    inner: InMemoryReadModels,
    checkpoint_reads: AtomicUsize,
    commits: AtomicUsize,
}

#[async_trait]
impl ReadModelStore for Counted {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        self.checkpoint_reads.fetch_add(1, Ordering::SeqCst);
        self.inner.checkpoint(consumer, stream_id).await
    }
    async fn commit(&self, c: &str, s: &str, expected: u64, new: u64, ops: Vec<ReadOp>) -> Result<(), CommitError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(c, s, expected, new, ops).await
    }
    async fn get(&self, c: &str, p: &str, s: &str) -> Result<Option<Value>, StoreError> {
        self.inner.get(c, p, s).await
    }
    async fn list(
        &self,
        c: &str,
        p: &str,
        pre: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        self.inner.list(c, p, pre, after, limit).await
    }
}

/// An event store that counts its stream reads.
struct CountedEvents {
    inner: Arc<InMemoryEventStore>,
    reads: AtomicUsize,
}

#[async_trait]
impl EventStore for CountedEvents {
    async fn load(&self, stream_id: &str) -> Result<crate::ports::LoadedStream, StoreError> {
        self.inner.load(stream_id).await
    }
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read_stream(stream_id, after, limit).await
    }
    async fn append(
        &self,
        request: crate::ports::AppendRequest,
    ) -> Result<crate::ports::Appended, crate::ports::AppendError> {
        self.inner.append(request).await
    }
    async fn receipt(&self, key: &str) -> Result<Option<crate::ports::CommandReceipt>, StoreError> {
        self.inner.receipt(key).await
    }
    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.reservation_owner(key).await
    }
    async fn save_snapshot(&self, snapshot: crate::ports::Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<crate::ports::EventPage, StoreError> {
        self.inner.read_all(after, limit).await
    }
}

/// A stream whose versions `handled` are `Handled` events and the others
/// `Other`, stored; returns its events in version order.
async fn mixed_stream(store: &InMemoryEventStore, stream: &str, len: u64, handled: &[u64]) -> Vec<EventEnvelope> {
    let mut stored = Vec::new();
    for from in (1..=len).step_by(crate::ports::MAX_EVENTS_PER_APPEND) {
        let to = (from + crate::ports::MAX_EVENTS_PER_APPEND as u64 - 1).min(len);
        let events = (from..=to)
            .map(|v| {
                let kind = if handled.contains(&v) { "Handled" } else { "Other" };
                crate::testing::raw_event(stream, kind, json!({}))
            })
            .collect();
        let expected = match from {
            1 => crate::ports::ExpectedVersion::NoStream,
            _ => crate::ports::ExpectedVersion::Exactly(from - 1),
        };
        let appended = store
            .append(crate::ports::AppendRequest {
                stream_id: stream.into(),
                expected,
                events,
                reservations: Vec::new(),
                receipt: None,
            })
            .await
            .expect("append");
        stored.extend(appended.events);
    }
    stored
}

struct Setup {
    events: Arc<CountedEvents>,
    docs: Arc<Counted>,
    group: ConsumerGroup,
}

fn applied_order_group(store: Arc<InMemoryEventStore>) -> Setup {
    let events = Arc::new(CountedEvents {
        inner: store,
        reads: AtomicUsize::new(0),
    });
    let docs = Arc::new(Counted::default());
    let group = ConsumerGroup::new(
        "test",
        vec![Arc::new(AppliedOrder)],
        events.clone(),
        docs.clone(),
        Arc::new(InMemoryDeadLetters::default()),
    );
    Setup { events, docs, group }
}

async fn applied(docs: &Counted, stream: &str) -> Value {
    docs.inner
        .get("applied-order", stream, "versions")
        .await
        .expect("get")
        .unwrap_or(json!([]))
}

#[tokio::test]
async fn events_of_unhandled_types_write_and_read_nothing() {
    let store = Arc::new(InMemoryEventStore::default());
    let events = mixed_stream(&store, "s-unhandled", 30, &[]).await;
    let setup = applied_order_group(store);
    for e in &events {
        setup.group.handle(e, fixtures::t()).await.expect("one event");
    }
    let page = setup.group.handle_page(&events, fixtures::t()).await.expect("page");
    assert_eq!((page.applied, page.duplicates, page.parked), (0, 30, 0));
    assert_eq!(setup.docs.commits.load(Ordering::SeqCst), 0, "no commit");
    assert_eq!(
        setup.docs.checkpoint_reads.load(Ordering::SeqCst),
        0,
        "no checkpoint read"
    );
    assert_eq!(setup.events.reads.load(Ordering::SeqCst), 0, "no event read");
    assert_eq!(
        setup
            .docs
            .inner
            .checkpoint("applied-order", "s-unhandled")
            .await
            .expect("cp"),
        0
    );
}

#[tokio::test]
async fn a_handled_event_after_many_unhandled_ones_applies_the_gap_in_order() {
    let store = Arc::new(InMemoryEventStore::default());
    let handled = [1, 2, 45, 46, 90, 120];
    let events = mixed_stream(&store, "s-gap", 121, &handled).await;
    // One at a time, newest first: the newest handled event fills the whole
    // gap from the store, in order; the others are then duplicates.
    let setup = applied_order_group(store.clone());
    for e in events.iter().rev() {
        setup.group.handle(e, fixtures::t()).await.expect("one event");
    }
    assert_eq!(applied(&setup.docs, "s-gap").await, json!(handled));
    assert_eq!(setup.events.reads.load(Ordering::SeqCst), 1, "one read of the gap");
    assert_eq!(
        setup.docs.inner.checkpoint("applied-order", "s-gap").await.expect("cp"),
        120
    );

    // In pages of 10 in order: a gap inside the page is filled from it; the
    // checkpoint passes over the unhandled events after a handled one that
    // the page holds, so only the gaps that leave their page are read
    // (before 45, 90 and 120: three reads).
    let setup = applied_order_group(store.clone());
    for page in events.chunks(10) {
        setup.group.handle_page(page, fixtures::t()).await.expect("page");
        if page[0].version == 41 {
            assert_eq!(
                setup.docs.inner.checkpoint("applied-order", "s-gap").await.expect("cp"),
                50,
                "46 applied, 47..=50 passed over"
            );
        }
    }
    assert_eq!(applied(&setup.docs, "s-gap").await, json!(handled));
    assert_eq!(
        setup.events.reads.load(Ordering::SeqCst),
        3,
        "one read per gap leaving its page"
    );
    assert_eq!(
        setup.docs.inner.checkpoint("applied-order", "s-gap").await.expect("cp"),
        120
    );
    let commits = setup.docs.commits.load(Ordering::SeqCst);
    assert!(
        commits <= handled.len(),
        "{commits} commits for {} handled events",
        handled.len()
    );

    // Only the handled events, each once, in reverse: the store fills the gaps.
    let setup = applied_order_group(store);
    let only_handled: Vec<EventEnvelope> = events.iter().filter(|e| e.event_type == "Handled").cloned().collect();
    for e in only_handled.iter().rev() {
        setup
            .group
            .handle_page(std::slice::from_ref(e), fixtures::t())
            .await
            .expect("page");
    }
    assert_eq!(applied(&setup.docs, "s-gap").await, json!(handled));
}

#[tokio::test]
async fn duplicated_and_shuffled_mixed_streams_apply_each_handled_event_once_in_order() {
    let store = Arc::new(InMemoryEventStore::default());
    let mut rng = fixtures::Rng(77);
    let mut all = Vec::new();
    let mut expected = Vec::new();
    for s in 0..20 {
        let stream = format!("s-mixed-{s}");
        let len = 5 + rng.below(60);
        let handled: Vec<u64> = (1..=len).filter(|_| rng.below(5) == 0).collect();
        all.extend(mixed_stream(&store, &stream, len, &handled).await);
        expected.push((stream, handled));
    }
    for (size, one_by_one) in [(1, true), (13, false), (200, false)] {
        let mut deliveries: Vec<EventEnvelope> = Vec::new();
        for e in &all {
            for _ in 0..(1 + rng.below(3)) {
                deliveries.push(e.clone());
            }
        }
        for i in (1..deliveries.len()).rev() {
            deliveries.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let setup = applied_order_group(store.clone());
        for page in deliveries.chunks(size) {
            if one_by_one {
                setup.group.handle(&page[0], fixtures::t()).await.expect("one event");
            } else {
                setup.group.handle_page(page, fixtures::t()).await.expect("page");
            }
        }
        for (stream, handled) in &expected {
            assert_eq!(
                applied(&setup.docs, stream).await,
                json!(handled),
                "{stream}, pages of {size}"
            );
        }
    }
}

/// Marks each `Handled` event's stream in a shared document, from the event
/// alone (it reads nothing), and another document per event.
struct BlindMarker;

#[async_trait]
impl Projection for BlindMarker {
    fn name(&self) -> &'static str {
        "blind-marker"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "Handled" || event_type == "Other"
    }
    async fn project(&self, event: &EventEnvelope, _: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        if event.event_type == "Other" {
            return Ok(Vec::new());
        }
        Ok(vec![
            ReadOp::Put {
                partition: "streams".into(),
                sort: event.stream_id.clone(),
                body: json!({}),
            },
            ReadOp::Put {
                partition: event.stream_id.clone(),
                sort: format!("event#{:04}", event.version),
                body: json!(event.version),
            },
        ])
    }
}

/// Read models that keep every commit they are handed.
#[derive(Default)]
struct Kept {
    inner: InMemoryReadModels,
    commits: std::sync::Mutex<Vec<Commit>>,
}

#[async_trait]
impl ReadModelStore for Kept {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        self.inner.checkpoint(consumer, stream_id).await
    }
    async fn commit(&self, c: &str, s: &str, expected: u64, new: u64, ops: Vec<ReadOp>) -> Result<(), CommitError> {
        self.inner.commit(c, s, expected, new, ops).await
    }
    async fn commit_all(&self, commits: Vec<Commit>) -> Result<(), CommitError> {
        if let Ok(mut kept) = self.commits.lock() {
            kept.extend(commits.iter().cloned());
        }
        self.inner.commit_all(commits).await
    }
    async fn get(&self, c: &str, p: &str, s: &str) -> Result<Option<Value>, StoreError> {
        self.inner.get(c, p, s).await
    }
    async fn list(
        &self,
        c: &str,
        p: &str,
        pre: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        self.inner.list(c, p, pre, after, limit).await
    }
}

#[tokio::test]
async fn operations_made_from_the_event_alone_are_idempotent_and_nothing_so_made_records_nothing() {
    let store = Arc::new(InMemoryEventStore::default());
    let events = mixed_stream(&store, "s-blind", 6, &[2, 3, 5]).await;
    let docs = Arc::new(Kept::default());
    let group = ConsumerGroup::new(
        "test",
        vec![Arc::new(BlindMarker), Arc::new(AppliedOrder)],
        store.clone(),
        docs.clone(),
        Arc::new(InMemoryDeadLetters::default()),
    );
    group.handle_page(&events, fixtures::t()).await.expect("page");
    let commits = docs.commits.lock().map(|c| c.clone()).unwrap_or_default();
    let of = |consumer: &str| {
        commits
            .iter()
            .filter(|c| c.consumer == consumer)
            .cloned()
            .collect::<Vec<_>>()
    };
    // The marker read nothing: its operations are idempotent; its `Other`
    // events made nothing and record nothing (versions 1, 4 and 6).
    let marker = of("blind-marker");
    assert_eq!(
        marker.iter().map(|c| (c.expected, c.new)).collect::<Vec<_>>(),
        [(0, 2), (2, 3), (3, 5)]
    );
    // The stream's marker is put once: the page knows it holds `{}` after that.
    assert_eq!(
        marker
            .iter()
            .map(|c| (c.ops.len(), c.idempotent.len()))
            .collect::<Vec<_>>(),
        [(0, 2), (0, 1), (0, 1)],
        "{marker:?}"
    );
    // The ordered list reads its document: its operations move with the checkpoint.
    let ordered = of("applied-order");
    assert!(
        ordered.iter().all(|c| c.idempotent.is_empty() && c.ops.len() == 1),
        "{ordered:?}"
    );
    assert_eq!(ordered.last().map(|c| c.new), Some(6), "5, then 6 passed over");
    assert_eq!(
        docs.inner
            .get("blind-marker", "s-blind", "event#0005")
            .await
            .expect("get"),
        Some(json!(5))
    );
    // Delivered again, one by one: the same read models.
    let before = docs.inner.dump();
    for e in &events {
        group.handle(e, fixtures::t()).await.expect("again");
    }
    assert_eq!(docs.inner.dump(), before);
}
