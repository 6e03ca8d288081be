//! A replay rebuilds read models and decides nothing again: rebuilding the
//! projector (whose segment evaluator and affinity detector append events
//! as the orders come) appends no event, and leaves every read model as
//! the live run made it (decision 0093).

use chrono::{DateTime, Utc};
use crm_tests::{registration, TestApi};
use serde_json::json;

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T09:00:00Z")
}

/// A paid order, shipped and delivered at once (the RFM scores count deliveries).
async fn delivered_order(api: &TestApi, id: &str, total: i64, name: &str, category: &str) {
    let order = api.paid_order(id, total, name, category).await;
    let shipped = json!({ "carrier": "UPS", "tracking_number": "1Z999" }).to_string();
    for (step, body) in [("ship", shipped.as_str()), ("deliver", "{}")] {
        let done = api.call("POST", &format!("/orders/{order}/{step}"), Some(body)).await;
        assert_eq!(done.status, 200, "{step}: {:?}", done.body);
    }
}

#[tokio::test]
async fn rebuilding_the_projector_appends_nothing_and_gives_the_same_segments() {
    let api = TestApi::at(start());
    let created = api
        .call("POST", "/customers", Some(&registration("loyal@example.com")))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    // Orders that move the customer between segments and past the affinity threshold.
    for (n, total) in [4_000, 25_000, 60_000, 90_000].into_iter().enumerate() {
        delivered_order(&api, &id, total, &format!("Kettle {n}"), "kitchen").await;
        api.runtime.bus.settle().await.expect("settle");
    }
    let before_events = api.all_events().await;
    let kinds: Vec<&str> = before_events.iter().map(|e| e.event_type.as_str()).collect();
    assert!(
        kinds.contains(&"CustomerSegmentRemoved") && kinds.contains(&"ProductAffinityDetected"),
        "the live run decided: {kinds:?}"
    );
    let before_segments = segments(&api, &id).await;
    let before_docs = read_models(&api).await;
    assert!(before_docs.len() > 20, "{}", before_docs.len());
    let before_360 = api.call("GET", &format!("/customers/{id}"), None).await.body;

    api.runtime.rebuild("projector").await.expect("rebuild the projector");

    let after_events = api.all_events().await;
    let appended: Vec<&str> = after_events[before_events.len()..]
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert!(appended.is_empty(), "the replay appended {appended:?}");
    // Every document of every projection, as the live run left it.
    let after_docs = read_models(&api).await;
    for (key, before) in &before_docs {
        assert_eq!(after_docs.get(key), Some(before), "{key:?}");
    }
    assert_eq!(after_docs.len(), before_docs.len());
    assert_eq!(segments(&api, &id).await, before_segments);
    assert_eq!(
        api.call("GET", &format!("/customers/{id}"), None).await.body,
        before_360
    );

    // A consumer that decides is not replayed on its own either.
    for deciding in ["segment-evaluator", "affinity-detector"] {
        let refused = api.runtime.rebuild_consumer(deciding, &mut |_| {}).await;
        assert!(refused.is_err(), "{deciding}: {refused:?}");
    }
    assert_eq!(api.all_events().await.len(), before_events.len());
}

async fn segments(api: &TestApi, id: &str) -> serde_json::Value {
    let got = api.call("GET", &format!("/customers/{id}/segments"), None).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    got.body["items"].clone()
}

/// Every read-model document in the database, opened (decision 0045), by
/// (consumer, partition, sort); the operator's replay records left out.
async fn read_models(api: &TestApi) -> std::collections::BTreeMap<(String, String, String), serde_json::Value> {
    use crm_core::ports::ReadModelStore;
    let keys: Vec<(String, String, String)> = {
        let conn = rusqlite::Connection::open(api.db_path()).expect("open the database");
        let mut stmt = conn
            .prepare("SELECT consumer, partition, sort FROM read_models ORDER BY 1, 2, 3")
            .expect("prepare");
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query");
        rows.map(|r| r.expect("row")).collect()
    };
    let mut out = std::collections::BTreeMap::new();
    for (consumer, partition, sort) in keys {
        if consumer == crm_core::ops::progress::REPLAY_PROGRESS {
            continue;
        }
        let body = api
            .runtime
            .docs
            .get(&consumer, &partition, &sort)
            .await
            .expect("get")
            .expect("listed");
        out.insert((consumer, partition, sort), body);
    }
    out
}
