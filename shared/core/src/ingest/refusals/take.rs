//! How ingestion records what it refuses: [`Ingestion::take`] reads and
//! takes one message, and a refusal goes into the log.

use super::Refusal;
use crate::ingest::{Accepted, IngestError, Ingestion, Kind, Rejection, SegmentMessage, Source};
use chrono::{DateTime, Utc};
use serde_json::Value;

impl Ingestion {
    /// Reads one message as sent (`expected`: the call of the route; `None`
    /// in a batch, where `type` is required), takes it, and records a
    /// refusal in the refused-messages log (when ingestion has one,
    /// [`Ingestion::with_refusals`]). The answer is what parsing and
    /// [`Ingestion::ingest`] answered, whether or not the refusal could be
    /// recorded.
    pub async fn take(
        &self,
        from: &Source,
        raw: &Value,
        expected: Option<Kind>,
        now: DateTime<Utc>,
    ) -> Result<Accepted, IngestError> {
        let parsed = SegmentMessage::parse(raw, expected, now);
        self.take_parsed(from, raw, expected, parsed, now).await
    }

    /// [`Ingestion::take`] for one message of a batch (its `type` required)
    /// whose `sentAt` was `batch_sent_at`: a message without its own
    /// `sentAt` has its timestamp corrected by the batch's
    /// ([`SegmentMessage::parse_sent`]).
    pub async fn take_in_batch(
        &self,
        from: &Source,
        raw: &Value,
        now: DateTime<Utc>,
        batch_sent_at: Option<DateTime<Utc>>,
    ) -> Result<Accepted, IngestError> {
        let parsed = SegmentMessage::parse_sent(raw, None, now, batch_sent_at);
        self.take_parsed(from, raw, None, parsed, now).await
    }

    async fn take_parsed(
        &self,
        from: &Source,
        raw: &Value,
        expected: Option<Kind>,
        parsed: Result<SegmentMessage, Rejection>,
        now: DateTime<Utc>,
    ) -> Result<Accepted, IngestError> {
        let outcome = match parsed {
            Ok(message) => self.ingest(from, &message).await,
            Err(rejection) => Err(IngestError::Rejected(rejection)),
        };
        if let (Err(IngestError::Rejected(rejection)), Some(refusals)) = (&outcome, &self.refusals) {
            let identifiers = self.customers.identifiers();
            let refusal = Refusal::new(&from.name, raw, expected, rejection, identifiers, now);
            refusals.record(&refusal).await;
        }
        outcome
    }
}
