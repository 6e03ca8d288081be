//! The relay Lambda function: builds its clients once and hands every batch
//! of the events table's stream to the handler of the library.

use crm_aws::eventbridge::EventBridgeBus;
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_core::metrics::EmfWriter;
use crm_relay::{handle, relay, Config};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    crm_aws::lambda::init_tracing();

    let config = Config::from_env()?;
    let aws = crm_aws::lambda::load_aws_config().await;
    let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(&aws), config.event_bus_name);
    let dead_letters = SqsDeadLetterQueue::new(aws_sdk_sqs::Client::new(&aws), config.dead_letter_queue_url);
    // Lag and throughput as EMF lines on stdout (METRICS_NAMESPACE, decision 0026).
    let namespace = EmfWriter::namespace_from(&|name: &str| std::env::var(name).ok());
    let relay = relay(Arc::new(bus), Arc::new(dead_letters)).with_metrics(Arc::new(EmfWriter::stdout(namespace)));
    let relay = &relay;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<aws_lambda_events::event::dynamodb::Event>| async move { handle(event, relay).await },
    ))
    .await
}
