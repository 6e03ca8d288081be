//! `GET /v1/projects/{writeKey}/settings`: the source settings analytics-next
//! loads before it sends anything (from `<cdnURL>/v1/projects/<key>/settings`,
//! decision 0050). With `cdnURL` set to the CRM's URL, the answer points its
//! `Segment.io` destination back at the CRM (`apiHost` = this request's host
//! and `/v1`, `protocol` = the request's scheme), so the library sends every
//! call to the CRM's one-letter paths. The write key in the path is the
//! credential: an unknown one is 404, as Segment's CDN answers.

use crate::http::Problem;
use crate::AppState;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The settings of the source whose write key is in the path.
pub async fn settings(
    State(state): State<AppState>,
    key: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let unknown = || Problem::not_found("no source has this write key");
    let Path(key) = key.map_err(|_| unknown())?;
    let source = state.ingest_sources.source_of(&key).ok_or_else(unknown)?;
    state.ingest_sources.origins().check(&source.name, &headers)?;
    let (protocol, host) = reached_at(&headers, &state.public_base_url);
    let mut response = Json(source_settings(&key, &host, protocol)).into_response();
    // Another key or host gives another answer; the library reads it once per page load.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// Where the client reached this API: the scheme the gateway says it was
/// reached with (`X-Forwarded-Proto`, else `http`, as `crm-local serve`
/// answers) and the request's `Host` (else the public base URL's host).
fn reached_at(headers: &HeaderMap, public_base_url: &str) -> (&'static str, String) {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').next().unwrap_or_default().trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
    };
    let protocol = match text("x-forwarded-proto").as_deref() {
        Some("https") => "https",
        Some(_) => "http",
        None if public_base_url.starts_with("https://") && text("host").is_none() => "https",
        None => "http",
    };
    let host = text("host").unwrap_or_else(|| {
        public_base_url
            .split_once("://")
            .map_or(public_base_url, |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string()
    });
    (protocol, host)
}

/// The settings analytics-next needs to load with the CRM as its only
/// destination: `integrations` holding `Segment.io` alone (so no other
/// destination's code is fetched), a tracking plan that lets every event
/// through, no middleware or remote plugins, and no performance metrics
/// (`sampleRate` 0: the library would send them to Segment's own host).
pub fn source_settings(write_key: &str, host: &str, protocol: &str) -> Value {
    json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": format!("{host}/v1"),
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
                "versionSettings": { "version": "4.4.7", "componentTypes": ["browser"] }
            }
        },
        "plan": {
            "track": { "__default": { "enabled": true, "integrations": {} } },
            "identify": { "__default": { "enabled": true } },
            "group": { "__default": { "enabled": true } }
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": { "sampleRate": 0 },
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": []
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn the_destination_points_back_at_the_host_the_client_reached() {
        let local = headers(&[("host", "127.0.0.1:3000")]);
        assert_eq!(
            reached_at(&local, "http://127.0.0.1:3000"),
            ("http", "127.0.0.1:3000".to_string())
        );
        let gateway = headers(&[
            ("host", "abc.execute-api.eu-west-1.amazonaws.com"),
            ("x-forwarded-proto", "https"),
        ]);
        assert_eq!(
            reached_at(&gateway, "https://crm.shop.example"),
            ("https", "abc.execute-api.eu-west-1.amazonaws.com".to_string())
        );
        assert_eq!(
            reached_at(&HeaderMap::new(), "https://crm.shop.example/"),
            ("https", "crm.shop.example".to_string())
        );
        let settings = source_settings("wk_web_0123456789abcdef", "127.0.0.1:3000", "http");
        let segment = &settings["integrations"]["Segment.io"];
        assert_eq!(segment["apiKey"], "wk_web_0123456789abcdef");
        assert_eq!(segment["apiHost"], "127.0.0.1:3000/v1");
        assert_eq!(segment["protocol"], "http");
        assert_eq!(
            settings["integrations"].as_object().map(|o| o.len()),
            Some(1),
            "one destination: the library loads no other's code"
        );
        assert_eq!(settings["metrics"]["sampleRate"], 0);
    }
}
