//! Read models over SQLite: the local runtime's adapter of
//! `crm_core::ports::ReadModelStore`.

use crate::db::{failed, sql, Db};
use async_trait::async_trait;
use crm_core::ports::{check_commit_size, CommitError, ReadModelStore, ReadOp, StoreError};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS read_models (
    consumer  TEXT NOT NULL,
    partition TEXT NOT NULL,
    sort      TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (consumer, partition, sort)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    consumer  TEXT    NOT NULL,
    stream_id TEXT    NOT NULL,
    version   INTEGER NOT NULL,
    PRIMARY KEY (consumer, stream_id)
) WITHOUT ROWID;
";

#[derive(Clone)]
pub struct SqliteReadModels {
    db: Db,
}

impl SqliteReadModels {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(SqliteReadModels {
            db: Db::open(path, SCHEMA)?,
        })
    }

    /// Forgets a consumer: its documents and its checkpoints (before a
    /// rebuild from the event store). Returns how many documents went.
    pub async fn clear(&self, consumer: &str) -> Result<usize, StoreError> {
        let consumer = consumer.to_string();
        self.db
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql)?;
                let docs = tx
                    .execute("DELETE FROM read_models WHERE consumer = ?1", params![consumer])
                    .map_err(sql)?;
                tx.execute("DELETE FROM checkpoints WHERE consumer = ?1", params![consumer])
                    .map_err(sql)?;
                tx.commit().map_err(sql)?;
                Ok(docs)
            })
            .await
    }
}

fn checkpoint_of(conn: &rusqlite::Connection, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT version FROM checkpoints WHERE consumer = ?1 AND stream_id = ?2",
            params![consumer, stream_id],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    Ok(v.unwrap_or(0) as u64)
}

#[async_trait]
impl ReadModelStore for SqliteReadModels {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        let (consumer, stream_id) = (consumer.to_string(), stream_id.to_string());
        self.db
            .run(move |conn| checkpoint_of(conn, &consumer, &stream_id))
            .await
    }

    async fn commit(
        &self,
        consumer: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        ops: Vec<ReadOp>,
    ) -> Result<(), CommitError> {
        check_commit_size(&ops)?;
        let (consumer, stream_id) = (consumer.to_string(), stream_id.to_string());
        self.db
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql)?;
                if checkpoint_of(&tx, &consumer, &stream_id)? != expected {
                    return Err(CommitError::Conflict {
                        consumer,
                        stream_id,
                        expected,
                    });
                }
                for op in ops {
                    match op {
                        ReadOp::Put { partition, sort, body } => {
                            let body = serde_json::to_string(&body).map_err(failed)?;
                            tx.execute(
                                "INSERT INTO read_models (consumer, partition, sort, body) VALUES (?1, ?2, ?3, ?4)
                                 ON CONFLICT (consumer, partition, sort) DO UPDATE SET body = excluded.body",
                                params![consumer, partition, sort, body],
                            )
                            .map_err(sql)?;
                        }
                        ReadOp::Delete { partition, sort } => {
                            tx.execute(
                                "DELETE FROM read_models WHERE consumer = ?1 AND partition = ?2 AND sort = ?3",
                                params![consumer, partition, sort],
                            )
                            .map_err(sql)?;
                        }
                    }
                }
                tx.execute(
                    "INSERT INTO checkpoints (consumer, stream_id, version) VALUES (?1, ?2, ?3)
                     ON CONFLICT (consumer, stream_id) DO UPDATE SET version = excluded.version",
                    params![consumer, stream_id, new as i64],
                )
                .map_err(sql)?;
                tx.commit().map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let (c, p, s) = (consumer.to_string(), partition.to_string(), sort.to_string());
        self.db
            .run(move |conn| {
                let body: Option<String> = conn
                    .query_row(
                        "SELECT body FROM read_models WHERE consumer = ?1 AND partition = ?2 AND sort = ?3",
                        params![c, p, s],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                body.map(|b| serde_json::from_str(&b).map_err(failed)).transpose()
            })
            .await
    }

    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let (c, p, pre) = (consumer.to_string(), partition.to_string(), prefix.to_string());
        let after = after.map(str::to_string).unwrap_or_default();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.db
            .run(move |conn| {
                // substr() compares the prefix exactly (LIKE would treat % and _ as wildcards).
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT sort, body FROM read_models
                         WHERE consumer = ?1 AND partition = ?2 AND substr(sort, 1, length(?3)) = ?3 AND sort > ?4
                         ORDER BY sort LIMIT ?5",
                    )
                    .map_err(sql)?;
                let rows = stmt
                    .query_map(params![c, p, pre, after, limit], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .map_err(sql)?;
                let mut out = Vec::new();
                for row in rows {
                    let (sort, body) = row.map_err(sql)?;
                    out.push((sort, serde_json::from_str(&body).map_err(failed)?));
                }
                Ok(out)
            })
            .await
    }
}
