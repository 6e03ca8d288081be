//! CORS for the ingestion API (`/v1/*` and the settings route, decision
//! 0050): a browser's page may send to it from the origins its source allows
//! (`INGEST_ALLOWED_ORIGINS`).
//!
//! A preflight carries no write key, so it is answered for an origin that
//! any source allows; the request itself then names its source, and
//! [`AllowedOrigins::check`] refuses it (403) when the browser's `Origin` is
//! not one of that source's. A request without `Origin` (a server library)
//! is not a browser's and is not checked. On AWS the HTTP API answers the
//! preflights itself (its CorsConfiguration, template.yaml) and the function
//! still checks each request's origin against its source.

use crate::http::Problem;
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;

/// What a preflight may ask for: Segment's libraries send JSON or text/plain
/// bodies, gzip at times, with the write key as HTTP Basic.
const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
const ALLOW_HEADERS: &str = "authorization, content-type, content-encoding";
/// How long a browser may keep a preflight's answer (seconds).
const MAX_AGE: &str = "600";

/// The origins a source's pages may send from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// `*`: any page (a public key meant for any site).
    Any,
    /// These origins (`scheme://host[:port]`, lower case).
    Listed(Vec<String>),
}

impl Origins {
    fn allows(&self, origin: &str) -> bool {
        match self {
            Origins::Any => true,
            Origins::Listed(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// The origins allowed per source, by source name: none for a source not
/// named (no browser may send with its key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins(BTreeMap<String, Origins>);

/// Why `INGEST_ALLOWED_ORIGINS` does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginsError {
    #[error("INGEST_ALLOWED_ORIGINS: the entry '{0}' is not source=origin [origin ...]")]
    Entry(String),
    #[error("INGEST_ALLOWED_ORIGINS: '{origin}' (source {source_name}) is not an origin: scheme://host[:port], no path, or *")]
    Origin { source_name: String, origin: String },
    #[error("INGEST_ALLOWED_ORIGINS names the source '{0}', which has no write key")]
    UnknownSource(String),
    #[error("INGEST_ALLOWED_ORIGINS names the source '{0}' twice")]
    Twice(String),
}

impl AllowedOrigins {
    /// `INGEST_ALLOWED_ORIGINS`: comma-separated `source=origins` entries,
    /// the origins separated by spaces, each `scheme://host[:port]` (as a
    /// browser sends `Origin`: no path, no trailing slash) or `*` for any
    /// page; blank is none. Example:
    /// `web=https://shop.example https://www.shop.example,app=*`.
    pub fn parse(text: &str) -> Result<Self, OriginsError> {
        let mut allowed = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (name, list) = entry
                .split_once('=')
                .map(|(n, l)| (n.trim(), l.trim()))
                .filter(|(n, l)| !n.is_empty() && !l.is_empty())
                .ok_or_else(|| OriginsError::Entry(entry.to_string()))?;
            let mut origins = Vec::new();
            let mut any = false;
            for origin in list.split_whitespace() {
                if origin == "*" {
                    any = true;
                    continue;
                }
                let normal = normal_origin(origin).ok_or_else(|| OriginsError::Origin {
                    source_name: name.to_string(),
                    origin: origin.to_string(),
                })?;
                origins.push(normal);
            }
            let origins = if any { Origins::Any } else { Origins::Listed(origins) };
            if allowed.insert(name.to_string(), origins).is_some() {
                return Err(OriginsError::Twice(name.to_string()));
            }
        }
        Ok(AllowedOrigins(allowed))
    }

    /// Any page may send with `source`'s key.
    pub fn any_for(source: &str) -> Self {
        AllowedOrigins(BTreeMap::from([(source.to_string(), Origins::Any)]))
    }

    /// The source names these origins are given to.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// Whether a page of `origin` may send with `source`'s key.
    pub fn allows(&self, source: &str, origin: &str) -> bool {
        self.0.get(source).is_some_and(|o| o.allows(origin))
    }

    /// Whether any source allows `origin` (what a preflight is answered for).
    pub fn any_allows(&self, origin: &str) -> bool {
        self.0.values().any(|o| o.allows(origin))
    }

    /// A request of a browser (it carries `Origin`) with `source`'s key is
    /// refused (403) unless the source allows that origin.
    pub fn check(&self, source: &str, headers: &HeaderMap) -> Result<(), Problem> {
        match origin_of(headers) {
            Some(origin) if !self.allows(source, origin) => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "origin-not-allowed",
                "Origin not allowed",
                format!(
                    "the source {source} does not allow pages of {origin} to send with its write key \
                     (INGEST_ALLOWED_ORIGINS)"
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// `scheme://host[:port]` in lower case, or `None` when `text` is not an
/// origin (no scheme, a path, a query, user info).
fn normal_origin(text: &str) -> Option<String> {
    let (scheme, authority) = text.split_once("://")?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let authority_ok = !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@', '*'])
        && authority.chars().all(|c| c.is_ascii_graphic());
    (scheme_ok && authority_ok).then(|| text.to_ascii_lowercase())
}

fn origin_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| !o.is_empty())
}

/// The CORS layer of the ingestion routes: a preflight (`OPTIONS` with
/// `Origin` and `Access-Control-Request-Method`) is answered here, 204 for
/// an origin some source allows and 403 otherwise; any other answer to a
/// browser of such an origin carries `Access-Control-Allow-Origin` (the
/// origin itself, with `Vary: Origin`) and exposes `Retry-After`.
pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = origin_of(req.headers()).map(str::to_string);
    let allowed = origin
        .as_deref()
        .is_some_and(|o| state.ingest_sources.origins().any_allows(o));
    let preflight =
        req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = match (preflight, allowed) {
        (true, true) => {
            let mut answer = StatusCode::NO_CONTENT.into_response();
            let headers = answer.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
            answer
        }
        (true, false) => Problem::new(
            StatusCode::FORBIDDEN,
            "origin-not-allowed",
            "Origin not allowed",
            "no source allows pages of this origin to send (INGEST_ALLOWED_ORIGINS)",
        )
        .into_response(),
        (false, _) => next.run(req).await,
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let (true, Some(value)) = (allowed, origin.and_then(|o| HeaderValue::from_str(&o).ok())) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(origin: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, origin.parse().expect("header"));
        headers
    }

    #[test]
    fn the_setting_reads_origins_per_source() {
        let allowed = AllowedOrigins::parse(
            " web=https://shop.example  HTTPS://www.Shop.example ,app=* , local=http://127.0.0.1:8080",
        )
        .expect("parsed");
        assert!(allowed.allows("web", "https://shop.example"));
        assert!(
            allowed.allows("web", "https://www.shop.example"),
            "compared without case"
        );
        assert!(!allowed.allows("web", "https://evil.example"));
        assert!(
            !allowed.allows("web", "http://shop.example"),
            "the scheme is part of the origin"
        );
        assert!(allowed.allows("app", "https://anything.example"));
        assert!(allowed.allows("local", "http://127.0.0.1:8080"));
        assert!(!allowed.allows("local", "http://127.0.0.1:8081"));
        assert!(
            !allowed.allows("shop", "https://shop.example"),
            "a source not named allows none"
        );
        assert!(allowed.any_allows("https://shop.example") && allowed.any_allows("https://x.example"));
        assert_eq!(allowed.sources().collect::<Vec<_>>(), ["app", "local", "web"]);
        assert_eq!(AllowedOrigins::parse("").expect("blank"), AllowedOrigins::default());
        for bad in [
            "web",
            "web=",
            "=https://a.example",
            "web=shop.example",
            "web=https://shop.example/",
            "web=https://shop.example/path",
            "web=https://user@shop.example",
        ] {
            assert!(AllowedOrigins::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AllowedOrigins::parse("web=*,web=https://a.example"),
            Err(OriginsError::Twice("web".into()))
        );
    }

    #[test]
    fn a_browser_request_must_come_from_an_origin_of_its_source() {
        let allowed = AllowedOrigins::parse("web=https://shop.example").expect("parsed");
        assert!(allowed.check("web", &with_origin("https://shop.example")).is_ok());
        let refused = allowed
            .check("web", &with_origin("https://evil.example"))
            .expect_err("another origin");
        assert_eq!((refused.status, refused.kind), (403, "origin-not-allowed"));
        assert!(
            allowed.check("shop", &with_origin("https://shop.example")).is_err(),
            "a server source allows no page"
        );
        assert!(
            allowed.check("shop", &HeaderMap::new()).is_ok(),
            "without Origin: not a browser"
        );
        assert!(AllowedOrigins::any_for("web")
            .check("web", &with_origin("https://x.example"))
            .is_ok());
    }
}
