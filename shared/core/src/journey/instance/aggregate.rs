//! A journey instance as an [`Aggregate`]: the engine stores an instance's
//! decisions through [`AggregateService`](crate::aggregate::AggregateService),
//! over [`decide`] (or [`decide_with_lookback`]) and [`evolve`].

use super::*;
use crate::aggregate::{Aggregate, DecideContext};
use serde_json::Value;
use std::sync::Arc;
use uuid::Uuid;

/// The journey instance aggregate: stream `journey-<id>`, command
/// [`JourneyInput`], input [`JourneyFacts`].
pub struct JourneyAggregate;

/// What an instance's decision reads besides its state and its input, all
/// read by the engine before deciding: the campaign version it runs, the
/// customer's time zone and profile, and the lookback's finds.
#[derive(Debug, Clone)]
pub struct JourneyFacts {
    pub campaign: Arc<Campaign>,
    pub timezone: crm_kernel::vocabulary::Zone,
    pub profile: Option<Arc<Value>>,
    /// The segments the customer is in, read when the campaign's
    /// conditions name one (decision 0086).
    pub segments: Option<Arc<std::collections::BTreeSet<String>>>,
    /// The customer's events recorded after the trigger (event id, the
    /// event as on the bus, recorded before the input), in the order they
    /// were recorded: decided with [`decide_with_lookback`] when there are
    /// any, with [`decide`] otherwise.
    pub lookback: Vec<(Uuid, Value, bool)>,
}

impl JourneyFacts {
    /// The lookback's finds as [`decide_with_lookback`] takes them.
    pub fn recorded(&self) -> Vec<Recorded<'_>> {
        self.lookback
            .iter()
            .map(|(event_id, event, before_input)| Recorded {
                event_id: *event_id,
                event,
                before_input: *before_input,
            })
            .collect()
    }

    /// The context of a decision taken at `now` on these facts.
    pub fn context(&self, now: DateTime<Utc>) -> JourneyContext<'_> {
        JourneyContext {
            now,
            timezone: self.timezone,
            profile: self.profile.as_deref(),
            segments: self.segments.as_deref(),
        }
    }
}

impl Aggregate for JourneyAggregate {
    type State = JourneyInstance;
    type Command = JourneyInput;
    type Event = JourneyEvent;
    type Error = JourneyError;
    type Input = JourneyFacts;

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }

    fn customer_id(state: &JourneyInstance) -> Option<&str> {
        Some(&state.customer_id)
    }

    fn version(state: &JourneyInstance) -> u64 {
        state.version
    }

    fn not_found() -> JourneyError {
        JourneyError::NotFound
    }

    /// The input decided at the service's now, with the lookback's finds
    /// caught up on in the same decision when there are any.
    fn decide(
        state: Option<&JourneyInstance>,
        input: &JourneyInput,
        ctx: &DecideContext<'_, JourneyFacts>,
    ) -> Result<Vec<JourneyEvent>, JourneyError> {
        let facts = ctx.input;
        let context = facts.context(ctx.now);
        if facts.lookback.is_empty() {
            decide(state, &facts.campaign, input, &context)
        } else {
            decide_with_lookback(state, &facts.campaign, input, &context, &facts.recorded())
        }
    }

    fn evolve(
        state: Option<JourneyInstance>,
        event: &JourneyEvent,
        at: DateTime<Utc>,
        version: u64,
    ) -> Option<JourneyInstance> {
        evolve(state, event, at, version)
    }
}
