//! The api Lambda function: its settings from the environment
//! ([`crm_api::Settings`]), its secrets read once from Secrets Manager
//! (decision 0047), clients built once, the handlers' state
//! [`crm_api::build`] assembles, and every request to the router of the
//! library.

use crm_api::{build, router, ApiPorts, Settings};
use crm_aws::dynamodb::DynamoReadModels;
use crm_aws::emf::EmfWriter;
use crm_aws::refusals::DynamoRefusals;
use crm_aws::scheduler::EventBridgeScheduler;
use crm_aws::secrets::SecretReader;
use crm_aws::stores::EncryptedEventStore;
use crm_core::clock::SystemClock;
use crm_core::ingest::refusals::RefusedMessages;
use crm_core::ports::ConsumerHealth;
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    crm_aws::lambda::init_tracing();
    let settings = Settings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    let config = crm_aws::lambda::load_aws_config().await;
    // The signing key, the identifier-hash secret and the write keys: one GetSecretValue each,
    // kept for this instance's life; one that cannot be read stops the cold start, naming it.
    let api = settings
        .secrets
        .read(&SecretReader::from_config(&config), settings.public_base_url.clone())
        .await?;
    let client = aws_sdk_dynamodb::Client::new(&config);
    // Activity items get the TTL of the retention policy (RETENTION_ACTIVITY_DAYS).
    let EncryptedEventStore { events, keys, stored } = EncryptedEventStore::new(
        client.clone(),
        aws_sdk_kms::Client::new(&config),
        settings.event_store,
        Some(settings.retention),
    );
    let read_models = DynamoReadModels::new(client, settings.read_models_table.clone());
    // WARM_UP=1: one call at cold start, so the first request skips the TLS handshake (issue 9).
    if settings.warm_up {
        crm_aws::lambda::warm_up(read_models.client(), &settings.read_models_table).await;
    }
    let scheduler = EventBridgeScheduler::new(
        aws_sdk_scheduler::Client::new(&config),
        settings.schedule_group,
        settings.event_bus_arn.clone(),
        settings.scheduler_role_arn,
        settings.scheduler_dead_letter_arn,
    );
    // GET /health: the consumer queues' and dead-letter queues' depths (HEALTH_QUEUES; none when
    // unset), and each consumer's lag from the progress it leaves in the read-models table.
    let progress = Arc::new(crm_aws::health::DynamoProgressLog::new(
        read_models.client().clone(),
        settings.read_models_table.clone(),
    ));
    // The operator routes' dead letters (decision 0085): the same queues' dead-letter queues;
    // the relay's and the scheduler's letters go back onto the bus (EVENT_BUS_ARN), the
    // relay's that carry only a key re-read from the events table as stored.
    let sqs = aws_sdk_sqs::Client::new(&config);
    let dead_letters = (!settings.health_queues.is_empty()).then(|| {
        Arc::new(
            crm_aws::dead_letters::SqsDeadLetters::new(sqs.clone(), settings.health_queues.clone()).with_bus(
                crm_aws::eventbridge::EventBridgeBus::new(
                    aws_sdk_eventbridge::Client::new(&config),
                    settings.event_bus_arn.clone(),
                ),
                stored,
            ),
        ) as Arc<dyn crm_core::ports::DeadLetterAdmin>
    });
    let health = (!settings.health_queues.is_empty()).then(|| {
        Arc::new(crm_aws::health::QueueHealth::new(sqs, settings.health_queues).with_progress(progress))
            as Arc<dyn ConsumerHealth>
    });
    // Refused messages (decision 0053): kept a week in the read-models table, counted in
    // MessagesRefused as EMF lines on stdout (METRICS_NAMESPACE).
    let refusals = RefusedMessages::new(Arc::new(DynamoRefusals::new(
        read_models.client().clone(),
        settings.read_models_table.clone(),
    )))
    .with_metrics(Arc::new(EmfWriter::stdout(settings.metrics_namespace.clone())));
    let mut state = build(
        ApiPorts {
            events,
            read_models: Arc::new(read_models),
            clock: Arc::new(SystemClock),
            scheduler: Arc::new(scheduler),
            keys,
            health,
        },
        api,
    )
    .with_refusals(refusals)
    // The console's OIDC sign-in (decision 0089).
    .with_console(settings.console.clone())
    // The shop's tracking.require_analytics_consent (decision 0079).
    .with_ingest_settings(crm_core::ingest::IngestSettings {
        require_analytics_consent: settings.require_analytics_consent,
        ..Default::default()
    });
    if let Some(dead_letters) = dead_letters {
        state = state.with_dead_letters(dead_letters);
    }
    lambda_http::run(router(state)).await
}
