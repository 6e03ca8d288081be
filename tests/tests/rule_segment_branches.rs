//! A journey branch on a segment defined by rules (issue 20 item 1,
//! decision 0086), end to end through the API on the virtual clock over
//! the local runtime: `PUT /segments/de-speakers` (profile locale equals
//! de-DE), `PUT /campaigns/segment-branch` whose branch sends members one
//! template and others another; a product view by a member and by a
//! non-member each bring the right mail to the sink, and the explain chain
//! shows the branch and the step it took. A non-member taken in by a new
//! version of the definition takes the members' way in their next journey.

use crm_tests::{registration, TestApi};
use serde_json::{json, Value};

const SEGMENT: &str = "de-speakers";
const CAMPAIGN: &str = "segment-branch";

async fn settle(api: &TestApi) {
    api.runtime.bus.settle().await.expect("settle");
}

async fn define_segment(api: &TestApi) {
    let definition = json!({
        "id": SEGMENT,
        "name": "German-speaking customers",
        "match": { "profile": "locale", "op": "equals", "value": "de-DE" },
    });
    let put = api
        .call("PUT", &format!("/segments/{SEGMENT}"), Some(&definition.to_string()))
        .await;
    assert_eq!(put.status, 201, "{:?}", put.body);
    settle(api).await;
}

async fn put_template(api: &TestApi, id: &str, subject: &str) {
    let body = json!({
        "channel": "email",
        "subject": subject,
        "mjml": format!("<mjml><mj-body><mj-section><mj-column><mj-text>{subject}</mj-text></mj-column></mj-section></mj-body></mjml>"),
        "text": subject,
        "sample": {},
    });
    let put = api
        .call("PUT", &format!("/templates/{id}"), Some(&body.to_string()))
        .await;
    assert_eq!(put.status, 201, "{:?}", put.body);
}

fn campaign(condition: Value) -> Value {
    json!({
        "id": CAMPAIGN,
        "name": "Segment branch",
        "trigger": { "pattern": { "source": ["crm.customer"], "detail-type": ["ProductViewed"] } },
        "entry": { "reentry": "every_time", "dedupe_key": "event.detail.data.product_id" },
        "steps": [
            { "id": "speaks-german", "type": "branch", "conditions": [condition],
              "then": "german", "else": "other" },
            { "id": "german", "type": "send", "channel": "email", "template": "angebot",
              "category": "transactional", "next": "exit" },
            { "id": "other", "type": "send", "channel": "email", "template": "offer",
              "category": "transactional" }
        ]
    })
}

async fn customer(api: &TestApi, email: &str, locale: &str) -> String {
    let mut body: Value = serde_json::from_str(&registration(email)).expect("json");
    body["locale"] = json!(locale);
    let created = api.call("POST", "/customers", Some(&body.to_string())).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    settle(api).await;
    created.body["id"].as_str().expect("id").to_string()
}

async fn view(api: &TestApi, customer_id: &str, product: &str) {
    let body = json!({ "type": "ProductViewed", "product_id": product, "name": product, "category": "lighting" });
    let a = api
        .call(
            "POST",
            &format!("/customers/{customer_id}/activity"),
            Some(&body.to_string()),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.body);
    settle(api).await;
    api.advance_minutes(1).await;
}

/// The campaign's mails in the sink: (recipient, subject), in send order.
async fn campaign_mail(api: &TestApi) -> Vec<(String, String)> {
    api.runtime
        .mail
        .list()
        .await
        .expect("mail sink")
        .into_iter()
        .filter(|m| m.subject == "Ein Angebot" || m.subject == "An offer")
        .map(|m| (m.recipient, m.subject))
        .collect()
}

async fn members(api: &TestApi) -> Vec<String> {
    let a = api.call("GET", &format!("/segments/{SEGMENT}/members"), None).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    a.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["customer_id"].as_str().map(str::to_string))
        .collect()
}

/// The step ids of the journey links of a message's explain chain, oldest first.
async fn explained_steps(api: &TestApi, customer_id: &str) -> Vec<String> {
    let requested: Vec<_> = api
        .events_of_type("MessageRequested")
        .await
        .into_iter()
        .filter(|e| e.data["campaign_id"] == CAMPAIGN && e.customer_id.as_deref() == Some(customer_id))
        .collect();
    let message_id = requested
        .last()
        .and_then(|e| e.data["message_id"].as_str())
        .expect("a message requested")
        .to_string();
    let why = api.call("GET", &format!("/messages/{message_id}/explain"), None).await;
    assert_eq!(why.status, 200, "{:?}", why.body);
    assert_eq!(why.body["customer_id"], customer_id);
    let mut steps: Vec<String> = why.body["chain"]
        .as_array()
        .expect("chain")
        .iter()
        .filter(|l| l["type"] == "JourneyStepEntered")
        .filter_map(|l| l["step_id"].as_str().map(str::to_string))
        .collect();
    steps.reverse();
    steps
}

#[tokio::test]
async fn a_branch_on_a_rule_segment_sends_members_and_others_their_own_template() {
    let api = TestApi::at(crm_tests::time("2026-11-23T09:00:00Z"));
    define_segment(&api).await;
    put_template(&api, "angebot", "Ein Angebot").await;
    put_template(&api, "offer", "An offer").await;
    let put = api
        .call(
            "PUT",
            &format!("/campaigns/{CAMPAIGN}"),
            Some(&campaign(json!({ "path": format!("segments.{SEGMENT}"), "op": "exists" })).to_string()),
        )
        .await;
    assert!(put.status.is_success(), "{:?}", put.body);

    let de = customer(&api, "de@example.com", "de-DE").await;
    let en = customer(&api, "en@example.com", "en-GB").await;
    assert_eq!(members(&api).await, vec![de.clone()], "the rule decides who is in");

    view(&api, &de, "lamp-1").await;
    view(&api, &en, "lamp-1").await;
    assert_eq!(
        campaign_mail(&api).await,
        vec![
            ("de@example.com".to_string(), "Ein Angebot".to_string()),
            ("en@example.com".to_string(), "An offer".to_string()),
        ]
    );
    assert_eq!(explained_steps(&api, &de).await, ["speaks-german", "german"]);
    assert_eq!(explained_steps(&api, &en).await, ["speaks-german", "other"]);

    // The segment's definition changes to take English speakers in too:
    // the branch of the non-member's next journey sees their membership.
    let widened = json!({
        "id": SEGMENT,
        "name": "German or English-speaking customers",
        "match": { "any": [
            { "profile": "locale", "op": "equals", "value": "de-DE" },
            { "profile": "locale", "op": "equals", "value": "en-GB" }
        ]},
    });
    let put = api
        .call("PUT", &format!("/segments/{SEGMENT}"), Some(&widened.to_string()))
        .await;
    assert_eq!(put.status, 201, "{:?}", put.body);
    settle(&api).await;
    assert!(members(&api).await.contains(&en), "now a member");
    view(&api, &en, "lamp-2").await;
    assert_eq!(
        campaign_mail(&api).await.last(),
        Some(&("en@example.com".to_string(), "Ein Angebot".to_string()))
    );
    assert_eq!(explained_steps(&api, &en).await, ["speaks-german", "german"]);
    assert!(api.runtime.bus.dead_letters().list().await.expect("letters").is_empty());
}

/// `not_exists` is the other way round; an operator other than exists and
/// not_exists, or a path that names no segment id, is a 422 naming the
/// condition's field, and nothing is stored.
#[tokio::test]
async fn segment_conditions_are_checked_when_a_campaign_is_put() {
    let api = TestApi::at(crm_tests::time("2026-11-23T09:00:00Z"));
    put_template(&api, "angebot", "Ein Angebot").await;
    put_template(&api, "offer", "An offer").await;
    for (condition, path) in [
        (
            json!({ "path": "segments.de-speakers", "op": "eq", "value": true }),
            "steps[0].conditions[0].op",
        ),
        (
            json!({ "path": "segments.De_Speakers", "op": "exists" }),
            "steps[0].conditions[0].path",
        ),
    ] {
        let put = api
            .call(
                "PUT",
                &format!("/campaigns/{CAMPAIGN}"),
                Some(&campaign(condition.clone()).to_string()),
            )
            .await;
        assert_eq!(put.status, 422, "{condition}: {:?}", put.body);
        let paths: Vec<&str> = put.body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e["path"].as_str())
            .collect();
        assert_eq!(paths, [path], "{condition}");
    }
    assert_eq!(
        api.call("GET", &format!("/campaigns/{CAMPAIGN}"), None).await.status,
        404
    );

    define_segment(&api).await;
    let put = api
        .call(
            "PUT",
            &format!("/campaigns/{CAMPAIGN}"),
            Some(&campaign(json!({ "path": format!("segments.{SEGMENT}"), "op": "not_exists" })).to_string()),
        )
        .await;
    assert!(put.status.is_success(), "{:?}", put.body);
    let de = customer(&api, "de@example.com", "de-DE").await;
    let en = customer(&api, "en@example.com", "en-GB").await;
    view(&api, &de, "lamp-1").await;
    view(&api, &en, "lamp-1").await;
    assert_eq!(
        campaign_mail(&api).await,
        vec![
            ("de@example.com".to_string(), "An offer".to_string()),
            ("en@example.com".to_string(), "Ein Angebot".to_string()),
        ]
    );
}
