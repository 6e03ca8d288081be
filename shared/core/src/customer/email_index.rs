//! The email index: email → customer, a projection of the customer stream
//! (the lookups behind `GET /customers?email=` and identity resolution).
//! An address is named by its keyed hash ([`email_reservation_key`], HMAC
//! under the identifier secret, decision 0046), never by its text.

use super::events::CustomerEvent;
use super::validate::{email_reservation_key, normalise_email};
use super::views::EMAIL_INDEX;
use crate::consumer::{Projection, ProjectionError};
use crate::event::{DomainEvent, EventEnvelope};
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use crate::privacy::IdentifierHasher;
use async_trait::async_trait;
use serde_json::{json, Value};

/// The email index's reverse entries: partition `customer#<id>`.
const OWNER_PREFIX: &str = "customer#";
const OWNER_SORT: &str = "email";

fn customer_partition(event: &EventEnvelope) -> Result<&str, ProjectionError> {
    event
        .customer_id
        .as_deref()
        .ok_or_else(|| ProjectionError::Invalid(format!("{} {} has no customer_id", event.event_type, event.event_id)))
}

/// Email → customer: partition is the email's reservation key (its keyed
/// hash), sort the customer id.
pub struct EmailIndexProjection {
    identifiers: IdentifierHasher,
}

impl EmailIndexProjection {
    pub fn new(identifiers: IdentifierHasher) -> Self {
        EmailIndexProjection { identifiers }
    }
}

#[async_trait]
impl Projection for EmailIndexProjection {
    fn name(&self) -> &'static str {
        EMAIL_INDEX
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "CustomerRegistered" | "CustomerEmailChanged" | "CustomerErased"
        )
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let customer_id = customer_partition(event)?.to_string();
        // Besides email → customer, customer → the email's key (so erasure,
        // whose event names no email, can remove the entry).
        let owner = format!("{OWNER_PREFIX}{customer_id}");
        let entry = |email: &str| {
            let key = email_reservation_key(&self.identifiers, email);
            [
                ReadOp::Put {
                    partition: key.clone(),
                    sort: customer_id.clone(),
                    body: json!({ "customer_id": customer_id }),
                },
                ReadOp::Put {
                    partition: owner.clone(),
                    sort: OWNER_SORT.into(),
                    body: json!({ "key": key }),
                },
            ]
        };
        Ok(match CustomerEvent::from_envelope(event)? {
            // A registration replayed after erasure has no address left to index.
            CustomerEvent::CustomerRegistered { email, .. } if email == crate::privacy::ERASED => Vec::new(),
            CustomerEvent::CustomerRegistered { email, .. } => entry(&email).into(),
            CustomerEvent::CustomerEmailChanged { new_email, .. } if new_email == crate::privacy::ERASED => Vec::new(),
            CustomerEvent::CustomerEmailChanged { old_email, new_email } => {
                let mut ops = vec![ReadOp::Delete {
                    partition: email_reservation_key(&self.identifiers, &old_email),
                    sort: customer_id.clone(),
                }];
                ops.extend(entry(&new_email));
                ops
            }
            CustomerEvent::CustomerErased {} => {
                let mut ops = vec![ReadOp::Delete {
                    partition: owner.clone(),
                    sort: OWNER_SORT.into(),
                }];
                if let Some(key) = docs
                    .get(EMAIL_INDEX, &owner, OWNER_SORT)
                    .await?
                    .and_then(|v| v.get("key").and_then(Value::as_str).map(str::to_string))
                {
                    ops.push(ReadOp::Delete {
                        partition: key,
                        sort: customer_id.clone(),
                    });
                }
                ops
            }
            _ => Vec::new(),
        })
    }
}

/// The ids of customers registered under `email` (any case), found by its
/// keyed hash under `identifiers`. An invalid address finds nobody.
pub async fn customers_with_email(
    docs: &dyn ReadModelStore,
    identifiers: &IdentifierHasher,
    email: &str,
) -> Result<Vec<String>, StoreError> {
    let Ok(normal) = normalise_email("email", email) else {
        return Ok(Vec::new());
    };
    Ok(docs
        .list(EMAIL_INDEX, &email_reservation_key(identifiers, &normal), "", None, 100)
        .await?
        .into_iter()
        .map(|(customer_id, _)| customer_id)
        .collect())
}
