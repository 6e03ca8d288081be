//! The projector Lambda function: configuration from EVENTS_TABLE,
//! READ_MODELS_TABLE and DEAD_LETTER_QUEUE_URL; clients built once; every
//! EventBridge event to the projector's consumer group.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::run(crm_projector::group).await
}
