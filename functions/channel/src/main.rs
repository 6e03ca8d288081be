//! The channel Lambda function: its settings from the environment
//! ([`crm_channel::Settings`]), its secrets read once from Secrets Manager
//! (decision 0047), clients built once (SES, SNS, the scheduler), the
//! delivery [`crm_channel::build`] assembles, then every SQS batch of its
//! queue to it.

use crm_aws::emf::EmfWriter;
use crm_aws::secrets::SecretReader;
use crm_aws::ses::SesEmailProvider;
use crm_aws::sns::{PushApplications, SnsPushProvider, SnsSmsProvider};
use crm_bus_consumer::{finish_batch, Ports, SqsBatchResponse, SqsEvent};
use crm_channel::{build, ChannelPorts, Settings};
use crm_core::clock::SystemClock;
use crm_core::messaging::delivery::Providers;
use crm_core::messaging::unsubscribe::TokenSigner;
use crm_core::privacy::IdentifierHasher;
use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::init_tracing();
    let settings = Settings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    let aws = crm_bus_consumer::load_aws_config().await;
    // One GetSecretValue each at cold start, kept for this instance's life; a secret that
    // cannot be read stops the cold start, naming it.
    let secrets = SecretReader::from_config(&aws);
    let unsubscribe_secret = secrets.read(&settings.unsubscribe_secret).await?;
    let identifier_hash_secret = secrets.read(&settings.identifier_hash_secret).await?;
    let ports = Ports::new(&aws, settings.ports.clone());
    // WARM_UP=1: one call at cold start, so the first event skips the TLS handshake (issue 9).
    if settings.warm_up {
        crm_bus_consumer::warm_up(ports.docs.client(), &settings.ports.read_models_table).await;
    }
    let sns = aws_sdk_sns::Client::new(&aws);
    let providers = Providers {
        email: Arc::new(SesEmailProvider::new(
            aws_sdk_sesv2::Client::new(&aws),
            settings.ses_configuration_set.clone(),
        )),
        sms: Arc::new(SnsSmsProvider::new(sns.clone(), settings.sms_sender_id.clone())),
        push: Arc::new(SnsPushProvider::new(
            sns,
            PushApplications {
                apns: settings.apns_platform_application_arn.clone(),
                fcm: settings.fcm_platform_application_arn.clone(),
            },
        )),
    };
    let delivery = build(
        ChannelPorts {
            events: ports.events.clone(),
            docs: ports.docs.clone(),
            scheduler: Arc::new(settings.scheduler.scheduler(&aws)),
            clock: Arc::new(SystemClock),
            providers,
            signer: Arc::new(TokenSigner::new(unsubscribe_secret.expose().as_bytes())),
            identifiers: IdentifierHasher::new(identifier_hash_secret.expose().as_bytes()),
            dead_letters: ports.dead_letters.clone(),
            // Sends, suppressions, deferrals and failures per channel as EMF lines on stdout (decision 0026).
            metrics: Some(Arc::new(EmfWriter::stdout(settings.metrics_namespace.clone()))),
        },
        settings.delivery,
    );
    let progress = ports.progress_of("channel");
    let (delivery, keys, dead_letters, progress) =
        (&delivery, ports.keys.as_ref(), ports.dead_letters.as_ref(), &progress);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let report = crm_channel::handler::handle_batch(event.payload, delivery, keys, dead_letters).await;
        Ok::<SqsBatchResponse, lambda_runtime::Error>(finish_batch("channel", &report, progress).await)
    }))
    .await
}
