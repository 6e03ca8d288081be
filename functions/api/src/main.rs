//! The api Lambda function: builds its clients once and hands every request
//! to the router of the library.

use aws_config::BehaviorVersion;
use crm_api::{router, AppState, Auth};
use crm_aws::dynamodb::DynamoEventStore;
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

    let table = std::env::var("EVENTS_TABLE").map_err(|_| "EVENTS_TABLE is not set")?;
    let config = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let store = DynamoEventStore::new(aws_sdk_dynamodb::Client::new(&config), table);
    let app = router(AppState::new(
        Arc::new(store),
        Arc::new(SystemClock),
        Auth::Gateway,
    ));
    lambda_http::run(app).await
}
