//! The AWS migrations of decision 0049, for data stored before decisions
//! 0041 and 0044:
//!
//! - `migrate-timers`: the deferral timers set before decision 0041 hold
//!   their message request (the trigger event's personal data, in clear) in
//!   their EventBridge Scheduler schedule's `Input`; each is rewritten in
//!   place to reference the request instead
//!   ([`crm_aws::scheduler::migrate_request_copies`]).
//! - `rewrap-keys`: the customers' data keys KMS wrapped before decision
//!   0044 are re-wrapped under the branch key
//!   ([`DynamoKmsKeyStore::rewrap_all`]), each by a conditional write that
//!   an erasure wins.
//!
//! Both are idempotent: run again, they change nothing.

use crate::{CliError, Clients, Settings};
use crm_aws::keys::{DynamoKmsKeyStore, RewrapReport};
use crm_aws::scheduler::TimerMigration;
use std::fmt::Write as _;
use std::time::Duration;

/// Rewrites the deferral timers of the schedule group `group` that hold
/// their request into references (see
/// [`crm_aws::scheduler::migrate_request_copies`]).
pub async fn migrate_timers(clients: &Clients, group: &str) -> Result<TimerMigration, CliError> {
    crm_aws::scheduler::migrate_request_copies(&clients.scheduler, group, chrono::Utc::now())
        .await
        .map_err(CliError::from)
}

/// The report of `migrate-timers`: a line per schedule that failed, then the counts.
pub fn render_timer_migration(report: &TimerMigration) -> String {
    let mut out = String::new();
    for (name, why) in &report.failed {
        let _ = writeln!(out, "FAILED {name}: {why}");
    }
    let _ = write!(
        out,
        "listed {} schedules: rewritten {}, already references {}, other {}, due (left) {}, gone {}, failed {}",
        report.listed,
        report.rewritten,
        report.referencing,
        report.other,
        report.due,
        report.gone,
        report.failed.len()
    );
    out
}

/// Re-wraps the data keys of `KEYS_TABLE` that KMS wrapped before decision
/// 0044 under the active branch key (made under `DATA_KEYS_KMS_KEY_ID` if
/// there is none yet; see [`DynamoKmsKeyStore::rewrap_all`]).
pub async fn rewrap_keys(clients: &Clients, settings: &Settings) -> Result<RewrapReport, CliError> {
    let store = DynamoKmsKeyStore::new(
        clients.dynamodb.clone(),
        clients.kms.clone(),
        settings.keys_table()?,
        settings.data_keys_kms_key_id()?,
    )
    .with_cache_ttl(Duration::ZERO);
    store.rewrap_all().await.map_err(CliError::from)
}

/// The report of `rewrap-keys`: a line per key that failed, then the counts.
pub fn render_rewrap(report: &RewrapReport) -> String {
    let mut out = String::new();
    for (pk, why) in &report.failed {
        let _ = writeln!(out, "FAILED {pk}: {why}");
    }
    let _ = write!(
        out,
        "scanned {} items: rewrapped {}, already under a branch key {}, branch key items {}, erased meanwhile {}, \
         changed meanwhile {}, failed {}",
        report.scanned,
        report.rewrapped,
        report.already,
        report.branch_items,
        report.erased,
        report.changed,
        report.failed.len()
    );
    out
}
