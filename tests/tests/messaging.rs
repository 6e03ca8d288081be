//! Delivery end to end through the local runtime on a virtual clock: the
//! journeys' messages arrive rendered in the local mail sink, effectively
//! once, and a one-click unsubscribe stops the very next marketing message.

use chrono::{DateTime, Duration, Utc};
use crm_tests::TestApi;
use serde_json::json;

fn start() -> DateTime<Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

/// Registers a customer and abandons a cart worth 65 EUR: returns the customer id.
async fn abandon_a_cart(api: &TestApi) -> String {
    let customer_id = api.register("grace@example.com").await;
    api.cart_with_lamps(&customer_id, 1, 6500).await;
    customer_id
}

#[tokio::test]
async fn the_cart_reminder_arrives_rendered_once_and_one_click_ends_the_journey_before_the_final_offer() {
    let api = TestApi::at(start());
    let customer_id = abandon_a_cart(&api).await;
    // The verification email goes at once (transactional).
    let mail = api.runtime.mail.list().await.expect("mail");
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert_eq!(mail[0].recipient, "grace@example.com");

    // 60 minutes of inactivity, then the campaign's 1 h wait: one reminder.
    api.advance_minutes(60).await;
    api.advance_minutes(60).await;
    let mail = api.runtime.mail.list().await.expect("mail");
    assert_eq!(
        mail.len(),
        2,
        "{:?}",
        mail.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    let reminder = mail[1].email().expect("an email");
    assert!(reminder.html.contains("Desk lamp"), "{}", reminder.html);
    assert!(reminder.text.contains("Grace"), "{}", reminder.text);
    assert_eq!(
        reminder.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    let sent = api.events_of_type("MessageSent").await;
    assert_eq!(sent.len(), 2);

    // The local mail viewer lists both and shows the reminder rendered.
    let list = api.call("GET", "/_local/mail", None).await;
    assert_eq!(list.status, 200);
    assert!(list.content_type().starts_with("text/html"));
    let listing = list.body.as_str().unwrap_or_default().to_string();
    assert!(listing.contains(&mail[1].subject), "{listing}");
    let shown = api.call("GET", &format!("/_local/mail/{}", mail[1].seq), None).await;
    assert_eq!(shown.status, 200);
    assert!(shown.body.as_str().unwrap_or_default().contains("Desk lamp"));
    let raw = api
        .call("GET", &format!("/_local/mail/{}/raw", mail[1].seq), None)
        .await;
    assert!(raw
        .body
        .as_str()
        .unwrap_or_default()
        .contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    assert_eq!(api.call("GET", "/_local/mail/999", None).await.status, 404);

    // Every message request delivered again: nothing is sent twice.
    api.runtime.bus.rewind("channel", 0).await.expect("rewind");
    api.runtime.bus.settle().await.expect("redeliver");
    assert_eq!(api.runtime.mail.list().await.expect("mail").len(), 2);
    assert_eq!(api.events_of_type("MessageClaimed").await.len(), 2);

    // The mail client's one-click POST to the List-Unsubscribe URL.
    let header = reminder.header("List-Unsubscribe").expect("List-Unsubscribe");
    let url = header.trim_start_matches('<').trim_end_matches('>');
    let path = &url[url.find("/u/").expect("a /u/ link")..];
    let answer = api.post_form(path, "List-Unsubscribe=One-Click").await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);

    // The unsubscribe ended the cart journey at once (its every send needs
    // that consent, decision 0067): no final offer is even asked for.
    api.advance_minutes(24 * 60).await;
    let offers: Vec<_> = api
        .events_of_type("MessageRequested")
        .await
        .into_iter()
        .filter(|e| e.data["template"] == "abandoned-cart-final-offer")
        .collect();
    assert!(offers.is_empty(), "{offers:?}");
    let exits = api.events_of_type("JourneyExited").await;
    assert!(
        exits
            .iter()
            .any(|e| e.data["reason"] == "consent-revoked" && e.customer_id.as_deref() == Some(customer_id.as_str())),
        "the cart journey exited: {exits:?}"
    );
    let suppressed = api.events_of_type("MessageSuppressed").await;
    assert!(suppressed.is_empty(), "{suppressed:?}");
    let mail = api.runtime.mail.list().await.expect("mail");
    // The welcome campaign's verification reminder (transactional) still went.
    assert_eq!(mail.len(), 3);
    let health = api.call("GET", "/health", None).await;
    let consumers = health.body["consumers"].as_array().expect("consumers").clone();
    assert!(
        consumers.iter().all(|c| c["dead_letters"] == 0),
        "nothing parked: {consumers:?}"
    );
}

#[tokio::test]
async fn quiet_hours_defer_the_reminder_to_their_end_in_the_customers_time_zone() {
    let api = TestApi::at(start());
    let customer_id = abandon_a_cart(&api).await;
    // New York: 15:00 UTC is 10:00 local. Quiet from 11:00 to 13:30 local.
    let prefs = json!({
        "email_frequency": "daily",
        "timezone": "America/New_York",
        "quiet_hours": { "start": "11:00", "end": "13:30" }
    });
    let put = api
        .call(
            "PUT",
            &format!("/customers/{customer_id}/preferences"),
            Some(&prefs.to_string()),
        )
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    // The reminder is requested at 17:00 UTC = 12:00 New York: deferred to 13:30 local.
    api.advance_minutes(60).await;
    api.advance_minutes(60).await;
    let deferred = api.events_of_type("MessageDeferred").await;
    assert_eq!(deferred.len(), 1);
    assert_eq!(deferred[0].data["until"], "2026-11-23T18:30:00Z");
    assert_eq!(
        api.runtime.mail.list().await.expect("mail").len(),
        1,
        "only the verification"
    );
    api.advance_minutes(89).await;
    assert_eq!(api.runtime.mail.list().await.expect("mail").len(), 1);
    api.advance_minutes(1).await;
    let mail = api.runtime.mail.list().await.expect("mail");
    assert_eq!(mail.len(), 2, "sent when the quiet hours end");
    assert_eq!(mail[1].sent_at, start() + Duration::minutes(210));
}

#[tokio::test]
async fn the_demo_sends_welcome_reminder_and_confirmation_with_working_unsubscribe_links() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = crm_local::cli::demo::run_story(Some(dir.path())).await.expect("demo");
    assert!(out.contains("== Mail sent (4 messages"), "{out}");
    assert!(!out.contains("== Dead letters"), "{out}");
    let api = TestApi::open_in(dir);
    let mail = api.runtime.mail.list().await.expect("mail");
    let subjects: Vec<&str> = mail.iter().map(|m| m.subject.as_str()).collect();
    for wanted in [
        "Confirm your email",
        "Welcome",
        "left something in your cart",
        "confirmed",
    ] {
        assert!(subjects.iter().any(|s| s.contains(wanted)), "{wanted}: {subjects:?}");
    }
    let welcome = mail
        .iter()
        .find(|m| m.subject.contains("Welcome"))
        .and_then(|m| m.email())
        .expect("the welcome email");
    assert!(welcome.html.contains("/u/"), "a preference-centre link in the footer");
    let header = welcome.header("List-Unsubscribe").expect("List-Unsubscribe");
    let url = header.trim_start_matches('<').trim_end_matches('>');
    let path = &url[url.find("/u/").expect("a /u/ link")..];
    let page = api.call_raw("GET", path, None, &[]).await;
    assert_eq!(page.status, 200, "the preference centre opens from the link");
    let answer = api.post_form(path, "List-Unsubscribe=One-Click").await;
    assert_eq!(answer.status, 200);
    let revoked = api.events_of_type("ConsentRevoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].data["method"], "one-click");
}

/// Values no template, id or ciphertext holds by chance.
const DEFERRED_PLAIN: &[&str] = &[
    "deferred-welcome-2b9e61d4@proof.example",
    "Quintessa-Deferralina",
    "Welcomington-Quietude",
    "+12025550188",
    "203.0.113.219",
    "ProofAgent/9.9 (deferred-welcome-scan)",
];

/// Every row of `table` as text (every cell), from the database file.
fn raw_rows(api: &TestApi, table: &str) -> Vec<String> {
    crm_tests::sqlite_rows(&api.db_path(), table)
}

/// The [`DEFERRED_PLAIN`] values found in `table`'s rows.
fn plaintext_in(api: &TestApi, table: &str) -> Vec<String> {
    let mut found = Vec::new();
    for row in raw_rows(api, table) {
        for p in DEFERRED_PLAIN.iter().filter(|p| row.contains(*p)) {
            found.push(format!("{table}: {p} in {row}"));
        }
    }
    found
}

/// Issue 16 (decision 0041): a welcome, whose data is the registration,
/// deferred by quiet hours. The deferral and its timer name the stored
/// request and hold none of it, before and after erasure; nothing is sent
/// after erasure.
#[tokio::test]
async fn a_deferred_welcome_keeps_no_plaintext_in_its_deferral_or_timer() {
    let api = TestApi::at(start());
    let body = json!({
        "email": DEFERRED_PLAIN[0], "first_name": DEFERRED_PLAIN[1], "last_name": DEFERRED_PLAIN[2],
        "phone": DEFERRED_PLAIN[3], "source": "web",
        "marketing_consent": { "email": true, "sms": false, "push": false },
        "terms_accepted": true, "ip": DEFERRED_PLAIN[4], "user_agent": DEFERRED_PLAIN[5],
        "timezone": "America/New_York", "locale": "en-US"
    });
    let created = api.call("POST", "/customers", Some(&body.to_string())).await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    // 15:00 UTC is 10:00 in New York: quiet until 12:00 local (17:00 UTC).
    let prefs = json!({
        "email_frequency": "daily",
        "timezone": "America/New_York",
        "quiet_hours": { "start": "09:00", "end": "12:00" }
    });
    let put = api
        .call("PUT", &format!("/customers/{id}/preferences"), Some(&prefs.to_string()))
        .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    // Verifying moves the welcome journey on to its welcome email.
    let token = api
        .events_of_type("EmailVerificationRequested")
        .await
        .iter()
        .find_map(|e| e.data["token"].as_str().map(str::to_string))
        .expect("a verification token");
    let verified = api
        .call(
            "POST",
            &format!("/customers/{id}/email/verify"),
            Some(&json!({ "token": token }).to_string()),
        )
        .await;
    assert_eq!(verified.status, 200, "{:?}", verified.body);
    api.advance_minutes(1).await;

    let deferred = api.events_of_type("MessageDeferred").await;
    assert_eq!(deferred.len(), 1, "the welcome waits for the quiet hours' end");
    assert_eq!(deferred[0].schema_version, 2);
    assert_eq!(deferred[0].data["until"], "2026-11-23T17:00:00Z");
    assert!(deferred[0].data.get("request").is_none(), "{}", deferred[0].data);
    let requested = &deferred[0].data["requested"];
    let journey = requested["stream_id"].as_str().expect("the journey stream");
    let version = requested["version"].as_u64().expect("its version");
    let welcome = api
        .store
        .read_stream(journey, version - 1, 1)
        .await
        .expect("read the request");
    assert_eq!(welcome[0].event_type, "MessageRequested");
    assert_eq!(welcome[0].data["template"], "welcome");
    assert_eq!(
        welcome[0].data["data"]["email"], DEFERRED_PLAIN[0],
        "the request reads decrypted"
    );
    let timers = raw_rows(&api, "timers");
    assert!(timers.iter().any(|t| t.contains("\"deferral\"")), "{timers:?}");
    for table in ["events", "timers"] {
        assert_eq!(plaintext_in(&api, table), Vec::<String>::new());
    }

    let erased = api.call("DELETE", &format!("/customers/{id}"), None).await;
    assert_eq!(erased.status, 202, "{:?}", erased.body);
    api.advance_minutes(1).await;
    for table in ["events", "timers", "dead_letters"] {
        assert_eq!(plaintext_in(&api, table), Vec::<String>::new());
    }
    // Past the quiet hours: only the verification email ever went.
    api.advance_minutes(180).await;
    let mail = api.runtime.mail.list().await.expect("mail");
    assert_eq!(
        mail.len(),
        1,
        "{:?}",
        mail.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
}
