//! The timers an instance's events set and cancel, and the local-time
//! arithmetic of `wait` steps.

use super::*;
use crate::scheduler::{TimerKind, TimerPayload};
use chrono::{DateTime, TimeZone, Utc};

/// The next moment the local wall clock in `tz` shows `time`, strictly after
/// `now`. On the day clocks spring forward past `time`, the first instant
/// after the gap is used; on the day they fall back, the first of the two.
pub fn next_local_time(now: DateTime<Utc>, tz: crm_kernel::vocabulary::Zone, time: chrono::NaiveTime) -> DateTime<Utc> {
    let mut date = now.with_timezone(&tz).date_naive();
    for _ in 0..4 {
        let naive = date.and_time(time);
        let candidate = match tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => Some(t),
            chrono::LocalResult::Ambiguous(first, _) => Some(first),
            // In a spring-forward gap: an hour later is past it.
            chrono::LocalResult::None => tz.from_local_datetime(&(naive + chrono::Duration::hours(1))).earliest(),
        };
        if let Some(c) = candidate.map(|c| c.with_timezone(&Utc)).filter(|c| *c > now) {
            return c;
        }
        date = date.succ_opt().unwrap_or(date);
    }
    now + chrono::Duration::days(1)
}

/// The timer a decision makes obsolete: the pending wait's, when the decision
/// ends the wait (exit, event, or the timer itself firing).
pub fn timer_to_cancel(before: Option<&JourneyInstance>, events: &[JourneyEvent]) -> Option<String> {
    let wait = before?.waiting.as_ref()?;
    let ends = events.iter().any(|e| {
        matches!(
            e,
            JourneyEvent::JourneyExited { .. }
                | JourneyEvent::JourneyWaitEnded { .. }
                | JourneyEvent::TimerFired { .. }
        )
    });
    ends.then(|| wait.timer_name.clone())
}

/// The timers a decision asks for, given the stream version of each event
/// and `instance`, the state after them: a wait the same decision already
/// ended (the lookback found its event, or an exit) needs no timer.
pub fn timers_to_schedule(instance: &JourneyInstance, events: &[(JourneyEvent, u64)]) -> Vec<TimerPayload> {
    events
        .iter()
        .filter_map(|(e, version)| match e {
            JourneyEvent::JourneyWaitScheduled {
                step_id,
                timer_name,
                due_at,
                ..
            } if instance.waiting.as_ref().is_some_and(|w| w.timer_name == *timer_name) => {
                Some(wait_timer(instance, step_id, timer_name, *due_at, *version))
            }
            _ => None,
        })
        .collect()
}

/// The timer of the instance's pending wait, exactly as it was set (same
/// name, due time and `set_at_version`), if the instance is waiting.
pub fn pending_timer(instance: &JourneyInstance) -> Option<TimerPayload> {
    let w = instance.waiting.as_ref()?;
    Some(wait_timer(
        instance,
        &w.step_id,
        &w.timer_name,
        w.due_at,
        w.set_at_version,
    ))
}

fn wait_timer(
    instance: &JourneyInstance,
    step_id: &str,
    name: &str,
    due_at: DateTime<Utc>,
    set_at_version: u64,
) -> TimerPayload {
    TimerPayload {
        name: name.to_string(),
        kind: TimerKind::JourneyWait,
        stream_id: stream_id(&instance.id),
        customer_id: Some(instance.customer_id.clone()),
        due_at,
        set_at_version,
        data: serde_json::json!({ "step_id": step_id }),
    }
}
