//! The local timers (ARCHITECTURE.md §9): `crm_core::scheduler::Scheduler`
//! over a table in the local database. The runtime fires what is due against
//! its clock (real or virtual) and hands it to the bus as a `TimerFired` event.

use crate::db::{failed, sql, Db};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::ports::StoreError;
use crm_core::scheduler::{Scheduler, SchedulerError, TimerPayload};
use rusqlite::{params, OptionalExtension};
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

impl SqliteScheduler {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(SqliteScheduler {
            db: Db::open(path, SCHEMA)?,
        })
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
