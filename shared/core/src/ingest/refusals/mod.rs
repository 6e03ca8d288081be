//! The refused-messages log (issue 17 item 4, decision 0053): nothing a
//! source sends is dropped without a trace.
//!
//! A message refused on a single route gets its 4xx, but one refused inside
//! a `/v1/batch` is only "rejected" inside a 200 answer, which Segment's
//! libraries take as success. [`Ingestion::take`] therefore records every
//! refusal ([`IngestError::Rejected`], never a [`IngestError::Retry`]: that
//! one the client sends again) in a per-source log ([`RefusalLog`]):
//! when, which source, the messageId, the type, the event name, the field
//! and the reason, and the message itself without its personal values
//! ([`redact_message`]). Entries are kept [`KEPT_FOR_DAYS`] days
//! (`expires_at`: DynamoDB's TTL on AWS, deleted by the adapter locally),
//! listed newest first per source, and counted in the metric
//! [`MESSAGES_REFUSED`] (dimension `Source`).
//!
//! Recording is best effort: a log that cannot be written is reported in
//! the process log, and the client still gets the refusal it would have got.

//!
//! Here the log's entry ([`Refusal`]), its port ([`RefusalLog`]) and the
//! recorder ingestion holds ([`RefusedMessages`]); in [`redact`] what an
//! entry keeps of the message; in `take` how ingestion records what it
//! refuses; the in-memory log and the adapters' [`contract`] beside them.

#[cfg(any(test, feature = "contract"))]
pub mod contract;
#[cfg(any(test, feature = "contract"))]
mod memory;
pub mod redact;
mod take;
#[cfg(test)]
mod tests;

#[cfg(any(test, feature = "contract"))]
pub use memory::InMemoryRefusals;
pub use redact::redact_message;

use super::{Kind, Rejection};
use crate::metrics::{MetricSet, MetricsSink, NoMetrics};
use crate::ports::StoreError;
use crate::privacy::scrub::scrub;
use crate::privacy::IdentifierHasher;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// How long a refusal is kept.
pub const KEPT_FOR_DAYS: i64 = 7;

/// The metric counting refused messages (dimension `Source`).
pub const MESSAGES_REFUSED: &str = "MessagesRefused";

/// What a personal value that is not an identifier reads as in the log.
pub const REMOVED: &str = "[removed]";

/// What starts a keyed hash in the log (`hmac:<64 hex digits>`).
pub const HASH_PREFIX: &str = "hmac:";

/// The most entries one page of [`RefusalLog::list`] holds.
pub const MAX_PAGE: usize = 100;

/// The longest text kept of the messageId, type and event name as sent (they
/// may be what was refused for its length).
const MAX_LABEL_CHARS: usize = 200;

/// How long a refusal is kept.
pub fn kept_for() -> Duration {
    Duration::days(KEPT_FOR_DAYS)
}

/// One refused message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// Unique; with `refused_at`, the entry's place in the log ([`Refusal::cursor`]).
    pub id: String,
    pub refused_at: DateTime<Utc>,
    /// When the log forgets it ([`KEPT_FOR_DAYS`] after `refused_at`).
    pub expires_at: DateTime<Utc>,
    /// The source's name.
    pub source: String,
    /// As sent (absent when it was missing or not a string).
    pub message_id: Option<String>,
    /// `type` as sent, else the route's call.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `event` (track) or `name` (page, screen) as sent.
    pub event: Option<String>,
    /// The field refused (`properties.price`, `traits.email`, `body`).
    pub field: String,
    pub reason: String,
    /// The message without its personal values ([`redact_message`]);
    /// `null` when it was not a JSON object or was larger than a message may be.
    pub message: Value,
}

impl Refusal {
    /// Describes the refusal of `raw` from `source` at `now` (`expected`:
    /// the call of the route, for a message without `type`), its personal
    /// values removed or replaced by keyed hashes under `identifiers`
    /// (removed when there is no hasher).
    pub fn new(
        source: &str,
        raw: &Value,
        expected: Option<Kind>,
        rejection: &Rejection,
        identifiers: Option<&IdentifierHasher>,
        now: DateTime<Utc>,
    ) -> Self {
        let label = |field: &str| {
            raw.get(field)
                .and_then(Value::as_str)
                .map(|s| scrub(&s.chars().take(MAX_LABEL_CHARS).collect::<String>()).into_owned())
        };
        Refusal {
            id: uuid::Uuid::new_v4().to_string(),
            refused_at: now,
            expires_at: now + kept_for(),
            source: source.to_string(),
            message_id: label("messageId"),
            kind: label("type").or_else(|| expected.map(|k| k.as_str().to_string())),
            event: label("event").or_else(|| label("name")),
            field: scrub(&rejection.field).into_owned(),
            reason: scrub(&rejection.message).into_owned(),
            message: redact_message(raw, identifiers),
        }
    }

    /// The entry's place in its source's log: its time (to the microsecond)
    /// and its id. Text order is time order; a page of
    /// [`RefusalLog::list`] continues after (older than) a cursor.
    pub fn cursor(&self) -> String {
        format!("{}#{}", self.refused_at.format("%Y%m%dT%H%M%S%.6fZ"), self.id)
    }
}

/// Whether `text` can be a cursor of [`Refusal::cursor`] (asked by a caller).
pub fn is_cursor(text: &str) -> bool {
    text.len() <= 64 && !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "#.-".contains(c))
}

/// One page of a source's refusals, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RefusalPage {
    pub refusals: Vec<Refusal>,
    /// The cursor to ask for the next (older) page; `None`: this was the last.
    pub next_after: Option<String>,
}

/// Where refusals are kept: the read-models table on AWS (partition
/// `refused-messages#<source>`, with a TTL), a table of the local database.
#[async_trait]
pub trait RefusalLog: Send + Sync {
    /// Keeps `refusal` until its `expires_at`.
    async fn record(&self, refusal: &Refusal) -> Result<(), StoreError>;

    /// The refusals of `source` not expired at `now`, newest first, older
    /// than the cursor `after` when given, at most `limit` (at most [`MAX_PAGE`]).
    async fn list(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<RefusalPage, StoreError>;
}

/// What ingestion records refusals with: the log and the metric's sink.
#[derive(Clone)]
pub struct RefusedMessages {
    log: Arc<dyn RefusalLog>,
    metrics: Arc<dyn MetricsSink>,
}

impl std::fmt::Debug for RefusedMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefusedMessages(..)")
    }
}

impl RefusedMessages {
    /// Refusals go to `log`; the metric goes nowhere until [`Self::with_metrics`].
    pub fn new(log: Arc<dyn RefusalLog>) -> Self {
        RefusedMessages {
            log,
            metrics: Arc::new(NoMetrics),
        }
    }

    /// Counts each refusal in [`MESSAGES_REFUSED`] on `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn log(&self) -> &Arc<dyn RefusalLog> {
        &self.log
    }

    /// Counts and records one refusal; a failure to record is logged.
    pub async fn record(&self, refusal: &Refusal) {
        self.metrics.emit(
            MetricSet::new(refusal.refused_at)
                .dimension("Source", refusal.source.clone())
                .count(MESSAGES_REFUSED, 1)
                .property("Field", refusal.field.clone()),
        );
        tracing::info!(
            source = %refusal.source,
            message_id = refusal.message_id.as_deref().unwrap_or(""),
            field = %refusal.field,
            reason = %refusal.reason,
            "message refused"
        );
        if let Err(e) = self.log.record(refusal).await {
            tracing::warn!(source = %refusal.source, error = %scrub(&e.to_string()), "refusal not recorded");
        }
    }
}
