//! `crm-ops rekey` (decision 0046): moves the email reservations of the
//! events table made before keyed hashes (`email#<sha256>`) to the keyed key
//! (`email#<HMAC under IDENTIFIER_HASH_SECRET>`), one transaction per
//! customer ([`crm_core::customer::rekey`]), reading customers decrypted.
//! Idempotent. The email and name indexes are rebuilt afterwards by
//! `crm-ops replay --consumer projector`.

use crate::{CliError, Tables};
use crm_core::clock::SystemClock;
use crm_core::customer::rekey::{rekey_email_reservations, RekeyError, RekeyReport};
use crm_core::customer::CustomerService;
use crm_core::ports::StoreError;
use crm_core::privacy::IdentifierHasher;
use std::sync::Arc;

/// Re-keys every customer's email reservation with `identifier_hash_secret`
/// (the api's `IdentifierHashSecret`; required).
pub async fn rekey(tables: &Tables, identifier_hash_secret: Option<&str>) -> Result<RekeyReport, CliError> {
    let secret = identifier_hash_secret.ok_or(CliError::NoIdentifierSecret)?;
    let customers = CustomerService::new(tables.events.clone(), Arc::new(SystemClock))
        .with_identifiers(IdentifierHasher::new(secret.as_bytes()));
    rekey_email_reservations(&customers).await.map_err(|e| match e {
        RekeyError::NoSecret => CliError::NoIdentifierSecret,
        RekeyError::Store(e) => CliError::Store(e),
        other => CliError::Store(StoreError::Failed(other.to_string())),
    })
}

/// What `crm-ops rekey` prints.
pub fn render(report: &RekeyReport) -> String {
    format!(
        "{} customer(s): {} reservation(s) re-keyed, {} already keyed, {} without a reservation",
        report.customers, report.rekeyed, report.already_keyed, report.without_reservation
    )
}
