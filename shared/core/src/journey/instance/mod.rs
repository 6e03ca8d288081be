//! A journey instance: one customer's way through one campaign version, as a
//! pure state machine over its own stream (`journey-<id>`). `decide` turns an
//! input (start, a fired timer, a customer's event, deactivation, pause) into
//! events; `evolve` folds them. Exits act the moment their event arrives, even
//! in the middle of a wait: the pending timer is then cancelled
//! ([`timer_to_cancel`]).
//!
//! Its parts, one file each: `events` (what an instance's stream holds),
//! `state` (the instance those events fold to, [`evolve`]), `decide` (an
//! input turned into events, the lookback's catching up included),
//! `timers` (the timers the events set and cancel) and `aggregate` (the
//! instance as an [`crate::aggregate::Aggregate`]: the engine's command
//! path). The ids, which make starts and messages idempotent, are here.

mod aggregate;
mod decide;
mod events;
mod state;
mod timers;

pub use aggregate::{JourneyAggregate, JourneyFacts};
pub use decide::{decide, decide_with_lookback, looks_back, JourneyContext, JourneyError, JourneyInput, Recorded};
pub use events::{ExitReason, JourneyEvent, TriggerRef};
pub use state::{evolve, InstanceStatus, JourneyInstance, PendingWait};
pub use timers::{next_local_time, pending_timer, timer_to_cancel, timers_to_schedule};

use crate::journey::definition::{Campaign, Reentry};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// The most steps one decision may run through without waiting: a guard
/// against definitions that loop (the loader refuses wait-free cycles too).
pub const MAX_STEPS_PER_DECISION: usize = 100;

/// The stream of journey instance `id`.
pub use crate::vocabulary::streams::journey_stream_id as stream_id;

fn digest(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

/// The instance a trigger starts, by the campaign's re-entry policy. The same
/// trigger (or, for `once`, the same customer) always gives the same id, so a
/// duplicated or reordered trigger can never start a second instance: the
/// second start finds the stream already there.
pub fn instance_id(campaign: &Campaign, customer_id: &str, dedupe_value: &str, event_time: DateTime<Utc>) -> String {
    let id = match campaign.entry.reentry {
        Reentry::Once => digest(&[&campaign.id, customer_id]),
        Reentry::EveryTime => digest(&[&campaign.id, customer_id, dedupe_value]),
        Reentry::OncePerWindow { window } => {
            let bucket = event_time.timestamp().div_euclid(window.as_seconds().max(1));
            digest(&[&campaign.id, customer_id, &bucket.to_string()])
        }
    };
    id[..32].to_string()
}

/// A message's id: the same instance, step and visit always give the same id,
/// so a redelivered decision can never request a second message.
pub fn message_id(instance_id: &str, step_id: &str, visit: u32) -> String {
    format!("msg-{}", &digest(&[instance_id, step_id, &visit.to_string()])[..32])
}

#[cfg(test)]
mod tests;
