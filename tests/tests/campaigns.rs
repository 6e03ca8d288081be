//! Campaigns as versioned data through the API: an edited campaign is used by
//! new journeys while running ones keep their version; invalid definitions
//! are refused whole; pause/resume; the explain and journeys reads; the
//! campaign list and rollback (decision 0070).

use chrono::{DateTime, Utc};
use crm_api::Scope;
use crm_core::event::EventEnvelope;
use crm_tests::{registration, Answer, TestApi, TOKEN};
use serde_json::{json, Value};

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T09:00:00Z")
}

async fn cart_messages(api: &TestApi) -> Vec<EventEnvelope> {
    api.all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "MessageRequested" && e.data["campaign_id"] == "abandoned-cart")
        .collect()
}

async fn customer(api: &TestApi, email: &str) -> String {
    let created = api.call("POST", "/customers", Some(&registration(email))).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

/// A cart of 60.00, left alone (abandoned 60 minutes later).
async fn fill_cart(api: &TestApi, customer_id: &str) {
    let body = json!({ "customer_id": customer_id, "currency": "EUR" }).to_string();
    let cart = api.call("POST", "/carts", Some(&body)).await;
    assert_eq!(cart.status, 201, "{:?}", cart.body);
    let cart_id = cart.body["id"].as_str().expect("cart id").to_string();
    let item = json!({ "product_id": "lamp", "name": "Lamp", "quantity": 1, "unit_price_minor": 6000 }).to_string();
    let added = api.call("POST", &format!("/carts/{cart_id}/items"), Some(&item)).await;
    assert_eq!(added.status, 200, "{:?}", added.body);
}

/// The shipped abandoned-cart definition with another reminder template.
async fn edited_cart_campaign(api: &TestApi) -> Value {
    let current = api.call("GET", "/campaigns/abandoned-cart", None).await;
    assert_eq!(current.status, 200, "{:?}", current.body);
    assert_eq!(current.body["version"], 1);
    assert_eq!(current.body["paused"], false);
    let mut definition = current.body["definition"].clone();
    assert_eq!(definition["steps"][1]["template"], "abandoned-cart-reminder");
    definition["steps"][1]["template"] = json!("abandoned-cart-final-offer");
    definition
}

#[tokio::test]
async fn an_edited_campaign_starts_new_journeys_while_running_ones_keep_their_version() {
    let api = TestApi::at(start());
    let first = customer(&api, "first@example.com").await;
    fill_cart(&api, &first).await;
    api.advance_minutes(60).await; // abandoned: a journey on version 1 waits an hour

    let definition = edited_cart_campaign(&api).await;
    let put = api
        .call("PUT", "/campaigns/abandoned-cart", Some(&definition.to_string()))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.body["version"], 2);
    let got = api.call("GET", "/campaigns/abandoned-cart", None).await;
    assert_eq!(got.body["version"], 2);
    assert_eq!(
        got.body["definition"]["steps"][1]["template"],
        "abandoned-cart-final-offer"
    );

    api.advance_minutes(60).await;
    let old = cart_messages(&api).await;
    assert_eq!(old.len(), 1, "the running journey's reminder");
    assert_eq!(
        old[0].data["template"], "abandoned-cart-reminder",
        "version 1's template"
    );

    let second = customer(&api, "second@example.com").await;
    fill_cart(&api, &second).await;
    api.advance_minutes(60).await;
    api.advance_minutes(60).await;
    let new: Vec<_> = cart_messages(&api)
        .await
        .into_iter()
        .filter(|e| e.customer_id.as_deref() == Some(second.as_str()))
        .collect();
    assert_eq!(new.len(), 1, "the new journey's reminder");
    assert_eq!(
        new[0].data["template"], "abandoned-cart-final-offer",
        "version 2's template"
    );

    // The journeys route lists each customer's instance with its version.
    let journeys = api.call("GET", &format!("/customers/{second}/journeys"), None).await;
    assert_eq!(journeys.status, 200, "{:?}", journeys.body);
    let items = journeys.body["items"].as_array().expect("items");
    assert!(
        items
            .iter()
            .any(|i| i["campaign_id"] == "abandoned-cart" && i["campaign_version"] == 2),
        "{items:?}"
    );
    let journeys = api.call("GET", &format!("/customers/{first}/journeys"), None).await;
    let items = journeys.body["items"].as_array().expect("items");
    assert!(items
        .iter()
        .any(|i| i["campaign_id"] == "abandoned-cart" && i["campaign_version"] == 1));

    // Explain: the old reminder goes back to version 1 and the abandonment.
    let message_id = old[0].data["message_id"].as_str().expect("message id");
    let why = api.call("GET", &format!("/messages/{message_id}/explain"), None).await;
    assert_eq!(why.status, 200, "{:?}", why.body);
    assert_eq!(why.body["campaign"], "abandoned-cart@1");
    assert_eq!(why.body["customer_id"], first.as_str());
    let chain = why.body["chain"].as_array().expect("chain");
    assert_eq!(chain[0]["type"], "MessageRequested");
    assert!(chain
        .iter()
        .any(|l| l["role"] == "trigger" && l["type"] == "CartAbandoned"));

    // Campaign, journey and segment events are not customer events: no
    // consumer parked anything along the way.
    let health = api.call("GET", "/health", None).await;
    assert_eq!(health.body["status"], "ok", "{:?}", health.body);
    assert!(api.runtime.bus.dead_letters().list().await.expect("letters").is_empty());
}

#[tokio::test]
async fn an_invalid_definition_is_refused_with_every_error_and_nothing_written() {
    let api = TestApi::new();
    let before = api.event_count().await;
    let mut definition = edited_cart_campaign(&api).await;
    definition["steps"][1]["template"] = json!("no-such-template");
    definition["steps"][0]["duration"] = json!("soon");
    definition["name"] = json!("");
    let put = api
        .call("PUT", "/campaigns/abandoned-cart", Some(&definition.to_string()))
        .await;
    assert_eq!(put.status, 422, "{:?}", put.body);
    let errors = put.body["errors"].as_array().expect("errors");
    assert!(errors.len() >= 3, "every error: {errors:?}");
    assert_eq!(put.body["field"], errors[0]["path"]);
    let paths: Vec<&str> = errors.iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(paths.iter().any(|p| p.contains("template")), "{paths:?}");
    assert!(paths.iter().any(|p| p.contains("duration")), "{paths:?}");
    // Segment's `message` names the first path once: the detail already
    // starts with it ("steps[0].duration: ...; steps[1].template: ...").
    let field = put.body["field"].as_str().expect("field");
    let message = put.body["message"].as_str().expect("message");
    assert!(message.starts_with(&format!("{field}: ")), "{message}");
    assert!(
        !message.starts_with(&format!("{field}: {field}: ")),
        "the path twice: {message}"
    );
    assert_eq!(message, put.body["detail"].as_str().expect("detail"));

    // The id in the path must be the definition's.
    let other = api
        .call(
            "PUT",
            "/campaigns/another-one",
            Some(&edited_cart_campaign(&api).await.to_string()),
        )
        .await;
    assert_eq!(other.status, 422, "{:?}", other.body);
    assert_eq!(other.body["field"], "id");
    let not_json = api.call("PUT", "/campaigns/abandoned-cart", Some("{")).await;
    assert_eq!(not_json.status, 400);

    assert_eq!(api.event_count().await, before, "nothing written");
    let got = api.call("GET", "/campaigns/abandoned-cart", None).await;
    assert_eq!(got.body["version"], 1);
}

#[tokio::test]
async fn pause_and_resume_answer_conflicts_and_unknown_campaigns() {
    let api = TestApi::new();
    assert_eq!(api.call("GET", "/campaigns/no-such", None).await.status, 404);
    assert_eq!(api.call("POST", "/campaigns/no-such/pause", None).await.status, 404);
    assert_eq!(api.call("POST", "/campaigns/welcome/resume", None).await.status, 409);
    let paused = api.call("POST", "/campaigns/welcome/pause", None).await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(paused.body["paused"], true);
    assert_eq!(paused.body["version"], 1);
    assert_eq!(api.call("POST", "/campaigns/welcome/pause", None).await.status, 409);

    // While paused, a registration starts no welcome journey.
    let id = customer(&api, "paused@example.com").await;
    let journeys = api.call("GET", &format!("/customers/{id}/journeys"), None).await;
    let items = journeys.body["items"].as_array().expect("items");
    assert!(!items.iter().any(|i| i["campaign_id"] == "welcome"), "{items:?}");

    let resumed = api.call("POST", "/campaigns/welcome/resume", None).await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    assert_eq!(resumed.body["paused"], false);
    assert_eq!(api.call("POST", "/campaigns/welcome/resume", None).await.status, 409);
}

#[tokio::test]
async fn explain_and_journeys_answer_404_for_unknown_ids() {
    let api = TestApi::new();
    let why = api.call("GET", "/messages/no-such-message/explain", None).await;
    assert_eq!(why.status, 404, "{:?}", why.body);
    let unknown = api
        .call("GET", "/customers/0190d7a0-0000-7000-8000-000000000000/journeys", None)
        .await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
}

#[tokio::test]
async fn pausing_a_campaign_exits_its_waiting_journeys_at_once() {
    let api = TestApi::at(start());
    let id = customer(&api, "paused@example.com").await;
    fill_cart(&api, &id).await;
    api.advance_minutes(60).await;
    let journeys = api.call("GET", &format!("/customers/{id}/journeys"), None).await;
    assert_eq!(journeys.status, 200, "{:?}", journeys.body);
    let paused = api.call("POST", "/campaigns/abandoned-cart/pause", None).await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(paused.body["exited_instances"], 1, "the waiting cart journey");
    api.advance_minutes(26 * 60).await;
    assert!(
        cart_messages(&api).await.is_empty(),
        "no reminder from a paused campaign"
    );
    let exits: Vec<_> = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "JourneyExited" && e.data["reason"] == "campaign-paused")
        .collect();
    assert_eq!(exits.len(), 1);
}

/// A token of the test API carrying exactly `scopes`, as `crm-local token` mints it.
fn token_with(scopes: &[Scope]) -> String {
    let names: Vec<String> = scopes.iter().map(|s| s.as_str().to_string()).collect();
    let dir = tempfile::tempdir().expect("temp dir");
    crm_local::runtime::serve::token::mint(dir.path(), Some(TOKEN), &names).expect("minted")
}

async fn call_as(api: &TestApi, scopes: &[Scope], method: &str, path: &str) -> Answer {
    let bearer = format!("Bearer {}", token_with(scopes));
    api.call_with(method, path, None, &[("authorization", &bearer)]).await
}

/// The line of `id` in `GET /campaigns`.
async fn listed(api: &TestApi, id: &str) -> Value {
    let list = api.call("GET", "/campaigns", None).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let items = list.body["items"].as_array().expect("items");
    items
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} is not listed: {items:?}"))
}

async fn sent_by(api: &TestApi, campaign: &str) -> usize {
    api.all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "MessageSent" && e.data["campaign_id"] == campaign)
        .count()
}

async fn place_order(api: &TestApi, customer: &str, total: i64) {
    let body = json!({
        "customer_id": customer,
        "items": [{ "product_id": "lamp", "name": "Lamp", "quantity": 1, "unit_price_minor": total }],
        "tax_minor": 0, "shipping_minor": 0, "total_minor": total, "currency": "EUR",
        "shipping_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" }
    });
    let order = api.call("POST", "/orders", Some(&body.to_string())).await;
    assert_eq!(order.status, 201, "{:?}", order.body);
}

#[tokio::test]
async fn the_campaign_list_shows_status_version_running_instances_sends_and_conversions() {
    let api = TestApi::at(start());
    let before = listed(&api, "abandoned-cart").await;
    assert_eq!(before["name"], "Abandoned cart recovery", "{before:?}");
    assert_eq!(
        (
            &before["status"],
            &before["version"],
            &before["running_instances"],
            &before["entered"],
            &before["sends"],
            &before["conversions"]
        ),
        (&json!("active"), &json!(1), &json!(0), &json!(0), &json!(0), &json!(0)),
        "{before:?}"
    );
    // Shipped paused: listed, as paused.
    assert_eq!(listed(&api, "consent-renewal").await["status"], "paused");

    let id = customer(&api, "listed@example.com").await;
    fill_cart(&api, &id).await;
    api.advance_minutes(60).await; // abandoned: one journey waits
    api.advance_minutes(60).await; // its reminder goes out; it waits for the final offer
    let sent = sent_by(&api, "abandoned-cart").await;
    assert!(sent >= 1, "the reminder was sent");
    let running = listed(&api, "abandoned-cart").await;
    assert_eq!(running["running_instances"], 1, "{running:?}");
    assert_eq!(running["sends"], sent, "{running:?}");
    assert_eq!(running["conversions"], 0, "{running:?}");

    // The order ends the journey (exit_on) and converts within the window.
    api.advance_minutes(60).await;
    place_order(&api, &id, 6000).await;
    let converted = listed(&api, "abandoned-cart").await;
    assert_eq!(converted["running_instances"], 0, "{converted:?}");
    assert_eq!(converted["conversions"], 1, "{converted:?}");
    assert_eq!(converted["revenue_minor"]["EUR"], 6000, "{converted:?}");
    assert_eq!(converted["sends"], sent_by(&api, "abandoned-cart").await);
    assert_eq!(converted["entered"], 1, "{converted:?}");
    // The numbers of the stats route, exactly, for every campaign listed.
    let list = api.call("GET", "/campaigns", None).await;
    for line in list.body["items"].as_array().expect("items") {
        let id = line["id"].as_str().expect("id");
        let stats = api.call("GET", &format!("/campaigns/{id}/stats"), None).await;
        assert_eq!(stats.status, 200, "{:?}", stats.body);
        assert_eq!(
            (
                &line["entered"],
                &line["sends"],
                &line["conversions"],
                &line["revenue_minor"]
            ),
            (
                &stats.body["entered"],
                &stats.body["messages"]["sent"],
                &stats.body["conversions"],
                &stats.body["revenue_minor"]
            ),
            "{id}"
        );
    }

    // Pausing shows at once.
    let paused = api.call("POST", "/campaigns/abandoned-cart/pause", None).await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(listed(&api, "abandoned-cart").await["status"], "paused");
}

#[tokio::test]
async fn a_rollback_makes_an_earlier_definition_current_for_new_journeys_while_running_ones_keep_theirs() {
    let api = TestApi::at(start());
    let definition = edited_cart_campaign(&api).await;
    let put = api
        .call("PUT", "/campaigns/abandoned-cart", Some(&definition.to_string()))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.body["version"], 2);
    // A journey starts on version 2 (the final-offer template as reminder).
    let first = customer(&api, "first@example.com").await;
    fill_cart(&api, &first).await;
    api.advance_minutes(60).await;

    let rolled = api.call("POST", "/campaigns/abandoned-cart/rollback?to=1", None).await;
    assert_eq!(rolled.status, 200, "{:?}", rolled.body);
    assert_eq!(rolled.body["version"], 3, "a new version: {:?}", rolled.body);
    assert_eq!(rolled.body["rolled_back_to"], 1);
    assert_eq!(
        rolled.body["definition"]["steps"][1]["template"],
        "abandoned-cart-reminder"
    );
    let got = api.call("GET", "/campaigns/abandoned-cart", None).await;
    assert_eq!(got.body["version"], 3);
    assert_eq!(listed(&api, "abandoned-cart").await["version"], 3);
    // Versions are events: shipped, edited, rolled back (decision 0009).
    let stream: Vec<_> = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.stream_id == "campaign-abandoned-cart")
        .collect();
    assert_eq!(
        stream.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["CampaignPublished"; 3],
        "versions are events"
    );
    // The versions route lists them: shipped, edited, the rollback (same as 1).
    let versions = api.call("GET", "/campaigns/abandoned-cart/versions", None).await;
    assert_eq!(versions.status, 200, "{:?}", versions.body);
    assert_eq!(
        (versions.body["version"].as_u64(), versions.body["status"].as_str()),
        (Some(3), Some("active"))
    );
    let items = versions.body["items"].as_array().expect("items");
    let summary: Vec<(u64, &str, Option<u64>)> = items
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap_or(0),
                v["status"].as_str().unwrap_or(""),
                v["same_as"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (1, "superseded", None),
            (2, "superseded", None),
            (3, "current", Some(1))
        ]
    );
    for (v, e) in items.iter().zip(&stream) {
        assert_eq!(v["published_at"], serde_json::to_value(e.occurred_at).expect("time"));
        assert_eq!(v["published_by"], e.actor.as_str());
        assert!(
            v["published_by"].as_str().is_some_and(|a| a.starts_with("api:")),
            "{v:?}"
        );
        assert_eq!(v["name"], "Abandoned cart recovery", "{v:?}");
    }

    // The running journey keeps version 2; a new one starts on version 3.
    api.advance_minutes(60).await;
    let second = customer(&api, "second@example.com").await;
    fill_cart(&api, &second).await;
    api.advance_minutes(60).await;
    api.advance_minutes(60).await;
    let template_of = |messages: &[EventEnvelope], who: &str| -> Vec<String> {
        messages
            .iter()
            .filter(|e| e.customer_id.as_deref() == Some(who))
            .map(|e| e.data["template"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let messages = cart_messages(&api).await;
    assert_eq!(
        template_of(&messages, &first),
        ["abandoned-cart-final-offer"],
        "version 2's reminder"
    );
    assert_eq!(
        template_of(&messages, &second),
        ["abandoned-cart-reminder"],
        "version 3's reminder"
    );
    let journeys = api.call("GET", &format!("/customers/{second}/journeys"), None).await;
    let items = journeys.body["items"].as_array().expect("items");
    assert!(
        items
            .iter()
            .any(|i| i["campaign_id"] == "abandoned-cart" && i["campaign_version"] == 3),
        "{items:?}"
    );
    let journeys = api.call("GET", &format!("/customers/{first}/journeys"), None).await;
    let items = journeys.body["items"].as_array().expect("items");
    assert!(
        items
            .iter()
            .any(|i| i["campaign_id"] == "abandoned-cart" && i["campaign_version"] == 2),
        "{items:?}"
    );
}

fn assert_problem(answer: &Answer, status: u16, field: &str) {
    assert_eq!(answer.status, status, "{:?}", answer.body);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.body["field"], field, "{:?}", answer.body);
}

#[tokio::test]
async fn a_shipped_campaign_lists_its_version_as_shipped_and_an_unknown_one_is_404() {
    let api = TestApi::new();
    let versions = api.call("GET", "/campaigns/abandoned-cart/versions", None).await;
    assert_eq!(versions.status, 200, "{:?}", versions.body);
    assert_eq!(
        versions.body["items"],
        json!([{
            "version": 1,
            "name": "Abandoned cart recovery",
            "published_at": null,
            "published_by": "shipped",
            "status": "current",
            "same_as": null,
        }])
    );
    let unknown = api.call("GET", "/campaigns/no-such-campaign/versions", None).await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    // crm/admin, like the definition.
    let read_only = call_as(&api, &[Scope::Read], "GET", "/campaigns/abandoned-cart/versions").await;
    assert_eq!(read_only.status, 403, "{:?}", read_only.body);
}

#[tokio::test]
async fn a_rollback_to_an_unknown_current_or_malformed_version_is_refused_and_writes_nothing() {
    let api = TestApi::new();
    let definition = edited_cart_campaign(&api).await;
    let put = api
        .call("PUT", "/campaigns/abandoned-cart", Some(&definition.to_string()))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let stream_len = |events: Vec<EventEnvelope>| {
        events
            .iter()
            .filter(|e| e.stream_id == "campaign-abandoned-cart")
            .count()
    };
    let written = stream_len(api.all_events().await);

    let unknown = api.call("POST", "/campaigns/abandoned-cart/rollback?to=7", None).await;
    assert_problem(&unknown, 404, "to");
    assert!(
        unknown.body["detail"].as_str().unwrap_or("").contains('7'),
        "{:?}",
        unknown.body
    );
    let current = api.call("POST", "/campaigns/abandoned-cart/rollback?to=2", None).await;
    assert_problem(&current, 409, "to");
    for bad in ["", "?to=", "?to=two", "?to=0", "?to=-1", "?to=1.5", "?version=1"] {
        let answer = api
            .call("POST", &format!("/campaigns/abandoned-cart/rollback{bad}"), None)
            .await;
        assert_eq!(answer.status, 422, "{bad}: {:?}", answer.body);
        assert_eq!(answer.content_type(), "application/problem+json", "{bad}");
        let field = if bad.starts_with("?version") { "version" } else { "to" };
        assert_eq!(answer.body["field"], field, "{bad}: {:?}", answer.body);
    }
    let no_campaign = api.call("POST", "/campaigns/no-such/rollback?to=1", None).await;
    assert_eq!(no_campaign.status, 404, "{:?}", no_campaign.body);
    assert_eq!(stream_len(api.all_events().await), written, "nothing written");
}

#[tokio::test]
async fn the_list_needs_crm_read_and_a_rollback_crm_admin() {
    let api = TestApi::new();
    let put = api
        .call(
            "PUT",
            "/campaigns/abandoned-cart",
            Some(&edited_cart_campaign(&api).await.to_string()),
        )
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let others: Vec<Scope> = Scope::ALL.into_iter().filter(|s| *s != Scope::Read).collect();
    let refused = call_as(&api, &others, "GET", "/campaigns").await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["required_scope"], "crm/read");
    assert_eq!(call_as(&api, &[Scope::Read], "GET", "/campaigns").await.status, 200);

    let others: Vec<Scope> = Scope::ALL.into_iter().filter(|s| *s != Scope::Admin).collect();
    let refused = call_as(&api, &others, "POST", "/campaigns/abandoned-cart/rollback?to=1").await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert_eq!(refused.body["required_scope"], "crm/admin");
    assert_eq!(
        listed(&api, "abandoned-cart").await["version"],
        2,
        "nothing rolled back"
    );
    let admitted = call_as(&api, &[Scope::Admin], "POST", "/campaigns/abandoned-cart/rollback?to=1").await;
    assert_eq!(admitted.status, 200, "{:?}", admitted.body);
    assert_eq!(admitted.body["version"], 3);
}

#[tokio::test]
async fn the_journeys_read_gives_a_waiting_instance_its_next_timer() {
    let api = TestApi::at(start());
    let id = customer(&api, "timer@example.com").await;
    let scheduled: Vec<_> = api
        .all_events()
        .await
        .into_iter()
        .filter(|e| e.event_type == "JourneyWaitScheduled")
        .collect();
    assert_eq!(scheduled.len(), 1, "the welcome journey waits for the verification");
    let journeys = api.call("GET", &format!("/customers/{id}/journeys"), None).await;
    assert_eq!(journeys.status, 200, "{:?}", journeys.body);
    let items = journeys.body["items"].as_array().expect("items");
    let waiting: Vec<_> = items.iter().filter(|i| i["status"] == "waiting").collect();
    assert_eq!(waiting.len(), 1, "{items:?}");
    let timer = &waiting[0]["next_timer"];
    assert_eq!(timer["step_id"], scheduled[0].data["step_id"], "{timer:?}");
    assert_eq!(timer["step_id"], waiting[0]["current_step"]);
    assert_eq!(timer["waiting_for_event"], scheduled[0].data["waiting_for_event"]);
    let due = |v: &Value| crm_tests::time(v.as_str().expect("a time"));
    assert_eq!(due(&timer["due_at"]), due(&scheduled[0].data["due_at"]));
    assert!(due(&timer["due_at"]) > start(), "{timer:?}");
    for other in items.iter().filter(|i| i["status"] != "waiting") {
        assert!(other["next_timer"].is_null(), "{other:?}");
    }
}
