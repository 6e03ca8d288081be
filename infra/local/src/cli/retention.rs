//! `crm-local retention sweep`: one sweep of the data directory's
//! database ([`crate::runtime::retention`]).

use crate::cli::open_runtime;
use crate::runtime::retention::{sweep, SweepError};
use crm_core::retention::RetentionPolicy;
use std::path::Path;

/// `crm-local retention sweep`: opens the data directory's database, sweeps
/// once and prints what it did as JSON.
pub async fn run_sweep(data_dir: &Path, template: Option<&Path>, policy: &RetentionPolicy) -> Result<(), SweepError> {
    let runtime = open_runtime::<SweepError>(data_dir, template)?;
    let report = sweep(&runtime, policy).await?;
    println!(
        "{}",
        serde_json::to_string(&report).unwrap_or_else(|_| format!("{report:?}"))
    );
    Ok(())
}
