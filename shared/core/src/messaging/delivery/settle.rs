//! Settling unknown outcomes (decision 0032): the settle check, resends,
//! and giving a message up.

use super::message::MessageState;
use super::pipeline::chained_to;
use super::settings::outcome_metrics;
use super::timer::MessageTimer;
use super::{DeliveryError, DeliveryOutcome, MessageDelivery, SettleOutcome, ACTOR};
use crate::consent::Channel;
use crate::event::{CommandMeta, EventEnvelope};
use crate::failure::Failure;
use crate::messaging::events::{message_stream, MessageEvent, MessageRequest, RequestRef};
use crate::metrics::names as metric;
use crate::ports::DeadLetter;
use crate::privacy::scrub::scrub;
use crate::scheduler::{timer_name, TimerKind, TimerPayload};
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

/// The soonest a settle check whose window has already ended is set for:
/// a one-time schedule must name a time still to come when it reaches
/// EventBridge Scheduler.
const PAST_DUE_CHECK_DELAY: Duration = Duration::seconds(5);

impl MessageDelivery {
    /// What comes of an unknown outcome on `channel` after `resends`
    /// resends ([`outcome_metrics::SETTLEMENT`]); `stale`: found by a settle
    /// check (a claim without any outcome), which sends again at once.
    pub(super) fn settlement(&self, channel: Channel, resends: usize, stale: bool) -> &'static str {
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
    pub(super) fn settle_check_due(&self, state: &MessageState) -> Option<DateTime<Utc>> {
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
    pub(super) fn check_time(&self, settle_by: DateTime<Utc>) -> DateTime<Utc> {
        settle_by.max(self.now() + PAST_DUE_CHECK_DELAY)
    }

    /// Sets (or sets again: the name is the message's, so this replaces) the
    /// settle check of the stream's latest claim, due at `due`. It reuses the
    /// message's timer (`TimerKind::MessageDeferral`, the same name as a
    /// deferral: a message waits for one thing at a time), so it reaches the
    /// channel function like a deferral and is cancelled with it on erasure.
    pub(super) async fn schedule_settle_check(
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
            .map_err(|e| DeliveryError::Step(Failure::retryable("could not schedule the settle check", e)))
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
        let (state, events) = self.load_message(&check.message_id).await?;
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
        let meta = chained_to(events.last());
        if state.resend_pending {
            // Given back by an earlier run of this check, which did not get
            // to deliver it again (or failed to): deliver now.
            return self.resend(check, &state, &meta).await;
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
        let Some((recorded, _)) = self.record(&check.message_id, &meta, &state, record).await? else {
            return Err(DeliveryError::Moved("during the settle check"));
        };
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
        self.resend(check, &recorded, &meta).await
    }

    /// Delivers a message given back after an unknown outcome again: the
    /// whole pipeline (consent, suppression, caps may have changed), then a
    /// new claim and send. `state`: the message stream given back.
    async fn resend(
        &self,
        check: &RequestRef,
        state: &MessageState,
        meta: &CommandMeta,
    ) -> Result<SettleOutcome, DeliveryError> {
        let request = self.find_request(check).await?;
        let send = state.resends + 1;
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
    pub(super) async fn find_request(&self, requested: &RequestRef) -> Result<MessageRequest, DeliveryError> {
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
            DeliveryError::unusable(format!(
                "no MessageRequested for message {} on {}",
                requested.message_id, requested.stream_id
            ))
        })?;
        Ok(MessageRequest::from_envelope(&event)?)
    }

    /// Records a permanent failure and parks the request with its reason.
    pub(super) async fn fail_for_good(
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
        if self
            .record(&request.message_id, meta, state, vec![failed])
            .await?
            .is_none()
        {
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
}
