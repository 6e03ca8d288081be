//! The projector Lambda function: its settings from the environment
//! ([`crm_projector::Settings`]), clients built once, every SQS batch of its
//! queue to the group [`crm_projector::build`] makes.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    crm_bus_consumer::init_tracing();
    let settings = crm_projector::Settings::from_lookup(&|name: &str| std::env::var(name).ok())?;
    crm_bus_consumer::run(&settings, |ports| crm_projector::build(ports, &settings)).await
}
