//! The consent Lambda function: its settings from the environment
//! ([`crm_consent::Settings`]), the identifier-hash secret read once from
//! Secrets Manager (decision 0047), clients built once, every SQS batch of
//! its queue to the consent ledger's and the proof ledger's consumer group
//! ([`crm_consent::build`]).

use crm_aws::secrets::SecretReader;
use crm_core::privacy::IdentifierHasher;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::init_tracing();
    let settings = crm_consent::Settings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    // One GetSecretValue at cold start; a secret that cannot be read stops it, naming the secret.
    let aws = crm_bus_consumer::load_aws_config().await;
    let secret = SecretReader::from_config(&aws)
        .read(&settings.identifier_hash_secret)
        .await?;
    let identifiers = IdentifierHasher::new(secret.expose().as_bytes());
    crm_bus_consumer::run(&settings.consumer, |ports| crm_consent::build(ports, identifiers)).await
}
