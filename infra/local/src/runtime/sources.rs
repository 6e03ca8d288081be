//! The ingestion sources `serve` takes messages from (`/v1/*`): those of
//! `INGEST_WRITE_KEYS`, else two built-in ones (decision 0042).

/// The server source `serve` takes messages from when `INGEST_WRITE_KEYS`
/// is unset (the shop's backend, [`crate::runtime::LocalRuntime::local_write_key`]).
pub const LOCAL_SOURCE: &str = "local";
/// The client source `serve` takes messages from when `INGEST_WRITE_KEYS`
/// is unset (browsers and apps, [`crate::runtime::LocalRuntime::local_client_write_key`]).
pub const LOCAL_WEB_SOURCE: &str = "local-web";

/// Whether `serve` takes messages from a source of this name: one of
/// `INGEST_WRITE_KEYS`'s when it is set, else [`LOCAL_SOURCE`] or
/// [`LOCAL_WEB_SOURCE`].
pub fn is_ingest_source(name: &str) -> Result<bool, String> {
    match std::env::var("INGEST_WRITE_KEYS").ok().filter(|v| !v.trim().is_empty()) {
        Some(text) => Ok(crm_api::IngestSources::parse(&text)?.named(name).is_some()),
        None => Ok([LOCAL_SOURCE, LOCAL_WEB_SOURCE].contains(&name)),
    }
}
