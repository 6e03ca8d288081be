//! The api Lambda function: builds its clients once and hands every request
//! to the router of the library.

use aws_config::BehaviorVersion;
use crm_api::{router, AppState, Auth};
use crm_aws::dynamodb::{DynamoEventStore, DynamoReadModels};
use crm_core::clock::SystemClock;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .init();

    let events_table = std::env::var("EVENTS_TABLE").map_err(|_| "EVENTS_TABLE is not set")?;
    let read_models_table = std::env::var("READ_MODELS_TABLE").map_err(|_| "READ_MODELS_TABLE is not set")?;
    let config = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let store = DynamoEventStore::new(client.clone(), events_table);
    let read_models = DynamoReadModels::new(client, read_models_table);
    let state = AppState::new(
        Arc::new(store),
        Arc::new(read_models),
        Arc::new(SystemClock),
        Auth::Gateway,
    );
    lambda_http::run(router(state)).await
}
