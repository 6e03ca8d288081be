//! What every command request carries besides its path and payload: who
//! sent it, its `Idempotency-Key` (scoped to the caller and the request) and
//! its raw body, as one extractor.

use crate::auth::Principal;
use crate::body::RawBody;
use crate::customers::idempotency;
use crate::problem::Problem;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use crm_core::idempotency::IdempotencyKey;

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
