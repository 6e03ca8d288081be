//! The channel service over the in-memory stores and a recording provider
//! (domain tests): effectively once under redelivery, throttling retried,
//! permanent failures parked, quiet hours deferred and handed back, unknown
//! outcomes settled by SES feedback or the settle check (decision 0032).

use super::*;
use crate::clock::VirtualClock;
use crate::consent::{Channel, Purpose};
use crate::consumer::Consumer;
use crate::customer::Customer;
use crate::customer::*;
use crate::event::{envelopes, Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::messaging::events::{message_stream, DeferralReason, MessageEvent, MessageRequest, RequestRef};
use crate::messaging::provider::{
    EmailMessage, EmailProvider, ProviderError, ProviderReceipt, PushMessage, PushProvider, SmsMessage, SmsProvider,
};
use crate::messaging::render;
use crate::messaging::unsubscribe::TokenSigner;
use crate::metrics::names as metric;
use crate::ports::{AppendRequest, EventStore, ExpectedVersion};
use crate::preferences::{EmailFrequency, Preferences, QuietHours};
use crate::privacy::IdentifierHasher;
use crate::scheduler::{timer_name, TimerKind, TimerPayload};
use crate::testing::{raw_event, InMemoryDeadLetters, InMemoryEventStore, InMemoryReadModels, InMemoryScheduler};
use crate::vocabulary::Category;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;

const CUSTOMER: &str = "00000000-0000-7000-8000-0000000000a1";

/// Records what it takes (`sent`); answers from a script of errors first:
/// `script` fails before taking the message (nothing sent), `lost_answers`
/// after taking it (sent, but the caller hears only the error).
#[derive(Default)]
struct RecordingProvider {
    sent: Mutex<Vec<String>>,
    script: Mutex<VecDeque<ProviderError>>,
    lost_answers: Mutex<VecDeque<ProviderError>>,
    emails: Mutex<Vec<EmailMessage>>,
}

impl RecordingProvider {
    fn answer(&self, message_id: &str) -> Result<ProviderReceipt, ProviderError> {
        if let Some(e) = self.script.lock().expect("lock").pop_front() {
            return Err(e);
        }
        let mut sent = self.sent.lock().expect("lock");
        sent.push(message_id.to_string());
        if let Some(e) = self.lost_answers.lock().expect("lock").pop_front() {
            return Err(e);
        }
        Ok(ProviderReceipt {
            provider_message_id: format!("p-{}", sent.len()),
        })
    }
    fn fail_before_taking(&self, errors: impl IntoIterator<Item = ProviderError>) {
        self.script.lock().expect("lock").extend(errors);
    }
    fn lose_answer(&self, error: ProviderError) {
        self.lost_answers.lock().expect("lock").push_back(error);
    }
    /// How many times it was asked to send an email (taken or not).
    fn email_calls(&self) -> usize {
        self.emails.lock().expect("lock").len()
    }
    fn times_sent(&self, message_id: &str) -> usize {
        self.sent().iter().filter(|m| *m == message_id).count()
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
    /// The stored events as they are kept (ciphertext in an encrypted world).
    events: Arc<InMemoryEventStore>,
    /// The event store the delivery uses: `events`, or an encrypting store over it.
    store: Arc<dyn EventStore>,
    docs: Arc<InMemoryReadModels>,
    scheduler: Arc<InMemoryScheduler>,
    clock: Arc<VirtualClock>,
    provider: Arc<RecordingProvider>,
    dead_letters: Arc<InMemoryDeadLetters>,
    delivery: MessageDelivery,
}

impl World {
    /// This world with the delivery's metrics counted into the returned buffer.
    fn metered(mut self) -> (World, crate::metrics::RecordedMetrics) {
        let buffer = crate::metrics::RecordedMetrics::default();
        self.delivery = self.delivery.with_metrics(Arc::new(buffer.clone()));
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
        Self::build(
            None,
            crate::testing::registration("ana@example.com", "Ana", "Lima", "Europe/Berlin"),
        )
        .await
    }

    /// A world whose events are encrypted at rest under `keys` (the
    /// delivery reads them decrypted), with `registration` as the customer.
    async fn build(
        keys: Option<Arc<crate::privacy::memory::InMemoryKeyStore>>,
        registration: RegisterCustomer,
    ) -> World {
        let events = Arc::new(InMemoryEventStore::default());
        let store: Arc<dyn EventStore> = match keys {
            Some(keys) => Arc::new(crate::privacy::EncryptingEventStore::new(events.clone(), keys)),
            None => events.clone(),
        };
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
            store.clone(),
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
            store,
            docs,
            scheduler,
            clock,
            provider,
            dead_letters,
            delivery,
        };
        world.command(CustomerCommand::Register(registration)).await;
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
        self.requested_on(n, Channel::Email, template, category)
    }

    /// A MessageRequested for `channel`.
    fn requested_on(&self, n: u32, channel: Channel, template: &str, category: Category) -> EventEnvelope {
        let request = MessageRequest {
            message_id: format!("msg-{n}"),
            instance_id: format!("i-{n}"),
            campaign_id: "abandoned-cart".into(),
            campaign_version: 1,
            step_id: "reminder".into(),
            customer_id: CUSTOMER.into(),
            channel,
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

    /// The request, stored on its journey stream as the journey engine
    /// stores it (where a settle check reads it back to send it again).
    async fn stored(&self, request: EventEnvelope) -> EventEnvelope {
        self.store
            .append(AppendRequest {
                stream_id: request.stream_id.clone(),
                expected: ExpectedVersion::Any,
                events: vec![request],
                reservations: Vec::new(),
                receipt: None,
            })
            .await
            .expect("append the request")
            .events
            .remove(0)
    }

    /// A claim with no outcome after it, as a delivery that crashed right
    /// after claiming leaves it.
    async fn claim_and_crash(&self, request: &EventEnvelope) {
        let request = MessageRequest::from_envelope(request).expect("request");
        let claim = MessageEvent::claim(&request, "0".repeat(64));
        self.append_by_hand(&request.message_id, ExpectedVersion::NoStream, &[claim])
            .await;
    }

    /// Appends `events` to the message stream of `message_id` as the
    /// channel would (what a run that died part way had appended).
    async fn append_by_hand(&self, message_id: &str, expected: ExpectedVersion, events: &[MessageEvent]) {
        let stream = message_stream(message_id);
        let meta = CommandMeta::new(Actor::system("channel"));
        let events = envelopes(&stream, Some(CUSTOMER), events, &meta, self.clock.now()).expect("envelopes");
        self.events
            .append(AppendRequest {
                stream_id: stream,
                expected,
                events,
                reservations: Vec::new(),
                receipt: None,
            })
            .await
            .expect("append by hand");
    }

    /// An order confirmation (`msg-1`) stored, claimed by a delivery that
    /// crashed right after, and delivered again (which finds the claim,
    /// sends nothing and sets the settle check): the request and the check.
    async fn order_confirmation_left_claimed(&self) -> (EventEnvelope, TimerPayload) {
        let request = self
            .stored(self.requested(1, "order-confirmation", Category::Transactional))
            .await;
        self.claim_and_crash(&request).await;
        assert_eq!(
            self.delivery.on_requested(&request).await.expect("redelivery"),
            DeliveryOutcome::Duplicate
        );
        let check = self.message_timer("msg-1").expect("a settle check");
        (request, check)
    }

    /// The pending timer of the message (a deferral or a settle check).
    fn message_timer(&self, message_id: &str) -> Option<TimerPayload> {
        let name = timer_name(TimerKind::MessageDeferral, &[message_id]);
        self.scheduler.pending().into_iter().find(|t| t.name == name)
    }

    /// Fires `timer` as the bus hands it to the channel.
    async fn fire(&self, timer: &TimerPayload) {
        use crate::scheduler::TimerHandler;
        self.delivery.on_timer(timer).await.expect("timer handled");
    }

    /// An order confirmation (`msg-<n>`) whose send fails in a way that
    /// proves nothing was sent (the provider's script): the claim is given
    /// back, the delivery is retried, and the next delivery sends it.
    async fn given_back_then_sent(&self, n: u32) {
        let request = self.requested(n, "order-confirmation", Category::Transactional);
        assert!(matches!(
            self.delivery.on_requested(&request).await,
            Err(DeliveryError::Retry(_))
        ));
        assert!(matches!(
            self.delivery.on_requested(&request).await.expect("again"),
            DeliveryOutcome::Sent { .. }
        ));
        assert_eq!(
            self.stream_types(&format!("msg-{n}")).await,
            vec!["MessageClaimed", "MessageFailed", "MessageClaimed", "MessageSent"]
        );
    }

    /// The request and `timers` come again (all are delivered at least
    /// once): the request finds its message handled.
    async fn again(&self, request: &EventEnvelope, timers: &[&TimerPayload]) {
        for timer in timers {
            self.fire(timer).await;
        }
        assert_eq!(
            self.delivery.on_requested(request).await.expect("again"),
            DeliveryOutcome::Duplicate
        );
    }

    /// An order confirmation (`msg-1`) whose send ends unknown, and whose
    /// settle check, at the end of the 15-minute window, sends it again:
    /// the request, the first check, and the check the resend set if it
    /// ended unknown too.
    async fn order_confirmation_sent_again(&self) -> (EventEnvelope, TimerPayload, TimerPayload) {
        let request = self
            .stored(self.requested(1, "order-confirmation", Category::Transactional))
            .await;
        assert_eq!(
            self.delivery.on_requested(&request).await.expect("deliver"),
            DeliveryOutcome::OutcomeUnknown
        );
        let first = self.message_timer("msg-1").expect("the first settle check");
        assert_eq!(first.due_at, self.clock.now() + Duration::minutes(15));
        self.clock.advance(Duration::minutes(15));
        self.fire(&first).await;
        let second = self.message_timer("msg-1").expect("the resend's settle check");
        (request, first, second)
    }

    /// SES's `Send` event for message `msg-<n>`, as the channel records it.
    async fn ses_send(&self, n: u32, feedback_id: &str) -> FeedbackOutcome {
        let accepted = MessageEvent::MessageAccepted {
            message_id: format!("msg-{n}"),
            customer_id: CUSTOMER.into(),
            provider_message_id: format!("ses-{n}"),
        };
        self.delivery
            .record_feedback(accepted, "ana@example.com", feedback_id)
            .await
            .expect("record")
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
    w.provider.fail_before_taking([
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
        .fail_before_taking([ProviderError::Unavailable("down".into())]);
    w.given_back_then_sent(2).await;

    w.provider
        .fail_before_taking([ProviderError::Rejected("bad address".into())]);
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
    let request = w.stored(w.requested(1, reminder(), Category::Marketing)).await;
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
    // The deferral and its timer name where the request is stored, and hold
    // nothing of it (decision 0041).
    let stored_at = RequestRef {
        message_id: "msg-1".into(),
        stream_id: "journey-i-1".into(),
        version: Some(request.version),
    };
    assert_eq!(
        MessageTimer::of(&timers[0]),
        Some(MessageTimer::Deferral(stored_at.clone()))
    );
    assert_eq!(timers[0].data, json!({ "deferral": stored_at }));
    let deferred = w
        .events
        .read_stream(&message_stream("msg-1"), 0, 10)
        .await
        .expect("read");
    assert_eq!(deferred[0].schema_version, 2);
    assert_eq!(
        deferred[0].data["requested"],
        json!({ "message_id": "msg-1", "stream_id": "journey-i-1", "version": request.version })
    );
    assert!(deferred[0].data.get("request").is_none(), "{}", deferred[0].data);
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
    let sent_set = &buffer.sets()[0];
    assert_eq!(sent_set.dimensions, vec![("Channel", "email".to_string())]);
    assert_eq!(
        sent_set.metrics,
        vec![crate::metrics::Metric {
            name: "MessagesSent",
            unit: crate::metrics::Unit::Count,
            value: 1.0
        }]
    );
    assert_eq!(sent_set.timestamp, w.clock.now());
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

// ---------------------------------------------------------------------------
// Unknown outcomes (decision 0032).

fn timeout() -> ProviderError {
    ProviderError::OutcomeUnknown("SES SendEmail: timeout".into())
}

fn server_error() -> ProviderError {
    ProviderError::OutcomeUnknown("SES SendEmail: InternalFailure (HTTP 500)".into())
}

/// What a settle check timer names (the message, where its request is stored).
fn settle_check(timer: &TimerPayload) -> RequestRef {
    match MessageTimer::of(timer) {
        Some(MessageTimer::Settle(check)) => check,
        other => panic!("not a settle check: {other:?}"),
    }
}

/// `MessageOutcomeUnknown` then whatever settles it.
const UNKNOWN: [&str; 2] = ["MessageClaimed", "MessageOutcomeUnknown"];

#[tokio::test]
async fn an_answer_lost_after_ses_took_the_email_keeps_the_claim_and_its_send_event_settles_it() {
    let w = World::new().await;
    w.provider.lose_answer(timeout());
    let request = w
        .stored(w.requested(1, "order-confirmation", Category::Transactional))
        .await;
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("deliver"),
        DeliveryOutcome::OutcomeUnknown
    );
    assert_eq!(w.stream_types("msg-1").await, UNKNOWN);
    // The claim holds: redeliveries send nothing.
    for _ in 0..3 {
        assert_eq!(
            w.delivery.on_requested(&request).await.expect("again"),
            DeliveryOutcome::Duplicate
        );
    }
    // The settle check waits for the end of the window after the claim.
    let check = w.message_timer("msg-1").expect("a settle check");
    assert_eq!(check.due_at, w.clock.now() + Duration::minutes(15));
    assert_eq!(check.kind, TimerKind::MessageDeferral);
    assert_eq!(check.data["settle"]["message_id"], "msg-1");

    // SES's Send comes seconds later: sent, and counted for the caps.
    w.clock.advance(Duration::seconds(5));
    assert_eq!(w.ses_send(1, "send-1").await, FeedbackOutcome::Recorded);
    assert_eq!(w.ses_send(1, "send-1").await, FeedbackOutcome::Duplicate);
    let settled = [UNKNOWN.as_slice(), &["MessageAccepted", "MessageSent"]].concat();
    assert_eq!(w.stream_types("msg-1").await, settled);
    let recent = recent_sends(w.docs.as_ref(), CUSTOMER, w.clock.now())
        .await
        .expect("log");
    assert_eq!(recent.len(), 1, "{recent:?}");
    let sent = w
        .events
        .read_stream(&message_stream("msg-1"), 0, 10)
        .await
        .expect("read");
    assert_eq!(sent[3].data["provider_message_id"], "ses-1");

    // The check, when it fires (twice: timers come at least once), does nothing.
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    w.fire(&check).await;
    assert_eq!(w.stream_types("msg-1").await, settled);
    assert_eq!(w.provider.times_sent("msg-1"), 1);
}

#[tokio::test]
async fn no_send_event_within_the_window_means_ses_never_took_it_and_it_is_sent_again() {
    let (w, buffer) = World::new().await.metered();
    // A 500 before SES took it: the caller cannot tell.
    w.provider.fail_before_taking([server_error()]);
    let request = w
        .stored(w.requested(1, "order-confirmation", Category::Transactional))
        .await;
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("deliver"),
        DeliveryOutcome::OutcomeUnknown
    );
    assert_eq!(w.provider.times_sent("msg-1"), 0);
    let check = w.message_timer("msg-1").expect("a settle check");

    // Fired early (or redelivered early): it waits for the window's end.
    use crate::scheduler::TimerHandler;
    let settle = settle_check(&check);
    assert_eq!(
        w.delivery.on_settle_timer(&check, &settle).await.expect("early"),
        SettleOutcome::Waiting { until: check.due_at }
    );

    // The scheduler's whole seconds may fire it a moment before the end.
    w.clock.advance(Duration::minutes(15) - Duration::milliseconds(600));
    assert!(matches!(
        w.delivery.on_settle_timer(&check, &settle).await.expect("check"),
        SettleOutcome::Resent(DeliveryOutcome::Sent { .. })
    ));
    let resent = [
        UNKNOWN.as_slice(),
        &["MessageNotAccepted", "MessageClaimed", "MessageSent"],
    ]
    .concat();
    assert_eq!(w.stream_types("msg-1").await, resent);
    assert_eq!(w.provider.sent(), vec!["msg-1"]);

    // Duplicates of the timer, the request and a late Send change nothing.
    w.delivery.on_timer(&check).await.expect("again");
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("again"),
        DeliveryOutcome::Duplicate
    );
    assert_eq!(w.ses_send(1, "send-late").await, FeedbackOutcome::Duplicate);
    assert_eq!(w.stream_types("msg-1").await, resent);
    assert_eq!(w.provider.times_sent("msg-1"), 1);

    let names: Vec<String> = buffer
        .sets()
        .iter()
        .flat_map(|set| set.metrics.iter().map(|m| m.name.to_string()))
        .collect();
    assert_eq!(
        names,
        vec![
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            metric::MESSAGES_SENT,
            outcome_metrics::MESSAGES_RESENT
        ]
    );
    assert_eq!(buffer.documents()[0]["Reason"], "provider-error");
    assert_eq!(
        buffer.documents()[0][outcome_metrics::SETTLEMENT],
        outcome_metrics::settlement::SETTLE_CHECK
    );
    assert_eq!(buffer.documents()[2]["Send"], "2");
}

/// The documents of `buffer` that count `name`.
fn counted(buffer: &crate::metrics::RecordedMetrics, name: &str) -> Vec<Value> {
    buffer
        .documents()
        .into_iter()
        .filter(|d| d.get(name).is_some())
        .collect()
}

/// Property `property` of each document of `buffer` that counts `name`.
fn counted_with(buffer: &crate::metrics::RecordedMetrics, name: &str, property: &str) -> Vec<String> {
    counted(buffer, name)
        .iter()
        .map(|d| d[property].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Three sends, each claimed and each unknown, the first two given back.
const THREE_UNKNOWN_SENDS: [&str; 8] = [
    "MessageClaimed",
    "MessageOutcomeUnknown",
    "MessageNotAccepted",
    "MessageClaimed",
    "MessageOutcomeUnknown",
    "MessageNotAccepted",
    "MessageClaimed",
    "MessageOutcomeUnknown",
];

#[tokio::test]
async fn an_email_ses_never_took_is_sent_again_with_a_growing_window_until_its_send_event_settles_it() {
    let (w, buffer) = World::new().await.metered();
    // SES answers 500 before taking it, twice; the third send it takes,
    // and that answer is lost.
    w.provider.fail_before_taking([server_error(), server_error()]);
    w.provider.lose_answer(timeout());
    // No Send within 15 minutes: sent again, unknown again; its check waits
    // twice as long.
    let (request, first, second) = w.order_confirmation_sent_again().await;
    assert_eq!(second.set_at_version, 4, "the resend's claim");
    assert_eq!(second.due_at, w.clock.now() + Duration::minutes(30));
    // Fired after the first window's length: not yet.
    w.clock.advance(Duration::minutes(15));
    let settle = settle_check(&second);
    assert_eq!(
        w.delivery.on_settle_timer(&second, &settle).await.expect("early"),
        SettleOutcome::Waiting { until: second.due_at }
    );

    // No Send within 30 minutes either: the third and last send.
    w.clock.advance(Duration::minutes(15));
    w.fire(&second).await;
    assert_eq!(w.stream_types("msg-1").await, THREE_UNKNOWN_SENDS);
    assert_eq!(w.provider.email_calls(), 3, "three calls");
    assert_eq!(w.provider.times_sent("msg-1"), 1, "SES took the third");

    // Its Send settles it as sent.
    w.clock.advance(Duration::seconds(5));
    assert_eq!(w.ses_send(1, "send-3").await, FeedbackOutcome::Recorded);
    let settled = [THREE_UNKNOWN_SENDS.as_slice(), &["MessageAccepted", "MessageSent"]].concat();
    assert_eq!(w.stream_types("msg-1").await, settled);
    // Nothing more: both checks and the request come again.
    w.clock.advance(Duration::hours(2));
    w.again(&request, &[&first, &second]).await;
    assert_eq!(w.stream_types("msg-1").await, settled);
    assert_eq!(w.provider.email_calls(), 3);

    use outcome_metrics::settlement;
    assert_eq!(
        counted_with(
            &buffer,
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            outcome_metrics::SETTLEMENT
        ),
        vec![settlement::SETTLE_CHECK, settlement::SETTLE_CHECK, settlement::GIVEN_UP]
    );
    assert_eq!(
        counted_with(&buffer, outcome_metrics::MESSAGES_RESENT, "Send"),
        vec!["2", "3"]
    );
    assert_eq!(
        counted_with(&buffer, metric::MESSAGES_SENT, "Reason"),
        vec!["settled-by-feedback"]
    );
}

#[tokio::test]
async fn an_email_is_given_up_after_its_last_allowed_send_and_never_sent_a_fourth_time() {
    let (w, buffer) = World::new().await.metered();
    w.provider
        .fail_before_taking([server_error(), server_error(), server_error()]);
    let (request, first, second) = w.order_confirmation_sent_again().await;
    w.clock.advance(Duration::minutes(30));
    w.fire(&second).await;
    assert_eq!(w.stream_types("msg-1").await, THREE_UNKNOWN_SENDS);
    let events = w
        .events
        .read_stream(&message_stream("msg-1"), 0, 10)
        .await
        .expect("read");
    assert!(events[1].data["settle_by"].is_string(), "{:?}", events[1].data);
    assert!(events[4].data["settle_by"].is_string(), "{:?}", events[4].data);
    assert!(events[7].data["settle_by"].is_null(), "given up: {:?}", events[7].data);
    // No check for the last claim: the message's timer is still the second's.
    let pending = w.message_timer("msg-1").expect("the second check");
    assert_eq!(pending.set_at_version, second.set_at_version);

    // Duplicates of both checks and of the request, hours later, send
    // nothing and set no check.
    w.clock.advance(Duration::hours(3));
    w.again(&request, &[&first, &second]).await;
    assert_eq!(w.stream_types("msg-1").await, THREE_UNKNOWN_SENDS);
    assert_eq!(w.provider.email_calls(), 3, "three calls, no fourth");
    assert_eq!(
        w.message_timer("msg-1").map(|t| t.set_at_version),
        Some(second.set_at_version)
    );

    // Given up: counted (the alarm is on MessageOutcomesUnknown).
    use outcome_metrics::settlement;
    let unknown = counted(&buffer, outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN);
    assert_eq!(unknown.len(), 3, "{unknown:?}");
    assert_eq!(unknown[2][outcome_metrics::SETTLEMENT], settlement::GIVEN_UP);
    assert_eq!(unknown[2]["Channel"], "email");
    assert_eq!(unknown[2]["Reason"], "provider-error");
    assert_eq!(counted(&buffer, outcome_metrics::MESSAGES_RESENT).len(), 2);
}

#[tokio::test]
async fn a_send_event_arriving_after_a_resend_was_decided_causes_no_further_send() {
    let w = World::new().await;
    // SES took the first send, the answer was lost, and its Send lags
    // behind the window (a backlog on the feedback path).
    w.provider.lose_answer(timeout());
    w.provider.lose_answer(timeout());
    let (request, first, second) = w.order_confirmation_sent_again().await;
    // The duplicate this risk costs (decision 0032).
    assert_eq!(w.provider.times_sent("msg-1"), 2);
    // The first send's Send arrives now: it settles the message as sent.
    assert_eq!(w.ses_send(1, "send-1").await, FeedbackOutcome::Recorded);
    let settled = [
        UNKNOWN.as_slice(),
        &["MessageNotAccepted"],
        UNKNOWN.as_slice(),
        &["MessageAccepted", "MessageSent"],
    ]
    .concat();
    assert_eq!(w.stream_types("msg-1").await, settled);
    // The resend's own Send changes nothing, nor does its check.
    assert_eq!(w.ses_send(1, "send-2").await, FeedbackOutcome::Duplicate);
    w.clock.advance(Duration::minutes(30));
    w.again(&request, &[&second, &first]).await;
    assert_eq!(w.stream_types("msg-1").await, settled);
    assert_eq!(w.provider.times_sent("msg-1"), 2, "no third send");

    // The Send lands between the check's `MessageNotAccepted` and the
    // resend's claim (the check's run died in between): no resend at all.
    w.provider.lose_answer(timeout());
    let request = w
        .stored(w.requested(2, "order-confirmation", Category::Transactional))
        .await;
    w.delivery.on_requested(&request).await.expect("deliver");
    let check = w.message_timer("msg-2").expect("a settle check");
    w.clock.advance(Duration::minutes(15));
    let not_accepted = MessageEvent::MessageNotAccepted {
        message_id: "msg-2".into(),
        customer_id: CUSTOMER.into(),
        channel: Channel::Email,
        reason: "SES reported nothing (no Send) within 900 s of send 1".into(),
    };
    w.append_by_hand("msg-2", ExpectedVersion::Exactly(2), &[not_accepted])
        .await;
    assert_eq!(w.ses_send(2, "send-1-of-2").await, FeedbackOutcome::Recorded);
    let settle = settle_check(&check);
    assert_eq!(
        w.delivery.on_settle_timer(&check, &settle).await.expect("check"),
        SettleOutcome::Settled
    );
    w.again(&request, &[]).await;
    assert_eq!(
        w.stream_types("msg-2").await,
        [
            UNKNOWN.as_slice(),
            &["MessageNotAccepted", "MessageAccepted", "MessageSent"]
        ]
        .concat()
    );
    assert_eq!(w.provider.times_sent("msg-2"), 1);
}

#[test]
fn resends_are_bounded_and_each_window_is_longer() {
    let settings = DeliverySettings::default();
    assert_eq!(settings.max_email_sends, 3);
    let windows: Vec<Duration> = (0..3).map(|n| settings.settle_window_for(n)).collect();
    assert_eq!(
        windows,
        vec![Duration::minutes(15), Duration::minutes(30), Duration::minutes(60)]
    );
    // Email only, and three sends at the most.
    let may: Vec<bool> = (0..4).map(|n| settings.may_resend(Channel::Email, n)).collect();
    assert_eq!(may, vec![true, true, false, false]);
    assert!(!settings.may_resend(Channel::Sms, 0));
    assert!(!settings.may_resend(Channel::Push, 0));
    for sends in [0, 1] {
        let once = DeliverySettings {
            max_email_sends: sends,
            ..DeliverySettings::default()
        };
        assert!(!once.may_resend(Channel::Email, 0), "{sends}");
    }
    for growth in [0, 1] {
        let fixed = DeliverySettings {
            settle_window_growth: growth,
            ..DeliverySettings::default()
        };
        assert_eq!(fixed.settle_window_for(5), Duration::minutes(15), "{growth}");
    }
    // A grown window stops at a day; a longer base window is kept.
    assert_eq!(settings.settle_window_for(10), Duration::days(1));
    assert_eq!(settings.settle_window_for(usize::MAX), Duration::days(1));
    let long = DeliverySettings {
        settle_window: Duration::days(2),
        ..DeliverySettings::default()
    };
    assert_eq!(long.settle_window_for(2), Duration::days(2));
}

#[tokio::test]
async fn errors_that_prove_nothing_was_sent_release_the_claim_at_once() {
    let w = World::new().await;
    // Throttled on every in-process attempt: given back, sent on redelivery.
    w.provider.fail_before_taking([
        ProviderError::Throttled("slow down".into()),
        ProviderError::Throttled("slow down".into()),
        ProviderError::Throttled("slow down".into()),
    ]);
    w.given_back_then_sent(1).await;
    // A 4xx about the message: failed for good at once.
    w.provider
        .fail_before_taking([ProviderError::Rejected("InvalidParameter (HTTP 400)".into())]);
    let rejected = w.requested(2, "order-confirmation", Category::Transactional);
    assert_eq!(
        w.delivery.on_requested(&rejected).await.expect("deliver"),
        DeliveryOutcome::Failed
    );
    assert_eq!(w.stream_types("msg-2").await, vec!["MessageClaimed", "MessageFailed"]);
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
    assert!(
        w.scheduler.pending().is_empty(),
        "no settle checks: {:?}",
        w.scheduler.pending()
    );
}

#[tokio::test]
async fn delivery_feedback_settles_an_unknown_outcome_when_the_send_event_is_missing() {
    let w = World::new().await;
    w.provider.lose_answer(timeout());
    let request = w.stored(w.requested(1, reminder(), Category::Marketing)).await;
    w.delivery.on_requested(&request).await.expect("deliver");
    let delivered = MessageEvent::EmailDelivered {
        message_id: "msg-1".into(),
        customer_id: CUSTOMER.into(),
    };
    let outcome = w
        .delivery
        .record_feedback(delivered.clone(), "ana@example.com", "delivery-1")
        .await
        .expect("record");
    assert_eq!(outcome, FeedbackOutcome::Recorded);
    let again = w
        .delivery
        .record_feedback(delivered, "ana@example.com", "delivery-1")
        .await;
    assert_eq!(again.expect("record"), FeedbackOutcome::Duplicate);
    let settled = [UNKNOWN.as_slice(), &["MessageSent", "EmailDelivered"]].concat();
    assert_eq!(w.stream_types("msg-1").await, settled);
    let check = w.message_timer("msg-1").expect("a settle check");
    w.clock.advance(Duration::minutes(20));
    w.fire(&check).await;
    assert_eq!(w.stream_types("msg-1").await, settled);
    assert_eq!(w.provider.times_sent("msg-1"), 1);
}

#[tokio::test]
async fn a_send_event_for_a_message_already_recorded_sent_writes_nothing() {
    let w = World::new().await;
    w.delivery
        .on_requested(&w.requested(1, "order-confirmation", Category::Transactional))
        .await
        .expect("deliver");
    assert_eq!(w.ses_send(1, "send-1").await, FeedbackOutcome::Duplicate);
    // Nor for a message never claimed here.
    assert_eq!(w.ses_send(7, "send-7").await, FeedbackOutcome::Duplicate);
    assert_eq!(w.stream_types("msg-1").await, vec!["MessageClaimed", "MessageSent"]);
    assert!(w.stream_types("msg-7").await.is_empty());
    // A Reject after the send is recorded (it never went out).
    let rejected = MessageEvent::MessageContentRejected {
        message_id: "msg-1".into(),
        customer_id: CUSTOMER.into(),
        reason: "Bad content".into(),
    };
    let outcome = w
        .delivery
        .record_feedback(rejected, "ana@example.com", "reject-1")
        .await;
    assert_eq!(outcome.expect("record"), FeedbackOutcome::Recorded);
    assert_eq!(
        w.stream_types("msg-1").await,
        vec!["MessageClaimed", "MessageSent", "MessageContentRejected"]
    );
}

#[tokio::test]
async fn a_claim_left_by_a_crash_is_stale_when_its_window_ends_and_the_email_is_sent_again() {
    let (w, buffer) = World::new().await.metered();
    // The request was never acknowledged, so it comes again: it finds the
    // claim, sends nothing, and makes sure the settle check exists.
    let (_, check) = w.order_confirmation_left_claimed().await;
    assert_eq!(check.due_at, w.clock.now() + Duration::minutes(15));
    assert!(w.provider.sent().is_empty());

    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    assert_eq!(
        w.stream_types("msg-1").await,
        vec![
            "MessageClaimed",
            "MessageOutcomeUnknown",
            "MessageNotAccepted",
            "MessageClaimed",
            "MessageSent"
        ]
    );
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
    w.fire(&check).await;
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
    let docs = buffer.documents();
    let stale: Vec<_> = docs
        .iter()
        .filter(|d| d.get(outcome_metrics::STALE_MESSAGE_CLAIMS).is_some())
        .collect();
    assert_eq!(stale.len(), 1, "{docs:?}");
    assert_eq!(stale[0]["Channel"], "email");
    assert_eq!(stale[0]["Reason"], "stale-claim");
    assert_eq!(
        counted_with(
            &buffer,
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            outcome_metrics::SETTLEMENT
        ),
        vec![outcome_metrics::settlement::RESEND]
    );
}

#[tokio::test]
async fn a_claim_left_by_a_crash_after_ses_took_the_email_is_settled_by_its_send_event() {
    let w = World::new().await;
    let (_, check) = w.order_confirmation_left_claimed().await;
    assert_eq!(w.ses_send(1, "send-1").await, FeedbackOutcome::Recorded);
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    assert_eq!(
        w.stream_types("msg-1").await,
        vec!["MessageClaimed", "MessageAccepted", "MessageSent"]
    );
    assert!(
        w.provider.sent().is_empty(),
        "the crashed delivery sent it; nothing more"
    );
}

#[tokio::test]
async fn a_settle_check_that_cannot_be_scheduled_is_set_by_the_redelivery() {
    let w = World::new().await;
    w.provider.fail_before_taking([server_error()]);
    let request = w
        .stored(w.requested(1, "order-confirmation", Category::Transactional))
        .await;
    w.scheduler
        .fail_with(Some(crate::scheduler::SchedulerError::Unavailable("down".into())));
    assert!(matches!(
        w.delivery.on_requested(&request).await,
        Err(DeliveryError::Retry(_))
    ));
    assert_eq!(w.stream_types("msg-1").await, UNKNOWN);
    w.scheduler.fail_with(None);
    assert_eq!(
        w.delivery.on_requested(&request).await.expect("redelivery"),
        DeliveryOutcome::Duplicate
    );
    let check = w.message_timer("msg-1").expect("the settle check, set now");
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
}

#[tokio::test]
async fn sns_unknown_outcomes_are_recorded_counted_and_never_sent_again() {
    let (w, buffer) = World::new().await.metered();
    w.command(CustomerCommand::RegisterPushDevice(RegisterPushDevice {
        platform: "fcm".into(),
        token: "device-1".into(),
    }))
    .await;
    w.command(CustomerCommand::UpdateProfile(UpdateProfile {
        phone: Some(Some("+4915112345678".into())),
        ..UpdateProfile::default()
    }))
    .await;
    // Push: SNS took it, the answer was lost. SMS: SNS never took it.
    w.provider
        .lose_answer(ProviderError::OutcomeUnknown("SNS Publish (push): timeout".into()));
    let push = w
        .stored(w.requested_on(1, Channel::Push, "order-shipped-push", Category::Transactional))
        .await;
    assert_eq!(
        w.delivery.on_requested(&push).await.expect("deliver"),
        DeliveryOutcome::OutcomeUnknown
    );
    w.provider
        .fail_before_taking([ProviderError::OutcomeUnknown("SNS Publish (SMS): HTTP 500".into())]);
    let sms = w
        .stored(w.requested_on(2, Channel::Sms, "checkout-abandonment-sms", Category::Transactional))
        .await;
    assert_eq!(
        w.delivery.on_requested(&sms).await.expect("deliver"),
        DeliveryOutcome::OutcomeUnknown
    );
    // No settle check: nothing could settle them.
    assert!(w.scheduler.pending().is_empty(), "{:?}", w.scheduler.pending());
    w.clock.advance(Duration::hours(1));
    for request in [&push, &sms] {
        assert_eq!(
            w.delivery.on_requested(request).await.expect("again"),
            DeliveryOutcome::Duplicate
        );
    }
    assert!(w.scheduler.pending().is_empty());
    assert_eq!(w.stream_types("msg-1").await, UNKNOWN);
    assert_eq!(w.stream_types("msg-2").await, UNKNOWN);
    let events = w
        .events
        .read_stream(&message_stream("msg-2"), 0, 10)
        .await
        .expect("read");
    assert!(events[1].data["settle_by"].is_null());
    assert_eq!(w.provider.sent(), vec!["msg-1"], "at most once");
    assert_eq!(
        counted_with(&buffer, outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN, "Channel"),
        vec!["push", "sms"]
    );
    assert_eq!(
        counted_with(
            &buffer,
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            outcome_metrics::SETTLEMENT
        ),
        vec![outcome_metrics::settlement::AT_MOST_ONCE; 2]
    );
}

#[tokio::test]
async fn a_stale_sms_claim_is_recorded_unknown_and_never_sent() {
    let (w, buffer) = World::new().await.metered();
    w.command(CustomerCommand::UpdateProfile(UpdateProfile {
        phone: Some(Some("+4915112345678".into())),
        ..UpdateProfile::default()
    }))
    .await;
    let sms = w
        .stored(w.requested_on(1, Channel::Sms, "checkout-abandonment-sms", Category::Transactional))
        .await;
    w.claim_and_crash(&sms).await;
    w.delivery.on_requested(&sms).await.expect("redelivery");
    let check = w.message_timer("msg-1").expect("a settle check");
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    w.fire(&check).await;
    assert_eq!(w.stream_types("msg-1").await, UNKNOWN);
    assert!(w.provider.sent().is_empty());
    // Later redeliveries neither send nor set another check.
    w.scheduler.cancel(&check.name).await.expect("fired");
    w.delivery.on_requested(&sms).await.expect("redelivery");
    assert!(w.scheduler.pending().is_empty());
    let docs = buffer.documents();
    let counted: Vec<&str> = docs
        .iter()
        .flat_map(|d| {
            [
                outcome_metrics::STALE_MESSAGE_CLAIMS,
                outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            ]
            .into_iter()
            .filter(|name| d.get(*name).is_some())
        })
        .collect();
    assert_eq!(
        counted,
        vec![
            outcome_metrics::STALE_MESSAGE_CLAIMS,
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN
        ]
    );
}

#[tokio::test]
async fn a_resend_goes_through_the_pipeline_again() {
    let w = World::new().await;
    w.provider.fail_before_taking([server_error()]);
    let request = w.stored(w.requested(1, reminder(), Category::Marketing)).await;
    w.delivery.on_requested(&request).await.expect("deliver");
    let check = w.message_timer("msg-1").expect("a settle check");
    // The customer unsubscribed within the window: the resend is suppressed.
    w.command(CustomerCommand::RevokeConsent(RevokeConsent {
        purpose: Purpose::Marketing,
        channel: Channel::Email,
        reason: "test".into(),
        method: None,
    }))
    .await;
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    assert_eq!(
        w.stream_types("msg-1").await,
        [UNKNOWN.as_slice(), &["MessageNotAccepted", "MessageSuppressed"]].concat()
    );
    assert!(w.provider.sent().is_empty());
}

#[test]
fn the_settle_window_setting_is_whole_seconds() {
    assert_eq!(DeliverySettings::default().settle_window, Duration::minutes(15));
    assert_eq!(
        DeliverySettings::parse_settle_window(" 900 "),
        Ok(Duration::minutes(15))
    );
    assert_eq!(DeliverySettings::parse_settle_window("5"), Ok(Duration::seconds(5)));
    for bad in ["0", "-3", "15m", ""] {
        let err = DeliverySettings::parse_settle_window(bad).expect_err(bad);
        assert!(err.contains(SETTLE_WINDOW_SETTING), "{err}");
    }
}

#[tokio::test]
async fn a_redelivery_after_the_window_sets_the_check_for_a_moment_later() {
    let w = World::new().await;
    let request = w
        .stored(w.requested(1, "order-confirmation", Category::Transactional))
        .await;
    w.claim_and_crash(&request).await;
    // The request comes back only after the window has ended.
    w.clock.advance(Duration::minutes(20));
    w.delivery.on_requested(&request).await.expect("redelivery");
    let check = w.message_timer("msg-1").expect("a settle check");
    assert_eq!(check.due_at, w.clock.now() + Duration::seconds(5));
    w.clock.advance(Duration::seconds(5));
    w.fire(&check).await;
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
}

#[test]
fn settings_come_from_one_lookup_and_blank_keeps_the_default() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    };
    let settings = DeliverySettings::from_lookup(&env(&[
        ("FROM_ADDRESS", "Shop <news@shop.example.com>"),
        ("PUBLIC_BASE_URL", "https://crm.example.com"),
        ("SHOP_URL", " "),
        ("DELIVERY_CAPS", "email:2/24h"),
        ("WEEKLY_EMAIL_LIMIT", "5"),
        ("MESSAGE_SETTLE_SECONDS", "30"),
    ]))
    .expect("settings");
    assert_eq!(settings.from_address, "Shop <news@shop.example.com>");
    assert_eq!(settings.public_base_url, "https://crm.example.com");
    assert_eq!(settings.shop_url, DeliverySettings::default().shop_url);
    assert_eq!(settings.policy.caps.len(), 1);
    assert_eq!(settings.policy.weekly_email_limit, 5);
    assert_eq!(settings.settle_window, chrono::Duration::seconds(30));
    assert_eq!(
        DeliverySettings::from_lookup(&env(&[]))
            .expect("defaults")
            .settle_window,
        DeliverySettings::default().settle_window
    );
    for bad in [
        &[("WEEKLY_EMAIL_LIMIT", "many")][..],
        &[("DELIVERY_CAPS", "email:often")][..],
        &[("MESSAGE_SETTLE_SECONDS", "0")][..],
    ] {
        let pairs: &'static [(&'static str, &'static str)] = bad;
        assert!(DeliverySettings::from_lookup(&env(pairs)).is_err(), "{bad:?}");
    }
}

/// A redelivered settle check of an earlier claim schedules the check of the
/// newer claim a crashed resend left open (found by scripts/chaos.py's crash points).
#[tokio::test]
async fn a_crash_after_the_claim_of_a_resend_still_gets_a_settle_check() {
    let w = World::new().await;
    let (request, check) = w.order_confirmation_left_claimed().await;
    assert_eq!(check.set_at_version, 1);
    w.clock.advance(Duration::minutes(15));
    // The check fires: stale, given back, sent again: the resend claims
    // (v4) and its invocation dies before the provider call (what the
    // settle check's run would have appended, appended here by hand).
    let parsed = MessageRequest::from_envelope(&request).expect("request");
    let left = vec![
        MessageEvent::MessageOutcomeUnknown {
            message_id: "msg-1".into(),
            customer_id: CUSTOMER.into(),
            channel: parsed.channel,
            error: "no outcome recorded within 900 s of the claim".into(),
            settle_by: Some(w.clock.now()),
        },
        MessageEvent::MessageNotAccepted {
            message_id: "msg-1".into(),
            customer_id: CUSTOMER.into(),
            channel: parsed.channel,
            reason: "SES reported nothing".into(),
        },
        MessageEvent::claim(&parsed, "0".repeat(64)),
    ];
    w.append_by_hand("msg-1", ExpectedVersion::Exactly(1), &left).await;
    // The crashed invocation's message (the fired check) comes back.
    w.fire(&check).await;
    let pending = w.message_timer("msg-1").expect("a settle check");
    assert_eq!(
        pending.set_at_version, 4,
        "a settle check for the resend's claim: {pending:?}"
    );
    // The resend's window is twice the first's.
    assert_eq!(pending.due_at, w.clock.now() + Duration::minutes(30));
}

// ---------------------------------------------------------------------------
// Deferrals and timers name the stored request (decision 0041).

/// A `MessageDeferred` as schema version 1 stored it: with a copy of the
/// whole request.
fn deferred_v1(request: &EventEnvelope, until: DateTime<Utc>) -> EventEnvelope {
    let mut e = raw_event(
        &message_stream("msg-1"),
        "MessageDeferred",
        json!({
            "message_id": "msg-1", "customer_id": CUSTOMER, "channel": "email",
            "reason": "quiet-hours", "until": until, "request": request.data,
        }),
    );
    e.customer_id = Some(CUSTOMER.into());
    e
}

#[tokio::test]
async fn a_deferral_timer_set_before_0041_with_the_request_in_its_data_still_sends() {
    let w = World::new().await;
    // Not even stored on a journey stream: the timer's copy is what counts.
    let request = w.requested(1, reminder(), Category::Marketing);
    let until = w.clock.now() + Duration::minutes(30);
    w.events
        .append(AppendRequest {
            stream_id: message_stream("msg-1"),
            expected: ExpectedVersion::NoStream,
            events: vec![deferred_v1(&request, until)],
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("a v1 deferral");
    let timer = TimerPayload {
        name: timer_name(TimerKind::MessageDeferral, &["msg-1"]),
        kind: TimerKind::MessageDeferral,
        stream_id: message_stream("msg-1"),
        customer_id: Some(CUSTOMER.into()),
        due_at: until,
        set_at_version: 1,
        data: request.data.clone(),
    };
    assert!(matches!(
        MessageTimer::of(&timer),
        Some(MessageTimer::DeferralWithRequest(_))
    ));
    // Fired early (a redelivery of the timer): still waiting, and the timer
    // set again holds no request.
    assert_eq!(
        w.delivery
            .on_deferral_timer(&MessageTimer::of(&timer).expect("timer"))
            .await
            .expect("early"),
        DeliveryOutcome::Waiting { until }
    );
    let again = w.message_timer("msg-1").expect("set again");
    assert_eq!(
        MessageTimer::of(&again),
        Some(MessageTimer::Deferral(RequestRef {
            message_id: "msg-1".into(),
            stream_id: "journey-i-1".into(),
            version: None,
        }))
    );
    w.clock.advance(Duration::minutes(30));
    w.fire(&timer).await;
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
    assert_eq!(
        w.stream_types("msg-1").await,
        vec!["MessageDeferred", "MessageClaimed", "MessageSent"]
    );
}

#[tokio::test]
async fn a_stored_v1_deferral_reads_as_where_its_request_is() {
    let w = World::new().await;
    let request = w.requested(1, reminder(), Category::Marketing);
    let until = w.clock.now() + Duration::minutes(30);
    let typed = MessageEvent::from_envelope(&deferred_v1(&request, until)).expect("v1 reads");
    assert_eq!(
        typed,
        MessageEvent::MessageDeferred {
            message_id: "msg-1".into(),
            customer_id: CUSTOMER.into(),
            channel: Channel::Email,
            reason: DeferralReason::QuietHours,
            until,
            requested: RequestRef {
                message_id: "msg-1".into(),
                stream_id: "journey-i-1".into(),
                version: None,
            },
        }
    );
    // An erased v1 deferral (its request's data reads `[erased]`) reads too;
    // one without its request does not.
    let mut erased = deferred_v1(&request, until);
    erased.data["request"]["data"] = json!(crate::privacy::ERASED);
    assert!(MessageEvent::from_envelope(&erased).is_ok());
    let mut broken = deferred_v1(&request, until);
    broken.data.as_object_mut().expect("object").remove("request");
    assert!(MessageEvent::from_envelope(&broken).is_err());
}

#[tokio::test]
async fn a_settle_check_set_before_0041_names_the_journey_instance_and_still_settles() {
    let w = World::new().await;
    let (_, mut check) = w.order_confirmation_left_claimed().await;
    check.data = json!({ "settle": { "message_id": "msg-1", "instance_id": "i-1" } });
    assert_eq!(
        settle_check(&check),
        RequestRef {
            message_id: "msg-1".into(),
            stream_id: "journey-i-1".into(),
            version: None,
        }
    );
    w.clock.advance(Duration::minutes(15));
    w.fire(&check).await;
    // The stale claim is given back and the request, found on the journey
    // stream by its message id, sent.
    assert_eq!(w.provider.sent(), vec!["msg-1"]);
}

#[tokio::test]
async fn a_deferral_whose_request_is_gone_is_refused_not_sent() {
    let w = World::new().await;
    w.quiet_in_berlin_from_noon_to_half_past_two().await;
    // Delivered but never stored (as if its journey stream had expired).
    let request = w.requested(1, reminder(), Category::Marketing);
    assert!(matches!(
        w.delivery.on_requested(&request).await.expect("deliver"),
        DeliveryOutcome::Deferred { .. }
    ));
    let timer = w.message_timer("msg-1").expect("the deferral's timer");
    w.clock.advance(Duration::minutes(90));
    use crate::scheduler::TimerHandler;
    assert!(matches!(
        w.delivery.on_timer(&timer).await,
        Err(crate::scheduler::SchedulerError::Refused(m)) if m.contains("no MessageRequested")
    ));
    assert!(w.provider.sent().is_empty());
}

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
        customer_id: CUSTOMER.into(),
        channel: Channel::Email,
        template: "welcome".into(),
        category: Category::Marketing,
        purpose: Some(Purpose::Marketing),
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
    crate::customer::erase_customer(
        w.delivery.customers(),
        keys.as_ref(),
        w.delivery.identifiers(),
        CUSTOMER,
        &CommandMeta::new(Actor::api("t")),
    )
    .await
    .expect("erased");
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
        bounce_type: super::super::events::BounceType::Permanent,
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

    crate::customer::erase_customer(
        w.delivery.customers(),
        keys.as_ref(),
        w.delivery.identifiers(),
        CUSTOMER,
        &CommandMeta::new(Actor::api("t")),
    )
    .await
    .expect("erased");
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
