//! Broadcasts through the API on the virtual clock (issue 20 item 2,
//! decision 0084): a broadcast to a manual segment at 10:00 local time
//! reaches customers in three time zones each at their 10:00 (the mail
//! sink's send time); a customer without consent and one whose address is
//! suppressed are counted and not sent; re-running the send (its events
//! delivered again to the campaign and channel functions) sends nothing
//! new. Pause stops further pages, resume finishes, cancel ends. Bad input
//! is 422 naming the field.

use crm_core::broadcast::{BroadcastService, StepOutcome};
use crm_core::event::{Actor, CommandMeta};
use crm_tests::{time, Answer, TestApi};
use serde_json::{json, Value};
use std::collections::BTreeMap;

const SEGMENT: &str = "newsletter";

/// Registers a customer in `zone`, with or without marketing email consent,
/// and adds them to the manual segment `segment`.
async fn customer(api: &TestApi, email: &str, zone: &str, consent: bool, segments: &[&str]) -> String {
    let mut body: Value = serde_json::from_str(&crm_tests::registration(email)).expect("registration");
    body["timezone"] = json!(zone);
    body["marketing_consent"]["email"] = json!(consent);
    let a = api.call("POST", "/customers", Some(&body.to_string())).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    let id = a.body["id"].as_str().expect("customer id").to_string();
    let now = api.runtime.clock.now();
    for segment in segments {
        crm_core::segments::apply_request(api.store.as_ref(), &id, segment, true, now, None)
            .await
            .expect("added to the manual segment");
    }
    api.runtime.bus.settle().await.expect("settles");
    id
}

async fn post(api: &TestApi, body: &Value) -> Answer {
    api.call("POST", "/broadcasts", Some(&body.to_string())).await
}

fn local_ten(id: &str) -> Value {
    json!({
        "id": id,
        "template": "welcome",
        "channel": "email",
        "audience": { "segments": [SEGMENT], "exclude": ["do-not-mail"] },
        "send": { "type": "local", "date": "2026-03-02", "time": "10:00" },
        "rate_per_second": 10
    })
}

/// The broadcast's messages in the mail sink: recipient → send time.
async fn received(api: &TestApi, broadcast: &str) -> BTreeMap<String, chrono::DateTime<chrono::Utc>> {
    let prefix = format!("bc-{broadcast}-");
    let mut out = BTreeMap::new();
    for m in api.runtime.mail.list().await.expect("mail sink") {
        if m.message_id.starts_with(&prefix) {
            assert!(
                out.insert(m.recipient.clone(), m.sent_at).is_none(),
                "sent twice to {}",
                m.recipient
            );
        }
    }
    out
}

/// The event types of an explain answer's chain, newest first.
fn chain_types(why: &Value) -> Vec<&str> {
    why["chain"]
        .as_array()
        .map(|c| c.iter().filter_map(|l| l["type"].as_str()).collect())
        .unwrap_or_default()
}

async fn get(api: &TestApi, id: &str) -> Value {
    let a = api.call("GET", &format!("/broadcasts/{id}"), None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body
}

#[tokio::test]
async fn bad_input_is_422_naming_the_field() {
    let api = TestApi::at(time("2026-03-01T08:00:00Z"));
    customer(&api, "a@example.com", "UTC", true, &[SEGMENT, "do-not-mail"]).await;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("template", json!("no-such-template"), "template"),
        // An SMS template for an email.
        ("template", json!("checkout-abandonment-sms"), "template"),
        // A transactional template (no unsubscribe link): a broadcast is marketing.
        ("template", json!("order-confirmation"), "template"),
        (
            "audience",
            json!({ "segments": ["no-such-segment"] }),
            "audience.segments[0]",
        ),
        (
            "audience",
            json!({ "segments": [SEGMENT], "exclude": ["nope"] }),
            "audience.exclude[0]",
        ),
        (
            "send",
            json!({ "type": "local", "date": "2026-03-02", "time": "25:00" }),
            "send.time",
        ),
        ("send", json!({ "type": "at", "at": "tomorrow" }), "send.at"),
        ("send", json!({ "type": "at", "at": "2026-02-01T10:00:00Z" }), "send.at"),
        ("send", json!({ "type": "whenever" }), "send.type"),
        ("rate_per_second", json!(0), "rate_per_second"),
        ("rate_per_second", json!(100000), "rate_per_second"),
        // An explicit null is not a default (the schema says integer).
        ("rate_per_second", Value::Null, "rate_per_second"),
        ("id", Value::Null, "id"),
        (
            "audience",
            json!({ "segments": [SEGMENT], "exclude": null }),
            "audience.exclude",
        ),
        ("channel", json!("fax"), "channel"),
        ("colour", json!("blue"), "colour"),
    ];
    for (field, value, expected) in cases {
        let mut body = local_ten("bad");
        body[field] = value;
        let a = post(&api, &body).await;
        assert_eq!(a.status, 422, "{field}: {:?}", a.body);
        assert_eq!(a.body["field"], expected, "{:?}", a.body);
        assert_eq!(a.body["errors"][0]["path"], expected, "{:?}", a.body);
        assert_eq!(a.content_type(), "application/problem+json");
    }
    // Nothing was scheduled.
    assert_eq!(api.call("GET", "/broadcasts/bad", None).await.status, 404);
    assert!(api.events_of_type("BroadcastScheduled").await.is_empty());
    // The same request twice is one broadcast; another definition under its id is 409.
    let first = post(&api, &local_ten("spring")).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(post(&api, &local_ten("spring")).await.status, 200);
    let mut other = local_ten("spring");
    other["rate_per_second"] = json!(20);
    let conflict = post(&api, &other).await;
    assert_eq!((conflict.status.as_u16(), &conflict.body["field"]), (409, &json!("id")));
}

#[tokio::test]
async fn a_segment_defined_by_rules_is_an_audience_before_it_has_members() {
    let api = TestApi::at(time("2026-03-01T08:00:00Z"));
    customer(&api, "a@example.com", "UTC", true, &[]).await;
    let definition = json!({
        "id": "french",
        "name": "French-speaking customers",
        "match": { "profile": "locale", "op": "equals", "value": "fr-FR" },
    });
    let put = api.call("PUT", "/segments/french", Some(&definition.to_string())).await;
    assert_eq!(put.status, 201, "{:?}", put.body);
    let mut body = local_ten("bonjour");
    body["audience"] = json!({ "segments": ["french"] });
    let a = post(&api, &body).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    // A segment neither defined, fixed nor manual stays refused.
    body["id"] = json!("hola");
    body["audience"] = json!({ "segments": ["spanish"] });
    let refused = post(&api, &body).await;
    assert_eq!(
        (refused.status.as_u16(), &refused.body["field"]),
        (422, &json!("audience.segments[0]"))
    );
}

#[tokio::test]
async fn a_local_time_broadcast_reaches_each_zone_at_ten_and_never_twice() {
    // A day before: the welcome series and verification mails are behind us.
    let api = TestApi::at(time("2026-02-28T06:00:00Z"));
    let berlin = "berlin@example.com";
    let new_york = "newyork@example.com";
    let tokyo = "tokyo@example.com";
    let berlin_id = customer(&api, berlin, "Europe/Berlin", true, &[SEGMENT]).await;
    customer(&api, new_york, "America/New_York", true, &[SEGMENT]).await;
    customer(&api, tokyo, "Asia/Tokyo", true, &[SEGMENT]).await;
    customer(&api, "noconsent@example.com", "Europe/Berlin", false, &[SEGMENT]).await;
    let bounced = customer(&api, "bounced@example.com", "Asia/Tokyo", true, &[SEGMENT]).await;
    customer(
        &api,
        "excluded@example.com",
        "Europe/Berlin",
        true,
        &[SEGMENT, "do-not-mail"],
    )
    .await;
    // The bounced address is invalidated (as a permanent bounce does).
    let customers = crm_core::customer::CustomerService::new(api.store.clone(), api.runtime.clock.clone())
        .with_identifiers(api.runtime.identifiers.clone());
    let invalidate = crm_core::customer::CustomerCommand::InvalidateEmail(crm_core::customer::InvalidateEmail {
        email: "bounced@example.com".into(),
        reason: "permanent bounce".into(),
    });
    let no_answer = |_: &crm_core::customer::Customer, _: &[crm_core::event::EventEnvelope]| (200, Value::Null);
    customers
        .execute(
            &bounced,
            &invalidate,
            &CommandMeta::new(Actor::system("test")),
            None,
            &no_answer,
        )
        .await
        .expect("invalidated");
    api.runtime.bus.settle().await.expect("settles");
    api.advance_minutes(24 * 60).await; // 2026-03-01T06:00Z

    let scheduled = post(&api, &local_ten("spring")).await;
    assert_eq!(scheduled.status, 201, "{:?}", scheduled.body);
    assert_eq!(scheduled.body["status"], "scheduled");
    // It starts when UTC+14 reaches 10:00 local.
    assert_eq!(scheduled.body["starts_at"], "2026-03-01T20:00:00Z");

    // Hour by hour: each recipient's 10:00 falls on the hour.
    let mut seen_at = BTreeMap::new();
    for _ in 0..34 {
        api.advance_minutes(60).await;
        for (to, at) in received(&api, "spring").await {
            seen_at.entry(to).or_insert((at, api.runtime.clock.now()));
        }
    }
    let expected = [
        (berlin, "2026-03-02T09:00:00Z"),
        (new_york, "2026-03-02T15:00:00Z"),
        (tokyo, "2026-03-02T01:00:00Z"),
    ];
    assert_eq!(seen_at.len(), 3, "{seen_at:?}");
    for (to, at) in expected {
        let (sent, first_seen) = seen_at[to];
        assert_eq!(sent, time(at), "{to}");
        assert_eq!(first_seen, time(at), "{to} received nothing before its 10:00");
    }

    let b = get(&api, "spring").await;
    assert_eq!(b["status"], "completed", "{b}");
    let stats = &b["stats"];
    assert_eq!(stats["audience_size"], 5, "{stats}");
    assert_eq!(stats["requested"], 5, "{stats}");
    assert_eq!(stats["sent"], 3, "{stats}");
    assert_eq!(stats["suppressed"], 2, "{stats}");
    assert_eq!(
        stats["suppressed_by_reason"],
        json!({ "no-consent": 1, "suppressed": 1 }),
        "{stats}"
    );
    // Berlin unsubscribes from the message (one click): counted for the broadcast.
    let token = api.unsubscribe_token(
        &berlin_id,
        crm_core::consent::Purpose::Marketing,
        crm_core::consent::Channel::Email,
        api.runtime.clock.now() + chrono::Duration::days(60),
    );
    let clicked = api
        .post_form(&format!("/u/{token}"), "List-Unsubscribe=One-Click")
        .await;
    assert_eq!(clicked.status, 200, "{:?}", clicked.body);
    let b = get(&api, "spring").await;
    assert_eq!(b["stats"]["unsubscribed"], 1, "{b}");
    // Berlin, New York, Tokyo: three due times (two recipients share Berlin's and Tokyo's).
    assert_eq!(b["progress"]["due_times"].as_array().map(Vec::len), Some(3), "{b}");
    let requested = api.events_of_type("MessageRequested").await;
    let ours: Vec<_> = requested
        .iter()
        .filter(|e| e.data["campaign_id"] == "broadcast-spring")
        .collect();
    assert_eq!(ours.len(), 5);
    assert!(ours.iter().all(|e| e.data["category"] == "marketing"));
    // Why was it sent? The request, the audience page that targeted the customer, the broadcast.
    let message_id = ours[0].data["message_id"].as_str().unwrap_or_default();
    let why = api.call("GET", &format!("/messages/{message_id}/explain"), None).await;
    assert_eq!(why.status, 200, "{:?}", why.body);
    assert_eq!(why.body["campaign"], "broadcast-spring");
    assert_eq!(why.body["customer_id"], json!(ours[0].customer_id));
    assert_eq!(
        chain_types(&why.body),
        [
            "MessageRequested",
            "BroadcastAudiencePage",
            "BroadcastStarted",
            "BroadcastScheduled"
        ]
    );

    // Re-running the send: every event delivered again to the campaign and
    // channel functions, and the step called again, sends nothing new.
    let events_before = api.event_count().await;
    api.runtime.bus.rewind("campaign", 0).await.expect("rewind");
    api.runtime.bus.rewind("channel", 0).await.expect("rewind");
    api.runtime.bus.settle().await.expect("settles");
    let service = BroadcastService::new(api.store.clone(), api.runtime.docs.clone(), api.runtime.clock.clone());
    assert_eq!(service.step("spring").await.expect("step"), StepOutcome::Nothing);
    // Scheduling it again (a client's retry) is the same broadcast: 200, nothing new.
    let again = post(&api, &local_ten("spring")).await;
    assert_eq!(
        (again.status.as_u16(), &again.body["status"]),
        (200, &json!("completed"))
    );
    api.advance_minutes(60).await;
    assert_eq!(received(&api, "spring").await.len(), 3);
    let again: Vec<_> = api
        .all_events()
        .await
        .into_iter()
        .skip(events_before)
        .filter(|e| e.stream_id.starts_with("broadcast-") || e.data["campaign_id"] == "broadcast-spring")
        .map(|e| format!("{} {}", e.stream_id, e.event_type))
        .collect();
    assert!(again.is_empty(), "the re-run wrote {again:?}");
    assert_eq!(get(&api, "spring").await["stats"]["requested"], 5);
}

#[tokio::test]
async fn pause_stops_further_pages_resume_finishes_and_cancel_ends() {
    let api = TestApi::at(time("2026-03-01T08:00:00Z"));
    // 150 recipients: two audience pages (of at most 90).
    for n in 0..150 {
        customer(&api, &format!("c{n:03}@example.com"), "UTC", true, &[SEGMENT]).await;
    }
    api.advance_minutes(24 * 60).await;
    let body = json!({
        "id": "flash",
        "template": "welcome",
        "channel": "email",
        "audience": { "segments": [SEGMENT] },
        "send": { "type": "now" },
        "rate_per_second": 1
    });
    let scheduled = post(&api, &body).await;
    assert_eq!(scheduled.status, 201, "{:?}", scheduled.body);
    // The first page went at once; the second waits for the rate (90 s at 1/s).
    let b = get(&api, "flash").await;
    let parked = api.runtime.bus.dead_letters().list().await.expect("dead letters");
    assert!(parked.is_empty(), "{parked:?}");
    assert_eq!(
        (
            b["progress"]["audience_size"].as_u64(),
            b["progress"]["requested"].as_u64()
        ),
        (Some(150), Some(90)),
        "{b}"
    );
    assert_eq!(received(&api, "flash").await.len(), 90);
    let paused = api.call("POST", "/broadcasts/flash/pause", None).await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(paused.body["status"], "paused");
    api.advance_minutes(30).await;
    let b = get(&api, "flash").await;
    assert_eq!(
        (b["status"].as_str(), b["progress"]["requested"].as_u64()),
        (Some("paused"), Some(90)),
        "{b}"
    );
    assert_eq!(received(&api, "flash").await.len(), 90, "no page while paused");
    let resumed = api.call("POST", "/broadcasts/flash/resume", None).await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    api.advance_minutes(5).await;
    let b = get(&api, "flash").await;
    assert_eq!(
        (b["status"].as_str(), b["progress"]["requested"].as_u64()),
        (Some("completed"), Some(150)),
        "{b}"
    );
    assert_eq!(received(&api, "flash").await.len(), 150);
    assert_eq!(api.call("POST", "/broadcasts/flash/resume", None).await.status, 409);

    // Cancelled after its first page: the rest is never sent.
    let mut body = body.clone();
    body["id"] = json!("clearance");
    assert_eq!(post(&api, &body).await.status, 201);
    let cancelled = api.call("POST", "/broadcasts/clearance/cancel", None).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.body);
    assert_eq!(cancelled.body["status"], "cancelled");
    api.advance_minutes(60).await;
    let b = get(&api, "clearance").await;
    assert_eq!(
        (b["status"].as_str(), b["progress"]["requested"].as_u64()),
        (Some("cancelled"), Some(90)),
        "{b}"
    );
    assert_eq!(api.call("POST", "/broadcasts/clearance/resume", None).await.status, 409);
    assert_eq!(api.call("POST", "/broadcasts/nope/pause", None).await.status, 404);
}

#[tokio::test]
async fn the_list_shows_every_broadcast_newest_first_page_by_page() {
    let api = TestApi::at(time("2026-03-01T08:00:00Z"));
    // Someone in the segment the broadcasts exclude (an unknown segment is refused).
    customer(&api, "a@example.com", "UTC", true, &[SEGMENT]).await;
    customer(&api, "x@example.com", "UTC", true, &["do-not-mail"]).await;
    let empty = api.call("GET", "/broadcasts", None).await;
    assert_eq!(empty.status, 200, "{:?}", empty.body);
    assert_eq!(empty.body, json!({ "items": [], "next_after": null }));
    // Three broadcasts an hour apart: one sent now, one cancelled, one waiting.
    let mut now = local_ten("first");
    now["send"] = json!({ "type": "now" });
    assert_eq!(post(&api, &now).await.status, 201);
    api.advance_minutes(60).await;
    assert_eq!(post(&api, &local_ten("second")).await.status, 201);
    assert_eq!(api.call("POST", "/broadcasts/second/cancel", None).await.status, 200);
    api.advance_minutes(60).await;
    assert_eq!(post(&api, &local_ten("third")).await.status, 201);

    let page = api.call("GET", "/broadcasts?limit=2", None).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    let ids: Vec<&str> = page.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids, ["third", "second"], "{:?}", page.body);
    let third = &page.body["items"][0];
    assert_eq!(third["status"], "scheduled", "{third}");
    assert_eq!(third["campaign_id"], "broadcast-third");
    assert_eq!(third["template"], "welcome");
    assert_eq!(third["channel"], "email");
    assert_eq!(third["send"]["type"], "local");
    assert_eq!(third["scheduled_at"], "2026-03-01T10:00:00Z");
    assert_eq!(page.body["items"][1]["status"], "cancelled");
    let after = page.body["next_after"].as_str().expect("a next page");
    let rest = api
        .call(
            "GET",
            &format!("/broadcasts?limit=2&after={}", after.replace('#', "%23")),
            None,
        )
        .await;
    assert_eq!(rest.status, 200, "{:?}", rest.body);
    let first = &rest.body["items"][0];
    assert_eq!(
        (rest.body["items"].as_array().map(Vec::len), &rest.body["next_after"]),
        (Some(1), &Value::Null),
        "{:?}",
        rest.body
    );
    assert_eq!(
        (first["id"].as_str(), first["status"].as_str()),
        (Some("first"), Some("completed")),
        "{first}"
    );
    assert_eq!(
        (first["audience_size"].as_u64(), first["requested"].as_u64()),
        (Some(1), Some(1)),
        "{first}"
    );
    // The same as GET /broadcasts/{id} says.
    let one = get(&api, "first").await;
    assert_eq!(one["progress"]["requested"], first["requested"]);

    for (query, field) in [
        ("after=nonsense", "after"),
        ("limit=0", "limit"),
        ("colour=blue", "colour"),
    ] {
        let a = api.call("GET", &format!("/broadcasts?{query}"), None).await;
        assert_eq!(
            (a.status.as_u16(), &a.body["field"]),
            (422, &json!(field)),
            "{query}: {:?}",
            a.body
        );
    }
}

#[tokio::test]
async fn a_customers_messages_list_newest_first_with_their_status() {
    let api = TestApi::at(time("2026-03-01T08:00:00Z"));
    let a = customer(&api, "a@example.com", "UTC", true, &[SEGMENT]).await;
    let b = customer(&api, "b@example.com", "UTC", false, &[SEGMENT]).await;
    api.advance_minutes(60).await;
    let mut news = local_ten("news");
    news["send"] = json!({ "type": "now" });
    news["audience"] = json!({ "segments": [SEGMENT] });
    assert_eq!(post(&api, &news).await.status, 201);

    let list = api.call("GET", &format!("/customers/{a}/messages"), None).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let newest = &list.body["items"][0];
    assert_eq!(
        newest["message_id"],
        crm_core::broadcast::message_id("news", &a),
        "{newest}"
    );
    assert_eq!(
        (
            &newest["status"],
            &newest["channel"],
            &newest["campaign_id"],
            &newest["template"]
        ),
        (
            &json!("sent"),
            &json!("email"),
            &json!("broadcast-news"),
            &json!("welcome")
        ),
        "{newest}"
    );
    assert_eq!(newest["category"], "marketing");
    // Nothing personal: ids, kinds and times only.
    assert!(!list.body.to_string().contains("example.com"), "{}", list.body);
    let b_list = api.call("GET", &format!("/customers/{b}/messages"), None).await;
    assert_eq!(b_list.status, 200, "{:?}", b_list.body);
    let refused = &b_list.body["items"][0];
    assert_eq!(
        (&refused["status"], &refused["reason"], &refused["campaign_id"]),
        (&json!("suppressed"), &json!("no-consent"), &json!("broadcast-news")),
        "{refused}"
    );

    // Page by page, the same messages in the same order, each once.
    let all: Vec<Value> = list.body["items"].as_array().expect("items").clone();
    assert!(
        all.len() >= 2,
        "the welcome journey's message and the broadcast's: {all:?}"
    );
    let times: Vec<&str> = all.iter().filter_map(|m| m["first_at"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(x) => format!("/customers/{a}/messages?limit=1&after={x}"),
            None => format!("/customers/{a}/messages?limit=1"),
        };
        let page = api.call("GET", &path, None).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        paged.extend(page.body["items"].as_array().expect("items").iter().cloned());
        match page.body["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, all);

    let unknown = "0194f7c2-0000-7000-8000-000000000000";
    assert_eq!(
        api.call("GET", &format!("/customers/{unknown}/messages"), None)
            .await
            .status,
        404
    );
    let bad = api
        .call("GET", &format!("/customers/{a}/messages?after=nope"), None)
        .await;
    assert_eq!(
        (bad.status.as_u16(), &bad.body["field"]),
        (422, &json!("after")),
        "{:?}",
        bad.body
    );
}

/// A broadcast now to the segment with a subject-line test (decision 0087).
fn with_subject_test(id: &str, test: Value) -> Value {
    json!({
        "id": id,
        "template": "welcome",
        "channel": "email",
        "audience": { "segments": [SEGMENT] },
        "send": { "type": "now" },
        "rate_per_second": 1000,
        "subject_test": test
    })
}

fn two_subjects() -> Value {
    json!({
        "variants": [
            { "id": "a", "subject": "Spring news" },
            { "id": "b", "subject": "{{ customer.first_name }}, spring news" }
        ],
        "test_percent": 50,
        "decide_after_minutes": 60,
        "metric": "opened"
    })
}

#[tokio::test]
async fn a_subject_test_sends_its_share_first_then_the_winner_by_opens_to_the_rest() {
    let api = TestApi::at(time("2026-02-28T06:00:00Z"));
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(customer(&api, &format!("c{i}@example.com"), "UTC", true, &[SEGMENT]).await);
    }
    api.advance_minutes(24 * 60).await; // the welcome series is behind us

    // Bad subject tests: 422 naming the field, nothing scheduled.
    let mut sms = with_subject_test("bad", two_subjects());
    sms["template"] = json!("checkout-abandonment-sms");
    sms["channel"] = json!("sms");
    let mut local = with_subject_test("bad", two_subjects());
    local["send"] = json!({ "type": "local", "date": "2026-03-02", "time": "10:00" });
    let mut cases = vec![(sms, "subject_test"), (local, "subject_test")];
    for (path, value, field) in [
        (
            "/variants",
            json!([{ "id": "a", "subject": "One" }]),
            "subject_test.variants",
        ),
        (
            "/variants",
            json!([{ "id": "a", "subject": "One" }, { "id": "a", "subject": "Two" }]),
            "subject_test.variants[1].id",
        ),
        (
            "/variants",
            json!([{ "id": "a", "subject": "One" }, { "id": "b", "subject": "{{ oops " }]),
            "subject_test.variants[1].subject",
        ),
        (
            "/variants",
            json!([{ "id": "a", "subject": "One" }, { "id": "b" }]),
            "subject_test.variants[1].subject",
        ),
        ("/test_percent", json!(0), "subject_test.test_percent"),
        ("/test_percent", json!(80), "subject_test.test_percent"),
        ("/decide_after_minutes", json!(0), "subject_test.decide_after_minutes"),
        ("/metric", json!("revenue"), "subject_test.metric"),
        ("/colour", json!("blue"), "subject_test.colour"),
    ] {
        let mut test = two_subjects();
        *test
            .pointer_mut("")
            .and_then(Value::as_object_mut)
            .expect("object")
            .entry(path.trim_start_matches('/'))
            .or_insert(Value::Null) = value;
        cases.push((with_subject_test("bad", test), field));
    }
    cases.push((with_subject_test("bad", json!("a/b")), "subject_test"));
    for (body, field) in cases {
        let a = post(&api, &body).await;
        assert_eq!(a.status, 422, "{field}: {:?}", a.body);
        assert_eq!(a.body["field"], field, "{:?}", a.body);
        assert_eq!(a.body["errors"][0]["path"], field, "{:?}", a.body);
    }
    assert!(api.events_of_type("BroadcastScheduled").await.is_empty());

    // Half the audience is in the test, each with their variant's subject.
    let scheduled = post(&api, &with_subject_test("spring", two_subjects())).await;
    assert_eq!(scheduled.status, 201, "{:?}", scheduled.body);
    api.runtime.bus.settle().await.expect("settles");
    let service = BroadcastService::new(api.store.clone(), api.runtime.docs.clone(), api.runtime.clock.clone());
    let state = service.load("spring").await.expect("load").expect("broadcast");
    let test = state.definition.subject_test.clone().expect("a subject test");
    let in_test: Vec<&String> = ids.iter().filter(|c| test.in_test("spring", c)).collect();
    assert!(
        (8..=32).contains(&in_test.len()),
        "{} of 40 in a 50 % test",
        in_test.len()
    );
    let variant_of = |c: &str| test.variant_for("spring", c).map(|v| v.id.clone()).expect("variant");
    let mails = |api: &TestApi| {
        let api = api.runtime.mail.clone();
        async move {
            api.list()
                .await
                .expect("mail sink")
                .into_iter()
                .filter(|m| m.message_id.starts_with("bc-spring-"))
                .collect::<Vec<_>>()
        }
    };
    let first = mails(&api).await;
    assert_eq!(first.len(), in_test.len(), "only the test share is sent first");
    let requests = api.events_of_type("MessageRequested").await;
    let request_of = |message_id: &str| {
        requests
            .iter()
            .find(|e| e.data["message_id"] == message_id)
            .cloned()
            .expect("the request of a sent message")
    };
    let mut b_messages = Vec::new();
    for m in &first {
        let request = request_of(&m.message_id);
        let customer = request.customer_id.clone().expect("customer");
        let variant = variant_of(&customer);
        assert_eq!(request.data["data"]["variant"], json!(variant));
        let expected = if variant == "a" {
            "Spring news"
        } else {
            "Grace, spring news"
        };
        assert_eq!(m.subject, expected, "{customer}");
        if variant == "b" {
            b_messages.push((m.message_id.clone(), customer));
        }
    }
    assert!(
        !b_messages.is_empty() && b_messages.len() < first.len(),
        "both variants sent"
    );

    // Nothing more before the hour is up.
    api.advance_minutes(59).await;
    assert_eq!(mails(&api).await.len(), in_test.len());
    let b = get(&api, "spring").await;
    assert_eq!(b["status"], "sending", "{b}");
    assert_eq!(b["stats"]["subject_test"]["winner"], Value::Null, "{b}");
    // Every b message is opened, no a message: b wins.
    for (message_id, customer) in &b_messages {
        let opened = crm_core::messaging::events::MessageEvent::EmailOpened {
            message_id: message_id.clone(),
            customer_id: customer.clone(),
        };
        crm_core::ports::append_unordered(
            api.store.as_ref(),
            &crm_core::messaging::events::message_stream(message_id),
            &[opened],
            &CommandMeta::new(Actor::system("ses")),
            api.runtime.clock.now(),
        )
        .await
        .expect("opened");
    }
    api.runtime.bus.settle().await.expect("settles");
    api.advance_minutes(2).await;

    let all = mails(&api).await;
    assert_eq!(all.len(), 40, "the rest got the winner");
    let mut recipients: Vec<_> = all.iter().map(|m| m.recipient.clone()).collect();
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 40, "never twice");
    for m in &all[in_test.len()..] {
        assert_eq!(m.subject, "Grace, spring news");
        let request = request_of_now(&api, &m.message_id).await;
        assert_eq!(request.data["data"].get("variant"), None, "the rest is not an arm");
        assert_eq!(request.data["data"]["winner"]["variant"], "b");
    }
    let b = get(&api, "spring").await;
    assert_eq!(b["status"], "completed", "{b}");
    let stats = &b["stats"]["subject_test"];
    assert_eq!(stats["winner"], "b", "{stats}");
    assert_eq!(stats["metric"], "opened");
    let arm = |id: &str| {
        stats["arms"]
            .as_array()
            .and_then(|arms| arms.iter().find(|a| a["variant"] == id))
            .cloned()
            .expect("arm")
    };
    let b_sent = b_messages.len() as u64;
    assert_eq!(arm("b")["sent"], b_sent, "{stats}");
    assert_eq!(arm("b")["opened"], b_sent, "{stats}");
    assert_eq!(arm("b")["rate"], 1.0, "{stats}");
    assert_eq!(arm("a")["sent"], in_test.len() as u64 - b_sent, "{stats}");
    assert_eq!(arm("a")["opened"], 0, "{stats}");
    assert_eq!(arm("a")["interval"]["low"], 0.0, "{stats}");
    assert!(arm("b")["interval"]["low"].as_f64().unwrap_or(0.0) > 0.0, "{stats}");
    let chosen = api.events_of_type("BroadcastWinnerChosen").await;
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0].data["variant"], "b");
    assert_eq!(chosen[0].data["arms"][0]["count"], 0, "{:?}", chosen[0].data);
    assert_eq!(b["stats"]["requested"], 40, "{b}");

    // Why this subject? A test message names its arm; one to the rest has the winner in its chain.
    let explain = |message_id: String| {
        let api = &api;
        async move {
            let why = api.call("GET", &format!("/messages/{message_id}/explain"), None).await;
            assert_eq!(why.status, 200, "{:?}", why.body);
            why.body
        }
    };
    let (tested, _) = &b_messages[0];
    let why = explain(tested.clone()).await;
    assert_eq!(
        why["variants"],
        json!([{ "experiment": "subject", "variant": "b" }]),
        "{why}"
    );
    let rest = &all[in_test.len()].message_id;
    let why = explain(rest.clone()).await;
    assert!(why["variants"].as_array().is_none_or(Vec::is_empty), "{why}");
    assert_eq!(
        chain_types(&why),
        [
            "MessageRequested",
            "BroadcastAudiencePage",
            "BroadcastWinnerChosen",
            "BroadcastStarted",
            "BroadcastScheduled"
        ],
        "{why}"
    );
}

/// The stored request of `message_id`, read now.
async fn request_of_now(api: &TestApi, message_id: &str) -> crm_core::event::EventEnvelope {
    api.events_of_type("MessageRequested")
        .await
        .into_iter()
        .find(|e| e.data["message_id"] == message_id)
        .expect("the request")
}
