//! Segments follow the customer's lifecycle (issue 19 item 3, decision
//! 0065), through the HTTP API on the local runtime's virtual clock: a
//! deactivated buyer leaves `buyers` and every other segment, the manual
//! `welcomed` included, stays out through the daily re-evaluation and comes
//! back to the computed segments when reactivated; an erased customer leaves
//! every segment, and their membership events say nothing about them.

use chrono::{DateTime, Duration, Utc};
use crm_tests::TestApi;
use serde_json::json;

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T09:00:00Z")
}

/// The customer's segments, sorted.
async fn segments_of(api: &TestApi, id: &str) -> Vec<String> {
    let got = api.call("GET", &format!("/customers/{id}/segments"), None).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let mut out: Vec<String> = got.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["segment"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

/// The members of `segment`, by customer id.
async fn members(api: &TestApi, segment: &str) -> Vec<String> {
    let got = api
        .call("GET", &format!("/segments/{segment}/members?limit=100"), None)
        .await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    got.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["customer_id"].as_str().map(str::to_string))
        .collect()
}

/// Registers a customer, verifies their address (the welcome journey then
/// tags the manual segment `welcomed`), and has them pay for one order that
/// is shipped and delivered.
async fn buyer(api: &TestApi, email: &str) -> String {
    let id = api.register(email).await;
    let token = api
        .events_of_type("EmailVerificationRequested")
        .await
        .into_iter()
        .rev()
        .find(|e| e.customer_id.as_deref() == Some(id.as_str()))
        .and_then(|e| e.data["token"].as_str().map(str::to_string))
        .expect("a verification token");
    let verified = api
        .call(
            "POST",
            &format!("/customers/{id}/email/verify"),
            Some(&json!({ "token": token }).to_string()),
        )
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    let order = api.paid_order(&id, 4_000, "Desk lamp", "lamps").await;
    let shipped = json!({ "carrier": "UPS", "tracking_number": "1Z999" }).to_string();
    for (step, body) in [("ship", Some(shipped.as_str())), ("deliver", Some("{}"))] {
        let done = api.call("POST", &format!("/orders/{order}/{step}"), body).await;
        assert_eq!(done.status, 200, "{step}: {:?}", done.body);
    }
    api.advance_minutes(60).await;
    id
}

/// The (type, segment, reason) of each membership event of the customer.
async fn membership_events(api: &TestApi, id: &str) -> Vec<(String, String, String)> {
    api.all_events()
        .await
        .into_iter()
        .filter(|e| e.stream_id == format!("segments-{id}"))
        .map(|e| {
            (
                e.event_type.clone(),
                e.data["segment"].as_str().unwrap_or("").to_string(),
                e.data["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_deactivated_buyer_leaves_every_segment_and_comes_back_to_the_computed_ones() {
    let api = TestApi::at(start());
    let leaving = buyer(&api, "leaving@shop.example").await;
    let staying = buyer(&api, "staying@shop.example").await;
    let all = ["affinity-lamps", "buyers", "new-customers", "welcomed"];
    assert_eq!(segments_of(&api, &leaving).await, all);
    let mut both = vec![leaving.clone(), staying.clone()];
    both.sort();
    assert_eq!(members(&api, "buyers").await, both);

    let before = membership_events(&api, &leaving).await.len();
    let body = json!({ "reason": "customer-request" }).to_string();
    let deactivated = api
        .call("POST", &format!("/customers/{leaving}/deactivate"), Some(&body))
        .await;
    assert_eq!(deactivated.status, 200, "{:?}", deactivated.body);
    api.runtime.bus.settle().await.expect("settle");
    assert!(segments_of(&api, &leaving).await.is_empty());
    assert_eq!(members(&api, "buyers").await, [staying.as_str()]);
    assert_eq!(members(&api, "welcomed").await, [staying.as_str()]);
    let left: Vec<(String, String, String)> = membership_events(&api, &leaving).await[before..].to_vec();
    let expected: Vec<(String, String, String)> = all
        .iter()
        .map(|s| {
            (
                "CustomerSegmentRemoved".to_string(),
                s.to_string(),
                "customer deactivated".to_string(),
            )
        })
        .collect();
    assert_eq!(left, expected);

    // Two days on (the daily re-evaluation ran twice): still in none.
    api.runtime.advance(Duration::days(2)).await.expect("advance");
    assert!(segments_of(&api, &leaving).await.is_empty());

    // Reactivated: the computed segments come back, the manual one does not.
    let reactivated = api
        .call("POST", &format!("/customers/{leaving}/reactivate"), None)
        .await;
    assert_eq!(reactivated.status, 200, "{:?}", reactivated.body);
    api.runtime.bus.settle().await.expect("settle");
    assert_eq!(
        segments_of(&api, &leaving).await,
        ["affinity-lamps", "buyers", "new-customers"]
    );
    assert_eq!(members(&api, "buyers").await, both);
}

#[tokio::test]
async fn an_erased_customer_leaves_every_segment_and_their_membership_events_name_nothing_of_theirs() {
    let api = TestApi::at(start());
    let erased = buyer(&api, "erase.me@shop.example").await;
    assert_eq!(
        segments_of(&api, &erased).await,
        ["affinity-lamps", "buyers", "new-customers", "welcomed"]
    );
    let gone = api.call("DELETE", &format!("/customers/{erased}"), None).await;
    assert_eq!(gone.status, 202, "{:?}", gone.body);
    api.runtime.bus.settle().await.expect("settle");
    api.runtime.advance(Duration::days(1)).await.expect("advance");
    for segment in ["affinity-lamps", "buyers", "new-customers", "welcomed"] {
        assert!(members(&api, segment).await.is_empty(), "{segment}");
    }
    let events = membership_events(&api, &erased).await;
    let expected: Vec<(String, String, String)> = ["affinity-lamps", "buyers", "new-customers", "welcomed"]
        .iter()
        .map(|s| {
            (
                "CustomerSegmentRemoved".to_string(),
                s.to_string(),
                "customer erased".to_string(),
            )
        })
        .collect();
    assert_eq!(events[events.len() - 4..], expected, "{events:?}");
    // What they joined for: each segment's rule or the campaign's request,
    // never the customer's own figures or address.
    for (_, segment, reason) in &events {
        assert!(
            !reason.contains("erase.me") && !reason.contains("4000"),
            "{segment}: {reason}"
        );
    }
}
