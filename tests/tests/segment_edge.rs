//! What real Segment clients send reaches the CRM (issue 17 item 1, the
//! error half of item 4; decision 0050), end to end over the local runtime:
//! gzip and deflate bodies (a decompression bomb is 413), analytics-next's
//! one-letter paths with `text/plain` bodies and the key in the body, its
//! settings route, CORS per source, timestamps corrected by `sentAt`, and
//! errors with Segment's `code` and `message` (401 for a wrong key,
//! `Retry-After` on 503).

use async_trait::async_trait;
use base64::Engine;
use chrono::Duration;
use crm_api::AllowedOrigins;
use crm_core::event::EventEnvelope;
use crm_core::ports::{
    AppendError, AppendRequest, Appended, CommandReceipt, EventPage, EventStore, LoadedStream, Snapshot, StoreError,
};
use crm_tests::{Answer, TestApi, TOKEN};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use serde_json::{json, Value};
use std::io::Write;
use std::sync::Arc;

const SHOP: &str = "https://shop.example";

fn start() -> chrono::DateTime<chrono::Utc> {
    crm_tests::time("2026-11-23T15:00:00Z")
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).expect("deflate");
    encoder.finish().expect("deflate")
}

/// The API, its browser source `local-web` allowing pages of [`SHOP`] only.
fn shop_api() -> TestApi {
    let mut api = TestApi::at(start());
    let origins = AllowedOrigins::parse(&format!("local-web={SHOP}")).expect("origins");
    api.runtime.ingest_sources = api
        .runtime
        .ingest_sources
        .clone()
        .with_allowed_origins(origins)
        .expect("a known source");
    api.app = api.runtime.app(TOKEN.to_string());
    api
}

/// Sends `body` as analytics-next does: `text/plain`, the write key in the body.
async fn as_browser(api: &TestApi, path: &str, mut body: Value, origin: Option<&str>) -> Answer {
    body["writeKey"] = json!(api.runtime.local_client_write_key);
    let mut headers = vec![("content-type", "text/plain;charset=UTF-8")];
    if let Some(origin) = origin {
        headers.push(("origin", origin));
    }
    api.call_with("POST", path, Some(&body.to_string()), &headers).await
}

async fn occurred(api: &TestApi, event_type: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    api.events_of_type(event_type)
        .await
        .iter()
        .map(|e| e.occurred_at)
        .collect()
}

#[tokio::test]
async fn gzip_and_deflate_bodies_are_taken_as_the_server_libraries_send_them() {
    let api = TestApi::at(start());
    let auth = api.write_key_header();
    // segment-analytics-python with gzip=True: a gzip batch, its sentAt at the batch level.
    let batch = json!({
        "batch": [
            { "type": "page", "messageId": "gz-1", "anonymousId": "anon-gz", "properties": { "url": "https://shop.example/a" },
              "timestamp": "2026-11-23T14:59:00+00:00" },
            { "type": "track", "messageId": "gz-2", "anonymousId": "anon-gz", "event": "Wishlist Shared",
              "timestamp": "2026-11-23T14:59:30.123456+00:00" }
        ],
        "sentAt": "2026-11-23T15:00:00.000000+00:00"
    });
    let answer = api
        .call_raw(
            "POST",
            "/v1/batch",
            Some(gzip(batch.to_string().as_bytes())),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["accepted"], 2, "{:?}", answer.body);
    // deflate (zlib) on a single call.
    let track = json!({ "messageId": "df-1", "anonymousId": "anon-gz", "event": "Wishlist Shared" });
    let answer = api
        .call_raw(
            "POST",
            "/v1/track",
            Some(zlib(track.to_string().as_bytes())),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("content-encoding", "deflate"),
            ],
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["success"], true);
    // An encoding the API cannot read is 415, with Segment's code.
    let answer = api
        .call_raw(
            "POST",
            "/v1/track",
            Some(track.to_string().into_bytes()),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("content-encoding", "br"),
            ],
        )
        .await;
    assert_eq!(answer.status, 415, "{:?}", answer.body);
    assert_eq!(answer.body["code"], "unsupported_media_type");
}

#[tokio::test]
async fn a_gzip_bomb_is_413_and_stores_nothing() {
    let api = TestApi::at(start());
    let before = api.event_count().await;
    // 20 MB once inflated (a valid JSON prefix, then spaces), about 20 KB as sent.
    let mut inflated = br#"{"batch":[{"type":"page","messageId":"bomb","anonymousId":"a"}]"#.to_vec();
    inflated.extend(std::iter::repeat_n(b' ', 20 * 1024 * 1024));
    inflated.push(b'}');
    let bomb = gzip(&inflated);
    assert!(bomb.len() < 100 * 1024, "the bomb is small as sent: {}", bomb.len());
    let auth = api.write_key_header();
    let answer = api
        .call_raw(
            "POST",
            "/v1/batch",
            Some(bomb),
            &[("authorization", &auth), ("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(answer.status, 413, "{:?}", answer.body);
    assert_eq!(answer.body["code"], "payload_too_large");
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("decompressed")),
        "{:?}",
        answer.body
    );
    assert_eq!(api.event_count().await, before);
}

#[tokio::test]
async fn analytics_next_sends_to_the_one_letter_paths_in_text_plain() {
    let api = shop_api();
    let page = json!({ "type": "page", "messageId": "ajs-next-p1", "anonymousId": "anon-browser",
        "properties": { "url": "https://shop.example/lamps", "path": "/lamps" },
        "context": { "library": { "name": "analytics.js", "version": "npm:next-1.81.0" }, "page": { "url": "https://shop.example/lamps" } },
        "integrations": {}, "_metadata": { "bundled": ["Segment.io"], "unbundled": [], "bundledIds": [] },
        "timestamp": "2026-11-23T14:59:59.000Z", "sentAt": "2026-11-23T15:00:00.000Z" });
    let answer = as_browser(&api, "/v1/p", page, Some(SHOP)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.headers["access-control-allow-origin"], SHOP);
    let track = json!({ "type": "track", "messageId": "ajs-next-t1", "anonymousId": "anon-browser",
        "event": "Product Viewed", "properties": { "product_id": "sku-1", "price": 12.5 } });
    let answer = as_browser(&api, "/v1/t", track, Some(SHOP)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // The batching strategy: /v1/b, one sentAt for the batch.
    let batch = json!({ "batch": [
        { "type": "track", "messageId": "ajs-next-b1", "anonymousId": "anon-browser", "event": "Product Viewed",
          "properties": { "product_id": "sku-2" }, "timestamp": "2026-11-23T14:59:58.000Z" }
    ], "sentAt": "2026-11-23T15:00:00.000Z" });
    let answer = as_browser(&api, "/v1/b", batch, Some(SHOP)).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    assert_eq!(answer.body["accepted"], 1, "{:?}", answer.body);
    // Every short path is its long route: a message of another call is refused by type.
    let identify = json!({ "type": "track", "messageId": "ajs-next-i1", "anonymousId": "anon-browser", "event": "x" });
    let answer = as_browser(&api, "/v1/i", identify, None).await;
    assert_eq!(answer.status, 422, "{:?}", answer.body);
    assert_eq!(answer.body["code"], "invalid_request");
    assert_eq!(answer.body["message"], "type: \"track\" does not match the route");
    assert_eq!(occurred(&api, "PageViewed").await.len(), 1);
}

#[tokio::test]
async fn the_settings_point_analytics_next_back_at_the_crm() {
    let api = shop_api();
    let key = api.runtime.local_client_write_key.clone();
    let path = format!("/v1/projects/{key}/settings");
    let answer = api
        .call_with("GET", &path, None, &[("host", "127.0.0.1:3000"), ("origin", SHOP)])
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let segment = &answer.body["integrations"]["Segment.io"];
    assert_eq!(segment["apiKey"], key.as_str());
    assert_eq!(segment["apiHost"], "127.0.0.1:3000/v1");
    assert_eq!(segment["protocol"], "http");
    assert_eq!(answer.headers["access-control-allow-origin"], SHOP);
    // Behind a gateway that terminated TLS.
    let answer = api
        .call_with(
            "GET",
            &path,
            None,
            &[("host", "crm.shop.example"), ("x-forwarded-proto", "https")],
        )
        .await;
    assert_eq!(answer.body["integrations"]["Segment.io"]["protocol"], "https");
    assert_eq!(
        answer.body["integrations"]["Segment.io"]["apiHost"],
        "crm.shop.example/v1"
    );
    // An unknown key: 404 with Segment's code.
    let answer = api
        .call_with("GET", "/v1/projects/wk_not_a_key_0123456789/settings", None, &[])
        .await;
    assert_eq!(answer.status, 404, "{:?}", answer.body);
    assert_eq!(answer.body["code"], "not_found");
    // A page of another origin may not load them.
    let answer = api
        .call_with("GET", &path, None, &[("origin", "https://evil.example")])
        .await;
    assert_eq!(answer.status, 403, "{:?}", answer.body);
    assert!(answer.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn cors_answers_the_origins_each_source_allows() {
    let api = shop_api();
    let api_ref = &api;
    let preflight = |origin: &'static str| async move {
        let api = api_ref;
        api.call_with(
            "OPTIONS",
            "/v1/t",
            None,
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
        )
        .await
    };
    let allowed = preflight(SHOP).await;
    assert_eq!(allowed.status, 204, "{:?}", allowed.body);
    assert_eq!(allowed.headers["access-control-allow-origin"], SHOP);
    assert!(allowed.headers["access-control-allow-methods"]
        .to_str()
        .is_ok_and(|m| m.contains("POST")));
    assert!(allowed.headers["access-control-allow-headers"]
        .to_str()
        .is_ok_and(|h| h.contains("content-type") && h.contains("content-encoding")));
    let refused = preflight("https://evil.example").await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    assert!(refused.headers.get("access-control-allow-origin").is_none());
    // A simple request (no preflight) from another origin is refused by its source.
    let track = json!({ "type": "track", "messageId": "evil-1", "anonymousId": "anon-evil", "event": "x" });
    let answer = as_browser(&api, "/v1/t", track, Some("https://evil.example")).await;
    assert_eq!(answer.status, 403, "{:?}", answer.body);
    assert_eq!(answer.body["code"], "forbidden");
    assert!(api.events_of_type("CustomEvent").await.is_empty());
    // The server key allows no page at all, even the shop's.
    let server = api
        .call_with(
            "POST",
            "/v1/track",
            Some(&json!({ "messageId": "srv-1", "anonymousId": "a", "event": "x" }).to_string()),
            &[("authorization", &api.write_key_header()), ("origin", SHOP)],
        )
        .await;
    assert_eq!(server.status, 403, "{:?}", server.body);
    // Without Origin (a server library), the server key works.
    let server = api
        .segment(
            "track",
            &json!({ "messageId": "srv-2", "anonymousId": "a", "event": "x" }),
        )
        .await;
    assert_eq!(server.status, 200, "{:?}", server.body);
}

#[tokio::test]
async fn timestamps_are_corrected_by_sent_at() {
    let api = TestApi::at(start());
    // A device clock one hour fast: the event 30 s before sending, by its clock.
    let fast = json!({ "messageId": "skew-1", "anonymousId": "anon-skew", "event": "Wishlist Shared",
        "timestamp": "2026-11-23T15:59:30Z", "sentAt": "2026-11-23T16:00:00Z" });
    let answer = api.segment("track", &fast).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    // A clock 55 minutes fast: epoch milliseconds and an offset without a colon, 5 minutes
    // before the batch's sentAt by that clock.
    let batch = json!({ "batch": [
        { "type": "track", "messageId": "skew-2", "anonymousId": "anon-skew", "event": "Wishlist Shared",
          "timestamp": (start() + Duration::minutes(50)).timestamp_millis() },
        { "type": "track", "messageId": "skew-3", "anonymousId": "anon-skew", "event": "Wishlist Shared",
          "timestamp": "2026-11-23T15:50:00.000+0000" }
    ], "sentAt": "2026-11-23T15:55:00Z" });
    let answer = api.segment("batch", &batch).await;
    assert_eq!(answer.body["accepted"], 2, "{:?}", answer.body);
    let mut times = occurred(&api, "CustomEvent").await;
    times.sort();
    assert_eq!(
        times,
        vec![
            start() - Duration::minutes(5),
            start() - Duration::minutes(5),
            start() - Duration::seconds(30)
        ],
        "received at 15:00, each as long before as the client says it was before sending"
    );
}

#[tokio::test]
async fn a_wrong_write_key_is_401_with_code_and_message() {
    let api = TestApi::at(start());
    let body = json!({ "messageId": "k-1", "anonymousId": "a", "event": "x" }).to_string();
    let wrong = basic("wk_wrong_0123456789abcdef");
    let answer = api
        .call_with("POST", "/v1/track", Some(&body), &[("authorization", &wrong)])
        .await;
    assert_eq!(answer.status, 401, "{:?}", answer.body);
    assert_eq!(answer.content_type(), "application/problem+json");
    assert_eq!(answer.body["code"], "unauthorized");
    assert_eq!(answer.body["message"], "the write key is not valid");
    assert_eq!(
        answer.body["detail"], "the write key is not valid",
        "the problem fields stay"
    );
    let answer = api.call_with("POST", "/v1/t", Some(&body), &[]).await;
    assert_eq!(answer.status, 401, "{:?}", answer.body);
    assert_eq!(answer.body["code"], "unauthorized");
}

/// A store that is throttled on every call (DynamoDB's answer under load).
struct Throttled;

fn throttled() -> StoreError {
    StoreError::Unavailable("throttled".into())
}

#[async_trait]
impl EventStore for Throttled {
    async fn load(&self, _: &str) -> Result<LoadedStream, StoreError> {
        Err(throttled())
    }
    async fn read_stream(&self, _: &str, _: u64, _: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        Err(throttled())
    }
    async fn append(&self, _: AppendRequest) -> Result<Appended, AppendError> {
        Err(AppendError::Store(throttled()))
    }
    async fn receipt(&self, _: &str) -> Result<Option<CommandReceipt>, StoreError> {
        Err(throttled())
    }
    async fn reservation_owner(&self, _: &str) -> Result<Option<String>, StoreError> {
        Err(throttled())
    }
    async fn save_snapshot(&self, _: Snapshot) -> Result<(), StoreError> {
        Err(throttled())
    }
    async fn read_all(&self, _: Option<&str>, _: usize) -> Result<EventPage, StoreError> {
        Err(throttled())
    }
}

#[tokio::test]
async fn a_throttled_store_answers_503_with_retry_after() {
    let mut api = TestApi::at(start());
    let runtime = &api.runtime;
    let state = crm_api::AppState::new(
        Arc::new(Throttled),
        runtime.docs.clone(),
        runtime.clock.clone(),
        runtime.scheduler.clone(),
        crm_api::Auth::BearerToken(TOKEN.to_string()),
    )
    .with_identifiers(runtime.identifiers.clone())
    .with_ingest_sources(runtime.ingest_sources.clone());
    api.app = crm_api::router(state);
    let single = api
        .segment(
            "track",
            &json!({ "messageId": "t-1", "anonymousId": "a", "event": "x" }),
        )
        .await;
    assert_eq!(single.status, 503, "{:?}", single.body);
    assert_eq!(single.headers["retry-after"], "1");
    assert_eq!(single.body["code"], "unavailable");
    let batch = api
        .segment(
            "batch",
            &json!({ "batch": [{ "type": "track", "messageId": "t-2", "anonymousId": "a", "event": "x" }] }),
        )
        .await;
    assert_eq!(batch.status, 503, "{:?}", batch.body);
    assert_eq!(batch.headers["retry-after"], "1");
    assert_eq!(batch.body["retry"], 1, "{:?}", batch.body);
    // A command of the API over the same store.
    let registered = api
        .call(
            "POST",
            "/customers",
            Some(&crm_tests::registration("throttled@shop.example")),
        )
        .await;
    assert_eq!(registered.status, 503, "{:?}", registered.body);
    assert_eq!(registered.headers["retry-after"], "1", "every 503 of the API");
}
