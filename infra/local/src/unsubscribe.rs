//! The local runtime's unsubscribe-token secret: made once per database (32
//! random bytes in the `local_secrets` table) unless `UNSUBSCRIBE_SECRET`
//! gives one, and `crm-local unsubscribe-link`, which prints a customer's
//! signed preference-centre link with that same secret.

use crate::db::{failed, sql};
use crm_core::consent::{Channel, Purpose};
use crm_core::messaging::unsubscribe::{links, TokenSigner};
use crm_core::ports::StoreError;
use std::path::Path;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS local_secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL);";
const NAME: &str = "unsubscribe";

/// The environment variable that overrides the stored secret (as on AWS).
pub const SECRET_ENV: &str = "UNSUBSCRIBE_SECRET";

/// The secret stored in the database at `db`, created on first use.
pub fn stored_secret(db: &Path) -> Result<Vec<u8>, StoreError> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
    }
    let conn = rusqlite::Connection::open(db).map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(sql)?;
    conn.execute_batch(SCHEMA).map_err(sql)?;
    // 32 bytes from the operating system's random source (UUID v4 uses it).
    let fresh: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
        .iter()
        .flat_map(|u| *u.as_bytes())
        .collect();
    conn.execute(
        "INSERT OR IGNORE INTO local_secrets (name, value) VALUES (?1, ?2)",
        rusqlite::params![NAME, fresh],
    )
    .map_err(sql)?;
    conn.query_row("SELECT value FROM local_secrets WHERE name = ?1", [NAME], |row| {
        row.get::<_, Vec<u8>>(0)
    })
    .map_err(sql)
}

/// The signer of the local runtime over `db`: `UNSUBSCRIBE_SECRET` when set
/// and not empty, else the stored secret.
pub fn signer(db: &Path) -> Result<TokenSigner, StoreError> {
    match std::env::var(SECRET_ENV) {
        Ok(secret) if !secret.is_empty() => Ok(TokenSigner::new(secret.as_bytes())),
        _ => Ok(TokenSigner::new(&stored_secret(db)?)),
    }
}

/// `crm-local unsubscribe-link`: the link of `customer_id`'s (purpose,
/// channel) under `base_url`, valid for 60 days.
pub fn link(db: &Path, base_url: &str, customer_id: &str, purpose: &str, channel: &str) -> Result<String, StoreError> {
    let purpose = Purpose::parse(purpose).ok_or_else(|| failed(format!("unknown purpose {purpose}")))?;
    let channel = Channel::parse(channel).ok_or_else(|| failed(format!("unknown channel {channel}")))?;
    let signer = signer(db)?;
    let (unsubscribe, _) = links(&signer, base_url, customer_id, purpose, channel, chrono::Utc::now());
    Ok(unsubscribe)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_made_once_per_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("crm.db");
        let first = stored_secret(&db).expect("secret");
        assert_eq!(first.len(), 32);
        assert_eq!(stored_secret(&db).expect("secret"), first);
        let other = stored_secret(&dir.path().join("other.db")).expect("secret");
        assert_ne!(other, first);
    }
}
