//! The daily segment re-evaluation (docs/decisions/0014-profile-metrics-and-segments.md):
//! an EventBridge Scheduler schedule invokes this function once a day; it
//! re-evaluates every buyer's segments against the clock (recency moves with
//! time, with no event) and appends the membership changes to the customers'
//! `segments-<id>` streams, conditionally on their versions, so a retried
//! invocation appends nothing twice. Configuration: EVENTS_TABLE,
//! READ_MODELS_TABLE, and KEYS_TABLE and DATA_KEYS_KMS_KEY_ID for the
//! customers' data keys (the event store encrypts personal data at rest).

use aws_config::BehaviorVersion;
use crm_aws::dynamodb::{DynamoEventStore, DynamoReadModels};
use crm_aws::keys::DynamoKmsKeyStore;
use crm_aws::lambda::{init_tracing, required};
use crm_core::privacy::EncryptingEventStore;
use crm_core::segments::reevaluate_buyers;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let lookup = |name: &str| std::env::var(name).ok();
    let events_table = required(&lookup, "EVENTS_TABLE")?;
    let read_models_table = required(&lookup, "READ_MODELS_TABLE")?;
    let keys_table = required(&lookup, "KEYS_TABLE")?;
    let kms_key_id = required(&lookup, "DATA_KEYS_KMS_KEY_ID")?;
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let keys = DynamoKmsKeyStore::new(dynamodb.clone(), aws_sdk_kms::Client::new(&aws), keys_table, kms_key_id);
    let events = EncryptingEventStore::new(
        std::sync::Arc::new(DynamoEventStore::new(dynamodb.clone(), events_table)),
        std::sync::Arc::new(keys),
    );
    let docs = DynamoReadModels::new(dynamodb, read_models_table);
    let (events, docs) = (&events, &docs);
    lambda_runtime::run(service_fn(move |_invocation: LambdaEvent<Value>| async move {
        let now = chrono::Utc::now();
        let appended = reevaluate_buyers(events, docs, now).await?;
        tracing::info!(appended, at = %now, "segments re-evaluated");
        Ok::<Value, lambda_runtime::Error>(json!({ "appended": appended, "at": now }))
    }))
    .await
}
