//! The name index: a first or last name → the customers who have it, for a
//! search by exact first or last name (`GET /customers?name=`). A
//! projection of the customer stream whose partitions are the keyed hash
//! of a name token (HMAC under the identifier secret, decision 0046): it
//! holds no name, only hashes and customer ids.
//!
//! A token is a whole first or last name, normalised: trimmed, lower case,
//! inner runs of white space as one space ([`name_token`]). `Ada` finds a
//! customer whose first or last name is `ada`, `ADA` or ` Ada `, not one
//! called `Adam` or `Ada Mary`. The index follows name changes and forgets
//! an erased customer.

use super::events::CustomerEvent;
use crate::consumer::{Projection, ProjectionError};
use crate::event::{DomainEvent, EventEnvelope};
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use crate::privacy::{IdentifierHasher, LookupKind, ERASED};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The projection's name: its checkpoint and document namespace.
pub const NAME_INDEX: &str = "name-index";

/// The reverse entries (which keys a customer is indexed under): partition
/// `customer#<id>`, sort `names`.
const OWNER_PREFIX: &str = "customer#";
const OWNER_SORT: &str = "names";
/// Token partitions: `name#<keyed hash>` (never a `customer#` partition).
const TOKEN_PREFIX: &str = "name#";

/// The normal form of a first or last name as the index compares it; `None`
/// for an empty or erased name.
pub fn name_token(raw: &str) -> Option<String> {
    let token = raw.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    (!token.is_empty() && raw.trim() != ERASED).then_some(token)
}

/// The partition of a name token: its keyed hash.
fn token_key(identifiers: &IdentifierHasher, raw: &str) -> Option<String> {
    name_token(raw).map(|t| format!("{TOKEN_PREFIX}{}", identifiers.lookup(LookupKind::NameToken, &t)))
}

/// The keys of a customer's first and last name (one when they are alike).
fn keys_of(identifiers: &IdentifierHasher, first: &str, last: &str) -> BTreeSet<String> {
    [first, last]
        .into_iter()
        .filter_map(|n| token_key(identifiers, n))
        .collect()
}

/// First and last name → customer ids, by keyed hash.
pub struct NameIndexProjection {
    identifiers: IdentifierHasher,
}

impl NameIndexProjection {
    pub fn new(identifiers: IdentifierHasher) -> Self {
        NameIndexProjection { identifiers }
    }

    /// Indexes `customer_id` under `keys` (and records them for erasure).
    fn index(customer_id: &str, keys: &BTreeSet<String>) -> Vec<ReadOp> {
        let mut ops: Vec<ReadOp> = keys
            .iter()
            .map(|key| ReadOp::Put {
                partition: key.clone(),
                sort: customer_id.to_string(),
                body: json!({ "customer_id": customer_id }),
            })
            .collect();
        ops.push(ReadOp::Put {
            partition: format!("{OWNER_PREFIX}{customer_id}"),
            sort: OWNER_SORT.into(),
            body: json!({ "keys": keys }),
        });
        ops
    }
}

#[async_trait]
impl Projection for NameIndexProjection {
    fn name(&self) -> &'static str {
        NAME_INDEX
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "CustomerRegistered" | "CustomerNameChanged" | "CustomerErased"
        )
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let customer_id = event.customer_id.as_deref().ok_or_else(|| {
            ProjectionError::Invalid(format!("{} {} has no customer_id", event.event_type, event.event_id))
        })?;
        let h = &self.identifiers;
        Ok(match CustomerEvent::from_envelope(event)? {
            // Replayed after erasure, the names read `[erased]`: nothing to index.
            CustomerEvent::CustomerRegistered {
                first_name, last_name, ..
            } => {
                let keys = keys_of(h, &first_name, &last_name);
                if keys.is_empty() {
                    Vec::new()
                } else {
                    Self::index(customer_id, &keys)
                }
            }
            CustomerEvent::CustomerNameChanged {
                old_first_name,
                old_last_name,
                new_first_name,
                new_last_name,
            } => {
                let old = keys_of(h, &old_first_name, &old_last_name);
                let new = keys_of(h, &new_first_name, &new_last_name);
                let mut ops: Vec<ReadOp> = old
                    .difference(&new)
                    .map(|key| ReadOp::Delete {
                        partition: key.clone(),
                        sort: customer_id.to_string(),
                    })
                    .collect();
                if !new.is_empty() {
                    ops.extend(Self::index(customer_id, &new));
                }
                ops
            }
            CustomerEvent::CustomerErased {} => {
                let owner = format!("{OWNER_PREFIX}{customer_id}");
                let keys: Vec<String> = docs
                    .get(NAME_INDEX, &owner, OWNER_SORT)
                    .await?
                    .and_then(|v| v.get("keys").cloned())
                    .and_then(|k| match k {
                        Value::Array(keys) => Some(keys),
                        _ => None,
                    })
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect();
                let mut ops = vec![ReadOp::Delete {
                    partition: owner,
                    sort: OWNER_SORT.into(),
                }];
                ops.extend(keys.into_iter().map(|key| ReadOp::Delete {
                    partition: key,
                    sort: customer_id.to_string(),
                }));
                ops
            }
            _ => Vec::new(),
        })
    }
}

/// The ids of customers whose first or last name is `name` (compared as
/// [`name_token`]s), found by its keyed hash under `identifiers`; at most
/// `limit`. An empty name finds nobody.
pub async fn customers_with_name(
    docs: &dyn ReadModelStore,
    identifiers: &IdentifierHasher,
    name: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let Some(key) = token_key(identifiers, name) else {
        return Ok(Vec::new());
    };
    Ok(docs
        .list(NAME_INDEX, &key, "", None, limit)
        .await?
        .into_iter()
        .map(|(customer_id, _)| customer_id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole_names_in_any_case_and_spacing() {
        assert_eq!(name_token("  Ada  Mary "), Some("ada mary".into()));
        assert_eq!(name_token("ÉLODIE"), Some("élodie".into()));
        assert_eq!(name_token("   "), None);
        assert_eq!(name_token(ERASED), None);
        let h = IdentifierHasher::new(b"names");
        assert_eq!(token_key(&h, "Ada"), token_key(&h, " ada"));
        assert_ne!(token_key(&h, "Ada"), token_key(&h, "Adam"));
        assert_ne!(
            token_key(&h, "Ada"),
            token_key(&IdentifierHasher::new(b"another secret"), "Ada"),
            "the key depends on the secret"
        );
    }
}
