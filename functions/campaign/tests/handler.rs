//! The campaign handler, called as Lambda calls it, over the local runtime's
//! SQLite stores: the order sample events in `events/campaign/` start their
//! journeys, and a fired payment retry timer initiates the payment again.

use crm_campaign::handler::handle;
use crm_core::clock::VirtualClock;
use crm_core::commerce::{
    payment_retry_timer_name, CartService, Order, OrderCommand, OrderItem, OrderService, PaymentMethod, PaymentStatus,
    PlaceOrder, RecordPayment,
};
use crm_core::customer::Address;
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::journey::campaigns::CampaignHandler;
use crm_core::journey::catalog::StoredCatalog;
use crm_core::journey::engine::JourneyEngine;
use crm_core::ports::EventStore;
use crm_core::scheduler::Scheduler;
use crm_testkit::local::{timer_event, SqliteDeadLetters, SqliteEventStore, SqliteReadModels, SqliteScheduler};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use std::sync::Arc;

fn sample(name: &str) -> Value {
    let path = format!("{}/../../events/campaign/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct World {
    _dir: tempfile::TempDir,
    /// Encrypting, over SQLite (decision 0017), as the functions run.
    events: Arc<dyn EventStore>,
    keys: Arc<crm_testkit::local::SqliteKeyStore>,
    scheduler: Arc<SqliteScheduler>,
    dead_letters: Arc<SqliteDeadLetters>,
    orders: OrderService,
    handler: CampaignHandler,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crm.db");
    let clock = Arc::new(VirtualClock::starting_at(
        serde_json::from_str(r#""2026-11-23T13:05:00Z""#).expect("time"),
    ));
    let keys = Arc::new(crm_testkit::local::SqliteKeyStore::open_data_dir(dir.path()).expect("keys"));
    let events: Arc<dyn EventStore> = Arc::new(crm_core::privacy::EncryptingEventStore::new(
        Arc::new(SqliteEventStore::open(&db).expect("events")),
        keys.clone(),
    ));
    let docs = Arc::new(SqliteReadModels::open(&db).expect("docs"));
    let scheduler = Arc::new(SqliteScheduler::open(&db).expect("timers"));
    let dead_letters = Arc::new(SqliteDeadLetters::open(&db).expect("dead letters"));
    let catalog = Arc::new(StoredCatalog::new(events.clone()));
    let engine = JourneyEngine::new(events.clone(), docs, scheduler.clone(), catalog, clock.clone());
    let handler = CampaignHandler::new(
        engine,
        CartService::new(events.clone(), clock.clone(), scheduler.clone()),
        OrderService::new(events.clone(), clock.clone(), scheduler.clone()),
        dead_letters.clone(),
    );
    World {
        orders: OrderService::new(events.clone(), clock, scheduler.clone()),
        _dir: dir,
        events,
        keys,
        scheduler,
        dead_letters,
        handler,
    }
}

async fn invoke(w: &World, payload: Value) -> Value {
    handle(
        LambdaEvent::new(payload, Context::default()),
        &w.handler,
        w.keys.as_ref(),
        w.dead_letters.as_ref(),
    )
    .await
    .expect("handled")
}

async fn all(w: &World) -> Vec<EventEnvelope> {
    w.events.read_all(None, 1000).await.expect("read all").events
}

#[tokio::test]
async fn the_order_samples_start_their_journeys() {
    let w = world();
    // (The delivery's campaigns enter only customers with marketing email
    // consent, which this store does not know: evaluated, nothing started.
    // tests/tests/post_purchase.rs runs them end to end.)
    for (name, campaign) in [
        ("order-confirmed.json", Some("order-confirmation")),
        ("order-delivered.json", None),
        ("payment-failed.json", Some("payment-failed-recovery")),
    ] {
        let answer = invoke(&w, sample(name)).await;
        assert_eq!(answer["outcome"], "delivered", "{name}: {answer}");
        assert_eq!(answer["parked"], serde_json::json!([]), "{name}: {answer}");
        let started: Vec<String> = all(&w)
            .await
            .into_iter()
            .filter(|e| e.event_type == "JourneyStarted")
            .filter_map(|e| e.data["campaign_id"].as_str().map(str::to_string))
            .collect();
        if let Some(campaign) = campaign {
            assert!(
                started.iter().any(|c| c == campaign),
                "{name} starts {campaign}: {started:?}"
            );
        }
    }
    let started = all(&w)
        .await
        .into_iter()
        .filter(|e| e.event_type == "JourneyStarted")
        .count();
    assert_eq!(started, 2);
    assert!(w.dead_letters.list().await.expect("dead letters").is_empty());
}

#[tokio::test]
async fn a_fired_payment_retry_initiates_the_payment_again() {
    let w = world();
    // A retry timer of an order that does not exist: answered, nothing written.
    let answer = invoke(&w, sample("timer-fired-payment-retry.json")).await;
    assert_eq!(answer["outcome"], "timer", "{answer}");
    assert!(all(&w).await.is_empty());

    let meta = CommandMeta::new(Actor::api("test"));
    let respond = |_: &Order, _: &[EventEnvelope]| (200, Value::Null);
    let place = PlaceOrder {
        customer_id: "0193a6f3-1a2b-7c3d-8e4f-5a6b7c8d9e0f".into(),
        cart_id: None,
        items: Some(vec![OrderItem {
            product_id: "beans".into(),
            name: "Beans".into(),
            category: None,
            quantity: 1,
            unit_price_minor: 1000,
        }]),
        subtotal_minor: None,
        tax_minor: 0,
        shipping_minor: 0,
        total_minor: 1000,
        currency: Some("EUR".into()),
        shipping_address: Some(Address {
            line1: "1 Main St".into(),
            line2: None,
            city: "Berlin".into(),
            region: None,
            postal_code: "10115".into(),
            country: "DE".into(),
        }),
        billing_address: None,
        discount_minor: 0,
        adjustment_minor: 0,
        discount_code: None,
        discount: None,
    };
    let failed = RecordPayment {
        payment_id: "pay-1".into(),
        status: PaymentStatus::Failed,
        method: PaymentMethod::Paypal,
        amount_minor: 1000,
        currency: "EUR".into(),
        provider: Some("paypal".into()),
        transaction_id: None,
        error_code: Some("timeout".into()),
        error_message: None,
        retryable: Some(true),
    };
    for command in [
        OrderCommand::Place(Box::new(place)),
        OrderCommand::RecordPayment(RecordPayment {
            status: PaymentStatus::Initiated,
            ..failed.clone()
        }),
        OrderCommand::RecordPayment(failed),
    ] {
        w.orders
            .execute("o-1", &command, &meta, None, &respond)
            .await
            .expect("applied");
    }
    let timer = w
        .scheduler
        .get(&payment_retry_timer_name("o-1"))
        .await
        .expect("timers")
        .expect("a retry timer");
    let fired = timer_event(&timer, timer.due_at).expect("a TimerFired event");
    let answer = invoke(&w, fired).await;
    assert_eq!(answer["outcome"], "timer", "{answer}");
    let stream = w.events.read_stream("order-o-1", 0, 100).await.expect("order");
    let last = stream.last().expect("events");
    assert_eq!(last.event_type, "PaymentInitiated");
    assert_eq!(
        (last.data["method"].as_str(), last.data["provider"].as_str()),
        (Some("paypal"), Some("paypal"))
    );
    assert_eq!(
        w.orders
            .load("o-1")
            .await
            .expect("load")
            .expect("order")
            .payment
            .map(|p| p.attempt),
        Some(2)
    );
}

#[tokio::test]
async fn an_sqs_batch_takes_timers_one_by_one_and_events_as_a_page() {
    use crm_testkit::sqs_batch;
    let w = world();
    let mut not_a_timer = sample("timer-fired.json");
    not_a_timer["detail"] = serde_json::json!({"hello": "world"});
    let batch = sqs_batch(&[
        sample("timer-fired-payment-retry.json"),
        sample("order-confirmed.json"),
        not_a_timer,
        sample("order-confirmed.json"),
    ]);
    let report = crm_campaign::handler::handle_batch(batch, &w.handler, w.keys.as_ref(), w.dead_letters.as_ref()).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.others.len(), 1, "{report:?}");
    assert_eq!(report.others[0]["outcome"], "timer");
    assert_eq!(report.events, 2);
    assert_eq!(report.parked.len(), 1, "{report:?}");
    assert!(report.parked[0].contains("not a timer"), "{report:?}");
    // The confirmation journey started once, however often its trigger came.
    let started: Vec<String> = all(&w)
        .await
        .into_iter()
        .filter(|e| e.event_type == "JourneyStarted")
        .filter_map(|e| e.data["campaign_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(started, vec!["order-confirmation".to_string()]);
    let letters = w.dead_letters.list().await.expect("dead letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].letter.consumer, "campaign");
}
