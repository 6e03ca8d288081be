//! Funnels, attribution and campaign stats: the rules, a property test of
//! the credit split, and a fixed history checked against hand-computed values.
//!
//! The fixtures (the fixed history, a random history, the projections) are
//! here, shared with the consumers' tests; the tests of each projection are
//! in a file of their own.

mod attribution_tests;
mod campaign_stats_tests;
mod funnel_tests;

use super::attribution::{self as attr, allocate, attribute, Model, Touchpoint, FULL_CREDIT};
use super::campaign_stats::{self, CampaignStatsProjection};
use super::funnel::{self, FunnelProjection, Stage};
use crate::consumer::{Consumer, Projection};
use crate::event::EventEnvelope;
use crate::ports::{AppendRequest, EventStore, ExpectedVersion, ReadModelStore};
use crate::testing::{InMemoryEventStore, InMemoryReadModels};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use std::sync::Arc;

/// The seeded generator of randomised tests (the kernel's).
pub(crate) use crate::testing::Rng;

pub(crate) fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(FunnelProjection),
        Arc::new(attr::AttributionProjection),
        Arc::new(CampaignStatsProjection),
    ]
}

/// The order time of the fixed history: 2026-11-21 12:00 UTC.
pub(crate) fn t() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
        .single()
        .expect("valid time")
}

fn days(n: i64) -> Duration {
    Duration::days(n)
}

/// Appends one event (a new version of `stream`) as decision 0012 names it.
pub(crate) async fn put(
    store: &InMemoryEventStore,
    stream: &str,
    event_type: &str,
    customer: &str,
    at: DateTime<Utc>,
    data: Value,
) {
    let id = uuid::Uuid::now_v7();
    let envelope = EventEnvelope {
        event_id: id,
        stream_id: stream.to_string(),
        version: 0,
        event_type: event_type.to_string(),
        schema_version: 1,
        customer_id: Some(customer.to_string()),
        occurred_at: at,
        recorded_at: at,
        causation_id: None,
        correlation_id: id,
        actor: "test".into(),
        data,
    };
    store
        .append(AppendRequest {
            stream_id: stream.to_string(),
            expected: ExpectedVersion::Any,
            events: vec![envelope],
            reservations: vec![],
            receipt: None,
        })
        .await
        .expect("append");
}

fn sent(message: &str, customer: &str, channel: &str, campaign: &str) -> Value {
    json!({ "message_id": message, "customer_id": customer, "channel": channel, "category": "marketing",
            "campaign_id": campaign, "provider_message_id": format!("p-{message}") })
}

fn order(order_id: &str, customer: &str, total: i64) -> Value {
    json!({ "order_id": order_id, "customer_id": customer, "items": [{ "product_id": "p-1", "name": "Mug",
            "quantity": 1, "unit_price_minor": total }], "subtotal_minor": total, "tax_minor": 0,
            "shipping_minor": 0, "total_minor": total, "currency": "EUR" })
}

/// The fixed history (T = [`t`], the time of order o-a):
///
/// customer a: PageViewed utm social/summer at T-40d (outside the 30-day
///   lookback), PageViewed utm google/cpc/autumn at T-21d, ReviewRead
///   T-20d (consideration: a product view is awareness, decision 0066), MessageSent m1 email welcome T-14d, MessageSent m2 sms welcome
///   T-7d, a transactional MessageSent m5 T-10d and its open T-9d (no
///   touchpoints), ItemAddedToCart T-2d, CheckoutStarted T-1d, EmailClicked m1 at T,
///   OrderPlaced o-a 10 001 EUR at T, EmailOpened m1 at T+1h (after the order).
/// customer b: PageViewed T-3d, ReviewRead T-3d+1h, ItemAddedToCart
///   T-3d+2h; MessageSent m3 email welcome T-5d.
/// customer c: SessionStarted T-5d; MessageSuppressed m4 welcome.
/// customer d: ReviewRead T-2d, OrderPlaced o-d 5 000 EUR at T-1d (no touchpoint).
/// Journeys of welcome started for a and b; MessageRequested m1, m2, m3.
pub(crate) async fn fixed_history() -> Arc<InMemoryEventStore> {
    let s = Arc::new(InMemoryEventStore::default());
    let t = t();
    let st = s.as_ref();
    put(
        st,
        "activity-a",
        "PageViewed",
        "a",
        t - days(40),
        json!({ "url": "/", "utm": { "source": "facebook", "medium": "social", "campaign": "summer" } }),
    )
    .await;
    put(
        st,
        "journey-ja",
        "JourneyStarted",
        "a",
        t - days(15),
        json!({ "instance_id": "ja", "campaign_id": "welcome", "campaign_version": 1, "customer_id": "a" }),
    )
    .await;
    put(
        st,
        "journey-jb",
        "JourneyStarted",
        "b",
        t - days(6),
        json!({ "instance_id": "jb", "campaign_id": "welcome", "campaign_version": 1, "customer_id": "b" }),
    )
    .await;
    for (journey, customer, message, at) in [
        ("ja", "a", "m1", t - days(14)),
        ("ja", "a", "m2", t - days(7)),
        ("jb", "b", "m3", t - days(5)),
    ] {
        put(
            st,
            &format!("journey-{journey}"),
            "MessageRequested",
            customer,
            at,
            json!({ "message_id": message, "instance_id": journey, "campaign_id": "welcome", "customer_id": customer }),
        )
        .await;
    }
    put(
        st,
        "activity-a",
        "PageViewed",
        "a",
        t - days(21),
        json!({ "url": "/mugs", "utm": { "source": "google", "medium": "cpc", "campaign": "autumn" } }),
    )
    .await;
    put(
        st,
        "activity-a",
        "ReviewRead",
        "a",
        t - days(20),
        json!({ "product_id": "p-1", "name": "Mug", "category": "kitchen" }),
    )
    .await;
    put(
        st,
        "message-m1",
        "MessageSent",
        "a",
        t - days(14),
        sent("m1", "a", "email", "welcome"),
    )
    .await;
    put(
        st,
        "message-m2",
        "MessageSent",
        "a",
        t - days(7),
        sent("m2", "a", "sms", "welcome"),
    )
    .await;
    // A transactional message (and its open) is no touchpoint.
    let mut receipt = sent("m5", "a", "email", "email-verification");
    receipt["category"] = json!("transactional");
    put(st, "message-m5", "MessageSent", "a", t - days(10), receipt).await;
    put(
        st,
        "message-m5",
        "EmailOpened",
        "a",
        t - days(9),
        json!({ "message_id": "m5", "customer_id": "a" }),
    )
    .await;
    put(
        st,
        "cart-ca",
        "ItemAddedToCart",
        "a",
        t - days(2),
        json!({ "product_id": "p-1", "name": "Mug", "quantity": 1, "unit_price_minor": 10001 }),
    )
    .await;
    put(
        st,
        "cart-ca",
        "CheckoutStarted",
        "a",
        t - days(1),
        json!({ "items": [], "total_value_minor": 10001, "currency": "EUR" }),
    )
    .await;
    put(
        st,
        "message-m1",
        "EmailClicked",
        "a",
        t,
        json!({ "message_id": "m1", "customer_id": "a", "link": "https://shop.example/mugs" }),
    )
    .await;
    put(st, "order-o-a", "OrderPlaced", "a", t, order("o-a", "a", 10_001)).await;
    put(
        st,
        "message-m1",
        "EmailOpened",
        "a",
        t + Duration::hours(1),
        json!({ "message_id": "m1", "customer_id": "a" }),
    )
    .await;

    put(st, "activity-b", "PageViewed", "b", t - days(3), json!({ "url": "/" })).await;
    put(
        st,
        "activity-b",
        "ReviewRead",
        "b",
        t - days(3) + Duration::hours(1),
        json!({ "product_id": "p-2", "name": "Pan", "category": "kitchen" }),
    )
    .await;
    put(
        st,
        "cart-cb",
        "ItemAddedToCart",
        "b",
        t - days(3) + Duration::hours(2),
        json!({ "product_id": "p-2", "name": "Pan", "quantity": 1, "unit_price_minor": 3000 }),
    )
    .await;
    put(
        st,
        "message-m3",
        "MessageSent",
        "b",
        t - days(5),
        sent("m3", "b", "email", "welcome"),
    )
    .await;

    put(
        st,
        "activity-c",
        "SessionStarted",
        "c",
        t - days(5),
        json!({ "session_id": "s-c" }),
    )
    .await;
    put(st, "message-m4", "MessageSuppressed", "c", t - days(5), json!({ "message_id": "m4", "customer_id": "c", "campaign_id": "welcome", "channel": "email", "reason": "no-consent", "detail": "no consent" })).await;

    put(
        st,
        "activity-d",
        "ReviewRead",
        "d",
        t - days(2),
        json!({ "product_id": "p-1", "name": "Mug", "category": "kitchen" }),
    )
    .await;
    put(
        st,
        "order-o-d",
        "OrderPlaced",
        "d",
        t - days(1),
        order("o-d", "d", 5_000),
    )
    .await;
    s
}

pub(crate) async fn all_events(store: &InMemoryEventStore) -> Vec<EventEnvelope> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.read_all(cursor.as_deref(), 1000).await.expect("read all");
        out.extend(page.events);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

async fn projected(store: Arc<InMemoryEventStore>) -> Arc<InMemoryReadModels> {
    let docs = Arc::new(InMemoryReadModels::default());
    let events = all_events(&store).await;
    for p in projections() {
        let consumer = Consumer::new(p, store.clone(), docs.clone());
        for e in &events {
            consumer.deliver(e).await.expect("deliver");
        }
    }
    docs
}

/// A random history over many customers for the consumers' property test:
/// activity (some with UTM), cart, order, message and journey streams.
pub(crate) async fn random_history(customers: usize, rng: &mut Rng) -> Arc<InMemoryEventStore> {
    let store = Arc::new(InMemoryEventStore::default());
    let base = t() - days(20);
    let activity = [
        "PageViewed",
        "SessionStarted",
        "ProductViewed",
        "SearchPerformed",
        "ReviewRead",
        "CheckoutStepCompleted",
    ];
    for n in 0..customers {
        let c = format!("c{n}");
        let at = |rng: &mut Rng| base + Duration::minutes(rng.below(20 * 24 * 60) as i64);
        for _ in 0..rng.below(6) {
            let kind = activity[rng.below(activity.len() as u64) as usize];
            let utm = match rng.below(3) {
                0 => json!({ "source": "google", "medium": "cpc", "campaign": format!("k{}", rng.below(3)) }),
                1 => json!({ "source": "newsletter" }),
                _ => Value::Null,
            };
            let when = at(rng);
            put(
                &store,
                &format!("activity-{c}"),
                kind,
                &c,
                when,
                json!({ "url": "/", "utm": utm }),
            )
            .await;
        }
        let campaign = format!("camp{}", rng.below(3));
        if rng.below(2) == 0 {
            let journey = format!("journey-j{n}");
            let when = at(rng);
            put(
                &store,
                &journey,
                "JourneyStarted",
                &c,
                when,
                json!({ "instance_id": format!("j{n}"), "campaign_id": campaign, "customer_id": c }),
            )
            .await;
            for m in 0..rng.below(3) {
                let message = format!("m{n}-{m}");
                let when = at(rng);
                put(&store, &journey, "MessageRequested", &c, when, json!({ "message_id": message, "instance_id": format!("j{n}"), "campaign_id": campaign, "customer_id": c })).await;
                let stream = format!("message-{message}");
                if rng.below(4) == 0 {
                    put(&store, &stream, "MessageSuppressed", &c, when, json!({ "message_id": message, "customer_id": c, "campaign_id": campaign, "channel": "email", "reason": "frequency-cap", "detail": "" })).await;
                } else {
                    let channel = if rng.below(2) == 0 { "email" } else { "sms" };
                    put(
                        &store,
                        &stream,
                        "MessageSent",
                        &c,
                        when,
                        sent(&message, &c, channel, &campaign),
                    )
                    .await;
                    for kind in ["EmailOpened", "EmailClicked"] {
                        if rng.below(2) == 0 {
                            let later = when + Duration::minutes(1 + rng.below(600) as i64);
                            put(
                                &store,
                                &stream,
                                kind,
                                &c,
                                later,
                                json!({ "message_id": message, "customer_id": c, "link": "https://x" }),
                            )
                            .await;
                        }
                    }
                }
            }
        }
        if rng.below(2) == 0 {
            let cart = format!("cart-{n}");
            let when = at(rng);
            put(
                &store,
                &cart,
                "ItemAddedToCart",
                &c,
                when,
                json!({ "product_id": "p", "name": "P", "quantity": 1, "unit_price_minor": 100 }),
            )
            .await;
            if rng.below(2) == 0 {
                put(
                    &store,
                    &cart,
                    "CheckoutStarted",
                    &c,
                    when + Duration::minutes(5),
                    json!({ "items": [], "total_value_minor": 100, "currency": "EUR" }),
                )
                .await;
            }
        }
        for o in 0..rng.below(3) {
            let id = format!("o{n}-{o}");
            let when = at(rng);
            let total = rng.below(100_000) as i64;
            put(
                &store,
                &format!("order-{id}"),
                "OrderPlaced",
                &c,
                when,
                order(&id, &c, total),
            )
            .await;
            if rng.below(2) == 0 {
                put(&store, &format!("order-{id}"), "PaymentSucceeded", &c, when + Duration::minutes(1), json!({ "order_id": id, "payment_id": "pay", "amount_minor": total, "currency": "EUR", "transaction_id": "t" })).await;
            }
        }
    }
    store
}

#[tokio::test]
async fn projections_ignore_events_without_a_customer_and_skip_nothing_else() {
    let store = Arc::new(InMemoryEventStore::default());
    put(&store, "activity-x", "PageViewed", "x", t(), json!({ "url": "/" })).await;
    let events = all_events(&store).await;
    let mut no_customer = events[0].clone();
    no_customer.customer_id = None;
    for p in projections().into_iter().filter(|p| p.handles("PageViewed")) {
        let ops = p
            .project(&no_customer, &InMemoryReadModels::default())
            .await
            .expect("no poison");
        assert!(ops.is_empty());
    }
    let docs = InMemoryReadModels::default();
    let ops = FunnelProjection.project(&events[0], &docs).await.expect("project");
    assert_eq!(ops.len(), 2, "the step and the day index");
    assert!(docs.checkpoint(funnel::FUNNEL, "activity-x").await.expect("checkpoint") == 0);
}
