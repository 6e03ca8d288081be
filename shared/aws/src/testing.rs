//! Test support (feature `testing`, enabled only by dev-dependencies): AWS
//! clients against the moto server whose endpoint is in `AWS_ENDPOINT_URL`
//! (region us-east-1, dummy credentials).
//!
//! Run moto through `scripts/moto_server.py` (same flags as `moto_server`):
//! stock `moto_server` handles requests on many threads with no lock, and a
//! failing TransactWriteItems can then undo another request's acknowledged
//! write.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

/// The region the test clients use.
pub const REGION: &str = "us-east-1";

/// The SDK configuration for the moto endpoint in `AWS_ENDPOINT_URL`; panics,
/// saying how to start one, when it is not set.
pub async fn moto_config() -> SdkConfig {
    let endpoint = match std::env::var("AWS_ENDPOINT_URL") {
        Ok(e) if !e.is_empty() => e,
        _ => panic!(
            "AWS_ENDPOINT_URL is not set: these are AWS wire tests and need a moto server \
             (run scripts/test, or start `.venv/bin/python scripts/moto_server.py -H 127.0.0.1 \
             -p 5055` with moto[server] 5.2 installed, and set AWS_ENDPOINT_URL=http://127.0.0.1:5055)"
        ),
    };
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await
}

/// A DynamoDB client for the moto endpoint (see [`moto_config`]).
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&moto_config().await)
}

/// An EventBridge client for the moto endpoint (see [`moto_config`]).
pub async fn eventbridge_client() -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(&moto_config().await)
}

/// An SQS client for the moto endpoint (see [`moto_config`]).
pub async fn sqs_client() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&moto_config().await)
}

/// An EventBridge Scheduler client for the moto endpoint (see [`moto_config`]).
pub async fn scheduler_client() -> aws_sdk_scheduler::Client {
    aws_sdk_scheduler::Client::new(&moto_config().await)
}
