//! The rule-segments Lambda function (decision 0083): its settings from
//! the environment ([`crm_segments::rule_segments::RuleSegmentsSettings`]),
//! clients built once, then every SQS batch of its queue (events and
//! `SegmentWindow` timers) to crm-core's `RuleSegmentEvaluator`.

use crm_bus_consumer::timer::Timers;
use crm_bus_consumer::{finish_batch, Ports, SqsBatchResponse, SqsEvent};
use crm_core::clock::SystemClock;
use crm_core::segments::rule_evaluator::{RuleSegmentEvaluator, RULE_SEGMENTS};
use crm_segments::rule_segments::RuleSegmentsSettings;
use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::init_tracing();
    let settings = RuleSegmentsSettings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    let aws = crm_bus_consumer::load_aws_config().await;
    let ports = Ports::new(&aws, settings.ports.clone());
    if settings.warm_up {
        crm_bus_consumer::warm_up(ports.docs.client(), &settings.ports.read_models_table).await;
    }
    let evaluator = RuleSegmentEvaluator::new(
        ports.events.clone(),
        ports.docs.clone(),
        Arc::new(settings.scheduler.scheduler(&aws)),
        Arc::new(SystemClock),
        ports.dead_letters.clone(),
    );
    let progress = ports.progress_of(RULE_SEGMENTS);
    let (evaluator, keys, dead_letters, progress) =
        (&evaluator, ports.keys.as_ref(), ports.dead_letters.as_ref(), &progress);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let report =
            crm_bus_consumer::handle_batch(event.payload, evaluator, &Timers(evaluator), keys, dead_letters).await;
        Ok::<SqsBatchResponse, lambda_runtime::Error>(finish_batch(RULE_SEGMENTS, &report, progress).await)
    }))
    .await
}
