//! What every command request carries besides its path and payload: who
//! sent it, its `Idempotency-Key` (scoped to the caller and the request) and
//! its raw body, as one extractor.

use crate::auth::Principal;
use crate::body::RawBody;
use crate::problem::Problem;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method, Uri};
use crm_core::idempotency::IdempotencyKey;

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
