//! How the API answers: RFC 9457 problem details for every error
//! ([`Problem`]; each body also carries Segment's `code` and `message`, the
//! fields Segment's libraries read from an error answer, decision 0050, and
//! every 503 and 429 carries `Retry-After`), and a command's JSON answer
//! with its `Location` and `Idempotent-Replayed` headers ([`answer`],
//! [`executed_answer`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm_core::customer::{CommandError, CustomerError};
use crm_core::ports::StoreError;
use serde::Serialize;
use serde_json::Value;

/// An `application/problem+json` answer. `field` names the offending input.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The problem type's slug; serialised as a URI under `https://crm.dev/problems/`.
    #[serde(rename = "type", serialize_with = "problem_uri")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every error, when there are several (`[{path, message}]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Box<serde_json::Value>>,
    /// The scope the route needs and the token lacks (403, decision 0039).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<crate::Scope>,
    #[serde(skip)]
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            kind: slug,
            title,
            status: status.as_u16(),
            detail: detail.into(),
            field: None,
            errors: None,
            required_scope: None,
            headers: Vec::new(),
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn malformed(detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail,
        )
    }

    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            "Validation failed",
            detail,
        )
        .with_field(field)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    pub fn conflict(field: Option<String>, detail: impl Into<String>) -> Self {
        let mut p = Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", detail);
        p.field = field;
        p
    }

    pub fn too_large() -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("the request body is larger than {} bytes", crate::MAX_BODY_BYTES),
        )
    }

    /// 413 for a body larger than `limit` bytes (`what`: "the request body",
    /// "the decompressed request body").
    pub fn larger_than(what: &str, limit: usize) -> Self {
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            format!("{what} is larger than {limit} bytes"),
        )
    }

    /// 415: a `Content-Encoding` the route cannot decode.
    pub fn unsupported_encoding(encoding: &str) -> Self {
        Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-encoding",
            "Unsupported content encoding",
            format!("the Content-Encoding \"{encoding}\" is not supported; send gzip, deflate or identity"),
        )
    }

    /// Segment's error `code` for this answer: what its libraries report.
    pub fn segment_code(&self) -> &'static str {
        match self.status {
            400 | 422 => "invalid_request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not_found",
            405 => "method_not_allowed",
            409 => "conflict",
            410 => "gone",
            413 => "payload_too_large",
            415 => "unsupported_media_type",
            429 => "rate_limited",
            503 => "unavailable",
            _ => "internal_error",
        }
    }

    /// Segment's error `message`: the detail, after the field it names
    /// (once: a detail that starts with `<field>: ` already names it, as a
    /// campaign's list of errors by path does).
    pub fn segment_message(&self) -> String {
        match &self.field {
            Some(field) if !self.detail.starts_with(&format!("{field}: ")) => format!("{field}: {}", self.detail),
            _ => self.detail.clone(),
        }
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut p = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized", detail);
        p.headers
            .push((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        p
    }
}

impl Problem {
    /// 403: the token is valid but lacks the route's scope, which the body
    /// names (`required_scope`), as does `WWW-Authenticate` (RFC 6750).
    pub fn insufficient_scope(scope: crate::Scope) -> Self {
        let mut p = Problem::new(
            StatusCode::FORBIDDEN,
            "insufficient-scope",
            "Insufficient scope",
            format!("this route needs the scope {scope}, which the token does not carry"),
        );
        p.required_scope = Some(scope);
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"")) {
            p.headers.push((header::WWW_AUTHENTICATE, value));
        }
        p
    }

    /// 403: a route that `ROUTE_TABLE` does not declare is refused to every
    /// token (a route added without its scope fails closed).
    pub fn undeclared_route(method: &str, route: &str) -> Self {
        tracing::error!(method, route, "route without a declared scope");
        Problem::new(
            StatusCode::FORBIDDEN,
            "undeclared-route",
            "Route without a scope",
            format!("{method} {route} declares no scope, so no token may call it"),
        )
    }
}

fn problem_uri<S: serde::Serializer>(slug: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("https://crm.dev/problems/{slug}"))
}

/// How long a client waits before sending again a request answered 503 or
/// 429 when the answer names no other time (`Retry-After`, in seconds).
pub const RETRY_AFTER_SECONDS: &str = "1";

/// Whether an answer of `status` tells the client to come back later (and so
/// carries `Retry-After`).
pub fn asks_to_retry(status: StatusCode) -> bool {
    status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = serde_json::to_value(&self).unwrap_or_else(|_| serde_json::json!({}));
        if let Some(fields) = body.as_object_mut() {
            fields.insert("code".into(), self.segment_code().into());
            fields.insert("message".into(), self.segment_message().into());
        }
        let body = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if asks_to_retry(status) && !headers.contains_key(header::RETRY_AFTER) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        if e.is_retryable() {
            tracing::warn!(error = %e, "store unavailable");
            let mut p = Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
                "the event store is busy; retry the request",
            );
            p.headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
            p
        } else {
            tracing::error!(error = %e, "store failure");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error",
                "the request could not be completed",
            )
        }
    }
}

impl Problem {
    /// An Idempotency-Key reused for a different request.
    pub fn idempotency_key_reused() -> Self {
        Problem::invalid("Idempotency-Key", "this key was already used for a different request")
    }

    /// Other writers kept winning on `what` (`customer`, `cart`): retry later.
    pub fn contended(what: &str, attempts: u32) -> Self {
        let mut p = Problem::conflict(
            None,
            format!("the {what} kept changing concurrently ({attempts} attempts); retry the request"),
        );
        p.headers.push((header::RETRY_AFTER, HeaderValue::from_static("1")));
        p
    }

    pub fn command_too_large(detail: String) -> Self {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "command-too-large",
            "Command too large",
            detail,
        )
    }

    /// A stored event this code cannot read (logged; the client sees a 500).
    pub fn unreadable_event(e: &crm_core::event::EventCodecError) -> Self {
        tracing::error!(error = %e, "stored event unreadable");
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "a stored event could not be read",
        )
    }
}

impl From<CommandError> for Problem {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Rejected(CustomerError::Invalid { field, message }) => Problem::invalid(field, message),
            CommandError::Rejected(CustomerError::NotFound) => Problem::not_found("customer not found"),
            CommandError::Rejected(CustomerError::Conflict { field, message }) => Problem::conflict(field, message),
            CommandError::EmailTaken { field } => {
                Problem::conflict(Some(field.to_string()), "this email address is already registered")
            }
            CommandError::IdempotencyKeyReused => Problem::idempotency_key_reused(),
            CommandError::Contended { attempts } => Problem::contended("customer", attempts),
            CommandError::TooLarge(detail) => Problem::command_too_large(detail),
            CommandError::Store(e) => e.into(),
            CommandError::Codec(e) => Problem::unreadable_event(&e),
        }
    }
}

pub async fn no_route() -> Problem {
    Problem::not_found("no such route")
}

pub async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this route does not accept that method",
    )
}

/// The answer to an executed command (see [`answer`]).
pub(crate) fn executed_answer<S>(executed: crm_core::aggregate::Executed<S>, collection: &str) -> Response {
    match executed {
        crm_core::aggregate::Executed::Applied { status, body, .. } => answer(status, &body, false, collection),
        crm_core::aggregate::Executed::Replayed { status, body } => answer(status, &body, true, collection),
    }
}

/// A command's answer: `status` and `body`, with the new resource's
/// `Location` (under `collection`) on 201 and `Idempotent-Replayed` when it
/// repeats the answer to an earlier request.
pub(crate) fn answer(status: u16, body: &Value, replayed: bool, collection: &str) -> Response {
    if replayed && body.as_str() == Some(crm_core::privacy::ERASED) {
        // The stored answer held a customer's personal data, sealed under
        // their key, and went with the erasure (decision 0045).
        let mut response = Problem::new(
            StatusCode::GONE,
            "answer-erased",
            "Answer erased",
            "this request was applied before; its answer held the personal data of a customer since erased, \
             and is gone with it",
        )
        .into_response();
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return response;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::CREATED {
        if let Some(location) = body
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| HeaderValue::from_str(&format!("{collection}/{id}")).ok())
        {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;

    async fn answer(problem: Problem) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
        let response = problem.into_response();
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, 1 << 16).await.expect("body");
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).expect("json"),
        )
    }

    #[tokio::test]
    async fn every_problem_carries_segments_code_and_message() {
        let (status, headers, body) = answer(Problem::invalid("traits.email", "must be a string")).await;
        assert_eq!(status, 422);
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(body["code"], "invalid_request");
        assert_eq!(body["message"], "traits.email: must be a string");
        assert_eq!(body["type"], "https://crm.dev/problems/validation-failed");
        assert_eq!(
            (body["detail"].as_str(), body["field"].as_str()),
            (Some("must be a string"), Some("traits.email"))
        );
        // A detail that already starts with its field names it once.
        let (_, _, body) = answer(Problem::invalid(
            "steps[0].next",
            "steps[0].next: no step x; name: empty",
        ))
        .await;
        assert_eq!(body["message"], "steps[0].next: no step x; name: empty");
        let (_, headers, body) = answer(Problem::unauthorized("the write key is not valid")).await;
        assert_eq!(
            (body["code"].as_str(), body["message"].as_str()),
            (Some("unauthorized"), Some("the write key is not valid"))
        );
        assert!(headers.get(header::RETRY_AFTER).is_none(), "a 401 is not retried");
        let (status, _, body) = answer(Problem::unsupported_encoding("br")).await;
        assert_eq!(
            (status.as_u16(), body["code"].as_str()),
            (415, Some("unsupported_media_type"))
        );
        let (_, _, body) = answer(Problem::larger_than("the request body", 10)).await;
        assert_eq!(body["code"], "payload_too_large");
    }

    #[tokio::test]
    async fn every_503_and_429_says_when_to_retry() {
        let unavailable = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "busy",
        );
        let (status, headers, body) = answer(unavailable).await;
        assert_eq!(status, 503);
        assert_eq!(headers[header::RETRY_AFTER], RETRY_AFTER_SECONDS);
        assert_eq!(body["code"], "unavailable");
        let limited = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            "slow down",
        );
        let (_, headers, body) = answer(limited).await;
        assert_eq!(headers[header::RETRY_AFTER], RETRY_AFTER_SECONDS);
        assert_eq!(body["code"], "rate_limited");
        // A time the problem names itself is kept.
        let mut later = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "busy",
        );
        later
            .headers
            .push((header::RETRY_AFTER, HeaderValue::from_static("30")));
        let (_, headers, _) = answer(later).await;
        assert_eq!(headers.get_all(header::RETRY_AFTER).iter().count(), 1);
        assert_eq!(headers[header::RETRY_AFTER], "30");
        let (_, headers, _) = answer(Problem::contended("cart", 3)).await;
        assert_eq!(
            headers[header::RETRY_AFTER],
            "1",
            "a 409 that asks to retry keeps its own"
        );
    }
}
