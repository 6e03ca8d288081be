//! An instance's stream: loaded and folded, its new events appended through
//! the command path (then its timers scheduled and its index written), and
//! healed when a crash left its timer and index behind it. [`Cause`] sets the correlation and
//! causation of everything the engine stores.

use super::{EngineError, JourneyEngine, JOURNEY_INDEX};
use crate::aggregate::{AggregateError, Executed};
use crate::event::{Actor, CommandMeta, DomainEvent, EventCodecError, EventEnvelope};
use crate::journey::instance::{self, JourneyEvent, JourneyFacts, JourneyInput, JourneyInstance};
use crate::ports::StoreError;
use crate::scheduler::TimerPayload;

/// A timer re-armed by healing is due at least this far ahead: EventBridge
/// Scheduler refuses an `at()` in the past and fires with a minute's
/// precision.
pub const REARM_MARGIN: chrono::Duration = chrono::Duration::minutes(1);

/// What a stored decision descends from: the event that caused it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cause<'a>(&'a EventEnvelope);

impl<'a> Cause<'a> {
    /// The cause of a decision taken because of `e`.
    pub(super) fn of(e: &'a EventEnvelope) -> Self {
        Cause(e)
    }

    /// The metadata of the command this cause leads to: the event's
    /// correlation, and the event as its causation
    /// ([`CommandMeta::caused_by`], the one place they are set). A start
    /// (from its trigger), a step (from its input event, or for a timer
    /// from the event that set it) and a pause's continuation (from the
    /// step before it) all go through here, so "why was this message
    /// sent?" can walk back from any journey event to its trigger.
    pub(super) fn meta(self, actor: Actor) -> CommandMeta {
        CommandMeta::caused_by(self.0, actor)
    }
}

/// An instance as its stream has it: the folded state, and each event with
/// its stored envelope.
pub struct LoadedInstance {
    pub state: JourneyInstance,
    pub(super) events: Vec<(JourneyEvent, u64)>,
    pub(super) envelopes: Vec<EventEnvelope>,
}

impl LoadedInstance {
    /// What a decision without an outside event descends from: for a timer,
    /// the event that set it; otherwise the instance's latest event. `None`
    /// only for an empty stream, which no loaded instance has.
    pub(super) fn own_cause(&self) -> Option<Cause<'_>> {
        let set_at = self.state.waiting.as_ref().map(|w| w.set_at_version);
        self.envelopes
            .iter()
            .rev()
            .find(|e| set_at.is_none_or(|v| e.version == v))
            .or(self.envelopes.last())
            .map(Cause::of)
    }
}

impl JourneyEngine {
    /// One instance, folded from its stream.
    pub async fn load(&self, instance_id: &str) -> Result<Option<JourneyInstance>, EngineError> {
        Ok(self.load_history(instance_id).await?.map(|l| l.state))
    }

    /// One instance with its events, loaded through the command path
    /// ([`AggregateService::load_stream`](crate::aggregate::AggregateService::load_stream)).
    pub async fn load_history(&self, instance_id: &str) -> Result<Option<LoadedInstance>, EngineError> {
        let (state, envelopes) = self
            .instances
            .load_stream(instance_id)
            .await
            .map_err(|e| EngineError::instance(instance_id, e))?;
        let Some(state) = state else {
            return Ok(None);
        };
        let events = typed(&envelopes).map_err(|e| EngineError::instance(instance_id, e.into()))?;
        Ok(Some(LoadedInstance {
            state,
            events,
            envelopes,
        }))
    }

    /// Stores an input's decision on an instance through the command path
    /// ([`AggregateService::try_once`](crate::aggregate::AggregateService::try_once)
    /// on `before`, the instance as loaded, or `None` for a start: the
    /// append expects the stream where `before` left it), then schedules
    /// the timers its events ask for and updates the index, in that order:
    /// an index that caught up with the stream therefore proves the timers
    /// were set. The instance after its events, and the events; `None` if
    /// another writer changed the stream first (nothing was stored).
    pub(super) async fn apply(
        &self,
        instance_id: &str,
        before: Option<&JourneyInstance>,
        input: &JourneyInput,
        facts: &JourneyFacts,
        meta: &CommandMeta,
    ) -> Result<Option<(JourneyInstance, Vec<JourneyEvent>)>, EngineError> {
        let no_answer = |_: &JourneyInstance, _: &[EventEnvelope]| (200, serde_json::Value::Null);
        let executed = self
            .instances
            .try_once(instance_id, before.cloned(), input, facts, meta, None, &no_answer)
            .await
            .map_err(|e| EngineError::instance(instance_id, e))?;
        let (state, appended) = match executed {
            None => return Ok(None),
            Some(Executed::Applied { state, events, .. }) => (*state, events),
            // Only a command with an idempotency key is answered from a receipt.
            Some(Executed::Replayed { .. }) => {
                return Err(EngineError::instance(
                    instance_id,
                    AggregateError::Store(StoreError::Failed("answered from a receipt it never asked for".into())),
                ))
            }
        };
        let versioned = typed(&appended).map_err(|e| EngineError::instance(instance_id, e.into()))?;
        crate::crash::point(crate::crash::JOURNEY_AFTER_APPEND);
        for timer in instance::timers_to_schedule(&state, &versioned) {
            self.scheduler.schedule(timer).await?;
        }
        crate::crash::point(crate::crash::JOURNEY_AFTER_TIMER);
        let stream = instance::stream_id(instance_id);
        let indexed_at = self.docs.checkpoint(JOURNEY_INDEX, &stream).await?;
        let first_new = versioned.first().map_or(state.version, |(_, v)| *v);
        if indexed_at + 1 < first_new {
            // The index missed earlier events too (a crash after an earlier
            // append, such as a start's before its timer was set): index the
            // whole stream, with its message pointers. No earlier timer is
            // left to set: every input that stores events ends the pending
            // wait (an exit, or the end of a `wait_until`) or replaces it.
            if let Some(loaded) = self.load_history(instance_id).await? {
                self.write_index(&loaded.state, &loaded.events, indexed_at).await?;
            }
        } else {
            self.write_index(&state, &versioned, indexed_at).await?;
        }
        let events = versioned.into_iter().map(|(e, _)| e).collect();
        Ok(Some((state, events)))
    }

    /// Makes good what a crash after an instance's append left undone, if
    /// its index (at `indexed_at`) is behind its stream: the pending timer is
    /// set again under its deterministic name (creating it, or replacing it
    /// by the same timer; due a margin ahead if its time has passed), then
    /// the index is written. True if anything was behind.
    pub(super) async fn heal(&self, loaded: &LoadedInstance, indexed_at: u64) -> Result<bool, EngineError> {
        let state = &loaded.state;
        if indexed_at >= state.version {
            return Ok(false);
        }
        tracing::warn!(
            instance_id = %state.id,
            indexed_at,
            version = state.version,
            "journey index behind its stream: re-arming the timer and writing the index"
        );
        if let Some(timer) = instance::pending_timer(state) {
            self.scheduler.schedule(self.rearmable(timer)).await?;
        }
        self.write_index(state, &loaded.events, indexed_at).await?;
        Ok(true)
    }

    /// A timer as it can be created now: due no earlier than [`REARM_MARGIN`] ahead.
    pub(super) fn rearmable(&self, mut timer: TimerPayload) -> TimerPayload {
        let earliest = self.clock.now() + REARM_MARGIN;
        if timer.due_at < earliest {
            timer.due_at = earliest;
        }
        timer
    }
}

/// Stored envelopes as the instance's events, with their versions.
fn typed(envelopes: &[EventEnvelope]) -> Result<Vec<(JourneyEvent, u64)>, EventCodecError> {
    envelopes
        .iter()
        .map(|e| JourneyEvent::from_envelope(e).map(|typed| (typed, e.version)))
        .collect()
}
