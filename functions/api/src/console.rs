//! The console (issue 21, decision 0089): a few static ES modules and one
//! stylesheet, embedded in the binary, served at `/console` without a
//! bearer token. The pages call the JSON API with the caller's token, kept
//! in the tab's `sessionStorage`; `GET /me` tells them which scopes it
//! carries, so only the actions it allows appear. How to sign in comes from
//! `GET /console/config.json`: OIDC authorization code with PKCE against the
//! stack's issuer on AWS, a one-time link (`crm-local serve`'s banner) or a
//! pasted token locally.
//!
//! A strict policy: scripts from this origin only, no inline script;
//! styles from this origin, and inline styles because the template preview
//! (an `srcdoc` iframe, sandboxed without scripts) inherits the policy and
//! MJML's output is styled inline (the pages set none); the API and, with
//! OIDC, the issuer as the only places to connect to.

use crate::http::Principal;
use crate::scopes::{Scope, Scopes};
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use serde_json::json;

/// How the console signs in: the OIDC client of the deployment, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConsoleSignIn {
    /// The issuer (discovery at `<issuer>/.well-known/openid-configuration`)
    /// and the console's public client id, on AWS (`ConsoleClientId`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcClient>,
    /// Whether the server offers the one-time local sign-in link
    /// (`crm-local serve`).
    pub local_link: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OidcClient {
    pub issuer: String,
    pub client_id: String,
    /// The scopes asked for (the API's).
    pub scope: String,
}

impl OidcClient {
    pub fn new(issuer: &str, client_id: &str) -> Self {
        OidcClient {
            issuer: issuer.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            scope: "openid crm/read crm/write crm/privacy crm/admin".into(),
        }
    }
}

/// One embedded file: its name under `/console/`, its media type, its
/// text gzipped (`build.rs`; served by [`crate::gzipped`]).
struct Asset {
    name: &'static str,
    media_type: &'static str,
    gz: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $media:expr) => {
        Asset {
            name: $name,
            media_type: $media,
            gz: include_bytes!(concat!(env!("OUT_DIR"), "/console/", $name, ".gz")),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console serves. A name not listed here is 404: the
/// development override ([`CONSOLE_DIR`]) reads only these names.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("page-overview.js", JS),
    asset!("page-customers.js", JS),
    asset!("page-campaigns.js", JS),
    asset!("page-templates.js", JS),
    asset!("page-segments.js", JS),
    asset!("page-broadcasts.js", JS),
    asset!("page-operations.js", JS),
    // The template preview's frame: its own policy (below).
    asset!("preview.html", "text/html; charset=utf-8"),
];

/// The policy of the template preview's frame (`preview.html`): the
/// console's page fills it with the rendered email (a parsed copy of the
/// API's HTML, never as script), and its images may come from any `https:`
/// origin, as a mail client shows them. Nothing runs in it: no script
/// source, and the `sandbox` directive (scripts, forms and popups off; its
/// origin kept so the console's own script can fill it) holds even when
/// the file is opened on its own. Only the console frames it.
const PREVIEW_POLICY: &str = "default-src 'none'; img-src https: data:; style-src 'unsafe-inline'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox allow-same-origin";

/// Set to the `functions/api/console` directory, the console's files are
/// read from there on each request instead of the binary (development
/// only: edit a page, reload the browser).
pub const CONSOLE_DIR: &str = "CRM_CONSOLE_DIR";

fn policy(sign_in: &ConsoleSignIn) -> String {
    let issuer = sign_in
        .oidc
        .as_ref()
        .and_then(|o| origin(&o.issuer))
        .map(|o| format!(" {o}"))
        .unwrap_or_default();
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
         connect-src 'self'{issuer}; frame-src 'self'; form-action 'self'{issuer}; base-uri 'none'; \
         frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}"))
}

fn serve(state: &AppState, asset: &Asset, request: &HeaderMap) -> Response {
    let from_dir = match std::env::var(CONSOLE_DIR) {
        Ok(dir) if !dir.is_empty() => std::fs::read_to_string(std::path::Path::new(&dir).join(asset.name)).ok(),
        _ => None,
    };
    let mut response = match from_dir {
        Some(text) => (StatusCode::OK, text).into_response(),
        None => crate::gzipped::respond(asset.gz, request, asset.media_type),
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.media_type));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let policy = if asset.name == "preview.html" {
        PREVIEW_POLICY.to_string()
    } else {
        policy(&state.console)
    };
    if let Ok(csp) = HeaderValue::from_str(&policy) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

fn not_found() -> Response {
    crate::Problem::not_found("no such console file").into_response()
}

/// `GET /console`: the console's page.
pub async fn index(State(state): State<AppState>, request: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == "index.html") {
        Some(asset) => serve(&state, asset, &request),
        None => not_found(),
    }
}

/// `GET /console/{asset}`: a script or the stylesheet.
pub async fn asset(State(state): State<AppState>, Path(name): Path<String>, request: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(&state, asset, &request),
        None => not_found(),
    }
}

/// `GET /console/config.json`: how to sign in.
pub async fn config(State(state): State<AppState>) -> Response {
    let mut response = Json(&state.console).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /me`: who the token names and which scopes it carries.
pub async fn me(Extension(principal): Extension<Principal>, Extension(scopes): Extension<Scopes>) -> Response {
    let scopes: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
    Json(json!({ "principal": principal.0, "scopes": scopes })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_the_policy_names_the_issuer() {
        for a in ASSETS {
            let text = crate::gzipped::inflate(a.gz).expect("gzip");
            let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("console")
                .join(a.name);
            assert_eq!(text, std::fs::read_to_string(file).expect("the file"), "{}", a.name);
            assert!(!text.is_empty(), "{}", a.name);
        }
        let local = policy(&ConsoleSignIn::default());
        // Scripts from this origin only; inline styles for the sandboxed
        // template preview (an srcdoc iframe inherits this policy, and
        // MJML's output is styled inline).
        assert!(local.contains("script-src 'self';"), "{local}");
        assert!(!local.contains("'unsafe-eval'"), "{local}");
        assert!(local.contains("style-src 'self' 'unsafe-inline';"), "{local}");
        let scripts = local
            .split(';')
            .find(|d| d.trim_start().starts_with("script-src"))
            .unwrap_or_default();
        assert!(!scripts.contains("unsafe-inline"), "{local}");
        let aws = policy(&ConsoleSignIn {
            oidc: Some(OidcClient::new(
                "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_abc/",
                "client",
            )),
            local_link: false,
        });
        assert!(
            aws.contains("connect-src 'self' https://cognito-idp.us-east-1.amazonaws.com;"),
            "{aws}"
        );
        assert_eq!(
            origin("http://127.0.0.1:9000/issuer"),
            Some("http://127.0.0.1:9000".into())
        );
        assert_eq!(origin("nonsense"), None);
    }

    #[test]
    fn the_preview_frame_shows_https_images_and_runs_nothing() {
        let directive = |policy: &str, name: &str| {
            policy
                .split(';')
                .map(str::trim)
                .find(|d| d.split_whitespace().next() == Some(name))
                .map(str::to_string)
        };
        assert_eq!(
            directive(PREVIEW_POLICY, "img-src").as_deref(),
            Some("img-src https: data:")
        );
        assert_eq!(
            directive(PREVIEW_POLICY, "script-src"),
            None,
            "default-src 'none' covers scripts"
        );
        assert_eq!(
            directive(PREVIEW_POLICY, "default-src").as_deref(),
            Some("default-src 'none'")
        );
        assert_eq!(
            directive(PREVIEW_POLICY, "sandbox").as_deref(),
            Some("sandbox allow-same-origin"),
            "no allow-scripts"
        );
        // The console itself still takes images from its own origin only.
        let console = policy(&ConsoleSignIn::default());
        assert_eq!(directive(&console, "img-src").as_deref(), Some("img-src 'self' data:"));
        assert_eq!(directive(&console, "frame-src").as_deref(), Some("frame-src 'self'"));
    }
}
