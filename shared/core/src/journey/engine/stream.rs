//! An instance's stream: loaded and folded, its new events appended (then
//! its timers scheduled and its index written), and healed when a crash
//! left its timer and index behind it. [`Cause`] sets the correlation and
//! causation of everything the engine stores.

use super::{EngineError, JourneyEngine, JOURNEY_INDEX};
use crate::event::{Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::journey::instance::{self, JourneyEvent, JourneyInstance};
use crate::ports::{AppendError, AppendRequest, ExpectedVersion};
use crate::scheduler::TimerPayload;
use uuid::Uuid;

/// A timer re-armed by healing is due at least this far ahead: EventBridge
/// Scheduler refuses an `at()` in the past and fires with a minute's
/// precision.
pub const REARM_MARGIN: chrono::Duration = chrono::Duration::minutes(1);

/// What a stored decision descends from: the correlation id it carries on,
/// and the event that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cause {
    correlation_id: Uuid,
    causation_id: Uuid,
}

impl Cause {
    /// The cause of a decision taken because of `e`: its correlation, and `e` itself.
    pub(super) fn of(e: &EventEnvelope) -> Self {
        Cause {
            correlation_id: e.correlation_id,
            causation_id: e.event_id,
        }
    }

    /// The metadata of the command this cause leads to. The one place where
    /// the engine sets correlation and causation: a start (from its trigger),
    /// a step (from its input event, or for a timer from the event that set
    /// it) and a pause's continuation (from the step before it) all go
    /// through here, so "why was this message sent?" can walk back from any
    /// journey event to its trigger.
    pub(super) fn meta(self, actor: Actor) -> CommandMeta {
        CommandMeta {
            command_id: Uuid::now_v7(),
            correlation_id: self.correlation_id,
            causation_id: Some(self.causation_id),
            actor,
        }
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
    pub(super) fn own_cause(&self) -> Option<Cause> {
        let set_at = self.state.waiting.as_ref().map(|w| w.set_at_version);
        self.envelopes
            .iter()
            .rev()
            .find(|e| set_at.is_none_or(|v| e.version == v))
            .or(self.envelopes.last())
            .map(Cause::of)
    }
}

pub(super) enum StoreOutcome {
    Conflict,
    Failed(EngineError),
}

impl JourneyEngine {
    /// One instance, folded from its stream.
    pub async fn load(&self, instance_id: &str) -> Result<Option<JourneyInstance>, EngineError> {
        Ok(self.load_history(instance_id).await?.map(|l| l.state))
    }

    /// One instance with its events.
    pub async fn load_history(&self, instance_id: &str) -> Result<Option<LoadedInstance>, EngineError> {
        let envelopes = self
            .events
            .read_stream(&instance::stream_id(instance_id), 0, usize::MAX)
            .await?;
        let mut state = None;
        let mut events = Vec::with_capacity(envelopes.len());
        for e in &envelopes {
            let typed = JourneyEvent::from_envelope(e).map_err(|e| EngineError::Poison(e.to_string()))?;
            state = instance::evolve(state, &typed, e.occurred_at, e.version);
            events.push((typed, e.version));
        }
        Ok(state.map(|state| LoadedInstance {
            state,
            events,
            envelopes,
        }))
    }

    /// Appends an instance's events, schedules the timers they ask for and
    /// updates the index, in that order: an index that caught up with the
    /// stream therefore proves the timers were set.
    pub(super) async fn store(
        &self,
        instance_id: &str,
        customer_id: &str,
        expected: ExpectedVersion,
        events: &[JourneyEvent],
        meta: &CommandMeta,
        before: Option<&JourneyInstance>,
    ) -> Result<JourneyInstance, StoreOutcome> {
        let now = self.clock.now();
        let stream = instance::stream_id(instance_id);
        let envelopes = crate::event::envelopes(&stream, Some(customer_id), events, meta, now)
            .map_err(|e| StoreOutcome::Failed(EngineError::Poison(e.to_string())))?;
        let appended = match self
            .events
            .append(AppendRequest {
                stream_id: stream.clone(),
                expected,
                events: envelopes,
                reservations: Vec::new(),
                receipt: None,
            })
            .await
        {
            Ok(a) => a,
            Err(AppendError::Conflict { .. }) => return Err(StoreOutcome::Conflict),
            Err(AppendError::Store(e)) => return Err(StoreOutcome::Failed(e.into())),
            Err(other) => return Err(StoreOutcome::Failed(EngineError::Poison(other.to_string()))),
        };
        let mut state = before.cloned();
        let mut versioned = Vec::new();
        for (e, stored) in events.iter().zip(&appended.events) {
            state = instance::evolve(state, e, stored.occurred_at, stored.version);
            versioned.push((e.clone(), stored.version));
        }
        let Some(state) = state else {
            return Err(StoreOutcome::Failed(EngineError::Poison(
                "journey without a start".into(),
            )));
        };
        crate::crash::point(crate::crash::JOURNEY_AFTER_APPEND);
        for timer in instance::timers_to_schedule(&state, &versioned) {
            self.scheduler
                .schedule(timer)
                .await
                .map_err(|e| StoreOutcome::Failed(e.into()))?;
        }
        crate::crash::point(crate::crash::JOURNEY_AFTER_TIMER);
        let indexed_at = self
            .docs
            .checkpoint(JOURNEY_INDEX, &stream)
            .await
            .map_err(|e| StoreOutcome::Failed(e.into()))?;
        let first_new = versioned.first().map_or(state.version, |(_, v)| *v);
        if indexed_at + 1 < first_new {
            // The index missed earlier events too (a crash after an earlier
            // append, such as a start's before its timer was set): index the
            // whole stream, with its message pointers. No earlier timer is
            // left to set: every input that stores events ends the pending
            // wait (an exit, or the end of a `wait_until`) or replaces it.
            if let Some(loaded) = self.load_history(instance_id).await.map_err(StoreOutcome::Failed)? {
                self.write_index(&loaded.state, &loaded.events, indexed_at)
                    .await
                    .map_err(StoreOutcome::Failed)?;
            }
        } else {
            self.write_index(&state, &versioned, indexed_at)
                .await
                .map_err(StoreOutcome::Failed)?;
        }
        Ok(state)
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
