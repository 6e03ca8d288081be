//! `crm-local dlq list|show|redrive`: the operator's view of the local dead
//! letters. They hold what was stored (decision 0040): personal fields
//! encrypted under the customer's data key. `show` decrypts them for
//! display only, while the key exists (`[erased]` once the customer was
//! erased); `--stored` shows the letter as the table keeps it. `seal`
//! encrypts the letters parked in clear before that. Redrive hands
//! the letter to its target, which decrypts it as it decrypts stored events.

use crate::adapters::data_dir::database_path;
use crate::adapters::db::{sql, Db};
use crate::cli::open_runtime;
use crate::runtime::bus::TemplateFileError;
use crate::runtime::{LocalRuntime, RuntimeError};
use crm_core::consumer::seal_letter;
use std::path::Path;

#[derive(Debug, clap::Subcommand)]
pub enum DlqAction {
    /// One line per dead letter: id, consumer, when, reason.
    List,
    /// One dead letter, whole, as JSON: its personal fields decrypted for
    /// display while the customer's key exists, [erased] after.
    Show {
        id: i64,
        /// As stored: personal fields encrypted, nothing decrypted.
        #[arg(long)]
        stored: bool,
    },
    /// Seal the letters parked in clear before decision 0040: their personal
    /// fields encrypted under the customer's key, as stored ([erased] when
    /// the customer has none). Idempotent.
    Seal,
    /// Deliver dead letters again; removed when they succeed.
    Redrive {
        /// The letter to redrive.
        #[arg(required_unless_present = "all")]
        id: Option<i64>,
        /// Redrive every letter.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Template(#[from] TemplateFileError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] crm_core::ports::StoreError),
    #[error("no dead letter {0}")]
    NotFound(i64),
    #[error("{failed} of {total} dead letters could not be redriven")]
    RedriveFailed { failed: usize, total: usize },
}

/// Dead letter `id`, whole, as `dlq show` prints it: its payload decrypted
/// for display with the customer's key while it exists, `[erased]` after
/// ([`open_letter`]); with `stored`, as the table keeps it.
/// The same view as `GET /dead-letters/{id}` ([`crm_core::ops::dead_letters::shown`], decision 0085).
pub async fn show(runtime: &LocalRuntime, id: i64, stored: bool) -> Result<serde_json::Value, DlqError> {
    let l = runtime
        .bus
        .dead_letters()
        .get(id)
        .await?
        .ok_or(DlqError::NotFound(id))?;
    let parked = crm_core::ports::ParkedLetter {
        id: l.id.to_string(),
        letter: l.letter,
    };
    Ok(crm_core::ops::dead_letters::shown(runtime.keys.as_ref(), &parked, stored).await?)
}

/// Seals every letter of the runtime's database `db` that holds personal
/// fields in clear ([`seal_letter`]), rewriting it in place, then truncates
/// the WAL (with `secure_delete`, the clear text is then in neither file).
/// Returns how many letters were rewritten.
pub async fn seal_all(runtime: &LocalRuntime, db: &Path) -> Result<usize, DlqError> {
    let raw = Db::open(db, "")?;
    let mut sealed = 0;
    for l in runtime.bus.dead_letters().list().await? {
        let mut payload = l.letter.payload.clone();
        seal_letter(runtime.keys.as_ref(), &mut payload).await?;
        if payload == l.letter.payload {
            continue;
        }
        let (id, text) = (l.id, payload.to_string());
        raw.run(move |conn| {
            conn.execute(
                "UPDATE dead_letters SET payload = ?1 WHERE id = ?2",
                rusqlite::params![text, id],
            )
            .map(|_| ())
            .map_err(sql)
        })
        .await?;
        sealed += 1;
    }
    raw.truncate_wal().await?;
    Ok(sealed)
}

pub async fn run(data_dir: &Path, template: Option<&Path>, action: DlqAction) -> Result<(), DlqError> {
    let runtime = open_runtime::<DlqError>(data_dir, template)?;
    let letters = runtime.bus.dead_letters().list().await?;
    match action {
        DlqAction::List => {
            if letters.is_empty() {
                println!("no dead letters");
            }
            for l in &letters {
                println!(
                    "{}\t{}\t{}\t{}",
                    l.id,
                    l.letter.consumer,
                    l.letter.failed_at.to_rfc3339(),
                    l.letter.reason
                );
            }
        }
        DlqAction::Show { id, stored } => {
            let json = show(&runtime, id, stored).await?;
            println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
        }
        DlqAction::Seal => {
            let sealed = seal_all(&runtime, &database_path(data_dir)).await?;
            println!("{sealed} of {} dead letters sealed", letters.len());
        }
        DlqAction::Redrive { id, all } => {
            let ids: Vec<i64> = if all {
                letters.iter().map(|l| l.id).collect()
            } else {
                id.into_iter().collect()
            };
            let mut failed = 0;
            for id in &ids {
                match runtime.bus.redrive(*id).await {
                    Ok(true) => println!("{id}: redriven"),
                    Ok(false) => {
                        if !all {
                            return Err(DlqError::NotFound(*id));
                        }
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("{id}: {e}");
                    }
                }
            }
            if failed > 0 {
                return Err(DlqError::RedriveFailed {
                    failed,
                    total: ids.len(),
                });
            }
        }
    }
    Ok(())
}
