//! The fold of one customer's activity stream as an aggregate: the stream's
//! raw activity by UTC day and the days already summarized are its state,
//! "summarize the days before this one" its command, and
//! [`AggregateService`] its command path (load, decide, append with the
//! version read, again on a conflict), as for every other stream
//! (decision 0061).

use super::{is_activity, summary_event_id, RetentionEvent, RetentionPolicy, ACTIVITY_DAY_SUMMARIZED};
use crate::aggregate::{Aggregate, AggregateService, DecideContext};
use crate::clock::Clock;
use crate::customer::activity::activity_stream_id;
use crate::customer::day_summary::ActivityDaySummarized;
use crate::event::{DomainEvent, EventCodecError, EventEnvelope};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::{BTreeMap, BTreeSet};

/// The most summaries one append carries (under `MAX_EVENTS_PER_APPEND`).
pub(super) const SUMMARIES_PER_APPEND: usize = 50;

/// An activity stream as the fold sees it.
#[derive(Debug, Clone, Default)]
pub struct ActivityDays {
    customer_id: Option<String>,
    version: u64,
    /// The raw activity events of each UTC day, in stream order.
    raw: BTreeMap<NaiveDate, Vec<EventEnvelope>>,
    summarized: BTreeSet<NaiveDate>,
}

impl ActivityDays {
    /// The versions of the raw events of the days before `first_kept`: the
    /// days the fold summarizes, so once they are, their raw events may expire.
    pub fn versions_before(&self, first_kept: NaiveDate) -> Vec<u64> {
        self.raw
            .range(..first_kept)
            .flat_map(|(_, events)| events.iter().map(|e| e.version))
            .collect()
    }
}

/// Summarize every day before `first_kept` that is not summarized yet, at
/// most [`SUMMARIES_PER_APPEND`] of them (the rest in the next round).
#[derive(Debug, Clone, Copy)]
pub struct SummarizeDaysBefore {
    pub first_kept: NaiveDate,
}

/// The fold refuses nothing but a stream that does not exist.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FoldRefusal {
    #[error("no activity stream")]
    NoActivity,
}

/// The fold of one activity stream.
pub struct RetentionFold;

impl Aggregate for RetentionFold {
    type State = ActivityDays;
    type Command = SummarizeDaysBefore;
    type Event = RetentionEvent;
    type Error = FoldRefusal;
    type Input = ();

    fn stream_id(customer_id: &str) -> String {
        activity_stream_id(customer_id)
    }

    fn customer_id(state: &ActivityDays) -> Option<&str> {
        state.customer_id.as_deref()
    }

    fn version(state: &ActivityDays) -> u64 {
        state.version
    }

    fn not_found() -> FoldRefusal {
        FoldRefusal::NoActivity
    }

    fn decide(
        state: Option<&ActivityDays>,
        command: &SummarizeDaysBefore,
        _ctx: &DecideContext<'_, ()>,
    ) -> Result<Vec<RetentionEvent>, FoldRefusal> {
        let state = state.ok_or(FoldRefusal::NoActivity)?;
        Ok(state
            .raw
            .range(..command.first_kept)
            .filter(|(day, _)| !state.summarized.contains(*day))
            .filter_map(|(day, events)| ActivityDaySummarized::fold(*day, &events.iter().collect::<Vec<_>>()))
            .take(SUMMARIES_PER_APPEND)
            .map(RetentionEvent::ActivityDaySummarized)
            .collect())
    }

    fn evolve(
        state: Option<ActivityDays>,
        event: &RetentionEvent,
        _at: DateTime<Utc>,
        version: u64,
    ) -> Option<ActivityDays> {
        let mut state = state?;
        let RetentionEvent::ActivityDaySummarized(summary) = event;
        state.summarized.insert(summary.day);
        state.version = version;
        Some(state)
    }

    /// The stream holds the customer's raw activity (recorded by the
    /// activity path) and the summaries: both are read here.
    fn evolve_stored(
        state: Option<ActivityDays>,
        envelope: &EventEnvelope,
    ) -> Result<Option<ActivityDays>, EventCodecError> {
        let mut state = state.unwrap_or_default();
        if state.customer_id.is_none() {
            state.customer_id = envelope.customer_id.clone();
        }
        state.version = envelope.version;
        if envelope.event_type == ACTIVITY_DAY_SUMMARIZED {
            state
                .summarized
                .insert(ActivityDaySummarized::from_envelope(envelope)?.day);
        } else if is_activity(&envelope.event_type) {
            state
                .raw
                .entry(envelope.occurred_at.date_naive())
                .or_default()
                .push(envelope.clone());
        }
        Ok(Some(state))
    }

    /// A summary's id is derived from the stream and the day (the same
    /// summary is the same event, always), it occurred when the day's last
    /// activity did, and it starts no chain of its own.
    fn stamp(event: &RetentionEvent, envelope: &mut EventEnvelope) {
        let RetentionEvent::ActivityDaySummarized(summary) = event;
        envelope.event_id = summary_event_id(&envelope.stream_id, summary.day);
        envelope.correlation_id = envelope.event_id;
        envelope.causation_id = None;
        envelope.occurred_at = summary.last_at;
        envelope.schema_version = RetentionEvent::schema_version(ACTIVITY_DAY_SUMMARIZED);
    }
}

/// The clock of one fold: the `now` it was asked to fold at.
pub(super) struct FoldTime(pub DateTime<Utc>);

impl Clock for FoldTime {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// The fold's command path over a borrowed store.
pub(super) fn service(
    store: &dyn crate::ports::EventStore,
    now: DateTime<Utc>,
) -> AggregateService<RetentionFold, &dyn crate::ports::EventStore> {
    AggregateService::borrowing(store, std::sync::Arc::new(FoldTime(now))).with_max_attempts(5)
}

/// The first day the policy keeps raw at `now`.
pub(super) fn command(policy: &RetentionPolicy, now: DateTime<Utc>) -> SummarizeDaysBefore {
    SummarizeDaysBefore {
        first_kept: policy.first_kept_day(now),
    }
}
