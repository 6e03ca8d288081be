//! One EventBridge event in: a fired timer (`source` crm.scheduler) or a
//! stored event. Unusable events are parked; retryable failures return an
//! error so EventBridge delivers again (then its dead-letter queue keeps it).

use crm_bus_consumer::timer::{deliver_timer, is_timer, TimerError};
use crm_core::journey::campaigns::CampaignHandler;
use crm_core::ports::DeadLetterQueue;
use crm_core::privacy::KeyStore;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error(transparent)]
    Timer(#[from] TimerError),
    #[error(transparent)]
    Event(#[from] crm_bus_consumer::handler::HandlerError),
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
    keys: &dyn KeyStore,
    dead_letters: &dyn DeadLetterQueue,
) -> Result<Value, CampaignError> {
    if is_timer(&event.payload) {
        return Ok(deliver_timer(&event.payload, campaign).await?);
    }
    // The bus carries events as stored: personal fields encrypted.
    let handled = crm_bus_consumer::handler::handle_stored(event, campaign, keys, dead_letters).await?;
    Ok(serde_json::to_value(handled).unwrap_or_default())
}
