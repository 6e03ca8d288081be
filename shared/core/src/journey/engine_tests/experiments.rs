//! Experiments (decision 0081): a split assigns each customer a variant
//! once, deterministically, and takes its branch; a holdout customer is
//! recorded and sent nothing; the explain chain names the variant; and a
//! simulation of 2 000 customers through the engine and the campaign-stats
//! projection gives the weights' shares and each arm's conversions.

use super::*;
use crate::insights::campaign_stats::{self, difference, wilson, CampaignStatsProjection, Z95};
use crate::journey::definition::Step;
use crate::journey::experiment::{bucket, HOLDOUT};
use crate::journey::explain::AssignedVariant;
use crate::journey::instance::ExitReason;
use std::collections::BTreeMap;

const EXPERIMENT: &str = "subject-2026";

/// A campaign `id` with a 50/50 split (each variant sends, then waits an
/// hour and goes back to the split when `again`) and `holdout` percent held out.
fn experiment(id: &str, holdout: Option<u8>, again: bool) -> Campaign {
    let holdout = holdout.map_or(String::new(), |p| format!("holdout: {{ percent: {p} }}\n"));
    let (after, pause) = if again {
        ("pause", "  - { id: pause, type: wait, duration: 1h, next: test }\n")
    } else {
        ("exit", "")
    };
    let text = format!(
        "id: {id}\nname: Subject test\n{holdout}\
         trigger: {{ pattern: {{ source: [crm.commerce], detail-type: [CartAbandoned] }} }}\n\
         entry: {{ reentry: every_time, dedupe_key: event.detail.data.cart_id }}\n\
         steps:\n\
         \x20 - {{ id: test, type: split, experiment: {EXPERIMENT}, variants: \
         [{{ id: a, weight: 50, next: send-a }}, {{ id: b, weight: 50, next: send-b }}] }}\n\
         \x20 - {{ id: send-a, type: send, channel: email, template: abandoned-cart-reminder, category: marketing, \
         purpose: marketing, next: {after} }}\n\
         \x20 - {{ id: send-b, type: send, channel: email, template: abandoned-cart-final-offer, category: marketing, \
         purpose: marketing, next: {after} }}\n{pause}"
    );
    Campaign::from_yaml(&text).unwrap_or_else(|e| panic!("{e:?}"))
}

/// The first campaign id `exp-<n>` whose holdout of `percent` takes
/// [`CUSTOMER`] (`held`) or does not.
fn campaign_id_where_customer_is_held(percent: u8, held: bool) -> String {
    let holdout = crate::journey::definition::Holdout { percent };
    (0..10_000)
        .map(|n| format!("exp-{n}"))
        .find(|id| holdout.holds_out(bucket(CUSTOMER, id, HOLDOUT)) == held)
        .expect("some id")
}

/// The variant the split of `campaign` gives `customer`, computed apart
/// from the engine.
fn expected_variant(campaign: &Campaign, customer: &str) -> (String, String) {
    let Some(Step::Split(split)) = campaign.step("test") else {
        panic!("a split")
    };
    let v = split
        .variant_for(bucket(customer, &campaign.id, EXPERIMENT))
        .expect("a variant");
    (v.id.clone(), v.next.clone())
}

fn assignments(events: &[JourneyEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            JourneyEvent::JourneyVariantAssigned {
                experiment, variant, ..
            } => Some((experiment.clone(), variant.clone())),
            _ => None,
        })
        .collect()
}

fn sent_steps(events: &[JourneyEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            JourneyEvent::MessageRequested { step_id, .. } => Some(step_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_split_assigns_a_variant_once_and_takes_its_branch() {
    let id = campaign_id_where_customer_is_held(10, false);
    let campaign = experiment(&id, Some(10), true);
    let (variant, branch) = expected_variant(&campaign, CUSTOMER);
    let world = World::new(Arc::new(FixedCatalog::new(vec![campaign.clone()]))).await;
    let started = world.abandon("x1").await.expect("start");
    assert_eq!(started.messages.len(), 1, "the variant's send at once");
    let instance = started.started[0].clone();

    // Given the split was visited again after the wait:
    world.advance(chrono::Duration::hours(1)).await;
    let events = world.journey_events(&instance).await;
    // Then the assignment is recorded once, and both visits took its branch.
    assert_eq!(assignments(&events), [(EXPERIMENT.to_string(), variant.clone())]);
    assert_eq!(sent_steps(&events), [branch.clone(), branch.clone()]);
    assert!(!events
        .iter()
        .any(|e| matches!(e, JourneyEvent::JourneyHoldoutAssigned { .. })));
    assert_eq!(world.instance(&instance).await.variants.get(EXPERIMENT), Some(&variant));

    // And a second journey of the same customer (another cart) gets the
    // same variant: the hash, not chance, decides.
    let again = world.abandon("x2").await.expect("start");
    let events = world.journey_events(&again.started[0]).await;
    assert_eq!(assignments(&events), [(EXPERIMENT.to_string(), variant)]);
    assert_eq!(sent_steps(&events), [branch]);
}

#[tokio::test]
async fn a_held_out_customer_is_recorded_and_sent_nothing() {
    let id = campaign_id_where_customer_is_held(10, true);
    let world = World::new(Arc::new(FixedCatalog::new(vec![experiment(&id, Some(10), true)]))).await;
    let started = world.abandon("h1").await.expect("start");
    assert!(started.messages.is_empty(), "no send");
    let events = world.journey_events(&started.started[0]).await;
    assert!(
        matches!(
            events.as_slice(),
            [
                JourneyEvent::JourneyStarted { .. },
                JourneyEvent::JourneyHoldoutAssigned { percent: 10, bucket, .. },
                JourneyEvent::JourneyExited { reason: ExitReason::Holdout, .. },
            ] if *bucket < 1_000
        ),
        "{events:?}"
    );
    assert!(world.scheduler.pending().is_empty(), "no wait either");
    assert!(world.advance(chrono::Duration::days(2)).await.is_empty());
    // Without the holdout the same customer is sent the variant.
    let world = World::new(Arc::new(FixedCatalog::new(vec![experiment(&id, None, false)]))).await;
    assert_eq!(world.abandon("h2").await.expect("start").messages.len(), 1);
}

#[tokio::test]
async fn the_explain_chain_of_a_message_names_its_variant() {
    let id = campaign_id_where_customer_is_held(10, false);
    let campaign = experiment(&id, Some(10), false);
    let (variant, _) = expected_variant(&campaign, CUSTOMER);
    let world = World::new(Arc::new(FixedCatalog::new(vec![campaign]))).await;
    let started = world.abandon("e1").await.expect("start");
    let why = crate::journey::explain::explain(world.events.as_ref(), world.docs.as_ref(), &started.messages[0])
        .await
        .expect("explain")
        .expect("known message");
    let assigned = AssignedVariant {
        experiment: EXPERIMENT.into(),
        variant,
    };
    assert_eq!(why.variants, std::slice::from_ref(&assigned));
    let link = why
        .chain
        .iter()
        .find(|l| l.event_type == "JourneyVariantAssigned")
        .expect("the assignment is a link of the chain");
    assert_eq!(link.variant.as_ref(), Some(&assigned));
    assert_eq!(link.step_id.as_deref(), Some("test"));
    let json = serde_json::to_value(&why).expect("serializes");
    assert_eq!(json["variants"][0]["variant"], json!(assigned.variant));
}

/// The simulation's chance that a customer in `arm` orders: the holdout
/// least, variant b most.
fn converts(customer: &str, arm: &str) -> bool {
    let per_10k = match arm {
        "holdout" => 1_000,
        "a" => 1_500,
        _ => 2_500,
    };
    bucket(customer, "simulation", "order") < per_10k
}

#[tokio::test]
async fn two_thousand_customers_split_by_the_weights_and_the_stats_report_each_arm() {
    const N: usize = 2_000;
    let campaign = experiment("subject-test", Some(10), false);
    let world = World::new(Arc::new(FixedCatalog::new(vec![campaign]))).await;
    let entered_at = world.clock.now();

    // Each customer abandons a cart; the engine starts a journey, which
    // assigns them and requests the variant's message.
    let mut arm_of: BTreeMap<String, String> = BTreeMap::new();
    let mut messages = Vec::new();
    for n in 0..N {
        let customer = format!("00000000-0000-7000-8000-{n:012}");
        let mut e = crate::testing::raw_event(
            &format!("cart-s{n}"),
            "CartAbandoned",
            json!({ "cart_id": format!("s{n}"), "total_value_minor": 7000 }),
        );
        e.customer_id = Some(customer.clone());
        e.occurred_at = entered_at;
        e.recorded_at = entered_at;
        let e = world
            .events
            .append(AppendRequest {
                stream_id: e.stream_id.clone(),
                expected: ExpectedVersion::Any,
                events: vec![e],
                reservations: vec![],
                receipt: None,
            })
            .await
            .expect("append")
            .events[0]
            .clone();
        let outcome = world.engine.on_event(&e).await.expect("start");
        let events = world.journey_events(&outcome.started[0]).await;
        let arm = match assignments(&events).as_slice() {
            [(_, variant)] => variant.clone(),
            [] if events
                .iter()
                .any(|e| matches!(e, JourneyEvent::JourneyHoldoutAssigned { .. })) =>
            {
                "holdout".to_string()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(outcome.messages.is_empty(), arm == "holdout");
        messages.extend(outcome.messages.into_iter().map(|m| (m, customer.clone())));
        arm_of.insert(customer, arm);
    }

    // The shares are the weights' within 3 points: 10 % held out, 45 % each.
    let count = |arm: &str| arm_of.values().filter(|a| *a == arm).count();
    for (arm, share) in [("holdout", 0.10), ("a", 0.45), ("b", 0.45)] {
        let found = count(arm) as f64 / N as f64;
        assert!((found - share).abs() <= 0.03, "{arm}: {found} against {share}");
    }

    // The channel sends every message (as its MessageSent), and a day
    // later some customers order: more of them in b than in a, fewest in
    // the holdout.
    world.clock.advance(chrono::Duration::hours(1));
    for (message, customer) in &messages {
        let mut sent = crate::testing::raw_event(
            &format!("message-{message}"),
            "MessageSent",
            json!({ "message_id": message, "customer_id": customer, "channel": "email", "category": "marketing",
                    "campaign_id": "subject-test", "provider_message_id": format!("p-{message}") }),
        );
        sent.customer_id = Some(customer.clone());
        sent.occurred_at = world.clock.now();
        world
            .events
            .append(AppendRequest {
                stream_id: sent.stream_id.clone(),
                expected: ExpectedVersion::Any,
                events: vec![sent],
                reservations: vec![],
                receipt: None,
            })
            .await
            .expect("sent");
    }
    world.clock.advance(chrono::Duration::days(1));
    let orders = crate::commerce::OrderService::new(world.events.clone(), world.clock.clone(), world.scheduler.clone());
    let mut placed: BTreeMap<&str, (u64, i64)> = BTreeMap::new();
    for (n, (customer, arm)) in arm_of.iter().enumerate() {
        if !converts(customer, arm) {
            continue;
        }
        let total = 1_000 + n as i64;
        let place: crate::commerce::PlaceOrder = serde_json::from_value(json!({
            "customer_id": customer,
            "items": [{ "product_id": "sku-1", "name": "Beans", "quantity": 1, "unit_price_minor": total }],
            "tax_minor": 0, "shipping_minor": 0, "total_minor": total, "currency": "EUR",
            "shipping_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "de" }
        }))
        .expect("an order");
        let respond = |_: &crate::commerce::Order, _: &[EventEnvelope]| (201, json!({}));
        orders
            .execute(
                &format!("sim-{n}"),
                &crate::commerce::OrderCommand::Place(Box::new(place)),
                &CommandMeta::new(Actor::api("t")),
                None,
                &respond,
            )
            .await
            .expect("order placed");
        let entry = placed.entry(arm.as_str()).or_default();
        entry.0 += 1;
        entry.1 += total;
    }

    // The campaign-stats projection reads the whole history.
    let docs = Arc::new(crate::testing::InMemoryReadModels::default());
    let consumer =
        crate::consumer::Consumer::new(Arc::new(CampaignStatsProjection), world.events.clone(), docs.clone());
    for e in crate::insights::tests::all_events(&world.events).await {
        consumer.deliver(&e).await.expect("project");
    }
    let stats = campaign_stats::campaign_stats(docs.as_ref(), "subject-test", 7)
        .await
        .expect("stats");
    assert_eq!(stats.entered, N as u64);
    let arm = |experiment: &str, arm: &str| {
        stats
            .experiments
            .iter()
            .find(|s| s.experiment == experiment && s.arm == arm)
            .unwrap_or_else(|| panic!("{experiment}/{arm} in {:?}", stats.experiments))
            .clone()
    };
    let holdout = arm(HOLDOUT, "holdout");
    let (x0, n0) = (placed["holdout"].0, count("holdout") as u64);
    assert_eq!((holdout.entered, holdout.converted, holdout.sent), (n0, x0, 0));
    assert_eq!(holdout.revenue_minor.get("EUR").copied(), Some(placed["holdout"].1));
    assert!(holdout.lift_over_holdout.is_none());
    for variant in ["a", "b"] {
        let s = arm(EXPERIMENT, variant);
        let (x, n) = (placed[variant].0, count(variant) as u64);
        assert_eq!((s.entered, s.converted, s.sent), (n, x, n), "{variant}");
        assert_eq!(s.revenue_minor.get("EUR").copied(), Some(placed[variant].1));
        assert!((s.conversion_rate - x as f64 / n as f64).abs() < 1e-12);
        assert_eq!(s.interval, wilson(x, n, Z95));
        assert!(s.interval.low < s.conversion_rate && s.conversion_rate < s.interval.high);
        let lift = s.lift_over_holdout.expect("a lift over the holdout");
        let (d, interval) = difference(x, n, x0, n0, Z95);
        assert_eq!((lift.difference, lift.interval), (d, interval));
        assert!(lift.interval.low < d && d < lift.interval.high);
    }
    // b converts at 25 % against the holdout's 10 %: its lift excludes 0.
    let b = arm(EXPERIMENT, "b").lift_over_holdout.expect("lift");
    assert!(b.interval.low > 0.0, "{b:?}");
    // Everyone not held out, against the holdout.
    let treated = arm(HOLDOUT, "treated");
    assert_eq!(treated.entered, (N as u64) - n0);
    assert_eq!(treated.converted, placed["a"].0 + placed["b"].0);
    assert_eq!(treated.sent, messages.len() as u64);
}
