//! The local runtime's secrets: each made once per database (32 random bytes
//! in the `local_secrets` table) unless an environment variable gives one,
//! as Secrets Manager does on AWS. Two exist: the unsubscribe-token secret
//! (`UNSUBSCRIBE_SECRET`) and the identifier-hash secret of the proof
//! ledger and suppression list (`IDENTIFIER_HASH_SECRET`, decision 0019).

use crate::adapters::data_dir::DataDir;
use crate::adapters::db::{failed, sql};
use crm_core::ports::StoreError;
use crm_core::privacy::IdentifierHasher;
use std::path::Path;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS local_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);";

/// The environment variable that overrides the stored identifier secret.
pub const IDENTIFIER_SECRET_ENV: &str = "IDENTIFIER_HASH_SECRET";

/// The secret `name` stored in the database at `db`, created on first use.
pub fn stored_secret(db: &Path, name: &str) -> Result<Vec<u8>, StoreError> {
    DataDir::holding(db)
        .and_then(|dir| dir.prepare_database(db))
        .map_err(|e| failed(format!("{}: {e}", db.display())))?;
    let conn = rusqlite::Connection::open(db).map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
    conn.execute_batch(SCHEMA).map_err(sql)?;
    let fresh = crm_core::privacy::random_bytes::<32>().map_err(|e| failed(e.to_string()))?;
    conn.execute(
        "INSERT OR IGNORE INTO local_secrets (name, value) VALUES (?1, ?2)",
        rusqlite::params![name, fresh.to_vec()],
    )
    .map_err(sql)?;
    conn.query_row("SELECT value FROM local_secrets WHERE name = ?1", [name], |row| {
        row.get::<_, Vec<u8>>(0)
    })
    .map_err(sql)
}

/// The secret `name`: the environment variable `env` when set and not
/// empty, else the stored one.
pub fn secret(db: &Path, name: &str, env: &str) -> Result<Vec<u8>, StoreError> {
    match std::env::var(env) {
        Ok(secret) if !secret.is_empty() => Ok(secret.into_bytes()),
        _ => stored_secret(db, name),
    }
}

/// The identifier hasher of the local runtime over `db`.
pub fn identifier_hasher(db: &Path) -> Result<IdentifierHasher, StoreError> {
    Ok(IdentifierHasher::new(&secret(
        db,
        "identifier-hash",
        IDENTIFIER_SECRET_ENV,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_secret_is_made_once_per_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("crm.db");
        let first = stored_secret(&db, "a").expect("secret");
        assert_eq!(first.len(), 32);
        assert_eq!(stored_secret(&db, "a").expect("secret"), first);
        assert_ne!(stored_secret(&db, "b").expect("secret"), first);
        let other = stored_secret(&dir.path().join("other.db"), "a").expect("secret");
        assert_ne!(other, first);
    }

    #[cfg(unix)]
    #[test]
    fn a_fresh_data_directory_and_database_are_private_from_the_start() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().join("data");
        let db = data_dir.join("crm.db");
        stored_secret(&db, "a").expect("secret");
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&data_dir), 0o700);
        assert_eq!(mode(&db), 0o600);
    }
}
