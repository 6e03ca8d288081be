//! Retention through the local runtime on a virtual clock: activity posted
//! over several days, the clock moved past the activity age, the sweep run
//! (twice); the raw activity rows are gone from SQLite, one summary per day
//! is stored once, the customer's metrics answer as before (also from a
//! projection rebuilt from what is left), and consent and order events stay.

use chrono::{DateTime, Duration, Utc};
use crm_core::consumer::Consumer;
use crm_core::customer::metrics::{profile_metrics, ProfileMetricsProjection};
use crm_core::retention::{is_activity, RetentionPolicy, ACTIVITY_DAY_SUMMARIZED};
use crm_local::adapters::read_models::SqliteReadModels;
use crm_tests::TestApi;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-06-01T09:00:00Z")
}

async fn answers(api: &TestApi, id: &str) -> (Value, Value) {
    let customer = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(customer.status, 200, "{:?}", customer.body);
    let segments = api.call("GET", &format!("/customers/{id}/segments"), None).await;
    assert_eq!(segments.status, 200, "{:?}", segments.body);
    (customer.body["metrics"].clone(), segments.body)
}

/// Event types and counts of one stream, read from the SQLite file itself.
fn rows(api: &TestApi, stream: &str) -> BTreeMap<String, u64> {
    let conn = rusqlite::Connection::open(api.db_path()).expect("open the database file");
    let mut stmt = conn
        .prepare("SELECT type, COUNT(*) FROM events WHERE stream_id = ?1 GROUP BY type")
        .expect("prepare");
    let found = stmt
        .query_map([stream], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
        .expect("query")
        .collect::<Result<BTreeMap<_, _>, _>>()
        .expect("rows");
    found
}

fn count(events: &[crm_core::event::EventEnvelope], types: &[&str]) -> usize {
    events.iter().filter(|e| types.contains(&e.event_type.as_str())).count()
}

#[tokio::test]
async fn the_sweep_folds_expires_and_keeps_the_answers() {
    let api = TestApi::at(start());
    let id = api.register("retained@example.com").await;
    api.paid_order(&id, 4_500, "Lamp", "Lighting").await;
    // Five days of activity: logins and views, a different mix each day.
    let url = format!("/customers/{id}/activity");
    for day in 0..5u32 {
        for n in 0..=day % 3 {
            let login = json!({ "type": "CustomerLoggedIn", "session_id": format!("s-{day}-{n}") });
            let a = api.call("POST", &url, Some(&login.to_string())).await;
            assert_eq!(a.status, 201, "{:?}", a.body);
        }
        let view = json!({ "type": "ProductViewed", "product_id": format!("sku-{}", day % 2), "name": "Lamp",
            "category": "Lighting" });
        let a = api.call("POST", &url, Some(&view.to_string())).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        api.advance_minutes(24 * 60).await;
    }
    let stream = format!("activity-{id}");
    let raw_before = rows(&api, &stream);
    let raw_count: u64 = raw_before.values().sum();
    assert!(raw_before.keys().all(|t| is_activity(t)), "{raw_before:?}");

    // Past the activity age (and the margin), with the daily segment run on the way.
    let policy = RetentionPolicy::default();
    api.runtime
        .advance(policy.activity_age() + Duration::days(5))
        .await
        .expect("advance");
    let before = answers(&api, &id).await;
    assert!(before.0["last_login_at"].is_string(), "{:?}", before.0);
    let events_before = api.all_events().await;
    let kept_types = [
        "ConsentGranted",
        "CustomerRegistered",
        "OrderPlaced",
        "PaymentSucceeded",
    ];
    let kept_before = count(&events_before, &kept_types);
    assert!(kept_before >= 4, "{kept_before}");

    // When
    let report = crm_local::runtime::retention::sweep(&api.runtime, &policy)
        .await
        .expect("sweep");

    // Then: no raw activity row left in SQLite, one summary per day of activity.
    let after = rows(&api, &stream);
    assert!(after.keys().all(|t| t == ACTIVITY_DAY_SUMMARIZED), "{after:?}");
    assert_eq!(after.get(ACTIVITY_DAY_SUMMARIZED), Some(&5), "{after:?}");
    assert_eq!(report.activity_events_deleted, raw_count);
    assert_eq!(report.summaries_appended, 5);
    let summaries: Vec<_> = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.stream_id == stream)
        .collect();
    let folded: u64 = summaries.iter().filter_map(|e| e.data["events"].as_u64()).sum();
    assert_eq!(folded, raw_count, "every raw event is in one summary");

    // The customer's answers are the same, and consent and orders are still stored.
    assert_eq!(answers(&api, &id).await, before);
    let events_after = api.all_events().await;
    assert_eq!(count(&events_after, &kept_types), kept_before);

    // A second sweep writes and deletes nothing.
    let again = crm_local::runtime::retention::sweep(&api.runtime, &policy)
        .await
        .expect("sweep");
    assert_eq!((again.summaries_appended, again.activity_events_deleted), (0, 0));
    assert_eq!(rows(&api, &stream), after);
    assert_eq!(api.all_events().await.len(), events_after.len());

    // The metrics rebuilt from scratch from what is left answer the same.
    let dir = tempfile::tempdir().expect("temp dir");
    let docs = Arc::new(SqliteReadModels::open(&dir.path().join("rebuilt.db")).expect("read models"));
    let consumer = Consumer::new(Arc::new(ProfileMetricsProjection), api.store.clone(), docs.clone());
    for e in &events_after {
        consumer.deliver(e).await.expect("deliver");
    }
    let rebuilt = profile_metrics(docs.as_ref(), &id, api.runtime.clock.now())
        .await
        .expect("metrics");
    assert_eq!(serde_json::to_value(rebuilt).expect("json"), before.0);
}

/// The AWS side of the same policy, as template.yaml deploys it: the events
/// table's TTL is on (the attribute the DynamoDB store writes on activity
/// items), and the daily function that folds gets the policy and a
/// dead-letter queue.
#[test]
fn the_template_enables_the_ttl_and_wires_the_daily_fold() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml");
    let text = std::fs::read_to_string(path).expect("template.yaml is readable");
    let template: serde_yaml::Value = serde_yaml::from_str(&text).expect("template.yaml parses");
    let resources = &template["Resources"];
    let ttl = &resources["EventsTable"]["Properties"]["TimeToLiveSpecification"];
    assert_eq!(ttl["Enabled"].as_bool(), Some(true), "{ttl:?}");
    assert_eq!(ttl["AttributeName"].as_str(), Some("expires_at"), "{ttl:?}");

    let segments = &resources["SegmentsFunction"]["Properties"];
    let variables = &segments["Environment"]["Variables"];
    for name in [
        crm_core::retention::ACTIVITY_DAYS_ENV,
        crm_core::retention::LEGAL_YEARS_ENV,
    ] {
        assert!(!variables[name].is_null(), "SegmentsFunction has no {name}");
    }
    // The api writes the activity items, and so their TTL: the same age.
    let api_days =
        &resources["ApiFunction"]["Properties"]["Environment"]["Variables"][crm_core::retention::ACTIVITY_DAYS_ENV];
    assert_eq!(api_days, &variables[crm_core::retention::ACTIVITY_DAYS_ENV]);
    let parameters = &template["Parameters"];
    let default_days = parameters["ActivityRetentionDays"]["Default"].as_u64();
    assert_eq!(default_days, Some(u64::from(RetentionPolicy::default().activity_days)));
    let minimum = parameters["ActivityRetentionDays"]["MinValue"].as_u64();
    assert_eq!(minimum, Some(u64::from(RetentionPolicy::min_activity_days())));
    let default_years = parameters["LegalRetentionYears"]["Default"].as_u64();
    assert_eq!(default_years, Some(u64::from(RetentionPolicy::default().legal_years)));
    let daily = &segments["Events"]["Daily"]["Properties"];
    assert!(!daily["DeadLetterConfig"]["Arn"].is_null(), "{daily:?}");
    assert!(!resources["SegmentsDeadLettersAlarm"].is_null());
}
