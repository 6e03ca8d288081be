//! The channel service over the in-memory stores and a recording provider
//! (domain tests), one file a topic: claims and exactly once, consent and
//! policy, retries and parking, provider feedback, unknown outcomes settled
//! by SES feedback or the settle check (decision 0032), settings, deferrals
//! (decision 0041), personal data. This module is their one fixture: the
//! [`World`] (stores, clock, recording provider, the delivery) and its
//! helpers.

mod claims;
mod deferrals;
mod feedback;
mod policy;
mod privacy;
mod retries;
mod settings;
mod settle;

use super::*;

use crate::clock::VirtualClock;

use crate::consent::{Channel, Purpose};

use crate::consumer::Consumer;

use crate::customer::Customer;

use crate::customer::*;

use crate::event::{envelopes, Actor, CommandMeta, DomainEvent, EventEnvelope};

use crate::failure::{Classify, FailureKind};

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
            candidates: Vec::new(),
            subject: None,
            customer_id: CUSTOMER.into(),
            channel,
            template: template.into(),
            category,
            purpose: (category == Category::Marketing).then_some(Purpose::Marketing),
            // The abandoned cart is a lifecycle campaign (decision 0064).
            kind: (category == Category::Marketing).then_some(crate::messaging::events::MarketingKind::Lifecycle),
            discount: None,
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
        append(self.store.as_ref(), ExpectedVersion::Any, vec![request])
            .await
            .remove(0)
    }

    /// `events` (of one stream) appended as they are to the stored events,
    /// as something else than the delivery wrote them.
    async fn append_raw(&self, expected: ExpectedVersion, events: Vec<EventEnvelope>) {
        append(self.events.as_ref(), expected, events).await;
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
        self.append_raw(expected, events).await;
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
        assert_eq!(
            self.delivery.on_requested(&request).await.map_err(|e| e.kind()),
            Err(FailureKind::Retryable)
        );
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

    /// An order confirmation (`msg-1`), stored and delivered, whose send
    /// ends unknown (the provider's script says how): the request.
    async fn order_confirmation_unknown(&self) -> EventEnvelope {
        let request = self
            .stored(self.requested(1, "order-confirmation", Category::Transactional))
            .await;
        assert_eq!(
            self.delivery.on_requested(&request).await.expect("deliver"),
            DeliveryOutcome::OutcomeUnknown
        );
        request
    }

    /// An order confirmation (`msg-1`) whose send ends unknown, and whose
    /// settle check, at the end of the 15-minute window, sends it again:
    /// the request, the first check, and the check the resend set if it
    /// ended unknown too.
    async fn order_confirmation_sent_again(&self) -> (EventEnvelope, TimerPayload, TimerPayload) {
        let request = self.order_confirmation_unknown().await;
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

    /// The events of the message's stream as stored.
    async fn message_events(&self, message_id: &str) -> Vec<EventEnvelope> {
        self.events
            .read_stream(&message_stream(message_id), 0, 100)
            .await
            .expect("read")
    }

    async fn stream_types(&self, message_id: &str) -> Vec<String> {
        self.message_events(message_id)
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }

    /// The customer revokes marketing email consent.
    async fn revoke_marketing_email(&self) {
        self.command(CustomerCommand::RevokeConsent(RevokeConsent {
            purpose: Purpose::Marketing,
            channel: Channel::Email,
            reason: "test".into(),
            method: None,
        }))
        .await;
    }

    /// The customer gives a mobile number (for SMS).
    async fn add_phone(&self) {
        self.command(CustomerCommand::UpdateProfile(UpdateProfile {
            phone: Some(Some("+4915112345678".into())),
            ..UpdateProfile::default()
        }))
        .await;
    }

    /// The customer as the delivery reads them.
    async fn customer(&self) -> Customer {
        self.delivery
            .customers()
            .load(CUSTOMER)
            .await
            .expect("load")
            .expect("customer")
    }

    /// The customer erased (their key gone from `keys`).
    async fn erase(&self, keys: &dyn crate::privacy::KeyStore) {
        crate::customer::erase_customer(
            self.delivery.customers(),
            keys,
            self.delivery.identifiers(),
            CUSTOMER,
            &CommandMeta::new(Actor::api("t")),
        )
        .await
        .expect("erased");
    }
}

/// `events` (of one stream) appended to `store` as they are: as stored.
async fn append(store: &dyn EventStore, expected: ExpectedVersion, events: Vec<EventEnvelope>) -> Vec<EventEnvelope> {
    let stream_id = events.first().map(|e| e.stream_id.clone()).unwrap_or_default();
    store
        .append(AppendRequest {
            stream_id,
            expected,
            events,
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append")
        .events
}

fn reminder() -> &'static str {
    "abandoned-cart-reminder"
}

/// An unknown outcome: the provider timed out.
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
