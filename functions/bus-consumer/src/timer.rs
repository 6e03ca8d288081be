//! Fired timers (`source` crm.scheduler, detail a `TimerPayload`): what the
//! functions that set timers (campaign, channel) do with one.

use crm_core::failure::{Classify, Failure, FailureKind};
use crm_core::scheduler::{SchedulerError, TimerHandler, TimerPayload, TIMER_SOURCE};
use serde_json::{json, Value};

/// Why a fired timer was not handled: its kind ([`Classify`]) decides
/// whether it is delivered again or parked.
#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    /// Retryable, whatever the handler said: delivered again.
    #[error("timer not handled, deliver again: {0}")]
    NotHandled(#[source] SchedulerError),
    /// Poison: parked.
    #[error("timer detail is not a timer: {0}")]
    NotATimer(#[source] serde_json::Error),
}

impl Classify for TimerError {
    fn kind(&self) -> FailureKind {
        match self {
            TimerError::NotHandled(_) => FailureKind::Retryable,
            TimerError::NotATimer(_) => FailureKind::Poison,
        }
    }
}

/// Is this EventBridge event a fired timer?
pub fn is_timer(event: &Value) -> bool {
    event.get("source").and_then(Value::as_str) == Some(TIMER_SOURCE)
}

/// Hands a fired timer to `handler`; an error means: deliver it again.
pub async fn deliver_timer(event: &Value, handler: &dyn TimerHandler) -> Result<Value, TimerError> {
    let detail = event.get("detail").cloned().unwrap_or_default();
    let timer: TimerPayload = serde_json::from_value(detail).map_err(TimerError::NotATimer)?;
    handler.on_timer(&timer).await.map_err(TimerError::NotHandled)?;
    tracing::info!(timer = %timer.name, kind = ?timer.kind, stream_id = %timer.stream_id, "timer handled");
    Ok(json!({ "outcome": "timer", "name": timer.name }))
}

/// The fired timers of a queue, for [`crate::batch::handle_batch`]: a timer
/// whose detail is not a timer is poison; one its handler could not handle
/// is delivered again.
pub struct Timers<'a>(pub &'a dyn TimerHandler);

#[async_trait::async_trait]
impl crate::batch::OtherMessages for Timers<'_> {
    async fn take(&self, event: &Value) -> Option<crate::batch::Taken> {
        use crate::batch::Taken;
        if !is_timer(event) {
            return None;
        }
        Some(match deliver_timer(event, self.0).await {
            Ok(done) => Taken::Done(done),
            Err(e) => Taken::Failed(Failure::from_error("timer", e)),
        })
    }
}
