//! The local timers (ARCHITECTURE.md §9): `crm_core::scheduler::Scheduler`
//! over a table in the local database. The runtime fires what is due against
//! its clock (real or virtual) and hands it to the bus as a `TimerFired` event.
//!
//! Opening the table migrates it (decision 0049): a deferral timer set
//! before decision 0041 held the message request, with the trigger event's
//! personal data in clear; it is rewritten in place into the reference
//! form (same name, same due time), with `secure_delete` on and the WAL
//! checkpointed, so the copy is left in neither file.

use crate::adapters::db::{failed, sql, Db};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::messaging::delivery::MessageTimer;
use crm_core::ports::StoreError;
use crm_core::scheduler::{Scheduler, SchedulerError, TimerKind, TimerPayload};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS timers (
    name    TEXT PRIMARY KEY,
    due_at  TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS timers_due_at ON timers (due_at);
";

/// Fixed-width UTC timestamps, so text order is time order.
fn sortable(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn scheduler_error(e: StoreError) -> SchedulerError {
    match e {
        StoreError::Unavailable(m) => SchedulerError::Unavailable(m),
        other => SchedulerError::Refused(other.to_string()),
    }
}

fn parse(payload: &str) -> Result<TimerPayload, StoreError> {
    serde_json::from_str(payload).map_err(|e| failed(format!("stored timer is unreadable: {e}")))
}

/// Timers in the local database.
#[derive(Clone)]
pub struct SqliteScheduler {
    db: Db,
}

/// What opening the timers table migrated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerMigration {
    /// Message timers read (deferrals and settle checks).
    pub message_timers: usize,
    /// Deferral timers whose data was the request, now a reference.
    pub rewritten: usize,
}

/// Rewrites, in the database at `path`, every deferral timer that holds its
/// request (`MessageTimer::without_request_copy`), in one transaction on a connection
/// of its own (`secure_delete` on, so the old rows are zeroed), then
/// checkpoints the WAL with `TRUNCATE` if anything was rewritten, so the
/// old pages are in neither `crm.db` nor `crm.db-wal`. Other timers and
/// unreadable rows are left alone; a second run rewrites nothing.
pub fn migrate_request_copies(path: &Path) -> Result<TimerMigration, StoreError> {
    let kind = serde_json::to_value(TimerKind::MessageDeferral).map_err(failed)?;
    let kind = kind.as_str().unwrap_or_default().to_string();
    let mut conn = Connection::open(path).map_err(sql)?;
    conn.pragma_update(None, "secure_delete", "ON").map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
    let tx = conn.transaction().map_err(sql)?;
    let mut migration = TimerMigration::default();
    {
        let mut stmt = tx
            .prepare(
                // CASE: an unreadable row is skipped, never an error (AND does not
                // promise to evaluate json_valid first).
                "SELECT name, payload FROM timers
                 WHERE CASE WHEN json_valid(payload) THEN json_extract(payload, '$.kind') END = ?1",
            )
            .map_err(sql)?;
        let rows = stmt
            .query_map([kind], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(sql)?;
        let mut rewrites = Vec::new();
        for row in rows {
            let (name, payload) = row.map_err(sql)?;
            migration.message_timers += 1;
            let Ok(timer) = parse(&payload) else { continue };
            if let Some(migrated) = MessageTimer::without_request_copy(&timer) {
                rewrites.push((name, serde_json::to_string(&migrated).map_err(failed)?));
            }
        }
        for (name, payload) in rewrites {
            tx.execute("UPDATE timers SET payload = ?2 WHERE name = ?1", params![name, payload])
                .map_err(sql)?;
            migration.rewritten += 1;
        }
    }
    tx.commit().map_err(sql)?;
    if migration.rewritten > 0 {
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .map_err(sql)?;
        if busy != 0 {
            tracing::warn!(
                "the WAL could not be truncated after the timers' migration: it will be at the next checkpoint"
            );
        }
        tracing::info!(
            rewritten = migration.rewritten,
            "deferral timers that held their request now reference it (decision 0049)"
        );
    }
    Ok(migration)
}

impl SqliteScheduler {
    /// Opens (creating if needed) the timers table in the database at
    /// `path`, migrating the deferral timers that hold their request
    /// ([`migrate_request_copies`]).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Db::open(path, SCHEMA)?;
        migrate_request_copies(path)?;
        Ok(SqliteScheduler { db })
    }

    /// The timers due at `now` (due time at or before it), earliest first. An
    /// unreadable row is logged and left alone, so it cannot block the others.
    pub async fn due(&self, now: DateTime<Utc>) -> Result<Vec<TimerPayload>, StoreError> {
        let now = sortable(now);
        self.db
            .run(move |conn| {
                let mut stmt = conn
                    .prepare("SELECT payload FROM timers WHERE due_at <= ?1 ORDER BY due_at, name")
                    .map_err(sql)?;
                let rows = stmt.query_map([now], |r| r.get::<_, String>(0)).map_err(sql)?;
                let mut out = Vec::new();
                for row in rows {
                    match parse(&row.map_err(sql)?) {
                        Ok(timer) => out.push(timer),
                        Err(e) => tracing::error!(error = %e, "skipping a due timer"),
                    }
                }
                Ok(out)
            })
            .await
    }

    /// Removes the timer `name`; false if there was none.
    pub async fn remove(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.db
            .run(move |conn| {
                conn.execute("DELETE FROM timers WHERE name = ?1", [name])
                    .map(|n| n > 0)
                    .map_err(sql)
            })
            .await
    }

    /// Removes the timer `timer.name` only if it is still this one (not
    /// rescheduled while it was being delivered); false otherwise.
    pub async fn remove_fired(&self, timer: &TimerPayload) -> Result<bool, StoreError> {
        let timer = timer.clone();
        self.db
            .run(move |conn| {
                let tx = conn.transaction().map_err(sql)?;
                let stored: Option<String> = tx
                    .query_row("SELECT payload FROM timers WHERE name = ?1", [&timer.name], |r| {
                        r.get(0)
                    })
                    .optional()
                    .map_err(sql)?;
                let same = match stored.as_deref().map(parse) {
                    Some(Ok(stored)) => stored == timer,
                    Some(Err(_)) | None => false,
                };
                if same {
                    tx.execute("DELETE FROM timers WHERE name = ?1", [&timer.name])
                        .map_err(sql)?;
                }
                tx.commit().map_err(sql)?;
                Ok(same)
            })
            .await
    }
}

#[async_trait]
impl Scheduler for SqliteScheduler {
    async fn schedule(&self, timer: TimerPayload) -> Result<(), SchedulerError> {
        let payload = serde_json::to_string(&timer)
            .map_err(|e| SchedulerError::Refused(format!("timer {} cannot be serialised: {e}", timer.name)))?;
        self.db
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO timers (name, due_at, payload) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO UPDATE SET due_at = excluded.due_at, payload = excluded.payload",
                    params![timer.name, sortable(timer.due_at), payload],
                )
                .map(|_| ())
                .map_err(sql)
            })
            .await
            .map_err(scheduler_error)
    }

    async fn cancel(&self, name: &str) -> Result<(), SchedulerError> {
        self.remove(name).await.map(|_| ()).map_err(scheduler_error)
    }

    async fn get(&self, name: &str) -> Result<Option<TimerPayload>, SchedulerError> {
        let name = name.to_string();
        self.db
            .run(move |conn| {
                let payload: Option<String> = conn
                    .query_row("SELECT payload FROM timers WHERE name = ?1", [name], |r| r.get(0))
                    .optional()
                    .map_err(sql)?;
                payload.as_deref().map(parse).transpose()
            })
            .await
            .map_err(scheduler_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::data_dir::database_files;
    use chrono::Duration;
    use crm_core::messaging::events::RequestRef;
    use crm_core::scheduler::timer_name;

    const EMAIL: &str = "timer.copy.zq81x7@example.com";

    /// A deferral timer as the channel set them before decision 0041: its
    /// data is the request, with the trigger event (a registration) in it.
    fn deferral_with_request(due_at: DateTime<Utc>) -> TimerPayload {
        TimerPayload {
            name: timer_name(TimerKind::MessageDeferral, &["msg-1"]),
            kind: TimerKind::MessageDeferral,
            stream_id: "message-msg-1".into(),
            customer_id: Some("cus-1".into()),
            due_at,
            set_at_version: 2,
            data: serde_json::json!({
                "message_id": "msg-1",
                "instance_id": "i-1",
                "campaign_id": "welcome",
                "campaign_version": 1,
                "step_id": "send",
                "customer_id": "cus-1",
                "channel": "email",
                "template": "welcome",
                "category": "transactional",
                "data": {"email": EMAIL, "first_name": "Timercopy", "ip": "203.0.113.77"}
            }),
        }
    }

    fn cart_timer(due_at: DateTime<Utc>) -> TimerPayload {
        TimerPayload {
            name: timer_name(TimerKind::CartInactivity, &["cart-1"]),
            kind: TimerKind::CartInactivity,
            stream_id: "cart-1".into(),
            customer_id: Some("cus-1".into()),
            due_at,
            set_at_version: 4,
            data: serde_json::json!({"minutes": 30}),
        }
    }

    /// How many times `needle` occurs in the database's files (the file,
    /// its WAL and its shared-memory index).
    fn occurrences(path: &Path, needle: &str) -> usize {
        database_files(path)
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .map(|bytes| bytes.windows(needle.len()).filter(|w| *w == needle.as_bytes()).count())
            .sum()
    }

    #[tokio::test]
    async fn opening_rewrites_deferral_timers_that_hold_their_request_and_leaves_no_copy_in_the_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crm.db");
        let due = Utc::now() + Duration::hours(8);
        let old = deferral_with_request(due);
        let cart = cart_timer(due);
        {
            let scheduler = SqliteScheduler::open(&path).expect("open");
            scheduler.schedule(old.clone()).await.expect("a v1 deferral");
            scheduler.schedule(cart.clone()).await.expect("a cart timer");
            // A row that is no timer at all: skipped, never an error.
            scheduler
                .db
                .run(|conn| {
                    conn.execute(
                        "INSERT INTO timers (name, due_at, payload) VALUES ('crm-bad', '9999', 'not json')",
                        [],
                    )
                    .map_err(sql)
                })
                .await
                .expect("an unreadable row");
            scheduler.db.truncate_wal().await.expect("checkpoint");
        }
        assert!(occurrences(&path, EMAIL) > 0, "the copy is on disk before");

        let scheduler = SqliteScheduler::open(&path).expect("reopen");
        let migrated = scheduler.get(&old.name).await.expect("get").expect("still set");
        assert_eq!(
            MessageTimer::of(&migrated),
            Some(MessageTimer::Deferral(RequestRef {
                message_id: "msg-1".into(),
                stream_id: crm_core::journey::instance::stream_id("i-1"),
                version: None,
            }))
        );
        assert_eq!(
            TimerPayload {
                data: old.data.clone(),
                ..migrated
            },
            old,
            "same name, due time and version"
        );
        assert_eq!(scheduler.get(&cart.name).await.expect("get"), Some(cart), "untouched");
        assert_eq!(occurrences(&path, EMAIL), 0, "no copy left in crm.db or crm.db-wal");
        assert_eq!(occurrences(&path, "203.0.113.77"), 0);

        // Again: nothing left to rewrite.
        assert_eq!(
            migrate_request_copies(&path).expect("again"),
            TimerMigration {
                message_timers: 1,
                rewritten: 0
            }
        );
        // Still due when it was, and fired as a reference.
        let fired = scheduler.due(due).await.expect("due");
        assert_eq!(fired.len(), 2);
        assert!(fired.iter().all(|t| !t.data.to_string().contains(EMAIL)));
    }

    #[tokio::test]
    async fn a_copy_still_in_the_wal_is_checkpointed_out_of_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crm.db");
        // The runtime's connection stays open (a process killed before its
        // clean close): the v1 row is only in the WAL.
        let scheduler = SqliteScheduler::open(&path).expect("open");
        let old = deferral_with_request(Utc::now() + Duration::hours(3));
        scheduler.schedule(old.clone()).await.expect("a v1 deferral");
        let wal = &database_files(&path)[1];
        assert!(
            std::fs::read(wal)
                .expect("the WAL")
                .windows(EMAIL.len())
                .any(|w| w == EMAIL.as_bytes()),
            "the copy is in the WAL before"
        );

        let migrated = migrate_request_copies(&path).expect("migrate");
        assert_eq!(migrated.rewritten, 1);
        assert_eq!(
            occurrences(&path, EMAIL),
            0,
            "neither the old WAL frame nor the file keeps it"
        );
        let timer = scheduler.get(&old.name).await.expect("get").expect("set");
        assert!(matches!(MessageTimer::of(&timer), Some(MessageTimer::Deferral(_))));
    }
}
