//! Who is calling. Locally a bearer token from configuration; on AWS the HTTP
//! API's JWT authorizer has already checked the token, and its `sub` claim is
//! the principal.

use crate::problem::Problem;
use crate::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

#[derive(Clone)]
pub enum Auth {
    /// Requests must carry `Authorization: Bearer <token>`; the principal is `local`.
    BearerToken(String),
    /// API Gateway verified a JWT; take the principal from its claims.
    Gateway,
}

/// The authenticated caller, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct Principal(pub String);

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn gateway_principal(req: &Request) -> Option<String> {
    use lambda_http::request::RequestContext;
    match req.extensions().get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(ctx) => {
            let jwt = ctx.authorizer.as_ref()?.jwt.as_ref()?;
            jwt.claims.get("sub").cloned()
        }
        _ => None,
    }
}

pub async fn require_principal(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let principal = match &state.auth {
        Auth::BearerToken(expected) => {
            let presented = req
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match presented {
                Some(token) if constant_time_eq(token.trim().as_bytes(), expected.as_bytes()) => "local".to_string(),
                Some(_) => return Problem::unauthorized("the bearer token is not valid").into_response(),
                None => return Problem::unauthorized("an Authorization: Bearer token is required").into_response(),
            }
        }
        Auth::Gateway => match gateway_principal(&req) {
            Some(sub) => sub,
            None => return Problem::unauthorized("the request carries no verified JWT claims").into_response(),
        },
    };
    req.extensions_mut().insert(Principal(principal));
    next.run(req).await
}
