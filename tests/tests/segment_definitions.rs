//! Segments defined by rules, stored as events and served by the API
//! (issue 20 item 1, decision 0082): `PUT /segments/{id}` stores a version
//! (201) or nothing when unchanged (200), refuses an invalid definition
//! naming every path (422), a cycle through `in_segment` or a computed id
//! (409); `GET /segments/{id}` and `GET /segments` show it with its version
//! and size; `POST /segments/{id}/preview` counts and samples a draft
//! without saving it. Through the local runtime over real SQLite.

use crm_api::Scope;
use crm_tests::{registration, Answer, TestApi, TOKEN};
use serde_json::{json, Value};

async fn put(api: &TestApi, id: &str, body: &Value) -> Answer {
    api.call("PUT", &format!("/segments/{id}"), Some(&body.to_string()))
        .await
}

fn german(id: &str) -> Value {
    json!({
        "id": id,
        "name": "German-speaking customers",
        "match": { "profile": "locale", "op": "equals", "value": "de-DE" },
    })
}

/// Registers a customer with `locale`; returns their id.
async fn customer(api: &TestApi, email: &str, locale: &str) -> String {
    let mut body: Value = serde_json::from_str(&registration(email)).expect("json");
    body["locale"] = json!(locale);
    let created = api.call("POST", "/customers", Some(&body.to_string())).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

fn paths(answer: &Answer) -> Vec<String> {
    answer.body["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["path"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn a_definition_is_put_read_back_and_listed_and_the_same_again_writes_nothing() {
    let api = TestApi::new();
    let created = put(&api, "german", &german("german")).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["kind"], "rules");
    assert_eq!(created.body["version"], 1);
    assert_eq!(created.body["changed"], true);
    assert_eq!(created.body["definition"], german("german"));
    assert_eq!(api.events_of_type("SegmentDefined").await.len(), 1);
    assert_eq!(api.events_of_type("SegmentRegistered").await.len(), 1);

    let got = api.call("GET", "/segments/german", None).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.body["kind"], "rules");
    assert_eq!(got.body["version"], 1);
    assert_eq!(got.body["name"], "German-speaking customers");
    assert_eq!(got.body["definition"], german("german"));
    assert_eq!(got.body["size"], 0);
    assert!(got.body["defined_at"].is_string(), "{:?}", got.body);

    // The same definition again: 200, unchanged, nothing appended.
    let events_before = api.event_count().await;
    let again = put(&api, "german", &german("german")).await;
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(
        (again.body["version"].clone(), again.body["changed"].clone()),
        (json!(1), json!(false))
    );
    assert_eq!(api.event_count().await, events_before);

    // A change is version 2.
    let mut renamed = german("german");
    renamed["name"] = json!("Deutschsprachige");
    let v2 = put(&api, "german", &renamed).await;
    assert_eq!(v2.status, 201, "{:?}", v2.body);
    assert_eq!(v2.body["version"], 2);
    assert_eq!(api.events_of_type("SegmentDefined").await.len(), 2);
    assert_eq!(api.events_of_type("SegmentRegistered").await.len(), 1);

    let list = api.call("GET", "/segments", None).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let items = list.body["items"].as_array().expect("items");
    let line = items.iter().find(|s| s["id"] == "german").expect("listed");
    assert_eq!(line["kind"], "rules");
    assert_eq!(line["version"], 2);
    assert_eq!(line["name"], "Deutschsprachige");
    assert_eq!(line["members"], 0);
    let buyers = items.iter().find(|s| s["id"] == "buyers").expect("buyers listed");
    assert_eq!(buyers["kind"], "computed");

    // Its members route knows it (no members yet).
    let members = api.call("GET", "/segments/german/members", None).await;
    assert_eq!(members.status, 200, "{:?}", members.body);
    assert_eq!(members.body["items"], json!([]));
}

#[tokio::test]
async fn a_fixed_segment_reads_as_computed_without_a_definition_and_an_unknown_one_is_404() {
    let api = TestApi::new();
    let id = api.register("buyer@example.com").await;
    api.paid_order(&id, 2500, "Lamp", "lighting").await;
    let buyers = api.call("GET", "/segments/buyers", None).await;
    assert_eq!(buyers.status, 200, "{:?}", buyers.body);
    assert_eq!(buyers.body["kind"], "computed");
    assert_eq!(buyers.body["definition"], Value::Null);
    assert_eq!(buyers.body["size"], 1);
    assert!(buyers.body["rule"].is_string());

    let unknown = api.call("GET", "/segments/nobody-defined-this", None).await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    assert_eq!(unknown.content_type(), "application/problem+json");
}

#[tokio::test]
async fn an_invalid_definition_is_422_naming_every_path_and_writes_nothing() {
    let api = TestApi::new();
    let events_before = api.event_count().await;
    let bad = json!({
        "id": "bad",
        "name": "Bad",
        "match": { "all": [
            { "performed": "ProductViewed", "at_least": 0, "within_days": 400 },
            { "metric": "orders", "op": "sometimes", "value": 1 },
            { "in_segment": "no-such-segment" },
        ] },
    });
    let refused = put(&api, "bad", &bad).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.content_type(), "application/problem+json");
    let found = paths(&refused);
    for expected in ["match.all[0].within_days", "match.all[0].at_least"] {
        assert!(found.iter().any(|p| p == expected), "{expected} in {found:?}");
    }
    assert!(found.iter().any(|p| p.starts_with("match.all[1]")), "{found:?}");
    assert_eq!(refused.body["field"], json!(found[0]));

    // Only the unknown segment left: its path.
    let unknown = json!({ "id": "bad", "name": "Bad", "match": { "all": [
        { "metric": "orders", "op": "gte", "value": 1 },
        { "in_segment": "no-such-segment" },
    ] } });
    let refused = put(&api, "bad", &unknown).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(paths(&refused), ["match.all[1].in_segment"]);

    // The body's id must be the path's.
    let other = put(&api, "bad", &german("german")).await;
    assert_eq!(other.status, 422, "{:?}", other.body);
    assert_eq!(paths(&other), ["id"]);

    // Not JSON at all: 400.
    let broken = api.call("PUT", "/segments/bad", Some("{ not json")).await;
    assert_eq!(broken.status, 400, "{:?}", broken.body);

    assert_eq!(api.event_count().await, events_before, "nothing written");
    assert_eq!(api.call("GET", "/segments/bad", None).await.status, 404);
}

#[tokio::test]
async fn a_cycle_through_in_segment_and_a_computed_id_are_409() {
    let api = TestApi::new();
    let a = json!({ "id": "a", "name": "A", "match": { "profile": "locale", "op": "exists" } });
    assert_eq!(put(&api, "a", &a).await.status, 201);
    let b = json!({ "id": "b", "name": "B", "match": { "in_segment": "a" } });
    assert_eq!(put(&api, "b", &b).await.status, 201);
    let events_before = api.event_count().await;

    // a -> b closes a -> b -> a.
    let closing = json!({ "id": "a", "name": "A", "match": { "all": [
        { "profile": "locale", "op": "exists" },
        { "in_segment": "b" },
    ] } });
    let cycle = put(&api, "a", &closing).await;
    assert_eq!(cycle.status, 409, "{:?}", cycle.body);
    assert_eq!(cycle.content_type(), "application/problem+json");
    assert_eq!(cycle.body["field"], "match.all[1].in_segment");
    assert_eq!(cycle.body["errors"][0]["cycle"], json!(["a", "b", "a"]));
    assert!(
        cycle.body["detail"].as_str().is_some_and(|d| d.contains("a -> b -> a")),
        "{:?}",
        cycle.body
    );

    let computed = put(&api, "buyers", &german("buyers")).await;
    assert_eq!(computed.status, 409, "{:?}", computed.body);
    assert_eq!(computed.body["field"], "id");

    assert_eq!(api.event_count().await, events_before, "nothing written");
    assert_eq!(api.call("GET", "/segments/a", None).await.body["version"], 1);
}

#[tokio::test]
async fn a_preview_counts_and_samples_the_customers_a_draft_matches_without_saving_it() {
    let api = TestApi::new();
    let mut german_ids = Vec::new();
    for n in 0..3 {
        german_ids.push(customer(&api, &format!("de{n}@example.com"), "de-DE").await);
    }
    for n in 0..2 {
        customer(&api, &format!("en{n}@example.com"), "en-US").await;
    }
    german_ids.sort();
    let events_before = api.event_count().await;

    let answer = api
        .call(
            "POST",
            "/segments/german/preview?sample=2",
            Some(&german("german").to_string()),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["segment"], "german");
    assert_eq!(answer.body["count"], 3);
    assert_eq!(answer.body["evaluated"], 5);
    assert_eq!(answer.body["sample"], json!(german_ids[..2]));

    // Nothing is stored: the segment stays unknown.
    assert_eq!(api.event_count().await, events_before);
    assert_eq!(api.call("GET", "/segments/german", None).await.status, 404);

    // A draft is checked as a put is; a bad sample size names it.
    let bad = json!({ "id": "german", "name": "G", "match": { "profile": "locale", "op": "within_days" } });
    let refused = api
        .call("POST", "/segments/german/preview", Some(&bad.to_string()))
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(paths(&refused), ["match.value"]);
    let too_many = api
        .call(
            "POST",
            "/segments/german/preview?sample=1000",
            Some(&german("german").to_string()),
        )
        .await;
    assert_eq!(too_many.status, 422, "{:?}", too_many.body);
    assert_eq!(too_many.body["field"], "sample");
}

#[tokio::test]
async fn a_read_only_token_reads_segments_but_cannot_put_or_preview() {
    let api = TestApi::new();
    assert_eq!(put(&api, "german", &german("german")).await.status, 201);
    let dir = tempfile::tempdir().expect("temp dir");
    let read_only =
        crm_local::runtime::serve::token::mint(dir.path(), Some(TOKEN), &[Scope::Read.as_str().to_string()])
            .expect("minted");
    let bearer = format!("Bearer {read_only}");
    let headers = [("authorization", bearer.as_str())];

    let got = api.call_with("GET", "/segments/german", None, &headers).await;
    assert_eq!(got.status, 200, "{:?}", got.body);

    let mut changed = german("german");
    changed["name"] = json!("Changed");
    for (method, path) in [("PUT", "/segments/german"), ("POST", "/segments/german/preview")] {
        let refused = api.call_with(method, path, Some(&changed.to_string()), &headers).await;
        assert_eq!(refused.status, 403, "{method} {path}: {:?}", refused.body);
        assert_eq!(refused.body["required_scope"], "crm/admin");
    }
    assert_eq!(api.call("GET", "/segments/german", None).await.body["version"], 1);
}

#[tokio::test]
async fn a_manual_segment_a_campaign_names_can_be_read_but_not_redefined() {
    let api = TestApi::new();
    // The shipped welcome campaign adds customers to `welcomed` (update_segment).
    let reads = json!({ "id": "welcomed-germans", "name": "Welcomed Germans", "match": { "all": [
        { "in_segment": "welcomed" },
        { "profile": "locale", "op": "equals", "value": "de-DE" },
    ] } });
    let created = put(&api, "welcomed-germans", &reads).await;
    assert_eq!(created.status, 201, "{:?}", created.body);

    let taken = put(&api, "welcomed", &german("welcomed")).await;
    assert_eq!(taken.status, 409, "{:?}", taken.body);
    assert_eq!(taken.body["field"], "id");
    assert!(
        taken.body["detail"].as_str().is_some_and(|d| d.contains("manual")),
        "{:?}",
        taken.body
    );
    assert_eq!(api.events_of_type("SegmentDefined").await.len(), 1);
}

#[tokio::test]
async fn the_size_and_members_of_a_defined_segment_follow_its_definition() {
    let api = TestApi::new();
    let mut germans = Vec::new();
    for n in 0..2 {
        germans.push(customer(&api, &format!("de{n}@example.com"), "de-DE").await);
    }
    customer(&api, "en@example.com", "en-US").await;
    germans.sort();
    assert_eq!(put(&api, "german", &german("german")).await.status, 201);

    // Defining it evaluated every active customer (decision 0083).
    let got = api.call("GET", "/segments/german", None).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.body["size"], 2, "{:?}", got.body);
    let members = api.call("GET", "/segments/german/members", None).await;
    let ids: Vec<&str> = members.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["customer_id"].as_str())
        .collect();
    assert_eq!(ids, germans);
    let list = api.call("GET", "/segments", None).await;
    let lines: Vec<&Value> = list.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|s| s["id"] == "german")
        .collect();
    assert_eq!(lines.len(), 1, "listed once, as rules: {lines:?}");
    assert_eq!(
        (lines[0]["kind"].clone(), lines[0]["members"].clone()),
        (json!("rules"), json!(2))
    );
}
