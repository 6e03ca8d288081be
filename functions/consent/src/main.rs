//! The consent Lambda function: configuration from EVENTS_TABLE,
//! READ_MODELS_TABLE, DEAD_LETTER_QUEUE_URL and IDENTIFIER_HASH_SECRET;
//! clients built once; every EventBridge event to the consent ledger's and
//! the proof ledger's consumer group.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let identifiers = crm_bus_consumer::identifier_hasher(&|name: &str| std::env::var(name).ok())?;
    crm_bus_consumer::run(move |events, docs, dead_letters| crm_consent::group(events, docs, dead_letters, identifiers))
        .await
}
