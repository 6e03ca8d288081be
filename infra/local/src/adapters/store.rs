//! The event store over SQLite (bundled, WAL): the local runtime's adapter of
//! `crm_core::ports::EventStore`.

use crate::adapters::db::{failed, sql, Db};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::event::EventEnvelope;
use crm_core::ports::*;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use uuid::Uuid;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream_id      TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_id       TEXT    NOT NULL UNIQUE,
    type           TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    customer_id    TEXT,
    occurred_at    TEXT    NOT NULL,
    recorded_at    TEXT    NOT NULL,
    causation_id   TEXT,
    correlation_id TEXT    NOT NULL,
    actor          TEXT    NOT NULL,
    data           TEXT    NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE TABLE IF NOT EXISTS reservations (
    key   TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    key          TEXT PRIMARY KEY,
    request_hash TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT    NOT NULL,
    recorded_at  TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id    TEXT PRIMARY KEY,
    version      INTEGER NOT NULL,
    state_schema INTEGER NOT NULL,
    state        TEXT    NOT NULL
);
";

/// SQLite-backed event store.
#[derive(Clone)]
pub struct SqliteEventStore {
    db: Db,
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl SqliteEventStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(SqliteEventStore {
            db: Db::open(path, SCHEMA)?,
        })
    }

    /// Events after global position `after`, with their positions: the
    /// local outbox that the bus tails. When there are none (the bus caught
    /// up), an erasure's pending checkpoint runs
    /// ([`Db::checkpoint_after_erasure`]): what the erasure rewrote is then
    /// on disk in its final form only. A checkpoint that fails is logged and
    /// tried at the next empty read.
    pub async fn read_after(&self, after: i64, limit: usize) -> Result<Vec<(i64, EventEnvelope)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let events = self.read(move |conn| events_after(conn, after, limit)).await?;
        if events.is_empty() {
            if let Err(e) = self.db.checkpoint_after_erasure().await {
                tracing::warn!(error = %e, "WAL checkpoint after an erasure failed; tried again when the bus is next idle");
            }
        }
        Ok(events)
    }

    /// The position of the newest stored event (0 when empty).
    pub async fn head_position(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            conn.query_row("SELECT COALESCE(MAX(position), 0) FROM events", [], |r| r.get(0))
                .map_err(sql)
        })
        .await
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.db.run(f).await
    }
}

const EVENT_COLUMNS: &str = "event_id, stream_id, version, type, schema_version, customer_id, occurred_at, \
     recorded_at, causation_id, correlation_id, actor, data";

fn row_to_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<EventEnvelope, StoreError>> {
    let get_uuid = |s: String| Uuid::parse_str(&s).map_err(failed);
    let get_time = |s: String| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(failed)
    };
    let event_id: String = row.get(0)?;
    let occurred: String = row.get(6)?;
    let recorded: String = row.get(7)?;
    let causation: Option<String> = row.get(8)?;
    let correlation: String = row.get(9)?;
    let data: String = row.get(11)?;
    let version: i64 = row.get(2)?;
    let schema_version: i64 = row.get(4)?;
    let (stream_id, event_type, customer_id, actor): (String, String, Option<String>, String) =
        (row.get(1)?, row.get(3)?, row.get(5)?, row.get(10)?);
    Ok((|| {
        Ok(EventEnvelope {
            event_id: get_uuid(event_id)?,
            stream_id,
            version: u64::try_from(version).map_err(failed)?,
            event_type,
            schema_version: u32::try_from(schema_version).map_err(failed)?,
            customer_id,
            occurred_at: get_time(occurred)?,
            recorded_at: get_time(recorded)?,
            causation_id: causation.map(get_uuid).transpose()?,
            correlation_id: get_uuid(correlation)?,
            actor,
            data: serde_json::from_str(&data).map_err(failed)?,
        })
    })())
}

fn query_events(
    conn: &Connection,
    sql_text: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut stmt = conn.prepare_cached(sql_text).map_err(sql)?;
    let rows = stmt.query_map(params, row_to_event).map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(sql)??);
    }
    Ok(out)
}

/// Events after global position `after`, at most `limit`, in the order they
/// were stored, with their positions.
fn events_after(conn: &Connection, after: i64, limit: i64) -> Result<Vec<(i64, EventEnvelope)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, position FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
        ))
        .map_err(sql)?;
    let rows = stmt
        .query_map(params![after, limit], |r| Ok((row_to_event(r)?, r.get::<_, i64>(12)?)))
        .map_err(sql)?;
    let mut out = Vec::new();
    for row in rows {
        let (event, position) = row.map_err(sql)?;
        out.push((position, event?));
    }
    Ok(out)
}

fn stream_version(conn: &Connection, stream_id: &str) -> Result<u64, StoreError> {
    let v: Option<i64> = conn
        .query_row(
            "SELECT MAX(version) FROM events WHERE stream_id = ?1",
            [stream_id],
            |r| r.get(0),
        )
        .map_err(sql)?;
    Ok(v.unwrap_or(0) as u64)
}

/// A row of `receipts` as read: key, request hash, status, body, recorded at.
type ReceiptRow = (String, String, i64, String, String);

fn receipt_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ReceiptRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn receipt_from_row((key, request_hash, status, body, recorded_at): ReceiptRow) -> Result<CommandReceipt, StoreError> {
    Ok(CommandReceipt {
        key,
        request_hash,
        status: u16::try_from(status).map_err(failed)?,
        body: serde_json::from_str(&body).map_err(failed)?,
        recorded_at: DateTime::parse_from_rfc3339(&recorded_at)
            .map_err(failed)?
            .with_timezone(&Utc),
    })
}

fn get_receipt(conn: &Connection, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
    conn.query_row(
        "SELECT key, request_hash, status, body, recorded_at FROM receipts WHERE key = ?1",
        [key],
        receipt_row,
    )
    .optional()
    .map_err(sql)?
    .map(receipt_from_row)
    .transpose()
}

fn reservation_owner(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    conn.query_row("SELECT owner FROM reservations WHERE key = ?1", [key], |r| r.get(0))
        .optional()
        .map_err(sql)
}

/// Appends `request` with `receipts` (besides its own) in one transaction.
fn append_in(
    conn: &mut Connection,
    request: AppendRequest,
    receipts: Vec<CommandReceipt>,
) -> Result<Appended, AppendError> {
    check_receipts(&request, &receipts)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql)?;
    let current = stream_version(&tx, &request.stream_id)?;
    let base = match request.expected {
        _ if request.events.is_empty() => current,
        ExpectedVersion::Any => current,
        ExpectedVersion::NoStream if current == 0 => 0,
        ExpectedVersion::Exactly(n) if n == current => n,
        expected => {
            return Err(AppendError::Conflict {
                stream_id: request.stream_id,
                expected,
                actual: Some(current),
            })
        }
    };
    for r in request.receipt.iter().chain(&receipts) {
        if let Some(existing) = get_receipt(&tx, &r.key)? {
            return Err(AppendError::DuplicateCommand(Box::new(existing)));
        }
    }
    for change in &request.reservations {
        let holder = reservation_owner(&tx, change.key())?;
        match change {
            ReservationChange::Claim { key, owner } => {
                if holder.as_ref().is_some_and(|h| h != owner) {
                    return Err(AppendError::ReservationTaken { key: key.clone() });
                }
                tx.execute(
                    "INSERT INTO reservations (key, owner) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
                    params![key, owner],
                )
                .map_err(sql)?;
            }
            ReservationChange::Release { key, owner } => {
                if holder.as_ref() != Some(owner) {
                    return Err(AppendError::ReservationTaken { key: key.clone() });
                }
                tx.execute("DELETE FROM reservations WHERE key = ?1", [key])
                    .map_err(sql)?;
            }
        }
    }
    let mut stored = request.events;
    {
        let mut insert = tx
            .prepare_cached(&format!(
                "INSERT INTO events ({EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))
            .map_err(sql)?;
        for (i, e) in stored.iter_mut().enumerate() {
            e.version = base + 1 + i as u64;
            e.stream_id = request.stream_id.clone();
            let data = serde_json::to_string(&e.data).map_err(failed)?;
            insert
                .execute(params![
                    e.event_id.to_string(),
                    e.stream_id,
                    e.version as i64,
                    e.event_type,
                    e.schema_version,
                    e.customer_id,
                    time(&e.occurred_at),
                    time(&e.recorded_at),
                    e.causation_id.map(|c| c.to_string()),
                    e.correlation_id.to_string(),
                    e.actor,
                    data,
                ])
                .map_err(sql)?;
        }
    }
    for r in request.receipt.iter().chain(&receipts) {
        tx.execute(
            "INSERT INTO receipts (key, request_hash, status, body, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                r.key,
                r.request_hash,
                r.status,
                serde_json::to_string(&r.body).map_err(failed)?,
                time(&r.recorded_at)
            ],
        )
        .map_err(sql)?;
    }
    tx.commit().map_err(sql)?;
    let version = base + stored.len() as u64;
    Ok(Appended {
        events: stored,
        version,
    })
}

#[async_trait]
impl EventStore for SqliteEventStore {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        let stream_id = stream_id.to_string();
        self.read(move |conn| {
            let snapshot = conn
                .query_row(
                    "SELECT version, state_schema, state FROM snapshots WHERE stream_id = ?1",
                    [&stream_id],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?)),
                )
                .optional()
                .map_err(sql)?
                .map(|(version, schema, state)| {
                    Ok::<_, StoreError>(Snapshot {
                        stream_id: stream_id.clone(),
                        version: version as u64,
                        state_schema: u32::try_from(schema).map_err(failed)?,
                        state: serde_json::from_str(&state).map_err(failed)?,
                    })
                })
                .transpose()?;
            let after = snapshot.as_ref().map_or(0, |s| s.version as i64);
            let events = query_events(
                conn,
                &format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND version > ?2 ORDER BY version"),
                params![stream_id, after],
            )?;
            let version = events.last().map_or(after as u64, |e| e.version);
            Ok(LoadedStream {
                snapshot,
                events,
                version,
            })
        })
        .await
    }

    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        let stream_id = stream_id.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            query_events(
                conn,
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND version > ?2 ORDER BY version LIMIT ?3"
                ),
                params![stream_id, after as i64, limit],
            )
        })
        .await
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.db.run(move |conn| append_in(conn, request, Vec::new())).await
    }

    async fn append_with_receipts(
        &self,
        request: AppendRequest,
        receipts: Vec<CommandReceipt>,
    ) -> Result<Appended, AppendError> {
        self.db.run(move |conn| append_in(conn, request, receipts)).await
    }

    async fn receipts(&self, keys: &[String]) -> Result<Vec<Option<CommandReceipt>>, StoreError> {
        let keys = keys.to_vec();
        self.read(move |conn| {
            let mut found: std::collections::HashMap<String, CommandReceipt> = std::collections::HashMap::new();
            // One SELECT per 500 keys (SQLite's bound on parameters is larger).
            for chunk in keys.chunks(500) {
                let marks = vec!["?"; chunk.len()].join(", ");
                let mut select = conn
                    .prepare(&format!(
                        "SELECT key, request_hash, status, body, recorded_at FROM receipts WHERE key IN ({marks})"
                    ))
                    .map_err(sql)?;
                let rows = select
                    .query_map(rusqlite::params_from_iter(chunk.iter()), receipt_row)
                    .map_err(sql)?;
                for row in rows {
                    let receipt = receipt_from_row(row.map_err(sql)?)?;
                    found.insert(receipt.key.clone(), receipt);
                }
            }
            Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
        })
        .await
    }

    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        let key = key.to_string();
        self.read(move |conn| get_receipt(conn, &key)).await
    }

    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.read(move |conn| reservation_owner(conn, &key)).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.read(move |conn| {
            conn.execute(
                "INSERT INTO snapshots (stream_id, version, state_schema, state) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(stream_id) DO UPDATE SET version = excluded.version,
                   state_schema = excluded.state_schema, state = excluded.state
                 WHERE excluded.version > snapshots.version",
                params![
                    snapshot.stream_id,
                    snapshot.version as i64,
                    snapshot.state_schema,
                    serde_json::to_string(&snapshot.state).map_err(failed)?
                ],
            )
            .map_err(sql)?;
            Ok(())
        })
        .await
    }

    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        let after: i64 = match after {
            None => 0,
            Some(c) => c.parse().map_err(|_| failed(format!("invalid cursor '{c}'")))?,
        };
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let rows = events_after(conn, after, limit)?;
            let last = rows.last().map_or(after, |(position, _)| *position);
            let events: Vec<EventEnvelope> = rows.into_iter().map(|(_, event)| event).collect();
            let more: bool = conn
                .query_row("SELECT EXISTS(SELECT 1 FROM events WHERE position > ?1)", [last], |r| {
                    r.get(0)
                })
                .map_err(sql)?;
            Ok(EventPage {
                next: more.then(|| last.to_string()),
                events,
            })
        })
        .await
    }
}

/// Retention's deletions (`crm_core::retention`): the only way events leave
/// the table. In one `IMMEDIATE` transaction each, so an append racing a
/// deletion sees the stream before or after it, never half of it.
#[async_trait]
impl EventExpiry for SqliteEventStore {
    async fn streams(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        let (prefix, after) = (prefix.to_string(), after.unwrap_or("").to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT DISTINCT stream_id FROM events
                     WHERE substr(stream_id, 1, length(?1)) = ?1 AND stream_id > ?2
                     ORDER BY stream_id LIMIT ?3",
                )
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![prefix, after, limit], |r| r.get::<_, String>(0))
                .map_err(sql)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql)
        })
        .await
    }

    async fn delete_events(&self, stream_id: &str, versions: &[u64]) -> Result<u64, StoreError> {
        let (stream_id, versions) = (stream_id.to_string(), versions.to_vec());
        self.read(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql)?;
            let newest = stream_version(&tx, &stream_id)?;
            if versions.contains(&newest) {
                return Err(failed(format!(
                    "{stream_id}: the newest event (version {newest}) is never deleted"
                )));
            }
            let mut deleted = 0u64;
            {
                let mut stmt = tx
                    .prepare_cached("DELETE FROM events WHERE stream_id = ?1 AND version = ?2")
                    .map_err(sql)?;
                for v in &versions {
                    let v = i64::try_from(*v).map_err(failed)?;
                    deleted += stmt.execute(params![stream_id, v]).map_err(sql)? as u64;
                }
            }
            tx.commit().map_err(sql)?;
            Ok(deleted)
        })
        .await
    }

    async fn delete_stream(&self, stream_id: &str) -> Result<u64, StoreError> {
        let stream_id = stream_id.to_string();
        self.read(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql)?;
            let deleted = tx
                .execute("DELETE FROM events WHERE stream_id = ?1", [&stream_id])
                .map_err(sql)?;
            tx.execute("DELETE FROM snapshots WHERE stream_id = ?1", [&stream_id])
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(deleted as u64)
        })
        .await
    }
}
