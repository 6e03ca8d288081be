//! `crm-local privacy erase|export|migrate`: the operator's privacy
//! commands over a data directory (decision 0020). Erasure and export run
//! the very procedures the API runs for `DELETE /customers/{id}`
//! ([`crm_core::customer::erase_customer`]) and `GET /customers/{id}/export`
//! ([`crm_core::assembly::export::export_customer`]); on AWS those two routes
//! are the way. `migrate` encrypts what was stored before encryption at rest
//! ([`crm_core::privacy::migrate`]).

use crate::adapters::data_dir::{create_private_file, database_path, Create, DataDir};
use crate::adapters::db::{sql, Db};
use crate::adapters::keys::{load_or_create_master_key, SqliteKeyStore};
use crate::adapters::store::SqliteEventStore;
use crate::runtime::bus::BUILT_IN_TEMPLATE;
use crate::runtime::{LocalRuntime, RuntimeError};
use async_trait::async_trait;
use crm_core::assembly::export::{customer_streams, export_customer, ExportError, ExportSink, ExportSummary};
use crm_core::customer::{erase_customer, CustomerService, ErasureError};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::ports::StoreError;
use crm_core::privacy::migrate::{
    migrate_events, migrate_streams, plain_receipt_customer, seal_plain_receipt, MigrationError, StoredEventRewriter,
};
use crm_core::privacy::{is_encrypted, KeyStore};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum PrivacyAction {
    /// Erase a customer (GDPR Art. 17), as `DELETE /customers/{id}` does: their data key is
    /// deleted, so every stored copy of their personal data reads as [erased]; their
    /// journeys exit and the projections and mail sink are redacted.
    Erase {
        /// The customer's id.
        customer: String,
    },
    /// Export everything stored about a customer (GDPR Art. 20) as JSON, as
    /// `GET /customers/{id}/export` does.
    Export {
        /// The customer's id.
        customer: String,
        /// Write to this file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Encrypt the personal fields of events stored before encryption at rest (idempotent):
    /// under the customer's data key (created if missing), or [erased] for an erased customer.
    Migrate,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    #[error("no database at {0} (see --data-dir)")]
    NoDatabase(String),
    #[error("{0} is not a customer id")]
    InvalidId(String),
    #[error("customer {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("erasure: {0} (run the command again to finish it)")]
    Erasure(#[from] ErasureError),
    #[error("export: {0}")]
    Export(ExportError),
    #[error("migration: {0} (running it again goes on where it stopped)")]
    Migration(#[from] MigrationError),
    #[error("data keys: {0}")]
    Keys(String),
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

impl From<ExportError> for PrivacyError {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::NotFound(id) => PrivacyError::NotFound(id),
            other => PrivacyError::Export(other),
        }
    }
}

/// The database of `data_dir`, which must exist (these commands never start an empty one).
fn existing_database(data_dir: &Path) -> Result<PathBuf, PrivacyError> {
    let db = database_path(data_dir);
    if !db.is_file() {
        return Err(PrivacyError::NoDatabase(db.display().to_string()));
    }
    Ok(db)
}

fn customer_id(raw: &str) -> Result<String, PrivacyError> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|u| u.to_string())
        .map_err(|_| PrivacyError::InvalidId(raw.to_string()))
}

/// Runs one `crm-local privacy` command over `data_dir`.
pub async fn run(data_dir: &Path, action: PrivacyAction) -> Result<(), PrivacyError> {
    let db = existing_database(data_dir)?;
    match action {
        PrivacyAction::Erase { customer } => {
            let runtime = LocalRuntime::open(&db, BUILT_IN_TEMPLATE)?;
            let erased = erase(&runtime, &db, &customer).await?;
            println!("erased customer {}", erased.customer_id);
            if erased.plain_events_erased > 0 {
                println!(
                    "{} of their events from before encryption at rest rewritten as [erased]",
                    erased.plain_events_erased
                );
            }
            Ok(())
        }
        PrivacyAction::Export { customer, out } => {
            let runtime = LocalRuntime::open(&db, BUILT_IN_TEMPLATE)?;
            let summary = match &out {
                Some(path) => {
                    let io = |source| PrivacyError::Io {
                        path: path.display().to_string(),
                        source,
                    };
                    // Written aside and renamed, so a failed export leaves no partial file.
                    let partial = path.with_extension("partial");
                    // The export is personal data: its owner's alone (mode 0600 from the start).
                    let file = create_private_file(&partial, Create::Replace).map_err(io)?;
                    let mut writer = std::io::BufWriter::new(file);
                    let summary = export(&runtime, &customer, &mut writer).await;
                    let summary = match summary.and_then(|s| writer.flush().map(|_| s).map_err(io)) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = std::fs::remove_file(&partial);
                            return Err(e);
                        }
                    };
                    std::fs::rename(&partial, path).map_err(io)?;
                    summary
                }
                None => {
                    let mut stdout = std::io::BufWriter::new(std::io::stdout());
                    let summary = export(&runtime, &customer, &mut stdout).await?;
                    writeln!(stdout)
                        .and_then(|_| stdout.flush())
                        .map_err(|source| PrivacyError::Io {
                            path: "stdout".into(),
                            source,
                        })?;
                    summary
                }
            };
            eprintln!(
                "exported customer {}: {} events in {} streams{}",
                customer.trim(),
                summary.events,
                summary.streams,
                out.map(|p| format!(" to {}", p.display())).unwrap_or_default()
            );
            Ok(())
        }
        PrivacyAction::Migrate => {
            let report = migrate(data_dir).await?;
            println!(
                "events: {} scanned, {} encrypted, {} erased, {} with plain personal data but no customer (left)",
                report.events.scanned, report.events.encrypted, report.events.erased, report.events.without_customer
            );
            println!("data keys created: {}", report.events.keys_created);
            println!(
                "customer snapshots with plain state dropped: {}; receipts sealed: {}",
                report.snapshots_dropped, report.receipts_sealed
            );
            Ok(())
        }
    }
}

/// What `privacy erase` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erased {
    pub customer_id: String,
    /// Events of theirs stored before encryption whose plain personal
    /// fields were rewritten as `[erased]` (deleting the key cannot reach them).
    pub plain_events_erased: usize,
}

/// Erases `customer` as `DELETE /customers/{id}` does, then delivers what
/// that appended (journeys exit, projections and the mail sink are
/// redacted), then rewrites as `[erased]` the plain personal fields of
/// their events stored before encryption (which the API cannot reach), drops
/// their plain snapshot and seals their plain receipts as `[erased]`, and
/// last truncates the WAL (decision 0040). `db` is the runtime's database file.
pub async fn erase(runtime: &LocalRuntime, db: &Path, customer: &str) -> Result<Erased, PrivacyError> {
    let id = customer_id(customer)?;
    let customers = CustomerService::new(runtime.command_store(), runtime.clock.clone())
        .with_identifiers(runtime.identifiers.clone());
    let meta = CommandMeta::new(Actor::system("privacy-cli"));
    erase_customer(&customers, runtime.keys.as_ref(), &runtime.identifiers, &id, &meta).await?;
    runtime.bus.settle().await?;
    let streams = customer_streams(runtime.docs.as_ref(), &id).await?;
    let raw = Db::open(db, "")?;
    let report = migrate_streams(
        runtime.stored_events.as_ref(),
        &SqliteRewriter(raw.clone()),
        runtime.keys.as_ref(),
        &streams,
    )
    .await?;
    drop_plain_snapshots(&raw, Some(&id)).await?;
    seal_plain_receipts(&raw, &runtime.stored_events, runtime.keys.as_ref(), Some(&id)).await?;
    // What those rewrote leaves no older copy in the WAL (the bus's settle
    // checkpointed what the erasure's events redacted).
    raw.truncate_wal().await?;
    Ok(Erased {
        customer_id: id,
        plain_events_erased: report.erased,
    })
}

/// Writes the export to a blocking writer (a file, standard output).
struct WriterSink<'a>(&'a mut (dyn Write + Send));

#[async_trait]
impl ExportSink for WriterSink<'_> {
    async fn write(&mut self, chunk: String) -> Result<(), ExportError> {
        self.0
            .write_all(chunk.as_bytes())
            .map_err(|e| ExportError::Write(e.to_string()))
    }
}

/// Writes `customer`'s export (as `GET /customers/{id}/export` answers it) to `out`.
pub async fn export(
    runtime: &LocalRuntime,
    customer: &str,
    out: &mut (dyn Write + Send),
) -> Result<ExportSummary, PrivacyError> {
    let id = customer_id(customer)?;
    let customers = CustomerService::new(runtime.events.clone(), runtime.clock.clone());
    let mut sink = WriterSink(out);
    Ok(export_customer(&customers, runtime.docs.as_ref(), &id, &mut sink).await?)
}

/// What `privacy migrate` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub events: crm_core::privacy::migrate::MigrationReport,
    /// Customer snapshots whose state was plain: dropped (the stream is folded again).
    pub snapshots_dropped: usize,
    /// Command receipts whose plain body was sealed under its customer's key (or erased).
    pub receipts_sealed: usize,
}

/// Rewrites one event row's data in place (the migration's only write to `events`).
struct SqliteRewriter(Db);

#[async_trait]
impl StoredEventRewriter for SqliteRewriter {
    async fn rewrite_data(&self, event: &EventEnvelope, data: &serde_json::Value) -> Result<(), StoreError> {
        let (event_id, data) = (event.event_id.to_string(), data.to_string());
        self.0
            .run(move |conn| {
                let n = conn
                    .execute("UPDATE events SET data = ?1 WHERE event_id = ?2", [&data, &event_id])
                    .map_err(sql)?;
                if n == 1 {
                    Ok(())
                } else {
                    Err(StoreError::Failed(format!("event {event_id} is not stored")))
                }
            })
            .await
    }
}

/// `crm-local privacy migrate`: the stored events (see
/// [`crm_core::privacy::migrate`]), then customer snapshots whose state is
/// plain (dropped) and receipts whose body is plain (sealed). Idempotent.
pub async fn migrate(data_dir: &Path) -> Result<MigrateReport, PrivacyError> {
    let db = existing_database(data_dir)?;
    let stored = SqliteEventStore::open(&db)?;
    let data_dir = DataDir::open(data_dir).map_err(|e| PrivacyError::Keys(format!("{}: {e}", data_dir.display())))?;
    let master = load_or_create_master_key(&data_dir).map_err(|e| PrivacyError::Keys(e.to_string()))?;
    let keys = SqliteKeyStore::open(&db, master).map_err(|e| PrivacyError::Keys(e.to_string()))?;
    let raw = Db::open(&db, "")?;
    let events = migrate_events(&stored, &SqliteRewriter(raw.clone()), &keys).await?;

    let snapshots_dropped = drop_plain_snapshots(&raw, None).await?;
    let receipts_sealed = seal_plain_receipts(&raw, &stored, &keys, None).await?;
    Ok(MigrateReport {
        events,
        snapshots_dropped,
        receipts_sealed,
    })
}

/// Drops the customer snapshots whose state is stored plain (all of them,
/// or only `only`'s): they are a cache, and the stream is folded again.
async fn drop_plain_snapshots(raw: &Db, only: Option<&str>) -> Result<usize, StoreError> {
    let pattern = match only {
        Some(customer) => format!("customer-{customer}"),
        None => "customer-%".to_string(),
    };
    raw.run(move |conn| {
        let plain: Vec<String> = {
            let mut s = conn
                .prepare("SELECT stream_id, state FROM snapshots WHERE stream_id LIKE ?1")
                .map_err(sql)?;
            let rows = s
                .query_map([&pattern], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(sql)?;
            let mut plain = Vec::new();
            for row in rows {
                let (stream, state) = row.map_err(sql)?;
                let sealed = serde_json::from_str::<serde_json::Value>(&state)
                    .ok()
                    .and_then(|v| v.as_str().map(is_encrypted))
                    .unwrap_or(false);
                if !sealed {
                    plain.push(stream);
                }
            }
            plain
        };
        for stream in &plain {
            conn.execute("DELETE FROM snapshots WHERE stream_id = ?1", [stream])
                .map_err(sql)?;
        }
        Ok::<_, StoreError>(plain.len())
    })
    .await
}

/// Seals the receipts whose body is stored plain (all of them, or only
/// those about `only`), page by page; returns how many.
async fn seal_plain_receipts(
    raw: &Db,
    stored: &SqliteEventStore,
    keys: &dyn KeyStore,
    only: Option<&str>,
) -> Result<usize, PrivacyError> {
    let mut sealed_count = 0;
    let mut after = String::new();
    loop {
        let from = after.clone();
        let page: Vec<(String, String)> = raw
            .run(move |conn| {
                let mut s = conn
                    .prepare("SELECT key, body FROM receipts WHERE key > ?1 ORDER BY key LIMIT 500")
                    .map_err(sql)?;
                let rows = s
                    .query_map([&from], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                    .map_err(sql)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql)
            })
            .await?;
        let Some((last, _)) = page.last() else {
            return Ok(sealed_count);
        };
        after = last.clone();
        for (key, body) in page {
            let Ok(body) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            if let Some(customer) = only {
                if plain_receipt_customer(stored, &body).await?.as_deref() != Some(customer) {
                    continue;
                }
            }
            if let Some(sealed) = seal_plain_receipt(stored, keys, &body).await? {
                let text = sealed.to_string();
                raw.run(move |conn| {
                    conn.execute("UPDATE receipts SET body = ?1 WHERE key = ?2", [&text, &key])
                        .map_err(sql)
                })
                .await?;
                sealed_count += 1;
            }
        }
    }
}
