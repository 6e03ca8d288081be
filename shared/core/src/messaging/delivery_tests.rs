//! The channel service over the in-memory stores and a recording provider
//! (domain tests): effectively once under redelivery, throttling retried,
//! permanent failures parked, quiet hours deferred and handed back.

use super::*;
use crate::clock::VirtualClock;
use crate::customer::*;
use crate::preferences::{EmailFrequency, Preferences, QuietHours};
use crate::privacy::IdentifierHasher;
use crate::testing::{raw_event, InMemoryDeadLetters, InMemoryEventStore, InMemoryReadModels, InMemoryScheduler};
use std::collections::VecDeque;
use std::sync::Mutex;

const CUSTOMER: &str = "00000000-0000-7000-8000-0000000000a1";

/// Records what it is asked to send; answers from a script of errors first.
#[derive(Default)]
struct RecordingProvider {
    sent: Mutex<Vec<String>>,
    script: Mutex<VecDeque<ProviderError>>,
    emails: Mutex<Vec<EmailMessage>>,
}

impl RecordingProvider {
    fn answer(&self, message_id: &str) -> Result<ProviderReceipt, ProviderError> {
        if let Some(e) = self.script.lock().expect("lock").pop_front() {
            return Err(e);
        }
        let mut sent = self.sent.lock().expect("lock");
        sent.push(message_id.to_string());
        Ok(ProviderReceipt {
            provider_message_id: format!("p-{}", sent.len()),
        })
    }
    fn sent(&self) -> Vec<String> {
        self.sent.lock().expect("lock").clone()
    }
}

#[async_trait]
impl EmailProvider for RecordingProvider {
    async fn send_email(&self, email: &EmailMessage) -> Result<ProviderReceipt, ProviderError> {
        self.emails.lock().expect("lock").push(email.clone());
        self.answer(&email.message_id)
    }
}
#[async_trait]
impl SmsProvider for RecordingProvider {
    async fn send_sms(&self, sms: &SmsMessage) -> Result<ProviderReceipt, ProviderError> {
        self.answer(&sms.message_id)
    }
}
#[async_trait]
impl PushProvider for RecordingProvider {
    async fn send_push(&self, push: &PushMessage) -> Result<ProviderReceipt, ProviderError> {
        self.answer(&push.message_id)
    }
}

struct World {
    events: Arc<InMemoryEventStore>,
    docs: Arc<InMemoryReadModels>,
    scheduler: Arc<InMemoryScheduler>,
    clock: Arc<VirtualClock>,
    provider: Arc<RecordingProvider>,
    dead_letters: Arc<InMemoryDeadLetters>,
    delivery: MessageDelivery,
}

impl World {
    /// This world with the delivery's metrics counted into the returned buffer.
    fn metered(mut self) -> (World, crate::metrics::SharedBuffer) {
        let buffer = crate::metrics::SharedBuffer::default();
        let sink = crate::metrics::EmfWriter::new("Crm", Box::new(buffer.clone()));
        self.delivery = self.delivery.with_metrics(Arc::new(sink));
        (self, buffer)
    }

    /// Daily email, quiet hours 12:00 to 14:30 in Berlin.
    async fn quiet_in_berlin_from_noon_to_half_past_two(&self) {
        self.command(CustomerCommand::UpdatePreferences(Preferences {
            email_frequency: EmailFrequency::Daily,
            timezone: "Europe/Berlin".into(),
            quiet_hours: Some(QuietHours {
                start: "12:00".into(),
                end: "14:30".into(),
            }),
            ..Preferences::default()
        }))
        .await;
    }

    async fn new() -> World {
        let events = Arc::new(InMemoryEventStore::default());
        let docs = Arc::new(InMemoryReadModels::default());
        let scheduler = Arc::new(InMemoryScheduler::default());
        let clock = Arc::new(VirtualClock::starting_at(
            DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
                .map(|t| t.to_utc())
                .unwrap_or_default(),
        ));
        let provider = Arc::new(RecordingProvider::default());
        let dead_letters = Arc::new(InMemoryDeadLetters::default());
        let delivery = MessageDelivery::new(
            events.clone(),
            docs.clone(),
            scheduler.clone(),
            clock.clone(),
            Providers {
                email: provider.clone(),
                sms: provider.clone(),
                push: provider.clone(),
            },
            Arc::new(TokenSigner::new(b"test secret")),
            IdentifierHasher::new(b"test identifiers"),
            dead_letters.clone(),
            DeliverySettings {
                first_backoff: std::time::Duration::from_millis(1),
                ..DeliverySettings::default()
            },
        );
        let world = World {
            events,
            docs,
            scheduler,
            clock,
            provider,
            dead_letters,
            delivery,
        };
        world
            .command(CustomerCommand::Register(crate::testing::registration(
                "ana@example.com",
                "Ana",
                "Lima",
                "Europe/Berlin",
            )))
            .await;
        world
    }

    async fn command(&self, cmd: CustomerCommand) {
        let respond = |c: &Customer, _: &[EventEnvelope]| (200, json!({ "id": c.id }));
        self.delivery
            .customers()
            .execute(CUSTOMER, &cmd, &CommandMeta::new(Actor::api("t")), None, &respond)
            .await
            .expect("command");
    }

    /// A MessageRequested as a journey stores it.
    fn requested(&self, n: u32, template: &str, category: Category) -> EventEnvelope {
        let request = MessageRequest {
            message_id: format!("msg-{n}"),
            instance_id: format!("i-{n}"),
            campaign_id: "abandoned-cart".into(),
            campaign_version: 1,
            step_id: "reminder".into(),
            customer_id: CUSTOMER.into(),
            channel: Channel::Email,
            template: template.into(),
            category,
            purpose: (category == Category::Marketing).then_some(Purpose::Marketing),
            data: render::sample_data(template).expect("sample")["data"].clone(),
        };
        let mut e = raw_event(
            &format!("journey-i-{n}"),
            "MessageRequested",
            serde_json::to_value(request).expect("json"),
        );
        e.customer_id = Some(CUSTOMER.into());
        e
    }

    async fn stream_types(&self, message_id: &str) -> Vec<String> {
        self.events
            .read_stream(&message_stream(message_id), 0, 100)
            .await
            .expect("read")
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

fn reminder() -> &'static str {
    "abandoned-cart-reminder"
}

#[tokio::test]
async fn every_request_delivered_three_times_in_shuffled_order_sends_exactly_once() {
    let w = World::new().await;
    let requests: Vec<EventEnvelope> = (1..=3)
        .map(|n| w.requested(n, "order-confirmation", Category::Transactional))
        .collect();
    // Three copies each, interleaved in a fixed shuffled order.
    let order = [2, 0, 1, 1, 2, 0, 0, 2, 1];
    for i in order {
        w.delivery.on_requested(&requests[i]).await.expect("deliver");
    }
    let mut sent = w.provider.sent();
    sent.sort();
    assert_eq!(sent, vec!["msg-1", "msg-2", "msg-3"]);
    assert_eq!(w.stream_types("msg-1").await, vec!["MessageClaimed", "MessageSent"]);
    // Concurrent copies: the stream version is the claim.
    let again = w.requested(4, "order-confirmation", Category::Transactional);
    let (a, b, c) = tokio::join!(
        w.delivery.on_requested(&again),
        w.delivery.on_requested(&again),
        w.delivery.on_requested(&again)
    );
    let outcomes = [a.expect("a"), b.expect("b"), c.expect("c")];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, DeliveryOutcome::Sent { .. }))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(w.provider.sent().iter().filter(|m| *m == "msg-4").count(), 1);
}

#[tokio::test]
async fn marketing_email_carries_one_click_unsubscribe_and_no_consent_means_no_send() {
    let w = World::new().await;
    w.delivery
        .on_requested(&w.requested(1, reminder(), Category::Marketing))
        .await
        .expect("deliver");
    let emails = w.provider.emails.lock().expect("lock").clone();
    let email = emails.first().expect("one email");
    assert!(email
        .headers
        .contains(&("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into())));
    let unsubscribe = &email
        .headers
        .iter()
        .find(|(n, _)| n == "List-Unsubscribe")
        .expect("header")
        .1;
    assert!(unsubscribe.starts_with("<http://127.0.0.1:3000/u/"), "{unsubscribe}");
    assert!(email.html.contains("/u/"), "the footer links to the preference centre");
    assert!(email.tags.contains(&("message_id".into(), "msg-1".into())));

    w.command(CustomerCommand::RevokeConsent(RevokeConsent {
        purpose: Purpose::Marketing,
        channel: Channel::Email,
        reason: "test".into(),
        method: None,
    }))
    .await;
    let outcome = w
        .delivery
        .on_requested(&w.requested(2, reminder(), Category::Marketing))
        .await
        .expect("deliver");
    assert_eq!(outcome, DeliveryOutcome::Suppressed);
    assert_eq!(w.stream_types("msg-2").await, vec!["MessageSuppressed"]);
    // Transactional mail still goes.
    let confirmation = w.requested(3, "order-confirmation", Category::Transactional);
    assert!(matches!(
        w.delivery.on_requested(&confirmation).await.expect("deliver"),
        DeliveryOutcome::Sent { .. }
    ));
    assert_eq!(w.provider.sent(), vec!["msg-1", "msg-3"]);
}

#[tokio::test]
async fn throttling_is_retried_and_a_permanent_failure_is_parked() {
    let w = World::new().await;
    w.provider.script.lock().expect("lock").extend([
        ProviderError::Throttled("slow down".into()),
        ProviderError::Throttled("slow down".into()),
    ]);
    let outcome = w
        .delivery
        .on_requested(&w.requested(1, "order-confirmation", Category::Transactional))
        .await
        .expect("deliver");
    assert!(matches!(outcome, DeliveryOutcome::Sent { .. }), "{outcome:?}");

    // Unavailable: recorded, the claim given back, the next delivery sends.
    w.provider
        .script
        .lock()
        .expect("lock")
        .push_back(ProviderError::Unavailable("down".into()));
    let request = w.requested(2, "order-confirmation", Category::Transactional);
    assert!(matches!(
        w.delivery.on_requested(&request).await,
        Err(DeliveryError::Retry(_))
    ));
    assert!(matches!(
        w.delivery.on_requested(&request).await.expect("again"),
        DeliveryOutcome::Sent { .. }
    ));
    assert_eq!(
        w.stream_types("msg-2").await,
        vec!["MessageClaimed", "MessageFailed", "MessageClaimed", "MessageSent"]
    );

    w.provider
        .script
        .lock()
        .expect("lock")
        .push_back(ProviderError::Rejected("bad address".into()));
    let outcome = w
        .delivery
        .on_requested(&w.requested(3, "order-confirmation", Category::Transactional))
        .await
        .expect("deliver");
    assert_eq!(outcome, DeliveryOutcome::Failed);
    let letters = w.dead_letters.letters.lock().expect("lock").clone();
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("bad address"), "{:?}", letters[0]);
}

#[tokio::test]
async fn a_missing_template_variable_fails_the_message_for_good_naming_it() {
    let w = World::new().await;
    let mut request = w.requested(1, reminder(), Category::Marketing);
    request.data = json!({
        "message_id": "msg-1", "instance_id": "i-1", "campaign_id": "abandoned-cart", "campaign_version": 1,
        "step_id": "reminder", "customer_id": CUSTOMER, "channel": "email", "template": reminder(),
        "category": "marketing", "purpose": "marketing", "data": {}
    });
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("deliver"),
        DeliveryOutcome::Failed
    );
    assert!(w.provider.sent().is_empty());
    let letters = w.dead_letters.letters.lock().expect("lock").clone();
    assert!(letters[0].reason.contains("data."), "{:?}", letters[0].reason);
}

#[tokio::test]
async fn quiet_hours_defer_to_their_end_and_the_timer_sends() {
    let w = World::new().await;
    w.quiet_in_berlin_from_noon_to_half_past_two().await;
    // 12:00 UTC is 13:00 in Berlin: quiet until 14:30 Berlin = 13:30 UTC.
    let request = w.requested(1, reminder(), Category::Marketing);
    let until = DateTime::parse_from_rfc3339("2026-11-23T13:30:00Z")
        .expect("time")
        .to_utc();
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("deliver"),
        DeliveryOutcome::Deferred { until }
    );
    // A redelivery while waiting neither sends nor records anything.
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("again"),
        DeliveryOutcome::Waiting { until }
    );
    let timers = w.scheduler.pending();
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].due_at, until);
    w.clock.advance(chrono::Duration::minutes(90));
    use crate::scheduler::TimerHandler;
    w.delivery.on_timer(&timers[0]).await.expect("timer");
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
    assert_eq!(
        w.stream_types("msg-1").await,
        vec!["MessageDeferred", "MessageClaimed", "MessageSent"]
    );
}

#[tokio::test]
async fn the_email_cap_holds_and_a_hard_bounce_suppresses_the_address() {
    let w = World::new().await;
    for n in 1..=4 {
        w.delivery
            .on_requested(&w.requested(n, reminder(), Category::Marketing))
            .await
            .expect("deliver");
        w.clock.advance(chrono::Duration::minutes(10));
    }
    assert_eq!(w.provider.sent(), vec!["msg-1", "msg-2", "msg-3"]);
    assert_eq!(w.stream_types("msg-4").await, vec!["MessageSuppressed"]);

    // A permanent bounce on the address: even transactional mail stops.
    let mut bounce = raw_event(
        &message_stream("msg-1"),
        "EmailBounced",
        json!({ "message_id": "msg-1", "customer_id": CUSTOMER, "bounce_type": "permanent",
                "address_hash": w.delivery.identifiers().email("ANA@example.com ") }),
    );
    bounce.version = 3;
    let list = Consumer::new(
        Arc::new(SuppressionListProjection::new(w.delivery.identifiers().clone())),
        w.events.clone(),
        w.docs.clone(),
    );
    // The stream has two events; deliver the bounce as version 3 after appending it.
    w.events
        .append(AppendRequest {
            stream_id: bounce.stream_id.clone(),
            expected: ExpectedVersion::Exactly(2),
            events: vec![bounce.clone()],
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
    list.deliver(&bounce).await.expect("project");
    let outcome = w
        .delivery
        .on_requested(&w.requested(9, "order-confirmation", Category::Transactional))
        .await
        .expect("deliver");
    assert_eq!(outcome, DeliveryOutcome::Suppressed);
}

#[tokio::test]
async fn bounce_and_complaint_feedback_act_once() {
    let w = World::new().await;
    w.delivery
        .on_requested(&w.requested(1, reminder(), Category::Marketing))
        .await
        .expect("deliver");
    let complaint = MessageEvent::EmailComplained {
        message_id: "msg-1".into(),
        customer_id: CUSTOMER.into(),
        address_hash: w.delivery.identifiers().email("ana@example.com"),
    };
    let first = w
        .delivery
        .record_feedback(complaint.clone(), "ana@example.com", "ses-1")
        .await;
    assert_eq!(first.expect("record"), FeedbackOutcome::Recorded);
    let again = w.delivery.record_feedback(complaint, "ana@example.com", "ses-1").await;
    assert_eq!(again.expect("record"), FeedbackOutcome::Duplicate);
    let customer = w
        .delivery
        .customers()
        .load(CUSTOMER)
        .await
        .expect("load")
        .expect("customer");
    assert!(
        customer.consent(Purpose::Marketing, Channel::Email).is_none(),
        "complaint revokes"
    );
    // Marketing is suppressed; transactional mail still goes after a complaint.
    let confirmation = w.requested(2, "order-confirmation", Category::Transactional);
    assert!(matches!(
        w.delivery.on_requested(&confirmation).await.expect("deliver"),
        DeliveryOutcome::Sent { .. }
    ));

    let bounce = MessageEvent::EmailBounced {
        message_id: "msg-2".into(),
        customer_id: CUSTOMER.into(),
        bounce_type: super::super::events::BounceType::Permanent,
        address_hash: w.delivery.identifiers().email("ana@example.com"),
        diagnostic: Some("550 5.1.1 user unknown".into()),
    };
    w.delivery
        .record_feedback(bounce, "ana@example.com", "ses-2")
        .await
        .expect("record");
    let customer = w
        .delivery
        .customers()
        .load(CUSTOMER)
        .await
        .expect("load")
        .expect("customer");
    assert!(customer.email_invalidated);
    let next = w.requested(3, "order-confirmation", Category::Transactional);
    assert_eq!(
        w.delivery.on_requested(&next).await.expect("deliver"),
        DeliveryOutcome::Suppressed
    );
    assert_eq!(
        w.stream_types("msg-2").await,
        vec!["MessageClaimed", "MessageSent", "EmailBounced"]
    );
}

#[tokio::test]
async fn sends_suppressions_and_deferrals_are_counted_per_channel() {
    let (w, buffer) = World::new().await.metered();
    let confirmation = w.requested(1, "order-confirmation", Category::Transactional);
    w.delivery.on_requested(&confirmation).await.expect("deliver");
    // A duplicate delivery counts nothing.
    w.delivery.on_requested(&confirmation).await.expect("again");
    w.command(CustomerCommand::RevokeConsent(RevokeConsent {
        purpose: Purpose::Marketing,
        channel: Channel::Email,
        reason: "test".into(),
        method: None,
    }))
    .await;
    w.delivery
        .on_requested(&w.requested(2, reminder(), Category::Marketing))
        .await
        .expect("deliver");

    let docs = buffer.documents();
    assert_eq!(docs.len(), 2, "{docs:?}");
    let sent = &docs[0];
    assert_eq!(sent["MessagesSent"], json!(1.0));
    assert_eq!(sent["Channel"], "email");
    assert_eq!(sent["Category"], "transactional");
    let directive = &sent["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Crm");
    assert_eq!(directive["Dimensions"], json!([["Channel"]]));
    assert_eq!(
        directive["Metrics"],
        json!([{ "Name": "MessagesSent", "Unit": "Count" }])
    );
    assert_eq!(sent["_aws"]["Timestamp"], json!(w.clock.now().timestamp_millis()));
    let suppressed = &docs[1];
    assert_eq!(suppressed["MessagesSuppressed"], json!(1.0));
    assert_eq!(suppressed["Channel"], "email");
    assert_eq!(suppressed["Reason"], "no-consent");
    assert_eq!(suppressed["CampaignId"], "abandoned-cart");
    assert!(suppressed.get("MessagesSent").is_none());
}

#[tokio::test]
async fn a_deferral_is_counted_with_its_reason() {
    let (w, buffer) = World::new().await.metered();
    w.quiet_in_berlin_from_noon_to_half_past_two().await;
    w.delivery
        .on_requested(&w.requested(1, reminder(), Category::Marketing))
        .await
        .expect("deliver");
    let docs = buffer.documents();
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["MessagesDeferred"], json!(1.0));
    assert_eq!(docs[0]["Reason"], "quiet-hours");
}
