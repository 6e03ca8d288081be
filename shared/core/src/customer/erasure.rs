//! Erasure (GDPR Art. 17, decisions 0018 and 0019), the one procedure the
//! API's `DELETE /customers/{id}` and `crm-local privacy erase` share:
//! record the request with the customer's identifiers as salted hashes (for
//! the proof ledger), delete the data key, record the erasure. Every step
//! is idempotent, so running it again finishes an interrupted erasure.

use super::{CommandError, CustomerCommand, CustomerService, RequestErasure};
use crate::event::{CommandMeta, EventEnvelope};
use crate::privacy::{IdentifierHasher, KeyError, KeyStore};

/// Why an erasure did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErasureError {
    /// A command failed: unknown customer (404), store trouble, ...
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The request is recorded but the data key could not be deleted:
    /// running the erasure again finishes it.
    #[error("the erasure was recorded but the data key could not be deleted: {0}")]
    Keys(#[from] KeyError),
}

impl ErasureError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ErasureError::Command(e) => e.is_retryable(),
            ErasureError::Keys(_) => true,
        }
    }
}

/// Erases customer `id` (see the module documentation).
pub async fn erase_customer(
    customers: &CustomerService,
    keys: &dyn KeyStore,
    hasher: &IdentifierHasher,
    id: &str,
    meta: &CommandMeta,
) -> Result<(), ErasureError> {
    let respond = |_: &super::Customer, _: &[EventEnvelope]| (202, serde_json::Value::Null);
    // The identifiers while they can still be read (empty when the key is
    // already gone: the request was recorded before, with them).
    let identifiers = match customers.load(id).await? {
        Some(c) if !c.is_erased() => hasher.identifiers_of(&c.email, c.phone.as_deref()),
        _ => Vec::new(),
    };
    let request = CustomerCommand::RequestErasure(RequestErasure { identifiers });
    customers.execute(id, &request, meta, None, &respond).await?;
    keys.delete(id).await?;
    customers
        .execute(id, &CustomerCommand::CompleteErasure, meta, None, &respond)
        .await?;
    Ok(())
}
