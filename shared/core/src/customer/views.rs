//! The customer's read side: the customer 360, the timeline (audit trail)
//! and the email index, each a projection of the customer stream.

use super::aggregate::{evolve, Customer};
pub use super::email_index::{customers_with_email, EmailIndexProjection};
use super::events::CustomerEvent;
use crate::consumer::{Projection, ProjectionError};
use crate::event::{DomainEvent, EventEnvelope};
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub use crate::vocabulary::streams::{CUSTOMER_360, TIMELINE};
pub const EMAIL_INDEX: &str = "email-index";

const PROFILE_SORT: &str = "profile";
const ENTRY_PREFIX: &str = "entry#";
const TIMELINE_STATE: &str = "state";

fn customer_partition(event: &EventEnvelope) -> Result<&str, ProjectionError> {
    event
        .customer_id
        .as_deref()
        .ok_or_else(|| ProjectionError::Invalid(format!("{} {} has no customer_id", event.event_type, event.event_id)))
}

fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ProjectionError> {
    serde_json::from_value(value).map_err(|e| ProjectionError::Invalid(format!("stored document unreadable: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Value, ProjectionError> {
    serde_json::to_value(value).map_err(|e| ProjectionError::Invalid(e.to_string()))
}

/// The customer 360: who they are, their status, consents, preferences and
/// activity counts, always as of `version` of their stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerProfile {
    #[serde(flatten)]
    pub customer: Customer,
    /// Active consents as `purpose:channel`.
    pub consent_summary: Vec<String>,
    pub event_counts: BTreeMap<String, u64>,
    pub last_activity_at: DateTime<Utc>,
}

pub struct CustomerProfileProjection;

#[async_trait]
impl Projection for CustomerProfileProjection {
    fn name(&self) -> &'static str {
        CUSTOMER_360
    }

    fn handles(&self, event_type: &str) -> bool {
        // Other contexts' events (activity, journeys) only move the checkpoint.
        super::events::CUSTOMER_EVENT_TYPES.contains(&event_type)
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let partition = customer_partition(event)?;
        let typed = CustomerEvent::from_envelope(event)?;
        let current: Option<CustomerProfile> = docs
            .get(CUSTOMER_360, partition, PROFILE_SORT)
            .await?
            .map(decode)
            .transpose()?;
        let (customer, mut counts) = match current {
            Some(p) => (Some(p.customer), p.event_counts),
            None => (None, BTreeMap::new()),
        };
        let Some(mut customer) = evolve(customer, &typed, event.occurred_at, event.version) else {
            return Err(ProjectionError::Invalid(format!(
                "{} at version {} of {} before CustomerRegistered",
                event.event_type, event.version, event.stream_id
            )));
        };
        // The verification token is a secret of the write side.
        customer.pending_verification_token = None;
        *counts.entry(event.event_type.clone()).or_insert(0) += 1;
        let profile = CustomerProfile {
            consent_summary: customer
                .consents
                .iter()
                .map(|c| format!("{}:{}", c.purpose, c.channel))
                .collect(),
            customer,
            event_counts: counts,
            last_activity_at: event.occurred_at,
        };
        Ok(vec![ReadOp::Put {
            partition: partition.to_string(),
            sort: PROFILE_SORT.into(),
            body: encode(&profile)?,
        }])
    }
}

/// The customer 360 of `customer_id`, if the projection has it.
pub async fn customer_profile(
    docs: &dyn ReadModelStore,
    customer_id: &str,
) -> Result<Option<CustomerProfile>, StoreError> {
    docs.get(CUSTOMER_360, customer_id, PROFILE_SORT)
        .await?
        .map(|v| serde_json::from_value(v).map_err(|e| StoreError::Failed(format!("customer 360 unreadable: {e}"))))
        .transpose()
}

/// One change a timeline entry records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub old: Value,
    pub new: Value,
}

/// One line of the customer's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    pub correlation_id: uuid::Uuid,
    pub changes: Vec<FieldChange>,
    /// Absent once the customer is erased (sealed, decision 0045: the
    /// marker reads as none, as the timeline showed it before).
    #[serde(
        default,
        deserialize_with = "crate::privacy::erasable",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip: Option<String>,
    #[serde(
        default,
        deserialize_with = "crate::privacy::erasable",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_agent: Option<String>,
}

/// What the timeline remembers between events to show old values.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct TimelineState {
    status: Value,
    preferences: Value,
}

pub struct TimelineProjection;

fn change(field: &str, old: impl Serialize, new: impl Serialize) -> FieldChange {
    FieldChange {
        field: field.to_string(),
        old: serde_json::to_value(old).unwrap_or(Value::Null),
        new: serde_json::to_value(new).unwrap_or(Value::Null),
    }
}

#[async_trait]
impl Projection for TimelineProjection {
    fn name(&self) -> &'static str {
        TIMELINE
    }

    fn handles(&self, event_type: &str) -> bool {
        // Other contexts' events (activity, journeys) only move the checkpoint.
        super::events::CUSTOMER_EVENT_TYPES.contains(&event_type)
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let partition = customer_partition(event)?;
        let typed = CustomerEvent::from_envelope(event)?;
        let mut state: TimelineState = docs
            .get(TIMELINE, partition, TIMELINE_STATE)
            .await?
            .map(decode)
            .transpose()?
            .unwrap_or_default();
        let (mut ip, mut user_agent) = (None, None);
        let changes = match &typed {
            CustomerEvent::CustomerRegistered {
                email,
                first_name,
                last_name,
                phone,
                ip: i,
                user_agent: ua,
                ..
            } => {
                ip = Some(i.clone());
                user_agent = Some(ua.clone());
                state.status = json!("pending-verification");
                vec![
                    change("email", Value::Null, email),
                    change("first_name", Value::Null, first_name),
                    change("last_name", Value::Null, last_name),
                    change("phone", Value::Null, phone),
                    change("status", Value::Null, "pending-verification"),
                ]
            }
            CustomerEvent::ConsentGranted {
                purpose,
                channel,
                ip: i,
                user_agent: ua,
                ..
            } => {
                ip = i.clone();
                user_agent = ua.clone();
                vec![change(&format!("consent.{purpose}.{channel}"), "inactive", "active")]
            }
            CustomerEvent::ConsentRevoked { purpose, channel, .. } => {
                vec![change(&format!("consent.{purpose}.{channel}"), "active", "revoked")]
            }
            CustomerEvent::EmailVerificationRequested { .. } => Vec::new(),
            CustomerEvent::EmailVerified { .. } => {
                let old = std::mem::replace(&mut state.status, json!("active"));
                let mut c = vec![change("email_verified", false, true)];
                if old != state.status {
                    c.push(change("status", old, "active"));
                }
                c
            }
            CustomerEvent::CustomerEmailChanged { old_email, new_email } => {
                let mut c = vec![
                    change("email", old_email, new_email),
                    change("email_verified", Value::Null, false),
                ];
                if state.status == json!("active") {
                    state.status = json!("pending-verification");
                    c.push(change("status", "active", "pending-verification"));
                }
                c
            }
            CustomerEvent::CustomerNameChanged {
                old_first_name,
                old_last_name,
                new_first_name,
                new_last_name,
            } => {
                let mut c = Vec::new();
                if old_first_name != new_first_name {
                    c.push(change("first_name", old_first_name, new_first_name));
                }
                if old_last_name != new_last_name {
                    c.push(change("last_name", old_last_name, new_last_name));
                }
                c
            }
            CustomerEvent::CustomerPhoneChanged { old_phone, new_phone } => vec![change("phone", old_phone, new_phone)],
            CustomerEvent::CustomerAddressChanged {
                old_address,
                new_address,
            } => {
                vec![change("address", old_address, new_address)]
            }
            CustomerEvent::CustomerDateOfBirthChanged {
                old_date_of_birth,
                new_date_of_birth,
            } => {
                vec![change("date_of_birth", old_date_of_birth, new_date_of_birth)]
            }
            CustomerEvent::PreferencesUpdated { preferences } => {
                let new = encode(preferences)?;
                let old = std::mem::replace(&mut state.preferences, new.clone());
                vec![change("preferences", old, new)]
            }
            CustomerEvent::CustomerDeactivated { previous_status, .. } => {
                state.status = json!("deactivated");
                vec![change("status", previous_status, "deactivated")]
            }
            CustomerEvent::CustomerReactivated { status } => {
                let new = encode(status)?;
                let old = std::mem::replace(&mut state.status, new.clone());
                vec![change("status", old, new)]
            }
            CustomerEvent::PushDeviceRegistered { platform, .. } => {
                vec![change("push_devices", Value::Null, platform)]
            }
            CustomerEvent::CustomerEmailInvalidated { reason, .. } => {
                vec![change("email_invalidated", false, reason)]
            }
            CustomerEvent::CustomerErasureRequested { .. } => Vec::new(),
            CustomerEvent::CustomersMerged { merged_profile_id } => {
                vec![change("merged_profiles", Value::Null, merged_profile_id)]
            }
            CustomerEvent::CustomerErased {} => {
                // Nothing before is rewritten: the entries' personal values
                // are sealed under the deleted key and read `[erased]`
                // (decision 0045), however long the timeline.
                let old = std::mem::replace(&mut state.status, json!("erased"));
                return Ok(vec![
                    ReadOp::Put {
                        partition: partition.to_string(),
                        sort: TIMELINE_STATE.into(),
                        body: encode(&TimelineState {
                            status: state.status.clone(),
                            preferences: Value::Null,
                        })?,
                    },
                    ReadOp::Put {
                        partition: partition.to_string(),
                        sort: format!("{ENTRY_PREFIX}{:010}", event.version),
                        body: encode(&TimelineEntry {
                            version: event.version,
                            event_type: event.event_type.clone(),
                            occurred_at: event.occurred_at,
                            actor: event.actor.clone(),
                            correlation_id: event.correlation_id,
                            changes: vec![change("status", old, "erased")],
                            ip: None,
                            user_agent: None,
                        })?,
                    },
                ]);
            }
        };
        let entry = TimelineEntry {
            version: event.version,
            event_type: event.event_type.clone(),
            occurred_at: event.occurred_at,
            actor: event.actor.clone(),
            correlation_id: event.correlation_id,
            changes,
            ip,
            user_agent,
        };
        Ok(vec![
            ReadOp::Put {
                partition: partition.to_string(),
                sort: format!("{ENTRY_PREFIX}{:010}", event.version),
                body: encode(&entry)?,
            },
            ReadOp::Put {
                partition: partition.to_string(),
                sort: TIMELINE_STATE.into(),
                body: encode(&state)?,
            },
        ])
    }
}

/// A page of the customer's timeline: entries after `after_version`, oldest first.
pub async fn timeline(
    docs: &dyn ReadModelStore,
    customer_id: &str,
    after_version: u64,
    limit: usize,
) -> Result<Vec<TimelineEntry>, StoreError> {
    let after = format!("{ENTRY_PREFIX}{after_version:010}");
    docs.list(TIMELINE, customer_id, ENTRY_PREFIX, Some(&after), limit)
        .await?
        .into_iter()
        .map(|(_, v)| {
            serde_json::from_value(v).map_err(|e| StoreError::Failed(format!("timeline entry unreadable: {e}")))
        })
        .collect()
}
