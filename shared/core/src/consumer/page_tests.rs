//! A page has the effect of its events delivered one at a time: the same
//! read models, whatever the page size, with duplicates, gaps, poison events
//! and refused commits in it.

use super::*;
use crate::consumer::{ConsumerGroup, Projection};
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
        Arc::new(crate::privacy::export::CustomerStreamsProjection),
        Arc::new(crate::consent::ledger::ConsentLedgerProjection),
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
        assert_eq!(applied, (events.len() * projections().len()) as u64, "page size {size}");
        assert!(letters(&dead).is_empty());
        assert_eq!(docs.dump(), expected, "page size {size}");
        // The same events again change nothing.
        let again = group.handle_page(&events, fixtures::t()).await.expect("again");
        assert_eq!((again.applied, again.parked), (0, 0));
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
    let without_poison: Dump = docs
        .dump()
        .into_iter()
        .filter(|((_, p, _), _)| !p.contains("poison"))
        .collect();
    assert_eq!(without_poison, expected);
}

#[tokio::test]
async fn the_page_view_lists_what_the_store_would_hold_after_the_page() {
    let mut rng = fixtures::Rng(5);
    for round in 0..200 {
        let base = InMemoryReadModels::default();
        let after_ops = InMemoryReadModels::default();
        let initial: Vec<ReadOp> = (0..rng.below(12))
            .map(|i| ReadOp::Put {
                partition: "p".into(),
                sort: format!("k{:02}", rng.below(20)),
                body: json!(i),
            })
            .collect();
        for store in [&base, &after_ops] {
            store.commit("c", "s", 0, 1, initial.clone()).await.expect("initial");
        }
        let page = PageDocs::new(&base);
        let ops: Vec<ReadOp> = (0..rng.below(10))
            .map(|i| {
                let sort = format!("k{:02}", rng.below(20));
                if rng.below(3) == 0 {
                    ReadOp::Delete {
                        partition: "p".into(),
                        sort,
                    }
                } else {
                    ReadOp::Put {
                        partition: "p".into(),
                        sort,
                        body: json!(100 + i),
                    }
                }
            })
            .collect();
        // Some reads first, so cached absent and present documents mix in.
        for _ in 0..3 {
            page.get("c", "p", &format!("k{:02}", rng.below(20)))
                .await
                .expect("get");
        }
        page.stage("c", "s", 2, &ops).expect("stage");
        after_ops.commit("c", "s", 1, 2, ops).await.expect("commit");
        for _ in 0..5 {
            let prefix = ["", "k", "k0", "k1", "x"][rng.below(5) as usize];
            let after = (rng.below(2) == 0).then(|| format!("k{:02}", rng.below(20)));
            let limit = 1 + rng.below(8) as usize;
            assert_eq!(
                page.list("c", "p", prefix, after.as_deref(), limit)
                    .await
                    .expect("page list"),
                after_ops
                    .list("c", "p", prefix, after.as_deref(), limit)
                    .await
                    .expect("list"),
                "round {round}: prefix {prefix:?}, after {after:?}, limit {limit}"
            );
        }
    }
}
