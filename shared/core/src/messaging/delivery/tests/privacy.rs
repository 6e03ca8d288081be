//! Personal data (issue 16, decision 0048): no plaintext left in deferrals,
//! timers or provider texts; erased with the key.

use super::*;

/// Values no template, id or ciphertext holds by chance (a scan for a short
/// name proves nothing).
const PROOF_EMAIL: &str = "deferred-welcome-7f3a9c2e51@proof.example";

const PROOF_FIRST: &str = "Quintessa-Deferralina";

const PROOF_LAST: &str = "Welcomington-Quietude";

const PROOF_PHONE: &str = "+4915187654321";

const PROOF_IP: &str = "198.51.100.234";

const PROOF_AGENT: &str = "ProofAgent/9.9 (deferred-welcome-scan)";

const PROOF_VALUES: &[&str] = &[PROOF_EMAIL, PROOF_FIRST, PROOF_LAST, PROOF_PHONE, PROOF_IP, PROOF_AGENT];

/// Each of [`PROOF_VALUES`] found in `text`.
fn plaintext_in(text: &str) -> Vec<&'static str> {
    PROOF_VALUES.iter().copied().filter(|v| text.contains(v)).collect()
}

impl World {
    /// Every stored event as kept (JSON text), and every pending timer.
    async fn everything_kept(&self) -> String {
        let mut text = String::new();
        let mut after = None;
        loop {
            let page = self.events.read_all(after.as_deref(), 100).await.expect("read all");
            for e in &page.events {
                text.push_str(&serde_json::to_string(e).expect("json"));
                text.push('\n');
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        for timer in self.scheduler.pending() {
            text.push_str(&serde_json::to_string(&timer).expect("json"));
            text.push('\n');
        }
        text
    }
}

/// Issue 16's proof, for the deferral: a welcome, whose template data is the
/// registration (email, names, phone, IP, user agent), deferred by quiet
/// hours. Its deferral and its timer hold none of it, before erasure and
/// after; the stored request is ciphertext, and after erasure it reads as
/// `[erased]` and the timer, firing anyway, sends nothing.
#[tokio::test]
async fn a_welcome_deferred_by_quiet_hours_leaves_its_plaintext_nowhere() {
    let keys = Arc::new(crate::privacy::memory::InMemoryKeyStore::new());
    let mut registration = crate::testing::registration(PROOF_EMAIL, PROOF_FIRST, PROOF_LAST, "Europe/Berlin");
    registration.phone = Some(PROOF_PHONE.into());
    registration.ip = PROOF_IP.into();
    registration.user_agent = PROOF_AGENT.into();
    let w = World::build(Some(keys.clone()), registration).await;
    w.quiet_in_berlin_from_noon_to_half_past_two().await;

    // The welcome as the journey requests it: its data is the trigger's.
    let registered = w
        .store
        .read_stream(&format!("customer-{CUSTOMER}"), 0, 1)
        .await
        .expect("read")
        .remove(0);
    assert_eq!(registered.event_type, "CustomerRegistered");
    assert_eq!(registered.data["ip"], PROOF_IP, "read decrypted");
    let request = MessageRequest {
        message_id: "msg-1".into(),
        instance_id: "i-1".into(),
        campaign_id: "welcome".into(),
        campaign_version: 1,
        step_id: "welcome".into(),
        candidates: Vec::new(),
        subject: None,
        customer_id: CUSTOMER.into(),
        channel: Channel::Email,
        template: "welcome".into(),
        category: Category::Marketing,
        purpose: Some(Purpose::Marketing),
        kind: Some(crate::messaging::events::MarketingKind::Lifecycle),
        discount: None,
        data: registered.data.clone(),
    };
    let mut requested = raw_event(
        "journey-i-1",
        "MessageRequested",
        serde_json::to_value(&request).expect("json"),
    );
    requested.customer_id = Some(CUSTOMER.into());
    w.stored(requested).await;
    // The channel gets it from the bus, decrypted.
    let delivered = w.store.read_stream("journey-i-1", 0, 1).await.expect("read").remove(0);
    assert_eq!(delivered.data["data"]["email"], PROOF_EMAIL);
    assert!(matches!(
        w.delivery.on_requested(&delivered).await.expect("deliver"),
        DeliveryOutcome::Deferred { .. }
    ));
    let timer = w.message_timer("msg-1").expect("the deferral's timer");

    // Before erasure: the deferral and the timer name the request; all the
    // plaintext there is is in nothing kept (the request is ciphertext).
    assert_eq!(
        serde_json::to_string(&timer).expect("json").matches("msg-1").count(),
        2,
        "{timer:?}"
    );
    let kept = w.everything_kept().await;
    assert!(
        kept.contains("MessageDeferred") && kept.contains("\"deferral\""),
        "{kept}"
    );
    assert_eq!(plaintext_in(&kept), Vec::<&str>::new(), "{kept}");

    // Erasure: the key goes.
    w.erase(keys.as_ref()).await;
    let stored = w.store.read_stream("journey-i-1", 0, 1).await.expect("read").remove(0);
    assert_eq!(stored.data["data"], crate::privacy::ERASED);

    // The timer fires anyway (cancelling it missed): nothing is sent.
    w.clock.advance(Duration::minutes(90));
    w.fire(&timer).await;
    assert!(w.provider.sent().is_empty());
    assert!(w.provider.email_calls() == 0);
    let kept = w.everything_kept().await;
    assert_eq!(plaintext_in(&kept), Vec::<&str>::new(), "{kept}");
}

/// Decision 0048: a provider's text quotes the recipient's address. On the
/// message and customer streams it is ciphertext (the failure, the unknown
/// outcome, the bounce's diagnostic and the invalidation that quotes it),
/// the delivery reads it whole, and after erasure it reads `[erased]`.
#[tokio::test]
async fn provider_texts_that_quote_the_address_are_stored_encrypted_and_erased_with_the_key() {
    let keys = Arc::new(crate::privacy::memory::InMemoryKeyStore::new());
    let registration = crate::testing::registration(PROOF_EMAIL, PROOF_FIRST, PROOF_LAST, "Europe/Berlin");
    let w = World::build(Some(keys.clone()), registration).await;
    let quoted = format!("550 5.1.1 <{PROOF_EMAIL}>: Recipient address rejected: user unknown");
    let transactional = |n| w.requested(n, "order-confirmation", Category::Transactional);

    // Refused for good, then an answer lost, then sent and bounced.
    w.provider.fail_before_taking([ProviderError::Rejected(quoted.clone())]);
    assert_eq!(
        w.delivery.on_requested(&transactional(1)).await.expect("deliver"),
        DeliveryOutcome::Failed
    );
    w.provider.lose_answer(ProviderError::OutcomeUnknown(quoted.clone()));
    w.delivery.on_requested(&transactional(2)).await.expect("deliver");
    assert!(matches!(
        w.delivery.on_requested(&transactional(3)).await.expect("deliver"),
        DeliveryOutcome::Sent { .. }
    ));
    let bounce = MessageEvent::EmailBounced {
        message_id: "msg-3".into(),
        customer_id: CUSTOMER.into(),
        bounce_type: crate::messaging::events::BounceType::Permanent,
        address_hash: w.delivery.identifiers().email(PROOF_EMAIL),
        diagnostic: Some(format!("smtp; {quoted}")),
    };
    w.delivery
        .record_feedback(bounce, PROOF_EMAIL, "ses-0048")
        .await
        .expect("record");

    let read = |message: &'static str, event_type: &'static str, field: &'static str| {
        let store = w.store.clone();
        async move {
            let events = store.read_stream(&message_stream(message), 0, 100).await.expect("read");
            let event = events
                .iter()
                .find(|e| e.event_type == event_type)
                .unwrap_or_else(|| panic!("no {event_type} on {message}"));
            event.data[field].clone()
        }
    };
    let texts = [
        ("msg-1", "MessageFailed", "error"),
        ("msg-2", "MessageOutcomeUnknown", "error"),
        ("msg-3", "EmailBounced", "diagnostic"),
    ];
    for (message, event_type, field) in texts {
        let text = read(message, event_type, field).await;
        assert!(
            text.as_str().is_some_and(|t| t.contains(&quoted)),
            "{event_type}.{field} reads whole: {text}"
        );
    }
    let kept = w.everything_kept().await;
    for event_type in [
        "MessageFailed",
        "MessageOutcomeUnknown",
        "EmailBounced",
        "CustomerEmailInvalidated",
    ] {
        assert!(kept.contains(event_type), "{event_type} was stored: {kept}");
    }
    assert_eq!(plaintext_in(&kept), Vec::<&str>::new(), "{kept}");

    w.erase(keys.as_ref()).await;
    for (message, event_type, field) in texts {
        assert_eq!(
            read(message, event_type, field).await,
            crate::privacy::ERASED,
            "{event_type}.{field}"
        );
    }
    let invalidated = w
        .store
        .read_stream(&format!("customer-{CUSTOMER}"), 0, 100)
        .await
        .expect("read")
        .into_iter()
        .find(|e| e.event_type == "CustomerEmailInvalidated")
        .expect("invalidated");
    assert_eq!(invalidated.data["reason"], crate::privacy::ERASED);
}
