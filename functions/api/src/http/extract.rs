//! What a request carries, read and checked before a route runs:
//!
//! * the caller ([`Principal`], set by the authentication middleware) and a
//!   command's `Idempotency-Key` (scoped to the caller and the request),
//!   with its raw body, as one extractor ([`CommandCall`]);
//! * bodies: at most 64 KB ([`RawBody`]), JSON parsed with the path of any
//!   bad field ([`parse_json`]), an empty payload ([`no_payload`]); and the
//!   ingestion API's bodies, gzip or deflate encoded as Segment's libraries
//!   may send them, limited after decompression ([`read_decoded`]);
//! * ids in the path ([`path_id`], [`customer_id`]) and in a body
//!   ([`existing_customer`]), numbers and page sizes in the query
//!   ([`number`], [`page_limit`]).

use super::respond::Problem;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, Method, Uri};
use crm_core::idempotency::IdempotencyKey;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::io::Read;
use uuid::Uuid;

/// The authenticated caller, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct Principal(pub String);

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

pub struct CommandCall {
    pub principal: Principal,
    pub idempotency: Option<IdempotencyKey>,
    pub body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for CommandCall {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let principal = req
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Problem::unauthorized("no authenticated caller"))?;
        let (method, uri, headers) = (req.method().clone(), req.uri().clone(), req.headers().clone());
        let RawBody(body) = RawBody::from_request(req, state).await?;
        let idempotency = idempotency(&headers, &principal, &method, &uri, &body)?;
        Ok(CommandCall {
            principal,
            idempotency,
            body,
        })
    }
}

/// The request's `Idempotency-Key`, scoped to the caller and the request.
fn idempotency(
    headers: &HeaderMap,
    principal: &Principal,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<Option<IdempotencyKey>, Problem> {
    let Some(raw) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let key = raw
        .to_str()
        .ok()
        .filter(|k| IdempotencyKey::is_valid_client_key(k))
        .ok_or_else(|| {
            Problem::malformed("Idempotency-Key must be 1 to 255 printable ASCII characters")
                .with_field("Idempotency-Key")
        })?;
    Ok(Some(IdempotencyKey::new(
        &principal.0,
        key,
        method.as_str(),
        &uri.to_string(),
        body,
    )))
}

/// The raw body, read up to [`crate::MAX_BODY_BYTES`] (413 beyond).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Problem;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > crate::MAX_BODY_BYTES) {
            return Err(Problem::too_large());
        }
        axum::body::to_bytes(req.into_body(), crate::MAX_BODY_BYTES)
            .await
            .map(RawBody)
            .map_err(|_| Problem::too_large())
    }
}

/// How a request body is encoded (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    /// gzip (RFC 1952), also spelled `x-gzip`; concatenated members are read in turn.
    Gzip,
    /// HTTP's deflate: zlib (RFC 1950), or the raw deflate stream some clients send.
    Deflate,
}

impl Encoding {
    /// The encoding `Content-Encoding` names (none, or `identity`: as is). A
    /// list naming more than one compression, or another one, is refused
    /// with 415, as is a header that is not text.
    pub fn of(headers: &HeaderMap) -> Result<Encoding, Problem> {
        let mut found = Encoding::Identity;
        for value in headers.get_all(header::CONTENT_ENCODING) {
            let text = value
                .to_str()
                .map_err(|_| Problem::unsupported_encoding("(not text)"))?;
            for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                let next = match coding.to_ascii_lowercase().as_str() {
                    "identity" => continue,
                    "gzip" | "x-gzip" => Encoding::Gzip,
                    "deflate" => Encoding::Deflate,
                    _ => return Err(Problem::unsupported_encoding(coding)),
                };
                if found != Encoding::Identity {
                    return Err(Problem::unsupported_encoding(text));
                }
                found = next;
            }
        }
        Ok(found)
    }
}

/// Reads a body of at most `limit` bytes once decoded: 413 beyond it, whether
/// the client declared it (`Content-Length`), sent it, or its compressed
/// body inflates past it; inflating stops at `limit + 1` bytes, so a
/// decompression bomb costs no more than the limit. 415 for an encoding
/// other than gzip, deflate or identity; 400 for a body its encoding cannot
/// read.
pub async fn read_decoded(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Problem> {
    let encoding = Encoding::of(headers)?;
    let too_large = || Problem::larger_than("the request body", limit);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
    match encoding {
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => inflate(flate2::read::MultiGzDecoder::new(&raw[..]), "gzip", limit),
        Encoding::Deflate if is_zlib(&raw) => inflate(flate2::read::ZlibDecoder::new(&raw[..]), "deflate", limit),
        Encoding::Deflate => inflate(flate2::read::DeflateDecoder::new(&raw[..]), "deflate", limit),
    }
}

/// A zlib stream's two-byte header: deflate method, a window of at most
/// 32 KB, and a check making the pair a multiple of 31.
fn is_zlib(raw: &[u8]) -> bool {
    match raw {
        [cmf, flg, ..] => cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

/// Inflates at most `limit + 1` bytes from `decoder`: more is a 413.
fn inflate(decoder: impl Read, name: &str, limit: usize) -> Result<Bytes, Problem> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| Problem::malformed(format!("the body is not valid {name}: {e}")))?;
    if out.len() > limit {
        return Err(Problem::larger_than("the decompressed request body", limit));
    }
    Ok(Bytes::from(out))
}

/// Parses JSON: a syntax error is 400, a well-formed body with a wrong or
/// missing field is 422 naming that field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::malformed("a JSON request body is required"));
    }
    // Syntax first (400), then shape (422), so a broken body is never
    // reported as a missing field.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Problem::malformed(format!("the body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        Problem::invalid(field_of(&path, &message), strip_position(&message))
    })
}

/// serde reports a missing or unknown field at its parent's path: name the field itself.
fn field_of(path: &str, message: &str) -> String {
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    let named = quoted("missing field `").or_else(|| quoted("unknown field `"));
    match (path, named) {
        (p, Some(f)) if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
        (".", Some(f)) => f,
        (p, Some(f)) => format!("{p}.{f}"),
        (".", None) => "body".to_string(),
        (p, None) => p.to_string(),
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// The id in a path (a UUID, canonical form): anything else names no `what` (404).
pub(crate) fn path_id(raw: &str, what: &str) -> Result<String, Problem> {
    Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| Problem::not_found(format!("{what} not found")))
}

pub(crate) fn customer_id(raw: &str) -> Result<String, Problem> {
    path_id(raw, "customer")
}

/// The `customer_id` of a request body, which must name a customer the
/// write side knows (422 naming the field otherwise).
pub(crate) async fn existing_customer(state: &AppState, raw: &str) -> Result<String, Problem> {
    let customer = Uuid::parse_str(raw.trim())
        .map_err(|_| Problem::invalid("customer_id", "is not a customer id"))?
        .to_string();
    // An erased customer is gone for everything new (carts, orders).
    if state.customers.load(&customer).await?.is_none_or(|c| c.is_erased()) {
        return Err(Problem::invalid("customer_id", "no such customer"));
    }
    Ok(customer)
}

/// An empty JSON object, for commands without a payload (an empty body is fine too).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoPayload {}

/// Reads a [`NoPayload`]: `{}` or an empty body.
pub(crate) fn no_payload(body: &[u8]) -> Result<NoPayload, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(NoPayload {});
    }
    parse_json(body)
}

/// Default and largest page size of `GET /customers/{id}/events`.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// The `limit` of a paged read: 50 when absent, 1 to 500 (422 otherwise).
pub(crate) fn page_limit(query: &HashMap<String, String>) -> Result<usize, Problem> {
    match number(query, "limit")? {
        None => Ok(DEFAULT_PAGE),
        Some(n) if (1..=MAX_PAGE as u64).contains(&n) => Ok(n as usize),
        Some(_) => Err(Problem::invalid("limit", format!("must be between 1 and {MAX_PAGE}"))),
    }
}

pub(crate) fn number(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, Problem> {
    query
        .get(name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| Problem::invalid(name, "must be a non-negative integer"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        country: String,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        address: Inner,
    }

    use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    fn headers(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, encoding.parse().expect("header"));
        h
    }

    fn compressed<W: Write>(
        mut encoder: W,
        data: &[u8],
        finish: impl FnOnce(W) -> std::io::Result<Vec<u8>>,
    ) -> Vec<u8> {
        encoder.write_all(data).expect("write");
        finish(encoder).expect("finish")
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        compressed(
            GzEncoder::new(Vec::new(), Compression::default()),
            data,
            GzEncoder::finish,
        )
    }

    async fn read(encoding: &str, body: Vec<u8>, limit: usize) -> Result<Bytes, Problem> {
        read_decoded(&headers(encoding), Body::from(body), limit).await
    }

    #[tokio::test]
    async fn gzip_and_both_deflates_are_inflated() {
        let json = br#"{"batch":[]}"#;
        assert_eq!(&read("gzip", gzip(json), 100).await.expect("gzip")[..], json);
        assert_eq!(&read("x-gzip", gzip(json), 100).await.expect("x-gzip")[..], json);
        let zlib = compressed(
            ZlibEncoder::new(Vec::new(), Compression::default()),
            json,
            ZlibEncoder::finish,
        );
        assert_eq!(&read("deflate", zlib, 100).await.expect("zlib")[..], json);
        let raw = compressed(
            DeflateEncoder::new(Vec::new(), Compression::default()),
            json,
            DeflateEncoder::finish,
        );
        assert_eq!(&read("Deflate", raw, 100).await.expect("raw deflate")[..], json);
        assert_eq!(&read("identity", json.to_vec(), 100).await.expect("identity")[..], json);
        let plain = read_decoded(&HeaderMap::new(), Body::from(json.to_vec()), 100).await;
        assert_eq!(&plain.expect("no header")[..], json);
    }

    #[tokio::test]
    async fn the_limit_applies_after_decompression_and_a_bomb_stops_at_it() {
        // 10 MB of zeros: about 10 KB compressed, far below the limit as sent.
        let bomb = gzip(&vec![b'0'; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let refused = read("gzip", bomb, 64 * 1024).await.expect_err("a bomb");
        assert_eq!(refused.status, 413);
        assert!(refused.detail.contains("decompressed"), "{}", refused.detail);
        // Exactly at the limit is taken.
        let at_limit = read("gzip", gzip(&[b' '; 1000]), 1000).await.expect("at the limit");
        assert_eq!(at_limit.len(), 1000);
        assert_eq!(
            read("gzip", gzip(&[b' '; 1001]), 1000).await.expect_err("over").status,
            413
        );
        // A raw body over the limit, compressed or not.
        assert_eq!(
            read("identity", vec![b' '; 1001], 1000).await.expect_err("raw").status,
            413
        );
    }

    #[tokio::test]
    async fn unknown_encodings_are_415_and_broken_ones_400() {
        for unknown in ["br", "compress", "zstd", "gzip, br", "gzip, gzip"] {
            let refused = read(unknown, b"{}".to_vec(), 100).await.expect_err(unknown);
            assert_eq!(refused.status, 415, "{unknown}");
        }
        assert_eq!(
            read("gzip", b"{}".to_vec(), 100).await.expect_err("not gzip").status,
            400
        );
        assert_eq!(
            read("deflate", vec![0xff; 8], 100)
                .await
                .expect_err("not deflate")
                .status,
            400
        );
        assert_eq!(Encoding::of(&headers("identity, gzip")).ok(), Some(Encoding::Gzip));
    }

    #[test]
    fn names_the_field() {
        let p = parse_json::<Outer>(br#"{"name": 5, "address": {"country": "DE"}}"#).unwrap_err();
        assert_eq!((p.status, p.field.as_deref()), (422, Some("name")));
        let p = parse_json::<Outer>(br#"{"name": "x", "address": {}}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("address.country"));
        let p = parse_json::<Outer>(br#"{"name": "x", "address": {"country": "DE"}, "extra": 1}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("extra"));
        let p = parse_json::<Outer>(br#"{"name": "x""#).unwrap_err();
        assert_eq!(p.status, 400);
        let p = parse_json::<Outer>(br#"{"name": "x", "address": {"country": "DE"}} trailing"#).unwrap_err();
        assert_eq!(p.status, 400);
    }
}
