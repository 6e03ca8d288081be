//! The consent ledger: the current state of every (purpose, channel) a
//! customer ever consented to, with proof, and the full history. It answers
//! the channel function's question "may we?" with a strongly consistent read.

use super::{Channel, ConsentMethod, Purpose};
use crate::consumer::{Projection, ProjectionError};
use crate::customer::CustomerEvent;
use crate::event::{DomainEvent, EventEnvelope};
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};

pub use crate::vocabulary::streams::CONSENT_LEDGER;

const CURRENT_PREFIX: &str = "current#";
const HISTORY_PREFIX: &str = "history#";

pub use crate::vocabulary::CONSENT_VALIDITY_MONTHS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentStatus {
    Active,
    Revoked,
}

/// How consent was given: what we keep to prove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentProof {
    pub method: ConsentMethod,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    pub actor: String,
    pub event_id: uuid::Uuid,
    /// The GDPR context of the grant (`ConsentGranted` v2, decision 0022;
    /// a v1 grant's as its upcaster derives it). Absent from documents
    /// projected before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gdpr: Option<super::GdprContext>,
}

/// The current state of one (purpose, channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub purpose: Purpose,
    pub channel: Channel,
    pub status: ConsentStatus,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub revocation_reason: Option<String>,
    pub proof: ConsentProof,
}

impl ConsentRecord {
    /// In force at `now`: granted, not revoked, not expired.
    pub fn is_active_at(&self, now: DateTime<Utc>) -> bool {
        self.status == ConsentStatus::Active && now < self.expires_at
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentChange {
    Granted,
    Revoked,
}

/// One grant or revocation, as it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentHistoryEntry {
    pub version: u64,
    pub change: ConsentChange,
    pub purpose: Purpose,
    pub channel: Channel,
    pub at: DateTime<Utc>,
    pub actor: String,
    #[serde(default)]
    pub method: Option<ConsentMethod>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

fn current_sort(purpose: Purpose, channel: Channel) -> String {
    format!("{CURRENT_PREFIX}{purpose}#{channel}")
}

fn invalid(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Invalid(e.to_string())
}

pub struct ConsentLedgerProjection;

#[async_trait]
impl Projection for ConsentLedgerProjection {
    fn name(&self) -> &'static str {
        CONSENT_LEDGER
    }

    fn handles(&self, event_type: &str) -> bool {
        // Erasure rewrites nothing: the proofs' IP and user agent are sealed
        // under the customer's key and read `[erased]` once it is deleted
        // (decision 0045); when and how consent was given or revoked stays.
        matches!(event_type, "ConsentGranted" | "ConsentRevoked")
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let customer = event
            .customer_id
            .as_deref()
            .ok_or_else(|| invalid(format!("{} has no customer_id", event.event_id)))?;
        let (record, entry) = match CustomerEvent::from_envelope(event)? {
            CustomerEvent::ConsentGranted {
                purpose,
                channel,
                method,
                ip,
                user_agent,
                gdpr,
            } => {
                let expires_at = event
                    .occurred_at
                    .checked_add_months(Months::new(CONSENT_VALIDITY_MONTHS))
                    .ok_or_else(|| invalid("consent expiry out of range"))?;
                let record = ConsentRecord {
                    purpose,
                    channel,
                    status: ConsentStatus::Active,
                    granted_at: event.occurred_at,
                    expires_at,
                    revoked_at: None,
                    revocation_reason: None,
                    proof: ConsentProof {
                        method,
                        ip: ip.clone(),
                        user_agent: user_agent.clone(),
                        actor: event.actor.clone(),
                        event_id: event.event_id,
                        gdpr: Some(gdpr),
                    },
                };
                let entry = ConsentHistoryEntry {
                    version: event.version,
                    change: ConsentChange::Granted,
                    purpose,
                    channel,
                    at: event.occurred_at,
                    actor: event.actor.clone(),
                    method: Some(method),
                    ip,
                    user_agent,
                    reason: None,
                };
                (record, entry)
            }
            CustomerEvent::ConsentRevoked {
                purpose,
                channel,
                reason,
                method,
            } => {
                let current = docs
                    .get(CONSENT_LEDGER, customer, &current_sort(purpose, channel))
                    .await?
                    .ok_or_else(|| invalid(format!("revocation of {purpose}:{channel} that was never granted")))?;
                let mut record: ConsentRecord = serde_json::from_value(current).map_err(invalid)?;
                record.status = ConsentStatus::Revoked;
                record.revoked_at = Some(event.occurred_at);
                record.revocation_reason = Some(reason.clone());
                let entry = ConsentHistoryEntry {
                    version: event.version,
                    change: ConsentChange::Revoked,
                    purpose,
                    channel,
                    at: event.occurred_at,
                    actor: event.actor.clone(),
                    method,
                    ip: None,
                    user_agent: None,
                    reason: Some(reason),
                };
                (record, entry)
            }
            _ => return Ok(Vec::new()),
        };
        Ok(vec![
            ReadOp::Put {
                partition: customer.to_string(),
                sort: current_sort(record.purpose, record.channel),
                body: serde_json::to_value(&record).map_err(invalid)?,
            },
            ReadOp::Put {
                partition: customer.to_string(),
                sort: format!("{HISTORY_PREFIX}{:010}", event.version),
                body: serde_json::to_value(&entry).map_err(invalid)?,
            },
        ])
    }
}

fn unreadable(e: serde_json::Error) -> StoreError {
    StoreError::Failed(format!("consent ledger document unreadable: {e}"))
}

/// The ledger's current state of every (purpose, channel) of a customer.
pub async fn current_consents(docs: &dyn ReadModelStore, customer_id: &str) -> Result<Vec<ConsentRecord>, StoreError> {
    docs.list(CONSENT_LEDGER, customer_id, CURRENT_PREFIX, None, 100)
        .await?
        .into_iter()
        .map(|(_, v)| serde_json::from_value(v).map_err(unreadable))
        .collect()
}

/// Every grant and revocation of a customer, oldest first.
pub async fn consent_history(
    docs: &dyn ReadModelStore,
    customer_id: &str,
) -> Result<Vec<ConsentHistoryEntry>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = docs
            .list(CONSENT_LEDGER, customer_id, HISTORY_PREFIX, after.as_deref(), 500)
            .await?;
        let done = page.len() < 500;
        after = page.last().map(|(s, _)| s.clone());
        for (_, v) in page {
            out.push(serde_json::from_value(v).map_err(unreadable)?);
        }
        if done {
            return Ok(out);
        }
    }
}

/// May we contact this customer for `purpose` over `channel` at `now`?
/// A strongly consistent read of the ledger; an expired consent is not active.
pub async fn has_active_consent(
    docs: &dyn ReadModelStore,
    customer_id: &str,
    purpose: Purpose,
    channel: Channel,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let Some(doc) = docs
        .get(CONSENT_LEDGER, customer_id, &current_sort(purpose, channel))
        .await?
    else {
        return Ok(false);
    };
    let record: ConsentRecord = serde_json::from_value(doc).map_err(unreadable)?;
    Ok(record.is_active_at(now))
}
