//! The local runtime's unsubscribe-token signer (its secret from
//! [`crate::adapters::secrets`], or `UNSUBSCRIBE_SECRET`), and `crm-local unsubscribe-link`, which prints a customer's
//! signed preference-centre link with that same secret.

use crate::adapters::db::failed;
use crm_core::consent::{Channel, Purpose};
use crm_core::messaging::unsubscribe::{links, TokenSigner};
use crm_core::ports::StoreError;
use std::path::Path;

const NAME: &str = "unsubscribe";

/// The environment variable that overrides the stored secret (as on AWS).
pub const SECRET_ENV: &str = "UNSUBSCRIBE_SECRET";

/// The signer of the local runtime over `db`: `UNSUBSCRIBE_SECRET` when set
/// and not empty, else the stored secret.
pub fn signer(db: &Path) -> Result<TokenSigner, StoreError> {
    Ok(TokenSigner::new(&crate::adapters::secrets::secret(
        db, NAME, SECRET_ENV,
    )?))
}

/// `crm-local unsubscribe-link`: the link of `customer_id`'s (purpose,
/// channel) under `base_url`, valid for 60 days.
pub fn link(db: &Path, base_url: &str, customer_id: &str, purpose: &str, channel: &str) -> Result<String, StoreError> {
    let purpose = Purpose::parse(purpose).ok_or_else(|| failed(format!("unknown purpose {purpose}")))?;
    let channel = Channel::parse(channel).ok_or_else(|| failed(format!("unknown channel {channel}")))?;
    let signer = signer(db)?;
    let (unsubscribe, _) = links(&signer, base_url, customer_id, purpose, channel, chrono::Utc::now());
    Ok(unsubscribe)
}
