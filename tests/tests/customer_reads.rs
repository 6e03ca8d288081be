//! A customer whose profile (`customer-360`) is not projected yet: the
//! registration is stored, the projector has not run (on AWS it runs a
//! moment after the append). `GET /customers/{id}` is then 503 with
//! `Retry-After`, not 404, and 200 once the bus has delivered the event; an
//! id with no customer at all stays 404.

use axum::body::Body;
use axum::http::Request;
use crm_tests::{TestApi, TOKEN};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// One request through the router, without settling the bus after it.
async fn unsettled(
    api: &TestApi,
    method: &str,
    path: &str,
    body: Option<String>,
) -> (u16, serde_json::Value, Option<String>) {
    let builder = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json");
    let request = builder
        .body(body.map(Body::from).unwrap_or_else(Body::empty))
        .expect("request");
    let response = api.app.clone().oneshot(request).await.expect("infallible");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json, retry)
}

#[tokio::test]
async fn a_customer_not_projected_yet_is_503_not_404() {
    let api = TestApi::new();
    let (status, created, _) = unsettled(
        &api,
        "POST",
        "/customers",
        Some(crm_tests::registration("late@example.com")),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("customer id").to_string();

    let (status, body, retry) = unsettled(&api, "GET", &format!("/customers/{id}"), None).await;
    assert_eq!(status, 503, "{body}");
    assert!(retry.is_some(), "503 says when to retry");
    assert_eq!(body["status"], 503, "problem+json: {body}");

    api.runtime.bus.settle().await.expect("bus settles");
    let (status, body, _) = unsettled(&api, "GET", &format!("/customers/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());

    let nobody = "0194f7c2-0000-7000-8000-000000000000";
    let (status, body, _) = unsettled(&api, "GET", &format!("/customers/{nobody}"), None).await;
    assert_eq!(status, 404, "{body}");
}
