//! `crm-local serve`'s own guards (issue 16 item 8, decision 0039): it
//! listens on loopback unless `--allow-remote`, answers only requests whose
//! `Host` is its own address (DNS rebinding), and shows `/_local/mail` only
//! with its token or the mail link it prints. The app under test is the one
//! `serve` runs ([`crm_local::runtime::serve::guarded_app`]).

use crm_api::{Scope, Scopes};
use crm_local::runtime::serve::{bind_policy, guarded_app, serve, ClockKind, LocalGuard, ServeConfig, ServeError};
use crm_tests::{TestApi, TOKEN};
use std::net::SocketAddr;

const BOUND: &str = "127.0.0.1:3000";

/// The test API behind the guards of a server bound to `127.0.0.1:3000`.
fn guarded(public_base_url: Option<&str>) -> (TestApi, LocalGuard) {
    let mut api = TestApi::new();
    let guard = LocalGuard::new(BOUND.parse().expect("address"), public_base_url, TOKEN);
    api.app = guarded_app(&api.runtime, TOKEN, &guard);
    (api, guard)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn minted(scope: Scope) -> String {
    crm_api::mint_local_token(TOKEN, Scopes::none().with(scope))
}

#[tokio::test]
async fn requests_for_another_host_are_refused_with_a_problem() {
    let (api, _) = guarded(None);
    let auth = bearer(TOKEN);
    for host in ["127.0.0.1:3000", "localhost:3000", "LOCALHOST:3000", "[::1]:3000"] {
        let answer = api
            .call_with("GET", "/health", None, &[("host", host), ("authorization", &auth)])
            .await;
        assert_eq!(answer.status, 200, "{host}: {:?}", answer.body);
    }
    // A rebinding page sends its own name; another port is another server.
    for host in [
        "attacker.example",
        "attacker.example:3000",
        "127.0.0.1:3001",
        "localhost",
        "0.0.0.0:3000",
    ] {
        let answer = api
            .call_with("GET", "/health", None, &[("host", host), ("authorization", &auth)])
            .await;
        assert_eq!(answer.status, 421, "{host}: {:?}", answer.body);
        assert_eq!(answer.content_type(), "application/problem+json");
        assert_eq!(answer.body["type"], "https://crm.dev/problems/host-not-allowed");
        let detail = answer.body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(host) && detail.contains("127.0.0.1:3000"), "{detail}");
    }
    // Every route, the ones without a bearer token too.
    let signed_link = api
        .call_with("GET", "/u/anything", None, &[("host", "attacker.example")])
        .await;
    assert_eq!(signed_link.status, 421);
    let ingest = api
        .call_with(
            "POST",
            "/v1/track",
            Some("{}"),
            &[("host", "attacker.example"), ("authorization", &api.write_key_header())],
        )
        .await;
    assert_eq!(ingest.status, 421);
    let mail = api
        .call_with(
            "GET",
            "/_local/mail",
            None,
            &[("host", "attacker.example"), ("authorization", &auth)],
        )
        .await;
    assert_eq!(mail.status, 421);
    // No Host at all (HTTP/1.0): refused too.
    assert_eq!(
        api.call_with("GET", "/health", None, &[("authorization", &auth)])
            .await
            .status,
        421
    );
}

#[tokio::test]
async fn the_public_base_url_host_is_answered() {
    let (api, _) = guarded(Some("https://crm.shop.example"));
    for host in ["crm.shop.example", "crm.shop.example:443", "127.0.0.1:3000"] {
        let answer = api
            .call_with(
                "GET",
                "/health",
                None,
                &[("host", host), ("authorization", &bearer(TOKEN))],
            )
            .await;
        assert_eq!(answer.status, 200, "{host}");
    }
    let other = api
        .call_with(
            "GET",
            "/health",
            None,
            &[("host", "crm.shop.example:8443"), ("authorization", &bearer(TOKEN))],
        )
        .await;
    assert_eq!(other.status, 421);
}

#[tokio::test]
async fn the_mail_viewer_needs_the_token_or_the_printed_session() {
    let (api, guard) = guarded(None);
    let host = ("host", BOUND);
    for path in ["/_local/mail", "/_local/mail/1", "/_local/mail/1/raw"] {
        let anonymous = api.call_with("GET", path, None, &[host]).await;
        assert_eq!(anonymous.status, 401, "{path}");
        assert_eq!(anonymous.content_type(), "application/problem+json");
        assert!(anonymous.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("session"));
    }
    let api = &api;
    let with = |token: String| async move {
        api.call_with("GET", "/_local/mail", None, &[host, ("authorization", &bearer(&token))])
            .await
    };
    assert_eq!(with(TOKEN.to_string()).await.status, 200);
    assert_eq!(with(minted(Scope::Admin)).await.status, 200);
    let read_only = with(minted(Scope::Read)).await;
    assert_eq!(read_only.status, 403);
    assert_eq!(read_only.body["required_scope"], "crm/admin");
    assert_eq!(with("not-the-token".into()).await.status, 401);

    // The banner's link: once with ?session=, then the cookie (and the session leaves the URL).
    let link = guard.mail_link("http://127.0.0.1:3000");
    let (_, query) = link.split_once("/_local/mail").expect("a mail link");
    let session = query.trim_start_matches("?session=");
    let opened = api
        .call_with("GET", &format!("/_local/mail{query}"), None, &[host])
        .await;
    assert_eq!(opened.status, 303, "{:?}", opened.body);
    assert_eq!(opened.headers["location"], "/_local/mail");
    let cookie = opened.headers["set-cookie"].to_str().expect("cookie").to_string();
    assert!(
        cookie.starts_with(&format!("crm_local_mail_3000={session};")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/_local"));
    let pair = cookie.split(';').next().expect("name=value");
    let shown = api
        .call_with(
            "GET",
            "/_local/mail",
            None,
            &[host, ("cookie", &format!("theme=dark; {pair}"))],
        )
        .await;
    assert_eq!(shown.status, 200);
    assert!(shown.content_type().starts_with("text/html"));

    // A wrong session, another port's cookie, or the session as an API token: refused.
    let wrong = api.call_with("GET", "/_local/mail?session=0000", None, &[host]).await;
    assert_eq!(wrong.status, 401);
    let other_port = api
        .call_with(
            "GET",
            "/_local/mail",
            None,
            &[host, ("cookie", &format!("crm_local_mail_3001={session}"))],
        )
        .await;
    assert_eq!(other_port.status, 401);
    let as_token = api
        .call_with(
            "GET",
            "/customers?email=a@example.com",
            None,
            &[host, ("authorization", &bearer(session))],
        )
        .await;
    assert_eq!(as_token.status, 401);
}

#[test]
fn only_loopback_without_allow_remote() {
    for addr in ["127.0.0.1:3000", "[::1]:3000", "127.0.0.2:0"] {
        let addr: SocketAddr = addr.parse().expect("address");
        assert!(matches!(bind_policy(addr, false), Ok(None)), "{addr}");
    }
    for addr in ["0.0.0.0:3000", "192.168.1.5:3000", "[::]:3000"] {
        let addr: SocketAddr = addr.parse().expect("address");
        match bind_policy(addr, false) {
            Err(e @ ServeError::RemoteAddress { .. }) => {
                let message = e.to_string();
                assert!(
                    message.contains("--allow-remote") && message.contains(&addr.to_string()),
                    "{message}"
                );
            }
            other => panic!("{addr}: {other:?}"),
        }
        match bind_policy(addr, true) {
            Ok(Some(warning)) => {
                assert!(
                    warning.starts_with("WARNING") && warning.contains(&addr.to_string()),
                    "{warning}"
                );
                assert!(warning.contains("--public-base-url"), "{warning}");
            }
            other => panic!("{addr}: {other:?}"),
        }
    }
}

/// `serve` itself refuses before it binds or opens anything.
#[tokio::test]
async fn serve_refuses_a_remote_address_without_allow_remote() {
    let dir = tempfile::tempdir().expect("temp dir");
    let refused = serve(ServeConfig {
        addr: "0.0.0.0:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        token: Some(TOKEN.into()),
        allow_remote: false,
        template: None,
        clock: ClockKind::System,
        public_base_url: None,
        retention: crm_core::retention::RetentionPolicy::new(90, 7).expect("policy"),
        require_analytics_consent: false,
        jwt_issuer: None,
        jwt_audiences: Vec::new(),
        console_client_id: None,
    })
    .await;
    assert!(matches!(refused, Err(ServeError::RemoteAddress { .. })), "{refused:?}");
    assert!(!dir.path().join("crm.db").exists(), "nothing opened");
}

/// Over a real socket, as a browser's request arrives: the Host check sees the header sent.
#[tokio::test]
async fn over_the_wire_the_host_header_decides() {
    let api = TestApi::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let guard = LocalGuard::new(addr, None, TOKEN);
    let app = guarded_app(&api.runtime, TOKEN, &guard);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let get = |host: String| {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            write!(
                stream,
                "GET /health HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
            )
            .expect("send");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("read");
            answer
        })
    };
    let own = get(format!("localhost:{}", addr.port())).await.expect("request");
    assert!(own.starts_with("HTTP/1.1 200"), "{own}");
    let rebound = get(format!("rebind.attacker.example:{}", addr.port()))
        .await
        .expect("request");
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert!(rebound.contains("host-not-allowed"), "{rebound}");
    server.abort();
}
