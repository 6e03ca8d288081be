//! Fired timers (`source` crm.scheduler, detail a `TimerPayload`): what the
//! functions that set timers (campaign, channel) do with one.

use crm_core::scheduler::{SchedulerError, TimerHandler, TimerPayload, TIMER_SOURCE};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("timer not handled, deliver again: {0}")]
    NotHandled(SchedulerError),
    #[error("timer detail is not a timer: {0}")]
    NotATimer(String),
}

/// Is this EventBridge event a fired timer?
pub fn is_timer(event: &Value) -> bool {
    event.get("source").and_then(Value::as_str) == Some(TIMER_SOURCE)
}

/// Hands a fired timer to `handler`; an error makes EventBridge deliver again.
pub async fn deliver_timer(event: &Value, handler: &dyn TimerHandler) -> Result<Value, TimerError> {
    let detail = event.get("detail").cloned().unwrap_or_default();
    let timer: TimerPayload = serde_json::from_value(detail).map_err(|e| TimerError::NotATimer(e.to_string()))?;
    handler.on_timer(&timer).await.map_err(TimerError::NotHandled)?;
    tracing::info!(timer = %timer.name, kind = ?timer.kind, stream_id = %timer.stream_id, "timer handled");
    Ok(json!({ "outcome": "timer", "name": timer.name }))
}
