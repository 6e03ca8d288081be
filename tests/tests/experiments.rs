//! Experiments through the API (decision 0081): a campaign with a split and
//! a holdout, published with `PUT /campaigns/{id}`; each customer who enters
//! is assigned once (a variant, or the holdout, who is sent nothing); the
//! explain API names the variant of a message; `GET /campaigns/{id}/stats`
//! reports each arm with its interval and lift.

use crm_tests::TestApi;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const CAMPAIGN: &str = "subject-test";
const EXPERIMENT: &str = "subject-2026";

fn definition() -> Value {
    let send = |id: &str, template: &str| {
        json!({ "id": id, "type": "send", "channel": "email", "template": template, "category": "marketing",
                "discount": { "percent": 5, "valid_for": "72h" }, "next": "exit" })
    };
    json!({
        "id": CAMPAIGN,
        "name": "Subject line test",
        "holdout": { "percent": 30 },
        "trigger": { "pattern": { "source": ["crm.commerce"], "detail-type": ["CartAbandoned"] } },
        "entry": { "consent": { "purpose": "marketing", "channel": "email" }, "reentry": "every_time",
                   "dedupe_key": "event.detail.data.cart_id" },
        "steps": [
            { "id": "test", "type": "split", "experiment": EXPERIMENT, "variants": [
                { "id": "a", "weight": 50, "next": "send-a" }, { "id": "b", "weight": 50, "next": "send-b" } ] },
            send("send-a", "abandoned-cart-reminder"),
            send("send-b", "abandoned-cart-final-offer"),
        ]
    })
}

#[tokio::test]
async fn a_split_with_a_holdout_assigns_explains_and_reports_each_arm() {
    let api = TestApi::at(crm_tests::time("2026-11-23T09:00:00Z"));
    let put = api
        .call(
            "PUT",
            &format!("/campaigns/{CAMPAIGN}"),
            Some(&definition().to_string()),
        )
        .await;
    assert!(put.status == 200 || put.status == 201, "{:?}", put.body);
    let mut bad = definition();
    bad["steps"][0]["variants"][1]["next"] = json!("nowhere");
    let refused = api
        .call("PUT", &format!("/campaigns/{CAMPAIGN}"), Some(&bad.to_string()))
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.body["field"], "steps[0].variants[1].next", "{:?}", refused.body);

    const N: usize = 12;
    let mut customers = Vec::new();
    for n in 0..N {
        let id = api.register(&format!("exp{n}@example.com")).await;
        api.cart_with_lamps(&id, 1, 6000).await;
        customers.push(id);
    }
    api.advance_minutes(61).await; // the carts are abandoned: the journeys start

    let events = api.all_events().await;
    let ours = |e: &&crm_core::event::EventEnvelope| e.data["campaign_id"] == CAMPAIGN;
    let mut arm_of: BTreeMap<String, String> = BTreeMap::new();
    for e in events.iter().filter(ours) {
        let customer = e.customer_id.clone().unwrap_or_default();
        let arm = match e.event_type.as_str() {
            "JourneyVariantAssigned" => e.data["variant"].as_str().unwrap_or_default().to_string(),
            "JourneyHoldoutAssigned" => "holdout".to_string(),
            _ => continue,
        };
        assert!(arm_of.insert(customer, arm).is_none(), "assigned once");
    }
    assert_eq!(arm_of.len(), N, "every customer is assigned: {arm_of:?}");
    let requested: Vec<&crm_core::event::EventEnvelope> = events
        .iter()
        .filter(ours)
        .filter(|e| e.event_type == "MessageRequested")
        .collect();
    for (customer, arm) in &arm_of {
        let theirs: Vec<_> = requested
            .iter()
            .filter(|e| e.customer_id.as_deref() == Some(customer.as_str()))
            .collect();
        if arm == "holdout" {
            assert!(theirs.is_empty(), "a held-out customer is sent nothing");
        } else {
            assert_eq!(theirs.len(), 1);
            assert_eq!(theirs[0].data["step_id"], format!("send-{arm}"));
        }
    }

    // Why was a variant's message sent? The chain names the variant.
    let message = requested.first().expect("some customer is not held out");
    let customer = message.customer_id.clone().unwrap_or_default();
    let variant = arm_of[&customer].clone();
    let message_id = message.data["message_id"].as_str().unwrap_or_default();
    let why = api.call("GET", &format!("/messages/{message_id}/explain"), None).await;
    assert_eq!(why.status, 200, "{:?}", why.body);
    assert_eq!(
        why.body["variants"],
        json!([{ "experiment": EXPERIMENT, "variant": variant }])
    );
    let links = why.body["chain"].as_array().cloned().unwrap_or_default();
    let link = links
        .iter()
        .find(|l| l["type"] == "JourneyVariantAssigned")
        .expect("the assignment in the chain");
    assert_eq!(link["variant"]["variant"], json!(variant));

    // That customer orders: a conversion of their arm.
    api.advance_minutes(60).await;
    api.paid_order(&customer, 4200, "Desk lamp", "lighting").await;
    let stats = api.call("GET", &format!("/campaigns/{CAMPAIGN}/stats"), None).await;
    assert_eq!(stats.status, 200, "{:?}", stats.body);
    let arms = stats.body["experiments"].as_array().cloned().unwrap_or_default();
    let arm = |experiment: &str, arm: &str| {
        arms.iter()
            .find(|a| a["experiment"] == experiment && a["arm"] == arm)
            .cloned()
    };
    let count = |name: &str| arm_of.values().filter(|a| *a == name).count() as u64;
    let mut entered = 0;
    for name in ["a", "b"] {
        if let Some(a) = arm(EXPERIMENT, name) {
            assert_eq!(a["entered"], count(name), "{a}");
            assert_eq!(a["sent"], count(name), "{a}");
            entered += count(name);
        } else {
            assert_eq!(count(name), 0);
        }
    }
    let held = count("holdout");
    if held > 0 {
        let h = arm("holdout", "holdout").expect("the holdout arm");
        assert_eq!(
            (h["entered"].as_u64(), h["sent"].as_u64(), h["converted"].as_u64()),
            (Some(held), Some(0), Some(0))
        );
        let treated = arm("holdout", "treated").expect("the treated arm");
        assert_eq!(treated["entered"], (N as u64) - held);
        assert_eq!(treated["converted"], 1);
        assert!(treated["lift_over_holdout"]["interval"]["low"].is_number(), "{treated}");
    }
    assert_eq!(entered + held, N as u64);
    let converted = arm(EXPERIMENT, &variant).expect("the converted arm");
    assert_eq!(converted["converted"], 1, "{converted}");
    assert_eq!(converted["revenue_minor"]["EUR"], 4200);
    let rate = converted["conversion_rate"].as_f64().unwrap_or(-1.0);
    assert!((rate - 1.0 / count(&variant) as f64).abs() < 1e-9);
    let (low, high) = (
        converted["interval"]["low"].as_f64().unwrap_or(2.0),
        converted["interval"]["high"].as_f64().unwrap_or(-1.0),
    );
    // The interval holds the rate; with one entrant who converted, the rate
    // is its upper end (1.0), so the bounds are inclusive.
    assert!(low <= rate && rate <= high && low < high, "{converted}");
}

/// A campaign with a holdout and no split: its two arms are in the stats
/// before anyone is held out (the holdout with 0 entered, the treated arm
/// with everyone who entered), without a lift over an empty holdout.
#[tokio::test]
async fn a_holdout_nobody_is_in_yet_shows_its_two_arms() {
    let api = TestApi::at(crm_tests::time("2026-11-23T09:00:00Z"));
    let mut d = definition();
    d["id"] = json!("holdout-only");
    d["holdout"] = json!({ "percent": 1 });
    let send = d["steps"][1].clone();
    d["steps"] = json!([send]);
    let put = api.call("PUT", "/campaigns/holdout-only", Some(&d.to_string())).await;
    assert!(put.status == 200 || put.status == 201, "{:?}", put.body);
    let arms = |stats: &Value| -> Vec<(String, String, u64, bool)> {
        stats["experiments"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                (
                    a["experiment"].as_str().unwrap_or_default().to_string(),
                    a["arm"].as_str().unwrap_or_default().to_string(),
                    a["entered"].as_u64().unwrap_or(u64::MAX),
                    a.get("lift_over_holdout").is_some(),
                )
            })
            .collect()
    };
    let stats = api.call("GET", "/campaigns/holdout-only/stats", None).await;
    assert_eq!(stats.status, 200, "{:?}", stats.body);
    let arm = |name: &str, entered: u64| ("holdout".to_string(), name.to_string(), entered, false);
    assert_eq!(
        arms(&stats.body),
        [arm("holdout", 0), arm("treated", 0)],
        "{:?}",
        stats.body
    );

    const N: u64 = 3;
    for n in 0..N {
        let id = api.register(&format!("held{n}@example.com")).await;
        api.cart_with_lamps(&id, 1, 6000).await;
    }
    api.advance_minutes(61).await;
    let held = api
        .all_events()
        .await
        .iter()
        .filter(|e| e.event_type == "JourneyHoldoutAssigned" && e.data["campaign_id"] == "holdout-only")
        .count() as u64;
    let stats = api.call("GET", "/campaigns/holdout-only/stats", None).await;
    assert_eq!(stats.body["entered"], N, "{:?}", stats.body);
    let found = arms(&stats.body);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!((found[0].1.as_str(), found[0].2), ("holdout", held), "{found:?}");
    assert_eq!((found[1].1.as_str(), found[1].2), ("treated", N - held), "{found:?}");
    // A lift only once someone is held out.
    assert_eq!(found[1].3, held > 0, "{found:?}");
}
