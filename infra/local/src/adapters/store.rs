//! The event store over SQLite (bundled, WAL): the local runtime's adapter of
//! `crm_core::ports::EventStore`.
//!
//! Appends are committed in groups (issue 22, decision 0090): every append
//! goes to one writer thread, which takes all the appends waiting when it is
//! free and commits them in one transaction. Each append runs in its own
//! savepoint, so it keeps its own optimistic-concurrency check, reservation
//! and receipt checks and its own result: a conflict rolls back that append
//! only. An append waits for the group's commit before it is answered, so
//! nothing is answered that is not on disk (as far as `synchronous=NORMAL`
//! puts it there). One append alone is committed at once; concurrent ones
//! share a commit (one WAL write of the pages they touch, one lock).

use crate::adapters::db::{failed, sql, Db};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::event::EventEnvelope;
use crm_core::ports::*;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;
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
    writer: Arc<GroupWriter>,
}

/// The most appends one group commit takes.
pub const MAX_GROUP: usize = 256;

/// An append waiting for the writer, and where its answer goes.
struct PendingAppend {
    request: AppendRequest,
    receipts: Vec<CommandReceipt>,
    answer: oneshot::Sender<Result<Appended, AppendError>>,
}

/// The queue to the writer thread; the thread ends when the last store
/// holding it is dropped.
struct GroupWriter {
    queue: mpsc::Sender<PendingAppend>,
    groups: std::sync::atomic::AtomicU64,
    appends: std::sync::atomic::AtomicU64,
}

/// How many group commits the writer made and how many appends they held
/// (the bench's figure of how much the groups share).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommits {
    pub groups: u64,
    pub appends: u64,
}

impl GroupWriter {
    fn start(db: Db) -> Result<Arc<Self>, StoreError> {
        let (queue, waiting) = mpsc::channel::<PendingAppend>();
        let writer = Arc::new(GroupWriter {
            queue,
            groups: Default::default(),
            appends: Default::default(),
        });
        let counts = Arc::downgrade(&writer);
        std::thread::Builder::new()
            .name("sqlite-group-commit".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut group = vec![first];
                    while group.len() < MAX_GROUP {
                        match waiting.try_recv() {
                            Ok(next) => group.push(next),
                            Err(_) => break,
                        }
                    }
                    if let Some(counts) = counts.upgrade() {
                        counts.groups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        counts
                            .appends
                            .fetch_add(group.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    let answers = match db.run_here(|conn| Ok::<_, StoreError>(commit_group(conn, group))) {
                        Ok(answers) => answers,
                        Err(_) => continue,
                    };
                    for (answer, result) in answers {
                        // The caller may have gone (its request cancelled): nothing to tell.
                        let _ = answer.send(result);
                    }
                }
            })
            .map_err(|e| failed(format!("could not start the event store's writer: {e}")))?;
        Ok(writer)
    }
}

/// Commits `group` in one transaction, each append in its own savepoint:
/// the answers, in the group's order. An append that fails is rolled back
/// alone; when the transaction cannot begin or commit, every append of the
/// group is answered with that error (none of them is stored).
#[allow(clippy::type_complexity)]
fn commit_group(
    conn: &mut Connection,
    group: Vec<PendingAppend>,
) -> Vec<(
    oneshot::Sender<Result<Appended, AppendError>>,
    Result<Appended, AppendError>,
)> {
    let fail_all = |group: Vec<PendingAppend>, e: StoreError| {
        group
            .into_iter()
            .map(|p| (p.answer, Err(AppendError::Store(e.clone()))))
            .collect()
    };
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(group, sql(e)),
    };
    let mut answers = Vec::with_capacity(group.len());
    for PendingAppend {
        request,
        receipts,
        answer,
    } in group
    {
        let result = tx
            .savepoint()
            .map_err(|e| AppendError::Store(sql(e)))
            .and_then(|savepoint| {
                let appended = append_in(&savepoint, request, receipts)?;
                savepoint.commit().map_err(sql)?;
                Ok(appended)
            });
        answers.push((answer, result));
    }
    match tx.commit() {
        Ok(()) => answers,
        Err(e) => {
            let e = sql(e);
            answers
                .into_iter()
                .map(|(answer, result)| (answer, result.and(Err(AppendError::Store(e.clone())))))
                .collect()
        }
    }
}

fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl SqliteEventStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(path, SCHEMA)?;
        Ok(SqliteEventStore {
            writer: GroupWriter::start(db.clone())?,
            db,
        })
    }

    /// The group commits made so far by this store's writer.
    pub fn group_commits(&self) -> GroupCommits {
        GroupCommits {
            groups: self.writer.groups.load(std::sync::atomic::Ordering::Relaxed),
            appends: self.writer.appends.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Hands `request` to the writer and waits for its group's commit.
    async fn append_grouped(
        &self,
        request: AppendRequest,
        receipts: Vec<CommandReceipt>,
    ) -> Result<Appended, AppendError> {
        let (answer, answered) = oneshot::channel();
        self.writer
            .queue
            .send(PendingAppend {
                request,
                receipts,
                answer,
            })
            .map_err(|_| failed("the event store's writer has stopped"))?;
        answered
            .await
            .map_err(|_| AppendError::Store(failed("the event store's writer stopped before answering")))?
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
            "SELECT {EVENT_COLUMNS}, position FROM events WHERE position > ?1 ORDER BY position LIMIT (0 + ?2)"
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

/// Appends `request` with `receipts` (besides its own) inside the
/// transaction or savepoint `tx` (which the caller commits).
fn append_in(tx: &Connection, request: AppendRequest, receipts: Vec<CommandReceipt>) -> Result<Appended, AppendError> {
    check_receipts(&request, &receipts)?;
    let current = stream_version(tx, &request.stream_id)?;
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
        if let Some(existing) = get_receipt(tx, &r.key)? {
            return Err(AppendError::DuplicateCommand(Box::new(existing)));
        }
    }
    for change in &request.reservations {
        let holder = reservation_owner(tx, change.key())?;
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
                    "SELECT {EVENT_COLUMNS} FROM events WHERE stream_id = ?1 AND version > ?2 ORDER BY version LIMIT (0 + ?3)"
                ),
                params![stream_id, after as i64, limit],
            )
        })
        .await
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.append_grouped(request, Vec::new()).await
    }

    async fn append_with_receipts(
        &self,
        request: AppendRequest,
        receipts: Vec<CommandReceipt>,
    ) -> Result<Appended, AppendError> {
        self.append_grouped(request, receipts).await
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
                     ORDER BY stream_id LIMIT (0 + ?3)",
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

#[cfg(test)]
mod group_commit_tests {
    use super::*;
    use crm_core::store_contract::event;

    fn append(stream: &str, expected: ExpectedVersion) -> AppendRequest {
        AppendRequest {
            stream_id: stream.into(),
            expected,
            events: vec![event(stream, 1)],
            reservations: vec![],
            receipt: None,
        }
    }

    fn pending(request: AppendRequest) -> (PendingAppend, oneshot::Receiver<Result<Appended, AppendError>>) {
        let (answer, answered) = oneshot::channel();
        (
            PendingAppend {
                request,
                receipts: Vec::new(),
                answer,
            },
            answered,
        )
    }

    /// One group: two appends to a new stream that both expect it absent
    /// (the second conflicts, alone), a third that follows the first, and
    /// one to another stream. What the group answers is what one writer
    /// doing them one by one would answer, and only the answered appends are stored.
    #[tokio::test]
    async fn a_conflict_in_a_group_fails_only_its_own_append() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteEventStore::open(&dir.path().join("events.db")).expect("open");
        let requests = [
            append("customer-1", ExpectedVersion::NoStream),
            append("customer-1", ExpectedVersion::NoStream),
            append("customer-1", ExpectedVersion::Exactly(1)),
            append("customer-2", ExpectedVersion::Any),
        ];
        let (group, answers): (Vec<_>, Vec<_>) = requests.into_iter().map(pending).unzip();
        let done = store
            .db
            .run_here(|conn| Ok::<_, StoreError>(commit_group(conn, group)))
            .expect("group");
        for (answer, result) in done {
            answer.send(result).expect("receiver waits");
        }
        let mut results = Vec::new();
        for answered in answers {
            results.push(answered.await.expect("answered"));
        }
        assert_eq!(results[0].as_ref().map(|a| a.version).ok(), Some(1));
        assert!(
            matches!(results[1], Err(AppendError::Conflict { actual: Some(1), .. })),
            "{:?}",
            results[1]
        );
        assert_eq!(results[2].as_ref().map(|a| a.version).ok(), Some(2));
        assert_eq!(results[3].as_ref().map(|a| a.version).ok(), Some(1));
        let one = store.load("customer-1").await.expect("load");
        let stored: Vec<Uuid> = one.events.iter().map(|e| e.event_id).collect();
        let answered: Vec<Uuid> = [&results[0], &results[2]]
            .iter()
            .map(|r| r.as_ref().expect("appended").events[0].event_id)
            .collect();
        assert_eq!(stored, answered);
        assert_eq!(store.load("customer-2").await.expect("load").version, 1);
    }

    /// Many writers at once: every stream ends with exactly the appends that
    /// were answered as stored, numbered without gaps, and the writer
    /// counted every append it took.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_keep_their_own_checks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteEventStore::open(&dir.path().join("events.db")).expect("open");
        let mut tasks = Vec::new();
        for writer in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let stream = format!("customer-{}", writer % 4);
                let mut conflicts = 0u32;
                loop {
                    let current = store.load(&stream).await.expect("load").version;
                    let expected = if current == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exactly(current)
                    };
                    match store.append(append(&stream, expected)).await {
                        Ok(appended) => return (appended.events[0].event_id, conflicts),
                        Err(AppendError::Conflict { .. }) => conflicts += 1,
                        Err(other) => panic!("append failed: {other}"),
                    }
                }
            }));
        }
        let mut stored_ids = std::collections::BTreeSet::new();
        for task in tasks {
            let (id, _) = task.await.expect("writer");
            stored_ids.insert(id);
        }
        let mut found = std::collections::BTreeSet::new();
        for stream in 0..4 {
            let loaded = store.load(&format!("customer-{stream}")).await.expect("load");
            assert_eq!(loaded.version, 16);
            let versions: Vec<u64> = loaded.events.iter().map(|e| e.version).collect();
            assert_eq!(versions, (1..=16).collect::<Vec<_>>());
            found.extend(loaded.events.iter().map(|e| e.event_id));
        }
        assert_eq!(found, stored_ids);
        let commits = store.group_commits();
        assert!(commits.appends >= 64, "{commits:?}");
        assert!(commits.groups >= 1 && commits.groups <= commits.appends, "{commits:?}");
    }
}
