//! Funnels, attribution and campaign stats: the rules, a property test of
//! the credit split, and a fixed history checked against hand-computed values.

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

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

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
///   lookback), PageViewed utm google/cpc/autumn at T-21d, ProductViewed
///   T-20d, MessageSent m1 email welcome T-14d, MessageSent m2 sms welcome
///   T-7d, a transactional MessageSent m5 T-10d and its open T-9d (no
///   touchpoints), ItemAddedToCart T-2d, CheckoutStarted T-1d, EmailClicked m1 at T,
///   OrderPlaced o-a 10 001 EUR at T, EmailOpened m1 at T+1h (after the order).
/// customer b: PageViewed T-3d, ProductViewed T-3d+1h, ItemAddedToCart
///   T-3d+2h; MessageSent m3 email welcome T-5d.
/// customer c: SessionStarted T-5d; MessageSuppressed m4 welcome.
/// customer d: ProductViewed T-2d, OrderPlaced o-d 5 000 EUR at T-1d (no touchpoint).
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
        "ProductViewed",
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
        "ProductViewed",
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
        "ProductViewed",
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

fn touch(age_days: i64, channel: &str, campaign: Option<&str>) -> Touchpoint {
    Touchpoint {
        at: t() - days(age_days),
        channel: channel.into(),
        campaign: campaign.map(str::to_string),
        event_type: "PageViewed".into(),
    }
}

/// (key, credit_bp, value_minor) of a model's channels or campaigns.
fn rows(credits: &[attr::Credit]) -> Vec<(Option<&str>, i64, i64)> {
    credits
        .iter()
        .map(|c| (c.key.as_deref(), c.credit_bp, c.value_minor))
        .collect()
}

#[test]
fn allocate_is_exact_and_gives_the_remainder_to_the_largest_remainders() {
    // 10 / 3 = 3 r 1 each: the tie goes to the first.
    assert_eq!(allocate(10, &[1, 1, 1]), vec![4, 3, 3]);
    // 100 * 1/6 = 16.67, 100 * 2/6 = 33.33, 100 * 3/6 = 50: 16 r 4, 33 r 2, 50 r 0 → +1 to the first.
    assert_eq!(allocate(100, &[1, 2, 3]), vec![17, 33, 50]);
    assert_eq!(allocate(7, &[0, 0]), vec![7, 0], "all-zero weights: all to the first");
    assert_eq!(allocate(-10, &[1, 1, 1]), vec![-4, -3, -3]);
    assert_eq!(allocate(0, &[5, 1]), vec![0, 0]);
    assert!(allocate(5, &[]).is_empty());
}

#[test]
fn position_based_follows_the_seed_for_one_and_two_touchpoints() {
    let one = attribute(Model::PositionBased, &[touch(3, "email", None)], t(), 999);
    assert_eq!(rows(&one.channels), vec![(Some("email"), 10_000, 999)]);
    // Two: the 40 % and 40 % of first and last, nothing in the middle,
    // scaled to 100 %: 50/50 (999 = 500 + 499, the odd unit to the first).
    let two = attribute(
        Model::PositionBased,
        &[touch(3, "email", None), touch(1, "sms", None)],
        t(),
        999,
    );
    assert_eq!(
        rows(&two.channels),
        vec![(Some("email"), 5_000, 500), (Some("sms"), 5_000, 499)]
    );
    // Three: 40/20/40.
    let three = attribute(
        Model::PositionBased,
        &[touch(3, "email", None), touch(2, "cpc", None), touch(1, "sms", None)],
        t(),
        1_000,
    );
    assert_eq!(
        rows(&three.channels),
        vec![
            (Some("cpc"), 2_000, 200),
            (Some("email"), 4_000, 400),
            (Some("sms"), 4_000, 400)
        ]
    );
}

#[test]
fn time_decay_halves_the_weight_every_seven_days() {
    let w = attr::weights(
        Model::TimeDecay,
        &[touch(14, "a", None), touch(7, "b", None), touch(0, "c", None)],
        t(),
    );
    assert_eq!(w, vec![1u128 << 38, 1 << 39, 1 << 40]);
    // 1:2:4 of 700 → 100, 200, 400.
    let a = attribute(
        Model::TimeDecay,
        &[touch(14, "a", None), touch(7, "b", None), touch(0, "c", None)],
        t(),
        700,
    );
    assert_eq!(
        a.touches.iter().map(|c| c.value_minor).collect::<Vec<_>>(),
        vec![100, 200, 400]
    );
}

#[test]
fn no_touchpoint_credits_direct() {
    for model in Model::ALL {
        let a = attribute(model, &[], t(), 4_200);
        assert_eq!(rows(&a.channels), vec![(Some("direct"), 10_000, 4_200)]);
        assert_eq!(rows(&a.campaigns), vec![(None, 10_000, 4_200)]);
    }
}

#[test]
fn utm_medium_else_source_is_the_channel() {
    let at = t();
    let tp = attr::utm_touchpoint(
        "PageViewed",
        at,
        &json!({ "source": "google", "medium": "cpc", "campaign": "autumn" }),
    );
    assert_eq!(
        tp.map(|t| (t.channel, t.campaign)),
        Some(("cpc".into(), Some("autumn".into())))
    );
    let tp = attr::utm_touchpoint("PageViewed", at, &json!({ "source": "newsletter" }));
    assert_eq!(tp.map(|t| (t.channel, t.campaign)), Some(("newsletter".into(), None)));
    assert_eq!(
        attr::utm_touchpoint("PageViewed", at, &json!({ "campaign": "x", "medium": " " })),
        None
    );
    assert_eq!(attr::utm_touchpoint("PageViewed", at, &json!("nonsense")), None);
}

/// Over random touchpoint sets (0 to 15 touchpoints, any ages in the
/// window, any channels and campaigns, totals from 0 to 10^12 minor units):
/// under every model the credits sum to exactly 100 % and the values to
/// exactly the order total, per touchpoint, per channel and per campaign;
/// no share is negative; first- and last-touch give everything to one touchpoint.
#[test]
fn credits_sum_to_100_percent_and_values_to_the_total_for_every_model() {
    let mut rng = Rng(0x00A7_71B0_7E57);
    let channels = ["email", "sms", "push", "cpc", "social", "newsletter"];
    let campaigns = [None, Some("welcome"), Some("autumn"), Some("win-back")];
    for case in 0..3_000 {
        let n = rng.below(16) as usize;
        let mut ages: Vec<i64> = (0..n).map(|_| rng.below(30 * 24 * 3600 * 1000) as i64).collect();
        ages.sort_unstable_by(|a, b| b.cmp(a));
        let touches: Vec<Touchpoint> = ages
            .iter()
            .map(|ms| Touchpoint {
                at: t() - Duration::milliseconds(*ms),
                channel: channels[rng.below(channels.len() as u64) as usize].into(),
                campaign: campaigns[rng.below(campaigns.len() as u64) as usize].map(str::to_string),
                event_type: "MessageSent".into(),
            })
            .collect();
        let total = match rng.below(4) {
            0 => 0,
            1 => rng.below(100) as i64,
            2 => rng.below(1_000_000) as i64,
            _ => rng.below(1_000_000_000_000) as i64,
        };
        for model in Model::ALL {
            let a = attribute(model, &touches, t(), total);
            let ctx = format!("case {case}, {model:?}, {n} touchpoints, total {total}");
            assert_eq!(a.touches.len(), n, "{ctx}");
            assert!(
                a.touches.iter().all(|c| c.credit_bp >= 0 && c.value_minor >= 0),
                "{ctx}"
            );
            if n > 0 {
                assert_eq!(a.touches.iter().map(|c| c.credit_bp).sum::<i64>(), FULL_CREDIT, "{ctx}");
                assert_eq!(a.touches.iter().map(|c| c.value_minor).sum::<i64>(), total, "{ctx}");
            }
            for grouped in [&a.channels, &a.campaigns] {
                assert_eq!(grouped.iter().map(|c| c.credit_bp).sum::<i64>(), FULL_CREDIT, "{ctx}");
                assert_eq!(grouped.iter().map(|c| c.value_minor).sum::<i64>(), total, "{ctx}");
                let percent: f64 = grouped.iter().map(|c| c.credit).sum();
                assert!((percent - 100.0).abs() < 1e-6, "{ctx}: {percent}");
            }
            if n > 0 && matches!(model, Model::FirstTouch | Model::LastTouch) {
                let i = if model == Model::FirstTouch { 0 } else { n - 1 };
                assert_eq!(a.touches[i].credit_bp, FULL_CREDIT, "{ctx}");
                assert_eq!(a.touches[i].value_minor, total, "{ctx}");
            }
        }
    }
}

#[tokio::test]
async fn the_fixed_history_gives_the_hand_computed_funnels() {
    let docs = projected(fixed_history().await).await;
    let now = t() + days(1);
    let t = t();

    // a: awareness at T-40d (PageViewed), consideration T-20d, intent T-2d,
    // checkout T-1d, purchase T. Time in stage: 20 d = 1 728 000 s,
    // 18 d = 1 555 200 s, 1 d = 86 400 s, 1 d = 86 400 s; purchase: none.
    let a = funnel::customer_funnel(docs.as_ref(), "a", None, None, now)
        .await
        .expect("funnel");
    let got: Vec<_> = a
        .stages
        .iter()
        .map(|s| (s.stage, s.entered_at, s.time_in_stage_seconds))
        .collect();
    assert_eq!(
        got,
        vec![
            (Stage::Awareness, t - days(40), Some(1_728_000)),
            (Stage::Consideration, t - days(20), Some(1_555_200)),
            (Stage::Intent, t - days(2), Some(86_400)),
            (Stage::Checkout, t - days(1), Some(86_400)),
            (Stage::Purchase, t, None),
        ]
    );
    assert!(a.completed);
    assert_eq!(a.drop_off, None);
    assert_eq!(a.conversion_rate, 1.0);

    // b: awareness T-3d, consideration +1 h (3 600 s), intent +2 h, then
    // nothing: dropped off at intent, checkout expected; last activity
    // T-3d+2h, now T+1d: 4 d - 2 h = 345 600 - 7 200 = 338 400 s.
    let b = funnel::customer_funnel(docs.as_ref(), "b", None, None, now)
        .await
        .expect("funnel");
    assert_eq!(b.current_stage, Some(Stage::Intent));
    assert_eq!(b.stages[0].time_in_stage_seconds, Some(3_600));
    assert_eq!(b.stages[1].time_in_stage_seconds, Some(3_600));
    assert_eq!(
        b.drop_off,
        Some(funnel::DropOff {
            stage: Stage::Intent,
            next_expected_stage: Stage::Checkout,
            seconds_since_last_activity: 338_400,
        })
    );
    assert_eq!(b.conversion_rate, 0.6);

    // c: only SessionStarted: dropped off at awareness.
    let c = funnel::customer_funnel(docs.as_ref(), "c", None, None, now)
        .await
        .expect("funnel");
    assert_eq!(
        c.drop_off.map(|d| (d.stage, d.next_expected_stage)),
        Some((Stage::Awareness, Stage::Consideration))
    );
    // d: consideration then purchase (intent and checkout skipped).
    let d = funnel::customer_funnel(docs.as_ref(), "d", None, None, now)
        .await
        .expect("funnel");
    assert_eq!(
        d.stages.iter().map(|s| s.stage).collect::<Vec<_>>(),
        vec![Stage::Consideration, Stage::Purchase]
    );
    assert!(d.completed);
    let nobody = funnel::customer_funnel(docs.as_ref(), "nobody", None, None, now)
        .await
        .expect("funnel");
    assert_eq!((nobody.current_stage, nobody.drop_off), (None, None));

    // The period [T-30d, T+1d): a's T-40d view is outside, so a enters at
    // T-21d. Furthest stages: a purchase, b intent, c awareness, d purchase.
    // Reached at least: awareness 4, consideration 3 (a b d), intent 3,
    // checkout 2 (a d), purchase 2. Conversion from the previous stage:
    // 4/4 = 1, 3/4 = 0.75, 3/3 = 1, 2/3 = 0.6667, 2/2 = 1; dropped off:
    // c at awareness, b at intent.
    let report = funnel::funnel_report(docs.as_ref(), t - days(30), t + days(1), now)
        .await
        .expect("report");
    assert_eq!(report.customers, 4);
    let got: Vec<_> = report
        .stages
        .iter()
        .map(|s| {
            (
                s.stage,
                s.customers,
                s.dropped_off,
                s.conversion_from_previous,
                s.conversion_from_start,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Stage::Awareness, 4, 1, 1.0, 1.0),
            (Stage::Consideration, 3, 0, 0.75, 0.75),
            (Stage::Intent, 3, 1, 1.0, 0.75),
            (Stage::Checkout, 2, 0, 0.6667, 0.5),
            (Stage::Purchase, 2, 0, 1.0, 0.5),
        ]
    );
    // Only b, c and d act in [T-6d, T-1d) ... and a (ItemAddedToCart T-2d):
    // a intent, b intent, c awareness, d consideration (its order is at T-1d, excluded).
    let narrow = funnel::funnel_report(docs.as_ref(), t - days(6), t - days(1), now)
        .await
        .expect("report");
    assert_eq!(
        narrow.stages.iter().map(|s| s.customers).collect::<Vec<_>>(),
        vec![4, 3, 2, 0, 0]
    );
}

#[tokio::test]
async fn the_fixed_history_gives_the_hand_computed_attribution() {
    let docs = projected(fixed_history().await).await;
    let t = t();
    let a = attr::order_attribution(docs.as_ref(), "o-a")
        .await
        .expect("read")
        .expect("order o-a");
    assert_eq!(
        (a.order.total_minor, a.order.currency.as_str(), a.order.placed_at),
        (10_001, "EUR", t)
    );
    // In the 30-day window, oldest first (the T-40d visit and the open after
    // the order are not): t1 cpc/autumn T-21d, t2 email/welcome T-14d,
    // t3 sms/welcome T-7d, t4 email/welcome (the click on m1) at T.
    let touches: Vec<_> = a
        .touchpoints
        .iter()
        .map(|p| (p.at, p.channel.as_str(), p.campaign.as_deref(), p.event_type.as_str()))
        .collect();
    assert_eq!(
        touches,
        vec![
            (t - days(21), "cpc", Some("autumn"), "PageViewed"),
            (t - days(14), "email", Some("welcome"), "MessageSent"),
            (t - days(7), "sms", Some("welcome"), "MessageSent"),
            (t, "email", Some("welcome"), "EmailClicked"),
        ]
    );
    let model = |m: Model| a.models.iter().find(|x| x.model == m).expect("model").clone();
    let per_touch = |m: Model| {
        model(m)
            .touches
            .iter()
            .map(|c| (c.credit_bp, c.value_minor))
            .collect::<Vec<_>>()
    };

    // First touch: t1 takes 100 % and 10 001.
    assert_eq!(
        rows(&model(Model::FirstTouch).channels),
        vec![(Some("cpc"), 10_000, 10_001)]
    );
    assert_eq!(
        rows(&model(Model::FirstTouch).campaigns),
        vec![(Some("autumn"), 10_000, 10_001)]
    );
    // Last touch: t4 (email, welcome).
    assert_eq!(
        rows(&model(Model::LastTouch).channels),
        vec![(Some("email"), 10_000, 10_001)]
    );
    assert_eq!(
        rows(&model(Model::LastTouch).campaigns),
        vec![(Some("welcome"), 10_000, 10_001)]
    );

    // Linear: 25 % each = 2 500 bp; 10 001 / 4 = 2 500 r 1, the unit to the
    // first (all remainders tie): 2 501, 2 500, 2 500, 2 500.
    assert_eq!(
        per_touch(Model::Linear),
        vec![(2_500, 2_501), (2_500, 2_500), (2_500, 2_500), (2_500, 2_500)]
    );
    // email = t2 + t4 = 5 000 bp, 5 000; sms = t3; welcome = t2 + t3 + t4.
    assert_eq!(
        rows(&model(Model::Linear).channels),
        vec![
            (Some("cpc"), 2_500, 2_501),
            (Some("email"), 5_000, 5_000),
            (Some("sms"), 2_500, 2_500)
        ]
    );
    assert_eq!(
        rows(&model(Model::Linear).campaigns),
        vec![(Some("autumn"), 2_500, 2_501), (Some("welcome"), 7_500, 7_500)]
    );

    // Time decay, half-life 7 d: ages 21, 14, 7, 0 d → weights 1/8, 1/4,
    // 1/2, 1 = 1 : 2 : 4 : 8 (sum 15).
    // Credit: 10 000 · w / 15 = 666 r 10, 1 333 r 5, 2 666 r 10, 5 333 r 5
    //   (floors 9 998; the 2 left go to the remainders 10, 10: t1 and t3)
    //   → 667, 1 333, 2 667, 5 333.
    // Value: 10 001 · w / 15 = 666 r 11, 1 333 r 7, 2 666 r 14, 5 333 r 13
    //   (floors 9 998; 3 left to r 14, r 13, r 11: t3, t4, t1)
    //   → 667, 1 333, 2 667, 5 334.
    assert_eq!(
        per_touch(Model::TimeDecay),
        vec![(667, 667), (1_333, 1_333), (2_667, 2_667), (5_333, 5_334)]
    );
    // email = t2 + t4 = 1 333 + 5 333 = 6 666 bp, 1 333 + 5 334 = 6 667.
    assert_eq!(
        rows(&model(Model::TimeDecay).channels),
        vec![
            (Some("cpc"), 667, 667),
            (Some("email"), 6_666, 6_667),
            (Some("sms"), 2_667, 2_667)
        ]
    );
    // welcome = 1 333 + 2 667 + 5 333 = 9 333 bp; 1 333 + 2 667 + 5 334 = 9 334.
    assert_eq!(
        rows(&model(Model::TimeDecay).campaigns),
        vec![(Some("autumn"), 667, 667), (Some("welcome"), 9_333, 9_334)]
    );

    // Position based, 4 touchpoints: 40 / 10 / 10 / 40 (20 % over 2 middle).
    // Value: 4 000.4, 1 000.1, 1 000.1, 4 000.4 → floors 10 000, the unit to
    // the largest remainder (0.4, first of the tie: t1): 4 001, 1 000, 1 000, 4 000.
    assert_eq!(
        per_touch(Model::PositionBased),
        vec![(4_000, 4_001), (1_000, 1_000), (1_000, 1_000), (4_000, 4_000)]
    );
    assert_eq!(
        rows(&model(Model::PositionBased).channels),
        vec![
            (Some("cpc"), 4_000, 4_001),
            (Some("email"), 5_000, 5_000),
            (Some("sms"), 1_000, 1_000)
        ]
    );
    assert_eq!(
        rows(&model(Model::PositionBased).campaigns),
        vec![(Some("autumn"), 4_000, 4_001), (Some("welcome"), 6_000, 6_000)]
    );

    // o-d has no touchpoint: direct under every model.
    let d = attr::order_attribution(docs.as_ref(), "o-d")
        .await
        .expect("read")
        .expect("order o-d");
    assert!(d.touchpoints.is_empty());
    assert!(d
        .models
        .iter()
        .all(|m| rows(&m.channels) == vec![(Some("direct"), 10_000, 5_000)]));
    assert_eq!(attr::order_attribution(docs.as_ref(), "o-x").await.expect("read"), None);

    // The period [T-30d, T+1d) under linear: o-a and o-d, 15 001 EUR.
    // cpc 0.25 orders, 2 501; direct 1.0, 5 000; email 0.5, 5 000; sms 0.25, 2 500.
    let r = attr::attribution_report(docs.as_ref(), Model::Linear, t - days(30), t + days(1))
        .await
        .expect("report");
    assert_eq!(r.orders, 2);
    assert_eq!(r.revenue_minor.get("EUR"), Some(&15_001));
    let got: Vec<_> = r
        .channels
        .iter()
        .map(|s| (s.key.as_deref(), s.conversions, s.value_minor.get("EUR").copied()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("cpc"), 0.25, Some(2_501)),
            (Some("direct"), 1.0, Some(5_000)),
            (Some("email"), 0.5, Some(5_000)),
            (Some("sms"), 0.25, Some(2_500)),
        ]
    );
    // The end is exclusive: [T-30d, T) holds o-d only.
    let r = attr::attribution_report(docs.as_ref(), Model::FirstTouch, t - days(30), t)
        .await
        .expect("report");
    assert_eq!((r.orders, r.revenue_minor.get("EUR")), (1, Some(&5_000)));
}

#[tokio::test]
async fn the_fixed_history_gives_the_hand_computed_campaign_stats() {
    let docs = projected(fixed_history().await).await;
    // welcome: entered by a and b; requested m1 m2 m3; sent m1 m2 m3;
    // suppressed m4. o-a (T) is 7 d after m2 (T-7d): within the 7-day
    // window (end inclusive) → 1 conversion, 10 001 EUR. o-d: d got nothing.
    let s = campaign_stats::campaign_stats(docs.as_ref(), "welcome", 7)
        .await
        .expect("stats");
    assert_eq!(s.entered, 2);
    assert_eq!(
        (s.messages.requested, s.messages.sent, s.messages.suppressed),
        (3, 3, 1)
    );
    assert_eq!(s.conversions, 1);
    assert_eq!(s.revenue_minor.get("EUR"), Some(&10_001));
    // A 6-day window: m2 + 6 d = T-1d < T, m1 + 6 d long before: none.
    let s = campaign_stats::campaign_stats(docs.as_ref(), "welcome", 6)
        .await
        .expect("stats");
    assert_eq!((s.conversions, s.revenue_minor.len()), (0, 0));
    let none = campaign_stats::campaign_stats(docs.as_ref(), "other", 7)
        .await
        .expect("stats");
    assert_eq!((none.entered, none.messages.sent, none.conversions), (0, 0, 0));
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
