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
async fn the_cart_reminder_arrives_rendered_once_and_one_click_stops_the_final_offer() {
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

    // The final offer, 24 h later, is suppressed: no consent any more.
    api.advance_minutes(24 * 60).await;
    let offers: Vec<_> = api
        .events_of_type("MessageRequested")
        .await
        .into_iter()
        .filter(|e| e.data["template"] == "abandoned-cart-final-offer")
        .collect();
    assert_eq!(offers.len(), 1, "the journey asked for the final offer");
    let suppressed = api.events_of_type("MessageSuppressed").await;
    assert_eq!(suppressed.len(), 1, "{suppressed:?}");
    assert_eq!(suppressed[0].data["reason"], "no-consent");
    assert_eq!(suppressed[0].data["customer_id"], customer_id.as_str());
    assert_eq!(suppressed[0].data["message_id"], offers[0].data["message_id"]);
    let mail = api.runtime.mail.list().await.expect("mail");
    assert!(
        mail.iter().all(|m| m.message_id != offers[0].data["message_id"]),
        "no final offer in the mail sink"
    );
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
    let out = crm_local::demo::run_story(Some(dir.path())).await.expect("demo");
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
