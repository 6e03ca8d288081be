//! The lookback (decision 0033): the customer's events recorded after an
//! instance's trigger, which a start or a step catches up on in the same
//! append, because the queues do not keep order.

use super::{EngineError, JourneyEngine};
use crate::bus::BusEntry;
use crate::customer::streams::CUSTOMER_STREAMS;
use crate::event::EventEnvelope;
use crate::journey::definition::Campaign;
use crate::journey::instance::{self, JourneyEvent, TriggerRef};
use serde_json::Value;
use uuid::Uuid;

/// Index lines read per page by the lookback.
const LOOKBACK_PAGE: usize = 500;

/// What the lookback is for: a start (every recorded event comes after
/// it), a fired timer (every one comes before it), or an event (those
/// recorded before it come before it).
#[derive(Clone, Copy)]
pub(super) enum Lookback<'a> {
    Start,
    Timer,
    Event(&'a EventEnvelope),
}

impl JourneyEngine {
    /// The lookback (decision 0033): the events of `customer_id` recorded
    /// after the instance's trigger, in the order they were recorded, each
    /// with its bus form and whether it came before the input being decided.
    /// The journey's decision hands them to the instance as if they had
    /// arrived ([`instance::decide_with_lookback`]), so an event the queue
    /// delivered before the trigger (the trigger's batch failed and came
    /// back after the visibility timeout), or while the instance's start
    /// was half done, still ends its wait or exits it.
    ///
    /// Where they are read: the engine knows an event is the customer's by
    /// its envelope's `customer_id` (that is how `on_event` finds the
    /// customer's instances), and reads their streams through the
    /// [`EventStore`](crate::ports::EventStore) port: the trigger's stream (from the trigger on), the
    /// streams named after the customer (`customer-`, `activity-`,
    /// `segments-`), and the other streams holding their events (carts and
    /// orders live in `cart-<id>` and `order-<id>`, named after neither),
    /// which the projector's [`CUSTOMER_STREAMS`] index lists. Journey
    /// streams are never read (the engine is never handed them), nor a
    /// stream whose bus source no exit rule, goal or `wait_until` of the
    /// campaign can match. Every stored event was stored before it was
    /// published, so this finds every event the engine was handed, and
    /// perhaps some it has not been handed yet: those it takes early, and
    /// their delivery later changes nothing
    /// ([`JourneyInstance::used_events`]).
    ///
    /// "After the trigger": in the trigger's own stream, a higher version
    /// (exact); in any other stream, a `recorded_at` strictly later than the
    /// trigger's (versions of different streams cannot be compared, and
    /// `occurred_at` is the client's time, up to days late for activity).
    /// `recorded_at` is the writer's clock, so events of two streams
    /// recorded within the writers' clock skew (milliseconds) may be
    /// misordered; an event recorded in the same millisecond as the trigger
    /// in another stream does not count.
    ///
    /// What it does not see: a cart or order stream the projector has not
    /// indexed yet (its event is then missed as before), and events of
    /// anonymous profiles merged into the customer. Cost: one index read and
    /// one stream read per stream of the customer that can match, per start
    /// or step that needs it ([`needs_lookback`]: a decision that stores
    /// events, does not end the instance, of a campaign with exits, goals
    /// or `wait_until` steps).
    pub(super) async fn recorded_since_trigger(
        &self,
        customer_id: &str,
        trigger: &TriggerRef,
        campaign: &Campaign,
        position: Lookback<'_>,
    ) -> Result<Vec<(Uuid, Value, bool)>, EngineError> {
        let sources = rule_sources(campaign);
        let mut streams = std::collections::BTreeSet::from([
            crate::customer::stream_id(customer_id),
            crate::customer::activity::activity_stream_id(customer_id),
            crate::segments::stream_id(customer_id),
        ]);
        let mut after: Option<String> = None;
        loop {
            let page = self
                .docs
                .list(CUSTOMER_STREAMS, customer_id, "", after.as_deref(), LOOKBACK_PAGE)
                .await?;
            let done = page.len() < LOOKBACK_PAGE;
            after = page.last().map(|(k, _)| k.clone());
            streams.extend(page.into_iter().map(|(stream, _)| stream));
            if done {
                break;
            }
        }
        streams.remove(&trigger.stream_id);
        streams.retain(|stream| stream_can_match(stream, sources.as_ref()));

        // The trigger's stream from the trigger on: its time, and what came after it.
        let mut found = Vec::new();
        let mut trigger_recorded_at = trigger.occurred_at;
        for e in self
            .events
            .read_stream(&trigger.stream_id, trigger.version.saturating_sub(1), usize::MAX)
            .await?
        {
            if e.version == trigger.version {
                trigger_recorded_at = e.recorded_at;
            } else if e.version > trigger.version {
                found.push(e);
            }
        }
        for stream in &streams {
            let events = self.events.read_stream(stream, 0, usize::MAX).await?;
            found.extend(events.into_iter().filter(|e| e.recorded_at > trigger_recorded_at));
        }
        found.retain(|e| {
            e.customer_id.as_deref() == Some(customer_id)
                && e.event_id != trigger.event_id
                && !e.stream_id.starts_with("journey-")
                && !matches!(position, Lookback::Event(input) if input.event_id == e.event_id)
        });
        found.sort_by(|a, b| (a.recorded_at, &a.stream_id, a.version).cmp(&(b.recorded_at, &b.stream_id, b.version)));
        Ok(found
            .into_iter()
            .map(|e| {
                let before_input = match position {
                    Lookback::Start => false,
                    Lookback::Timer => true,
                    Lookback::Event(input) if input.stream_id == e.stream_id => e.version < input.version,
                    Lookback::Event(input) => e.recorded_at < input.recorded_at,
                };
                let bus = BusEntry::for_event(e.clone()).to_event_json("000000000000", "local");
                (e.event_id, bus, before_input)
            })
            .collect())
    }
}

/// Whether a decision needs the lookback: it stores events, the instance is
/// not ending with them, and the campaign has exits, goals or `wait_until`
/// steps (without them the lookback could find nothing to act on).
pub(super) fn needs_lookback(campaign: &Campaign, events: &[JourneyEvent]) -> bool {
    !events.is_empty()
        && instance::looks_back(campaign)
        && !events.iter().any(|e| matches!(e, JourneyEvent::JourneyExited { .. }))
}

/// The bus sources the campaign's exit rules, goals and `wait_until` steps
/// can match; `None` if one of them does not name its sources (it may match
/// any).
fn rule_sources(campaign: &Campaign) -> Option<std::collections::BTreeSet<String>> {
    let patterns = campaign
        .exit_on
        .iter()
        .chain(&campaign.goals)
        .map(|r| &r.pattern)
        .chain(campaign.steps.iter().filter_map(|s| match s {
            crate::journey::definition::Step::WaitUntil(w) => Some(&w.pattern),
            _ => None,
        }));
    let mut sources = std::collections::BTreeSet::new();
    for pattern in patterns {
        let named = pattern.as_value().get("source").and_then(Value::as_array)?;
        for s in named {
            sources.insert(s.as_str()?.to_string());
        }
    }
    Some(sources)
}

/// Whether events of `stream` can carry one of `sources` (the bus source
/// follows the event type, [`crate::bus::source_for`]; a stream's kind
/// bounds its types). A customer stream or one of an unknown kind always can.
fn stream_can_match(stream: &str, sources: Option<&std::collections::BTreeSet<String>>) -> bool {
    let Some(sources) = sources else {
        return !stream.starts_with("journey-");
    };
    let kind: &[&str] = match stream.split_once('-').map(|(kind, _)| kind) {
        Some("journey") => return false,
        Some("activity") => &["crm.customer"],
        Some("cart" | "order") => &["crm.commerce"],
        Some("segments") => &["crm.segments"],
        Some("message") => &["crm.messaging"],
        _ => return true,
    };
    kind.iter().any(|k| sources.contains(*k))
}
