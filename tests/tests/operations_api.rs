//! The operator's routes the console reads (issue 21, decision 0085),
//! through the local runtime over real SQLite: dead letters (list without
//! payloads, show with the reason, redrive), replay progress, the overview
//! counters, the customer search through the keyed-hash indexes, resending
//! the email verification, their scopes, and the public landing page.

use chrono::Utc;
use crm_api::{mint_local_token, Scope, Scopes};
use crm_core::consumer::{park_poison, SealedDeadLetters};
use crm_core::event::EventEnvelope;
use crm_core::ports::{AppendRequest, DeadLetterQueue, ExpectedVersion};
use crm_core::privacy::KeyStore;
use crm_tests::{registration, TestApi, TOKEN};
use serde_json::{json, Value};
use std::sync::Arc;

/// A personal value that must never show in a listing.
const POISON_EMAIL: &str = "poisoned.listing-0085@dead-letters.example";

fn event(customer: &str, event_type: &str, data: Value) -> EventEnvelope {
    let id = uuid::Uuid::now_v7();
    EventEnvelope {
        event_id: id,
        stream_id: format!("customer-{customer}"),
        version: 0,
        event_type: event_type.into(),
        schema_version: 1,
        customer_id: Some(customer.to_string()),
        occurred_at: Utc::now(),
        recorded_at: Utc::now(),
        causation_id: None,
        correlation_id: id,
        actor: "system:test".into(),
        data,
    }
}

/// The ids of the listed letters.
async fn listed(api: &TestApi) -> Vec<String> {
    let list = api.call("GET", "/dead-letters", None).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|l| l["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn a_poisoned_event_is_listed_without_its_data_shown_with_its_reason_and_redriven() {
    let api = TestApi::new();
    assert_eq!(listed(&api).await, Vec::<String>::new());

    // A registration the projections cannot read (no `source`, no `terms_accepted`): poison.
    let customer = uuid::Uuid::now_v7().to_string();
    let poison = event(
        &customer,
        "CustomerRegistered",
        json!({ "customer_id": customer, "email": POISON_EMAIL, "first_name": "Posy", "last_name": "Zwart" }),
    );
    api.runtime
        .command_store()
        .append(AppendRequest {
            stream_id: poison.stream_id.clone(),
            expected: ExpectedVersion::NoStream,
            events: vec![poison],
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
    api.runtime.bus.settle().await.expect("settle");

    let list = api.call("GET", "/dead-letters", None).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let text = list.body.to_string();
    assert!(
        !text.contains(POISON_EMAIL),
        "a listing never carries the payload: {text}"
    );
    let items = list.body["items"].as_array().expect("items");
    assert!(!items.is_empty(), "the poison is parked: {text}");
    let letter = &items[0];
    assert_eq!(letter["event_type"], "CustomerRegistered", "{letter}");
    assert_eq!(letter["stream_id"], format!("customer-{customer}"), "{letter}");
    assert!(letter["reason"].as_str().is_some_and(|r| !r.is_empty()), "{letter}");
    assert_eq!(list.body["depth"], items.len(), "{text}");
    let id = letter["id"].as_str().expect("id").to_string();

    // Show: the reason, and the payload decrypted for display.
    let shown = api.call("GET", &format!("/dead-letters/{id}"), None).await;
    assert_eq!(shown.status, 200, "{:?}", shown.body);
    assert_eq!(shown.body["reason"], letter["reason"]);
    assert_eq!(shown.body["payload"]["data"]["email"], POISON_EMAIL, "{}", shown.body);

    // Paging: one at a time, the next page after the first.
    let first = api.call("GET", "/dead-letters?limit=1", None).await;
    assert_eq!(first.body["items"].as_array().map(Vec::len), Some(1));
    if items.len() > 1 {
        let after = first.body["next_after"].as_str().expect("a next page");
        let second = api
            .call("GET", &format!("/dead-letters?limit=1&after={after}"), None)
            .await;
        assert_eq!(second.body["items"][0]["id"], items[1]["id"]);
    } else {
        assert!(first.body["next_after"].is_null());
    }

    // Redriving the poison fails again: 409, and it stays parked.
    let again = api.call("POST", &format!("/dead-letters/{id}/redrive"), None).await;
    assert_eq!(again.status, 409, "{:?}", again.body);
    assert!(listed(&api).await.contains(&id));

    let unknown = api.call("GET", "/dead-letters/999999", None).await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    let unknown = api.call("POST", "/dead-letters/999999/redrive", None).await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    // Not a cursor at all, and a well-formed word that is not this queue's cursor.
    for cursor in ["not%20a%20cursor", "Gfhr"] {
        let bad = api.call("GET", &format!("/dead-letters?after={cursor}"), None).await;
        assert_eq!(bad.status, 422, "{cursor}: {:?}", bad.body);
        assert_eq!(bad.body["field"], "after");
    }
}

#[tokio::test]
async fn a_letter_whose_cause_is_gone_is_redriven_through_the_api_and_leaves_the_list() {
    let api = TestApi::new();
    let customer = api.register("redrive.me-0085@example.com").await;
    let stored = api
        .store
        .read_stream(&format!("customer-{customer}"), 0, 1)
        .await
        .expect("read")
        .remove(0);
    // The customer 360 lost the registration while its store was down: the
    // delivery was parked as the runtime parks it (sealed).
    api.runtime.docs.clear("customer-360").await.expect("clear");
    let sealed = SealedDeadLetters::new(
        Arc::new(api.runtime.bus.dead_letters().clone()) as Arc<dyn DeadLetterQueue>,
        api.runtime.keys.clone() as Arc<dyn KeyStore>,
    );
    park_poison(&sealed, "customer-360", &stored, "store was down", Utc::now())
        .await
        .expect("parked");
    let ids = listed(&api).await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let shown = api.call("GET", &format!("/dead-letters/{}", ids[0]), None).await;
    assert_eq!(shown.body["reason"], "store was down", "{:?}", shown.body);
    assert_eq!(shown.body["consumer"], "customer-360");
    // The customer exists but their 360 is lost: 503, retry (not 404).
    assert_eq!(
        api.call("GET", &format!("/customers/{customer}"), None).await.status,
        503
    );

    let redriven = api
        .call("POST", &format!("/dead-letters/{}/redrive", ids[0]), None)
        .await;
    assert_eq!(redriven.status, 200, "{:?}", redriven.body);
    assert_eq!(redriven.body, json!({ "id": ids[0], "redriven": true }));
    assert_eq!(listed(&api).await, Vec::<String>::new(), "it leaves the list");
    let back = api.call("GET", &format!("/customers/{customer}"), None).await;
    assert_eq!(
        back.status, 200,
        "the redriven registration was processed: {:?}",
        back.body
    );
    assert_eq!(back.body["email"], "redrive.me-0085@example.com");
    let gone = api
        .call("POST", &format!("/dead-letters/{}/redrive", ids[0]), None)
        .await;
    assert_eq!(gone.status, 404, "{:?}", gone.body);
}

#[tokio::test]
async fn search_finds_by_email_id_and_exact_name_token_never_by_part_of_a_name() {
    let api = TestApi::new();
    let mut body: Value = serde_json::from_str(&registration("Ada.Searchable@Example.com")).expect("json");
    body["first_name"] = json!("Adalinde");
    body["last_name"] = json!("Quorncastle");
    let created = api.call("POST", "/customers", Some(&body.to_string())).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    api.register("someone.else-0085@example.com").await;

    let found = |q: &'static str| {
        let api = &api;
        async move {
            let a = api.call("GET", &format!("/customers/search?q={q}"), None).await;
            assert_eq!(a.status, 200, "{q}: {:?}", a.body);
            let ids: Vec<String> = a.body["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|c| c["id"].as_str().expect("id").to_string())
                .collect();
            (a.body["matched_by"].as_str().unwrap_or_default().to_string(), ids)
        }
    };
    assert_eq!(
        found("ada.searchable%40example.com").await,
        ("email".into(), vec![id.clone()])
    );
    assert_eq!(found("quorncastle").await, ("name".into(), vec![id.clone()]));
    assert_eq!(found("ADALINDE").await, ("name".into(), vec![id.clone()]));
    assert_eq!(
        found("Adal").await,
        ("name".into(), vec![]),
        "a part of a name finds nobody"
    );
    assert_eq!(found("Quorn").await, ("name".into(), vec![]));
    let by_id = api.call("GET", &format!("/customers/search?q={id}"), None).await;
    assert_eq!(by_id.body["matched_by"], "id");
    assert_eq!(by_id.body["items"][0]["id"], id.as_str());
    let nobody = api
        .call("GET", &format!("/customers/search?q={}", uuid::Uuid::now_v7()), None)
        .await;
    assert_eq!(nobody.body["items"], json!([]));

    let empty = api.call("GET", "/customers/search?q=%20", None).await;
    assert_eq!(empty.status, 422, "{:?}", empty.body);
    assert_eq!(empty.body["field"], "q");
    let unknown = api.call("GET", "/customers/search?name=x", None).await;
    assert_eq!(unknown.status, 422, "{:?}", unknown.body);
}

#[tokio::test]
async fn the_overview_counts_the_events_and_messages_the_test_made() {
    let api = TestApi::new();
    api.register("overview.one-0085@example.com").await;
    api.register("overview.two-0085@example.com").await;
    let events = api.all_events().await;
    let of = |t: &str| events.iter().filter(|e| e.event_type == t).count() as u64;

    let overview = api.call("GET", "/operations/overview", None).await;
    assert_eq!(overview.status, 200, "{:?}", overview.body);
    let per_minute = overview.body["events_per_minute"].as_array().expect("minutes");
    assert_eq!(per_minute.len(), 60);
    let counted: u64 = per_minute.iter().filter_map(|m| m["events"].as_u64()).sum();
    // Every event this test made reached the projector's counters.
    assert_eq!(counted, events.len() as u64, "{:?}", overview.body);
    assert!(per_minute.last().and_then(|m| m["events"].as_u64()).is_some());

    let messages = overview.body["messages_24h"].as_array().expect("messages");
    let count = |channel: &str, outcome: &str| {
        messages
            .iter()
            .find(|m| m["channel"] == channel && m["outcome"] == outcome)
            .and_then(|m| m["count"].as_u64())
            .unwrap_or(0)
    };
    assert!(of("MessageSent") >= 2, "two verification emails at least");
    assert_eq!(count("email", "sent"), of("MessageSent"), "{messages:?}");
    let requested: u64 = messages
        .iter()
        .filter(|m| m["outcome"] == "requested")
        .filter_map(|m| m["count"].as_u64())
        .sum();
    assert_eq!(requested, of("MessageRequested"), "{messages:?}");
    assert_eq!(
        overview.body["running_journeys"].as_u64(),
        Some(of("JourneyStarted") - of("JourneyExited")),
        "{:?}",
        overview.body
    );
    assert_eq!(overview.body["dead_letters"], 0);
    let consumers = overview.body["consumers"].as_array().expect("consumers");
    assert!(consumers.iter().any(|c| c["name"] == "projector"), "{consumers:?}");
    assert!(consumers.iter().all(|c| c["lag"] == 0), "settled: {consumers:?}");
}

#[tokio::test]
async fn a_replay_records_its_progress_for_the_api() {
    let api = TestApi::new();
    api.register("replayed-0085@example.com").await;
    let before = api.call("GET", "/operations/replays", None).await;
    assert_eq!(before.status, 200, "{:?}", before.body);
    assert_eq!(before.body["replays"], json!([]));

    let replayed = crm_local::cli::ops::replay(&api.runtime, "customer-360", true)
        .await
        .expect("replay");
    let after = api.call("GET", "/operations/replays", None).await;
    let replays = after.body["replays"].as_array().expect("replays");
    assert_eq!(replays.len(), 1, "{replays:?}");
    let r = &replays[0];
    assert_eq!(r["name"], "customer-360");
    assert_eq!(r["state"], "done");
    assert_eq!(r["events"].as_u64(), Some(replayed.report.events), "{r}");
    assert_eq!(r["events"].as_u64(), Some(api.event_count().await as u64), "{r}");
    assert_eq!(r["total"], r["events"], "{r}");

    // A whole bus target: recorded too.
    crm_local::cli::ops::replay(&api.runtime, "consent", true)
        .await
        .expect("rebuild");
    let after = api.call("GET", "/operations/replays", None).await;
    let names: Vec<&str> = after.body["replays"]
        .as_array()
        .expect("replays")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, vec!["consent", "customer-360"]);
    assert!(after.body["consumers"].as_array().is_some_and(|c| !c.is_empty()));
}

/// The verification emails in the mail sink with this token.
async fn verification_mails(api: &TestApi, token: &str) -> usize {
    api.runtime
        .mail
        .list()
        .await
        .expect("mail sink")
        .iter()
        .filter(|m| m.email().is_some_and(|e| e.text.contains(token)))
        .count()
}

#[tokio::test]
async fn resending_the_verification_mails_it_again_once_per_request_until_verified() {
    let api = TestApi::new();
    let id = api.register("resend.me-0085@example.com").await;
    let requested = api.events_of_type("EmailVerificationRequested").await;
    let token = requested[0].data["token"].as_str().expect("token").to_string();
    assert_eq!(verification_mails(&api, &token).await, 1);

    let path = format!("/customers/{id}/email/verification");
    let key = [
        ("authorization", &*format!("Bearer {TOKEN}")),
        ("idempotency-key", "resend-1"),
    ];
    let resent = api.call_with("POST", &path, None, &key).await;
    assert_eq!(resent.status, 202, "{:?}", resent.body);
    assert_eq!(resent.body["id"], id.as_str());
    assert!(resent.body.get("pending_verification_token").is_none());
    assert_eq!(verification_mails(&api, &token).await, 2, "the same link again");
    // A retry of the same request is answered, not applied twice.
    let retried = api.call_with("POST", &path, None, &key).await;
    assert_eq!(retried.status, 202, "{:?}", retried.body);
    assert_eq!(verification_mails(&api, &token).await, 2);

    let verify = json!({ "token": token }).to_string();
    let verified = api
        .call("POST", &format!("/customers/{id}/email/verify"), Some(&verify))
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    let done = api.call("POST", &path, None).await;
    assert_eq!(done.status, 409, "{:?}", done.body);
    assert_eq!(verification_mails(&api, &token).await, 2);
    let nobody = api
        .call(
            "POST",
            &format!("/customers/{}/email/verification", uuid::Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(nobody.status, 404, "{:?}", nobody.body);
}

#[tokio::test]
async fn each_route_refuses_a_token_without_its_scope() {
    let api = TestApi::new();
    let id = api.register("scoped-0085@example.com").await;
    let read = mint_local_token(TOKEN, Scopes::none().with(Scope::Read));
    let write = mint_local_token(TOKEN, Scopes::none().with(Scope::Write));
    let admin = mint_local_token(TOKEN, Scopes::none().with(Scope::Admin));
    let call = |method: &'static str, path: String, token: String| {
        let api = &api;
        async move {
            api.call_with(method, &path, None, &[("authorization", &format!("Bearer {token}"))])
                .await
        }
    };
    for path in [
        "/dead-letters".to_string(),
        "/dead-letters/1".to_string(),
        "/operations/replays".to_string(),
        "/operations/overview".to_string(),
        "/customers/search?q=x".to_string(),
    ] {
        let refused = call("GET", path.clone(), write.clone()).await;
        assert_eq!(refused.status, 403, "{path}: {:?}", refused.body);
        assert_eq!(refused.body["required_scope"], "crm/read", "{path}");
    }
    let refused = call("POST", "/dead-letters/1/redrive".into(), read.clone()).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["required_scope"], "crm/admin");
    let allowed = call("POST", "/dead-letters/1/redrive".into(), admin).await;
    assert_eq!(allowed.status, 404, "admin reaches the handler: {:?}", allowed.body);
    let refused = call("POST", format!("/customers/{id}/email/verification"), read.clone()).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["required_scope"], "crm/write");
    let allowed = call("GET", "/operations/overview".into(), read).await;
    assert_eq!(allowed.status, 200, "{:?}", allowed.body);
    let anonymous = api.call_with("GET", "/dead-letters", None, &[]).await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn the_landing_page_is_public_html_linking_the_console_the_description_and_health() {
    let api = TestApi::new();
    let page = api.call_raw("GET", "/", None, &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type().starts_with("text/html"), "{}", page.content_type());
    let html = page.body.as_str().expect("a text body").to_string();
    for link in ["href=\"/console\"", "href=\"/openapi.yaml\"", "href=\"/health\""] {
        assert!(html.contains(link), "{link} in {html}");
    }
    assert!(!html.to_lowercase().contains("<script"), "no script: {html}");
    let csp = page
        .headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(csp.contains("default-src 'none'"), "{csp}");

    let spec = api.call_raw("GET", "/openapi.yaml", None, &[]).await;
    assert_eq!(spec.status, 200);
    assert!(spec.content_type().starts_with("application/yaml"));
    let text = spec.body.as_str().expect("text");
    let doc: serde_yaml::Value = serde_yaml::from_str(text).expect("YAML");
    assert!(doc["paths"]["/dead-letters"].is_mapping());
}
