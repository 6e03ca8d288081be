//! Dev-only routes, merged into the API only when `crm-local serve --clock
//! virtual`: read and move the virtual clock. Bearer auth as the rest.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crm_core::clock::{Clock, VirtualClock};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone)]
struct DevState {
    clock: Arc<VirtualClock>,
    /// Wakes the bus loop, which fires the timers now due.
    wake: Arc<Notify>,
    token: Arc<str>,
}

/// `GET /dev/clock` and `POST /dev/clock/advance` (`{"minutes": n}` or `{"seconds": n}`).
pub fn clock_routes(clock: Arc<VirtualClock>, wake: Arc<Notify>, token: String) -> Router {
    let state = DevState {
        clock,
        wake,
        token: token.into(),
    };
    Router::new()
        .route("/dev/clock", get(now))
        .route("/dev/clock/advance", post(advance))
        .layer(axum::middleware::from_fn_with_state(state.clone(), bearer))
        .with_state(state)
}

fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        Json(json!({ "title": title, "status": status.as_u16(), "detail": detail })),
    )
        .into_response()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn bearer(State(state): State<DevState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) if same(token.trim().as_bytes(), state.token.as_bytes()) => next.run(req).await,
        _ => problem(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid bearer token is required",
        ),
    }
}

async fn now(State(state): State<DevState>) -> Json<Value> {
    Json(json!({ "now": state.clock.now() }))
}

async fn advance(State(state): State<DevState>, body: axum::body::Bytes) -> Response {
    let by = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match (
            v.get("minutes").and_then(Value::as_i64),
            v.get("seconds").and_then(Value::as_i64),
        ) {
            (Some(m), None) if m >= 0 => chrono::Duration::try_minutes(m),
            (None, Some(s)) if s >= 0 => chrono::Duration::try_seconds(s),
            _ => None,
        },
        Err(_) => None,
    };
    let Some(by) = by else {
        return problem(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            r#"send {"minutes": n} or {"seconds": n}, with n a non-negative integer"#,
        );
    };
    let now = state.clock.advance(by);
    state.wake.notify_one();
    Json(json!({ "now": now })).into_response()
}
