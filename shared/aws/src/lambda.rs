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
