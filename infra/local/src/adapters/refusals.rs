//! The refused-messages log over SQLite (decision 0053): the local
//! runtime's adapter of `crm_core::ingest::refusals::RefusalLog`. One row
//! per refusal in `refused_messages` of the local database; what expired
//! (`expires_at`, a week after the refusal) is deleted on every write and
//! never listed.

use crate::adapters::db::{failed, sql, Db};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use crm_core::ingest::refusals::{Refusal, RefusalLog, RefusalPage, MAX_PAGE};
use crm_core::ports::StoreError;
use rusqlite::params;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS refused_messages (
    source     TEXT    NOT NULL,
    cursor     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    body       TEXT    NOT NULL,
    PRIMARY KEY (source, cursor)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refused_messages_expiry ON refused_messages (expires_at);
";

/// The log in the local database.
#[derive(Clone)]
pub struct SqliteRefusals {
    db: Db,
}

impl SqliteRefusals {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(SqliteRefusals {
            db: Db::open(path, SCHEMA)?,
        })
    }
}

#[async_trait]
impl RefusalLog for SqliteRefusals {
    async fn record(&self, refusal: &Refusal) -> Result<(), StoreError> {
        let body = serde_json::to_string(refusal).map_err(failed)?;
        let (source, cursor, expires_at) = (refusal.source.clone(), refusal.cursor(), refusal.expires_at.timestamp());
        let now = refusal.refused_at.timestamp();
        self.db
            .run(move |conn| {
                let tx = conn.transaction().map_err(sql)?;
                tx.execute("DELETE FROM refused_messages WHERE expires_at <= ?1", params![now])
                    .map_err(sql)?;
                tx.execute(
                    "INSERT OR REPLACE INTO refused_messages (source, cursor, expires_at, body) VALUES (?1, ?2, ?3, ?4)",
                    params![source, cursor, expires_at, body],
                )
                .map_err(sql)?;
                tx.commit().map_err(sql)
            })
            .await
    }

    async fn list(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<RefusalPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let (source, after, now) = (source.to_string(), after.map(str::to_string), now.timestamp());
        let bodies: Vec<String> = self
            .db
            .run(move |conn| {
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT body FROM refused_messages
                         WHERE source = ?1 AND expires_at > ?2 AND (?3 IS NULL OR cursor < ?3)
                         ORDER BY cursor DESC LIMIT (0 + ?4)",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![source, now, after, (limit + 1) as i64], |r| r.get(0))
                    .map_err(sql)?;
                rows.collect::<Result<Vec<String>, _>>().map_err(sql)
            })
            .await?;
        let mut refusals = bodies
            .iter()
            .map(|b| serde_json::from_str::<Refusal>(b).map_err(|e| failed(format!("a refusal is not readable: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let more = refusals.len() > limit;
        refusals.truncate(limit);
        let next_after = if more {
            refusals.last().map(Refusal::cursor)
        } else {
            None
        };
        Ok(RefusalPage { refusals, next_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_sqlite_log_passes_the_contract_on_a_real_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("crm.db");
        let log = SqliteRefusals::open(&path).expect("open");
        crm_core::ingest::refusals::contract::check(Arc::new(log)).await;
        let reopened = SqliteRefusals::open(&path).expect("reopen");
        let kept: i64 = reopened
            .db
            .run(|conn| {
                conn.query_row("SELECT COUNT(*) FROM refused_messages", [], |r| r.get(0))
                    .map_err(sql)
            })
            .await
            .expect("count");
        assert_eq!(kept, 6, "the expired one was deleted on a later write");
    }
}
