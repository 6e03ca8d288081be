//! Files built into the binary gzipped (`build.rs`; decision 0062,
//! "Addendum: the api back under 12"): the console's and `openapi.yaml`.
//! Sent as they are, `Content-Encoding: gzip`, to a client whose
//! `Accept-Encoding` takes gzip (browsers, API Gateway's callers that ask),
//! inflated for one that does not (curl without `--compressed`). Either way
//! `Vary: Accept-Encoding`, so a cache keeps the two apart.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::io::Read;

/// Whether the request's `Accept-Encoding` takes gzip: `gzip` or `x-gzip`,
/// or `*` when gzip is not named, with a q-value above 0 (none is 1). An
/// unreadable q-value refuses. No header: no.
pub fn accepts_gzip(request: &HeaderMap) -> bool {
    let mut any = None;
    for value in request.get_all(header::ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let accepted = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map(|(_, q)| q.trim().parse::<f32>().is_ok_and(|q| q > 0.0))
                .unwrap_or(true);
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                return accepted;
            }
            if coding == "*" {
                any = Some(accepted);
            }
        }
    }
    any.unwrap_or(false)
}

/// The text of a gzipped file.
pub fn inflate(gz: &[u8]) -> std::io::Result<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz).read_to_string(&mut text)?;
    Ok(text)
}

/// A 200 with `gz` as the request accepts it, and `content_type`.
pub fn respond(gz: &'static [u8], request: &HeaderMap, content_type: &'static str) -> Response {
    let mut response = if accepts_gzip(request) {
        let mut response = (StatusCode::OK, Body::from(gz)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        match inflate(gz) {
            Ok(text) => (StatusCode::OK, text).into_response(),
            Err(e) => {
                return crate::Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    format!("a built-in file does not inflate: {e}"),
                )
                .into_response()
            }
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(
                header::ACCEPT_ENCODING,
                HeaderValue::from_str(v).expect("a header value"),
            );
        }
        headers
    }

    #[test]
    fn gzip_is_accepted_only_when_asked_for_with_a_weight_above_zero() {
        assert!(!accepts_gzip(&HeaderMap::new()));
        assert!(accepts_gzip(&asking(&["gzip, deflate, br, zstd"])));
        assert!(accepts_gzip(&asking(&["br;q=1.0, GZIP;q=0.5"])));
        assert!(accepts_gzip(&asking(&["identity", "x-gzip"])));
        assert!(accepts_gzip(&asking(&["*"])));
        assert!(!accepts_gzip(&asking(&["identity"])));
        assert!(!accepts_gzip(&asking(&["br, deflate"])));
        assert!(!accepts_gzip(&asking(&["gzip;q=0"])));
        assert!(!accepts_gzip(&asking(&["gzip;q=0.000, *"])));
        assert!(!accepts_gzip(&asking(&["*;q=0"])));
        assert!(!accepts_gzip(&asking(&["gzip;q=x"])));
    }

    async fn body(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a body")
            .to_vec()
    }

    #[tokio::test]
    async fn openapi_yaml_is_gzip_to_who_accepts_it_and_text_to_who_does_not() {
        let original = include_str!("../../../openapi.yaml");

        let zipped = crate::operations::openapi(asking(&["gzip, deflate"])).await;
        assert_eq!(zipped.status(), StatusCode::OK);
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(zipped.headers()[header::VARY], "accept-encoding");
        assert!(zipped.headers()[header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|t| t.starts_with("application/yaml")));
        let gz = body(zipped).await;
        assert!(gz.len() * 3 < original.len(), "{} bytes gzipped", gz.len());
        assert_eq!(inflate(&gz).expect("gzip"), original);

        let plain = crate::operations::openapi(HeaderMap::new()).await;
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(plain.headers()[header::VARY], "accept-encoding");
        assert_eq!(body(plain).await, original.as_bytes());
    }
}
