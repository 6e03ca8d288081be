//! The campaign function's queue carries fired timers (`source`
//! crm.scheduler) and stored events. A batch goes through
//! [`crm_bus_consumer::handle_batch`] ([`handle_batch`]): timers one by one,
//! the stored events as a page to the journey engine. [`handle`] takes a
//! single bus event the same way (the tests, `cargo lambda invoke`).
//! Unusable events are parked; what failed is delivered again.

use crm_bus_consumer::timer::{deliver_timer, is_timer, TimerError, Timers};
use crm_bus_consumer::{BatchReport, SqsEvent};
use crm_core::consumer::EventHandler;
use crm_core::ports::DeadLetterQueue;
use crm_core::privacy::KeyStore;
use crm_core::scheduler::TimerHandler;
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

/// `campaign` is the function's handler ([`crate::build`]: journeys and
/// broadcasts), or the journeys' alone.
pub async fn handle(
    event: LambdaEvent<Value>,
    campaign: &(impl EventHandler + TimerHandler),
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

/// One SQS batch of the campaign queue: timers to the journeys, carts and
/// orders they belong to, stored events as a page to the journey engine.
pub async fn handle_batch(
    batch: SqsEvent,
    campaign: &(impl EventHandler + TimerHandler),
    keys: &dyn KeyStore,
    dead_letters: &dyn DeadLetterQueue,
) -> BatchReport {
    crm_bus_consumer::handle_batch(batch, campaign, &Timers(campaign), keys, dead_letters).await
}
