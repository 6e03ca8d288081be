//! `POST /templates/{id}/preview`: every shipped template renders with its
//! sample data; changes to the data are merged in; values are HTML-escaped
//! in the HTML part only; unknown templates and missing variables are
//! problems naming what is wrong. Templates as data (decision 0077): the
//! list, versions put through the API and checked by rendering their
//! sample, sent by journeys, and new ids named by campaigns.

use crm_core::journey::templates::KNOWN_TEMPLATES;
use crm_tests::TestApi;
use serde_json::json;

#[tokio::test]
async fn every_template_previews_with_its_sample_data() {
    let api = TestApi::new();
    for id in KNOWN_TEMPLATES {
        let answer = api.call("POST", &format!("/templates/{id}/preview"), None).await;
        assert_eq!(answer.status, 200, "{id}: {:?}", answer.body);
        assert_eq!(answer.body["template"], *id);
        assert!(
            answer.body["text"]
                .as_str()
                .is_some_and(|t| t.contains("Ada") || t.contains("ord_")),
            "{id}: {:?}",
            answer.body["text"]
        );
        match answer.body["channel"].as_str() {
            Some("email") => {
                assert!(answer.body["subject"].is_string(), "{id}");
                assert!(
                    answer.body["html"].as_str().is_some_and(|h| h.contains("<html")),
                    "{id}"
                );
            }
            Some("sms") => assert_eq!(
                (&answer.body["subject"], &answer.body["html"]),
                (&json!(null), &json!(null))
            ),
            Some("push") => {
                assert!(answer.body["subject"].is_string(), "{id}");
                assert_eq!(answer.body["html"], json!(null));
            }
            other => panic!("{id}: channel {other:?}"),
        }
    }
}

#[tokio::test]
async fn data_is_merged_over_the_sample() {
    let api = TestApi::new();
    let body = json!({ "data": { "customer": { "first_name": "Grace" }, "data": { "order_id": "ord-42" } } });
    let answer = api
        .call("POST", "/templates/order-confirmation/preview", Some(&body.to_string()))
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["channel"], "email");
    assert_eq!(answer.body["subject"], "Order ord-42 confirmed: thank you, Grace!");
    let text = answer.body["text"].as_str().expect("text");
    // The sample's items are still there.
    assert!(text.contains("Merino crew-neck sweater"), "{text}");
    assert!(text.contains("Total: €108.00"), "{text}");
    // An empty body and an empty object render the sample as it is.
    let plain = api.call("POST", "/templates/welcome/preview", Some("{}")).await;
    assert_eq!(plain.status, 200, "{:?}", plain.body);
    assert_eq!(plain.body["subject"], "Welcome, Ada!");
}

#[tokio::test]
async fn html_hostile_values_are_escaped_in_html_only() {
    let api = TestApi::new();
    let hostile = "<script>alert(1)</script> & \"quoted\"";
    let body = json!({ "data": { "customer": { "first_name": hostile } } });
    let answer = api
        .call(
            "POST",
            "/templates/abandoned-cart-reminder/preview",
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let html = answer.body["html"].as_str().expect("html");
    assert!(!html.contains("<script>"), "the script reached the HTML");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;"));
    let text = answer.body["text"].as_str().expect("text");
    assert!(text.contains(hostile), "{text}");
    let subject = answer.body["subject"].as_str().expect("subject");
    assert!(subject.starts_with(hostile), "{subject}");
}

#[tokio::test]
async fn unknown_template_is_404() {
    let api = TestApi::new();
    let answer = api.call("POST", "/templates/no-such-template/preview", None).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.body["type"], "https://crm.dev/problems/not-found");
}

#[tokio::test]
async fn a_missing_variable_is_422_naming_it() {
    let api = TestApi::new();
    // `null` removes a variable from the sample (JSON Merge Patch).
    let body = json!({ "data": { "customer": { "first_name": null } } });
    let answer = api
        .call("POST", "/templates/welcome/preview", Some(&body.to_string()))
        .await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.body["field"], "data.customer.first_name");
    assert!(answer.body["detail"]
        .as_str()
        .is_some_and(|d| d.contains("customer.first_name")));

    let body = json!({ "data": { "data": { "cart_id": null } } });
    let answer = api
        .call(
            "POST",
            "/templates/checkout-abandonment-sms/preview",
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.body["field"], "data.data.cart_id");
}

#[tokio::test]
async fn bad_bodies_are_refused() {
    let api = TestApi::new();
    let broken = api.call("POST", "/templates/welcome/preview", Some("{")).await;
    assert_eq!(broken.status, 400);
    let unknown = api
        .call("POST", "/templates/welcome/preview", Some(r#"{"vars": {}}"#))
        .await;
    assert_eq!(
        (unknown.status.as_u16(), unknown.body["field"].as_str()),
        (422, Some("vars"))
    );
    let not_object = api
        .call("POST", "/templates/welcome/preview", Some(r#"{"data": [1]}"#))
        .await;
    assert_eq!(
        (not_object.status.as_u16(), not_object.body["field"].as_str()),
        (422, Some("data"))
    );
    let wrong_type = json!({ "data": { "data": { "amount_minor": "lots" } } });
    let answer = api
        .call(
            "POST",
            "/templates/payment-failed/preview",
            Some(&wrong_type.to_string()),
        )
        .await;
    assert_eq!(
        (answer.status.as_u16(), answer.body["field"].as_str()),
        (422, Some("data"))
    );
    let unauthenticated = api.call_with("POST", "/templates/welcome/preview", None, &[]).await;
    assert_eq!(unauthenticated.status, 401);
}

// ---------------------------------------------------------------------------
// Templates as data (issue 19 item 9, decision 0077).

fn start() -> chrono::DateTime<chrono::Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

/// The body of a put: the template's current parts with `changes` over them
/// (its sample is kept by leaving it out).
async fn edited(api: &TestApi, id: &str, changes: serde_json::Value) -> serde_json::Value {
    let current = api.call("GET", &format!("/templates/{id}"), None).await;
    assert_eq!(current.status, 200, "{:?}", current.body);
    let mut body = json!({
        "channel": current.body["channel"],
        "subject": current.body["subject"],
        "mjml": current.body["mjml"],
        "text": current.body["text"],
    });
    if let (Some(body), Some(changes)) = (body.as_object_mut(), changes.as_object()) {
        for (k, v) in changes {
            body.insert(k.clone(), v.clone());
        }
    }
    body
}

#[tokio::test]
async fn the_shipped_templates_are_listed_at_version_1_after_start() {
    let api = TestApi::new();
    let list = api.call("GET", "/templates", None).await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let items = list.body["items"].as_array().expect("items");
    let ids: Vec<&str> = items.iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids, KNOWN_TEMPLATES.to_vec());
    for t in items {
        assert_eq!(
            (&t["version"], &t["source"], &t["updated_at"]),
            (&json!(1), &json!("shipped"), &json!(null)),
            "{t}"
        );
    }
    let sms = items
        .iter()
        .find(|t| t["id"] == "checkout-abandonment-sms")
        .expect("listed");
    assert_eq!(sms["channel"], "sms");
    // Nothing was written to list them.
    assert!(api.events_of_type("TemplatePublished").await.is_empty());
    let welcome = api.call("GET", "/templates/welcome", None).await;
    assert_eq!(welcome.status, 200, "{:?}", welcome.body);
    assert_eq!(welcome.body["version"], 1);
    assert_eq!(welcome.body["versions"], json!([1]));
    assert!(welcome.body["mjml"].as_str().is_some_and(|m| m.contains("<mjml")));
    assert_eq!(welcome.body["sample"]["customer"]["first_name"], "Ada");
    let missing = api.call("GET", "/templates/no-such-template", None).await;
    assert_eq!(missing.status, 404);
    let no_version = api.call("GET", "/templates/welcome?version=2", None).await;
    assert_eq!(
        (no_version.status.as_u16(), no_version.body["field"].as_str()),
        (404, Some("version"))
    );
    let bad_version = api.call("GET", "/templates/welcome?version=x", None).await;
    assert_eq!(
        (bad_version.status.as_u16(), bad_version.body["field"].as_str()),
        (422, Some("version"))
    );
}

#[tokio::test]
async fn a_new_version_s_subject_is_the_subject_of_the_next_mail() {
    let api = TestApi::at(start());
    let body = edited(
        &api,
        "email-verification",
        json!({ "subject": "Please confirm your address, {{ customer.first_name }}" }),
    )
    .await;
    let put = api
        .call("PUT", "/templates/email-verification", Some(&body.to_string()))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    // The shipped version is kept as version 1; the edit is version 2.
    assert_eq!(
        (
            &put.body["version"],
            &put.body["versions"],
            &put.body["source"],
            &put.body["changed"]
        ),
        (&json!(2), &json!([1, 2]), &json!("custom"), &json!(true))
    );
    let v1 = api.call("GET", "/templates/email-verification?version=1", None).await;
    assert_eq!(
        (v1.body["subject"].as_str().map(str::trim), &v1.body["source"]),
        (Some("Confirm your email address"), &json!("shipped"))
    );
    let listed = api.call("GET", "/templates", None).await;
    let line = listed.body["items"]
        .as_array()
        .and_then(|items| items.iter().find(|t| t["id"] == "email-verification").cloned())
        .expect("listed");
    assert_eq!((&line["version"], &line["source"]), (&json!(2), &json!("custom")));
    assert!(line["updated_at"].is_string(), "{line}");

    // The journey's verification email renders the current version.
    api.register("grace@example.com").await;
    let mail = api.runtime.mail.list().await.expect("mail");
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, vec!["Please confirm your address, Grace"]);
    // The message's claim records the version it rendered.
    let claims = api.events_of_type("MessageClaimed").await;
    assert_eq!(claims.len(), 1);
    assert_eq!(
        (&claims[0].data["template"], &claims[0].data["template_version"]),
        (&json!("email-verification"), &json!(2))
    );
    // The same version again writes nothing.
    let again = api
        .call("PUT", "/templates/email-verification", Some(&body.to_string()))
        .await;
    assert_eq!((again.status.as_u16(), &again.body["changed"]), (200, &json!(false)));
    assert_eq!(api.events_of_type("TemplatePublished").await.len(), 2);
}

#[tokio::test]
async fn a_broken_version_is_422_naming_the_part_and_the_line_and_changes_nothing() {
    let api = TestApi::at(start());
    let before = api.event_count().await;
    let broken_liquid = edited(
        &api,
        "email-verification",
        json!({ "text": "Hello {{ customer.first_name }},\n\nplease confirm:\n{{ data.verification_url \n" }),
    )
    .await;
    let answer = api
        .call("PUT", "/templates/email-verification", Some(&broken_liquid.to_string()))
        .await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.body["field"], "text");
    assert_eq!(answer.body["errors"][0]["line"], 4, "{:?}", answer.body);
    assert!(answer.body["detail"].as_str().is_some_and(|d| d.contains("line 4")));

    let shipped_mjml = api.call("GET", "/templates/email-verification", None).await.body["mjml"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let line = shipped_mjml
        .lines()
        .position(|l| l.contains("<mj-text"))
        .map(|i| i + 1)
        .expect("an mj-text");
    let broken_mjml = edited(
        &api,
        "email-verification",
        json!({ "mjml": shipped_mjml.replacen("<mj-text", "<mj-text <b", 1) }),
    )
    .await;
    let answer = api
        .call("PUT", "/templates/email-verification", Some(&broken_mjml.to_string()))
        .await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(
        (answer.body["field"].as_str(), answer.body["errors"][0]["line"].as_u64()),
        (Some("mjml"), Some(line as u64)),
        "{:?}",
        answer.body
    );

    // A variable its sample does not have, and a channel the template does not have.
    let unknown_variable = edited(&api, "email-verification", json!({ "subject": "Code {{ data.code }}" })).await;
    let answer = api
        .call(
            "PUT",
            "/templates/email-verification",
            Some(&unknown_variable.to_string()),
        )
        .await;
    assert_eq!(
        (
            answer.status.as_u16(),
            answer.body["field"].as_str(),
            answer.body["errors"][0]["line"].as_u64()
        ),
        (422, Some("subject"), Some(1)),
        "{:?}",
        answer.body
    );
    let sms = json!({ "channel": "sms", "text": "Hi {{ customer.first_name }}" });
    let answer = api
        .call("PUT", "/templates/email-verification", Some(&sms.to_string()))
        .await;
    assert_eq!(
        (answer.status.as_u16(), answer.body["field"].as_str()),
        (422, Some("channel"))
    );

    // Nothing was written: the template is as shipped, and so is the next mail.
    assert_eq!(api.event_count().await, before);
    let t = api.call("GET", "/templates/email-verification", None).await;
    assert_eq!((&t.body["version"], &t.body["source"]), (&json!(1), &json!("shipped")));
    api.register("grace@example.com").await;
    let mail = api.runtime.mail.list().await.expect("mail");
    assert_eq!(mail[0].subject, "Confirm your email address");
}

#[tokio::test]
async fn a_new_template_is_put_then_sent_by_a_campaign_that_names_it() {
    let api = TestApi::at(start());
    let campaign = json!({
        "id": "spring",
        "name": "Spring sale",
        "trigger": { "pattern": { "source": ["crm.customer"], "detail-type": ["EmailVerificationRequested"] } },
        "entry": { "reentry": "every_time" },
        "steps": [{ "id": "send", "type": "send", "channel": "email", "template": "spring-sale", "category": "transactional" }]
    });
    // Unknown until it is put: the campaign is refused, naming the step's template.
    let refused = api.call("PUT", "/campaigns/spring", Some(&campaign.to_string())).await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.body["field"], "steps[0].template");
    // A new template needs its sample.
    let template = json!({
        "channel": "email",
        "subject": "Spring is here, {{ customer.first_name }}",
        "mjml": "<mjml>\n  <mj-body>\n    <mj-section>\n      <mj-column>\n        <mj-text>Hello {{ customer.first_name }}, spring is here.</mj-text>\n      </mj-column>\n    </mj-section>\n  </mj-body>\n</mjml>\n",
        "text": "Hello {{ customer.first_name }}, spring is here.",
    });
    let no_sample = api
        .call("PUT", "/templates/spring-sale", Some(&template.to_string()))
        .await;
    assert_eq!(
        (no_sample.status.as_u16(), no_sample.body["field"].as_str()),
        (422, Some("sample"))
    );
    let mut with_sample = template.clone();
    with_sample["sample"] = json!({ "customer": { "first_name": "Ada" } });
    let created = api
        .call("PUT", "/templates/spring-sale", Some(&with_sample.to_string()))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(
        (&created.body["version"], &created.body["source"]),
        (&json!(1), &json!("custom"))
    );
    let bad_id = api
        .call("PUT", "/templates/Spring_Sale", Some(&with_sample.to_string()))
        .await;
    assert_eq!(
        (bad_id.status.as_u16(), bad_id.body["field"].as_str()),
        (422, Some("id"))
    );
    // Previews render the stored version.
    let preview = api
        .call(
            "POST",
            "/templates/spring-sale/preview",
            Some(&json!({ "data": { "customer": { "first_name": "Grace" } } }).to_string()),
        )
        .await;
    assert_eq!(preview.status, 200, "{:?}", preview.body);
    assert_eq!(
        (&preview.body["subject"], &preview.body["version"]),
        (&json!("Spring is here, Grace"), &json!(1))
    );
    // Listed among the shipped ones.
    let list = api.call("GET", "/templates", None).await;
    assert!(list.body["items"].as_array().is_some_and(|items| items
        .iter()
        .any(|t| t["id"] == "spring-sale" && t["source"] == "custom")));

    // Now the campaign is accepted, and its journey sends the new template.
    let put = api.call("PUT", "/campaigns/spring", Some(&campaign.to_string())).await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    api.register("grace@example.com").await;
    let mail = api.runtime.mail.list().await.expect("mail");
    let spring = mail
        .iter()
        .find(|m| m.subject == "Spring is here, Grace")
        .unwrap_or_else(|| panic!("{:?}", mail.iter().map(|m| &m.subject).collect::<Vec<_>>()));
    let email = spring.email().expect("an email");
    assert!(email.html.contains("spring is here"), "{}", email.html);
}
