//! The campaign Lambda function: clients built once, then every SQS batch of
//! its queue to the handler.

use crm_bus_consumer::{log_batch, scheduler_from_env, Config, Ports, SqsBatchResponse, SqsEvent};
use crm_core::clock::SystemClock;
use crm_core::commerce::{CartService, OrderService};
use crm_core::journey::campaigns::CampaignHandler;
use crm_core::journey::catalog::StoredCatalog;
use crm_core::journey::engine::JourneyEngine;
use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::init_tracing();
    let config = Config::from_env()?;
    let read_models_table = config.read_models_table.clone();
    let aws = crm_bus_consumer::load_aws_config().await;
    let Ports {
        events,
        keys,
        docs,
        dead_letters,
    } = Ports::new(&aws, config);
    // WARM_UP=1: one call at cold start, so the first event skips the TLS handshake (issue 9).
    if crm_bus_consumer::warm_up_wanted(&|name: &str| std::env::var(name).ok()) {
        crm_bus_consumer::warm_up(docs.client(), &read_models_table).await;
    }
    let scheduler = Arc::new(scheduler_from_env(&aws)?);
    let clock = Arc::new(SystemClock);
    let catalog = Arc::new(StoredCatalog::new(events.clone()));
    let engine = JourneyEngine::new(events.clone(), docs, scheduler.clone(), catalog, clock.clone());
    let carts = CartService::new(events.clone(), clock.clone(), scheduler.clone());
    let orders = OrderService::new(events, clock, scheduler);
    let campaign = CampaignHandler::new(engine, carts, orders, dead_letters.clone());
    let (campaign, keys, dead_letters) = (&campaign, keys.as_ref(), dead_letters.as_ref());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let report = crm_campaign::handler::handle_batch(event.payload, campaign, keys, dead_letters).await;
        Ok::<SqsBatchResponse, lambda_runtime::Error>(log_batch("campaign", &report))
    }))
    .await
}
