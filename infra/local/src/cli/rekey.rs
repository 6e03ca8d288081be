//! `crm-local rekey` (decision 0046): moves the email reservations made
//! before keyed hashes (`email#<sha256>`) to the keyed key
//! (`email#<HMAC under the database's identifier secret>`), one atomic write
//! per customer ([`crm_core::customer::rekey`]). Idempotent. The email and
//! name indexes are rebuilt by `crm-local replay --consumer projector`.

use crate::adapters::data_dir::database_path;
use crate::runtime::bus::BUILT_IN_TEMPLATE;
use crate::runtime::{LocalRuntime, RuntimeError};
use crm_core::customer::rekey::{rekey_email_reservations, RekeyError, RekeyReport};
use crm_core::customer::CustomerService;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum RekeyCliError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Rekey(#[from] RekeyError),
}

/// Re-keys the reservations of the database in `data_dir`, with the
/// runtime's identifier secret, reading customers decrypted.
pub async fn rekey(data_dir: &Path) -> Result<RekeyReport, RekeyCliError> {
    let runtime = LocalRuntime::open(&database_path(data_dir), BUILT_IN_TEMPLATE)?;
    let customers = CustomerService::new(runtime.events.clone(), runtime.clock.clone())
        .with_identifiers(runtime.identifiers.clone());
    Ok(rekey_email_reservations(&customers).await?)
}

/// What `crm-local rekey` prints.
pub fn render(report: &RekeyReport) -> String {
    format!(
        "{} customer(s): {} reservation(s) re-keyed, {} already keyed, {} without a reservation",
        report.customers, report.rekeyed, report.already_keyed, report.without_reservation
    )
}
