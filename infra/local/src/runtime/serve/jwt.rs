//! `crm-local serve --jwt-issuer`: the API takes the issuer's JWTs as the
//! HTTP API's JWT authorizer does on AWS (decision 0089): the keys from the
//! issuer's discovery document (`jwks_uri`), an RS256/ES256 signature by
//! the key its `kid` names, `iss` equal to the issuer, `aud` (or Cognito's
//! `client_id`) one of the audiences, `exp` not passed (`nbf` reached).
//! Unknown `kid`: the keys are fetched again (at most once a minute).
//!
//! Plain `http://` issuers only (a local identity provider, the console's
//! test issuer); a TLS client is not in crm-local.

use async_trait::async_trait;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// How soon an unknown `kid` may make the keys be fetched again.
const REFETCH_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum JwtSetupError {
    #[error("--jwt-issuer must be an http:// URL (crm-local has no TLS client): {0}")]
    NotHttp(String),
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
}

/// The issuer's keys and what a token must say.
pub struct IssuerKeys {
    issuer: String,
    audiences: Vec<String>,
    keys: RwLock<(JwkSet, Instant)>,
}

impl IssuerKeys {
    /// Reads the issuer's discovery document and its keys.
    pub async fn discover(issuer: &str, audiences: Vec<String>) -> Result<Self, JwtSetupError> {
        let issuer = issuer.trim_end_matches('/').to_string();
        if !issuer.starts_with("http://") {
            return Err(JwtSetupError::NotHttp(issuer));
        }
        let keys = fetch_keys(&issuer).await?;
        Ok(IssuerKeys {
            issuer,
            audiences,
            keys: RwLock::new((keys, Instant::now())),
        })
    }

    async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, String> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let found = find(&self.keys.read().await.0);
        let jwk = match found {
            Some(jwk) => jwk,
            None => {
                let mut keys = self.keys.write().await;
                if keys.1.elapsed() >= REFETCH_AFTER {
                    let fresh = fetch_keys(&self.issuer).await.map_err(|e| e.to_string())?;
                    *keys = (fresh, Instant::now());
                }
                find(&keys.0).ok_or_else(|| format!("no key {kid:?} at the issuer"))?
            }
        };
        DecodingKey::from_jwk(&jwk).map_err(|e| format!("the issuer's key: {e}"))
    }
}

#[async_trait]
impl crm_api::VerifyJwt for IssuerKeys {
    async fn verify(&self, token: &str) -> Result<Value, String> {
        let header = decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let key = self.key(header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        // `aud` or `client_id`, checked below as API Gateway does.
        validation.validate_aud = false;
        validation.validate_nbf = true;
        // No grace after `exp`, as API Gateway's authorizer gives none.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let claims = decode::<Value>(token, &key, &validation)
            .map_err(|e| format!("refused: {e}"))?
            .claims;
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => claims.get("client_id").and_then(Value::as_str).into_iter().collect(),
        };
        if !audiences.iter().any(|a| self.audiences.iter().any(|want| want == a)) {
            return Err(format!("audience {audiences:?} is not one of {:?}", self.audiences));
        }
        Ok(claims)
    }
}

async fn fetch_keys(issuer: &str) -> Result<JwkSet, JwtSetupError> {
    let discovery_url = format!("{issuer}/.well-known/openid-configuration");
    let discovery = get_json(&discovery_url).await?;
    let jwks_uri = discovery
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| JwtSetupError::Fetch {
            url: discovery_url.clone(),
            message: "no jwks_uri".into(),
        })?
        .to_string();
    let jwks = get_json(&jwks_uri).await?;
    serde_json::from_value(jwks).map_err(|e| JwtSetupError::Fetch {
        url: jwks_uri,
        message: format!("not a JWK set: {e}"),
    })
}

/// GET an `http://` URL as JSON (HTTP/1.1, one connection).
async fn get_json(url: &str) -> Result<Value, JwtSetupError> {
    let fail = |message: String| JwtSetupError::Fetch {
        url: url.to_string(),
        message,
    };
    let uri: hyper::Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(JwtSetupError::NotHttp(url.to_string()));
    }
    let host = uri.host().ok_or_else(|| fail("no host".into()))?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| fail(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| fail(e.to_string()))?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let request = hyper::Request::builder()
        .uri(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(fail(format!("answered {status}")));
    }
    serde_json::from_slice(&body).map_err(|e| fail(format!("not JSON: {e}")))
}
