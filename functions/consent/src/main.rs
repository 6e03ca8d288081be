//! The consent Lambda function: its settings from the environment
//! ([`crm_consent::Settings`]), clients built once, every SQS batch of its
//! queue to the consent ledger's and the proof ledger's consumer group
//! ([`crm_consent::build`]).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::init_tracing();
    let settings = crm_consent::Settings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    crm_bus_consumer::run(&settings.consumer, |ports| crm_consent::build(ports, &settings)).await
}
