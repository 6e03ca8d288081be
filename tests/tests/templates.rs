//! `POST /templates/{id}/preview`: every shipped template renders with its
//! sample data; changes to the data are merged in; values are HTML-escaped
//! in the HTML part only; unknown templates and missing variables are
//! problems naming what is wrong.

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
