//! The api Lambda function: builds its clients once and hands every request
//! to the router of the library.

use crm_api::{router, AppState, Auth};
use crm_aws::dynamodb::DynamoReadModels;
use crm_aws::scheduler::EventBridgeScheduler;
use crm_aws::stores::{EncryptedEventStore, EventStoreTables};
use crm_core::clock::SystemClock;
use crm_core::messaging::unsubscribe::TokenSigner;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crm_aws::lambda::init_tracing();

    let events_table = std::env::var("EVENTS_TABLE").map_err(|_| "EVENTS_TABLE is not set")?;
    let read_models_table = std::env::var("READ_MODELS_TABLE").map_err(|_| "READ_MODELS_TABLE is not set")?;
    let schedule_group = std::env::var("SCHEDULE_GROUP").map_err(|_| "SCHEDULE_GROUP is not set")?;
    let event_bus_arn = std::env::var("EVENT_BUS_ARN").map_err(|_| "EVENT_BUS_ARN is not set")?;
    let scheduler_role_arn = std::env::var("SCHEDULER_ROLE_ARN").map_err(|_| "SCHEDULER_ROLE_ARN is not set")?;
    // The unsubscribe-link secret (Secrets Manager, resolved into the environment by CloudFormation).
    let unsubscribe_secret = std::env::var("UNSUBSCRIBE_SECRET")
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or("UNSUBSCRIBE_SECRET is not set")?;
    // The proof ledger's identifier hashes (decision 0019): erasure records them.
    let identifiers = crm_aws::lambda::identifier_hasher(&|name: &str| std::env::var(name).ok())?;
    // The ingestion API's sources and their write keys (`source:key,...`; none when blank).
    let ingest_sources = crm_api::IngestSources::parse(&std::env::var("INGEST_WRITE_KEYS").unwrap_or_default())
        .map_err(|e| format!("INGEST_WRITE_KEYS: {e}"))?;
    let public_base_url = std::env::var("PUBLIC_BASE_URL").map_err(|_| "PUBLIC_BASE_URL is not set")?;
    // The customers' data keys (decision 0016): personal data is encrypted at rest (0017).
    let keys_table = std::env::var("KEYS_TABLE").map_err(|_| "KEYS_TABLE is not set")?;
    let kms_key_id = std::env::var("DATA_KEYS_KMS_KEY_ID").map_err(|_| "DATA_KEYS_KMS_KEY_ID is not set")?;
    let scheduler_dead_letter_arn = std::env::var("SCHEDULER_DEAD_LETTER_ARN")
        .ok()
        .filter(|v| !v.is_empty());
    let retention = crm_core::retention::RetentionPolicy::from_lookup(|name: &str| std::env::var(name).ok())?;
    let config = crm_aws::lambda::load_aws_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    // Activity items get the TTL of the retention policy (RETENTION_ACTIVITY_DAYS).
    let EncryptedEventStore { events, keys, .. } = EncryptedEventStore::new(
        client.clone(),
        aws_sdk_kms::Client::new(&config),
        EventStoreTables {
            events_table,
            keys_table,
            data_keys_kms_key_id: kms_key_id,
        },
        Some(retention),
    );
    let read_models = DynamoReadModels::new(client, read_models_table.clone());
    // WARM_UP=1: one call at cold start, so the first request skips the TLS handshake (issue 9).
    if crm_aws::lambda::warm_up_wanted(&|name: &str| std::env::var(name).ok()) {
        crm_aws::lambda::warm_up(read_models.client(), &read_models_table).await;
    }
    let scheduler = EventBridgeScheduler::new(
        aws_sdk_scheduler::Client::new(&config),
        schedule_group,
        event_bus_arn,
        scheduler_role_arn,
        scheduler_dead_letter_arn,
    );
    let state = AppState::new(
        events,
        Arc::new(read_models),
        Arc::new(SystemClock),
        Arc::new(scheduler),
        Auth::Gateway,
    )
    .with_unsubscribe(TokenSigner::new(unsubscribe_secret.as_bytes()), public_base_url)
    .with_keys(keys)
    .with_identifiers(identifiers)
    .with_ingest_sources(ingest_sources);
    // GET /health: the consumer queues' and dead-letter queues' depths
    // (`name=queue-url|dead-letter-url,...`; none when unset).
    let watched = crm_aws::health::WatchedQueue::parse_all(&std::env::var("HEALTH_QUEUES").unwrap_or_default())?;
    let state = if watched.is_empty() {
        state
    } else {
        state.with_health(Arc::new(crm_aws::health::QueueHealth::new(
            aws_sdk_sqs::Client::new(&config),
            watched,
        )))
    };
    lambda_http::run(router(state)).await
}
