//! The daily segment re-evaluation (docs/decisions/0014-profile-metrics-and-segments.md)
//! and the daily retention fold (crm_core::retention): an EventBridge
//! Scheduler schedule invokes this function once a day; it re-evaluates
//! every buyer's segments against the clock (recency moves with time, with
//! no event) and appends the membership changes to the customers'
//! `segments-<id>` streams, conditionally on their versions, so a retried
//! invocation appends nothing twice; then it folds every customer's
//! activity older than the retention age into daily summaries (idempotent
//! too), before the table's TTL expires the raw events. Configuration:
//! EVENTS_TABLE, READ_MODELS_TABLE, KEYS_TABLE and DATA_KEYS_KMS_KEY_ID for
//! the customers' data keys (the event store encrypts personal data at
//! rest), RETENTION_ACTIVITY_DAYS and RETENTION_LEGAL_YEARS (defaults 90, 7).

use crm_aws::dynamodb::DynamoReadModels;
use crm_aws::lambda::{init_tracing, required};
use crm_aws::stores::{EncryptedEventStore, EventStoreTables};
use crm_core::retention::{fold_all_activity, RetentionPolicy};
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
    let retention = RetentionPolicy::from_lookup(lookup)?;
    let aws = crm_aws::lambda::load_aws_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let EncryptedEventStore { events, stored, .. } = EncryptedEventStore::new(
        dynamodb.clone(),
        aws_sdk_kms::Client::new(&aws),
        EventStoreTables {
            events_table,
            keys_table,
            data_keys_kms_key_id: kms_key_id,
        },
        Some(retention),
    );
    let docs = DynamoReadModels::new(dynamodb, read_models_table);
    let (events, docs, stored) = (events.as_ref(), &docs, stored.as_ref());
    lambda_runtime::run(service_fn(move |_invocation: LambdaEvent<Value>| async move {
        let now = chrono::Utc::now();
        // Both run even if one fails; the invocation fails (and is retried) if either did.
        let segments = reevaluate_buyers(events, docs, now).await;
        let folded = fold_all_activity(events, stored, &retention, now).await;
        let appended = segments?;
        let summaries = folded?;
        tracing::info!(appended, summaries, at = %now, "segments re-evaluated, activity folded");
        Ok::<Value, lambda_runtime::Error>(json!({ "appended": appended, "summaries": summaries, "at": now }))
    }))
    .await
}
