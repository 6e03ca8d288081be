//! Timers: one-time schedules that come back as `TimerFired` events
//! (ARCHITECTURE.md §7). On AWS, EventBridge Scheduler `at()` schedules whose
//! target is the bus; locally, a timer table fired by the runtime's clock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// EventBridge Scheduler's limit on schedule names.
pub const MAX_TIMER_NAME: usize = 64;

/// The bus `source` and `detail-type` of a fired timer.
pub const TIMER_SOURCE: &str = "crm.scheduler";
pub const TIMER_FIRED: &str = "TimerFired";

/// What a timer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimerKind {
    /// A journey's `wait` or `wait_until` timeout.
    JourneyWait,
    /// No cart activity for the inactivity period.
    CartInactivity,
    /// A deferred message (quiet hours).
    MessageDeferral,
    /// A payment retry.
    PaymentRetry,
    /// A broadcast's next step: its start, or its next page once the rate
    /// allows or its recipients' local time comes (decision 0084).
    BroadcastStep,
    /// A rule segment's answer for one customer changes by time alone: a
    /// window slides past an event (decision 0083).
    SegmentWindow,
}

/// The `detail` of a `TimerFired` event: everything the receiver needs to act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerPayload {
    /// The schedule's deterministic name.
    pub name: String,
    pub kind: TimerKind,
    /// The stream the timer belongs to (`journey-…`, `cart-…`).
    pub stream_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    pub due_at: DateTime<Utc>,
    /// The stream version that set the timer: a receiver ignores a timer an
    /// older state set (the timer was replaced in the meantime).
    pub set_at_version: u64,
    /// Free data for the receiver (step id, attempt ...).
    #[serde(default)]
    pub data: serde_json::Value,
}

/// A deterministic schedule name within [`MAX_TIMER_NAME`]: a readable prefix
/// and a hash of the parts, so the same timer always gets the same name.
pub fn timer_name(kind: TimerKind, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0]);
    }
    let digest = hex::encode(hash.finalize());
    let prefix = match kind {
        TimerKind::JourneyWait => "jw",
        TimerKind::CartInactivity => "ci",
        TimerKind::MessageDeferral => "md",
        TimerKind::PaymentRetry => "pr",
        TimerKind::BroadcastStep => "bs",
        TimerKind::SegmentWindow => "sw",
    };
    // "crm-" + 2 + "-" + 40 hex = 47 characters.
    format!("crm-{prefix}-{}", &digest[..40])
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler unavailable: {0}")]
    Unavailable(String),
    #[error("scheduler refused the timer: {0}")]
    Refused(String),
}

impl SchedulerError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SchedulerError::Unavailable(_))
    }
}

/// One-time timers with deterministic names.
#[async_trait]
pub trait Scheduler: Send + Sync {
    /// Creates the timer, or replaces the one of the same name (rescheduling
    /// replaces). Safe to repeat.
    async fn schedule(&self, timer: TimerPayload) -> Result<(), SchedulerError>;

    /// Deletes the timer; one that does not exist (fired, or never set) is fine.
    async fn cancel(&self, name: &str) -> Result<(), SchedulerError>;

    /// The pending timer of that name, if any.
    async fn get(&self, name: &str) -> Result<Option<TimerPayload>, SchedulerError>;
}

/// A receiver of fired timers (the local bus hands `TimerFired` events to the
/// targets that carry one). Timers can be redelivered: a receiver is idempotent,
/// and ignores a timer that a newer state superseded (by `set_at_version`).
#[async_trait]
pub trait TimerHandler: Send + Sync {
    async fn on_timer(&self, payload: &TimerPayload) -> Result<(), SchedulerError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_short_and_distinct() {
        let a = timer_name(TimerKind::CartInactivity, &["cart-1"]);
        assert_eq!(a, timer_name(TimerKind::CartInactivity, &["cart-1"]));
        assert_ne!(a, timer_name(TimerKind::CartInactivity, &["cart-2"]));
        assert_ne!(a, timer_name(TimerKind::JourneyWait, &["cart-1"]));
        assert_ne!(
            timer_name(TimerKind::JourneyWait, &["ab", "c"]),
            timer_name(TimerKind::JourneyWait, &["a", "bc"])
        );
        assert!(a.len() <= MAX_TIMER_NAME);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
