//! What every Lambda function of the CRM does the same way: its logs and
//! its required settings.

/// JSON logs without timestamps (CloudWatch adds them), filtered by `RUST_LOG`.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .init();
}

/// A required setting is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {0} is not set")]
pub struct ConfigError(pub &'static str);

/// The setting `name` from `lookup` (the environment, or a test's map); a
/// missing or blank one is a [`ConfigError`].
pub fn required(lookup: &impl Fn(&str) -> Option<String>, name: &'static str) -> Result<String, ConfigError> {
    lookup(name).filter(|v| !v.trim().is_empty()).ok_or(ConfigError(name))
}

/// The identifier hasher of the proof ledger and the suppression list
/// (decision 0019), from `IDENTIFIER_HASH_SECRET` (Secrets Manager, resolved
/// into the environment by CloudFormation). The api, consent and channel
/// functions must share it.
pub fn identifier_hasher(
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<crm_core::privacy::IdentifierHasher, ConfigError> {
    let secret = required(lookup, "IDENTIFIER_HASH_SECRET")?;
    Ok(crm_core::privacy::IdentifierHasher::new(secret.as_bytes()))
}

/// Whether `WARM_UP` asks for a warm-up call at cold start (`1`, `true`, `yes`).
pub fn warm_up_wanted(lookup: &impl Fn(&str) -> Option<String>) -> bool {
    lookup("WARM_UP").is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// The optional warm-up of issue 9 (`WARM_UP=1`): one cheap call at cold
/// start, before the runtime asks for the first invocation, so that
/// invocation does not pay the connection's TLS handshake and the first
/// credentials resolution and request signing. It is a GetItem of a key
/// never stored (pk and sk `warm-up`) on `table` (the read-models table,
/// which every function may read) through `client`, the very DynamoDB
/// client (and connection pool) the handlers use; half a read unit per cold
/// start. Best effort: a failure is logged and ignored.
pub async fn warm_up(client: &aws_sdk_dynamodb::Client, table: &str) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let started = std::time::Instant::now();
    let result = client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S("warm-up".into()))
        .key("sk", AttributeValue::S("warm-up".into()))
        .send()
        .await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(_) => tracing::info!(ms, "warm-up call done"),
        Err(e) => tracing::warn!(ms, error = %aws_sdk_dynamodb::error::DisplayErrorContext(&e), "warm-up call failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_only_when_asked() {
        let with = |v: &'static str| move |name: &str| (name == "WARM_UP").then(|| v.to_string());
        assert!(warm_up_wanted(&with("1")));
        assert!(warm_up_wanted(&with("true")));
        assert!(!warm_up_wanted(&with("0")));
        assert!(!warm_up_wanted(&with("")));
        assert!(!warm_up_wanted(&|_: &str| None));
    }
}
