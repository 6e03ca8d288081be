//! `crm-local serve`: the HTTP API over the SQLite store, on one machine.
//! It listens on loopback unless told `--allow-remote`, answers only
//! requests addressed to it (the `Host` check of [`guard`]), and shows the
//! local pages (`/_local/mail`) only to the holder of its token or of the
//! mail link it prints (decision 0039).

pub mod guard;
pub mod jwt;
pub mod token;

pub use guard::LocalGuard;

use crate::runtime::bus::{read_template, TemplateFileError};
use crate::runtime::{ClockChoice, LocalRuntime, RuntimeError, RuntimeOptions};
use crm_core::ports::StoreError;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    /// The all-scopes bearer token; when `None`, the one in `<data_dir>/token`
    /// (created on first run). `crm-local token` mints narrower ones from it.
    pub token: Option<String>,
    /// Listen on an address other than loopback (refused without it).
    pub allow_remote: bool,
    /// A SAM template whose rules route the bus; `None`: the built-in one.
    pub template: Option<PathBuf>,
    /// The system clock, or a virtual one (starting at the real now) moved
    /// through `POST /dev/clock/advance`.
    pub clock: ClockKind,
    /// Where customers reach the API, for unsubscribe links; `None`: `http://<addr>`.
    pub public_base_url: Option<String>,
    /// Retention: swept at start and once a day (`crate::runtime::retention`).
    pub retention: crm_core::retention::RetentionPolicy,
    /// The shop's `tracking.require_analytics_consent` (decision 0079).
    pub require_analytics_consent: bool,
    /// A JWT issuer whose tokens the API also takes (`http://` only), the
    /// audiences they may name, and the console's OIDC client id (default:
    /// the first audience). Decision 0089.
    pub jwt_issuer: Option<String>,
    pub jwt_audiences: Vec<String>,
    pub console_client_id: Option<String>,
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
    Template(#[from] TemplateFileError),
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error(
        "refusing to listen on {addr}: it is not a loopback address, so other machines could reach \
         this server, its all-scopes token and its mail viewer; listen on 127.0.0.1, or pass \
         --allow-remote if that is what you want"
    )]
    RemoteAddress { addr: SocketAddr },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("server failed: {0}")]
    Server(std::io::Error),
    #[error("--jwt-issuer: {0}")]
    Jwt(String),
}

/// Reads `<data_dir>/token`, creating it (mode 0600) with a fresh token if absent.
pub fn load_or_create_token(data_dir: &Path) -> Result<String, ServeError> {
    Ok(token::load_or_create(data_dir)?)
}

/// Whether `serve` may listen on `addr`: loopback always; another address
/// only with `allow_remote`, and then with the warning returned (printed
/// loudly at start).
pub fn bind_policy(addr: SocketAddr, allow_remote: bool) -> Result<Option<String>, ServeError> {
    if addr.ip().is_loopback() {
        return Ok(None);
    }
    if !allow_remote {
        return Err(ServeError::RemoteAddress { addr });
    }
    Ok(Some(format!(
        "WARNING: crm-local is listening on {addr}, which other machines can reach (--allow-remote).\n\
         WARNING: anyone with the token can read, change, export and erase every customer; the traffic is\n\
         WARNING: plain HTTP. Requests are answered only for Host localhost/127.0.0.1 with the port, the\n\
         WARNING: bound address, or the --public-base-url's host: set it to the name clients use.\n"
    )))
}

/// The app `serve` runs: the runtime's API behind `guard` (the `Host` check
/// and the local pages' credential).
pub fn guarded_app(runtime: &LocalRuntime, token: &str, guard: &LocalGuard) -> axum::Router {
    guard.protect(runtime.app(token.to_string()))
}

pub async fn serve(config: ServeConfig) -> Result<(), ServeError> {
    let token = match config.token {
        Some(t) => t,
        None => load_or_create_token(&config.data_dir)?,
    };
    let db = crate::adapters::data_dir::database_path(&config.data_dir);
    let template = read_template(config.template.as_deref())?;
    let warning = bind_policy(config.addr, config.allow_remote)?;
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
    if let Some(warning) = &warning {
        tracing::warn!(%addr, "listening on a non-loopback address (--allow-remote)");
        eprint!("{warning}");
    }
    let public_base_url = config
        .public_base_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let mut runtime = LocalRuntime::open_with(&db, &template, RuntimeOptions { clock, public_base_url })?;
    runtime.require_analytics_consent = config.require_analytics_consent;
    if let Some(issuer) = &config.jwt_issuer {
        let keys = jwt::IssuerKeys::discover(issuer, config.jwt_audiences.clone())
            .await
            .map_err(|e| ServeError::Jwt(e.to_string()))?;
        let client_id = config
            .console_client_id
            .clone()
            .or_else(|| config.jwt_audiences.first().cloned())
            .unwrap_or_default();
        runtime.jwt = Some((
            std::sync::Arc::new(keys),
            crm_api::console::OidcClient::new(issuer, &client_id),
        ));
    }
    let bus = runtime.spawn_bus();
    let retention = crate::runtime::retention::spawn_daily(&runtime, config.retention);
    // One write: a reader that stops at the url line must not leave later lines
    // to a closed pipe (println! would then panic).
    let guard = LocalGuard::new(addr, config.public_base_url.as_deref(), &token);
    let local_base = if addr.ip().is_unspecified() {
        format!("http://127.0.0.1:{}", addr.port())
    } else {
        format!("http://{addr}")
    };
    let mut banner = format!(
        "crm-local is serving the CRM API\n  url:   http://{addr}\n  token: {token}  \
         (every scope; `crm-local token --scope crm/read` mints narrower ones)\n  mail:  {}\n  data:  {}\n",
        guard.mail_link(&local_base),
        db.display()
    );
    if let Some(console) = guard.console_link(&local_base) {
        banner.push_str(&format!("  console: {console}  (one-time sign-in link)\n"));
    }
    if std::env::var("INGEST_WRITE_KEYS").map_or(true, |v| v.trim().is_empty()) {
        banner.push_str(&format!(
            "  write key (source local, server: the shop's backend, keep it secret; for /v1/*): {}\n  \
             write key (source local-web, client: browsers and apps, public; activity only; pages of any \
             origin unless INGEST_ALLOWED_ORIGINS says otherwise): {}\n",
            runtime.local_write_key, runtime.local_client_write_key
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
    let served = axum::serve(listener, guarded_app(&runtime, &token, &guard))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(ServeError::Server);
    bus.abort();
    retention.abort();
    served
}
