//! `crm-local refused --source <name>`: the refused-messages log of a
//! source, read from the data directory's database (decision 0053).

use crate::adapters::db::failed;
use crate::adapters::refusals::SqliteRefusals;
use chrono::{DateTime, Utc};
use crm_core::ingest::refusals::RefusalLog;
use crm_core::ports::StoreError;
use std::path::Path;

/// `crm-local refused --source <name>`: one page of the source's refusals,
/// newest first, as JSON (what `GET /sources/{source}/refused` answers): a
/// name `serve` takes no messages from ([`crate::runtime::sources::is_ingest_source`])
/// is an error, as the API's 404 is.
pub async fn page_json(
    data_dir: &Path,
    source: &str,
    after: Option<&str>,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    if after.is_some_and(|a| !crm_core::ingest::refusals::is_cursor(a)) {
        return Err(failed("--after must be a next_after of an earlier page"));
    }
    if !crate::runtime::sources::is_ingest_source(source).map_err(failed)? {
        return Err(failed(format!(
            "no source is named \"{source}\": the sources are those of INGEST_WRITE_KEYS, else local and local-web"
        )));
    }
    let log = SqliteRefusals::open(&crate::adapters::data_dir::database_path(data_dir))?;
    let page = log.list(source, after, limit, now).await?;
    serde_json::to_string_pretty(&serde_json::json!({
        "source": source,
        "items": page.refusals,
        "next_after": page.next_after,
    }))
    .map_err(failed)
}
