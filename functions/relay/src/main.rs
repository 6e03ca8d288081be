//! The relay Lambda function: its settings from the environment
//! ([`crm_relay::Settings`]), clients built once, the relay
//! [`crm_relay::build`] makes, and every batch of the events table's stream
//! to the handler of the library.

use crm_aws::emf::EmfWriter;
use crm_aws::eventbridge::EventBridgeBus;
use crm_aws::health::DynamoProgressLog;
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_core::ports::ProgressLog;
use crm_relay::{build, handle, Settings};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    crm_aws::lambda::init_tracing();
    let settings = Settings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    let aws = crm_aws::lambda::load_aws_config().await;
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&aws), settings.event_bus_name);
    let dead_letters = SqsDeadLetterQueue::new(aws_sdk_sqs::Client::new(&aws), settings.dead_letter_queue_url);
    // Lag and throughput as EMF lines on stdout (decision 0026).
    // Its iterator age as its progress for /health (PROGRESS_TABLE, the read-models table).
    let progress = settings.progress_table.map(|table| {
        Arc::new(DynamoProgressLog::new(aws_sdk_dynamodb::Client::new(&aws), table)) as Arc<dyn ProgressLog>
    });
    let relay = build(
        Arc::new(bus),
        Arc::new(dead_letters),
        Arc::new(EmfWriter::stdout(settings.metrics_namespace)),
        progress,
    );
    let relay = &relay;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<aws_lambda_events::event::dynamodb::Event>| async move { handle(event, relay).await },
    ))
    .await
}
