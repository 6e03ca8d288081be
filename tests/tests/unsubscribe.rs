//! `/u/{token}`: RFC 8058 one-click unsubscribe and the preference centre,
//! over the real SQLite store, reached without a bearer token.

use chrono::{Duration, TimeZone, Utc};
use crm_core::consent::{Channel, Purpose};
use crm_tests::{registration, Answer, TestApi};
use serde_json::{json, Value};

const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

async fn register(api: &TestApi, email: &str) -> String {
    let created = api.call("POST", "/customers", Some(&registration(email))).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    created.body["id"].as_str().expect("id").to_string()
}

fn html(answer: &Answer) -> &str {
    assert!(
        answer.content_type().starts_with("text/html"),
        "an HTML page, got {}",
        answer.content_type()
    );
    answer.body.as_str().expect("an HTML body")
}

/// The customer's active consents, as `purpose:channel`.
async fn consents(api: &TestApi, id: &str) -> Vec<String> {
    let got = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(got.status, 200);
    got.body["consents"]
        .as_array()
        .expect("consents")
        .iter()
        .map(|c| {
            format!(
                "{}:{}",
                c["purpose"].as_str().unwrap_or(""),
                c["channel"].as_str().unwrap_or("")
            )
        })
        .collect()
}

async fn ledger(api: &TestApi, id: &str) -> Value {
    let got = api.call("GET", &format!("/customers/{id}/consents"), None).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    got.body
}

fn token(api: &TestApi, id: &str) -> String {
    api.unsubscribe_token(id, Purpose::Marketing, Channel::Email, Utc::now() + Duration::days(60))
}

#[tokio::test]
async fn one_click_revokes_the_tokens_consent_at_once() {
    let api = TestApi::new();
    let id = register(&api, "one.click@example.com").await;
    assert!(consents(&api, &id).await.contains(&"marketing:email".to_string()));
    let url = format!("/u/{}", token(&api, &id));

    let done = api.post_form(&url, ONE_CLICK).await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert!(html(&done).contains("unsubscribed"), "{}", html(&done));
    assert_eq!(done.headers["cache-control"], "no-store");
    assert_eq!(done.headers["referrer-policy"], "no-referrer");

    let now = consents(&api, &id).await;
    assert!(!now.contains(&"marketing:email".to_string()), "{now:?}");
    assert!(
        now.contains(&"marketing:push".to_string()),
        "only the token's channel: {now:?}"
    );

    let ledger = ledger(&api, &id).await;
    let revoked: Vec<&Value> = ledger["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["change"] == "revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "{ledger}");
    assert_eq!(revoked[0]["purpose"], "marketing");
    assert_eq!(revoked[0]["channel"], "email");
    assert_eq!(revoked[0]["method"], "one-click");
    assert_eq!(revoked[0]["reason"], "one-click unsubscribe");
    let current = ledger["current"]
        .as_array()
        .expect("current")
        .iter()
        .find(|c| c["channel"] == "email")
        .expect("marketing email in the ledger");
    assert_eq!(
        (current["status"].clone(), current["active"].clone()),
        (json!("revoked"), json!(false))
    );

    // A second click (mail clients retry) answers the same and appends nothing.
    let before = api.event_count().await;
    let again = api.post_form(&url, ONE_CLICK).await;
    assert_eq!(again.status, 200);
    assert_eq!(api.event_count().await, before);
}

#[tokio::test]
async fn one_click_also_reads_multipart_form_data() {
    let api = TestApi::new();
    let id = register(&api, "multipart@example.com").await;
    let body = "--xyz\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--xyz--\r\n";
    let done = api
        .call_raw(
            "POST",
            &format!("/u/{}", token(&api, &id)),
            Some(body.as_bytes().to_vec()),
            &[("content-type", "multipart/form-data; boundary=xyz")],
        )
        .await;
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert!(!consents(&api, &id).await.contains(&"marketing:email".to_string()));
}

#[tokio::test]
async fn a_tampered_token_gets_a_400_page_and_changes_nothing() {
    let api = TestApi::new();
    let id = register(&api, "tampered@example.com").await;
    let good = token(&api, &id);
    // Change one character in the middle (the payload), keeping it base64url.
    let mut chars: Vec<char> = good.chars().collect();
    let i = chars.len() / 3;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let other_secret = crm_core::messaging::unsubscribe::TokenSigner::new(b"not the secret").sign(
        &crm_core::messaging::unsubscribe::UnsubscribeToken {
            customer_id: id.clone(),
            purpose: Purpose::Marketing,
            channel: Channel::Email,
            expires_at: Utc::now() + Duration::days(1),
        },
    );
    let before = api.event_count().await;
    for bad in [tampered.as_str(), other_secret.as_str(), "not-a-token", "%00"] {
        let url = format!("/u/{bad}");
        let clicked = api.post_form(&url, ONE_CLICK).await;
        assert_eq!(clicked.status, 400, "{bad}: {:?}", clicked.body);
        assert!(html(&clicked).contains("not valid"), "{}", html(&clicked));
        let form = api.post_form(&url, "form=preferences&email_frequency=never").await;
        assert_eq!(form.status, 400, "{bad}");
        let page = api.call_with("GET", &url, None, &[]).await;
        assert_eq!(page.status, 400, "{bad}");
        html(&page);
    }
    assert_eq!(api.event_count().await, before, "nothing appended");
    assert!(consents(&api, &id).await.contains(&"marketing:email".to_string()));
}

#[tokio::test]
async fn an_expired_token_gets_a_400_page_and_changes_nothing() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().expect("time");
    let api = TestApi::at(start);
    let id = register(&api, "expired@example.com").await;
    let url = format!(
        "/u/{}",
        api.unsubscribe_token(&id, Purpose::Marketing, Channel::Email, start + Duration::days(60))
    );
    let page = api.call_with("GET", &url, None, &[]).await;
    assert_eq!(page.status, 200, "valid until it expires");

    api.runtime.advance(Duration::days(61)).await.expect("advance");
    let before = api.event_count().await;
    let clicked = api.post_form(&url, ONE_CLICK).await;
    assert_eq!(clicked.status, 400);
    assert!(html(&clicked).contains("expired"), "{}", html(&clicked));
    let page = api.call_with("GET", &url, None, &[]).await;
    assert_eq!(page.status, 400);
    assert_eq!(api.event_count().await, before, "nothing appended");
    assert!(consents(&api, &id).await.contains(&"marketing:email".to_string()));
}

#[tokio::test]
async fn the_preference_centre_shows_consents_and_frequency_with_the_first_name_only() {
    let api = TestApi::new();
    let id = register(&api, "page@example.com").await;
    let page = api
        .call_with("GET", &format!("/u/{}", token(&api, &id)), None, &[])
        .await;
    assert_eq!(page.status, 200);
    let body = html(&page);
    assert!(body.contains("Grace"), "the first name");
    for personal in ["Hopper", "page@example.com", "+12025550123", "198.51.100.4"] {
        assert!(!body.contains(personal), "no {personal} on the page");
    }
    assert!(body.contains(r#"<form method="post">"#));
    assert!(!body.contains("<script"), "works without JavaScript");
    for (name, checked) in [
        ("marketing_email", true),
        ("marketing_sms", false),
        ("marketing_push", true),
    ] {
        let input = body
            .split("<input")
            .find(|i| i.contains(&format!("id=\"{name}\"")))
            .unwrap_or_else(|| panic!("an input {name}"));
        assert_eq!(input.contains(" checked"), checked, "{name}: {input}");
        assert!(
            body.contains(&format!("<label class=\"choice\" for=\"{name}\">")),
            "{name} is labelled"
        );
    }
    for value in ["daily", "weekly", "never"] {
        assert!(
            body.contains(&format!("for=\"email_frequency_{value}\"")),
            "{value} is labelled"
        );
    }
    assert!(body.contains(r#"value="weekly" checked"#), "the default frequency");
    // The rule in plain words (decision 0064): what the frequency holds
    // back, what it does not, and push topics as opt-in.
    for words in [
        "Daily: at most one offer email a day, at least 24 hours after the last",
        "Weekly: at most one offer email a week, at least 7 days after the last",
        "Never: no marketing email at all",
        "Offer emails are our news, recommendations and reorder reminders.",
        "a reminder about your basket",
        "are not held back by this choice, and they stop too if you choose Never.",
        "Emails about your orders and your account always go.",
        "until you choose one, we send none.",
    ] {
        assert!(body.contains(words), "the page says {words:?}: {body}");
    }
}

#[tokio::test]
async fn the_form_grants_revokes_and_sets_the_email_frequency() {
    let api = TestApi::new();
    let id = register(&api, "form@example.com").await;
    let before = api.call("GET", &format!("/customers/{id}"), None).await;
    let url = format!("/u/{}", token(&api, &id));

    // Untick email, tick SMS, keep push; never email.
    let saved = api
        .post_form(
            &url,
            "form=preferences&marketing_sms=on&marketing_push=on&email_frequency=never",
        )
        .await;
    assert_eq!(saved.status, 200, "{:?}", saved.body);
    assert!(html(&saved).contains("Saved"));
    assert!(html(&saved).contains(r#"value="never" checked"#));

    let mut now = consents(&api, &id).await;
    now.sort();
    assert_eq!(now, ["marketing:push", "marketing:sms"]);
    let after = api.call("GET", &format!("/customers/{id}"), None).await;
    let mut expected = before.body["preferences"].clone();
    expected["email_frequency"] = json!("never");
    assert_eq!(after.body["preferences"], expected, "only the frequency changed");

    let history = ledger(&api, &id).await["history"].clone();
    let last: Vec<(Value, Value, Value)> = history
        .as_array()
        .expect("history")
        .iter()
        .skip(2)
        .map(|e| (e["change"].clone(), e["channel"].clone(), e["method"].clone()))
        .collect();
    assert_eq!(
        last,
        [
            (json!("revoked"), json!("email"), json!("preference-centre")),
            (json!("granted"), json!("sms"), json!("preference-centre")),
        ]
    );

    // The same form again changes nothing.
    let count = api.event_count().await;
    let again = api
        .post_form(
            &url,
            "form=preferences&marketing_sms=on&marketing_push=on&email_frequency=never",
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(api.event_count().await, count);

    // Not our form, or a bad value: 400, nothing changed.
    for bad in [
        "",
        "marketing_email=on",
        "form=preferences&email_frequency=hourly",
        "form=preferences&x=1",
    ] {
        let refused = api.post_form(&url, bad).await;
        assert_eq!(refused.status, 400, "{bad}");
        html(&refused);
    }
    assert_eq!(api.event_count().await, count);
}

#[tokio::test]
async fn an_unknown_customer_gets_a_404_page() {
    let api = TestApi::new();
    let url = format!("/u/{}", token(&api, "0190d7a0-0000-7000-8000-000000000000"));
    let before = api.event_count().await;
    let page = api.call_with("GET", &url, None, &[]).await;
    assert_eq!(page.status, 404);
    html(&page);
    let clicked = api.post_form(&url, ONE_CLICK).await;
    assert_eq!(clicked.status, 404);
    assert_eq!(api.event_count().await, before);
}

/// Whether the preference centre's checkbox `name` is ticked.
fn ticked(body: &str, name: &str) -> bool {
    body.split("<input")
        .find(|i| i.contains(&format!("id=\"{name}\"")))
        .unwrap_or_else(|| panic!("an input {name}"))
        .contains(" checked")
}

#[tokio::test]
async fn a_lapsed_consent_shows_unticked_and_is_given_again_with_its_own_proof() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().expect("time");
    let api = TestApi::at(start);
    let id = register(&api, "lapsed@example.com").await;
    let grant = json!({"purpose":"marketing","channel":"email","method":"preference-centre"}).to_string();
    let early = api
        .call("POST", &format!("/customers/{id}/consents"), Some(&grant))
        .await;
    assert_eq!(early.status, 409, "in force: {:?}", early.body);

    // Granted at registration on 2026-03-02 09:00, in force until
    // 2028-03-02 09:00: two years and a day later it has lapsed.
    let now = api.runtime.advance(Duration::days(732)).await.expect("advance");
    let url = format!(
        "/u/{}",
        api.unsubscribe_token(&id, Purpose::Marketing, Channel::Email, now + Duration::days(60))
    );
    let page = api.call_with("GET", &url, None, &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        !ticked(html(&page), "marketing_email"),
        "a lapsed consent shows unticked"
    );

    let renewed = api
        .call("POST", &format!("/customers/{id}/consents"), Some(&grant))
        .await;
    assert_eq!(renewed.status, 201, "given again: {:?}", renewed.body);
    let page = api.call_with("GET", &url, None, &[]).await;
    assert!(ticked(html(&page), "marketing_email"), "in force again");
    let again = api
        .call("POST", &format!("/customers/{id}/consents"), Some(&grant))
        .await;
    assert_eq!(again.status, 409, "in force again: {:?}", again.body);

    let ledger = ledger(&api, &id).await;
    let grants: Vec<&Value> = ledger["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["change"] == "granted" && e["purpose"] == "marketing" && e["channel"] == "email")
        .collect();
    assert_eq!(grants.len(), 2, "both grants are kept, each with its proof: {ledger}");
    let current = ledger["current"]
        .as_array()
        .expect("current")
        .iter()
        .find(|c| c["purpose"] == "marketing" && c["channel"] == "email")
        .expect("a current marketing email consent")
        .clone();
    let granted_at: chrono::DateTime<Utc> = serde_json::from_value(current["granted_at"].clone()).expect("granted_at");
    assert!(granted_at >= now, "the current grant is the new one: {current}");
}

#[tokio::test]
async fn in_its_last_30_days_a_consent_is_renewed_from_the_preference_centre() {
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().expect("time");
    let api = TestApi::at(start);
    let id = register(&api, "renewal@example.com").await;
    // In force until 2028-03-02 09:00; its last 30 days begin 2028-02-01.
    let now = api.runtime.advance(Duration::days(700)).await.expect("advance");
    let url = format!(
        "/u/{}",
        api.unsubscribe_token(&id, Purpose::Marketing, Channel::Email, now + Duration::days(60))
    );
    let page = api.call_with("GET", &url, None, &[]).await;
    assert!(!html(&page).contains("save to keep it"), "not due yet");
    let saved = api.post_form(&url, "form=preferences&marketing_email=on").await;
    assert_eq!(saved.status, 200);
    assert_eq!(grants(&api, &id).await, 1, "nothing renewed before the window");

    let now = api.runtime.advance(Duration::days(20)).await.expect("advance");
    let page = api.call_with("GET", &url, None, &[]).await;
    let body = html(&page);
    assert!(ticked(body, "marketing_email"), "still in force");
    assert!(
        body.contains("ends on 2 March 2028: save to keep it for two more years"),
        "{body}"
    );
    let saved = api.post_form(&url, "form=preferences&marketing_email=on").await;
    assert_eq!(saved.status, 200);
    assert_eq!(grants(&api, &id).await, 2, "renewed, with its own proof");
    let page = api.call_with("GET", &url, None, &[]).await;
    assert!(ticked(html(&page), "marketing_email"));
    assert!(!html(&page).contains("save to keep it"), "renewed: not due any more");

    // Past the first grant's end it is still in force (the renewal's two years).
    api.runtime.advance(Duration::days(30)).await.expect("advance");
    let page = api.call_with("GET", &url, None, &[]).await;
    assert!(ticked(html(&page), "marketing_email"), "in force after {now}");
}

/// How many marketing email grants the customer's ledger holds.
async fn grants(api: &TestApi, id: &str) -> usize {
    ledger(api, id).await["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["change"] == "granted" && e["purpose"] == "marketing" && e["channel"] == "email")
        .count()
}
