//! The campaign Lambda function: clients built once, then every EventBridge
//! event to the handler.

use aws_config::BehaviorVersion;
use crm_aws::dynamodb::{DynamoEventStore, DynamoReadModels};
use crm_aws::scheduler::EventBridgeScheduler;
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_core::clock::SystemClock;
use crm_core::commerce::{CartService, OrderService};
use crm_core::journey::campaigns::CampaignHandler;
use crm_core::journey::catalog::StoredCatalog;
use crm_core::journey::engine::JourneyEngine;
use crm_core::ports::DeadLetterQueue;
use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;

fn env(name: &str) -> Result<String, lambda_runtime::Error> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::init_tracing();
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let events = Arc::new(DynamoEventStore::new(dynamodb.clone(), env("EVENTS_TABLE")?));
    let docs = Arc::new(DynamoReadModels::new(dynamodb, env("READ_MODELS_TABLE")?));
    let dead_letters: Arc<dyn DeadLetterQueue> = Arc::new(SqsDeadLetterQueue::new(
        aws_sdk_sqs::Client::new(&aws),
        env("DEAD_LETTER_QUEUE_URL")?,
    ));
    let scheduler = Arc::new(EventBridgeScheduler::new(
        aws_sdk_scheduler::Client::new(&aws),
        env("SCHEDULE_GROUP")?,
        env("EVENT_BUS_ARN")?,
        env("SCHEDULER_ROLE_ARN")?,
        std::env::var("SCHEDULER_DEAD_LETTER_ARN")
            .ok()
            .filter(|v| !v.is_empty()),
    ));
    let clock = Arc::new(SystemClock);
    let catalog = Arc::new(StoredCatalog::new(events.clone()));
    let engine = JourneyEngine::new(events.clone(), docs, scheduler.clone(), catalog, clock.clone());
    let carts = CartService::new(events.clone(), clock.clone(), scheduler.clone());
    let orders = OrderService::new(events, clock, scheduler);
    let campaign = CampaignHandler::new(engine, carts, orders, dead_letters.clone());
    let (campaign, dead_letters) = (&campaign, dead_letters.as_ref());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        crm_campaign::handler::handle(event, campaign, dead_letters).await
    }))
    .await
}
