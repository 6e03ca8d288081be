//! `crm-local retention sweep`: one sweep of the data directory's
//! database ([`crate::runtime::retention`]).

use crate::adapters::data_dir::database_path;
use crate::runtime::bus::read_template;
use crate::runtime::retention::{sweep, SweepError};
use crate::runtime::LocalRuntime;
use crm_core::retention::RetentionPolicy;
use std::path::Path;

/// `crm-local retention sweep`: opens the data directory's database, sweeps
/// once and prints what it did as JSON.
pub async fn run_sweep(data_dir: &Path, template: Option<&Path>, policy: &RetentionPolicy) -> Result<(), SweepError> {
    let template = read_template(template)?;
    let runtime = LocalRuntime::open(&database_path(data_dir), &template)?;
    let report = sweep(&runtime, policy).await?;
    println!(
        "{}",
        serde_json::to_string(&report).unwrap_or_else(|_| format!("{report:?}"))
    );
    Ok(())
}
