//! A fired timer, and one input (an event, a timer, a pause, an exit)
//! decided for an existing instance and stored: steps, branches, waits and
//! exits are the instance's decision ([`instance::decide`]); the engine
//! loads, looks back, appends and cancels the timer the decision ends.

use super::lookback::{needs_lookback, Lookback};
use super::stream::Cause;
#[cfg(doc)]
use super::MAX_ATTEMPTS;
use super::{
    collect_messages, CatalogSnapshot, CustomerContext, EngineError, EngineOutcome, JourneyEngine, JOURNEY_INDEX,
};
use super::{SweepBudget, SWEEP_STREAM};
#[cfg(doc)]
use crate::aggregate::AggregateService;
use crate::event::{Actor, EventEnvelope};
use crate::journey::instance::{self, JourneyError, JourneyInput};
use crate::scheduler::TimerPayload;

impl JourneyEngine {
    /// Handles a fired journey timer: the instance's wait, or (on
    /// [`SWEEP_STREAM`]) one sweep step.
    pub async fn on_timer(&self, timer: &TimerPayload) -> Result<EngineOutcome, EngineError> {
        let mut outcome = EngineOutcome::default();
        if timer.stream_id == SWEEP_STREAM {
            let swept = self.sweep(SweepBudget::from_timer_data(&timer.data)).await?;
            outcome.advanced = swept.fired.into_iter().chain(swept.exited).collect();
            outcome.messages = swept.messages;
            outcome.healed = swept.healed;
            return Ok(outcome);
        }
        let Some(instance_id) = timer.stream_id.strip_prefix("journey-") else {
            return Ok(outcome);
        };
        let catalog = self.catalog.current().await?;
        let customer = timer.customer_id.clone().unwrap_or_default();
        let context = self.customer_context(&customer).await?;
        let input = JourneyInput::Timer {
            timer_name: timer.name.clone(),
        };
        if self
            .advance(&catalog, instance_id, &input, &context, None, None, &mut outcome)
            .await?
        {
            outcome.advanced.push(instance_id.to_string());
        }
        Ok(outcome)
    }

    /// Decides and stores one input for an existing instance through the
    /// command path ([`JourneyEngine::apply`]); true if anything happened.
    /// `cause` is the event the input comes from (`None`: a timer, whose
    /// cause is the event that set it); `indexed_version` the version the
    /// caller's index line showed, if it read one.
    ///
    /// A timer or event reaching an instance of a paused campaign exits it
    /// instead: nothing is sent after a pause. An input that changes nothing
    /// (it was applied before: a retry) checks that the index caught up with
    /// the stream, and heals the instance if a crash left it behind.
    ///
    /// A decision that stores events, without ending the instance, of a
    /// campaign with exits, goals or `wait_until` steps looks back first
    /// ([`JourneyEngine::recorded_since_trigger`]): a missed exit or goal
    /// event recorded before the input ends the instance instead, a missed
    /// event its wait was waiting for ends the wait, and a `wait_until` the
    /// input enters is ended by a matching event recorded since the trigger
    /// that the instance has not acted on. All of it is one append.
    ///
    /// A conflicting writer makes it load, look back and decide again: the
    /// command path's retry loop ([`AggregateService::retrying`]) runs
    /// [`JourneyEngine::advance_once`], at most [`MAX_ATTEMPTS`] times (then
    /// a conflict: the input comes again).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn advance(
        &self,
        catalog: &CatalogSnapshot,
        instance_id: &str,
        input: &JourneyInput,
        context: &CustomerContext,
        cause: Option<&EventEnvelope>,
        indexed_version: Option<u64>,
        outcome: &mut EngineOutcome,
    ) -> Result<bool, EngineError> {
        let round = || self.advance_once(catalog, instance_id, input, context, cause, indexed_version);
        match self.instances.retrying(round).await? {
            Some(Advanced::Stored { messages }) => {
                outcome.messages.extend(messages);
                Ok(true)
            }
            Some(Advanced::Unchanged { healed }) => {
                if healed {
                    outcome.healed.push(instance_id.to_string());
                }
                Ok(false)
            }
            Some(Advanced::Gone) => Ok(false),
            None => Err(EngineError::KeptChanging {
                stream: instance::stream_id(instance_id),
            }),
        }
    }

    /// One round of [`JourneyEngine::advance`]: load, look back, decide and
    /// append; `None` if another writer changed the stream first.
    async fn advance_once(
        &self,
        catalog: &CatalogSnapshot,
        instance_id: &str,
        input: &JourneyInput,
        context: &CustomerContext,
        cause: Option<&EventEnvelope>,
        indexed_version: Option<u64>,
    ) -> Result<Option<Advanced>, EngineError> {
        let Some(loaded) = self.load_history(instance_id).await? else {
            return Ok(Some(Advanced::Gone));
        };
        let state = &loaded.state;
        let Some(at) = catalog.version(&state.campaign_id, state.campaign_version) else {
            return Err(EngineError::UnknownCampaign {
                campaign_id: state.campaign_id.clone(),
                version: state.campaign_version,
            });
        };
        let input = match input {
            JourneyInput::Timer { .. } | JourneyInput::Event { .. } if at.paused => &JourneyInput::CampaignPaused,
            other => other,
        };
        // The customer's segments, if this version's conditions name one
        // (decision 0086).
        self.read_segments_for(context, &at.campaign).await?;
        // Decided once here, to know whether it stores anything and needs
        // the lookback; the command path decides it again with the
        // lookback's finds.
        let events = instance::decide(Some(state), &at.campaign, input, &context.journey())
            .map_err(|e| EngineError::refused(instance_id, e))?;
        if events.is_empty() {
            let indexed_at = match indexed_version {
                Some(v) if v >= state.version => v,
                _ => {
                    self.docs
                        .checkpoint(JOURNEY_INDEX, &instance::stream_id(instance_id))
                        .await?
                }
            };
            let healed = self.heal(&loaded, indexed_at).await?;
            return Ok(Some(Advanced::Unchanged { healed }));
        }
        let mut facts = context.facts(at.campaign.clone());
        if needs_lookback(&at.campaign, &events) {
            let position = match (input, cause) {
                (JourneyInput::Event { .. }, Some(e)) => Lookback::Event(e),
                _ => Lookback::Timer,
            };
            facts.lookback = self
                .recorded_since_trigger(&state.customer_id, &state.trigger, &at.campaign, position)
                .await?;
        }
        let Some(cause) = cause.map(Cause::of).or_else(|| loaded.own_cause()) else {
            return Err(EngineError::refused(instance_id, JourneyError::NotFound));
        };
        let meta = cause.meta(Actor::journey(&at.campaign.id, state.campaign_version));
        let Some((_, events)) = self.apply(instance_id, Some(state), input, &facts, &meta).await? else {
            return Ok(None);
        };
        if let Some(name) = instance::timer_to_cancel(Some(state), &events) {
            self.scheduler.cancel(&name).await?;
        }
        let mut stored = EngineOutcome::default();
        collect_messages(&events, &mut stored);
        Ok(Some(Advanced::Stored {
            messages: stored.messages,
        }))
    }
}

/// What one input did to an instance.
enum Advanced {
    /// Its decision was stored: these messages were requested.
    Stored { messages: Vec<String> },
    /// Nothing to store (applied before); `healed`: the index and timer
    /// were made good after a crash.
    Unchanged { healed: bool },
    /// No such instance.
    Gone,
}
