//! The channel function's service: takes a `MessageRequested`, runs the
//! decision pipeline against the customer as the event store knows them now,
//! and records the outcome on the message stream `message-<message id>`.
//!
//! Effectively once: the stream's version is the claim. Every outcome is
//! appended with `ExpectedVersion::Exactly(v)` of the stream as it was read,
//! so of two deliveries of the same request only one appends; before calling
//! a provider, `MessageClaimed` is appended that way, and a delivery that
//! finds a claim never calls the provider (decision 0011).
//!
//! Unknown outcomes settle (decision 0032): a provider error that does not
//! prove the message stayed unsent (a timeout, a lost connection, a 5xx)
//! records `MessageOutcomeUnknown` and keeps the claim. For email a settle
//! check (the message's timer) looks, when the settle window has passed,
//! whether SES reported the message: its `Send` (or any later feedback)
//! settles it as sent through [`MessageDelivery::record_feedback`]; none
//! means SES never took it, and it is sent again, each time with a longer
//! window, until [`DeliverySettings::max_email_sends`] sends were made; after
//! the last one an unknown outcome is given up (counted, alarmed). SMS and
//! push have no such feedback: their unknown outcome stays unknown, at most
//! once. A claim still without an outcome when its window ends (a crash
//! between the claim and the answer) is treated the same way.

use super::decision::{self, address, Decision, DecisionInput, DeliveryPolicy, SentRecord};
use super::events::{message_stream, DeferralReason, MessageEvent, MessageRequest, RequestRef};
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
use crate::metrics::{names as metric, MetricSet, MetricsSink, NoMetrics};
use crate::ports::{
    AppendError, AppendRequest, DeadLetter, DeadLetterQueue, EventStore, ExpectedVersion, ReadModelStore, ReadOp,
    StoreError,
};
use crate::privacy::scrub::scrub;
use crate::privacy::{HashedIdentifier, IdentifierHasher, IdentifierKind};
use crate::relay::{NoPause, Pause};
use crate::scheduler::{timer_name, Scheduler, TimerKind, TimerPayload};
use crate::vocabulary::Category;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The read model of sends per customer (frequency caps).
pub use crate::vocabulary::streams::MESSAGE_LOG;
/// The read model of suppressed addresses.
pub const SUPPRESSION_LIST: &str = "suppression-list";

const SENT_PREFIX: &str = "sent#";
const ACTOR: &str = "channel";
/// Provider calls per delivery when throttled (with backoff in between).
const PROVIDER_ATTEMPTS: u32 = 3;
/// Deliveries that failed retryably before the message is given up on.
const MAX_FAILED_DELIVERIES: usize = 5;
/// The most times one email goes to SES while nothing proves SES took it
/// (the first send and its resends), unless the settings say otherwise.
pub const DEFAULT_MAX_EMAIL_SENDS: u32 = 3;
/// How many times longer each resend's settle window is than the one before,
/// unless the settings say otherwise.
pub const DEFAULT_SETTLE_WINDOW_GROWTH: u32 = 2;
/// The longest a grown settle window becomes (unless the base window is
/// longer still): SES's `Send` comes within seconds, a day covers any backlog
/// of the feedback path that the queue-age alarms would not already show.
const MAX_GROWN_SETTLE_WINDOW: Duration = Duration::days(1);
/// The soonest a settle check whose window has already ended is set for:
/// a one-time schedule must name a time still to come when it reaches
/// EventBridge Scheduler.
const PAST_DUE_CHECK_DELAY: Duration = Duration::seconds(5);

/// Metric names of unknown outcomes (dimension `Channel`), for the alarms in
/// template.yaml (decision 0032).
pub mod outcome_metrics {
    /// A `MessageOutcomeUnknown` recorded: after a provider error that does
    /// not prove the message stayed unsent (property `Reason`:
    /// `provider-error`), or for a claim found without an outcome when its
    /// settle window ended (`stale-claim`). Property [`SETTLEMENT`] says
    /// what comes of it.
    pub const MESSAGE_OUTCOMES_UNKNOWN: &str = "MessageOutcomesUnknown";
    /// The property of [`MESSAGE_OUTCOMES_UNKNOWN`] that says what comes of
    /// the unknown outcome: `settle-check` (email: a check at the window's
    /// end sends it again unless SES reported it), `resend` (a stale email
    /// claim, given back and sent again at once), `given-up` (an email sent
    /// the most times allowed: never sent again, though a late `Send` still
    /// settles it), `at-most-once` (SMS, push: nothing can settle it).
    pub const SETTLEMENT: &str = "Settlement";
    /// The values of [`SETTLEMENT`].
    pub mod settlement {
        pub const SETTLE_CHECK: &str = "settle-check";
        pub const RESEND: &str = "resend";
        pub const GIVEN_UP: &str = "given-up";
        pub const AT_MOST_ONCE: &str = "at-most-once";
    }
    /// A claim found without any outcome when its settle window ended (a
    /// crash between the claim and the provider's answer).
    pub const STALE_MESSAGE_CLAIMS: &str = "StaleMessageClaims";
    /// An email sent again because SES reported nothing within the settle
    /// window after an unknown outcome (property `Send`: which send this
    /// is, 2 for the first resend).
    pub const MESSAGES_RESENT: &str = "MessagesResent";
}

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
    /// How long after its claim a message with an unknown outcome waits for
    /// the provider's word (SES's `Send` comes within seconds) before it is
    /// taken as never sent (email: sent again) or left unknown (SMS, push).
    /// Also when a claim without any outcome counts as stale. This is the
    /// first send's window; each resend's is longer
    /// ([`Self::settle_window_growth`], [`Self::settle_window_for`]).
    pub settle_window: Duration,
    /// The most times one email goes to SES while no `Send` (or later
    /// feedback) proves SES took it: the first send and its resends. After
    /// the last, an unknown outcome is given up (counted, alarmed). 1 never
    /// sends again; 0 counts as 1.
    pub max_email_sends: u32,
    /// How many times longer each resend's settle window is than the one
    /// before (the window after `n` resends is `settle_window × growth^n`,
    /// at most a day unless `settle_window` is longer). 1 keeps it fixed; 0
    /// counts as 1.
    pub settle_window_growth: u32,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            from_address: "Shop <shop@example.com>".into(),
            public_base_url: "http://127.0.0.1:3000".into(),
            shop_url: "https://shop.example".into(),
            policy: DeliveryPolicy::default(),
            first_backoff: std::time::Duration::from_millis(200),
            settle_window: Duration::minutes(15),
            max_email_sends: DEFAULT_MAX_EMAIL_SENDS,
            settle_window_growth: DEFAULT_SETTLE_WINDOW_GROWTH,
        }
    }
}

/// The setting (environment variable) of the settle window, in whole
/// seconds: the channel function's and the local runtime's.
pub const SETTLE_WINDOW_SETTING: &str = "MESSAGE_SETTLE_SECONDS";

impl DeliverySettings {
    /// The channel's settings from its environment, the one reading the
    /// channel Lambda function and the local runtime share (issue 15): each
    /// setting that is absent or blank keeps its default.
    ///
    /// - `FROM_ADDRESS`, `PUBLIC_BASE_URL`, `SHOP_URL`;
    /// - `DELIVERY_CAPS` (`email:3/24h,...`, [`DeliveryPolicy::parse_caps`]);
    /// - `WEEKLY_EMAIL_LIMIT` (a whole number);
    /// - [`SETTLE_WINDOW_SETTING`] (whole seconds).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut settings = DeliverySettings::default();
        if let Some(from) = get("FROM_ADDRESS") {
            settings.from_address = from;
        }
        if let Some(base) = get("PUBLIC_BASE_URL") {
            settings.public_base_url = base;
        }
        if let Some(shop) = get("SHOP_URL") {
            settings.shop_url = shop;
        }
        if let Some(caps) = get("DELIVERY_CAPS") {
            settings.policy.caps = DeliveryPolicy::parse_caps(&caps)?;
        }
        if let Some(limit) = get("WEEKLY_EMAIL_LIMIT") {
            settings.policy.weekly_email_limit = limit
                .parse()
                .map_err(|_| format!("WEEKLY_EMAIL_LIMIT must be a whole number: {limit:?}"))?;
        }
        if let Some(seconds) = get(SETTLE_WINDOW_SETTING) {
            settings.settle_window = Self::parse_settle_window(&seconds)?;
        }
        Ok(settings)
    }

    /// The settle window of a claim made after `resends` resends:
    /// `settle_window × settle_window_growth^resends`, at most a day (or
    /// `settle_window`, if that is longer).
    pub fn settle_window_for(&self, resends: usize) -> Duration {
        let cap = self.settle_window.max(MAX_GROWN_SETTLE_WINDOW);
        let growth = i64::from(self.settle_window_growth.max(1));
        u32::try_from(resends)
            .ok()
            .and_then(|n| growth.checked_pow(n))
            .and_then(|factor| self.settle_window.num_milliseconds().checked_mul(factor))
            .map_or(cap, |millis| Duration::milliseconds(millis).min(cap))
    }

    /// Whether a message on `channel` whose outcome is unknown after
    /// `resends` resends may be sent again when SES reports nothing: email
    /// only, and fewer than [`Self::max_email_sends`] sends so far (the
    /// resends and the one whose outcome is unknown).
    pub fn may_resend(&self, channel: Channel, resends: usize) -> bool {
        let sends = resends.saturating_add(1);
        channel == Channel::Email && sends < self.max_email_sends.max(1) as usize
    }

    /// The settle window from its setting's text ([`SETTLE_WINDOW_SETTING`]):
    /// whole seconds, at least one.
    pub fn parse_settle_window(text: &str) -> Result<Duration, String> {
        match text.trim().parse::<i64>() {
            Ok(seconds) if seconds >= 1 => Ok(Duration::seconds(seconds)),
            _ => Err(format!(
                "{SETTLE_WINDOW_SETTING} must be a whole number of seconds, at least 1: {text:?}"
            )),
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
    /// The provider may or may not have taken it: recorded, the claim kept
    /// (email: a settle check decides; SMS, push: never sent again).
    OutcomeUnknown,
}

/// What a settle check did.
#[derive(Debug, Clone, PartialEq)]
pub enum SettleOutcome {
    /// Nothing left to settle: sent, settled by feedback, finished, released
    /// for a redelivery, or the timer belongs to an earlier claim.
    Settled,
    /// The window has not ended yet: the check is set again for its end.
    Waiting { until: DateTime<Utc> },
    /// The outcome stays unknown for good (SMS, push, or an email already
    /// sent the most times allowed): no further send.
    Unknown,
    /// SES never took the email: it went through delivery again.
    Resent(DeliveryOutcome),
}

/// What a message's timer (`TimerKind::MessageDeferral`) is for, read from
/// its data. The data names the message and where its request is stored
/// ([`RequestRef`]), never the request (decision 0041): the request is read
/// back from the journey stream when the timer fires.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageTimer {
    /// The end of a deferral (data `{"deferral": <RequestRef>}`).
    Deferral(RequestRef),
    /// A settle check (data `{"settle": <RequestRef>}`, see
    /// [`MessageDelivery::on_settle_timer`]).
    Settle(RequestRef),
    /// A deferral timer set before decision 0041, still in flight: its data
    /// is the request itself.
    DeferralWithRequest(Box<MessageRequest>),
}

/// A settle check set before decision 0041: the message and its journey instance.
#[derive(Deserialize)]
struct SettleCheckBefore0041 {
    message_id: String,
    instance_id: String,
}

impl MessageTimer {
    const DEFERRAL: &'static str = "deferral";
    const SETTLE: &'static str = "settle";

    /// What a fired timer is for, if it is a message's timer whose data reads.
    pub fn of(timer: &TimerPayload) -> Option<MessageTimer> {
        if timer.kind != TimerKind::MessageDeferral {
            return None;
        }
        if let Some(data) = timer.data.get(Self::DEFERRAL) {
            return serde_json::from_value(data.clone()).ok().map(MessageTimer::Deferral);
        }
        if let Some(data) = timer.data.get(Self::SETTLE) {
            if let Ok(check) = serde_json::from_value::<RequestRef>(data.clone()) {
                return Some(MessageTimer::Settle(check));
            }
            let before: SettleCheckBefore0041 = serde_json::from_value(data.clone()).ok()?;
            return Some(MessageTimer::Settle(RequestRef {
                message_id: before.message_id,
                stream_id: crate::journey::instance::stream_id(&before.instance_id),
                version: None,
            }));
        }
        serde_json::from_value(timer.data.clone())
            .ok()
            .map(|request| MessageTimer::DeferralWithRequest(Box::new(request)))
    }

    /// The timer a deferral timer set before decision 0041 becomes: the same
    /// timer whose data references the request (as [`Self::of`] reads it
    /// back) instead of holding it. `None` for every other timer. The
    /// migrations of stored timers (`crm-ops migrate-timers`, the local
    /// timers table) use it.
    pub fn without_request_copy(timer: &TimerPayload) -> Option<TimerPayload> {
        let MessageTimer::DeferralWithRequest(request) = MessageTimer::of(timer)? else {
            return None;
        };
        Some(TimerPayload {
            data: json!({ Self::DEFERRAL: RequestRef::of_request(&request) }),
            ..timer.clone()
        })
    }

    /// The data of a timer for `requested`: under `key` ([`Self::DEFERRAL`]
    /// or [`Self::SETTLE`]), what [`Self::of`] reads back.
    fn data(key: &str, requested: &RequestRef) -> Result<Value, DeliveryError> {
        let value = serde_json::to_value(requested).map_err(|e| DeliveryError::Poison(e.to_string()))?;
        Ok(json!({ key: value }))
    }
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

/// The latest claim on a message stream.
#[derive(Debug, Clone)]
struct Claim {
    version: u64,
    at: DateTime<Utc>,
    channel: Channel,
    category: Category,
    campaign_id: String,
    customer_id: String,
}

/// The state of one message stream.
#[derive(Debug, Default)]
struct MessageState {
    version: u64,
    /// Suppressed, sent, or failed for good.
    done: bool,
    /// `MessageSent` is recorded.
    sent: bool,
    /// A claim holds (no outcome, or an unknown one).
    claimed: bool,
    claim: Option<Claim>,
    /// The claim's outcome is unknown (`MessageOutcomeUnknown`).
    unknown: bool,
    /// Sends given back after an unknown outcome (`MessageNotAccepted`):
    /// the resends made or under way.
    resends: usize,
    /// Given back after an unknown outcome and not claimed again yet.
    resend_pending: bool,
    /// The provider reported on the message (it took it).
    feedback: bool,
    deferred_until: Option<DateTime<Utc>>,
    failed_deliveries: usize,
}

fn fold(events: &[EventEnvelope]) -> Result<MessageState, DeliveryError> {
    let mut s = MessageState::default();
    for e in events {
        s.version = e.version;
        let typed = MessageEvent::from_envelope(e).map_err(|err| DeliveryError::Poison(err.to_string()))?;
        match typed {
            MessageEvent::MessageSuppressed { .. } => s.done = true,
            MessageEvent::MessageSent { .. } => {
                s.done = true;
                s.sent = true;
            }
            MessageEvent::MessageDeferred { until, .. } => s.deferred_until = Some(until),
            MessageEvent::MessageClaimed {
                channel,
                category,
                campaign_id,
                customer_id,
                ..
            } => {
                s.claimed = true;
                s.unknown = false;
                s.resend_pending = false;
                s.claim = Some(Claim {
                    version: e.version,
                    at: e.occurred_at,
                    channel,
                    category,
                    campaign_id,
                    customer_id,
                });
            }
            MessageEvent::MessageFailed { retryable, .. } => {
                if retryable {
                    // The claim is given back: the next delivery tries again.
                    s.claimed = false;
                    s.failed_deliveries += 1;
                } else {
                    s.done = true;
                }
            }
            MessageEvent::MessageOutcomeUnknown { .. } => s.unknown = true,
            MessageEvent::MessageNotAccepted { .. } => {
                s.claimed = false;
                s.unknown = false;
                s.resends += 1;
                s.resend_pending = true;
            }
            MessageEvent::MessageAccepted { .. }
            | MessageEvent::MessageContentRejected { .. }
            | MessageEvent::EmailDelivered { .. }
            | MessageEvent::EmailBounced { .. }
            | MessageEvent::EmailComplained { .. }
            | MessageEvent::EmailOpened { .. }
            | MessageEvent::EmailClicked { .. } => s.feedback = true,
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
    pause: Arc<dyn Pause>,
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
            customers: CustomerService::new(events.clone(), clock.clone()).with_identifiers(identifiers.clone()),
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
            pause: Arc::new(NoPause),
        }
    }

    /// How the delivery waits between provider attempts when throttled (the
    /// runtime's timer in the channel function and crm-local; by default it
    /// retries at once).
    pub fn with_pause(mut self, pause: Arc<dyn Pause>) -> Self {
        self.pause = pause;
        self
    }

    /// Where the sent, suppressed, deferred and failed counts go (EMF in the
    /// channel function, nowhere by default).
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = metrics;
        self
    }

    /// One count of `name` for the request's channel, with why as a property.
    fn count(&self, name: &'static str, request: &MessageRequest, reason: Option<String>) {
        let properties: Vec<_> = reason.map(|r| ("Reason", r)).into_iter().collect();
        self.count_for(
            name,
            request.channel,
            request.category,
            &request.campaign_id,
            &properties,
        );
    }

    /// One `MessageOutcomesUnknown` for `claim`: `reason` is why it is
    /// unknown, `settlement` what comes of it
    /// ([`outcome_metrics::SETTLEMENT`]).
    fn count_unknown(&self, claim: &Claim, reason: &str, settlement: &str) {
        self.count_for(
            outcome_metrics::MESSAGE_OUTCOMES_UNKNOWN,
            claim.channel,
            claim.category,
            &claim.campaign_id,
            &[
                ("Reason", reason.to_string()),
                (outcome_metrics::SETTLEMENT, settlement.to_string()),
            ],
        );
    }

    /// One count of `name` for `channel`, with the category, the campaign
    /// and `properties` (why, what comes of it) as properties.
    fn count_for(
        &self,
        name: &'static str,
        channel: Channel,
        category: Category,
        campaign_id: &str,
        properties: &[(&'static str, String)],
    ) {
        let mut set = MetricSet::new(self.now())
            .dimension("Channel", channel.to_string())
            .count(name, 1)
            .property("Category", kebab(&category))
            .property("CampaignId", campaign_id.to_string());
        for (property, value) in properties {
            set = set.property(property, value.clone());
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
        let requested = RequestRef::of_event(&request, event);
        let meta = CommandMeta {
            command_id: event.event_id,
            correlation_id: event.correlation_id,
            causation_id: Some(event.event_id),
            actor: Actor::system(ACTOR),
        };
        self.deliver(&request, &requested, &meta).await
    }

    /// Handles the end of a deferral: the request, read again from where it
    /// is stored (or, for a timer set before decision 0041, the copy in the
    /// timer's data), is delivered again.
    pub async fn on_deferral_timer(&self, timer: &MessageTimer) -> Result<DeliveryOutcome, DeliveryError> {
        let (request, requested) = match timer {
            MessageTimer::Deferral(requested) => (self.find_request(requested).await?, requested.clone()),
            MessageTimer::DeferralWithRequest(request) => ((**request).clone(), RequestRef::of_request(request)),
            MessageTimer::Settle(_) => return Err(DeliveryError::Poison("a settle check is no deferral".into())),
        };
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
        self.deliver(&request, &requested, &meta).await
    }

    /// Runs the pipeline for `request`, stored at `requested` (what its
    /// deferral and timers name).
    async fn deliver(
        &self,
        request: &MessageRequest,
        requested: &RequestRef,
        meta: &CommandMeta,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        let stream = message_stream(&request.message_id);
        let state = fold(&self.events.read_stream(&stream, 0, 1000).await?)?;
        let now = self.now();
        if state.done {
            return Ok(DeliveryOutcome::Duplicate);
        }
        if state.claimed {
            // Another delivery holds the claim: it is sending now, or it
            // ended without recording an outcome (a crash after the claim
            // leaves the request unacknowledged, so this redelivery comes).
            // Make sure the settle check will look at it (idempotent).
            if let Some(due) = self.settle_check_due(&state) {
                self.schedule_settle_check(requested, &request.customer_id, &state, due)
                    .await?;
            }
            return Ok(DeliveryOutcome::Duplicate);
        }
        if let Some(until) = state.deferred_until.filter(|u| *u > now) {
            // A redelivery while deferred: make sure the timer exists (idempotent).
            self.schedule_deferral(request, requested, until, state.version).await?;
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
            Decision::Defer { until, reason } => self.defer(request, requested, meta, &state, until, reason).await,
            Decision::Send => match customer {
                Some(c) => self.send(request, requested, meta, &state, &c).await,
                None => Err(DeliveryError::Poison("decided to send to no customer".into())),
            },
        }
    }

    async fn defer(
        &self,
        request: &MessageRequest,
        requested: &RequestRef,
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
            requested: requested.clone(),
        };
        let Some(appended) = self.append(request, meta, state.version, vec![event]).await? else {
            return Ok(DeliveryOutcome::Duplicate);
        };
        let version = appended.last().map(|e| e.version).unwrap_or(state.version + 1);
        self.schedule_deferral(request, requested, until, version).await?;
        tracing::info!(message_id = %request.message_id, %until, "message deferred");
        self.count(metric::MESSAGES_DEFERRED, request, Some(kebab(&reason)));
        Ok(DeliveryOutcome::Deferred { until })
    }

    /// Sets the message's timer for the end of its deferral: its data names
    /// the message and where its request is stored, nothing of the request.
    async fn schedule_deferral(
        &self,
        request: &MessageRequest,
        requested: &RequestRef,
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
            data: MessageTimer::data(MessageTimer::DEFERRAL, requested)?,
        };
        self.scheduler
            .schedule(timer)
            .await
            .map_err(|e| DeliveryError::Retry(format!("could not schedule the deferral: {e}")))
    }

    async fn send(
        &self,
        request: &MessageRequest,
        requested: &RequestRef,
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
        let claim = MessageEvent::claim(request, self.identifiers.address(request.channel, &to));
        let Some(claimed) = self.append(request, meta, state.version, vec![claim]).await? else {
            return Ok(DeliveryOutcome::Duplicate);
        };
        let claimed_version = claimed.last().map(|e| e.version).unwrap_or(state.version + 1);
        crate::crash::point(crate::crash::CHANNEL_AFTER_CLAIM);
        match self.call_provider(request, customer, &to, rendered, now).await {
            Ok(receipt) => {
                crate::crash::point(crate::crash::CHANNEL_AFTER_SEND);
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
            Err(ProviderError::OutcomeUnknown(error)) => {
                let claimed_at = claimed.last().map(|e| e.occurred_at).unwrap_or(now);
                self.outcome_unknown(request, requested, meta, state, claimed_version, claimed_at, error)
                    .await
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

    /// The provider may have taken the message: records
    /// `MessageOutcomeUnknown` and keeps the claim. An email that may still
    /// be sent again ([`DeliverySettings::may_resend`]) gets a settle check
    /// at the end of its window; SMS and push stay unknown (at most once),
    /// and so does an email after its last allowed send (given up).
    #[allow(clippy::too_many_arguments)]
    async fn outcome_unknown(
        &self,
        request: &MessageRequest,
        requested: &RequestRef,
        meta: &CommandMeta,
        state: &MessageState,
        claimed_version: u64,
        claimed_at: DateTime<Utc>,
        error: String,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        let settle_by = self
            .settings
            .may_resend(request.channel, state.resends)
            .then(|| claimed_at + self.settings.settle_window_for(state.resends));
        let unknown = MessageEvent::MessageOutcomeUnknown {
            message_id: request.message_id.clone(),
            customer_id: request.customer_id.clone(),
            channel: request.channel,
            error: error.clone(),
            settle_by,
        };
        let Some(appended) = self.append(request, meta, claimed_version, vec![unknown]).await? else {
            // Feedback settled it meanwhile, or a settle check acted: look again.
            return Err(DeliveryError::Retry("the message stream moved after the claim".into()));
        };
        let claim = Claim {
            version: claimed_version,
            at: claimed_at,
            channel: request.channel,
            category: request.category,
            campaign_id: request.campaign_id.clone(),
            customer_id: request.customer_id.clone(),
        };
        let settlement = self.settlement(request.channel, state.resends, false);
        // The provider's text may quote the address: logged scrubbed, stored
        // encrypted (decision 0048).
        let logged = scrub(&error);
        if settlement == outcome_metrics::settlement::GIVEN_UP {
            tracing::error!(message_id = %request.message_id, error = %logged, sends = state.resends + 1, "email outcome unknown after its last allowed send: given up (a late Send still settles it)");
        } else {
            tracing::warn!(message_id = %request.message_id, channel = %request.channel, error = %logged, ?settle_by, "message outcome unknown: claim kept");
        }
        self.count_unknown(&claim, "provider-error", settlement);
        if let Some(settle_by) = settle_by {
            let after = MessageState {
                version: appended.last().map(|e| e.version).unwrap_or(claimed_version + 1),
                claim: Some(claim),
                ..MessageState::default()
            };
            // A failure here is retried: the redelivery finds the open claim
            // and sets the check then.
            self.schedule_settle_check(requested, &request.customer_id, &after, self.check_time(settle_by))
                .await?;
        }
        Ok(DeliveryOutcome::OutcomeUnknown)
    }

    /// What comes of an unknown outcome on `channel` after `resends`
    /// resends ([`outcome_metrics::SETTLEMENT`]); `stale`: found by a settle
    /// check (a claim without any outcome), which sends again at once.
    fn settlement(&self, channel: Channel, resends: usize, stale: bool) -> &'static str {
        use outcome_metrics::settlement;
        if channel != Channel::Email {
            settlement::AT_MOST_ONCE
        } else if !self.settings.may_resend(channel, resends) {
            settlement::GIVEN_UP
        } else if stale {
            settlement::RESEND
        } else {
            settlement::SETTLE_CHECK
        }
    }

    /// When an open claim's settle check is due, if it needs one: not when
    /// the outcome is known, nor when it is an unknown outcome that no check
    /// can change (SMS, push, an email after its last allowed send).
    fn settle_check_due(&self, state: &MessageState) -> Option<DateTime<Utc>> {
        let claim = state.claim.as_ref()?;
        if !state.claimed || state.done || state.feedback {
            return None;
        }
        if state.unknown && !self.settings.may_resend(claim.channel, state.resends) {
            return None;
        }
        Some(self.check_time(claim.at + self.settings.settle_window_for(state.resends)))
    }

    /// When to run a settle check for a window ending at `settle_by`: then,
    /// or in a moment if that has passed.
    fn check_time(&self, settle_by: DateTime<Utc>) -> DateTime<Utc> {
        settle_by.max(self.now() + PAST_DUE_CHECK_DELAY)
    }

    /// Sets (or sets again: the name is the message's, so this replaces) the
    /// settle check of the stream's latest claim, due at `due`. It reuses the
    /// message's timer (`TimerKind::MessageDeferral`, the same name as a
    /// deferral: a message waits for one thing at a time), so it reaches the
    /// channel function like a deferral and is cancelled with it on erasure.
    async fn schedule_settle_check(
        &self,
        check: &RequestRef,
        customer_id: &str,
        state: &MessageState,
        due: DateTime<Utc>,
    ) -> Result<(), DeliveryError> {
        let claim_version = state.claim.as_ref().map(|c| c.version).unwrap_or(state.version);
        let timer = TimerPayload {
            name: timer_name(TimerKind::MessageDeferral, &[&check.message_id]),
            kind: TimerKind::MessageDeferral,
            stream_id: message_stream(&check.message_id),
            customer_id: Some(customer_id.to_string()),
            due_at: due,
            set_at_version: claim_version,
            data: MessageTimer::data(MessageTimer::SETTLE, check)?,
        };
        self.scheduler
            .schedule(timer)
            .await
            .map_err(|e| DeliveryError::Retry(format!("could not schedule the settle check: {e}")))
    }

    /// A fired settle check. When the claim it was set for still has no
    /// known outcome after the window: an email that SES never reported
    /// (no `Send`, no later feedback) is given back (`MessageNotAccepted`)
    /// and delivered again while [`DeliverySettings::may_resend`] allows it;
    /// SMS, push, and an email after its last allowed send stay unknown. A
    /// claim without any outcome (a crash between the claim and the answer)
    /// is counted as stale and recorded as unknown first.
    /// Safe to repeat: a check for an earlier claim, or for a settled
    /// message, does nothing.
    pub async fn on_settle_timer(
        &self,
        timer: &TimerPayload,
        check: &RequestRef,
    ) -> Result<SettleOutcome, DeliveryError> {
        let events = self
            .events
            .read_stream(&message_stream(&check.message_id), 0, 1000)
            .await?;
        let state = fold(&events)?;
        let Some(claim) = state.claim.clone() else {
            return Ok(SettleOutcome::Settled);
        };
        if state.done {
            return Ok(SettleOutcome::Settled);
        }
        if claim.version != timer.set_at_version {
            // A check of an earlier claim, redelivered: a newer claim left
            // open (its delivery crashed after claiming) needs its own check.
            if let Some(due) = self.settle_check_due(&state) {
                self.schedule_settle_check(check, &claim.customer_id, &state, due)
                    .await?;
            }
            return Ok(SettleOutcome::Settled);
        }
        let mut meta = CommandMeta::new(Actor::system(ACTOR));
        if let Some(last) = events.last() {
            meta.correlation_id = last.correlation_id;
            meta.causation_id = Some(last.event_id);
        }
        if state.resend_pending {
            // Given back by an earlier run of this check, which did not get
            // to deliver it again (or failed to): deliver now.
            return self.resend(check, &events, &meta).await;
        }
        if !state.claimed || state.feedback {
            return Ok(SettleOutcome::Settled);
        }
        let window = self.settings.settle_window_for(state.resends);
        let settle_by = claim.at + window;
        // EventBridge Scheduler's `at()` has whole seconds: it may fire up to
        // a second before `settle_by`, which is still the window's end.
        if self.now() + Duration::seconds(1) < settle_by {
            self.schedule_settle_check(check, &claim.customer_id, &state, settle_by)
                .await?;
            return Ok(SettleOutcome::Waiting { until: settle_by });
        }
        let stale = !state.unknown;
        let resend = self.settings.may_resend(claim.channel, state.resends);
        let mut record = Vec::new();
        if stale {
            record.push(MessageEvent::MessageOutcomeUnknown {
                message_id: check.message_id.clone(),
                customer_id: claim.customer_id.clone(),
                channel: claim.channel,
                error: format!("no outcome recorded within {} s of the claim", window.num_seconds()),
                settle_by: resend.then_some(settle_by),
            });
        }
        if resend {
            record.push(MessageEvent::MessageNotAccepted {
                message_id: check.message_id.clone(),
                customer_id: claim.customer_id.clone(),
                channel: claim.channel,
                reason: format!(
                    "SES reported nothing (no Send) within {} s of send {}",
                    window.num_seconds(),
                    state.resends + 1
                ),
            });
        }
        if record.is_empty() {
            tracing::warn!(message_id = %check.message_id, channel = %claim.channel, "message outcome stays unknown: no further send");
            return Ok(SettleOutcome::Unknown);
        }
        let appended = self
            .append_to(&check.message_id, &claim.customer_id, &meta, state.version, record)
            .await?;
        if appended.is_none() {
            return Err(DeliveryError::Retry(
                "the message stream moved during the settle check".into(),
            ));
        }
        if stale {
            tracing::warn!(message_id = %check.message_id, channel = %claim.channel, claimed_at = %claim.at, "stale message claim: no outcome within the settle window");
            self.count_for(
                outcome_metrics::STALE_MESSAGE_CLAIMS,
                claim.channel,
                claim.category,
                &claim.campaign_id,
                &[("Reason", "stale-claim".into())],
            );
            let settlement = self.settlement(claim.channel, state.resends, true);
            self.count_unknown(&claim, "stale-claim", settlement);
        }
        if !resend {
            return Ok(SettleOutcome::Unknown);
        }
        let events = self
            .events
            .read_stream(&message_stream(&check.message_id), 0, 1000)
            .await?;
        self.resend(check, &events, &meta).await
    }

    /// Delivers a message given back after an unknown outcome again: the
    /// whole pipeline (consent, suppression, caps may have changed), then a
    /// new claim and send.
    async fn resend(
        &self,
        check: &RequestRef,
        events: &[EventEnvelope],
        meta: &CommandMeta,
    ) -> Result<SettleOutcome, DeliveryError> {
        let request = self.find_request(check).await?;
        let send = fold(events)?.resends + 1;
        tracing::info!(message_id = %check.message_id, send, "sending again: SES never took the message");
        let outcome = self.deliver(&request, check, meta).await?;
        if outcome != DeliveryOutcome::Duplicate {
            self.count_for(
                outcome_metrics::MESSAGES_RESENT,
                request.channel,
                request.category,
                &request.campaign_id,
                &[("Send", send.to_string())],
            );
        }
        Ok(SettleOutcome::Resent(outcome))
    }

    /// The request of a message, read (decrypted by the event store) from
    /// where it is stored: the `MessageRequested` at `requested.version` of
    /// its journey stream, or, when the version is not known or holds
    /// another event, the one on that stream with the message's id. None
    /// there (the journey stream expired) cannot be delivered: poison.
    async fn find_request(&self, requested: &RequestRef) -> Result<MessageRequest, DeliveryError> {
        let is_it = |e: &EventEnvelope| {
            e.event_type == "MessageRequested"
                && e.data.get("message_id").and_then(Value::as_str) == Some(requested.message_id.as_str())
        };
        let mut found = None;
        if let Some(version) = requested.version.filter(|v| *v > 0) {
            found = self
                .events
                .read_stream(&requested.stream_id, version - 1, 1)
                .await?
                .into_iter()
                .find(|e| e.version == version && is_it(e));
        }
        if found.is_none() {
            found = self
                .events
                .read_stream(&requested.stream_id, 0, 1000)
                .await?
                .into_iter()
                .find(|e| is_it(e));
        }
        let event = found.ok_or_else(|| {
            DeliveryError::Poison(format!(
                "no MessageRequested for message {} on {}",
                requested.message_id, requested.stream_id
            ))
        })?;
        MessageRequest::from_envelope(&event).map_err(|e| DeliveryError::Poison(e.to_string()))
    }

    /// Records a permanent failure and parks the request with its reason.
    async fn fail_for_good(
        &self,
        request: &MessageRequest,
        meta: &CommandMeta,
        state: &MessageState,
        error: String,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        tracing::error!(message_id = %request.message_id, error = %scrub(&error), "message failed for good");
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
        self.append_to(&request.message_id, &request.customer_id, meta, version, events)
            .await
    }

    /// [`Self::append`] to the stream of `message_id`.
    async fn append_to(
        &self,
        message_id: &str,
        customer_id: &str,
        meta: &CommandMeta,
        version: u64,
        events: Vec<MessageEvent>,
    ) -> Result<Option<Vec<EventEnvelope>>, DeliveryError> {
        let stream = message_stream(message_id);
        let stored = envelopes(&stream, Some(customer_id), &events, meta, self.now())
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
                    tracing::warn!(message_id = %request.message_id, attempt, "provider throttled: {}", scrub(&m));
                    self.pause.pause(backoff).await;
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

/// The event id of a piece of provider feedback (or of what it settles,
/// `part`): the same feedback always gets the same id, so a redelivery is found.
fn feedback_event_id(stream: &str, feedback_id: &str, part: &str) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let name = if part.is_empty() {
        format!("{stream}/{feedback_id}")
    } else {
        format!("{stream}/{feedback_id}/{part}")
    };
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// How often recording feedback reads the stream again after another
/// writer moved it.
const FEEDBACK_APPEND_ATTEMPTS: usize = 5;

impl MessageDelivery {
    /// Records feedback from the provider (SES send, reject, delivery,
    /// bounce, complaint, open, click) on the message stream, and acts on it.
    ///
    /// Any of it proves SES took the message: when the stream has a claim
    /// but no `MessageSent` (the provider's answer was lost, decision 0032),
    /// `MessageSent` is recorded with it, in the same conditional append, and
    /// the settle check then finds nothing to do. `MessageAccepted` (SES's
    /// `Send`, one per message) is recorded only then: for a message already
    /// recorded sent it adds nothing, and is answered `Duplicate` without a
    /// write. A permanent bounce suppresses the address and invalidates the
    /// customer's email; a complaint suppresses marketing to it and revokes
    /// marketing email consent. `recipient` is the address the feedback is
    /// about.
    pub async fn record_feedback(
        &self,
        feedback: MessageEvent,
        recipient: &str,
        feedback_id: &str,
    ) -> Result<FeedbackOutcome, DeliveryError> {
        let (message_id, customer_id) = match &feedback {
            MessageEvent::MessageAccepted {
                message_id,
                customer_id,
                ..
            }
            | MessageEvent::MessageContentRejected {
                message_id,
                customer_id,
                ..
            }
            | MessageEvent::EmailDelivered {
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
        let accepted = matches!(feedback, MessageEvent::MessageAccepted { .. });
        let stream = message_stream(&message_id);
        // The provider's feedback id makes the event id: a redelivery is found.
        let event_id = feedback_event_id(&stream, feedback_id, "");
        let mut attempt = 0;
        let (appended, meta, settled) = loop {
            attempt += 1;
            let existing = self.events.read_stream(&stream, 0, 1000).await?;
            if existing.iter().any(|e| e.event_id == event_id) {
                return Ok(FeedbackOutcome::Duplicate);
            }
            let state = fold(&existing)?;
            // A claim whose send was never recorded: this feedback settles it.
            let settles = state.claim.clone().filter(|_| !state.sent);
            if accepted && settles.is_none() {
                return Ok(FeedbackOutcome::Duplicate);
            }
            let meta = CommandMeta {
                command_id: event_id,
                correlation_id: existing.first().map(|e| e.correlation_id).unwrap_or(event_id),
                causation_id: existing.last().map(|e| e.event_id),
                actor: Actor::system("ses"),
            };
            let mut events = vec![feedback.clone()];
            let mut ids = vec![event_id];
            if let Some(claim) = &settles {
                let sent = MessageEvent::MessageSent {
                    message_id: message_id.clone(),
                    customer_id: claim.customer_id.clone(),
                    channel: claim.channel,
                    category: claim.category,
                    campaign_id: claim.campaign_id.clone(),
                    // Only SES's `Send` names its message id here.
                    provider_message_id: match &feedback {
                        MessageEvent::MessageAccepted {
                            provider_message_id, ..
                        } => provider_message_id.clone(),
                        _ => String::new(),
                    },
                };
                let sent_id = feedback_event_id(&stream, feedback_id, "sent");
                // Accepted, then sent; sent, then delivered (bounced, ...).
                if accepted {
                    events.push(sent);
                    ids.push(sent_id);
                } else {
                    events.insert(0, sent);
                    ids.insert(0, sent_id);
                }
            }
            let mut stored = envelopes(&stream, Some(&customer_id), &events, &meta, self.now())
                .map_err(|e| DeliveryError::Poison(e.to_string()))?;
            for (e, id) in stored.iter_mut().zip(ids) {
                e.event_id = id;
            }
            let expected = match &settles {
                Some(_) => ExpectedVersion::Exactly(state.version),
                None => ExpectedVersion::Any,
            };
            match self
                .events
                .append(AppendRequest {
                    stream_id: stream.clone(),
                    expected,
                    events: stored,
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await
            {
                Ok(appended) => break (appended, meta, settles),
                Err(AppendError::Conflict { .. }) if attempt < FEEDBACK_APPEND_ATTEMPTS => continue,
                Err(AppendError::Store(s)) => return Err(DeliveryError::from(s)),
                Err(other) => return Err(DeliveryError::Retry(other.to_string())),
            }
        };
        if let Some(claim) = &settled {
            tracing::info!(message_id = %message_id, "message outcome settled as sent by provider feedback");
            let log = Consumer::new(Arc::new(MessageLogProjection), self.events.clone(), self.docs.clone());
            for e in &appended.events {
                log.deliver(e).await.map_err(|e| DeliveryError::Retry(e.to_string()))?;
            }
            self.count_for(
                metric::MESSAGES_SENT,
                claim.channel,
                claim.category,
                &claim.campaign_id,
                &[("Reason", "settled-by-feedback".into())],
            );
        }
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
        crate::consumer::handle_by_customer(self, events, now).await
    }
}

#[async_trait]
impl crate::scheduler::TimerHandler for MessageDelivery {
    /// The message's timer ([`MessageTimer`]): a settle check or the end of
    /// a deferral.
    async fn on_timer(&self, payload: &TimerPayload) -> Result<(), crate::scheduler::SchedulerError> {
        if payload.kind != TimerKind::MessageDeferral {
            // Other timers belong to other functions.
            return Ok(());
        }
        let handled = match MessageTimer::of(payload) {
            Some(MessageTimer::Settle(check)) => self.on_settle_timer(payload, &check).await.map(|_| ()),
            Some(deferral) => self.on_deferral_timer(&deferral).await.map(|_| ()),
            None => Err(DeliveryError::Poison(format!(
                "timer {}: its data names no message",
                payload.name
            ))),
        };
        match handled {
            Ok(_) => Ok(()),
            Err(DeliveryError::Retry(m)) => Err(crate::scheduler::SchedulerError::Unavailable(m)),
            Err(DeliveryError::Poison(m)) => Err(crate::scheduler::SchedulerError::Refused(m)),
        }
    }
}

#[cfg(test)]
#[path = "delivery_tests.rs"]
mod tests;
