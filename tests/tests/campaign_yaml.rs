//! Campaign definitions edited as YAML through the API (issue 21): `GET
//! /campaigns/{id}` with `Accept: application/yaml` answers the definition
//! as YAML, which `PUT` takes back as `application/yaml`; the loader's
//! errors keep their paths, a YAML syntax error names its line, and the
//! current definition put again publishes nothing.

use crm_tests::{Answer, TestApi, TOKEN};
use serde_json::Value;

const CAMPAIGN: &str = "/campaigns/abandoned-cart";

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

async fn get_yaml(api: &TestApi, accept: &str) -> Answer {
    api.call_with(
        "GET",
        CAMPAIGN,
        None,
        &[("authorization", &bearer()), ("accept", accept)],
    )
    .await
}

async fn put_as(api: &TestApi, content_type: &str, body: &str) -> Answer {
    api.call_with(
        "PUT",
        CAMPAIGN,
        Some(body),
        &[("authorization", &bearer()), ("content-type", content_type)],
    )
    .await
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The YAML text of an answer (the test client keeps a body that is not JSON as a string).
fn text(answer: &Answer) -> String {
    answer.body.as_str().expect("a YAML body, not JSON").to_string()
}

fn parsed(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).expect("the answer is YAML")
}

fn campaign_events(events: &[crm_core::event::EventEnvelope]) -> usize {
    events
        .iter()
        .filter(|e| e.stream_id == "campaign-abandoned-cart")
        .count()
}

fn assert_invalid(answer: &Answer, field: &str) {
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.body["field"], field, "{:?}", answer.body);
}

#[tokio::test]
async fn the_yaml_of_a_campaign_round_trips_and_publishes_only_a_change() {
    let api = TestApi::new();
    let json = api.call("GET", CAMPAIGN, None).await;
    assert_eq!(json.status, 200, "{:?}", json.body);
    assert_eq!(json.content_type(), "application/json");
    assert_eq!(header(&json, "vary"), "Accept");

    let got = get_yaml(&api, "application/yaml").await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(got.content_type(), "application/yaml");
    assert_eq!(header(&got, "vary"), "Accept");
    assert_eq!(header(&got, "x-campaign-version"), "1");
    assert_eq!(header(&got, "x-campaign-status"), "active");
    let yaml = text(&got);
    // The definition alone, its id and name first, as an editor reads it.
    assert!(
        yaml.starts_with("id: abandoned-cart\nname: Abandoned cart recovery\n"),
        "{yaml}"
    );
    assert_eq!(parsed(&yaml), json.body["definition"]);

    // The same YAML put back: nothing changed, nothing published.
    let before = api.event_count().await;
    let same = put_as(&api, "application/yaml", &yaml).await;
    assert_eq!(same.status, 200, "{:?}", same.body);
    assert_eq!(same.body["version"], 1);
    assert_eq!(
        api.event_count().await,
        before,
        "an unchanged definition writes nothing"
    );

    // Edited as text: a new version, read back as JSON and as YAML.
    assert!(yaml.contains("duration: 1h\n"), "{yaml}");
    let edited = yaml.replacen("duration: 1h\n", "duration: 2h\n", 1);
    let put = put_as(&api, "text/yaml; charset=utf-8", &edited).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    assert_eq!(put.content_type(), "application/json");
    assert_eq!(put.body["version"], 2);
    assert_eq!(put.body["definition"]["steps"][0]["duration"], "2h");
    let again = get_yaml(&api, "text/yaml").await;
    assert_eq!(header(&again, "x-campaign-version"), "2");
    assert_eq!(text(&again), edited, "the text written is the text read");
    let json = api.call("GET", CAMPAIGN, None).await;
    assert_eq!(json.body["version"], 2);
    assert_eq!(parsed(&edited), json.body["definition"]);

    // Put again unchanged: still version 2.
    let same = put_as(&api, "application/yaml", &edited).await;
    assert_eq!(same.status, 200, "{:?}", same.body);
    assert_eq!(same.body["version"], 2);

    // A paused campaign says so in its header.
    let paused = api.call("POST", &format!("{CAMPAIGN}/pause"), None).await;
    assert_eq!(paused.status, 200, "{:?}", paused.body);
    assert_eq!(
        header(&get_yaml(&api, "application/yaml").await, "x-campaign-status"),
        "paused"
    );
}

#[tokio::test]
async fn accept_picks_yaml_only_when_it_is_preferred() {
    let api = TestApi::new();
    for (accept, yaml) in [
        ("application/yaml", true),
        ("text/yaml", true),
        ("application/yaml, */*;q=0.1", true),
        ("application/json;q=0.5, application/yaml", true),
        ("application/json, application/yaml", false),
        ("application/yaml;q=0.5, application/json", false),
        ("application/yaml;q=0", false),
        ("*/*", false),
        ("text/html", false),
        ("application/json, application/problem+json", false),
    ] {
        let got = get_yaml(&api, accept).await;
        assert_eq!(got.status, 200, "{accept}: {:?}", got.body);
        let expected = if yaml { "application/yaml" } else { "application/json" };
        assert_eq!(got.content_type(), expected, "{accept}");
    }
    let missing = api
        .call_with(
            "GET",
            "/campaigns/no-such",
            None,
            &[("authorization", &bearer()), ("accept", "application/yaml")],
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.content_type(), "application/problem+json");
}

#[tokio::test]
async fn a_yaml_definition_the_loader_refuses_is_422_with_the_loader_paths_and_writes_nothing() {
    let api = TestApi::new();
    let yaml = text(&get_yaml(&api, "application/yaml").await);
    let before = api.all_events().await;
    // The third step points to a step that does not exist, and the first wait is no duration.
    let mut definition: Value = parsed(&yaml);
    definition["steps"][2]["next"] = "no-such-step".into();
    definition["steps"][0]["duration"] = "soon".into();
    let broken = serde_yaml::to_string(&definition).expect("YAML");
    let refused = put_as(&api, "application/yaml", &broken).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    let errors = refused.body["errors"].as_array().expect("errors");
    let paths: Vec<&str> = errors.iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(paths.contains(&"steps[2].next"), "{paths:?}");
    assert!(paths.contains(&"steps[0].duration"), "{paths:?}");
    assert_eq!(refused.body["field"], errors[0]["path"]);

    // The same definition as JSON is refused with the same errors.
    let as_json = api.call("PUT", CAMPAIGN, Some(&definition.to_string())).await;
    assert_eq!(as_json.status, 422, "{:?}", as_json.body);
    assert_eq!(as_json.body["errors"], refused.body["errors"]);

    // YAML that is no definition at all: the loader says so.
    let scalar = put_as(&api, "application/yaml", "just some words\n").await;
    assert_eq!(scalar.status, 422, "{:?}", scalar.body);

    assert_eq!(
        campaign_events(&api.all_events().await),
        campaign_events(&before),
        "nothing written"
    );
    assert_eq!(api.event_count().await, before.len());
}

#[tokio::test]
async fn a_yaml_syntax_error_is_422_naming_its_line() {
    let api = TestApi::new();
    let before = api.event_count().await;

    // Line 3: a second `:` in a plain value. The document is parsed before
    // any field is read, so the error names the body and the line.
    let broken = "id: abandoned-cart\nname: Abandoned cart recovery\ndescription: one: two\nsteps: []\n";
    let refused = put_as(&api, "application/yaml", broken).await;
    assert_invalid(&refused, "body");
    let detail = refused.body["detail"].as_str().expect("detail");
    assert!(detail.contains("at line 3 column 17"), "{detail}");
    assert_eq!(refused.body["errors"][0]["path"], "body");
    assert_eq!(refused.body["errors"][0]["message"], detail);

    // An unclosed flow sequence on line 2, found at the end: the body as a whole.
    let unclosed = "id: abandoned-cart\nsteps: [\n";
    let refused = put_as(&api, "application/yaml", unclosed).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    let detail = refused.body["detail"].as_str().expect("detail");
    assert!(detail.contains("line "), "{detail}");

    // Well-formed YAML no JSON value holds (a tag): its path, and its line.
    let tagged = "id: abandoned-cart\nsteps:\n  - id: wait\n    duration: !seconds 30\n";
    let refused = put_as(&api, "application/yaml", tagged).await;
    assert_invalid(&refused, "steps[0].duration");
    let detail = refused.body["detail"].as_str().expect("detail");
    assert!(detail.contains("line 4"), "{detail}");

    // Two documents: YAML a definition cannot be.
    let two = "id: abandoned-cart\n---\nid: other\n";
    assert_invalid(&put_as(&api, "application/yaml", two).await, "body");

    // Aliases nested to expand into billions of values: refused, not expanded.
    let mut laughs = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
        let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
        laughs.push_str(&format!(
            "{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    let refused = put_as(&api, "application/yaml", &laughs).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    let detail = refused.body["detail"].as_str().expect("detail");
    assert!(detail.contains("repetition limit exceeded"), "{detail}");

    // An empty body is malformed, as for JSON.
    let empty = put_as(&api, "application/yaml", "  \n").await;
    assert_eq!(empty.status, 400, "{:?}", empty.body);
    assert_eq!(api.event_count().await, before, "nothing written");
}

#[tokio::test]
async fn another_content_type_is_415_and_json_stays_the_default() {
    let api = TestApi::new();
    let json = api.call("GET", CAMPAIGN, None).await;
    let definition = json.body["definition"].to_string();
    let before = api.event_count().await;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let refused = put_as(&api, content_type, &definition).await;
        assert_eq!(refused.status, 415, "{content_type}: {:?}", refused.body);
        assert_eq!(refused.content_type(), "application/problem+json");
        assert_eq!(refused.body["field"], "Content-Type");
    }
    assert_eq!(api.event_count().await, before, "nothing written");
    // JSON with parameters.
    let put = put_as(&api, "application/json; charset=utf-8", &definition).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
}
