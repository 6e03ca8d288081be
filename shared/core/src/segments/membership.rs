//! A customer's segment membership as its stream has it ([`Membership`],
//! [`evolve`]), the rules of a change ([`decide`]), and the aggregate the
//! shared command path ([`crate::aggregate::AggregateService`]) runs them in.

use super::commands::{Desired, MembershipCommand};
use super::rules::{is_computed, rule_of};
use super::{stream_id, SegmentEvent};
use crate::aggregate::{Aggregate, DecideContext};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The segments a customer is in, each with why they joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub customer_id: String,
    /// Segment id → the reason the customer joined it.
    pub segments: BTreeMap<String, String>,
    pub version: u64,
}

/// A membership after `event` (the `version`th of the stream).
pub fn evolve(state: Option<Membership>, event: &SegmentEvent, version: u64) -> Option<Membership> {
    let (SegmentEvent::CustomerSegmentAdded { customer_id, .. }
    | SegmentEvent::CustomerSegmentRemoved { customer_id, .. }) = event;
    let mut membership = state.unwrap_or_else(|| Membership {
        customer_id: customer_id.clone(),
        segments: BTreeMap::new(),
        version: 0,
    });
    match event {
        SegmentEvent::CustomerSegmentAdded { segment, reason, .. } => {
            membership.segments.insert(segment.clone(), reason.clone());
        }
        SegmentEvent::CustomerSegmentRemoved { segment, .. } => {
            membership.segments.remove(segment);
        }
    }
    membership.version = version;
    Some(membership)
}

/// The changes `command` makes to customer `customer_id`'s membership
/// (none when it already is as asked).
pub fn decide(
    state: Option<&Membership>,
    command: &MembershipCommand,
    customer_id: &str,
    desired: &Desired,
) -> Vec<SegmentEvent> {
    let none = BTreeMap::new();
    let current = state.map_or(&none, |m| &m.segments);
    match command {
        MembershipCommand::Reconcile => {
            let mut changes = Vec::new();
            // Manual segments are not the evaluator's to remove.
            for segment in current.keys().filter(|s| is_computed(s) && !desired.contains_key(*s)) {
                changes.push(SegmentEvent::CustomerSegmentRemoved {
                    segment: segment.clone(),
                    customer_id: customer_id.to_string(),
                    reason: format!("no longer matches: {}", rule_of(segment).unwrap_or_default()),
                });
            }
            for (segment, reason) in desired.iter().filter(|(s, _)| !current.contains_key(*s)) {
                changes.push(SegmentEvent::CustomerSegmentAdded {
                    segment: segment.clone(),
                    customer_id: customer_id.to_string(),
                    reason: reason.clone(),
                });
            }
            changes
        }
        MembershipCommand::LeaveAll { reason } => current
            .keys()
            .map(|segment| SegmentEvent::CustomerSegmentRemoved {
                segment: segment.clone(),
                customer_id: customer_id.to_string(),
                reason: reason.to_string(),
            })
            .collect(),
        MembershipCommand::Rules { answers } => answers
            .iter()
            .filter(|a| a.matches != current.contains_key(&a.segment))
            .map(|a| match a.matches {
                true => SegmentEvent::CustomerSegmentAdded {
                    segment: a.segment.clone(),
                    customer_id: customer_id.to_string(),
                    reason: a.reason.clone(),
                },
                false => SegmentEvent::CustomerSegmentRemoved {
                    segment: a.segment.clone(),
                    customer_id: customer_id.to_string(),
                    reason: a.reason.clone(),
                },
            })
            .collect(),
        MembershipCommand::Request { segment, .. } if is_computed(segment) => Vec::new(),
        MembershipCommand::Request { segment, join, reason } => match (join, current.contains_key(segment)) {
            (true, false) => vec![SegmentEvent::CustomerSegmentAdded {
                segment: segment.clone(),
                customer_id: customer_id.to_string(),
                reason: reason.clone(),
            }],
            (false, true) => vec![SegmentEvent::CustomerSegmentRemoved {
                segment: segment.clone(),
                customer_id: customer_id.to_string(),
                reason: reason.clone(),
            }],
            _ => Vec::new(),
        },
    }
}

/// Membership commands are never refused; this is the one answer the
/// command path gives a command that changes nothing on a customer with no
/// membership stream yet (nothing to write).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("the customer has no segment membership yet")]
    NoMembership,
}

/// A customer's segment membership for the shared command path: the
/// aggregate id is the customer id.
pub struct SegmentMembership;

impl Aggregate for SegmentMembership {
    type State = Membership;
    type Command = MembershipCommand;
    type Event = SegmentEvent;
    type Error = MembershipError;
    type Input = Desired;

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }
    fn customer_id(state: &Membership) -> Option<&str> {
        Some(&state.customer_id)
    }
    fn version(state: &Membership) -> u64 {
        state.version
    }
    fn not_found() -> MembershipError {
        MembershipError::NoMembership
    }
    fn decide(
        state: Option<&Membership>,
        command: &MembershipCommand,
        ctx: &DecideContext<'_, Desired>,
    ) -> Result<Vec<SegmentEvent>, MembershipError> {
        Ok(decide(state, command, ctx.id, ctx.input))
    }
    fn evolve(state: Option<Membership>, event: &SegmentEvent, _at: DateTime<Utc>, version: u64) -> Option<Membership> {
        evolve(state, event, version)
    }
}
