//! The campaign Lambda function: its settings from the environment
//! ([`crm_campaign::Settings`]), clients built once, the handler
//! [`crm_campaign::build`] assembles, then every SQS batch of its queue to
//! it.

use crm_bus_consumer::{finish_batch, Ports, SqsBatchResponse, SqsEvent};
use crm_campaign::{build, CampaignPorts, Settings};
use crm_core::clock::SystemClock;
use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::init_tracing();
    let settings = Settings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    let aws = crm_bus_consumer::load_aws_config().await;
    let ports = Ports::new(&aws, settings.ports.clone());
    // WARM_UP=1: one call at cold start, so the first event skips the TLS handshake (issue 9).
    if settings.warm_up {
        crm_bus_consumer::warm_up(ports.docs.client(), &settings.ports.read_models_table).await;
    }
    let campaign = build(CampaignPorts {
        events: ports.events.clone(),
        docs: ports.docs.clone(),
        scheduler: Arc::new(settings.scheduler.scheduler(&aws)),
        clock: Arc::new(SystemClock),
        dead_letters: ports.dead_letters.clone(),
    });
    let progress = ports.progress_of("campaign");
    let (campaign, keys, dead_letters, progress) =
        (&campaign, ports.keys.as_ref(), ports.dead_letters.as_ref(), &progress);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let report = crm_campaign::handler::handle_batch(event.payload, campaign, keys, dead_letters).await;
        Ok::<SqsBatchResponse, lambda_runtime::Error>(finish_batch("campaign", &report, progress).await)
    }))
    .await
}
