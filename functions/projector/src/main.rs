//! The projector Lambda function: its settings from the environment
//! ([`crm_projector::Settings`]), the identifier-hash secret read once from
//! Secrets Manager (decision 0047; its indexes are keyed by it, decision
//! 0046), clients built once, every SQS batch of its queue to the group
//! [`crm_projector::build`] makes.

use crm_aws::secrets::SecretReader;
use crm_core::privacy::IdentifierHasher;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::init_tracing();
    let settings = crm_projector::Settings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    // One GetSecretValue at cold start; a secret that cannot be read stops it, naming the secret.
    let aws = crm_bus_consumer::load_aws_config().await;
    let secret = SecretReader::from_config(&aws)
        .read(&settings.identifier_hash_secret)
        .await?;
    let identifiers = IdentifierHasher::new(secret.expose().as_bytes());
    crm_bus_consumer::run(&settings.consumer, |ports| crm_projector::build(ports, identifiers)).await
}
