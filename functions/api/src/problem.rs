//! RFC 9457 problem details: every error the API answers with.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use crm_core::customer::{CommandError, CustomerError};
use crm_core::ports::StoreError;
use serde::Serialize;

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

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        for (name, value) in self.headers {
            headers.insert(name, value);
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
