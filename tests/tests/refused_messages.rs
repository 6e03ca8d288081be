//! The refused-messages log (issue 17 item 4, decision 0053), end to end
//! over the local runtime: a message refused inside a 200 batch answer, or
//! by a single route, is listed by `GET /sources/{source}/refused` and
//! `crm-local refused`, newest first and paged, with the field and the
//! reason, and without the personal values it was sent with.

use crm_tests::TestApi;
use serde_json::{json, Value};

const EMAIL: &str = "refused.shopper@shop.example";

async fn refused(api: &TestApi, query: &str) -> Value {
    let answer = api.call("GET", &format!("/sources/local/refused{query}"), None).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    answer.body
}

#[tokio::test]
async fn a_message_refused_in_a_batch_or_alone_is_listed_without_personal_data() {
    let api = TestApi::new();
    assert_eq!(
        refused(&api, "").await,
        json!({ "source": "local", "items": [], "next_after": null })
    );

    // One good message and one refused inside a batch: the answer is 200.
    let batch = json!({ "batch": [
        { "type": "page", "messageId": "ok-1", "anonymousId": "device-refused-1", "name": "Home",
          "properties": { "url": "https://shop.example/" } },
        { "type": "track", "messageId": "bad-1", "event": "Product Viewed",
          "userId": EMAIL, "anonymousId": "device-refused-1", "traits": { "email": EMAIL, "first_name": "Refusa" },
          "context": { "ip": "198.51.100.23", "userAgent": "Mozilla/5.0 (RefusedTest)" },
          "properties": { "product_id": "sku-mug", "price": "a lot", "note": "mail me at refused.shopper@shop.example" } },
    ] });
    let answer = api.segment("batch", &batch).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["rejected"], 1, "{:?}", answer.body);

    // A single route's refusal (no identifier at all).
    let alone = api
        .segment("track", &json!({ "messageId": "bad-2", "event": "Product Viewed" }))
        .await;
    assert_eq!(alone.status, 422, "{:?}", alone.body);

    let page = refused(&api, "").await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0]["message_id"], "bad-2", "newest first: {page}");
    assert_eq!(items[0]["type"], "track", "the route's call");
    assert_eq!(items[0]["field"], "userId");
    let in_batch = &items[1];
    assert_eq!(in_batch["message_id"], "bad-1");
    assert_eq!(in_batch["source"], "local");
    assert_eq!(in_batch["event"], "Product Viewed");
    assert_eq!(in_batch["field"], "properties.price", "{in_batch}");
    assert!(in_batch["reason"].as_str().is_some_and(|r| !r.is_empty()));
    let message = &in_batch["message"];
    assert_eq!(
        message["properties"]["price"], "a lot",
        "what was refused stays readable"
    );
    assert_eq!(message["properties"]["note"], "mail me at [email]");
    assert!(
        message["userId"].as_str().is_some_and(|u| u.starts_with("hmac:")),
        "{message}"
    );
    assert!(message["traits"]["email"]
        .as_str()
        .is_some_and(|e| e.starts_with("hmac:")));
    assert_eq!(message["traits"]["first_name"], "[removed]");
    assert_eq!(message["context"]["ip"], "[removed]");
    let text = page.to_string();
    for personal in [
        "refused.shopper",
        "Refusa",
        "198.51.100",
        "RefusedTest",
        "device-refused",
    ] {
        assert!(!text.contains(personal), "{personal} is listed: {text}");
    }
    let kept_for = chrono::DateTime::parse_from_rfc3339(in_batch["expires_at"].as_str().expect("expires_at"))
        .expect("a time")
        - chrono::DateTime::parse_from_rfc3339(in_batch["refused_at"].as_str().expect("refused_at")).expect("a time");
    assert_eq!(kept_for, chrono::Duration::days(7));

    // Paged: one at a time, then the older one, then nothing more.
    let first = refused(&api, "?limit=1").await;
    assert_eq!(first["items"][0]["message_id"], "bad-2");
    let after = first["next_after"].as_str().expect("a next page").to_string();
    let second = refused(&api, &format!("?limit=1&after={}", after.replace('#', "%23"))).await;
    assert_eq!(second["items"][0]["message_id"], "bad-1");
    assert_eq!(second["next_after"], Value::Null);

    // Another source's log is its own; bad paging is refused, naming the parameter.
    let web = api.call("GET", "/sources/local-web/refused", None).await;
    assert_eq!(web.status, 200, "{:?}", web.body);
    assert_eq!(web.body["items"], json!([]), "{:?}", web.body);
    // A name no source has is not an empty log: 404, naming the source.
    let unknown = api.call("GET", "/sources/no-such-source/refused", None).await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    assert_eq!(unknown.content_type(), "application/problem+json");
    assert_eq!(unknown.body["field"], "source", "{:?}", unknown.body);
    assert_eq!(unknown.body["code"], "not_found", "Segment's code");
    assert!(
        unknown.body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("source: ") && m.contains("no-such-source")),
        "{:?}",
        unknown.body
    );
    let bad = api.call("GET", "/sources/local/refused?limit=0", None).await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    let bad = api.call("GET", "/sources/local/refused?after=a%20b", None).await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);

    // The CLI reads the same log from the data directory.
    let data_dir = api.db_path().parent().expect("data dir").to_path_buf();
    let printed = crm_local::cli::refusals::page_json(&data_dir, "local", None, 50, chrono::Utc::now())
        .await
        .expect("the CLI's page");
    let printed: Value = serde_json::from_str(&printed).expect("JSON");
    assert_eq!(printed, page, "the CLI prints what the API answers");
    let empty = crm_local::cli::refusals::page_json(&data_dir, "local-web", None, 50, chrono::Utc::now())
        .await
        .expect("a source with nothing refused");
    let empty: Value = serde_json::from_str(&empty).expect("JSON");
    assert_eq!(empty["items"], json!([]));
    let unknown = crm_local::cli::refusals::page_json(&data_dir, "no-such-source", None, 50, chrono::Utc::now())
        .await
        .expect_err("a name no source has");
    assert!(unknown.to_string().contains("no-such-source"), "{unknown}");
}
