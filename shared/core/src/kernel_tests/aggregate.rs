//! The command loop over the cart aggregate and an in-memory store that
//! lets another writer win the first appends.

use crate::aggregate::*;
use crate::clock::VirtualClock;
use crate::commerce::{AddItem, Cart, CartAggregate, CartCommand, CartError, CartEvent, CreateCart};
use crate::event::{envelopes, Actor};
use crate::event::{CommandMeta, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::ports::{AppendError, AppendRequest, CommandReceipt, EventStore, ExpectedVersion, StoreError};
use crate::ports::{Appended, EventPage, LoadedStream, Snapshot};
use crate::testing::{test_time, InMemoryEventStore};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Before each of the first `races` appends, another writer adds an item.
struct Racing {
    inner: InMemoryEventStore,
    races: AtomicU32,
}

#[async_trait]
impl EventStore for Racing {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        self.inner.load(stream_id).await
    }
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner.read_stream(stream_id, after, limit).await
    }
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        if self.races.load(Ordering::SeqCst) > 0 {
            self.races.fetch_sub(1, Ordering::SeqCst);
            let other = CartEvent::ItemAddedToCart {
                product_id: "other".into(),
                name: "Other".into(),
                quantity: 1,
                unit_price_minor: 1,
            };
            let meta = CommandMeta::new(Actor::api("other"));
            let events = envelopes(&request.stream_id, Some("c1"), &[other], &meta, test_time())
                .map_err(|e| StoreError::Failed(e.to_string()))?;
            self.inner
                .append(AppendRequest {
                    stream_id: request.stream_id.clone(),
                    expected: ExpectedVersion::Any,
                    events,
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await?;
        }
        self.inner.append(request).await
    }
    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        self.inner.receipt(key).await
    }
    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.reservation_owner(key).await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        self.inner.read_all(after, limit).await
    }
}

fn service(races: u32, attempts: u32) -> (Arc<Racing>, AggregateService<CartAggregate>) {
    let store = Arc::new(Racing {
        inner: InMemoryEventStore::default(),
        races: AtomicU32::new(0),
    });
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let service = AggregateService::new(store.clone(), clock).with_max_attempts(attempts);
    store.races.store(races, Ordering::SeqCst);
    (store, service)
}

fn respond(c: &Cart, _: &[EventEnvelope]) -> (u16, serde_json::Value) {
    (200, serde_json::json!({ "lines": c.items.len() }))
}

async fn create(service: &AggregateService<CartAggregate>) {
    let create = CartCommand::Create(CreateCart {
        customer_id: "c1".into(),
        currency: "EUR".into(),
    });
    let meta = CommandMeta::new(Actor::api("t"));
    service
        .execute("k1", &create, &(), &meta, None, &respond)
        .await
        .expect("created");
}

fn add() -> CartCommand {
    CartCommand::AddItem(AddItem {
        product_id: "mine".into(),
        name: "Mine".into(),
        quantity: 1,
        unit_price_minor: 100,
    })
}

#[tokio::test]
async fn a_lost_race_is_decided_again_on_the_new_state() {
    let (store, service) = service(0, 3);
    create(&service).await;
    store.races.store(2, Ordering::SeqCst);
    let meta = CommandMeta::new(Actor::api("t"));
    let done = service
        .execute("k1", &add(), &(), &meta, None, &respond)
        .await
        .expect("applied on the third attempt");
    let Executed::Applied {
        state, events, body, ..
    } = done
    else {
        panic!("applied")
    };
    assert_eq!(state.version, 4, "created, two other writes, then ours");
    assert_eq!(events[0].version, 4);
    assert_eq!(body["lines"], 2, "decided on the state with the other item");
}

#[tokio::test]
async fn an_input_read_per_attempt_is_read_again_after_a_lost_race() {
    let (store, service) = service(0, 3);
    create(&service).await;
    store.races.store(2, Ordering::SeqCst);
    let reads = AtomicU32::new(0);
    let read_input = || {
        reads.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<(), StoreError>(()))
    };
    let meta = CommandMeta::new(Actor::api("t"));
    let done = service
        .execute_reading("k1", &add(), read_input, &meta, &respond)
        .await
        .expect("applied on the third attempt");
    assert!(matches!(done, Executed::Applied { ref events, .. } if events[0].version == 4));
    assert_eq!(reads.load(Ordering::SeqCst), 3, "one read per attempt");
    // A failed read is the command's failure; nothing is written.
    let failed = service
        .execute_reading(
            "k1",
            &add(),
            || std::future::ready(Err::<(), _>(StoreError::Unavailable("metrics".into()))),
            &meta,
            &respond,
        )
        .await;
    assert_eq!(
        failed,
        Err(AggregateError::Store(StoreError::Unavailable("metrics".into())))
    );
    // The same path over a borrowed store.
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let borrowed = AggregateService::<CartAggregate, _>::borrowing(store.as_ref(), clock);
    assert_eq!(borrowed.load("k1").await.expect("load").map(|c| c.version), Some(4));
}

#[tokio::test]
async fn it_gives_up_after_the_bounded_attempts_and_writes_nothing() {
    let (store, service) = service(0, 3);
    create(&service).await;
    store.races.store(10, Ordering::SeqCst);
    let meta = CommandMeta::new(Actor::api("t"));
    let err = service.execute("k1", &add(), &(), &meta, None, &respond).await;
    assert_eq!(err, Err(AggregateError::Contended { attempts: 3 }));
    let state = service.load("k1").await.expect("load").expect("cart");
    assert!(state.item("mine").is_none(), "ours was never written");
}

#[tokio::test]
async fn a_receipt_answers_a_repeat_and_refuses_a_reused_key() {
    let (_store, service) = service(0, 3);
    create(&service).await;
    let meta = CommandMeta::new(Actor::api("t"));
    let key = IdempotencyKey::new("p", "k", "POST", "/carts/k1/items", b"a");
    let first = service.execute("k1", &add(), &(), &meta, Some(&key), &respond).await;
    assert!(matches!(first, Ok(Executed::Applied { .. })));
    let again = service.execute("k1", &add(), &(), &meta, Some(&key), &respond).await;
    assert_eq!(
        again,
        Ok(Executed::Replayed {
            status: 200,
            body: serde_json::json!({ "lines": 1 })
        })
    );
    let other = IdempotencyKey::new("p", "k", "POST", "/carts/k1/items", b"b");
    let reused = service.execute("k1", &add(), &(), &meta, Some(&other), &respond).await;
    assert_eq!(reused, Err(AggregateError::IdempotencyKeyReused));
    assert_eq!(service.load("k1").await.expect("load").expect("cart").version, 2);
    // Refusals pass through as they are.
    let missing = service.execute("nope", &add(), &(), &meta, None, &respond).await;
    assert_eq!(missing, Err(AggregateError::Rejected(CartError::NotFound)));
}

/// A counter that snapshots: `Add(n)` appends `Added { n }`.
struct Counter;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Count {
    total: u64,
    version: u64,
    from_snapshot: bool,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", content = "data")]
enum CounterEvent {
    Added { n: u64 },
}

impl crate::event::DomainEvent for CounterEvent {
    fn schema_version(_: &str) -> u32 {
        1
    }
}

impl Aggregate for Counter {
    type State = Count;
    type Command = u64;
    type Event = CounterEvent;
    type Error = CartError;
    type Input = ();
    const SNAPSHOT_SCHEMA: Option<u32> = Some(7);
    fn stream_id(id: &str) -> String {
        format!("counter-{id}")
    }
    fn customer_id(_: &Count) -> Option<&str> {
        None
    }
    fn version(state: &Count) -> u64 {
        state.version
    }
    fn not_found() -> CartError {
        CartError::NotFound
    }
    fn decide(_: Option<&Count>, n: &u64, _: &DecideContext<'_, ()>) -> Result<Vec<CounterEvent>, CartError> {
        Ok(if *n == 0 {
            vec![]
        } else {
            vec![CounterEvent::Added { n: *n }]
        })
    }
    fn evolve(state: Option<Count>, event: &CounterEvent, _: DateTime<Utc>, version: u64) -> Option<Count> {
        let CounterEvent::Added { n } = event;
        let mut c = state.unwrap_or(Count {
            total: 0,
            version: 0,
            from_snapshot: false,
        });
        c.total += n;
        c.version = version;
        Some(c)
    }
    fn to_snapshot(state: &Count) -> Option<serde_json::Value> {
        let mut marked = state.clone();
        marked.from_snapshot = true;
        serde_json::to_value(marked).ok()
    }
    fn from_snapshot(value: serde_json::Value) -> Option<Count> {
        serde_json::from_value(value).ok()
    }
}

#[tokio::test]
async fn snapshots_of_the_schema_bound_loading_and_others_are_ignored() {
    let store = Arc::new(InMemoryEventStore::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let service = AggregateService::<Counter>::new(store.clone(), clock).with_snapshot_every(2);
    let meta = CommandMeta::new(Actor::api("t"));
    let respond = |_: &Count, _: &[EventEnvelope]| (200, serde_json::Value::Null);
    for n in 1..=3 {
        service
            .execute("a", &n, &(), &meta, None, &respond)
            .await
            .expect("added");
    }
    // A no-op writes nothing.
    let noop = service
        .execute("a", &0, &(), &meta, None, &respond)
        .await
        .expect("no-op");
    assert!(matches!(noop, Executed::Applied { events, .. } if events.is_empty()));
    let loaded = service.load("a").await.expect("load").expect("count");
    assert_eq!((loaded.total, loaded.version, loaded.from_snapshot), (6, 3, true));
    assert_eq!(
        store
            .load("counter-a")
            .await
            .expect("stream")
            .snapshot
            .map(|s| s.version),
        Some(2)
    );
    // A snapshot of another schema (or unreadable) is ignored: the stream is folded.
    for (schema, state) in [
        (
            8,
            serde_json::json!({ "total": 99, "version": 3, "from_snapshot": true }),
        ),
        (7, serde_json::json!("junk")),
    ] {
        store
            .save_snapshot(Snapshot {
                stream_id: "counter-a".into(),
                version: 3,
                state_schema: schema,
                state,
            })
            .await
            .expect("saved");
        let loaded = service.load("a").await.expect("load").expect("count");
        assert_eq!((loaded.total, loaded.from_snapshot), (6, false), "schema {schema}");
    }
}
