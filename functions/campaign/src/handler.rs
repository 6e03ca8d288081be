//! One EventBridge event in: a fired timer (`source` crm.scheduler) or a
//! stored event. Unusable events are parked; retryable failures return an
//! error so EventBridge delivers again (then its dead-letter queue keeps it).

use chrono::Utc;
use crm_core::journey::campaigns::CampaignHandler;
use crm_core::ports::DeadLetterQueue;
use crm_core::scheduler::{SchedulerError, TimerHandler, TimerPayload, TIMER_SOURCE};
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("timer not handled, deliver again: {0}")]
    Timer(SchedulerError),
    #[error(transparent)]
    Event(#[from] crm_bus_consumer::handler::HandlerError),
    #[error("timer detail is not a timer: {0}")]
    BadTimer(String),
}

impl From<CampaignError> for Diagnostic {
    fn from(e: CampaignError) -> Self {
        Diagnostic {
            error_type: "CampaignError".into(),
            error_message: e.to_string(),
        }
    }
}

pub async fn handle(
    event: LambdaEvent<Value>,
    campaign: &CampaignHandler,
    dead_letters: &dyn DeadLetterQueue,
) -> Result<Value, CampaignError> {
    if event.payload.get("source").and_then(Value::as_str) == Some(TIMER_SOURCE) {
        let detail = event.payload.get("detail").cloned().unwrap_or_default();
        let timer: TimerPayload = serde_json::from_value(detail).map_err(|e| CampaignError::BadTimer(e.to_string()))?;
        campaign.on_timer(&timer).await.map_err(CampaignError::Timer)?;
        tracing::info!(timer = %timer.name, kind = ?timer.kind, stream_id = %timer.stream_id, "timer handled");
        return Ok(serde_json::json!({ "outcome": "timer", "name": timer.name, "at": Utc::now() }));
    }
    let handled = crm_bus_consumer::handler::handle(event, campaign, dead_letters).await?;
    Ok(serde_json::to_value(handled).unwrap_or_default())
}
