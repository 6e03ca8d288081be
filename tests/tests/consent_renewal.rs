//! Consent renewal end to end on the virtual clock (issue 19 item 1,
//! decision 0068): the shipped `consent-renewal` campaign is paused until a
//! shop resumes it; then a marketing email consent given at registration
//! gets its "renew your consent" email 701 days later, thirty days before it
//! lapses, and saving the preference centre renews it for two more years.

use chrono::Duration;
use crm_core::consent::{Channel, Purpose};
use crm_tests::TestApi;

/// The consent-renewal messages requested so far, with the customer each is for.
async fn renewal_requests(api: &TestApi) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    api.events_of_type("MessageRequested")
        .await
        .into_iter()
        .filter(|e| e.data["template"] == "consent-renewal")
        .map(|e| (e.data["customer_id"].as_str().unwrap_or("").to_string(), e.occurred_at))
        .collect()
}

#[tokio::test]
async fn a_renewal_email_goes_out_thirty_days_before_the_consent_lapses_once_the_campaign_runs() {
    let start = crm_tests::time("2026-03-02T09:00:00Z");
    let api = TestApi::at(start);
    let campaign = api.call("GET", "/campaigns/consent-renewal", None).await;
    assert_eq!(campaign.status, 200, "{:?}", campaign.body);
    assert_eq!(campaign.body["paused"], true, "shipped paused: {:?}", campaign.body);
    // Registered while the campaign is paused: no renewal journey.
    let before = api.register("before-resume@example.com").await;

    let resumed = api.call("POST", "/campaigns/consent-renewal/resume", None).await;
    assert_eq!(resumed.status, 200, "{:?}", resumed.body);
    let id = api.register("renew-me@example.com").await;

    // A day at a time, so that every timer fires on its day.
    for _ in 0..700 {
        api.runtime.advance(Duration::days(1)).await.expect("advance");
    }
    assert!(renewal_requests(&api).await.is_empty(), "not before day 701");
    let now = api.runtime.advance(Duration::days(1)).await.expect("advance");
    let requests = renewal_requests(&api).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0].1,
        start + Duration::days(701),
        "on day 701, 30 days before the end"
    );
    assert_eq!(requests[0].0, id, "only the customer registered while it ran");
    assert_ne!(requests[0].0, before);
    let renewal_message = api
        .events_of_type("MessageRequested")
        .await
        .into_iter()
        .find(|e| e.data["template"] == "consent-renewal")
        .map(|e| e.data["message_id"].clone())
        .expect("requested");
    let sent = api.events_of_type("MessageSent").await;
    assert!(
        sent.iter().any(|e| e.data["message_id"] == renewal_message),
        "the renewal email is sent"
    );

    // Renewed from the preference centre: the next renewal journey starts,
    // the old one ends, and the consent is in force past the first two years.
    let url = format!(
        "/u/{}",
        api.unsubscribe_token(&id, Purpose::Marketing, Channel::Email, now + Duration::days(60))
    );
    let saved = api.post_form(&url, "form=preferences&marketing_email=on").await;
    assert_eq!(saved.status, 200);
    let journeys = api.call("GET", &format!("/customers/{id}/journeys"), None).await;
    assert_eq!(journeys.status, 200, "{:?}", journeys.body);
    let renewals: Vec<&serde_json::Value> = journeys.body["items"]
        .as_array()
        .expect("journeys")
        .iter()
        .filter(|j| j["campaign_id"] == "consent-renewal")
        .collect();
    assert_eq!(renewals.len(), 2, "{:?}", journeys.body);
    assert_eq!(
        renewals.iter().filter(|j| j["status"] == "exited").count(),
        1,
        "the old journey ended: {:?}",
        journeys.body
    );
    api.runtime.advance(Duration::days(45)).await.expect("advance");
    let page = api.call_with("GET", &url, None, &[]).await;
    let body = page.body.as_str().expect("an HTML page");
    assert!(
        body.contains("id=\"marketing_email\" name=\"marketing_email\" value=\"on\" checked"),
        "in force past the first grant's end: {body}"
    );
}
