//! What the event store and the read models share about `TransactWriteItems`:
//! cancellation reason codes, how often a conflicting transaction is sent
//! again, the pause between attempts, and what a cancellation without a
//! condition failure of ours means.

use aws_sdk_dynamodb::config::AsyncSleep;
use aws_sdk_dynamodb::types::CancellationReason;
use aws_sdk_dynamodb::Client;
use crm_core::ports::StoreError;
use std::time::Duration;

/// How often a transaction cancelled by `TransactionConflict` (another
/// transaction was touching the same items) is sent again before giving up.
pub(crate) const TRANSACTION_CONFLICT_ATTEMPTS: u32 = 4;

/// Cancellation reason codes (see `TransactWriteItems` in the API reference).
pub(crate) const CONDITIONAL_CHECK_FAILED: &str = "ConditionalCheckFailed";
const TRANSACTION_CONFLICT: &str = "TransactionConflict";
const RETRYABLE_REASONS: &[&str] = &[
    TRANSACTION_CONFLICT,
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
];

pub(crate) fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Failed(format!("building a request: {e}"))
}

/// Waits a little longer after each attempt (with the client's sleep, if it
/// has one).
pub(crate) async fn pause(client: &Client, attempt: u32) {
    if let Some(sleep) = client.config().sleep_impl() {
        sleep.sleep(Duration::from_millis(5 * u64::from(attempt.min(20)))).await;
    }
}

/// A cancellation that none of the caller's own conditions explains.
pub(crate) enum Unexplained {
    /// Only transaction conflicts and throttling: worth sending the same
    /// transaction again (the reasons, described).
    Transient(String),
    /// Not worth it here: throttling alone is [`StoreError::Unavailable`],
    /// anything else [`StoreError::Failed`].
    Store(StoreError),
}

/// Reads the reasons of a cancellation that no condition of the caller's
/// explains.
pub(crate) fn unexplained(reasons: &[CancellationReason]) -> Unexplained {
    let codes: Vec<&str> = reasons
        .iter()
        .filter_map(|r| r.code())
        .filter(|c| *c != "None")
        .collect();
    let described = reasons
        .iter()
        .map(|r| format!("{}: {}", r.code().unwrap_or("None"), r.message().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("; ");
    if !codes.is_empty() && codes.iter().all(|c| RETRYABLE_REASONS.contains(c)) {
        if codes.contains(&TRANSACTION_CONFLICT) {
            return Unexplained::Transient(described);
        }
        return Unexplained::Store(StoreError::Unavailable(format!(
            "TransactWriteItems cancelled: {described}"
        )));
    }
    Unexplained::Store(StoreError::Failed(format!("TransactWriteItems cancelled: {described}")))
}
