//! One SQLite connection shared by the local adapters, used from blocking threads.

use crm_core::ports::StoreError;
use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Nanoseconds spent inside SQLite work on every connection of this process
/// (the bench's profile: how much of the wall time the database was busy).
static BUSY_NANOS: AtomicU64 = AtomicU64::new(0);

/// The total so far of the time spent in SQLite work (see [`BUSY_NANOS`]).
pub fn busy_nanos() -> u64 {
    BUSY_NANOS.load(Ordering::Relaxed)
}

/// A SQLite database file in WAL mode.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

pub fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

/// Busy or locked databases are worth retrying; everything else is not.
pub fn sql(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy) | Some(rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Failed(e.to_string()),
    }
}

impl Db {
    /// Opens (creating if needed) the file at `path` and applies `schema`.
    pub fn open(path: &Path, schema: &str) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
        conn.execute_batch(schema).map_err(sql)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs a short point query `f` (one row by key): right here when the
    /// connection is free, which spares the hop to a blocking thread that
    /// costs more than the query; in a blocking thread (as [`Db::run`])
    /// when someone else holds it.
    pub async fn run_quick<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        match self.try_here(f) {
            Ok(result) => result,
            Err(f) => self.run(f).await,
        }
    }

    /// Runs `f` on the connection if it is free; gives `f` back if not.
    fn try_here<T, E, F>(&self, f: F) -> Result<Result<T, E>, F>
    where
        E: From<StoreError>,
        F: FnOnce(&mut Connection) -> Result<T, E>,
    {
        let mut guard = match self.conn.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::WouldBlock) => return Err(f),
            Err(std::sync::TryLockError::Poisoned(_)) => return Ok(Err(E::from(failed("connection mutex poisoned")))),
        };
        let started = std::time::Instant::now();
        let result = f(&mut guard);
        BUSY_NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(result)
    }

    /// Runs `f` on the connection in a blocking thread.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| failed("connection mutex poisoned"))?;
            let started = std::time::Instant::now();
            let result = f(&mut guard);
            BUSY_NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            result
        })
        .await
        .map_err(|e| E::from(failed(e)))?
    }
}
