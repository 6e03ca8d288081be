//! The projections of delivery: the suppression list and the send log.

use super::{MESSAGE_LOG, SUPPRESSION_LIST};
use crate::consent::Channel;
use crate::consumer::{Projection, ProjectionError};
use crate::event::{DomainEvent, EventEnvelope};
use crate::messaging::decision::SentRecord;
use crate::messaging::events::MessageEvent;
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use crate::privacy::IdentifierHasher;
use crate::vocabulary::Category;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

const SENT_PREFIX: &str = "sent#";

/// A fixed-width UTC time, so that sort keys order by time.
fn sort_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Why an address (by its salted hash) is suppressed for a message of `category`, if it is. A
/// complaint suppresses marketing only; a hard bounce or an invalid address
/// everything.
pub async fn suppression_reason(
    docs: &dyn ReadModelStore,
    channel: Channel,
    address_hash: &str,
    category: Category,
) -> Result<Option<String>, StoreError> {
    let Some(doc) = docs
        .get(SUPPRESSION_LIST, &suppression_partition(channel, address_hash), "entry")
        .await?
    else {
        return Ok(None);
    };
    let entry: SuppressionEntry = serde_json::from_value(doc).map_err(|e| StoreError::Failed(e.to_string()))?;
    if entry.marketing_only && category == Category::Transactional {
        return Ok(None);
    }
    Ok(Some(entry.reason))
}

fn suppression_partition(channel: Channel, hash: &str) -> String {
    format!("{channel}#{hash}")
}

/// One suppressed address (named by its hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SuppressionEntry {
    pub reason: String,
    /// A complaint stops marketing; transactional mail still goes.
    pub marketing_only: bool,
    pub at: DateTime<Utc>,
    pub event_id: uuid::Uuid,
}

/// The suppression list: hard bounces, complaints and invalidated addresses,
/// by salted address hash.
pub struct SuppressionListProjection {
    identifiers: IdentifierHasher,
}

impl SuppressionListProjection {
    pub fn new(identifiers: IdentifierHasher) -> Self {
        SuppressionListProjection { identifiers }
    }
}

#[async_trait]
impl Projection for SuppressionListProjection {
    fn name(&self) -> &'static str {
        SUPPRESSION_LIST
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "EmailBounced" | "EmailComplained" | "CustomerEmailInvalidated"
        )
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let (hash, reason, marketing_only) = match event.event_type.as_str() {
            "CustomerEmailInvalidated" => {
                let email = event.data.get("email").and_then(Value::as_str).unwrap_or_default();
                let reason = event.data.get("reason").and_then(Value::as_str).unwrap_or("invalid");
                (
                    self.identifiers.email(email),
                    format!("invalid address: {reason}"),
                    false,
                )
            }
            _ => match MessageEvent::from_envelope(event)? {
                MessageEvent::EmailBounced {
                    bounce_type: crate::messaging::events::BounceType::Permanent,
                    address_hash,
                    ..
                } => (address_hash, "hard bounce".to_string(), false),
                MessageEvent::EmailComplained { address_hash, .. } => (address_hash, "complaint".to_string(), true),
                _ => return Ok(Vec::new()),
            },
        };
        let partition = suppression_partition(Channel::Email, &hash);
        // A stronger entry (everything) is never weakened by a complaint.
        if marketing_only {
            if let Some(existing) = docs.get(SUPPRESSION_LIST, &partition, "entry").await? {
                if existing.get("marketing_only") == Some(&Value::Bool(false)) {
                    return Ok(Vec::new());
                }
            }
        }
        let entry = SuppressionEntry {
            reason,
            marketing_only,
            at: event.occurred_at,
            event_id: event.event_id,
        };
        Ok(vec![ReadOp::Put {
            partition,
            sort: "entry".into(),
            body: serde_json::to_value(entry).map_err(|e| ProjectionError::Invalid(e.to_string()))?,
        }])
    }
}

/// The customer's sends of the last seven days (the longest cap window).
pub async fn recent_sends(
    docs: &dyn ReadModelStore,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<SentRecord>, StoreError> {
    let after = format!("{SENT_PREFIX}{}", sort_time(now - Duration::days(7)));
    let docs = docs
        .list(MESSAGE_LOG, customer_id, SENT_PREFIX, Some(&after), 1000)
        .await?;
    Ok(docs
        .into_iter()
        .filter_map(|(_, body)| serde_json::from_value(body).ok())
        .collect())
}

/// The send log: one document per sent message under its customer, sorted by
/// time, for the frequency caps.
pub struct MessageLogProjection;

#[async_trait]
impl Projection for MessageLogProjection {
    fn name(&self) -> &'static str {
        MESSAGE_LOG
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "MessageSent"
    }

    async fn project(&self, event: &EventEnvelope, _docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let MessageEvent::MessageSent {
            message_id,
            customer_id,
            channel,
            category,
            campaign_id,
            kind,
            ..
        } = MessageEvent::from_envelope(event)?
        else {
            return Ok(Vec::new());
        };
        let record = SentRecord {
            message_id: message_id.clone(),
            channel,
            category,
            campaign_id,
            kind,
            at: event.occurred_at,
        };
        Ok(vec![ReadOp::Put {
            partition: customer_id,
            sort: format!("{SENT_PREFIX}{}#{message_id}", sort_time(event.occurred_at)),
            body: serde_json::to_value(record).map_err(|e| ProjectionError::Invalid(e.to_string()))?,
        }])
    }
}
