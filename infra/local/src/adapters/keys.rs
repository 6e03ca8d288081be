//! The local [`KeyStore`] (decision 0016): each customer's data key in the
//! SQLite table `customer_keys`, wrapped (AES-256-GCM, bound to the customer
//! id) under a master key kept in `<data-dir>/master.key`.
//!
//! The master key file is created on first run, readable by its owner only
//! (mode 0600 on unix); a key file that group or others may read is refused.
//! Losing it makes every customer's personal data unreadable, like erasing
//! them all; deleting one row erases one customer (crypto-shredding). The
//! row is zeroed where it was (`secure_delete`) and the WAL truncated right
//! after ([`Db::erasure_done`]), so no copy of the wrapped key stays on disk.

use crate::adapters::data_dir::{Create, DataDir, MASTER_KEY_FILE};
use crate::adapters::db::Db;
use crm_core::ports::StoreError;
use crm_core::privacy::{unwrap_key, wrap_key, DataKey, KeyError, KeyStore, KEY_LEN};
use rusqlite::OptionalExtension;
use std::path::{Path, PathBuf};

/// The table of wrapped data keys (applied when a store opens).
pub const KEYS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS customer_keys (
    customer_id TEXT PRIMARY KEY NOT NULL,
    wrapped_key BLOB NOT NULL,
    created_at  TEXT NOT NULL
);
";

/// The master key file could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is readable by others (mode {mode:04o}): it must be 0600 (chmod 600 {path})")]
    Mode { path: PathBuf, mode: u32 },
    #[error("{path} does not hold a master key (64 hex digits)")]
    Malformed { path: PathBuf },
    #[error("no randomness for a master key: {0}")]
    Random(KeyError),
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<[u8; KEY_LEN]> {
    let text = text.trim();
    if text.len() != 2 * KEY_LEN || !text.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; KEY_LEN];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(bytes)
}

/// Reads the master key file, refusing one that group or others may read.
fn read_master_key(path: &Path) -> Result<Option<DataKey>, MasterKeyError> {
    let io = |source| MasterKeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(MasterKeyError::Mode {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let mut text = std::fs::read_to_string(path).map_err(io)?;
    let bytes = from_hex(&text);
    zeroize::Zeroize::zeroize(&mut text);
    match bytes {
        Some(bytes) => Ok(Some(DataKey::from_bytes(bytes))),
        None => Err(MasterKeyError::Malformed {
            path: path.to_path_buf(),
        }),
    }
}

/// Reads the data directory's `master.key`, creating it (mode 0600 from the
/// start) with a fresh random key on first run. Two processes starting at
/// once agree on one key: the file is written aside and then linked into
/// place, which fails for the second.
pub fn load_or_create_master_key(data_dir: &DataDir) -> Result<DataKey, MasterKeyError> {
    let path = data_dir.master_key();
    if let Some(key) = read_master_key(&path)? {
        return Ok(key);
    }
    let key = DataKey::generate().map_err(MasterKeyError::Random)?;
    let aside_name = format!(".{MASTER_KEY_FILE}.{}.tmp", uuid::Uuid::new_v4().simple());
    let aside = data_dir.path().join(&aside_name);
    let written = (|| {
        let mut file = data_dir.create_file(&aside_name, Create::New)?;
        let mut text = to_hex(key.as_bytes());
        let result = std::io::Write::write_all(&mut file, format!("{text}\n").as_bytes()).and_then(|_| file.sync_all());
        zeroize::Zeroize::zeroize(&mut text);
        result?;
        std::fs::hard_link(&aside, &path)
    })();
    let _ = std::fs::remove_file(&aside);
    match written {
        Ok(()) => Ok(key),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_master_key(&path)?.ok_or_else(|| MasterKeyError::Malformed { path: path.clone() })
        }
        Err(source) => Err(MasterKeyError::Io { path, source }),
    }
}

fn store_error(e: StoreError) -> KeyError {
    KeyError::Unavailable(e.to_string())
}

/// Data keys in SQLite, wrapped under the master key.
#[derive(Clone)]
pub struct SqliteKeyStore {
    db: Db,
    master: std::sync::Arc<DataKey>,
}

impl SqliteKeyStore {
    /// The store over the database file at `db_path` (creating the table)
    /// with keys wrapped under `master`.
    pub fn open(db_path: &Path, master: DataKey) -> Result<Self, KeyError> {
        let db = Db::open(db_path, KEYS_SCHEMA).map_err(store_error)?;
        Ok(SqliteKeyStore {
            db,
            master: std::sync::Arc::new(master),
        })
    }

    /// The store of a data directory: its database file (`crm.db`) and its
    /// master key file, created on first run.
    pub fn open_data_dir(data_dir: &Path) -> Result<Self, OpenError> {
        let data_dir = DataDir::open(data_dir).map_err(|source| MasterKeyError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let master = load_or_create_master_key(&data_dir)?;
        Ok(Self::open(&data_dir.database(), master)?)
    }

    async fn wrapped(&self, customer_id: &str) -> Result<Option<Vec<u8>>, KeyError> {
        let id = customer_id.to_string();
        self.db
            .run_quick(move |conn| {
                conn.prepare_cached("SELECT wrapped_key FROM customer_keys WHERE customer_id = ?1")
                    .map_err(crate::adapters::db::sql)?
                    .query_row([&id], |row| row.get::<_, Vec<u8>>(0))
                    .optional()
                    .map_err(crate::adapters::db::sql)
            })
            .await
            .map_err(store_error)
    }
}

/// A data directory's key store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(transparent)]
    Store(#[from] KeyError),
}

#[async_trait::async_trait]
impl KeyStore for SqliteKeyStore {
    async fn data_key(&self, customer_id: &str) -> Result<DataKey, KeyError> {
        if let Some(wrapped) = self.wrapped(customer_id).await? {
            return unwrap_key(&self.master, customer_id, &wrapped);
        }
        let fresh = DataKey::generate()?;
        let wrapped = wrap_key(&self.master, customer_id, &fresh)?;
        let id = customer_id.to_string();
        // The conditional write: the first insert wins, every later one is
        // ignored and reads the winner's key.
        let stored = self
            .db
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO customer_keys (customer_id, wrapped_key, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (customer_id) DO NOTHING",
                    rusqlite::params![id, wrapped, chrono::Utc::now().to_rfc3339()],
                )
                .map_err(crate::adapters::db::sql)?;
                conn.query_row(
                    "SELECT wrapped_key FROM customer_keys WHERE customer_id = ?1",
                    [&id],
                    |row| row.get::<_, Vec<u8>>(0),
                )
                .map_err(crate::adapters::db::sql)
            })
            .await
            .map_err(store_error)?;
        unwrap_key(&self.master, customer_id, &stored)
    }

    async fn existing_key(&self, customer_id: &str) -> Result<Option<DataKey>, KeyError> {
        match self.wrapped(customer_id).await? {
            Some(wrapped) => unwrap_key(&self.master, customer_id, &wrapped).map(Some),
            None => Ok(None),
        }
    }

    async fn delete(&self, customer_id: &str) -> Result<(), KeyError> {
        let id = customer_id.to_string();
        self.db
            .run(move |conn| {
                conn.execute("DELETE FROM customer_keys WHERE customer_id = ?1", [&id])
                    .map_err(crate::adapters::db::sql)
            })
            .await
            .map_err(store_error)?;
        // `secure_delete` zeroed the wrapped key in the page; the checkpoint
        // leaves no older copy of that page in the WAL.
        self.db.erasure_done().await.map_err(store_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::data_dir::master_key_path;
    use crm_core::privacy::{decrypt_field, encrypt_field};
    use std::sync::{Arc, OnceLock};

    /// One data directory for the contract suite (its cases use ids of their own).
    fn shared_dir() -> &'static tempfile::TempDir {
        static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
        DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
    }

    async fn fresh_store() -> Arc<dyn KeyStore> {
        Arc::new(SqliteKeyStore::open_data_dir(shared_dir().path()).expect("open"))
    }

    crm_core::key_store_contract!(fresh_store);

    fn opened(path: &Path) -> DataDir {
        DataDir::open(path).expect("data directory")
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn first_run_creates_a_0600_master_key_and_later_runs_read_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let first = load_or_create_master_key(&opened(&data_dir)).expect("create");
        let path = master_key_path(&data_dir);
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        // The data directory it made is private from the start (not 0755
        // tightened later by the database).
        #[cfg(unix)]
        assert_eq!(mode(&data_dir), 0o700);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.trim().len(), 64);
        assert_eq!(
            load_or_create_master_key(&opened(&data_dir)).expect("read again"),
            first
        );
        // No file written aside is left behind.
        let names: Vec<_> = std::fs::read_dir(&data_dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .collect();
        assert_eq!(names, vec![MASTER_KEY_FILE.to_string()]);
    }

    #[test]
    fn concurrent_first_runs_agree_on_one_master_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys: Vec<DataKey> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_or_create_master_key(&opened(dir.path())).expect("master key")))
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        assert!(keys.iter().all(|k| *k == keys[0]));
    }

    #[cfg(unix)]
    #[test]
    fn a_master_key_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create_master_key(&opened(dir.path())).expect("create");
        let path = master_key_path(dir.path());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        match load_or_create_master_key(&opened(dir.path())) {
            Err(MasterKeyError::Mode { mode, .. }) => assert_eq!(mode, 0o644),
            other => panic!("expected a mode error, got {other:?}"),
        }
    }

    #[test]
    fn a_malformed_master_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        load_or_create_master_key(&opened(dir.path())).expect("create");
        std::fs::write(master_key_path(dir.path()), "not a key\n").expect("overwrite");
        assert!(matches!(
            load_or_create_master_key(&opened(dir.path())),
            Err(MasterKeyError::Malformed { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_connections_racing_on_a_first_use_converge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SqliteKeyStore::open_data_dir(dir.path()).expect("a");
        let b = SqliteKeyStore::open_data_dir(dir.path()).expect("b");
        for i in 0..20 {
            let id = format!("cus-{i}");
            let (ka, kb) = tokio::join!(a.data_key(&id), b.data_key(&id));
            assert_eq!(ka.expect("a"), kb.expect("b"), "{id}");
        }
    }

    #[tokio::test]
    async fn keys_are_stored_wrapped_and_deleted_rows_are_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteKeyStore::open_data_dir(dir.path()).expect("open");
        let key = store.data_key("cus-1").await.expect("create");
        let db_path = crate::adapters::data_dir::database_path(dir.path());
        let raw = || {
            let conn = rusqlite::Connection::open(&db_path).expect("open db");
            conn.query_row(
                "SELECT wrapped_key FROM customer_keys WHERE customer_id = 'cus-1'",
                [],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .expect("query")
        };
        let wrapped = raw().expect("a row");
        assert_eq!(wrapped.len(), 12 + 32 + 16, "nonce, wrapped key, tag");
        assert!(
            !wrapped.windows(16).any(|w| w == &key.as_bytes()[..16]),
            "the key is not stored in clear"
        );
        store.delete("cus-1").await.expect("delete");
        assert_eq!(raw(), None);
    }

    #[tokio::test]
    async fn another_master_key_fails_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_path = crate::adapters::data_dir::database_path(dir.path());
        let right = SqliteKeyStore::open(&db_path, DataKey::generate().expect("key")).expect("open");
        let key = right.data_key("cus-1").await.expect("create");
        let text = encrypt_field(&key, "cus-1", "email", "ada@example.com").expect("encrypt");

        let wrong = SqliteKeyStore::open(&db_path, DataKey::generate().expect("key")).expect("open");
        assert!(matches!(wrong.existing_key("cus-1").await, Err(KeyError::Corrupt(_))));
        assert!(matches!(wrong.data_key("cus-1").await, Err(KeyError::Corrupt(_))));
        // Nothing was overwritten: the right master key still opens it.
        let again = right.existing_key("cus-1").await.expect("read").expect("there");
        assert_eq!(
            decrypt_field(&again, "cus-1", "email", &text).expect("decrypt"),
            "ada@example.com"
        );
        // A customer with no key is still fine under the wrong master key.
        assert_eq!(wrong.existing_key("cus-2").await.expect("none"), None);
    }
}
