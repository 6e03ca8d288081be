//! Read models over SQLite: the local runtime's adapter of
//! `crm_core::ports::ReadModelStore`.

use crate::adapters::db::{failed, sql, Db};
use async_trait::async_trait;
use crm_core::ports::{Commit, CommitError, ReadModelStore, ReadOp, StoreError};
use crm_core::read_model_adapter::{check_commit_sizes, single_commit};
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use std::collections::HashMap;
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
            db: Db::open(path, SCHEMA)?.with_page_cache_kib(16 * 1024)?,
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

    /// Checkpoints the WAL into the database file and truncates it
    /// ([`Db::truncate_wal`]): after a rebuild, so the documents it replaced
    /// (stored plain before decision 0045) leave no copy in the WAL;
    /// `secure_delete` zeroes them in the database file.
    pub async fn truncate_wal(&self) -> Result<crate::adapters::db::WalCheckpoint, StoreError> {
        self.db.truncate_wal().await
    }
}

fn checkpoint_of(conn: &rusqlite::Connection, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT version FROM checkpoints WHERE consumer = ?1 AND stream_id = ?2")
        .map_err(sql)?
        .query_row(params![consumer, stream_id], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    Ok(v.unwrap_or(0) as u64)
}

/// Puts (`Some`) or deletes (`None`) one document inside the caller's transaction.
/// One document as stored, inside the commit's transaction.
fn read_doc(
    tx: &rusqlite::Transaction<'_>,
    consumer: &str,
    partition: &str,
    sort: &str,
) -> Result<Option<serde_json::Value>, CommitError> {
    let body: Option<String> = tx
        .prepare_cached("SELECT body FROM read_models WHERE consumer = ?1 AND partition = ?2 AND sort = ?3")
        .map_err(sql)?
        .query_row(params![consumer, partition, sort], |row| row.get(0))
        .optional()
        .map_err(sql)?;
    match body {
        Some(body) => Ok(Some(serde_json::from_str(&body).map_err(failed)?)),
        None => Ok(None),
    }
}

fn write_doc(
    tx: &rusqlite::Transaction<'_>,
    consumer: &str,
    partition: &str,
    sort: &str,
    body: Option<&serde_json::Value>,
) -> Result<(), CommitError> {
    match body {
        Some(body) => {
            let body = serde_json::to_string(body).map_err(failed)?;
            tx.prepare_cached(
                "INSERT INTO read_models (consumer, partition, sort, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (consumer, partition, sort) DO UPDATE SET body = excluded.body",
            )
            .map_err(sql)?
            .execute(params![consumer, partition, sort, body])
            .map_err(sql)?;
        }
        None => {
            tx.prepare_cached("DELETE FROM read_models WHERE consumer = ?1 AND partition = ?2 AND sort = ?3")
                .map_err(sql)?
                .execute(params![consumer, partition, sort])
                .map_err(sql)?;
        }
    }
    Ok(())
}

#[async_trait]
impl ReadModelStore for SqliteReadModels {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        let (consumer, stream_id) = (consumer.to_string(), stream_id.to_string());
        self.db
            .run_quick(move |conn| checkpoint_of(conn, &consumer, &stream_id))
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
        self.commit_all(single_commit(consumer, stream_id, expected, new, ops))
            .await
    }

    /// Every commit in one transaction: all or nothing. Each checkpoint is
    /// checked in order against the one before it, and each document and
    /// checkpoint written once, as it stands after the last commit.
    async fn commit_all(&self, commits: Vec<Commit>) -> Result<(), CommitError> {
        check_commit_sizes(&commits)?;
        self.db
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql)?;
                let mut checkpoints: HashMap<(String, String), u64> = HashMap::new();
                // Each document's operations merged into one (`ReadOp::then`):
                // written once, as the last commit leaves it.
                let mut docs: HashMap<(String, String, String), ReadOp> = HashMap::new();
                for c in commits {
                    let key = (c.consumer, c.stream_id);
                    let current = match checkpoints.get(&key) {
                        Some(v) => *v,
                        None => checkpoint_of(&tx, &key.0, &key.1)?,
                    };
                    if current != c.expected {
                        return Err(CommitError::Conflict {
                            consumer: key.0,
                            stream_id: key.1,
                            expected: c.expected,
                        });
                    }
                    for op in c.idempotent.into_iter().chain(c.ops) {
                        let (partition, sort) = op.key();
                        let doc = (key.0.clone(), partition.to_string(), sort.to_string());
                        let merged = match docs.remove(&doc) {
                            Some(before) => before.then(op),
                            None => op,
                        };
                        docs.insert(doc, merged);
                    }
                    checkpoints.insert(key, c.new);
                }
                for ((consumer, partition, sort), op) in docs {
                    // An add reads the document inside the transaction.
                    let before = match op {
                        ReadOp::Add { .. } => read_doc(&tx, &consumer, &partition, &sort)?,
                        ReadOp::Put { .. } | ReadOp::Delete { .. } => None,
                    };
                    write_doc(&tx, &consumer, &partition, &sort, op.apply(before).as_ref())?;
                }
                for ((consumer, stream_id), version) in checkpoints {
                    tx.prepare_cached(
                        "INSERT INTO checkpoints (consumer, stream_id, version) VALUES (?1, ?2, ?3)
                         ON CONFLICT (consumer, stream_id) DO UPDATE SET version = excluded.version",
                    )
                    .map_err(sql)?
                    .execute(params![consumer, stream_id, version as i64])
                    .map_err(sql)?;
                }
                tx.commit().map_err(sql)?;
                Ok(())
            })
            .await
    }

    async fn checkpoints(&self, keys: &[(String, String)]) -> Result<Vec<u64>, StoreError> {
        let keys = keys.to_vec();
        self.db
            .run(move |conn| {
                keys.iter()
                    .map(|(consumer, stream)| checkpoint_of(conn, consumer, stream))
                    .collect()
            })
            .await
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let (c, p, s) = (consumer.to_string(), partition.to_string(), sort.to_string());
        self.db
            .run_quick(move |conn| {
                let body: Option<String> = conn
                    .prepare_cached("SELECT body FROM read_models WHERE consumer = ?1 AND partition = ?2 AND sort = ?3")
                    .map_err(sql)?
                    .query_row(params![c, p, s], |r| r.get(0))
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
                         ORDER BY sort LIMIT (0 + ?5)",
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
