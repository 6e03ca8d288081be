//! `crm-local serve`: the HTTP API over the SQLite store, on one machine.

use crate::bus::BUILT_IN_TEMPLATE;
use crate::runtime::{ClockChoice, LocalRuntime, RuntimeError, RuntimeOptions};
use crm_core::ports::StoreError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The bearer token; when `None`, the one in `<data_dir>/token` (created on first run).
    pub token: Option<String>,
    /// A SAM template whose rules route the bus; `None`: the built-in one.
    pub template: Option<PathBuf>,
    /// The system clock, or a virtual one (starting at the real now) moved
    /// through `POST /dev/clock/advance`.
    pub clock: ClockKind,
    /// Where customers reach the API, for unsubscribe links; `None`: `http://<addr>`.
    pub public_base_url: Option<String>,
    /// Retention: swept at start and once a day (`crate::retention`).
    pub retention: crm_core::retention::RetentionPolicy,
}

/// `crm-local serve --clock system|virtual`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClockKind {
    #[default]
    System,
    Virtual,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Server(std::io::Error),
}

/// The database file inside a data directory.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("crm.db")
}

/// Reads `<data_dir>/token`, creating it (mode 0600) with a fresh token if absent.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, ServeError> {
    let io = |source| ServeError::DataDir {
        path: data_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let path = data_dir.join("token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(io)?;
    std::io::Write::write_all(&mut file, token.as_bytes()).map_err(io)?;
    Ok(token)
}

pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let token = match config.token {
        Some(t) => t,
        None => load_or_create_token(&config.data_dir)?,
    };
    let db = database_path(&config.data_dir);
    let template = match &config.template {
        Some(path) => std::fs::read_to_string(path).map_err(|source| ServeError::DataDir {
            path: path.clone(),
            source,
        })?,
        None => BUILT_IN_TEMPLATE.to_string(),
    };
    let clock = match config.clock {
        ClockKind::System => ClockChoice::System,
        ClockKind::Virtual => ClockChoice::Virtual(chrono::Utc::now()),
    };
    // Bound first: the links in messages point at the address it listens on.
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Server)?;
    let public_base_url = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let runtime = LocalRuntime::open_with(&db, &template, RuntimeOptions { clock, public_base_url })?;
    let bus = runtime.spawn_bus();
    let retention = crate::retention::spawn_daily(&runtime, config.retention);
    // One write: a reader that stops at the url line must not leave later lines
    // to a closed pipe (println! would then panic).
    let mut banner = format!(
        "crm-local is serving the CRM API\n  url:   http://{addr}\n  token: {token}\n  data:  {}\n",
        db.display()
    );
    if std::env::var("INGEST_WRITE_KEYS").map_or(true, |v| v.trim().is_empty()) {
        banner.push_str(&format!(
            "  write key (source local, for /v1/*): {}\n",
            runtime.local_write_key
        ));
    }
    if config.clock == ClockKind::Virtual {
        banner.push_str("  clock: virtual (GET /dev/clock, POST /dev/clock/advance {\"minutes\": n})\n");
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
    }
    let served = axum::serve(listener, runtime.app(token))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(ServeError::Server);
    bus.abort();
    retention.abort();
    served
}
