//! What every Lambda function of the CRM does the same way: its logs, its
//! AWS configuration and its required settings.

use std::time::Duration;

/// JSON logs without timestamps (CloudWatch adds them), filtered by `RUST_LOG`
/// (see [`log_filter`]).
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let (filter, invalid) = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(false)
                .with_target(false)
                .without_time(),
        )
        .with(filter)
        .init();
    if let Some(e) = invalid {
        tracing::warn!(error = %e, "RUST_LOG is not a list of target=level directives; logging at error");
    }
}

/// The log filter of `RUST_LOG` (decision 0062): tracing-subscriber's
/// `Targets`, which takes a comma-separated list of `level`,
/// `target=level` and `target` directives (`info`, `warn,crm_core=debug`,
/// `crm_aws=trace`), the target a module path prefix. Unlike `EnvFilter`
/// it has no span or field directives and no regular expressions, which
/// keeps the regex crates out of the functions. Unset or blank: `error`
/// (what `EnvFilter` did); unreadable: `error`, and the parse error, so
/// [`init_tracing`] can log it once the subscriber is up.
pub fn log_filter(rust_log: Option<&str>) -> (tracing_subscriber::filter::Targets, Option<String>) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    let error = || Targets::new().with_default(LevelFilter::ERROR);
    match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
        None => (error(), None),
        Some(v) => match v.parse::<Targets>() {
            Ok(targets) => (targets, None),
            Err(e) => (error(), Some(e.to_string())),
        },
    }
}

/// Attempts per AWS call when `AWS_MAX_ATTEMPTS` does not say otherwise.
pub const MAX_ATTEMPTS: u32 = 5;
/// The first retry waits up to this long (full jitter), each further one
/// twice as long, never more than [`MAX_BACKOFF`].
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The SDK's retries for calls made inside an invocation (decision 0034):
/// standard mode (full-jitter exponential backoff, the retry quota), up to
/// `AWS_MAX_ATTEMPTS` attempts ([`MAX_ATTEMPTS`] when unset or invalid),
/// waiting [`INITIAL_BACKOFF`] doubled per attempt and capped at
/// [`MAX_BACKOFF`]. The SDK's own default (1 s first backoff, 20 s cap, 3
/// attempts) spends seconds per throttled call; a queue-fed batch of 100
/// events makes hundreds of calls inside a 30 s Timeout. The SES and SNS
/// send clients keep their retries off (decision 0032).
pub fn retry_config(lookup: &impl Fn(&str) -> Option<String>) -> aws_config::retry::RetryConfig {
    let attempts = lookup("AWS_MAX_ATTEMPTS")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(MAX_ATTEMPTS);
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

/// The HTTP client of every AWS SDK client the CRM builds (decision 0062):
/// [`crate::http_client`]'s HTTP/1.1 client, with rustls on ring (not the
/// SDK default's aws-lc-rs) and without h2, about 1 MiB less per function
/// than the SDK's default client. The SDK crates are built without
/// `default-https-client`, so an SDK configuration made without this client
/// has none and its first call fails ("no HTTP client"):
/// [`load_aws_config`] and `crm_aws::testing::moto_config` set it. TLS 1.2
/// and 1.3 with the same cipher suites as the default (ECDHE with AES-GCM or
/// ChaCha20-Poly1305), the system's root certificates; plain `http://`
/// endpoints (moto) too. Unlike the default client it reads no
/// `HTTPS_PROXY`: the functions run without a proxy.
pub fn https_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    crate::http_client::http1_client()
}

/// The AWS configuration a function (or `crm-ops`) loads once at cold start:
/// region, credentials and endpoint from the environment as the SDK finds
/// them, with [`https_client`] and [`retry_config`].
pub async fn load_aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https_client())
        .load()
        .await
        .into_builder()
        .retry_config(retry_config(&|name: &str| std::env::var(name).ok()))
        .build()
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
    fn retries_are_short_and_follow_aws_max_attempts() {
        let unset = retry_config(&|_: &str| None);
        assert_eq!(unset.max_attempts(), MAX_ATTEMPTS);
        assert_eq!(unset.initial_backoff(), INITIAL_BACKOFF);
        assert_eq!(unset.max_backoff(), MAX_BACKOFF);
        let with = |v: &'static str| move |name: &str| (name == "AWS_MAX_ATTEMPTS").then(|| v.to_string());
        assert_eq!(retry_config(&with("1")).max_attempts(), 1);
        assert_eq!(retry_config(&with("8")).max_attempts(), 8);
        assert_eq!(retry_config(&with("0")).max_attempts(), MAX_ATTEMPTS);
        assert_eq!(retry_config(&with("many")).max_attempts(), MAX_ATTEMPTS);
    }

    #[test]
    fn rust_log_is_read_as_targets() {
        use tracing::Level;
        let (f, invalid) = log_filter(Some("warn,crm_core=debug,crm_aws::keys=trace"));
        assert_eq!(invalid, None);
        assert!(f.would_enable("crm_api::routes", &Level::WARN));
        assert!(!f.would_enable("crm_api::routes", &Level::INFO));
        assert!(f.would_enable("crm_core::journey", &Level::DEBUG));
        assert!(!f.would_enable("crm_core::journey", &Level::TRACE));
        assert!(f.would_enable("crm_aws::keys", &Level::TRACE));
        assert!(!f.would_enable("crm_aws::sqs", &Level::DEBUG));

        let (info, _) = log_filter(Some(" info "));
        assert!(info.would_enable("anything", &Level::INFO));
        assert!(!info.would_enable("anything", &Level::DEBUG));

        for unset in [None, Some(""), Some("  ")] {
            let (f, invalid) = log_filter(unset);
            assert_eq!(invalid, None);
            assert!(f.would_enable("crm_api", &Level::ERROR));
            assert!(!f.would_enable("crm_api", &Level::WARN));
        }

        let (f, invalid) = log_filter(Some("crm_core=loud"));
        assert!(invalid.is_some());
        assert!(f.would_enable("crm_core", &Level::ERROR));
        assert!(!f.would_enable("crm_core", &Level::WARN));
    }

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
