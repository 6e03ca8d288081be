//! Export (GDPR Art. 20, issue 7, decision 0020): `GET /customers/{id}/export`
//! holds every event the store keeps about the customer, decrypted, with the
//! projections and the messages sent; it is streamed, and stays complete and
//! valid JSON for a long history.

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Utc};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::ports::EventStore;
use crm_tests::{TestApi, TOKEN};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use tower::ServiceExt;

const EMAIL: &str = "export.me@shop.example";

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T09:00:00Z")
}

/// Whether a stored event is about `id`: it names them, or it is in a
/// stream named after them.
fn about(e: &EventEnvelope, id: &str) -> bool {
    e.customer_id.as_deref() == Some(id)
        || [
            format!("customer-{id}"),
            format!("activity-{id}"),
            format!("segments-{id}"),
        ]
        .contains(&e.stream_id)
}

/// The exported events, by event id, with the stream each was listed under.
fn exported_events(export: &Value) -> BTreeMap<String, (String, Value)> {
    let mut out = BTreeMap::new();
    for stream in export["streams"].as_array().expect("streams") {
        let stream_id = stream["stream_id"].as_str().expect("stream id").to_string();
        for event in stream["events"].as_array().expect("events") {
            let id = event["event_id"].as_str().expect("event id").to_string();
            assert!(
                out.insert(id.clone(), (stream_id.clone(), event.clone())).is_none(),
                "event {id} exported twice"
            );
        }
    }
    out
}

/// A customer who registered (with email consent), granted SMS consent,
/// gave an address, browsed, abandoned a cart, got the reminder and ordered.
async fn busy_customer(api: &TestApi) -> String {
    let id = api.register(EMAIL).await;
    let grant = json!({ "purpose": "marketing", "channel": "sms", "method": "preference-centre" }).to_string();
    let granted = api
        .call("POST", &format!("/customers/{id}/consents"), Some(&grant))
        .await;
    assert_eq!(granted.status, 201, "{:?}", granted.body);
    let profile =
        json!({ "address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" } });
    let updated = api
        .call("PATCH", &format!("/customers/{id}"), Some(&profile.to_string()))
        .await;
    assert_eq!(updated.status, 200, "{:?}", updated.body);
    for product in ["lamp", "desk"] {
        let view =
            json!({ "type": "ProductViewed", "product_id": product, "name": "Desk lamp", "category": "lighting" });
        let browsed = api
            .call("POST", &format!("/customers/{id}/activity"), Some(&view.to_string()))
            .await;
        assert_eq!(browsed.status, 201, "{:?}", browsed.body);
    }
    api.cart_with_lamps(&id, 2, 4000).await;
    for minutes in [59, 1, 59, 1] {
        api.advance_minutes(minutes).await;
    }
    let order = json!({
        "customer_id": id,
        "items": [{ "product_id": "lamp", "name": "Desk lamp", "quantity": 1, "unit_price_minor": 4000 }],
        "subtotal_minor": 4000, "tax_minor": 0, "shipping_minor": 0, "total_minor": 4000, "currency": "EUR",
        "shipping_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" }
    });
    let placed = api.call("POST", "/orders", Some(&order.to_string())).await;
    assert!(placed.status.is_success(), "{:?}", placed.body);
    api.runtime.bus.settle().await.expect("settle");
    id
}

#[tokio::test]
async fn the_export_holds_every_event_about_the_customer_decrypted_with_projections_and_messages() {
    let api = TestApi::at(start());
    let id = busy_customer(&api).await;
    // Someone else, whose events must not appear.
    let other = api.register("someone.else@shop.example").await;
    api.cart_with_lamps(&other, 1, 1000).await;

    let answer = api.call("GET", &format!("/customers/{id}/export"), None).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.content_type(), "application/json");
    let export = answer.body;
    assert_eq!(export["customer_id"], id.as_str());
    assert_eq!(export["format"], "crm-customer-export/1");

    // Every stored event about the customer is there, equal to what the
    // (decrypting) store reads, in its stream; and every exported event is stored.
    let stored = api.all_events().await;
    let exported = exported_events(&export);
    let ours: Vec<&EventEnvelope> = stored.iter().filter(|e| about(e, &id)).collect();
    assert!(
        ours.len() >= 10,
        "the scenario stored the customer's events: {}",
        ours.len()
    );
    let kinds: BTreeSet<&str> = ours
        .iter()
        .map(|e| e.stream_id.split('-').next().unwrap_or(""))
        .collect();
    for kind in ["customer", "activity", "cart", "order", "journey", "message"] {
        assert!(kinds.contains(kind), "the scenario stored {kind} streams: {kinds:?}");
    }
    for event in &ours {
        let key = event.event_id.to_string();
        let Some((stream, found)) = exported.get(&key) else {
            panic!(
                "{} v{} {} is missing from the export",
                event.stream_id, event.version, event.event_type
            );
        };
        assert_eq!(stream, &event.stream_id);
        assert_eq!(found, &serde_json::to_value(event).expect("json"), "{key}");
    }
    let by_id: BTreeMap<String, &EventEnvelope> = stored.iter().map(|e| (e.event_id.to_string(), e)).collect();
    for (key, (stream, event)) in &exported {
        let Some(original) = by_id.get(key) else {
            panic!("exported event {key} is not in the store");
        };
        assert_eq!(&serde_json::to_value(original).expect("json"), event);
        assert_eq!(&original.stream_id, stream);
        assert_ne!(
            original.customer_id.as_deref(),
            Some(other.as_str()),
            "another customer's event"
        );
    }
    // Each exported stream is whole.
    for stream in export["streams"].as_array().expect("streams") {
        let stream_id = stream["stream_id"].as_str().expect("stream id");
        let whole = api.store.read_stream(stream_id, 0, usize::MAX).await.expect("read");
        assert_eq!(
            stream["events"].as_array().map(Vec::len),
            Some(whole.len()),
            "{stream_id}"
        );
    }
    assert_eq!(export["event_count"].as_u64(), Some(exported.len() as u64));

    // Personal fields in plain text, as registered and ordered.
    let text = export.to_string();
    assert!(!text.contains("enc:v1:"), "an encrypted field in the export");
    let registered = ours
        .iter()
        .find(|e| e.event_type == "CustomerRegistered")
        .expect("registered");
    let (_, exported_registration) = &exported[&registered.event_id.to_string()];
    assert_eq!(exported_registration["data"]["email"], EMAIL);
    assert_eq!(exported_registration["data"]["phone"], "+12025550123");
    let placed = ours.iter().find(|e| e.event_type == "OrderPlaced").expect("order");
    assert_eq!(
        exported[&placed.event_id.to_string()].1["data"]["shipping_address"]["line1"],
        "1 Main St"
    );
    // The raw rows, by contrast, hold ciphertext (so the export did decrypt).
    let raw = api
        .runtime
        .stored_events
        .read_stream(&registered.stream_id, 0, 1)
        .await
        .expect("raw");
    assert!(raw[0].data["email"].as_str().is_some_and(|e| e.starts_with("enc:v1:")));

    // The projections, as the read routes answer them.
    let profile = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(export["customer"]["id"], id.as_str());
    assert_eq!(export["status"], profile.body["status"]);
    assert_eq!(export["customer"]["email"], profile.body["email"]);
    assert_eq!(export["metrics"], profile.body["metrics"]);
    let timeline = api
        .call("GET", &format!("/customers/{id}/timeline?limit=500"), None)
        .await;
    assert_eq!(export["timeline"], timeline.body["items"]);
    assert!(export["timeline"].as_array().is_some_and(|t| !t.is_empty()));
    let consents = api.call("GET", &format!("/customers/{id}/consents"), None).await;
    assert_eq!(export["consents"]["history"], consents.body["history"]);
    assert_eq!(export["consents"]["current"], consents.body["current"]);
    assert!(export["consents"]["history"].as_array().is_some_and(|h| h.len() >= 2));
    let segments = api.call("GET", &format!("/customers/{id}/segments"), None).await;
    let segment_ids = |items: &Value| -> BTreeSet<String> {
        items
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["segment"].as_str().map(str::to_string))
            .collect()
    };
    assert_eq!(segment_ids(&export["segments"]), segment_ids(&segments.body["items"]));
    let journeys = api.call("GET", &format!("/customers/{id}/journeys"), None).await;
    // The route adds each waiting instance's next timer, folded from its
    // stream; the export holds the index entries as stored.
    let mut listed = journeys.body["items"].clone();
    for item in listed.as_array_mut().into_iter().flatten() {
        if let Some(fields) = item.as_object_mut() {
            fields.remove("next_timer");
        }
    }
    assert_eq!(export["journeys"], listed);

    // The messages sent: one send-log record per MessageSent about them.
    let sent: BTreeSet<String> = ours
        .iter()
        .filter(|e| e.event_type == "MessageSent")
        .filter_map(|e| e.data["message_id"].as_str().map(str::to_string))
        .collect();
    assert!(!sent.is_empty(), "the customer was sent messages");
    let logged: BTreeSet<String> = export["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["message_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(logged, sent);
}

#[tokio::test]
async fn an_unknown_customer_is_a_404_problem_and_an_erased_one_exports_what_remains() {
    let api = TestApi::at(start());
    let unknown = uuid::Uuid::now_v7();
    let missing = api.call("GET", &format!("/customers/{unknown}/export"), None).await;
    assert_eq!(missing.status, 404, "{:?}", missing.body);
    assert_eq!(missing.content_type(), "application/problem+json");
    assert_eq!(missing.body["type"], "https://crm.dev/problems/not-found");
    let garbage = api.call("GET", "/customers/not-a-uuid/export", None).await;
    assert_eq!(garbage.status, 404, "{:?}", garbage.body);

    let id = api.register(EMAIL).await;
    let erased = api.call("DELETE", &format!("/customers/{id}"), None).await;
    assert_eq!(erased.status, 202, "{:?}", erased.body);
    let export = api.call("GET", &format!("/customers/{id}/export"), None).await;
    assert_eq!(export.status, 200, "{:?}", export.body);
    assert_eq!(export.body["customer_id"], id.as_str());
    assert_eq!(export.body["status"], "erased");
    let events = exported_events(&export.body);
    let registration = events
        .values()
        .find(|(_, e)| e["type"] == "CustomerRegistered")
        .map(|(_, e)| e.clone())
        .expect("the registration is still exported");
    assert_eq!(registration["data"]["email"], "[erased]");
    assert_eq!(registration["data"]["first_name"], "[erased]");
    let text = export.body.to_string();
    for plain in ["export.me", "Grace", "Hopper", "+12025550123"] {
        assert!(!text.contains(plain), "the erased export holds {plain}");
    }
    assert!(
        events.values().any(|(_, e)| e["type"] == "CustomerErased"),
        "the erasure is exported"
    );
}

#[tokio::test]
async fn a_long_history_is_streamed_in_chunks_and_complete() {
    let api = TestApi::at(start());
    let id = api.register("long.history@shop.example").await;
    let meta = CommandMeta::new(Actor::api("test"));
    let store = api.runtime.command_store();
    for n in 0..2000 {
        let request = crm_core::customer::activity::RecordActivity::from_json(json!({
            "type": "ProductViewed", "product_id": format!("sku-{n}"), "name": "Mug", "category": "kitchen"
        }))
        .expect("activity");
        crm_core::customer::activity::record_activity(store.as_ref(), &id, &request, &meta, None, start())
            .await
            .expect("record");
    }
    api.runtime.bus.settle().await.expect("settle");

    let request = Request::builder()
        .uri(format!("/customers/{id}/export"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request");
    let response = api.app.clone().oneshot(request).await.expect("infallible");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("content-length").is_none(),
        "a streamed body has no length up front"
    );
    let mut body = response.into_body();
    let (mut frames, mut bytes) = (0usize, Vec::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            frames += 1;
            bytes.extend_from_slice(&data);
        }
    }
    assert!(frames > 1, "the export came in {frames} chunk(s)");
    let export: Value = serde_json::from_slice(&bytes).expect("the streamed export is valid JSON");
    let stored = api
        .store
        .read_stream(&format!("activity-{id}"), 0, usize::MAX)
        .await
        .expect("read");
    assert_eq!(stored.len(), 2000);
    let activity = export["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|s| s["stream_id"] == format!("activity-{id}"))
        .expect("the activity stream");
    let exported: Vec<&str> = activity["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    let expected: Vec<String> = stored.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(exported, expected);
}
