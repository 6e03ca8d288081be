//! Retention locally (`crm_core::retention`): `crm-local retention sweep`
//! ([`crate::cli::retention`]),
//! and `serve` sweeps at start and then once a day (by the runtime's clock,
//! so a virtual clock moved across midnight sweeps too). The sweep folds
//! old activity into daily summaries through the command store (so the bus
//! hands the summaries to the projections), then deletes the raw events
//! their summaries cover, and streams past the legal period, from the
//! SQLite `events` table.

use crate::adapters::store::SqliteEventStore;
use crate::runtime::bus::TemplateFileError;
use crate::runtime::{LocalRuntime, RuntimeError};
use crm_core::clock::Clock;
use crm_core::ports::{EventStore, StoreError};
use crm_core::retention::{RetentionError, RetentionPolicy, SweepReport};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Template(#[from] TemplateFileError),
}

/// One sweep of the runtime's store at the runtime's now; the bus is
/// settled afterwards, so the projections have seen the summaries.
pub async fn sweep(runtime: &LocalRuntime, policy: &RetentionPolicy) -> Result<SweepReport, SweepError> {
    let report = crm_core::retention::sweep(
        runtime.command_store().as_ref(),
        runtime.stored_events.as_ref(),
        policy,
        runtime.clock.now(),
    )
    .await?;
    runtime.bus.settle().await?;
    Ok(report)
}

/// `serve`'s daily sweep: at start, then whenever the runtime's clock is on
/// a new UTC day (checked every 30 seconds). A failed sweep is logged and
/// tried again at the next check.
pub fn spawn_daily(runtime: &LocalRuntime, policy: RetentionPolicy) -> tokio::task::JoinHandle<()> {
    let store: Arc<dyn EventStore> = runtime.command_store();
    let expiry: Arc<SqliteEventStore> = runtime.stored_events.clone();
    let clock: Arc<dyn Clock> = runtime.clock.clone();
    tokio::spawn(async move {
        let mut swept_on = None;
        loop {
            let now = clock.now();
            if swept_on != Some(now.date_naive()) {
                match crm_core::retention::sweep(store.as_ref(), expiry.as_ref(), &policy, now).await {
                    Ok(report) => {
                        tracing::info!(?report, "retention sweep");
                        swept_on = Some(now.date_naive());
                    }
                    Err(e) => tracing::error!(error = %e, "retention sweep failed; retrying"),
                }
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
}
