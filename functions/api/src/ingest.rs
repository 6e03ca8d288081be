//! The Segment-compatible ingestion API (issue 8, decision 0023):
//! `POST /v1/track|identify|alias|page|screen|batch`, and the one-letter
//! paths analytics-next sends to (`/v1/t|i|a|p|s|b`, decision 0050),
//! authenticated per source by its write key (HTTP Basic, the key as the
//! user name, as Segment's libraries send it; or `writeKey` in the body). A
//! source is a `client` (a public key: what a browser or an app may do) or a
//! `server` (a secret key: the shop's backend); decision 0042. Bodies are
//! JSON whatever their `Content-Type` (analytics-next sends `text/plain`, to
//! spare a preflight), gzip or deflate encoded or not, at most 500 KB once
//! decoded; a browser's request must come from an origin its source allows.

use crate::cors::{AllowedOrigins, OriginsError};
use crate::http::{asks_to_retry, Problem, RETRY_AFTER_SECONDS};
use crate::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use crm_core::failure::{Classify, FailureKind};
use crm_core::ingest::message::instant;
use crm_core::ingest::{
    batch_items, outcome_json, shopper_groups, Accepted, IngestError, Ingestion, Kind, Source, SourceKind,
    MAX_BATCH_BYTES,
};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

/// The sources allowed to send, each with its kind and write key, and the
/// origins whose pages may send with each key.
#[derive(Clone, Default)]
pub struct IngestSources {
    sources: Vec<(Source, String)>,
    origins: AllowedOrigins,
}

impl std::fmt::Debug for IngestSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .sources
            .iter()
            .map(|(s, _)| format!("{}:{}", s.name, s.kind.as_str()))
            .collect();
        write!(f, "IngestSources({names:?})")
    }
}

impl IngestSources {
    /// `INGEST_WRITE_KEYS`: comma-separated `source:kind:key` entries, kind
    /// `client` or `server`; blank means none. The older two-part
    /// `source:key` still reads, as a `server` source (what every source
    /// could do before decision 0042). A key is at least 16 characters; a
    /// key used twice is refused (it would name two sources).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut sources: Vec<(Source, String)> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let parts: Vec<&str> = entry.splitn(3, ':').map(str::trim).collect();
            let (name, kind, key) = match parts.as_slice() {
                [name, key] => (*name, SourceKind::Server, *key),
                [name, kind, key] => {
                    let kind = SourceKind::parse(kind).ok_or_else(|| {
                        format!("source '{name}': the kind is '{kind}'; it must be client or server (source:kind:key)")
                    })?;
                    (*name, kind, *key)
                }
                _ => return Err("an entry is not source:kind:write-key".to_string()),
            };
            if name.is_empty() || key.len() < 16 {
                return Err(format!(
                    "source '{name}' needs a name and a write key of at least 16 characters"
                ));
            }
            if sources.iter().any(|(_, k)| k == key) {
                return Err(format!("source '{name}' uses a write key another source has"));
            }
            sources.push((
                Source {
                    name: name.to_string(),
                    kind,
                },
                key.to_string(),
            ));
        }
        Ok(IngestSources::new(sources))
    }

    /// These sources, whose keys no browser page may use (until
    /// [`IngestSources::with_allowed_origins`]).
    pub fn new(sources: Vec<(Source, String)>) -> Self {
        IngestSources {
            sources,
            origins: AllowedOrigins::default(),
        }
    }

    /// The origins whose pages may send with each source's key
    /// (`INGEST_ALLOWED_ORIGINS`); naming a source without a key is an error.
    pub fn with_allowed_origins(mut self, origins: AllowedOrigins) -> Result<Self, OriginsError> {
        if let Some(unknown) = origins
            .sources()
            .find(|name| !self.sources.iter().any(|(s, _)| s.name == *name))
        {
            return Err(OriginsError::UnknownSource(unknown.to_string()));
        }
        self.origins = origins;
        Ok(self)
    }

    /// The origins allowed per source.
    pub fn origins(&self) -> &AllowedOrigins {
        &self.origins
    }

    /// The source of this name, when one is configured.
    pub fn named(&self, name: &str) -> Option<&Source> {
        self.sources.iter().map(|(s, _)| s).find(|s| s.name == name)
    }

    /// The source whose write key this is (compared in constant time).
    pub(crate) fn source_of(&self, key: &str) -> Option<&Source> {
        let eq = |a: &[u8], b: &[u8]| a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0;
        self.sources
            .iter()
            .find(|(_, k)| eq(k.as_bytes(), key.as_bytes()))
            .map(|(s, _)| s)
    }
}

/// The write key of a request: HTTP Basic (`<key>:`), else `writeKey` in the body.
fn write_key(headers: &HeaderMap, body: &Value) -> Option<String> {
    let basic = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .map(|user_pass| user_pass.split(':').next().unwrap_or_default().to_string())
        .filter(|k| !k.is_empty());
    basic.or_else(|| body.get("writeKey").and_then(Value::as_str).map(str::to_string))
}

fn ingestion(state: &AppState) -> Ingestion {
    let ingestion = Ingestion::new(
        state.events.clone(),
        state.customers.clone(),
        state.carts.clone(),
        state.orders.clone(),
        state.ingest_settings.clone(),
    )
    .with_schemas(state.custom_schemas.clone());
    // Every refused message is recorded in the source's log (decision 0053).
    match &state.refusals {
        Some(refusals) => ingestion.with_refusals(refusals.clone()),
        None => ingestion,
    }
}

/// Reads the body (at most 500 KB once decoded, whatever its content type)
/// and finds the source; a browser's request must come from an origin the
/// source allows.
async fn authenticate(state: &AppState, headers: &HeaderMap, body: Body) -> Result<(Source, Value), Problem> {
    let body = crate::http::read_decoded(headers, body, MAX_BATCH_BYTES).await?;
    // The key first: a caller without one learns nothing about the body.
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let key = write_key(headers, parsed.as_ref().unwrap_or(&Value::Null))
        .ok_or_else(|| Problem::unauthorized("a write key is required (HTTP Basic, the key as the user name)"))?;
    let source = state
        .ingest_sources
        .source_of(&key)
        .ok_or_else(|| Problem::unauthorized("the write key is not valid"))?
        .clone();
    state.ingest_sources.origins().check(&source.name, headers)?;
    let value = parsed.map_err(|e| Problem::malformed(format!("the body is not valid JSON: {e}")))?;
    Ok((source, value))
}

fn problem(e: IngestError) -> Problem {
    match e {
        IngestError::Rejected(r) => Problem::invalid(r.field, r.message),
        IngestError::Retry(failure) => {
            tracing::warn!(kind = %failure.kind(), error = %failure.cause(), "ingestion failed for now");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "the message could not be stored now; send it again (it is taken once)",
            )
        }
    }
}

async fn single(state: AppState, headers: HeaderMap, body: Body, kind: Kind) -> Result<Response, Problem> {
    let (source, value) = authenticate(&state, &headers, body).await?;
    let now = state.customers.now();
    let outcome = ingestion(&state)
        .take(&source, &value, Some(kind), now)
        .await
        .map_err(problem)?;
    let (duplicate, late) = match outcome {
        Accepted::Stored { late } => (false, late),
        Accepted::Duplicate => (true, false),
    };
    Ok(Json(json!({ "success": true, "duplicate": duplicate, "late": late })).into_response())
}

macro_rules! route {
    ($name:ident, $kind:expr) => {
        pub async fn $name(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
            single(state, headers, body, $kind).await
        }
    };
}

route!(track, Kind::Track);
route!(identify, Kind::Identify);
route!(alias, Kind::Alias);
route!(page, Kind::Page);
route!(screen, Kind::Screen);

/// How many shoppers of one batch are taken at once.
const SHOPPERS_AT_ONCE: usize = 16;

/// `POST /v1/batch`: up to 500 messages (500 KB), each taken or refused on
/// its own. 200 with a result per message; 503 when any must be sent again
/// (sending the whole batch again is safe: what was taken is a duplicate).
pub async fn batch(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, Problem> {
    let (source, value) = authenticate(&state, &headers, body).await?;
    let items = batch_items(&value).map_err(|r| Problem::invalid(r.field, r.message))?;
    let now = state.customers.now();
    // The batch's sentAt corrects the clock skew of messages without their own.
    let sent_at = value.get("sentAt").and_then(instant);
    let ingestion = ingestion(&state);
    // Shoppers side by side, each shopper's messages in order (decision
    // 0054): a batch's time is its longest shopper's, not the sum of all.
    // Each shopper's messages are taken together (decision 0056): their
    // receipts read at once, their activity appended in runs.
    let shoppers = shopper_groups(items);
    let mut outcomes: Vec<(usize, Result<Accepted, IngestError>)> = stream::iter(shoppers)
        .map(|group| {
            let (ingestion, source) = (&ingestion, &source);
            async move {
                let messages: Vec<&Value> = group.iter().map(|&index| &items[index]).collect();
                let taken = ingestion.take_shopper(source, &messages, now, sent_at).await;
                group.into_iter().zip(taken).collect::<Vec<_>>()
            }
        })
        .buffer_unordered(SHOPPERS_AT_ONCE)
        .flat_map(stream::iter)
        .collect()
        .await;
    outcomes.sort_by_key(|(index, _)| *index);
    let (mut accepted, mut duplicates, mut rejected, mut retry) = (0, 0, 0, 0);
    let mut results = Vec::with_capacity(items.len());
    for (index, outcome) in &outcomes {
        let message_id = items[*index].get("messageId").and_then(Value::as_str);
        match outcome {
            Ok(Accepted::Stored { .. }) => accepted += 1,
            Ok(Accepted::Duplicate) => duplicates += 1,
            Err(e) if e.kind() == FailureKind::Poison => rejected += 1,
            Err(_) => retry += 1,
        }
        results.push(outcome_json(*index, message_id, outcome));
    }
    let status = if retry > 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = (
        status,
        Json(json!({
            "success": rejected == 0 && retry == 0,
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
            "retry": retry,
            "results": results,
        })),
    )
        .into_response();
    if asks_to_retry(status) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_keys_are_read_and_checked() {
        let sources = IngestSources::parse(
            "web:client: wk_web_0123456789abcdef , ios:wk_ios_0123456789abcdef, shop:server:wk_shop_0123456789abcdef",
        )
        .expect("parsed");
        assert_eq!(
            sources.source_of("wk_web_0123456789abcdef"),
            Some(&Source::client("web"))
        );
        assert_eq!(
            sources.source_of("wk_ios_0123456789abcdef"),
            Some(&Source::server("ios")),
            "the two-part form is a server source, as before"
        );
        assert_eq!(
            sources.source_of("wk_shop_0123456789abcdef"),
            Some(&Source::server("shop"))
        );
        assert_eq!(sources.source_of("wk_web"), None);
        assert_eq!(sources.named("shop"), Some(&Source::server("shop")));
        assert_eq!(sources.named("wk_shop_0123456789abcdef"), None, "a key names no source");
        assert!(IngestSources::parse("web").is_err());
        assert!(IngestSources::parse("web:short").is_err());
        assert!(IngestSources::parse("web:client:short").is_err());
        let typo = IngestSources::parse("web:clinet:wk_web_0123456789abcdef").expect_err("unknown kind");
        assert!(typo.contains("client or server"), "{typo}");
        assert!(
            IngestSources::parse("a:client:wk_same_0123456789abcdef,b:server:wk_same_0123456789abcdef").is_err(),
            "one key, two sources"
        );
        assert!(IngestSources::parse("").expect("none").sources.is_empty());
        let origins = AllowedOrigins::parse("web=https://shop.example").expect("origins");
        let with = sources.clone().with_allowed_origins(origins).expect("a known source");
        assert!(with.origins().allows("web", "https://shop.example"));
        assert!(!with.origins().allows("shop", "https://shop.example"));
        assert_eq!(
            sources
                .clone()
                .with_allowed_origins(AllowedOrigins::parse("nope=*").expect("origins"))
                .map(|_| ()),
            Err(OriginsError::UnknownSource("nope".into()))
        );
        let mut headers = HeaderMap::new();
        let basic = base64::engine::general_purpose::STANDARD.encode("wk_web_0123456789abcdef:");
        headers.insert(
            axum::http::header::AUTHORIZATION,
            format!("Basic {basic}").parse().expect("header"),
        );
        assert_eq!(
            write_key(&headers, &Value::Null).as_deref(),
            Some("wk_web_0123456789abcdef")
        );
        assert_eq!(
            write_key(&HeaderMap::new(), &json!({ "writeKey": "k" })).as_deref(),
            Some("k")
        );
        let printed = format!("{sources:?}");
        assert!(!printed.contains("wk_"), "keys are never printed: {printed}");
        assert!(printed.contains("web:client"), "{printed}");
    }
}
