//! The HTTP client of every AWS SDK client the CRM builds (decision 0062,
//! "Addendum: HTTP/1.1 client, liquid filters"): HTTP/1.1 only, over
//! hyper-util's pooled client, with rustls on ring for `https://` and plain
//! TCP for `http://` (moto). The SDK's own client (aws-smithy-http-client)
//! always links h2, about 0.35 MiB in every function, for HTTP/2 that the
//! AWS services the functions call (DynamoDB, SQS, SES, SNS, KMS, Secrets
//! Manager, EventBridge, Scheduler, STS) answer over HTTP/1.1 anyway.
//!
//! It honours the [`HttpConnectorSettings`] the SDK passes per client: the
//! connect timeout covers the TCP connection and the TLS handshake, the read
//! timeout the wait from sending the request to the response's head, as the
//! SDK's client does. Its failures become [`ConnectorError`]s of the kind the
//! SDK's retry classifier expects: a timeout, an I/O failure (refused, reset,
//! closed, name lookup: retried), a user error, or other.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::retries::ErrorKind;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::body::SdkBody;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Https = hyper_rustls::HttpsConnector<TcpConnector>;
type Client = hyper_util::client::legacy::Client<ConnectTimeout, SdkBody>;

/// A wait of the client that ran out: the connection (TCP and TLS) or the
/// response's head.
#[derive(Debug, thiserror::Error)]
#[error("HTTP {what} timeout after {after:?}")]
pub struct TimedOut {
    /// `connect` or `read`.
    pub what: &'static str,
    pub after: Duration,
}

/// The SDK HTTP client: HTTP/1.1, rustls on ring, the system's roots.
pub fn http1_client() -> SharedHttpClient {
    SharedHttpClient::new(Http1Client::default())
}

/// The connect and the read timeout.
type Timeouts = (Option<Duration>, Option<Duration>);

/// One [`Http1Connector`] per distinct pair of timeouts, as the SDK's
/// client caches them (clients with the same settings share the pool).
#[derive(Debug, Default)]
struct Http1Client {
    connectors: RwLock<HashMap<Timeouts, SharedHttpConnector>>,
}

impl HttpClient for Http1Client {
    fn http_connector(&self, settings: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        let key = (settings.connect_timeout(), settings.read_timeout());
        if let Some(found) = self.connectors.read().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return found.clone();
        }
        let mut connectors = self.connectors.write().unwrap_or_else(|e| e.into_inner());
        connectors
            .entry(key)
            .or_insert_with(|| SharedHttpConnector::new(Http1Connector::new(key.0, key.1)))
            .clone()
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        Some(ConnectorMetadata::new("hyper", Some("1.x-http1".into())))
    }
}

/// The rustls configuration, built once per process: ring with the seven
/// suites the SDK's client allows (TLS 1.3 AES-GCM; TLS 1.2 ECDHE with
/// AES-GCM or ChaCha20-Poly1305), TLS 1.2 and 1.3, the system's roots.
static TLS: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    use rustls::CipherSuite as S;
    const SUITES: [S; 7] = [
        S::TLS13_AES_256_GCM_SHA384,
        S::TLS13_AES_128_GCM_SHA256,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let base = rustls::crypto::ring::default_provider();
    let cipher_suites = base
        .cipher_suites
        .iter()
        .filter(|s| SUITES.contains(&s.suite()))
        .copied()
        .collect();
    let provider = Arc::new(rustls::crypto::CryptoProvider { cipher_suites, ..base });
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::warn!(errors = ?native.errors, "errors loading the system's root certificates");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, invalid) = roots.add_parsable_certificates(native.certs);
    if roots.is_empty() {
        tracing::warn!(invalid, "no usable system root certificate: HTTPS calls will fail");
    }
    // Not input: ring supports both of rustls' default versions, which
    // `the_tls_configuration_is_ring_with_the_sdk_suites` checks.
    #[allow(clippy::expect_used)]
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("rustls on ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
});

/// A pool of HTTP/1.1 connections with one pair of timeouts.
#[derive(Clone, Debug)]
struct Http1Connector {
    client: Client,
    read_timeout: Option<Duration>,
}

impl Http1Connector {
    fn new(connect_timeout: Option<Duration>, read_timeout: Option<Duration>) -> Self {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(TLS.clone())
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = hyper_util::client::legacy::Builder::new(TokioExecutor::new())
            // Without a timer the pool never expires idle connections.
            .pool_timer(TokioTimer::new())
            .build(ConnectTimeout {
                inner: https,
                timeout: connect_timeout,
            });
        Self { client, read_timeout }
    }
}

impl HttpConnector for Http1Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let request = match request.try_into_http1x() {
            Ok(r) => r,
            Err(e) => return HttpConnectorFuture::ready(Err(ConnectorError::user(e.into()))),
        };
        let sent = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let answered = match read_timeout {
                None => sent.await,
                Some(after) => match tokio::time::timeout(after, sent).await {
                    Ok(answered) => answered,
                    Err(_) => return Err(ConnectorError::timeout(Box::new(TimedOut { what: "read", after }))),
                },
            };
            match answered {
                Ok(response) => HttpResponse::try_from(response.map(SdkBody::from_body_1_x))
                    .map_err(|e| ConnectorError::other(e.into(), None)),
                Err(e) => Err(connector_error(Box::new(e))),
            }
        })
    }
}

/// The TCP + TLS connector with the connect timeout around both.
#[derive(Clone, Debug)]
struct ConnectTimeout {
    inner: Https,
    timeout: Option<Duration>,
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<<Https as tower_service::Service<http::Uri>>::Response, BoxError>> + Send>>;

impl tower_service::Service<http::Uri> for ConnectTimeout {
    type Response = <Https as tower_service::Service<http::Uri>>::Response;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match timeout {
                None => connecting.await,
                Some(after) => match tokio::time::timeout(after, connecting).await {
                    Ok(connected) => connected,
                    Err(_) => Err(Box::new(TimedOut { what: "connect", after }) as BoxError),
                },
            }
        })
    }
}

/// The kind of a failed request, as the SDK's client classifies hyper's
/// errors, so its retry classifier retries the same transient failures: a
/// [`TimedOut`] anywhere in the chain or hyper's own timeout is a timeout; a
/// failure to connect (refused, unreachable, name lookup), a closed or
/// cancelled connection or any I/O error is I/O; a message cut short is
/// transient; a request hyper refuses to send is the user's. The error keeps
/// hyper-util's (`client error (Connect)` for a failed connection, which
/// `provider_error` reads).
pub(crate) fn connector_error(err: BoxError) -> ConnectorError {
    if find::<TimedOut>(err.as_ref()).is_some() {
        return ConnectorError::timeout(err);
    }
    if let Some(h) = find::<hyper::Error>(err.as_ref()) {
        if h.is_timeout() {
            return ConnectorError::timeout(err);
        }
        if h.is_user() {
            return ConnectorError::user(err);
        }
        if h.is_closed() || h.is_canceled() || find::<std::io::Error>(h).is_some() {
            return ConnectorError::io(err);
        }
        if h.is_incomplete_message() {
            return ConnectorError::other(err, Some(ErrorKind::TransientError));
        }
        return ConnectorError::other(err, None);
    }
    if let Some(u) = find::<hyper_util::client::legacy::Error>(err.as_ref()) {
        if u.is_connect() || find::<std::io::Error>(u).is_some() {
            return ConnectorError::io(err);
        }
    }
    ConnectorError::other(err, None)
}

fn find<'a, E: std::error::Error + 'static>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::error::display::DisplayErrorContext;
    use std::io::{Read, Write};
    use std::time::Instant;

    fn get(url: &str) -> HttpRequest {
        let request = http::Request::builder()
            .uri(url)
            .body(SdkBody::empty())
            .expect("a valid request");
        HttpRequest::try_from(request).expect("an http 1 request")
    }

    /// A listener that accepts connections and never answers.
    fn silent_listener() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        (listener, url)
    }

    #[tokio::test]
    async fn a_server_that_never_answers_is_a_timeout_within_the_read_timeout() {
        let (listener, url) = silent_listener();
        let accepting = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let connector = Http1Connector::new(Some(Duration::from_secs(5)), Some(Duration::from_millis(300)));
        let started = Instant::now();
        let err = connector.call(get(&url)).await.expect_err("no answer");
        let took = started.elapsed();
        assert!(err.is_timeout(), "{err:?}");
        // Which wait ran out, and after how long, is in the error (no
        // upper bound on the wall clock: a loaded machine may be slow).
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(
            format!("{}", DisplayErrorContext(&err)).contains("read timeout after 300ms"),
            "{err:?}"
        );
        drop(accepting.join());
    }

    #[tokio::test]
    async fn a_tls_handshake_not_answered_in_time_is_a_connect_timeout() {
        // The TCP connection is accepted, the TLS handshake never answered:
        // the connect timeout covers both.
        let (listener, url) = silent_listener();
        let url = url.replace("http://", "https://");
        let accepting = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let connector = Http1Connector::new(Some(Duration::from_millis(300)), Some(Duration::from_secs(10)));
        let started = Instant::now();
        let err = connector.call(get(&url)).await.expect_err("no handshake");
        let took = started.elapsed();
        assert!(err.is_timeout(), "{err:?}");
        assert!(took >= Duration::from_millis(300), "{took:?}");
        let text = format!("{}", DisplayErrorContext(&err));
        assert!(
            text.contains("connect timeout after 300ms") && text.contains("(Connect)"),
            "{text}"
        );
        drop(accepting.join());
    }

    #[tokio::test]
    async fn a_refused_connection_is_io_and_names_connect() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let connector = Http1Connector::new(Some(Duration::from_secs(2)), Some(Duration::from_secs(2)));
        let err = connector
            .call(get(&format!("http://127.0.0.1:{port}/")))
            .await
            .expect_err("refused");
        assert!(err.is_io(), "{err:?}");
        let text = format!("{}", DisplayErrorContext(&err));
        assert!(text.contains("(Connect)"), "{text}");
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_answer_is_io() {
        let (listener, url) = silent_listener();
        let closing = std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
            }
        });
        let connector = Http1Connector::new(None, Some(Duration::from_secs(5)));
        let err = connector.call(get(&url)).await.expect_err("closed");
        assert!(
            err.is_io() || err.as_other() == Some(ErrorKind::TransientError),
            "{err:?}"
        );
        drop(closing.join());
    }

    #[tokio::test]
    async fn answers_come_back_and_connections_are_reused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        // One connection serving two requests: the pool must reuse it.
        let serving = std::thread::spawn(move || -> std::io::Result<()> {
            let (mut s, _) = listener.accept()?;
            for _ in 0..2 {
                let mut got = Vec::new();
                let mut buf = [0u8; 1024];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")?;
            }
            Ok(())
        });
        let connector = Http1Connector::new(Some(Duration::from_secs(2)), Some(Duration::from_secs(2)));
        for _ in 0..2 {
            let response = connector.call(get(&url)).await.expect("answered");
            assert_eq!(response.status().as_u16(), 204);
            drop(response);
        }
        serving
            .join()
            .expect("server thread")
            .expect("served two on one connection");
    }

    #[test]
    fn the_tls_configuration_is_ring_with_the_sdk_suites() {
        assert_eq!(TLS.crypto_provider().cipher_suites.len(), 7);
        assert!(TLS.alpn_protocols.is_empty(), "no h2 offered");
    }
}
