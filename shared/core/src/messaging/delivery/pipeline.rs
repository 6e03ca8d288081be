//! The delivery path: a request runs the decision pipeline, is claimed on
//! its message stream, and goes to the provider; the outcome is recorded.

use super::message::{Claim, MessageState};
use super::projections::{recent_sends, suppression_reason};
use super::settings::outcome_metrics;
use super::timer::MessageTimer;
use super::{kebab, DeliveryError, DeliveryOutcome, MessageDelivery, ACTOR};
use crate::consent::proof::identifier_proof;
use crate::consent::{Channel, Purpose};
use crate::customer::Customer;
use crate::event::{Actor, CommandMeta, EventEnvelope};
use crate::failure::{Classify, Failure};
use crate::messaging::choice;
use crate::messaging::decision::{self, address, Decision, DecisionInput};
use crate::messaging::events::SuppressionReason;
use crate::messaging::events::{message_stream, DeferralReason, MessageEvent, MessageRequest, RequestRef};
use crate::messaging::provider::{EmailMessage, ProviderError, ProviderReceipt, PushMessage, SmsMessage};
use crate::messaging::render::{self, Rendered};
use crate::messaging::templates::TemplateSourceError;
use crate::messaging::unsubscribe::links;
use crate::metrics::names as metric;
use crate::privacy::scrub::scrub;
use crate::privacy::{HashedIdentifier, IdentifierKind};
use crate::scheduler::{timer_name, TimerKind, TimerPayload};
use crate::vocabulary::Category;
use crate::vocabulary::ChannelChoice;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Provider calls per delivery when throttled (with backoff in between).
const PROVIDER_ATTEMPTS: u32 = 3;
/// Deliveries that failed retryably before the message is given up on.
const MAX_FAILED_DELIVERIES: usize = 5;

impl MessageDelivery {
    /// Handles one stored `MessageRequested` (any number of times, in any order).
    pub async fn on_requested(&self, event: &EventEnvelope) -> Result<DeliveryOutcome, DeliveryError> {
        let request = MessageRequest::from_envelope(event)?;
        let requested = RequestRef::of_event(&request, event);
        let meta = CommandMeta::caused_by(event, Actor::system(ACTOR));
        self.deliver(&request, &requested, &meta).await
    }

    /// Handles the end of a deferral: the request, read again from where it
    /// is stored (or, for a timer set before decision 0041, the copy in the
    /// timer's data), is delivered again.
    pub async fn on_deferral_timer(&self, timer: &MessageTimer) -> Result<DeliveryOutcome, DeliveryError> {
        let (request, requested) = match timer {
            MessageTimer::Deferral(requested) => (self.find_request(requested).await?, requested.clone()),
            MessageTimer::DeferralWithRequest(request) => ((**request).clone(), RequestRef::of_request(request)),
            MessageTimer::Settle(_) => return Err(DeliveryError::unusable("a settle check is no deferral")),
        };
        // Chain to the deferral (the last event on the stream).
        let (_, events) = self.load_message(&request.message_id).await?;
        let meta = chained_to(events.last());
        self.deliver(&request, &requested, &meta).await
    }

    /// Runs the pipeline for `request`, stored at `requested` (what its
    /// deferral and timers name).
    pub(super) async fn deliver(
        &self,
        request: &MessageRequest,
        requested: &RequestRef,
        meta: &CommandMeta,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        let state = self.messages.load(&request.message_id).await?.unwrap_or_default();
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
            .map_err(|e| DeliveryError::Step(Failure::retryable("reading the customer", e)))?;
        // A `channel: preferred` send goes on the channel chosen now (decision 0076).
        let choice = customer.as_ref().and_then(|c| choice::choose(request, c, now));
        let on_chosen;
        let request = match choice.as_ref().map(|c| c.chosen) {
            Some(Some(channel)) => {
                on_chosen = choice::on_channel(request, channel);
                &on_chosen
            }
            Some(None) => return self.no_channel(request, meta, &state, choice).await,
            None => request,
        };
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
                    channel_choice: choice,
                };
                match self.record(&request.message_id, meta, &state, vec![event]).await? {
                    Some(_) => {
                        self.count(metric::MESSAGES_SUPPRESSED, request, Some(kebab(&reason)));
                        Ok(DeliveryOutcome::Suppressed)
                    }
                    None => Ok(DeliveryOutcome::Duplicate),
                }
            }
            Decision::Defer { until, reason } => self.defer(request, requested, meta, &state, until, reason).await,
            Decision::Send => match customer {
                Some(c) => self.send(request, requested, meta, &state, &c, choice).await,
                None => Err(DeliveryError::unusable("decided to send to no customer")),
            },
        }
    }

    /// Refuses a `channel: preferred` send no channel qualifies for.
    async fn no_channel(
        &self,
        request: &MessageRequest,
        meta: &CommandMeta,
        state: &MessageState,
        choice: Option<ChannelChoice>,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        let detail = choice.as_ref().map(choice::none_qualified).unwrap_or_default();
        tracing::info!(message_id = %request.message_id, %detail, "message suppressed: no channel");
        let event = MessageEvent::MessageSuppressed {
            message_id: request.message_id.clone(),
            customer_id: request.customer_id.clone(),
            campaign_id: request.campaign_id.clone(),
            channel: request.channel,
            reason: SuppressionReason::NoChannel,
            detail,
            channel_choice: choice,
        };
        match self.record(&request.message_id, meta, state, vec![event]).await? {
            Some(_) => {
                self.count(
                    metric::MESSAGES_SUPPRESSED,
                    request,
                    Some(kebab(&SuppressionReason::NoChannel)),
                );
                Ok(DeliveryOutcome::Suppressed)
            }
            None => Ok(DeliveryOutcome::Duplicate),
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
        let Some((deferred, _)) = self.record(&request.message_id, meta, state, vec![event]).await? else {
            return Ok(DeliveryOutcome::Duplicate);
        };
        self.schedule_deferral(request, requested, until, deferred.version)
            .await?;
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
            .map_err(|e| DeliveryError::Step(Failure::retryable("could not schedule the deferral", e)))
    }

    async fn send(
        &self,
        request: &MessageRequest,
        requested: &RequestRef,
        meta: &CommandMeta,
        state: &MessageState,
        customer: &Customer,
        choice: Option<ChannelChoice>,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        let now = self.now();
        let Some(to) = address(customer, request.channel) else {
            return Err(DeliveryError::unusable("no address"));
        };
        // The template's current version (decision 0077).
        let template = match self.templates.current(&request.template).await {
            Ok(t) => t,
            Err(TemplateSourceError::Store(e)) => return Err(DeliveryError::Store(e)),
            Err(TemplateSourceError::Render(e)) => {
                return self.fail_for_good(request, meta, state, e.to_string()).await;
            }
        };
        if template.channel() != request.channel {
            // A campaign may name a stored template written for another
            // channel: never send an email's text as an SMS (decision 0077).
            let error = format!(
                "template {} is written for {}, and this message goes by {}",
                request.template,
                template.channel(),
                request.channel
            );
            return self.fail_for_good(request, meta, state, error).await;
        }
        let mut vars = self.variables(request, customer, now);
        if request.category == Category::Marketing {
            // The customer's recommended products (decision 0075).
            let products = crate::segments::latest_recommendations(self.events.as_ref(), &request.customer_id).await?;
            vars["data"] = crate::segments::recommend::with_recommendations(vars["data"].take(), &products);
        }
        // The discount code the step asks for (decision 0074): minted now.
        let discount = self.issue_discount(request, &customer.id, meta).await?;
        vars["discount"] = super::discount::discount_variable(discount.as_ref());
        let rendered = match render::render_compiled(&template, &vars).and_then(|mut r| {
            // A broadcast's subject-line test (decision 0087): the arm's subject.
            if let (Some(subject), Some(_)) = (&request.subject, &r.subject) {
                let subject = render::subject_override(&request.template, subject)?;
                r.subject = Some(subject.render(&request.template, &vars)?);
            }
            Ok(r)
        }) {
            Ok(r) => r,
            Err(e) => {
                return self.fail_for_good(request, meta, state, e.to_string()).await;
            }
        };
        let mut claim = MessageEvent::claim(request, self.identifiers.address(request.channel, &to));
        if let MessageEvent::MessageClaimed {
            channel_choice,
            template_version,
            ..
        } = &mut claim
        {
            *channel_choice = choice;
            *template_version = Some(template.version());
        }
        let Some((claimed, claim_events)) = self.record(&request.message_id, meta, state, vec![claim]).await? else {
            return Ok(DeliveryOutcome::Duplicate);
        };
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
                    kind: request.marketing_kind(),
                };
                let (_, appended) = self
                    .record(&request.message_id, meta, &claimed, vec![sent])
                    .await?
                    .ok_or(DeliveryError::Moved("after the claim"))?;
                self.log_sends(&appended).await?;
                tracing::info!(message_id = %request.message_id, provider_message_id = %receipt.provider_message_id, channel = %request.channel, "message sent");
                self.count(metric::MESSAGES_SENT, request, None);
                Ok(DeliveryOutcome::Sent {
                    provider_message_id: receipt.provider_message_id,
                })
            }
            Err(ProviderError::OutcomeUnknown(error)) => {
                let claimed_at = claim_events.last().map(|e| e.occurred_at).unwrap_or(now);
                self.outcome_unknown(request, requested, meta, &claimed, claimed_at, error)
                    .await
            }
            Err(e) if e.retryable() => {
                let failed = MessageEvent::MessageFailed {
                    message_id: request.message_id.clone(),
                    customer_id: request.customer_id.clone(),
                    channel: request.channel,
                    retryable: true,
                    error: e.to_string(),
                };
                self.record(&request.message_id, meta, &claimed, vec![failed]).await?;
                Err(DeliveryError::Provider(e))
            }
            Err(e) => self.fail_for_good(request, meta, &claimed, e.to_string()).await,
        }
    }

    /// The provider may have taken the message: records
    /// `MessageOutcomeUnknown` after the claim (`claimed`, the stream with
    /// it) and keeps the claim. An email that may still
    /// be sent again ([`DeliverySettings::may_resend`]) gets a settle check
    /// at the end of its window; SMS and push stay unknown (at most once),
    /// and so does an email after its last allowed send (given up).
    #[allow(clippy::too_many_arguments)]
    async fn outcome_unknown(
        &self,
        request: &MessageRequest,
        requested: &RequestRef,
        meta: &CommandMeta,
        claimed: &MessageState,
        claimed_at: DateTime<Utc>,
        error: String,
    ) -> Result<DeliveryOutcome, DeliveryError> {
        let (claimed_version, resends) = (claimed.version, claimed.resends);
        let settle_by = self
            .settings
            .may_resend(request.channel, resends)
            .then(|| claimed_at + self.settings.settle_window_for(resends));
        let unknown = MessageEvent::MessageOutcomeUnknown {
            message_id: request.message_id.clone(),
            customer_id: request.customer_id.clone(),
            channel: request.channel,
            error: error.clone(),
            settle_by,
        };
        let Some((after, _)) = self.record(&request.message_id, meta, claimed, vec![unknown]).await? else {
            // Feedback settled it meanwhile, or a settle check acted: look again.
            return Err(DeliveryError::Moved("after the claim"));
        };
        let claim = Claim {
            version: claimed_version,
            at: claimed_at,
            channel: request.channel,
            category: request.category,
            campaign_id: request.campaign_id.clone(),
            customer_id: request.customer_id.clone(),
            kind: request.marketing_kind(),
        };
        let settlement = self.settlement(request.channel, resends, false);
        // The provider's text may quote the address: logged scrubbed, stored
        // encrypted (decision 0048).
        let logged = scrub(&error);
        if settlement == outcome_metrics::settlement::GIVEN_UP {
            tracing::error!(message_id = %request.message_id, error = %logged, sends = resends + 1, "email outcome unknown after its last allowed send: given up (a late Send still settles it)");
        } else {
            tracing::warn!(message_id = %request.message_id, channel = %request.channel, error = %logged, ?settle_by, "message outcome unknown: claim kept");
        }
        self.count_unknown(&claim, "provider-error", settlement);
        if let Some(settle_by) = settle_by {
            // A failure here is retried: the redelivery finds the open claim
            // and sets the check then.
            self.schedule_settle_check(requested, &request.customer_id, &after, self.check_time(settle_by))
                .await?;
        }
        Ok(DeliveryOutcome::OutcomeUnknown)
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
            Err(e) if e.retryable() => return Err(crate::consumer::ConsumeError::retry(ACTOR, e)),
            Err(e) => {
                crate::consumer::park_poison(self.dead_letters.as_ref(), ACTOR, event, &e, now).await?;
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

/// The metadata of what the delivery records after `last`, the message
/// stream's latest event (a deferral, a claim): its correlation carried on,
/// `last` as the cause; a new chain when the stream has none.
pub(super) fn chained_to(last: Option<&EventEnvelope>) -> CommandMeta {
    match last {
        Some(last) => CommandMeta::caused_by(last, Actor::system(ACTOR)),
        None => CommandMeta::new(Actor::system(ACTOR)),
    }
}
