//! The channel Lambda function: clients built once, then every SQS batch of
//! its queue to the handler.

use crm_aws::ses::SesEmailProvider;
use crm_aws::sns::{PushApplications, SnsPushProvider, SnsSmsProvider};
use crm_bus_consumer::{log_batch, scheduler_from_env, Config, Ports, SqsBatchResponse, SqsEvent};
use crm_core::clock::SystemClock;
use crm_core::messaging::delivery::{DeliverySettings, MessageDelivery, Providers};
use crm_core::messaging::unsubscribe::TokenSigner;
use crm_core::metrics::EmfWriter;
use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;

fn env(name: &str) -> Result<String, lambda_runtime::Error> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

fn optional(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::init_tracing();
    let config = Config::from_env()?;
    let read_models_table = config.read_models_table.clone();
    let aws = crm_bus_consumer::load_aws_config().await;
    let Ports {
        events,
        keys,
        docs,
        dead_letters,
    } = Ports::new(&aws, config);
    // WARM_UP=1: one call at cold start, so the first event skips the TLS handshake (issue 9).
    if crm_bus_consumer::warm_up_wanted(&|name: &str| std::env::var(name).ok()) {
        crm_bus_consumer::warm_up(docs.client(), &read_models_table).await;
    }
    let scheduler = Arc::new(scheduler_from_env(&aws)?);
    let sns = aws_sdk_sns::Client::new(&aws);
    let providers = Providers {
        email: Arc::new(SesEmailProvider::new(
            aws_sdk_sesv2::Client::new(&aws),
            env("SES_CONFIGURATION_SET")?,
        )),
        sms: Arc::new(SnsSmsProvider::new(sns.clone(), optional("SMS_SENDER_ID"))),
        push: Arc::new(SnsPushProvider::new(
            sns,
            PushApplications {
                apns: optional("APNS_PLATFORM_APPLICATION_ARN"),
                fcm: optional("FCM_PLATFORM_APPLICATION_ARN"),
            },
        )),
    };
    let signer = Arc::new(TokenSigner::new(env("UNSUBSCRIBE_SECRET")?.as_bytes()));
    let identifiers = crm_bus_consumer::identifier_hasher(&|name: &str| std::env::var(name).ok())?;
    // FROM_ADDRESS and PUBLIC_BASE_URL are required on AWS; they, SHOP_URL,
    // DELIVERY_CAPS, WEEKLY_EMAIL_LIMIT and MESSAGE_SETTLE_SECONDS are read as the
    // local runtime reads them.
    env("FROM_ADDRESS")?;
    env("PUBLIC_BASE_URL")?;
    let settings = DeliverySettings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    let delivery = MessageDelivery::new(
        events,
        docs,
        scheduler,
        Arc::new(SystemClock),
        providers,
        signer,
        identifiers,
        dead_letters.clone(),
        settings,
    )
    // Sends, suppressions, deferrals and failures per channel as EMF lines on stdout (decision 0026).
    .with_metrics(Arc::new(EmfWriter::stdout(EmfWriter::namespace_from(&|name: &str| {
        std::env::var(name).ok()
    }))));
    let (delivery, keys, dead_letters) = (&delivery, keys.as_ref(), dead_letters.as_ref());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let report = crm_channel::handler::handle_batch(event.payload, delivery, keys, dead_letters).await;
        Ok::<SqsBatchResponse, lambda_runtime::Error>(log_batch("channel", &report))
    }))
    .await
}
