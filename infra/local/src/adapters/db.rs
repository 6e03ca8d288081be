//! One SQLite connection shared by the local adapters, used from blocking threads.
//!
//! Every database file is its owner's alone and forgets what it deletes
//! (issue 16, decision 0040):
//!
//! * the data directory is made (or tightened to) mode 0700 and the database
//!   file made 0600 before SQLite opens it ([`DataDir::prepare_database`]),
//!   so the `-wal` and `-shm` files SQLite creates beside it take the same
//!   mode; files an earlier version left readable by others are tightened;
//! * every connection runs with `secure_delete` on: deleted and overwritten
//!   rows are zeroed in the file, not left in free space;
//! * after an erasure ([`Db::erasure_done`]) the WAL is checkpointed with
//!   `TRUNCATE`, and again whenever the bus finds nothing new to deliver
//!   ([`Db::checkpoint_after_erasure`]) until a checkpoint finds nothing
//!   written since the one before: the old pages the erasure and its
//!   redactions replaced then survive in neither `crm.db` nor `crm.db-wal`.
//!
//! A bound `LIMIT` is written `LIMIT (0 + ?N)`, never `LIMIT ?N`: SQLite
//! (3.50) plans a bare `LIMIT ?N` with the bound value, so every new binding
//! expires the cached statement and each call parses and plans it again (7%
//! of the API phase's samples, under reading streams; decision 0094,
//! addendum). `tests/sql_limits.rs` holds the sources to this.

use crate::adapters::data_dir::{database_files, private_file, DataDir};
use crm_core::ports::StoreError;
use rusqlite::Connection;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Nanoseconds spent inside SQLite work on every connection of this process
/// (the bench's profile: how much of the wall time the database was busy).
static BUSY_NANOS: AtomicU64 = AtomicU64::new(0);

/// The database files (as opened) that had an erasure since their last
/// checkpoint that found nothing new ([`Db::checkpoint_after_erasure`]).
static ERASED_SINCE_CHECKPOINT: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Times a connection of this process found the file's write lock taken by
/// another connection and waited ([`wait_for_write_lock`]).
static LOCK_WAITS: AtomicU64 = AtomicU64::new(0);

/// How many times so far a connection waited for another's write lock.
pub fn lock_waits() -> u64 {
    LOCK_WAITS.load(Ordering::Relaxed)
}

/// SQLite's busy handler for every connection: the connections of one file
/// (the event store's writer, the read models', the bus's, the timers')
/// take turns at its one write lock. SQLite's own `busy_timeout` sleeps 1,
/// 2, 5, 10 ... ms between tries, so a commit that found the lock taken
/// for a few microseconds waited a millisecond or more; this one tries
/// again every 100 µs for the first 10 ms, then every millisecond, and
/// gives up (the call fails `Unavailable`, retried by its caller) after
/// about 5 s, as before.
fn wait_for_write_lock(tries: i32) -> bool {
    if tries == 0 {
        LOCK_WAITS.fetch_add(1, Ordering::Relaxed);
    }
    match pause_before_try(tries) {
        Some(pause) => {
            std::thread::sleep(pause);
            true
        }
        None => false,
    }
}

/// How long to wait before try `tries + 1` for the write lock; `None`: give up.
fn pause_before_try(tries: i32) -> Option<Duration> {
    match tries {
        0..100 => Some(Duration::from_micros(100)),
        100..5_090 => Some(Duration::from_millis(1)),
        _ => None,
    }
}

/// The total so far of the time spent in SQLite work (see [`BUSY_NANOS`]).
pub fn busy_nanos() -> u64 {
    BUSY_NANOS.load(Ordering::Relaxed)
}

/// How many async callers of one connection may wait for it in blocking
/// threads at once ([`Db::run`]); the others wait their turn without a
/// thread. More than one, so that when the connection is released the next
/// caller is already in its thread: with one, every call paid a thread's
/// wake-up after the one before it, and the API's command rate halved.
pub const TURNS: usize = 4;

/// A SQLite database file in WAL mode.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Turns at the connection for async callers ([`Db::run`]): they queue
    /// here, in order, rather than each in a blocking thread of its own
    /// waiting on the mutex ([`TURNS`]).
    turns: Arc<tokio::sync::Semaphore>,
}

/// What one `wal_checkpoint(TRUNCATE)` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalCheckpoint {
    /// Another connection kept the checkpoint from finishing (it is tried again later).
    pub busy: bool,
    /// The size of the WAL file before the checkpoint (0: nothing was
    /// written since the last truncation).
    pub wal_bytes: u64,
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
    /// Opens (creating if needed) the file at `path` and applies `schema`:
    /// see the module documentation for the modes and `secure_delete`.
    pub fn open(path: &Path, schema: &str) -> Result<Self, StoreError> {
        let at = |e: std::io::Error| failed(format!("{}: {e}", path.display()));
        // Made 0600 (or tightened) before SQLite opens it and before the WAL
        // exists, so SQLite creates the -wal and -shm files 0600 too.
        DataDir::holding(path)
            .and_then(|dir| dir.prepare_database(path))
            .map_err(at)?;
        let conn = Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(sql)?;
        conn.pragma_update(None, "secure_delete", "ON").map_err(sql)?;
        conn.busy_handler(Some(wait_for_write_lock)).map_err(sql)?;
        conn.execute_batch(schema).map_err(sql)?;
        // Files an earlier version left open to others.
        database_files(path)
            .iter()
            .try_for_each(|f| private_file(f))
            .map_err(at)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            turns: Arc::new(tokio::sync::Semaphore::new(TURNS)),
        })
    }

    /// Lets this connection cache up to `kib` KiB of database pages (SQLite's
    /// default is 2 000 KiB): for the large tables written at random places,
    /// the read models' documents and checkpoints, whose B-tree pages were
    /// read again from the file on most inserts once a rebuild had grown
    /// them past the default (decision 0094).
    pub fn with_page_cache_kib(self, kib: i64) -> Result<Self, StoreError> {
        self.conn
            .lock()
            .map_err(|_| failed("connection mutex poisoned"))?
            .pragma_update(None, "cache_size", -kib)
            .map_err(sql)?;
        Ok(self)
    }

    /// The database file (canonical when it could be resolved).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)`: copies every page of the WAL into
    /// the database file and truncates the WAL to zero bytes. A checkpoint
    /// other connections keep busy reports `busy` (not an error).
    pub async fn truncate_wal(&self) -> Result<WalCheckpoint, StoreError> {
        let wal = database_files(&self.path)[1].clone();
        self.run(move |conn| {
            let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
                Ok(busy) => Ok(WalCheckpoint {
                    busy: busy != 0,
                    wal_bytes,
                }),
                Err(e)
                    if matches!(
                        e.sqlite_error_code(),
                        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                    ) =>
                {
                    Ok(WalCheckpoint { busy: true, wal_bytes })
                }
                Err(e) => Err(sql(e)),
            }
        })
        .await
    }

    /// Records that a customer's data was erased in this database (their
    /// key deleted) and checkpoints at once ([`Db::truncate_wal`]), so the
    /// deleted key's old page is in neither file. The redactions that
    /// follow are covered by [`Db::checkpoint_after_erasure`].
    pub async fn erasure_done(&self) -> Result<(), StoreError> {
        if let Ok(mut erased) = ERASED_SINCE_CHECKPOINT.lock() {
            erased.insert(self.path.clone());
        }
        let done = self.truncate_wal().await?;
        tracing::debug!(
            busy = done.busy,
            wal_bytes = done.wal_bytes,
            "WAL truncated after an erasure"
        );
        Ok(())
    }

    /// After an erasure ([`Db::erasure_done`]), checkpoints with `TRUNCATE`;
    /// once a checkpoint finishes and finds the WAL empty (nothing written
    /// since the one before), the erasure is settled and later calls do
    /// nothing. Called when the bus finds nothing new to deliver, so the
    /// redactions the erasure caused are on disk in their final form only.
    pub async fn checkpoint_after_erasure(&self) -> Result<(), StoreError> {
        let pending = ERASED_SINCE_CHECKPOINT
            .lock()
            .map(|erased| erased.contains(&self.path))
            .unwrap_or(false);
        if !pending {
            return Ok(());
        }
        let done = self.truncate_wal().await?;
        if !done.busy && done.wal_bytes == 0 {
            if let Ok(mut erased) = ERASED_SINCE_CHECKPOINT.lock() {
                erased.remove(&self.path);
            }
        }
        Ok(())
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

    /// Runs `f` on the connection in this thread (a thread of its own that
    /// may block: the event store's writer).
    pub fn run_here<T, E, F>(&self, f: F) -> Result<T, E>
    where
        E: From<StoreError>,
        F: FnOnce(&mut Connection) -> Result<T, E>,
    {
        let mut guard = self.conn.lock().map_err(|_| failed("connection mutex poisoned"))?;
        let started = std::time::Instant::now();
        let result = f(&mut guard);
        BUSY_NANOS.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }

    /// Runs `f` on the connection in a blocking thread, once it is this
    /// caller's turn: callers queue on `turns` in the order they came, so
    /// a connection has at most [`TURNS`] blocking threads of its async
    /// callers (64 callers each in a thread of its own waiting on the mutex
    /// took the API phase of the bench to 100 threads and their allocator
    /// caches to half a GiB; issue 22, decision 0096).
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        // Closed never: the semaphore lives as long as the Db.
        let _turn = self.turns.acquire().await.map_err(|e| E::from(failed(e)))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_waits_in_short_steps_for_about_five_seconds_then_gives_up() {
        assert_eq!(pause_before_try(0), Some(Duration::from_micros(100)));
        let waited: Duration = (0..).map_while(pause_before_try).sum();
        assert_eq!(
            waited,
            Duration::from_millis(10 + 4_990),
            "as long as the busy_timeout it replaced"
        );
        assert_eq!(pause_before_try(5_090), None);
    }

    #[tokio::test]
    async fn a_writer_that_finds_the_lock_taken_waits_for_it_and_is_counted() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("crm.db");
        let (first, second) = (
            Db::open(&path, "CREATE TABLE IF NOT EXISTS t (n INTEGER);").expect("open"),
            Db::open(&path, "").expect("open"),
        );
        // The first connection holds the write lock for 50 ms.
        let (taken, holding) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            first.run_here(|conn| {
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(sql)?;
                tx.execute("INSERT INTO t VALUES (1)", []).map_err(sql)?;
                let _ = taken.send(());
                std::thread::sleep(Duration::from_millis(50));
                tx.commit().map_err(sql)
            })
        });
        holding.recv().expect("the lock is taken");
        let waits = lock_waits();
        second
            .run(|conn| conn.execute("INSERT INTO t VALUES (2)", []).map_err(sql))
            .await
            .expect("waited for the lock, then wrote");
        holder.join().expect("holder").expect("committed");
        assert!(lock_waits() > waits, "the wait was counted");
        let rows: i64 = second
            .run(|conn| conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).map_err(sql))
            .await
            .expect("count");
        assert_eq!(rows, 2);
    }
}
