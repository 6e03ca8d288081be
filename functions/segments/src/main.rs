//! The daily segment re-evaluation (docs/decisions/0014-profile-metrics-and-segments.md)
//! and the daily retention fold (crm_core::retention): an EventBridge
//! Scheduler schedule invokes this function once a day; it re-evaluates
//! every buyer's segments against the clock (recency moves with time, with
//! no event) and appends the membership changes to the customers'
//! `segments-<id>` streams, conditionally on their versions, so a retried
//! invocation appends nothing twice; then it folds every customer's
//! activity older than the retention age into daily summaries (idempotent
//! too), before the table's TTL expires the raw events
//! ([`crm_segments::run_daily`]). Settings: [`crm_segments::Settings`]
//! (the tables, the data keys' KMS key, the retention policy).

use crm_aws::dynamodb::DynamoReadModels;
use crm_aws::stores::EncryptedEventStore;
use crm_core::failure::{Classify, FailureKind};
use crm_core::privacy::read_models::SealedReadModels;
use crm_segments::{run_daily, DailyRun, Settings};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_aws::lambda::init_tracing();
    let settings = Settings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    let retention = settings.retention;
    let aws = crm_aws::lambda::load_aws_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let EncryptedEventStore { events, stored, keys } = EncryptedEventStore::new(
        dynamodb.clone(),
        aws_sdk_kms::Client::new(&aws),
        settings.event_store,
        Some(retention),
    );
    // Sealed as every reader's (decision 0045), though it reads no personal value.
    let docs = SealedReadModels::new(
        Arc::new(DynamoReadModels::new(dynamodb, settings.read_models_table)),
        keys,
    );
    let (events, docs, stored, retention) = (events.as_ref(), &docs, stored.as_ref(), &retention);
    lambda_runtime::run(service_fn(move |_invocation: LambdaEvent<Value>| async move {
        let now = chrono::Utc::now();
        let DailyRun { appended, summaries } = match run_daily(events, stored, docs, retention, now).await {
            Ok(run) => run,
            // Another invocation cannot do better: say so and wait for tomorrow's run.
            Err(e) if e.kind() == FailureKind::Poison => {
                tracing::error!(error = %e, kind = %e.kind(), "daily run failed; not retried");
                return Ok(json!({ "failed": e.to_string(), "kind": e.kind(), "at": now }));
            }
            // Busy or raced: fail the invocation, which is retried (both steps are idempotent).
            Err(e) => {
                tracing::warn!(error = %e, kind = %e.kind(), "daily run failed; retried");
                return Err(e.into());
            }
        };
        tracing::info!(appended, summaries, at = %now, "segments re-evaluated, activity folded");
        Ok::<Value, lambda_runtime::Error>(json!({ "appended": appended, "summaries": summaries, "at": now }))
    }))
    .await
}
