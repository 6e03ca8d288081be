//! What `crm-local serve` puts in front of the API (decision 0039):
//! - the `Host` check: a request is answered only when its `Host` names the
//!   bound address, `localhost`, `127.0.0.1` or `[::1]` with the bound port,
//!   or the `--public-base-url`'s host. A web page whose name an attacker
//!   re-points at 127.0.0.1 (DNS rebinding) sends its own name and gets 421;
//! - the local pages (`/_local/...`, the mail viewer, which shows
//!   verification tokens and preference-centre links): a bearer token with
//!   `crm/admin`, or the mail session the banner's link carries
//!   (`?session=...` once, then a cookie for this port only);
//! - the console's one-time sign-in (decision 0089): the banner's link
//!   `/console#sign-in=<code>` carries a code that `POST /console/sign-in`
//!   exchanges, once, for the all-scopes token. The code is in the URL's
//!   fragment, which the browser never sends to a server or a log.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use crm_api::scopes::{is_local_session, local_session, local_token_scopes};
use crm_api::{Problem, Scope};
use std::net::SocketAddr;
use std::sync::Arc;

/// The session purpose of the mail viewer.
const MAIL: &str = "mail";

/// The `Host` check and the local pages' credential of one server.
#[derive(Clone)]
pub struct LocalGuard {
    /// Every accepted `Host` value, lower case.
    hosts: Arc<Vec<String>>,
    token: Arc<str>,
    /// The mail session cookie's name: per port, since cookies are shared
    /// by every port of a host.
    cookie: Arc<str>,
    /// The console's one-time sign-in code, until it is used.
    console_code: Arc<std::sync::Mutex<Option<String>>>,
}

impl LocalGuard {
    /// The guard of a server bound to `bound`, reached by customers at
    /// `public_base_url` (if set), whose all-scopes token is `token`.
    pub fn new(bound: SocketAddr, public_base_url: Option<&str>, token: &str) -> Self {
        let port = bound.port();
        let mut hosts = vec![
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        if !bound.ip().is_unspecified() {
            hosts.push(bound.to_string());
        }
        if let Some(authority) = public_base_url.and_then(base_authority) {
            hosts.extend(authority);
        }
        hosts.iter_mut().for_each(|h| h.make_ascii_lowercase());
        hosts.sort();
        hosts.dedup();
        LocalGuard {
            hosts: Arc::new(hosts),
            token: token.into(),
            cookie: format!("crm_local_mail_{port}").into(),
            console_code: Arc::new(std::sync::Mutex::new(Some(format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )))),
        }
    }

    /// The console's one-time sign-in link: `<base>/console#sign-in=<code>`
    /// (`None` once the code is used).
    pub fn console_link(&self, base: &str) -> Option<String> {
        let code = self.console_code.lock().ok()?.clone()?;
        Some(format!("{}/console#sign-in={code}", base.trim_end_matches('/')))
    }

    /// The `Host` values answered.
    pub fn allowed_hosts(&self) -> &[String] {
        &self.hosts
    }

    /// The mail viewer's link with its session: `<base>/_local/mail?session=...`.
    pub fn mail_link(&self, base: &str) -> String {
        format!(
            "{}/_local/mail?session={}",
            base.trim_end_matches('/'),
            local_session(&self.token, MAIL)
        )
    }

    /// `app` behind the `Host` check (every route) and the local pages'
    /// credential, with the console's one-time sign-in.
    pub fn protect(&self, app: Router) -> Router {
        let sign_in = Router::new()
            .route("/console/sign-in", axum::routing::post(console_sign_in))
            .with_state(self.clone());
        app.merge(sign_in)
            .layer(axum::middleware::from_fn_with_state(self.clone(), local_pages))
            .layer(axum::middleware::from_fn_with_state(self.clone(), host_check))
    }
}

/// The `Host` values of a base URL: `host:port`, and `host` alone when the
/// port is the scheme's default (as clients then send it).
fn base_authority(base: &str) -> Option<Vec<String>> {
    let (scheme, rest) = base.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => 443,
        _ => 80,
    };
    // `[::1]` has colons but no port: a port is digits after the last colon.
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    Some(if has_port {
        vec![authority.to_string()]
    } else {
        vec![authority.to_string(), format!("{authority}:{default_port}")]
    })
}

async fn host_check(State(guard): State<LocalGuard>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if guard.hosts.contains(&h.trim().to_ascii_lowercase()) => next.run(req).await,
        other => {
            let named = other.map_or("no Host header".to_string(), |h| format!("Host {h:?}"));
            tracing::warn!(host = %named, "refused: Host is not this server's address");
            Problem::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host-not-allowed",
                "Host not allowed",
                format!(
                    "this server answers requests for {} only, and this one was for {named} \
                     (a page of another name pointed at this machine, as DNS rebinding does, is refused); \
                     if clients reach it under another name, start it with --public-base-url",
                    guard.hosts.join(", ")
                ),
            )
            .into_response()
        }
    }
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /console/sign-in` `{"code": "..."}`: the all-scopes token, once,
/// for the banner link's code; 401 for any other code or a second use.
async fn console_sign_in(State(guard): State<LocalGuard>, body: axum::body::Bytes) -> Response {
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_string));
    let Some(code) = code else {
        return Problem::invalid("code", "required: the code of the console link").into_response();
    };
    let granted = match guard.console_code.lock() {
        Ok(mut slot) => match slot.as_deref() {
            Some(expected) if same(expected, &code) => {
                *slot = None;
                true
            }
            _ => false,
        },
        Err(_) => false,
    };
    if !granted {
        tracing::warn!("refused: a console sign-in code that is not (or no longer) this server's");
        return Problem::unauthorized(
            "the sign-in link was used already or is not this server's: paste a token \
             (`crm-local token --scope crm/read ...`) or restart `crm-local serve` for a new link",
        )
        .into_response();
    }
    let mut response = axum::Json(serde_json::json!({ "token": guard.token.as_ref() })).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn cookie_value<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn query_session(req: &Request) -> Option<&str> {
    req.uri()
        .query()?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, _)| *n == "session")
        .map(|(_, v)| v)
}

async fn local_pages(State(guard): State<LocalGuard>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path != "/_local" && !path.starts_with("/_local/") {
        return next.run(req).await;
    }
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(token) = bearer {
        return match local_token_scopes(&guard.token, token) {
            Some(scopes) if scopes.contains(Scope::Admin) => next.run(req).await,
            Some(_) => Problem::insufficient_scope(Scope::Admin).into_response(),
            None => Problem::unauthorized("the bearer token is not valid").into_response(),
        };
    }
    if cookie_value(&req, &guard.cookie).is_some_and(|s| is_local_session(&guard.token, MAIL, s)) {
        return next.run(req).await;
    }
    if let Some(session) = query_session(&req).filter(|s| is_local_session(&guard.token, MAIL, s)) {
        // Once from the banner's link: kept as a cookie of this port's local
        // pages, and the session leaves the address bar.
        let cookie = format!("{}={session}; Path=/_local; HttpOnly; SameSite=Strict", guard.cookie);
        let mut response = (StatusCode::SEE_OTHER, [(header::CACHE_CONTROL, "no-store")]).into_response();
        if let (Ok(cookie), Ok(location)) = (HeaderValue::from_str(&cookie), HeaderValue::from_str(path)) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response.headers_mut().insert(header::LOCATION, location);
            return response;
        }
    }
    Problem::unauthorized(
        "the local pages need the mail link `crm-local serve` printed (…/_local/mail?session=…), \
         or Authorization: Bearer with a token carrying crm/admin",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_the_bound_address_loopback_names_and_the_public_base_url() {
        let guard = LocalGuard::new("127.0.0.1:3000".parse().unwrap(), None, "t");
        assert_eq!(
            guard.allowed_hosts(),
            ["127.0.0.1:3000", "[::1]:3000", "localhost:3000"]
        );
        let remote = LocalGuard::new(
            "0.0.0.0:8080".parse().unwrap(),
            Some("https://CRM.shop.example/base"),
            "t",
        );
        assert_eq!(
            remote.allowed_hosts(),
            [
                "127.0.0.1:8080",
                "[::1]:8080",
                "crm.shop.example",
                "crm.shop.example:443",
                "localhost:8080"
            ]
        );
        let lan = LocalGuard::new(
            "192.168.1.5:3000".parse().unwrap(),
            Some("http://192.168.1.5:3000"),
            "t",
        );
        assert!(lan.allowed_hosts().contains(&"192.168.1.5:3000".to_string()));
        assert!(!lan.allowed_hosts().iter().any(|h| h.starts_with("0.0.0.0")));
        assert_eq!(
            base_authority("http://[::1]"),
            Some(vec!["[::1]".into(), "[::1]:80".into()])
        );
        assert_eq!(base_authority("http://[::1]:9000/x"), Some(vec!["[::1]:9000".into()]));
        assert_eq!(base_authority("not a url"), None);
    }
}
