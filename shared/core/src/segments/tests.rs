//! Segments and profile metrics over generated order histories: a fixed
//! history checked against hand-computed figures as the clock moves, and the
//! exactly-once property (duplicates, reordering) for the new projections.

use super::*;
use crate::aggregate::AggregateService;
use crate::assembly::AssembledGroups;
use crate::clock::{Clock, VirtualClock};
use crate::consumer::ConsumerGroup;
use crate::customer::metrics::ProfileMetrics;
use crate::customer::metrics::{self, PROFILE_METRICS};
use crate::event::EventEnvelope;
use crate::ports::{AppendRequest, EventStore, ExpectedVersion, StoreError};
use crate::testing::{raw_event, InMemoryDeadLetters, InMemoryEventStore, InMemoryReadModels, Rng};
use chrono::Duration;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn customer(n: usize) -> String {
    format!("00000000-0000-7000-8000-{n:012}")
}

fn event(stream: &str, customer_id: &str, t: &str, at: DateTime<Utc>, data: Value) -> EventEnvelope {
    let mut e = raw_event(stream, t, data);
    e.customer_id = Some(customer_id.to_string());
    e.occurred_at = at;
    e.recorded_at = at;
    e
}

/// The events of one paid order (decision 0012's field names), delivered
/// when paid (the RFM counts deliveries), with an optional refund a day later.
fn paid_order(
    customer_id: &str,
    order: &str,
    at: DateTime<Utc>,
    amount: i64,
    category: &str,
    refund: i64,
) -> Vec<EventEnvelope> {
    let stream = format!("order-{order}");
    let mut out = vec![
        event(
            &stream,
            customer_id,
            "OrderPlaced",
            at - Duration::minutes(5),
            json!({
                "order_id": order, "customer_id": customer_id,
                "items": [{ "product_id": "p-1", "name": "Thing", "category": category, "quantity": 1, "unit_price_minor": amount }],
                "subtotal_minor": amount, "tax_minor": 0, "shipping_minor": 0, "total_minor": amount, "currency": "EUR",
                "shipping_address": null, "billing_address": null
            }),
        ),
        event(
            &stream,
            customer_id,
            "PaymentInitiated",
            at - Duration::minutes(4),
            json!({ "order_id": order, "payment_id": format!("pay-{order}"), "method": "credit-card", "amount_minor": amount, "currency": "EUR", "provider": "test" }),
        ),
        event(
            &stream,
            customer_id,
            "PaymentSucceeded",
            at,
            json!({ "order_id": order, "payment_id": format!("pay-{order}"), "amount_minor": amount, "currency": "EUR", "transaction_id": format!("tx-{order}") }),
        ),
        event(
            &stream,
            customer_id,
            "OrderDelivered",
            at,
            json!({ "order_id": order, "delivered_at": at, "items": [], "total_minor": amount, "currency": "EUR" }),
        ),
    ];
    if refund > 0 {
        out.push(event(
            &stream,
            customer_id,
            "RefundRequested",
            at + Duration::days(1),
            json!({ "order_id": order, "refund_id": format!("ref-{order}"), "amount_minor": refund, "currency": "EUR", "reason": "quality-issue", "refund_type": "partial" }),
        ));
    }
    out
}

/// One customer of the fixed history: `orders` paid orders of `amount`
/// each, the last `last_days_ago` days before [`now`], `spacing` days apart.
struct Profile {
    orders: usize,
    amount: i64,
    last_days_ago: i64,
    spacing: i64,
    categories: &'static [&'static str],
    /// Refund on the newest order.
    refund: i64,
}

/// A small deterministic generator: the fixed history's events.
fn fixed_history(profiles: &[Profile]) -> Vec<EventEnvelope> {
    let mut out = Vec::new();
    for (n, p) in profiles.iter().enumerate() {
        let id = customer(n);
        for j in 0..p.orders {
            let days_ago = p.last_days_ago + (p.orders - 1 - j) as i64 * p.spacing;
            let refund = if j == p.orders - 1 { p.refund } else { 0 };
            let category = p.categories[j % p.categories.len()];
            out.extend(paid_order(
                &id,
                &format!("{n}-{j}"),
                now() - Duration::days(days_ago),
                p.amount,
                category,
                refund,
            ));
        }
    }
    out
}

struct World {
    store: Arc<InMemoryEventStore>,
    docs: Arc<InMemoryReadModels>,
    clock: Arc<VirtualClock>,
    group: ConsumerGroup,
}

impl World {
    fn new(start: DateTime<Utc>) -> Self {
        let store = Arc::new(InMemoryEventStore::default());
        let docs = Arc::new(InMemoryReadModels::default());
        let clock = Arc::new(VirtualClock::starting_at(start));
        let group = ConsumerGroup::projector_at(
            store.clone(),
            docs.clone(),
            Arc::new(InMemoryDeadLetters::default()),
            clock.clone(),
            crate::testing::identifiers(),
        );
        World {
            store,
            docs,
            clock,
            group,
        }
    }

    async fn append(&self, events: &[EventEnvelope]) {
        for e in events {
            self.store
                .append(AppendRequest {
                    stream_id: e.stream_id.clone(),
                    expected: ExpectedVersion::Any,
                    events: vec![e.clone()],
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await
                .expect("append");
        }
    }

    async fn all(&self) -> Vec<EventEnvelope> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store.read_all(cursor.as_deref(), 1000).await.expect("read all");
            out.extend(page.events);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return out,
            }
        }
    }

    /// Delivers every stored event (again) until no new event appears, as
    /// the bus does with what the evaluator appends.
    async fn settle(&self) {
        let mut seen = 0;
        loop {
            let events = self.all().await;
            if events.len() == seen {
                return;
            }
            seen = events.len();
            for e in &events {
                let outcome = self.group.handle(e, self.clock.now()).await.expect("handled");
                assert!(
                    outcome.parked.is_empty(),
                    "{} parked by {:?}",
                    e.event_type,
                    outcome.parked
                );
            }
        }
    }

    async fn segments_of(&self, n: usize) -> BTreeSet<String> {
        customer_segments(self.docs.as_ref(), &customer(n))
            .await
            .expect("segments")
            .into_iter()
            .map(|m| m.segment)
            .collect()
    }

    async fn metrics_of(&self, n: usize) -> ProfileMetrics {
        metrics::profile_metrics(self.docs.as_ref(), &customer(n), self.clock.now())
            .await
            .expect("metrics")
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rfm_scores_and_the_seed_rules() {
    assert_eq!(
        [0, 30, 31, 60, 61, 90, 91, 180, 181].map(score_recency),
        [5, 5, 4, 4, 3, 3, 2, 2, 1]
    );
    assert_eq!([1, 2, 3, 4, 5, 7, 8, 20].map(score_frequency), [1, 2, 3, 3, 4, 4, 5, 5]);
    assert_eq!(
        [9_999, 10_000, 24_999, 25_000, 50_000, 99_999, 100_000].map(score_monetary),
        [1, 2, 2, 3, 4, 4, 5]
    );
    let rfm = |recency, frequency, monetary| {
        Rfm {
            recency,
            frequency,
            monetary,
        }
        .segment()
    };
    assert_eq!(rfm(5, 5, 5), "champions");
    assert_eq!(rfm(3, 4, 1), "loyal-customers");
    assert_eq!(rfm(2, 3, 3), "at-risk");
    assert_eq!(rfm(4, 2, 5), "new-customers");
    assert_eq!(rfm(3, 3, 3), "needs-attention");
    assert_eq!(rfm(2, 3, 2), "needs-attention");
}

#[tokio::test]
async fn a_fixed_history_gives_the_hand_computed_metrics_and_segments_as_time_passes() {
    let profiles = [
        // 0: one order of 50.00 two days ago. R5 F1 M1: new customer.
        Profile {
            orders: 1,
            amount: 5_000,
            last_days_ago: 2,
            spacing: 0,
            categories: &["lamps"],
            refund: 0,
        },
        // 1: six orders of 200.00, 10 to 85 days ago, 50.00 of the newest
        // refunded: LTV 1150.00. R5 F4 M5: champion, high value.
        Profile {
            orders: 6,
            amount: 20_000,
            last_days_ago: 10,
            spacing: 15,
            categories: &["books"],
            refund: 5_000,
        },
        // 2: four orders of 150.00, 100 to 160 days ago. R2 F3 M4: at risk.
        Profile {
            orders: 4,
            amount: 15_000,
            last_days_ago: 100,
            spacing: 20,
            categories: &["garden"],
            refund: 0,
        },
        // 3: nine orders of 30.00, 70 to 110 days ago, books and lamps
        // alternating (5:4, no affinity). R3 F5 M3: loyal.
        Profile {
            orders: 9,
            amount: 3_000,
            last_days_ago: 70,
            spacing: 5,
            categories: &["books", "lamps"],
            refund: 0,
        },
        // 4: two orders of 80.00, 40 and 70 days ago. R4 F2 M2: new customer.
        Profile {
            orders: 2,
            amount: 8_000,
            last_days_ago: 40,
            spacing: 30,
            categories: &["toys"],
            refund: 0,
        },
        // 5: three orders of 40.00, 200 to 220 days ago. R1 F3 M2: needs attention.
        Profile {
            orders: 3,
            amount: 4_000,
            last_days_ago: 200,
            spacing: 10,
            categories: &["toys"],
            refund: 0,
        },
    ];
    let world = World::new(now());
    world.append(&fixed_history(&profiles)).await;
    // A customer who only browses and logs in is in no segment.
    let lurker = customer(6);
    world
        .append(&[event(
            &format!("activity-{lurker}"),
            &lurker,
            "CustomerLoggedIn",
            now() - Duration::days(1),
            json!({}),
        )])
        .await;
    world.settle().await;

    assert_eq!(
        world.segments_of(0).await,
        set(&["new-customers", "buyers", "affinity-lamps"])
    );
    assert_eq!(
        world.segments_of(1).await,
        set(&["champions", "high-value", "buyers", "affinity-books"])
    );
    assert_eq!(
        world.segments_of(2).await,
        set(&["at-risk", "buyers", "affinity-garden"])
    );
    assert_eq!(world.segments_of(3).await, set(&["loyal-customers", "buyers"]));
    assert_eq!(
        world.segments_of(4).await,
        set(&["new-customers", "buyers", "affinity-toys"])
    );
    assert_eq!(
        world.segments_of(5).await,
        set(&["needs-attention", "buyers", "affinity-toys"])
    );
    assert!(world.segments_of(6).await.is_empty());
    assert_eq!(member_count(world.docs.as_ref(), "buyers").await.expect("count"), 6);
    assert_eq!(
        member_count(world.docs.as_ref(), "new-customers").await.expect("count"),
        2
    );

    // Windowed and lifetime figures, by hand.
    let m = world.metrics_of(1).await;
    assert_eq!((m.transactions_30d, m.transaction_value_30d_minor), (2, 35_000));
    assert_eq!((m.orders, m.total_spent_minor, m.refunded_minor), (6, 120_000, 5_000));
    assert_eq!((m.lifetime_value_minor, m.average_order_value_minor), (115_000, 19_166));
    // 85 days since the first order: 2.83 months; 6 / 2.83 = 2.12.
    assert_eq!(m.order_frequency_per_month, 2.12);
    let m = world.metrics_of(0).await;
    assert_eq!((m.transactions_30d, m.transaction_value_30d_minor), (1, 5_000));
    let m = world.metrics_of(6).await;
    assert_eq!((m.orders, m.logins_7d), (0, 1));

    // 30 days on, with no new events: the 30-day figures fall, and the daily
    // re-evaluation moves customer 4 (now 70 days since: R3) to needs-attention.
    world.clock.advance(Duration::days(30));
    let m = world.metrics_of(0).await;
    assert_eq!((m.transactions_30d, m.transaction_value_30d_minor), (0, 0));
    let m = world.metrics_of(1).await;
    assert_eq!((m.transactions_30d, m.transaction_value_30d_minor), (0, 0));
    assert_eq!(m.lifetime_value_minor, 115_000);
    assert_eq!(world.metrics_of(6).await.logins_7d, 0);
    let appended = reevaluate_buyers(world.store.as_ref(), world.docs.as_ref(), world.clock.now())
        .await
        .expect("re-evaluate");
    assert_eq!(appended, 2, "customer 4 leaves new-customers and joins needs-attention");
    world.settle().await;
    assert_eq!(
        world.segments_of(4).await,
        set(&["needs-attention", "buyers", "affinity-toys"])
    );
    assert!(world.segments_of(1).await.contains("champions"), "40 days: still R4");
    assert_eq!(
        reevaluate_buyers(world.store.as_ref(), world.docs.as_ref(), world.clock.now())
            .await
            .expect("again"),
        0,
        "re-evaluating again changes nothing"
    );

    // 60 days on: the champion (70 days since) is loyal, the first new customer (62) needs attention.
    world.clock.advance(Duration::days(30));
    reevaluate_buyers(world.store.as_ref(), world.docs.as_ref(), world.clock.now())
        .await
        .expect("re-evaluate");
    world.settle().await;
    assert_eq!(
        world.segments_of(1).await,
        set(&["loyal-customers", "high-value", "buyers", "affinity-books"])
    );
    assert_eq!(
        world.segments_of(0).await,
        set(&["needs-attention", "buyers", "affinity-lamps"])
    );

    // The membership events say why, on the customer's segments stream: the
    // last two are the clock's doing.
    let events = world
        .store
        .read_stream(&stream_id(&customer(1)), 0, 100)
        .await
        .expect("stream");
    let last: Vec<(&str, &str)> = events[events.len() - 2..]
        .iter()
        .map(|e| (e.event_type.as_str(), e.data["segment"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        last,
        [
            ("CustomerSegmentRemoved", "champions"),
            ("CustomerSegmentAdded", "loyal-customers")
        ]
    );
    // The reason is the segment's rule, never the customer's own scores.
    assert_eq!(
        events[events.len() - 1].data["reason"],
        "RFM frequency >= 4 (not a champion)"
    );
    assert_eq!(
        crate::bus::source_for(&events[events.len() - 2].event_type),
        "crm.segments"
    );
}

fn random_history(customers: usize, rng: &mut Rng) -> Vec<EventEnvelope> {
    let categories = ["books", "lamps", "toys", "garden"];
    let mut out = Vec::new();
    for n in 0..customers {
        let id = customer(n);
        for j in 0..rng.below(9) {
            let at = now() - Duration::days(rng.below(200) as i64) - Duration::minutes(rng.below(600) as i64);
            let amount = 1_000 + rng.below(40_000) as i64;
            let refund = if rng.below(4) == 0 { amount / 2 } else { 0 };
            let category = categories[rng.below(4) as usize];
            let mut order = paid_order(&id, &format!("{n}-{j}"), at, amount, category, refund);
            match rng.below(5) {
                // Never paid.
                0 => order.truncate(2),
                // Paid, not delivered yet.
                1 => order.retain(|e| e.event_type != "OrderDelivered"),
                _ => {}
            }
            out.extend(order);
        }
        for _ in 0..rng.below(4) {
            let at = now() - Duration::days(rng.below(10) as i64);
            out.push(event(&format!("activity-{id}"), &id, "CustomerLoggedIn", at, json!({})));
        }
    }
    out
}

/// What must not depend on delivery: the metrics facts, the membership index
/// and the membership each segments stream folds to.
async fn outcome(
    world: &World,
    customers: usize,
) -> (
    Vec<(String, String, Value)>,
    BTreeSet<(String, String)>,
    Vec<BTreeMap<String, String>>,
) {
    let dump = world.docs.dump();
    let facts = dump
        .iter()
        .filter(|((c, _, _), _)| c == PROFILE_METRICS)
        .map(|((_, p, s), v)| (p.clone(), s.clone(), v.clone()))
        .collect();
    let index = dump
        .keys()
        .filter(|(c, _, _)| c == SEGMENT_MEMBERS)
        .map(|(_, p, s)| (p.clone(), s.clone()))
        .collect();
    let mut memberships = Vec::new();
    for n in 0..customers {
        let members = AggregateService::<SegmentMembership, _>::borrowing(world.store.as_ref(), world.clock.clone())
            .load(&customer(n))
            .await
            .expect("fold")
            .map(|m| m.segments)
            .unwrap_or_default();
        memberships.push(members.into_keys().map(|k| (k, String::new())).collect());
    }
    (facts, index, memberships)
}

#[tokio::test]
async fn duplicated_and_reordered_delivery_gives_the_in_order_metrics_and_segments() {
    let mut rng = Rng(0x00DD_BA11_5EED);
    let customers = 40;
    let history = random_history(customers, &mut rng);
    assert!(history.len() > 300, "a meaningful history ({} events)", history.len());

    let in_order = World::new(now());
    in_order.append(&history).await;
    in_order.settle().await;

    let chaotic = World::new(now());
    chaotic.append(&history).await;
    let stored = chaotic.all().await;
    let mut deliveries: Vec<&EventEnvelope> = Vec::new();
    for e in &stored {
        for _ in 0..(1 + rng.below(3)) {
            deliveries.push(e);
        }
    }
    for i in (1..deliveries.len()).rev() {
        deliveries.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut duplicates = 0;
    for e in deliveries {
        let outcome = chaotic.group.handle(e, now()).await.expect("handled");
        assert!(outcome.parked.is_empty());
        duplicates += outcome.duplicates.len();
    }
    assert!(duplicates > 0);
    // Then whatever the evaluator appended, like the bus would.
    chaotic.settle().await;

    let (facts, index, memberships) = outcome(&in_order, customers).await;
    assert!(!facts.is_empty() && !index.is_empty());
    let got = outcome(&chaotic, customers).await;
    assert_eq!(got.0, facts, "profile metrics facts");
    assert_eq!(got.1, index, "segment membership index");
    assert_eq!(got.2, memberships, "membership streams");
    // The index agrees with the streams, and with a fresh evaluation.
    for (n, members) in memberships.iter().enumerate() {
        let indexed: BTreeSet<String> = chaotic.segments_of(n).await;
        assert_eq!(indexed, members.keys().cloned().collect::<BTreeSet<_>>());
        let fresh = evaluate(&chaotic.metrics_of(n).await);
        assert_eq!(fresh.keys().cloned().collect::<BTreeSet<_>>(), indexed);
    }
    // Redelivering everything once more appends nothing.
    let before = chaotic.all().await.len();
    for e in chaotic.all().await {
        chaotic.group.handle(&e, now()).await.expect("handled");
    }
    assert_eq!(chaotic.all().await.len(), before);
}

/// The membership events of `world`: per segments stream, in order, each
/// change with its reason and the event that caused it.
async fn membership_events(world: &World) -> BTreeSet<(String, u64, String, String, Option<uuid::Uuid>)> {
    world
        .all()
        .await
        .into_iter()
        .filter(|e| SEGMENT_EVENT_TYPES.contains(&e.event_type.as_str()))
        .map(|e| (e.stream_id, e.version, e.event_type, e.data.to_string(), e.causation_id))
        .collect()
}

#[tokio::test]
async fn pages_decide_as_one_event_delivery_does_and_name_the_same_causes() {
    let mut rng = Rng(0x9A6E_5EED);
    let customers = 30;
    let history = random_history(customers, &mut rng);
    let one_by_one = World::new(now());
    one_by_one.append(&history).await;
    for e in one_by_one.all().await {
        let outcome = one_by_one.group.handle(&e, now()).await.expect("handled");
        assert!(outcome.parked.is_empty());
    }
    let paged = World::new(now());
    paged.append(&history).await;
    let stored = paged.all().await;
    let mut at = 0;
    while at < stored.len() {
        let end = (at + 1 + rng.below(40) as usize).min(stored.len());
        let outcome = paged.group.handle_page(&stored[at..end], now()).await.expect("page");
        assert_eq!(outcome.parked, 0);
        at = end;
    }
    let expected = membership_events(&one_by_one).await;
    assert!(
        expected.len() > customers,
        "a meaningful history ({} changes)",
        expected.len()
    );
    assert_eq!(
        membership_events(&paged).await,
        expected,
        "pages change the same segments, for the same reasons and causes"
    );
}

#[tokio::test]
async fn journeys_add_and_remove_manual_segments_but_not_computed_ones() {
    let world = World::new(now());
    world
        .append(&fixed_history(&[Profile {
            orders: 1,
            amount: 5_000,
            last_days_ago: 2,
            spacing: 0,
            categories: &["lamps"],
            refund: 0,
        }]))
        .await;
    let id = customer(0);
    let request = |segment: &str, action: &str| {
        let mut e = event(
            "journey-j1",
            &id,
            "SegmentMembershipRequested",
            now(),
            json!({ "step_id": "mark", "segment": segment, "action": action }),
        );
        e.actor = "journey:cross-sell@1".into();
        e
    };
    world
        .append(&[
            request("cross-sell-contacted", "add"),
            request("new-customers", "remove"),
        ])
        .await;
    world.settle().await;
    assert_eq!(
        world.segments_of(0).await,
        set(&["affinity-lamps", "buyers", "cross-sell-contacted", "new-customers"]),
        "the manual segment is added; a computed one is not writable"
    );
    let members = members(world.docs.as_ref(), "cross-sell-contacted", None, 10)
        .await
        .expect("members");
    assert_eq!(members[0].reason, "requested by journey:cross-sell@1");
    assert!(all_segments(world.docs.as_ref())
        .await
        .expect("segments")
        .iter()
        .any(|(s, _, rule)| s == "cross-sell-contacted" && rule == MANUAL_RULE));

    // Re-evaluation leaves manual segments alone; a remove request removes.
    world.clock.advance(Duration::days(90));
    reevaluate_buyers(world.store.as_ref(), world.docs.as_ref(), world.clock.now())
        .await
        .expect("re-evaluate");
    world.settle().await;
    assert!(world.segments_of(0).await.contains("cross-sell-contacted"));
    world.append(&[request("cross-sell-contacted", "remove")]).await;
    world.settle().await;
    assert_eq!(
        world.segments_of(0).await,
        set(&["affinity-lamps", "buyers", "needs-attention"])
    );
}

fn added(segment: &str, reason: &str) -> SegmentEvent {
    SegmentEvent::CustomerSegmentAdded {
        segment: segment.into(),
        customer_id: "c1".into(),
        reason: reason.into(),
    }
}

fn removed(segment: &str, reason: &str) -> SegmentEvent {
    SegmentEvent::CustomerSegmentRemoved {
        segment: segment.into(),
        customer_id: "c1".into(),
        reason: reason.into(),
    }
}

fn desired(pairs: &[(&str, &str)]) -> Desired {
    pairs.iter().map(|(s, r)| (s.to_string(), r.to_string())).collect()
}

#[test]
fn reconciling_adds_and_removes_computed_segments_and_leaves_manual_ones() {
    use crate::testing::AggregateScenario;
    AggregateScenario::<SegmentMembership>::new("c1", desired(&[("buyers", "first purchase")]))
        .when(MembershipCommand::Reconcile)
        .then_expect_events(&[added("buyers", "first purchase")]);
    AggregateScenario::<SegmentMembership>::new("c1", desired(&[("buyers", "first purchase")]))
        .given(&[
            added("champions", "rfm 5-5-5"),
            added("buyers", "first purchase"),
            added("cross-sell", "requested"),
        ])
        .when(MembershipCommand::Reconcile)
        .then_expect_events(&[removed(
            "champions",
            "no longer matches: RFM recency >= 4, frequency >= 4 and monetary >= 4",
        )]);
    // In line already: nothing.
    let scenario = AggregateScenario::<SegmentMembership>::new("c1", desired(&[("buyers", "x")])).given(&[
        added("buyers", "x"),
        removed("buyers", "gone"),
        added("buyers", "x"),
    ]);
    assert_eq!(scenario.state().map(|m| (m.version, m.segments.len())), Some((3, 1)));
    scenario.when(MembershipCommand::Reconcile).then_expect_events(&[]);
}

#[test]
fn requests_change_manual_segments_only_and_only_when_that_changes_something() {
    use crate::testing::AggregateScenario;
    let request = |segment: &str, join: bool| MembershipCommand::Request {
        segment: segment.into(),
        join,
        reason: "requested by journey:j@1".into(),
    };
    let given = [added("buyers", "first purchase"), added("vip", "requested")];
    let scenario = || AggregateScenario::<SegmentMembership>::new("c1", Desired::new()).given(&given);
    scenario()
        .when(request("lapsed", true))
        .then_expect_events(&[added("lapsed", "requested by journey:j@1")]);
    scenario()
        .when(request("vip", false))
        .then_expect_events(&[removed("vip", "requested by journey:j@1")]);
    scenario().when(request("vip", true)).then_expect_events(&[]);
    scenario().when(request("lapsed", false)).then_expect_events(&[]);
    scenario().when(request("buyers", false)).then_expect_events(&[]);
    scenario().when(request("affinity-lamps", true)).then_expect_events(&[]);
}

#[tokio::test]
async fn membership_changes_carry_on_the_chain_of_the_event_that_caused_them() {
    let world = World::new(now());
    let id = customer(0);
    let mut cause = event(
        "journey-j1",
        &id,
        "SegmentMembershipRequested",
        now(),
        json!({ "step_id": "mark", "segment": "vip", "action": "add" }),
    );
    cause.actor = "journey:vip@1".into();
    let appended = apply_request(world.store.as_ref(), &id, "vip", true, now(), Some(&cause))
        .await
        .expect("applied");
    assert_eq!(appended.len(), 1);
    assert_eq!(appended[0].correlation_id, cause.correlation_id);
    assert_eq!(appended[0].causation_id, Some(cause.event_id));
    assert_eq!(appended[0].actor, "system:segments");
    assert_eq!(appended[0].customer_id.as_deref(), Some(id.as_str()));
    assert_eq!((appended[0].version, appended[0].occurred_at), (1, now()));
    // Asked again (a redelivery): nothing left to change.
    let again = apply_request(world.store.as_ref(), &id, "vip", true, now(), Some(&cause))
        .await
        .expect("applied");
    assert!(again.is_empty());
    // A reconcile on a customer with no metrics and no membership writes nothing.
    let other = customer(1);
    let none = reconcile(world.store.as_ref(), world.docs.as_ref(), &other, now(), Some(&cause))
        .await
        .expect("reconciled");
    assert!(none.is_empty());
    assert!(!is_member_now(world.store.as_ref(), "vip", &other).await.expect("read"));
    assert!(is_member_now(world.store.as_ref(), "vip", &id).await.expect("read"));
}

#[test]
fn segment_errors_say_their_kind() {
    use crate::aggregate::AggregateError;
    use crate::failure::{Classify, FailureKind};
    let membership = |source| SegmentError::Membership {
        customer_id: "c1".into(),
        source,
    };
    assert_eq!(
        SegmentError::Store(StoreError::Unavailable("busy".into())).kind(),
        FailureKind::Retryable
    );
    assert_eq!(
        membership(AggregateError::Contended { attempts: 8 }).kind(),
        FailureKind::Conflict
    );
    let unreadable = membership(AggregateError::Codec(crate::event::EventCodecError("bad".into())));
    assert_eq!(unreadable.kind(), FailureKind::Poison);
    assert_eq!(
        std::error::Error::source(&unreadable).map(|s| s.to_string()).as_deref(),
        Some("event codec: bad")
    );
}

/// A customer-stream event of customer `id`.
fn lifecycle(id: &str, t: &str, at: DateTime<Utc>, data: Value) -> EventEnvelope {
    event(&crate::customer::stream_id(id), id, t, at, data)
}

fn registered(id: &str, at: DateTime<Utc>) -> EventEnvelope {
    lifecycle(
        id,
        "CustomerRegistered",
        at,
        json!({
            "customer_id": id, "email": format!("{id}@shop.example"), "first_name": "Ada", "last_name": "Lovelace",
            "source": "web", "ip": "192.0.2.1", "user_agent": "test", "terms_accepted": true
        }),
    )
}

fn membership_request(id: &str, segment: &str, action: &str, at: DateTime<Utc>) -> EventEnvelope {
    let mut e = event(
        &format!("journey-{id}"),
        id,
        "SegmentMembershipRequested",
        at,
        json!({ "step_id": "mark", "segment": segment, "action": action }),
    );
    e.actor = "journey:vip@1".into();
    e
}

#[tokio::test]
async fn deactivated_and_erased_customers_leave_every_segment_and_reactivation_brings_back_the_computed_ones() {
    let world = World::new(now());
    let (leaving, erased) = (customer(0), customer(1));
    let one_order = || Profile {
        orders: 1,
        amount: 5_000,
        last_days_ago: 2,
        spacing: 0,
        categories: &["lamps"],
        refund: 0,
    };
    let registered_at = now() - Duration::days(10);
    world
        .append(&[registered(&leaving, registered_at), registered(&erased, registered_at)])
        .await;
    world.append(&fixed_history(&[one_order(), one_order()])).await;
    world
        .append(&[
            membership_request(&leaving, "vip", "add", now()),
            membership_request(&erased, "vip", "add", now()),
        ])
        .await;
    world.settle().await;
    let everything = set(&["affinity-lamps", "buyers", "new-customers", "vip"]);
    assert_eq!(world.segments_of(0).await, everything);
    assert_eq!(world.segments_of(1).await, everything);

    // Deactivated: out of every segment, manual included, one event each.
    let before = world.all().await.len();
    world
        .append(&[lifecycle(
            &leaving,
            "CustomerDeactivated",
            now(),
            json!({ "reason": "customer-request", "previous_status": "active" }),
        )])
        .await;
    world.settle().await;
    assert!(world.segments_of(0).await.is_empty());
    let left: Vec<(String, String, String)> = world.all().await[before + 1..]
        .iter()
        .map(|e| {
            (
                e.event_type.clone(),
                e.data["segment"].as_str().unwrap_or("").to_string(),
                e.data["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let removed_all = |reason: &str| -> Vec<(String, String, String)> {
        ["affinity-lamps", "buyers", "new-customers", "vip"]
            .iter()
            .map(|s| ("CustomerSegmentRemoved".to_string(), s.to_string(), reason.to_string()))
            .collect()
    };
    assert_eq!(left, removed_all("customer deactivated"));
    let buyers: Vec<String> = members(world.docs.as_ref(), "buyers", None, 10)
        .await
        .expect("members")
        .into_iter()
        .map(|m| m.customer_id)
        .collect();
    assert_eq!(buyers, [erased.as_str()], "the deactivated buyer left buyers");

    // While deactivated, neither a new paid order, a journey's request nor
    // the daily re-evaluation puts them back.
    world
        .append(&paid_order(&leaving, "0-late", now(), 7_000, "lamps", 0))
        .await;
    world.append(&[membership_request(&leaving, "vip", "add", now())]).await;
    world.settle().await;
    reevaluate_buyers(world.store.as_ref(), world.docs.as_ref(), now())
        .await
        .expect("re-evaluate");
    world.settle().await;
    assert!(world.segments_of(0).await.is_empty());

    // Reactivated: the computed segments come back; the manual one does not.
    world
        .append(&[lifecycle(
            &leaving,
            "CustomerReactivated",
            now(),
            json!({ "status": "active" }),
        )])
        .await;
    world.settle().await;
    assert_eq!(
        world.segments_of(0).await,
        set(&["affinity-lamps", "buyers", "new-customers"])
    );

    // Erased: out of every segment, manual included, and nothing on their
    // segments stream says anything about them: each reason is a rule (or
    // "no longer matches: " and one), the journey's request or the fixed
    // "customer erased".
    world
        .append(&[
            lifecycle(&erased, "CustomerErasureRequested", now(), json!({ "identifiers": [] })),
            lifecycle(&erased, "CustomerErased", now(), json!({})),
        ])
        .await;
    world.settle().await;
    assert!(world.segments_of(1).await.is_empty());
    world.append(&[membership_request(&erased, "vip", "add", now())]).await;
    world.settle().await;
    assert!(world.segments_of(1).await.is_empty(), "no segment after erasure");
    let stream = world
        .store
        .read_stream(&stream_id(&erased), 0, 100)
        .await
        .expect("stream");
    let erasures = stream
        .iter()
        .filter(|e| e.event_type == "CustomerSegmentRemoved" && e.data["reason"] == ERASED)
        .count();
    assert_eq!(erasures, 4);
    for e in &stream {
        let fields: BTreeSet<&str> = e
            .data
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            fields,
            set(&["customer_id", "reason", "segment"])
                .iter()
                .map(String::as_str)
                .collect()
        );
        let reason = e.data["reason"].as_str().unwrap_or("");
        let segment = e.data["segment"].as_str().unwrap_or("");
        let expected = match e.event_type.as_str() {
            // Erased, or left when the metrics changed (paid, then delivered).
            "CustomerSegmentRemoved" if reason == ERASED => ERASED.to_string(),
            "CustomerSegmentRemoved" => format!("no longer matches: {}", rule_of(segment).unwrap_or_default()),
            _ if segment == "vip" => "requested by journey:vip@1".to_string(),
            _ => rule_of(segment).unwrap_or_default(),
        };
        assert_eq!(reason, expected, "{e:?}");
    }
}

#[test]
fn leaving_all_removes_every_segment_manual_included() {
    use crate::testing::AggregateScenario;
    AggregateScenario::<SegmentMembership>::new("c1", Desired::new())
        .given(&[added("buyers", "first purchase"), added("vip", "requested")])
        .when(MembershipCommand::LeaveAll { reason: DEACTIVATED })
        .then_expect_events(&[
            removed("buyers", "customer deactivated"),
            removed("vip", "customer deactivated"),
        ]);
    AggregateScenario::<SegmentMembership>::new("c1", Desired::new())
        .given(&[added("vip", "requested"), removed("vip", "requested")])
        .when(MembershipCommand::LeaveAll { reason: ERASED })
        .then_expect_events(&[]);
}

fn at_days_ago(days: i64) -> DateTime<Utc> {
    now() - Duration::days(days)
}

/// Seed 000's `calculateRFMSegments`: recency and frequency count
/// `OrderDelivered`, and a customer with none has recency 999 days.
#[test]
fn rfm_counts_delivered_orders_and_gives_999_days_to_who_never_received_one() {
    let paid = |id: &str, days: i64, delivered: Option<i64>| metrics::OrderFacts {
        order_id: id.into(),
        payments: vec![metrics::Movement {
            id: format!("pay-{id}"),
            at: at_days_ago(days),
            amount_minor: 10_000,
            currency: "EUR".into(),
        }],
        delivered_at: delivered.map(at_days_ago),
        ..metrics::OrderFacts::default()
    };
    // Three paid orders, one delivered 3 days ago: frequency 1 (not 3),
    // recency 3 days (not the last payment's 2).
    let m = ProfileMetrics::compute(
        &[paid("o1", 40, Some(3)), paid("o2", 10, None), paid("o3", 2, None)],
        None,
        now(),
    );
    assert_eq!((m.orders, m.delivered_orders, recency_days(&m)), (3, 1, 3));
    let rfm = Rfm::of(&m).expect("a buyer");
    assert_eq!((rfm.recency, rfm.frequency, rfm.monetary), (5, 1, 3));
    assert_eq!(rfm.segment(), "new-customers");
    // Paid, never delivered: 999 days, recency 1, frequency 1.
    let m = ProfileMetrics::compute(&[paid("o1", 1, None), paid("o2", 0, None)], None, now());
    assert_eq!((m.delivered_orders, recency_days(&m)), (0, NEVER_BOUGHT_RECENCY_DAYS));
    assert_eq!(NEVER_BOUGHT_RECENCY_DAYS, 999);
    let rfm = Rfm::of(&m).expect("a buyer");
    assert_eq!((rfm.recency, rfm.frequency, rfm.segment()), (1, 1, "needs-attention"));
    // Five deliveries make frequency 4, whatever was paid.
    let five: Vec<metrics::OrderFacts> = (0..5).map(|n| paid(&format!("o{n}"), 20, Some(20 - n))).collect();
    let m = ProfileMetrics::compute(&five, None, now());
    assert_eq!((m.delivered_orders, recency_days(&m)), (5, 16));
    assert_eq!(Rfm::of(&m).map(|r| (r.recency, r.frequency)), Some((5, 4)));
    // Who never paid is not scored (and is in no segment).
    assert_eq!(Rfm::of(&ProfileMetrics::compute(&[], None, now())), None);
}

#[tokio::test]
async fn a_buyer_moves_from_needs_attention_to_new_customers_when_the_order_is_delivered() {
    let world = World::new(now());
    let id = customer(0);
    let mut order = paid_order(&id, "0-0", now() - Duration::hours(2), 5_000, "lamps", 0);
    let delivered = order.pop().expect("the delivery");
    assert_eq!(delivered.event_type, "OrderDelivered");
    world.append(&order).await;
    world.settle().await;
    assert_eq!(
        world.segments_of(0).await,
        set(&["affinity-lamps", "buyers", "needs-attention"]),
        "paid, not delivered: recency 999 days"
    );
    world.append(&[delivered]).await;
    world.settle().await;
    assert_eq!(
        world.segments_of(0).await,
        set(&["affinity-lamps", "buyers", "new-customers"])
    );
}
