//! The channel function's service: takes a `MessageRequested`, runs the
//! decision pipeline against the customer as the event store knows them now,
//! and records the outcome on the message stream `message-<message id>`.
//!
//! Effectively once: the stream's version is the claim. Every outcome is
//! appended with `ExpectedVersion::Exactly(v)` of the stream as it was read,
//! so of two deliveries of the same request only one appends; before calling
//! a provider, `MessageClaimed` is appended that way, and a delivery that
//! finds a claim never calls the provider (decision 0011 describes the one
//! window left: a crash after the provider accepted and before `MessageSent`).

use super::decision::{self, address, Decision, DecisionInput, DeliveryPolicy, SentRecord};
use super::events::{message_stream, DeferralReason, MessageEvent, MessageRequest};
use super::provider::{
    EmailMessage, EmailProvider, ProviderError, ProviderReceipt, PushMessage, PushProvider, SmsMessage, SmsProvider,
};
use super::render::{self, Rendered};
use super::unsubscribe::{links, TokenSigner};
use crate::clock::Clock;
use crate::consent::proof::identifier_proof;
use crate::consent::{Channel, Purpose};
use crate::consumer::{Consumer, Projection, ProjectionError};
use crate::customer::{Customer, CustomerService};
use crate::event::{envelopes, Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::journey::definition::Category;
use crate::metrics::{names as metric, MetricSet, MetricsSink, NoMetrics};
use crate::ports::{
    AppendError, AppendRequest, DeadLetter, DeadLetterQueue, EventStore, ExpectedVersion, ReadModelStore, ReadOp,
    StoreError,
};
use crate::privacy::{HashedIdentifier, IdentifierHasher, IdentifierKind};
use crate::scheduler::{timer_name, Scheduler, TimerKind, TimerPayload};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use std::sync::Arc;

/// The read model of sends per customer (frequency caps).
pub const MESSAGE_LOG: &str = "message-log";
/// The read model of suppressed addresses.
pub const SUPPRESSION_LIST: &str = "suppression-list";

const SENT_PREFIX: &str = "sent#";
const ACTOR: &str = "channel";
/// Provider calls per delivery when throttled (with backoff in between).
const PROVIDER_ATTEMPTS: u32 = 3;
/// Deliveries that failed retryably before the message is given up on.
const MAX_FAILED_DELIVERIES: usize = 5;

/// Where messages go.
#[derive(Clone)]
pub struct Providers {
    pub email: Arc<dyn EmailProvider>,
    pub sms: Arc<dyn SmsProvider>,
    pub push: Arc<dyn PushProvider>,
}

/// Settings of the channel function.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The `From` of every email.
    pub from_address: String,
    /// Where the API answers (`<base>/u/<token>`).
    pub public_base_url: String,
    /// The shop's own site (`links.shop` in templates).
    pub shop_url: String,
    pub policy: DeliveryPolicy,
    /// Backoff before the second provider attempt (doubles each time).
    pub first_backoff: std::time::Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            from_address: "Shop <shop@example.com>".into(),
            public_base_url: "http://127.0.0.1:3000".into(),
            shop_url: "https://shop.example".into(),
            policy: DeliveryPolicy::default(),
            first_backoff: std::time::Duration::from_millis(200),
        }
    }
}

/// What one delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Sent {
        provider_message_id: String,
    },
    Suppressed,
    Deferred {
        until: DateTime<Utc>,
    },
    /// Failed for good (recorded, and parked in the dead-letter queue).
    Failed,
    /// The message was already handled (or is being handled) by another delivery.
    Duplicate,
    /// Deferred, and its time has not come: the timer hands it back.
    Waiting {
        until: DateTime<Utc>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Deliver again later (store or provider trouble; the failure is recorded).
    #[error("deliver again: {0}")]
    Retry(String),
    /// This request can never be handled (not a MessageRequested, bad data).
    #[error("unusable request: {0}")]
    Poison(String),
}

impl From<StoreError> for DeliveryError {
    fn from(e: StoreError) -> Self {
        if e.is_retryable() {
            DeliveryError::Retry(e.to_string())
        } else {
            DeliveryError::Poison(e.to_string())
        }
    }
}

/// A unit enum's wire name (`no-consent`, `quiet-hours`, `marketing`), for metric properties.
fn kebab<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The state of one message stream.
#[derive(Debug, Default)]
struct MessageState {
    version: u64,
    done: bool,
    claimed: bool,
    deferred_until: Option<DateTime<Utc>>,
    failed_deliveries: usize,
}

fn fold(events: &[EventEnvelope]) -> Result<MessageState, DeliveryError> {
    let mut s = MessageState::default();
    for e in events {
        s.version = e.version;
        let typed = MessageEvent::from_envelope(e).map_err(|err| DeliveryError::Poison(err.to_string()))?;
        match typed {
            MessageEvent::MessageSuppressed { .. } | MessageEvent::MessageSent { .. } => s.done = true,
            MessageEvent::MessageDeferred { until, .. } => s.deferred_until = Some(until),
            MessageEvent::MessageClaimed { .. } => s.claimed = true,
            MessageEvent::MessageFailed { retryable, .. } => {
                if retryable {
                    // The claim is given back: the next delivery tries again.
                    s.claimed = false;
                    s.failed_deliveries += 1;
                } else {
                    s.done = true;
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

pub struct MessageDelivery {
    events: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    customers: CustomerService,
    scheduler: Arc<dyn Scheduler>,
    clock: Arc<dyn Clock>,
    providers: Providers,
    signer: Arc<TokenSigner>,
    identifiers: IdentifierHasher,
    dead_letters: Arc<dyn DeadLetterQueue>,
    settings: DeliverySettings,
    metrics: Arc<dyn MetricsSink>,
}

impl MessageDelivery {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        events: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        scheduler: Arc<dyn Scheduler>,
        clock: Arc<dyn Clock>,
        providers: Providers,
        signer: Arc<TokenSigner>,
        identifiers: IdentifierHasher,
        dead_letters: Arc<dyn DeadLetterQueue>,
        settings: DeliverySettings,
    ) -> Self {
        MessageDelivery {
            customers: CustomerService::new(events.clone(), clock.clone()),
            events,
            docs,
            scheduler,
            clock,
            providers,
            signer,
            identifiers,
            dead_letters,
            settings,
            metrics: Arc::new(NoMetrics),
        }
    }

    /// Where the sent, suppressed, deferred and failed counts go (EMF in the
    /// channel function, nowhere by default).
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = metrics;
        self
    }

    /// One count of `name` for the request's channel, with why as a property.
    fn count(&self, name: &'static str, request: &MessageRequest, reason: Option<String>) {
        let mut set = MetricSet::new(self.now())
            .dimension("Channel", request.channel.to_string())
            .count(name, 1)
            .property("Category", kebab(&request.category))
            .property("CampaignId", request.campaign_id.clone());
        if let Some(reason) = reason {
            set = set.property("Reason", reason);
        }
        self.metrics.emit(set);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn customers(&self) -> &CustomerService {
        &self.customers
    }

    /// How addresses are hashed (the suppression list, the proof ledger,
    /// provider feedback).
    pub fn identifiers(&self) -> &IdentifierHasher {
        &self.identifiers
    }

    /// Handles one stored `MessageRequested` (any number of times, in any order).
    pub async fn on_requested(&self, event: &EventEnvelope) -> Result<DeliveryOutcome, DeliveryError> {
        let request = MessageRequest::from_envelope(event).map_err(|e| DeliveryError::Poison(e.to_string()))?;
        let meta = CommandMeta {
            command_id: event.event_id,
            correlation_id: event.correlation_id,
            causation_id: Some(event.event_id),
            actor: Actor::system(ACTOR),
        };
        self.deliver(&request, &meta).await
    }

    /// Handles a fired deferral timer: the request it carries is delivered again.
    pub async fn on_deferral_timer(&self, timer: &TimerPayload) -> Result<DeliveryOutcome, DeliveryError> {
        let request: MessageRequest =
            serde_json::from_value(timer.data.clone()).map_err(|e| DeliveryError::Poison(e.to_string()))?;
        let mut meta = CommandMeta::new(Actor::system(ACTOR));
        // Chain to the deferral (the last event on the stream).
        if let Some(last) = self
            .events
            .read_stream(&message_stream(&request.message_id), 0, 1000)
            .await?
            .last()
        {
            meta.correlation_id = last.correlation_id;
            meta.causation_id = Some(last.event_id);
        }
        self.deliver(&request, &meta).await
    }

    async fn deliver(&self, request: &MessageRequest, meta: &CommandMeta) -> Result<DeliveryOutcome, DeliveryError> {
        let stream = message_stream(&request.message_id);
        let state = fold(&self.events.read_stream(&stream, 0, 1000).await?)?;
        let now = self.now();
        if state.done || state.claimed {
            return Ok(DeliveryOutcome::Duplicate);
        }
        if let Some(until) = state.deferred_until.filter(|u| *u > now) {
            // A redelivery while deferred: make sure the timer exists (idempotent).
            self.schedule_deferral(request, until, state.version).await?;
            return Ok(DeliveryOutcome::Waiting { until });
        }
        if state.failed_deliveries >= MAX_FAILED_DELIVERIES {
            let error = format!("gave up after {} failed deliveries", state.failed_deliveries);
            return self.fail_for_good(request, meta, &state, error).await;
        }
        // A journey of an anonymous profile reaches the customer it was
        // merged into (identity resolution); an unmerged one has no address.
        let recipient = crate::identity::resolve(self.events.as_ref(), &request.customer_id).await?;
        let customer = self
            .customers
            .load(&recipient)
            .await
            .map_err(|e| DeliveryError::Retry(e.to_string()))?;
        let hash = customer
            .as_ref()
            .and_then(|c| address(c, request.channel))
            .map(|addr| self.identifiers.address(request.channel, &addr));
        let suppressed = match &hash {
            Some(hash) => suppression_reason(self.docs.as_ref(), request.channel, hash, request.category).await?,
            None => None,
        };
        // An address whose customer was erased: no marketing until someone
        // consents on it again (the proof ledger, decision 0019).
        let erased_address = match (&hash, IdentifierKind::of_channel(request.channel)) {
            (Some(hash), Some(kind)) if request.category == Category::Marketing => {
                let identifier = HashedIdentifier {
                    kind,
                    hash: hash.clone(),
                };
                identifier_proof(self.docs.as_ref(), &identifier)
                    .await?
                    .erased_without_consent(request.channel)
            }
            _ => None,
        };
        let recent = recent_sends(self.docs.as_ref(), &request.customer_id, now).await?;
        let decision = decision::decide(DecisionInput {
            now,
            request,
            customer: customer.as_ref(),
            suppressed: suppressed.as_deref(),
            erased_address,
            recent: &recent,
            policy: &self.settings.policy,
        });
        match decision {
            Decision::Suppress { reason, detail } => {
                tracing::info!(message_id = %request.message_id, ?reason, %detail, "message suppressed");
                let event = MessageEvent::MessageSuppressed {
                    message_id: request.message_id.clone(),
                    customer_id: request.customer_id.clone(),
                    campaign_id: request.campaign_id.clone(),
                    channel: request.channel,
                    reason,
                    detail,
                };
                match self.append(request, meta, state.version, vec![event]).await? {
                    Some(_) => {
                        self.count(metric::MESSAGES_SUPPRESSED, request, Some(kebab(&reason)));
                        Ok(DeliveryOutcome::Suppressed)
                    }
                    None => Ok(DeliveryOutcome::Duplicate),
                }
            }
            Decision::Defer { until, reason } => self.defer(request, meta, &state, until, reason).await,
            Decision::Send => match customer {
                Some(c) => self.send(request, meta, &state, &c).await,
                None => Err(DeliveryError::Poison("decided to send to no customer".into())),
            },
        }
    }

    async fn defer(
        &self,
        request: &MessageRequest,
        meta: &CommandMeta,
        state: &MessageState,
        until: DateTime<Utc>,
        reason: DeferralReason,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        let event = MessageEvent::MessageDeferred {
            message_id: request.message_id.clone(),
            customer_id: request.customer_id.clone(),
            channel: request.channel,
            reason,
            until,
            request: request.clone(),
        };
        let Some(appended) = self.append(request, meta, state.version, vec![event]).await? else {
            return Ok(DeliveryOutcome::Duplicate);
        };
        let version = appended.last().map(|e| e.version).unwrap_or(state.version + 1);
        self.schedule_deferral(request, until, version).await?;
        tracing::info!(message_id = %request.message_id, %until, "message deferred");
        self.count(metric::MESSAGES_DEFERRED, request, Some(kebab(&reason)));
        Ok(DeliveryOutcome::Deferred { until })
    }

    async fn schedule_deferral(
        &self,
        request: &MessageRequest,
        until: DateTime<Utc>,
        version: u64,
    ) -> Result<(), DeliveryError> {
        let timer = TimerPayload {
            name: timer_name(TimerKind::MessageDeferral, &[&request.message_id]),
            kind: TimerKind::MessageDeferral,
            stream_id: message_stream(&request.message_id),
            customer_id: Some(request.customer_id.clone()),
            due_at: until,
            set_at_version: version,
            data: serde_json::to_value(request).map_err(|e| DeliveryError::Poison(e.to_string()))?,
        };
        self.scheduler
            .schedule(timer)
            .await
            .map_err(|e| DeliveryError::Retry(format!("could not schedule the deferral: {e}")))
    }

    async fn send(
        &self,
        request: &MessageRequest,
        meta: &CommandMeta,
        state: &MessageState,
        customer: &Customer,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        let now = self.now();
        let Some(to) = address(customer, request.channel) else {
            return Err(DeliveryError::Poison("no address".into()));
        };
        let rendered = match render::render(&request.template, &self.variables(request, customer, now)) {
            Ok(r) => r,
            Err(e) => {
                return self.fail_for_good(request, meta, state, e.to_string()).await;
            }
        };
        let claim = MessageEvent::MessageClaimed {
            message_id: request.message_id.clone(),
            customer_id: request.customer_id.clone(),
            channel: request.channel,
            campaign_id: request.campaign_id.clone(),
            template: request.template.clone(),
            category: request.category,
            address_hash: self.identifiers.address(request.channel, &to),
        };
        let Some(claimed) = self.append(request, meta, state.version, vec![claim]).await? else {
            return Ok(DeliveryOutcome::Duplicate);
        };
        let claimed_version = claimed.last().map(|e| e.version).unwrap_or(state.version + 1);
        match self.call_provider(request, customer, &to, rendered, now).await {
            Ok(receipt) => {
                let sent = MessageEvent::MessageSent {
                    message_id: request.message_id.clone(),
                    customer_id: request.customer_id.clone(),
                    channel: request.channel,
                    category: request.category,
                    campaign_id: request.campaign_id.clone(),
                    provider_message_id: receipt.provider_message_id.clone(),
                };
                let appended = self
                    .append(request, meta, claimed_version, vec![sent])
                    .await?
                    .ok_or_else(|| DeliveryError::Retry("the message stream moved after the claim".into()))?;
                // The send log now, not when the projector gets to it: the
                // next request's caps must see this send.
                let log = Consumer::new(Arc::new(MessageLogProjection), self.events.clone(), self.docs.clone());
                for e in &appended {
                    log.deliver(e).await.map_err(|e| DeliveryError::Retry(e.to_string()))?;
                }
                tracing::info!(message_id = %request.message_id, provider_message_id = %receipt.provider_message_id, channel = %request.channel, "message sent");
                self.count(metric::MESSAGES_SENT, request, None);
                Ok(DeliveryOutcome::Sent {
                    provider_message_id: receipt.provider_message_id,
                })
            }
            Err(e) if e.is_retryable() => {
                let failed = MessageEvent::MessageFailed {
                    message_id: request.message_id.clone(),
                    customer_id: request.customer_id.clone(),
                    channel: request.channel,
                    retryable: true,
                    error: e.to_string(),
                };
                self.append(request, meta, claimed_version, vec![failed]).await?;
                Err(DeliveryError::Retry(e.to_string()))
            }
            Err(e) => {
                let after_claim = MessageState {
                    version: claimed_version,
                    ..MessageState::default()
                };
                self.fail_for_good(request, meta, &after_claim, e.to_string()).await
            }
        }
    }

    /// Records a permanent failure and parks the request with its reason.
    async fn fail_for_good(
        &self,
        request: &MessageRequest,
        meta: &CommandMeta,
        state: &MessageState,
        error: String,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        tracing::error!(message_id = %request.message_id, %error, "message failed for good");
        let failed = MessageEvent::MessageFailed {
            message_id: request.message_id.clone(),
            customer_id: request.customer_id.clone(),
            channel: request.channel,
            retryable: false,
            error: error.clone(),
        };
        if self.append(request, meta, state.version, vec![failed]).await?.is_none() {
            return Ok(DeliveryOutcome::Duplicate);
        }
        self.dead_letters
            .park(DeadLetter {
                consumer: ACTOR.into(),
                reason: error,
                payload: serde_json::to_value(request).unwrap_or_default(),
                failed_at: self.now(),
                attempts: 1,
            })
            .await?;
        self.count(metric::MESSAGES_FAILED, request, None);
        Ok(DeliveryOutcome::Failed)
    }

    /// Appends at exactly `version`; `None` when another delivery got there first.
    async fn append(
        &self,
        request: &MessageRequest,
        meta: &CommandMeta,
        version: u64,
        events: Vec<MessageEvent>,
    ) -> Result<Option<Vec<EventEnvelope>>, DeliveryError> {
        let stream = message_stream(&request.message_id);
        let stored = envelopes(&stream, Some(&request.customer_id), &events, meta, self.now())
            .map_err(|e| DeliveryError::Poison(e.to_string()))?;
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exactly(version)
        };
        match self
            .events
            .append(AppendRequest {
                stream_id: stream,
                expected,
                events: stored,
                reservations: Vec::new(),
                receipt: None,
            })
            .await
        {
            Ok(appended) => Ok(Some(appended.events)),
            Err(AppendError::Conflict { .. }) => Ok(None),
            Err(AppendError::Store(e)) => Err(e.into()),
            Err(e) => Err(DeliveryError::Poison(e.to_string())),
        }
    }

    /// The variables a template sees (`render::variables`, with this customer's links).
    fn variables(&self, request: &MessageRequest, customer: &Customer, now: DateTime<Utc>) -> Value {
        let purpose = request.purpose.unwrap_or(Purpose::Marketing);
        let (unsubscribe, preferences) = links(
            &self.signer,
            &self.settings.public_base_url,
            &customer.id,
            purpose,
            request.channel,
            now,
        );
        let links = render::Links {
            unsubscribe,
            preferences,
            shop: self.settings.shop_url.clone(),
        };
        let mut request = request.clone();
        if request.data.is_null() {
            request.data = json!({});
        }
        render::variables(&customer.first_name, &customer.last_name, &request, &links)
    }

    async fn call_provider(
        &self,
        request: &MessageRequest,
        customer: &Customer,
        to: &str,
        rendered: Rendered,
        now: DateTime<Utc>,
    ) -> Result<ProviderReceipt, ProviderError> {
        let mut backoff = self.settings.first_backoff;
        let mut attempt = 1;
        loop {
            let result = match request.channel {
                Channel::Email => {
                    let email = self.email(request, customer, to, &rendered, now);
                    self.providers.email.send_email(&email).await
                }
                Channel::Sms => {
                    let sms = SmsMessage {
                        message_id: request.message_id.clone(),
                        to: to.to_string(),
                        body: rendered.text.clone(),
                        transactional: request.category == Category::Transactional,
                    };
                    self.providers.sms.send_sms(&sms).await
                }
                Channel::Push => {
                    let Some(device) = customer.push_devices.last().cloned() else {
                        return Err(ProviderError::Rejected("no push device".into()));
                    };
                    let push = PushMessage {
                        message_id: request.message_id.clone(),
                        device,
                        title: rendered.subject.clone().unwrap_or_default(),
                        body: rendered.text.clone(),
                        data: json!({ "message_id": request.message_id, "campaign": request.campaign_id }),
                    };
                    self.providers.push.send_push(&push).await
                }
            };
            match result {
                Err(ProviderError::Throttled(m)) if attempt < PROVIDER_ATTEMPTS => {
                    tracing::warn!(message_id = %request.message_id, attempt, "provider throttled: {m}");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn email(
        &self,
        request: &MessageRequest,
        customer: &Customer,
        to: &str,
        rendered: &Rendered,
        now: DateTime<Utc>,
    ) -> EmailMessage {
        let mut headers = Vec::new();
        if request.category == Category::Marketing {
            let (unsubscribe, _) = links(
                &self.signer,
                &self.settings.public_base_url,
                &customer.id,
                request.purpose.unwrap_or(Purpose::Marketing),
                Channel::Email,
                now,
            );
            headers.push(("List-Unsubscribe".to_string(), format!("<{unsubscribe}>")));
            headers.push((
                "List-Unsubscribe-Post".to_string(),
                "List-Unsubscribe=One-Click".to_string(),
            ));
        }
        let category = match request.category {
            Category::Marketing => "marketing",
            Category::Transactional => "transactional",
        };
        EmailMessage {
            message_id: request.message_id.clone(),
            from: self.settings.from_address.clone(),
            to: to.to_string(),
            subject: rendered.subject.clone().unwrap_or_default(),
            html: rendered.html.clone().unwrap_or_default(),
            text: rendered.text.clone(),
            headers,
            tags: vec![
                ("campaign".into(), request.campaign_id.clone()),
                ("message_id".into(), request.message_id.clone()),
                ("customer_id".into(), request.customer_id.clone()),
                ("category".into(), category.into()),
            ],
        }
    }
}

/// What recording one piece of provider feedback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackOutcome {
    Recorded,
    /// The same feedback was recorded before (providers deliver it at least once).
    Duplicate,
}

impl MessageDelivery {
    /// Records feedback from the provider (SES delivery, bounce, complaint,
    /// open, click) on the message stream, and acts on it: a permanent bounce
    /// suppresses the address and invalidates the customer's email; a
    /// complaint suppresses marketing to it and revokes marketing email consent.
    /// `recipient` is the address the feedback is about.
    pub async fn record_feedback(
        &self,
        feedback: MessageEvent,
        recipient: &str,
        feedback_id: &str,
    ) -> Result<FeedbackOutcome, DeliveryError> {
        let (message_id, customer_id) = match &feedback {
            MessageEvent::EmailDelivered {
                message_id,
                customer_id,
            }
            | MessageEvent::EmailBounced {
                message_id,
                customer_id,
                ..
            }
            | MessageEvent::EmailComplained {
                message_id,
                customer_id,
                ..
            }
            | MessageEvent::EmailOpened {
                message_id,
                customer_id,
            }
            | MessageEvent::EmailClicked {
                message_id,
                customer_id,
                ..
            } => (message_id.clone(), customer_id.clone()),
            other => return Err(DeliveryError::Poison(format!("{other:?} is not provider feedback"))),
        };
        let stream = message_stream(&message_id);
        let existing = self.events.read_stream(&stream, 0, 1000).await?;
        // The provider's feedback id makes the event id: a redelivery is found.
        let event_id = {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(format!("{stream}/{feedback_id}").as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_custom_bytes(bytes).into_uuid()
        };
        if existing.iter().any(|e| e.event_id == event_id) {
            return Ok(FeedbackOutcome::Duplicate);
        }
        let meta = CommandMeta {
            command_id: event_id,
            correlation_id: existing.first().map(|e| e.correlation_id).unwrap_or(event_id),
            causation_id: existing.last().map(|e| e.event_id),
            actor: Actor::system("ses"),
        };
        let mut stored = envelopes(
            &stream,
            Some(&customer_id),
            std::slice::from_ref(&feedback),
            &meta,
            self.now(),
        )
        .map_err(|e| DeliveryError::Poison(e.to_string()))?;
        for e in &mut stored {
            e.event_id = event_id;
        }
        let appended = self
            .events
            .append(AppendRequest {
                stream_id: stream,
                expected: ExpectedVersion::Any,
                events: stored,
                reservations: Vec::new(),
                receipt: None,
            })
            .await
            .map_err(|e| match e {
                AppendError::Store(s) => DeliveryError::from(s),
                other => DeliveryError::Retry(other.to_string()),
            })?;
        let list = Consumer::new(
            Arc::new(SuppressionListProjection::new(self.identifiers.clone())),
            self.events.clone(),
            self.docs.clone(),
        );
        for e in &appended.events {
            list.deliver(e).await.map_err(|e| DeliveryError::Retry(e.to_string()))?;
        }
        let command = match &feedback {
            MessageEvent::EmailBounced {
                bounce_type: super::events::BounceType::Permanent,
                diagnostic,
                ..
            } => Some(crate::customer::CustomerCommand::InvalidateEmail(
                crate::customer::InvalidateEmail {
                    email: recipient.to_string(),
                    reason: match diagnostic {
                        Some(d) => format!("permanent bounce: {}", d.chars().take(150).collect::<String>()),
                        None => "permanent bounce".to_string(),
                    },
                },
            )),
            MessageEvent::EmailComplained { .. } => Some(crate::customer::CustomerCommand::RevokeConsent(
                crate::customer::RevokeConsent {
                    purpose: Purpose::Marketing,
                    channel: Channel::Email,
                    reason: "complaint".into(),
                    method: None,
                },
            )),
            _ => None,
        };
        if let Some(command) = command {
            let respond = |_: &Customer, _: &[EventEnvelope]| (200, Value::Null);
            let meta = CommandMeta {
                command_id: uuid::Uuid::now_v7(),
                correlation_id: meta.correlation_id,
                causation_id: Some(event_id),
                actor: Actor::system("ses"),
            };
            match self
                .customers
                .execute(&customer_id, &command, &meta, None, &respond)
                .await
            {
                Ok(_) => {}
                // Already revoked, already invalid, or the customer is gone: nothing to do.
                Err(crate::customer::CommandError::Rejected(_)) => {}
                Err(e) if e.is_retryable() => return Err(DeliveryError::Retry(e.to_string())),
                Err(e) => return Err(DeliveryError::Poison(e.to_string())),
            }
        }
        Ok(FeedbackOutcome::Recorded)
    }
}

/// A fixed-width UTC time, so that sort keys order by time.
fn sort_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Why an address (by its salted hash) is suppressed for a message of `category`, if it is. A
/// complaint suppresses marketing only; a hard bounce or an invalid address
/// everything.
pub async fn suppression_reason(
    docs: &dyn ReadModelStore,
    channel: Channel,
    address_hash: &str,
    category: Category,
) -> Result<Option<String>, StoreError> {
    let Some(doc) = docs
        .get(SUPPRESSION_LIST, &suppression_partition(channel, address_hash), "entry")
        .await?
    else {
        return Ok(None);
    };
    let entry: SuppressionEntry = serde_json::from_value(doc).map_err(|e| StoreError::Failed(e.to_string()))?;
    if entry.marketing_only && category == Category::Transactional {
        return Ok(None);
    }
    Ok(Some(entry.reason))
}

fn suppression_partition(channel: Channel, hash: &str) -> String {
    format!("{channel}#{hash}")
}

/// One suppressed address (named by its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SuppressionEntry {
    pub reason: String,
    /// A complaint stops marketing; transactional mail still goes.
    pub marketing_only: bool,
    pub at: DateTime<Utc>,
    pub event_id: uuid::Uuid,
}

/// The suppression list: hard bounces, complaints and invalidated addresses,
/// by salted address hash.
pub struct SuppressionListProjection {
    identifiers: IdentifierHasher,
}

impl SuppressionListProjection {
    pub fn new(identifiers: IdentifierHasher) -> Self {
        SuppressionListProjection { identifiers }
    }
}

#[async_trait]
impl Projection for SuppressionListProjection {
    fn name(&self) -> &'static str {
        SUPPRESSION_LIST
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "EmailBounced" | "EmailComplained" | "CustomerEmailInvalidated"
        )
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let (hash, reason, marketing_only) = match event.event_type.as_str() {
            "CustomerEmailInvalidated" => {
                let email = event.data.get("email").and_then(Value::as_str).unwrap_or_default();
                let reason = event.data.get("reason").and_then(Value::as_str).unwrap_or("invalid");
                (
                    self.identifiers.email(email),
                    format!("invalid address: {reason}"),
                    false,
                )
            }
            _ => match MessageEvent::from_envelope(event)? {
                MessageEvent::EmailBounced {
                    bounce_type: super::events::BounceType::Permanent,
                    address_hash,
                    ..
                } => (address_hash, "hard bounce".to_string(), false),
                MessageEvent::EmailComplained { address_hash, .. } => (address_hash, "complaint".to_string(), true),
                _ => return Ok(Vec::new()),
            },
        };
        let partition = suppression_partition(Channel::Email, &hash);
        // A stronger entry (everything) is never weakened by a complaint.
        if marketing_only {
            if let Some(existing) = docs.get(SUPPRESSION_LIST, &partition, "entry").await? {
                if existing.get("marketing_only") == Some(&Value::Bool(false)) {
                    return Ok(Vec::new());
                }
            }
        }
        let entry = SuppressionEntry {
            reason,
            marketing_only,
            at: event.occurred_at,
            event_id: event.event_id,
        };
        Ok(vec![ReadOp::Put {
            partition,
            sort: "entry".into(),
            body: serde_json::to_value(entry).map_err(|e| ProjectionError::Invalid(e.to_string()))?,
        }])
    }
}

/// The customer's sends of the last seven days (the longest cap window).
pub async fn recent_sends(
    docs: &dyn ReadModelStore,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<SentRecord>, StoreError> {
    let after = format!("{SENT_PREFIX}{}", sort_time(now - Duration::days(7)));
    let docs = docs
        .list(MESSAGE_LOG, customer_id, SENT_PREFIX, Some(&after), 1000)
        .await?;
    Ok(docs
        .into_iter()
        .filter_map(|(_, body)| serde_json::from_value(body).ok())
        .collect())
}

/// The send log: one document per sent message under its customer, sorted by
/// time, for the frequency caps.
pub struct MessageLogProjection;

#[async_trait]
impl Projection for MessageLogProjection {
    fn name(&self) -> &'static str {
        MESSAGE_LOG
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "MessageSent"
    }

    async fn project(&self, event: &EventEnvelope, _docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let MessageEvent::MessageSent {
            message_id,
            customer_id,
            channel,
            category,
            campaign_id,
            ..
        } = MessageEvent::from_envelope(event)?
        else {
            return Ok(Vec::new());
        };
        let record = SentRecord {
            message_id: message_id.clone(),
            channel,
            category,
            campaign_id,
            at: event.occurred_at,
        };
        Ok(vec![ReadOp::Put {
            partition: customer_id,
            sort: format!("{SENT_PREFIX}{}#{message_id}", sort_time(event.occurred_at)),
            body: serde_json::to_value(record).map_err(|e| ProjectionError::Invalid(e.to_string()))?,
        }])
    }
}

#[async_trait]
impl crate::consumer::EventHandler for MessageDelivery {
    fn name(&self) -> &'static str {
        ACTOR
    }

    fn consumer_names(&self) -> Vec<&'static str> {
        vec![ACTOR]
    }

    async fn handle(
        &self,
        event: &EventEnvelope,
        now: DateTime<Utc>,
    ) -> Result<crate::consumer::GroupOutcome, crate::consumer::ConsumeError> {
        let mut outcome = crate::consumer::GroupOutcome {
            applied: Vec::new(),
            duplicates: Vec::new(),
            parked: Vec::new(),
        };
        if event.event_type != "MessageRequested" {
            return Ok(outcome);
        }
        match self.on_requested(event).await {
            Ok(DeliveryOutcome::Duplicate) => outcome.duplicates.push(ACTOR),
            Ok(_) => outcome.applied.push(ACTOR),
            Err(DeliveryError::Retry(message)) => {
                return Err(crate::consumer::ConsumeError::Retryable {
                    consumer: ACTOR,
                    message,
                })
            }
            Err(DeliveryError::Poison(reason)) => {
                crate::consumer::park_poison(self.dead_letters.as_ref(), ACTOR, event, reason, now).await?;
                outcome.parked.push(ACTOR);
            }
        }
        Ok(outcome)
    }

    async fn handle_page(
        &self,
        events: &[crate::event::EventEnvelope],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::consumer::PageOutcome, crate::consumer::ConsumeError> {
        crate::consumer::handle_each(self, events, now).await
    }
}

#[async_trait]
impl crate::scheduler::TimerHandler for MessageDelivery {
    async fn on_timer(&self, payload: &TimerPayload) -> Result<(), crate::scheduler::SchedulerError> {
        if payload.kind != TimerKind::MessageDeferral {
            // Other timers belong to other functions.
            return Ok(());
        }
        match self.on_deferral_timer(payload).await {
            Ok(_) => Ok(()),
            Err(DeliveryError::Retry(m)) => Err(crate::scheduler::SchedulerError::Unavailable(m)),
            Err(DeliveryError::Poison(m)) => Err(crate::scheduler::SchedulerError::Refused(m)),
        }
    }
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;
