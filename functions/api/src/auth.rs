//! Who is calling, and may they call this route (decision 0039). Locally a
//! bearer token: the all-scopes token of configuration, or one minted from it
//! with fewer scopes. On AWS the HTTP API's JWT authorizer has already
//! checked the token (and the route's scope); its `sub` claim is the
//! principal and its `scope` / `scp` claims the scopes, checked again here.

use crate::http::{Principal, Problem};
use crate::scopes::Scopes;
use crate::scopes::{access_of, local_token_scopes, Access};
use crate::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

#[derive(Clone)]
pub enum Auth {
    /// Requests must carry `Authorization: Bearer <token>`: this token (every
    /// scope) or one [`crate::mint_local_token`] signed with it (its scopes).
    /// The principal is `local`.
    BearerToken(String),
    /// As [`Auth::BearerToken`], and also a JWT of the configured issuer
    /// checked here as the HTTP API's authorizer checks it on AWS (`crm-local
    /// serve --jwt-issuer`, decision 0089): its `sub` and scopes.
    BearerTokenOrJwt(String, Arc<dyn VerifyJwt>),
    /// API Gateway verified a JWT; take the principal and scopes from its
    /// claims (the Lambda function only: `lambda` feature).
    #[cfg(feature = "lambda")]
    Gateway,
}

/// Checks a JWT as an HTTP API JWT authorizer does: signature by the
/// issuer's published keys, issuer, audience (`aud`, or Cognito's
/// `client_id`), expiry.
#[async_trait::async_trait]
pub trait VerifyJwt: Send + Sync {
    /// The token's claims when it is valid, else why not.
    async fn verify(&self, token: &str) -> Result<serde_json::Value, String>;
}

/// The principal (`sub`) and scopes (`scope` / `scp`, a space-separated
/// string or a list) of verified claims.
pub fn caller_of_claims(claims: &serde_json::Value) -> Option<(String, Scopes)> {
    let sub = claims.get("sub")?.as_str()?.to_string();
    let scopes = ["scope", "scp"]
        .iter()
        .filter_map(|claim| claims.get(*claim))
        .flat_map(|value| match value {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        })
        .flat_map(|s| Scopes::from_claim(&s).iter())
        .collect();
    Some((sub, scopes))
}

/// What the gateway's authorizer verified: `sub`, and the scopes of the
/// `scope` and `scp` claims (and of the authorizer's own scope list).
#[cfg(feature = "lambda")]
fn gateway_caller(req: &Request) -> Option<(String, Scopes)> {
    use lambda_http::request::RequestContext;
    match req.extensions().get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(ctx) => {
            let jwt = ctx.authorizer.as_ref()?.jwt.as_ref()?;
            let sub = jwt.claims.get("sub").cloned()?;
            let scopes = ["scope", "scp"]
                .iter()
                .filter_map(|claim| jwt.claims.get(*claim))
                .flat_map(|value| Scopes::from_claim(value).iter())
                .chain(jwt.scopes.iter().flatten().flat_map(|s| Scopes::from_claim(s).iter()))
                .collect();
            Some((sub, scopes))
        }
        _ => None,
    }
}

/// The request's bearer token, trimmed.
fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Authenticates the caller, then refuses a token without the route's scope
/// (403 naming it). A route with no declared access is refused to every
/// token; a request no route matches goes on to the 404 / 405 answers.
pub async fn require_principal(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let (principal, granted) = match &state.auth {
        Auth::BearerToken(expected) => match bearer(&req).map(|token| local_token_scopes(expected, token)) {
            Some(Some(scopes)) => ("local".to_string(), scopes),
            Some(None) => return Problem::unauthorized("the bearer token is not valid").into_response(),
            None => return Problem::unauthorized("an Authorization: Bearer token is required").into_response(),
        },
        Auth::BearerTokenOrJwt(expected, jwt) => {
            let Some(token) = bearer(&req).map(str::to_string) else {
                return Problem::unauthorized("an Authorization: Bearer token is required").into_response();
            };
            match local_token_scopes(expected, &token) {
                Some(scopes) => ("local".to_string(), scopes),
                None => match jwt.verify(&token).await.map(|claims| caller_of_claims(&claims)) {
                    Ok(Some(caller)) => caller,
                    Ok(None) => return Problem::unauthorized("the token has no sub claim").into_response(),
                    Err(why) => {
                        tracing::info!(%why, "refused: a bearer token that is neither local nor a valid JWT");
                        return Problem::unauthorized("the bearer token is not valid").into_response();
                    }
                },
            }
        }
        #[cfg(feature = "lambda")]
        Auth::Gateway => match gateway_caller(&req) {
            Some(caller) => caller,
            None => return Problem::unauthorized("the request carries no verified JWT claims").into_response(),
        },
    };
    if let Some(route) = req.extensions().get::<MatchedPath>() {
        let route = route.as_str();
        match access_of(req.method().as_str(), route) {
            Some(Access::Scope(needed)) if !granted.contains(needed) => {
                tracing::info!(%principal, route, scope = %needed, "refused: missing scope");
                return Problem::insufficient_scope(needed).into_response();
            }
            Some(Access::Scope(_) | Access::Authenticated) => {}
            // Never behind this layer: the signed-link and write-key routes are merged after it.
            Some(Access::SignedLink | Access::WriteKey | Access::Public) => {
                return Problem::undeclared_route(req.method().as_str(), route).into_response();
            }
            // Another method of a declared path: the router answers 405.
            None if crate::ROUTE_TABLE.iter().any(|r| r.path == route) => {}
            None => return Problem::undeclared_route(req.method().as_str(), route).into_response(),
        }
    }
    req.extensions_mut().insert(Principal(principal));
    req.extensions_mut().insert(granted);
    next.run(req).await
}

/// API Gateway's requests, which only `lambda_http` makes.
#[cfg(all(test, feature = "lambda"))]
mod tests {
    use super::*;
    use crate::scopes::Scope;
    use axum::http::StatusCode;
    use crm_core::clock::SystemClock;
    use crm_core::memory::InMemoryReadModels;
    use crm_core::testing::{InMemoryEventStore, InMemoryScheduler};
    use std::sync::Arc;
    use tower::ServiceExt;

    /// An HTTP API (payload 2.0) request as API Gateway hands it to the
    /// function after its JWT authorizer, with these claims.
    fn gateway_request(method: &str, path: &str, route: &str, claims: serde_json::Value) -> Request {
        let event = serde_json::json!({
            "version": "2.0",
            "routeKey": format!("{method} {route}"),
            "rawPath": path,
            "rawQueryString": "",
            "headers": { "accept": "application/json", "host": "api.example.com" },
            "requestContext": {
                "accountId": "123456789012",
                "apiId": "abc123defg",
                "authorizer": { "jwt": { "claims": claims, "scopes": null } },
                "domainName": "api.example.com",
                "http": { "method": method, "path": path, "protocol": "HTTP/1.1",
                          "sourceIp": "203.0.113.10", "userAgent": "test" },
                "requestId": "r-1",
                "routeKey": format!("{method} {route}"),
                "stage": "$default",
                "time": "15/Jan/2026:10:00:02 +0000",
                "timeEpoch": 1768471202000u64
            },
            "isBase64Encoded": false
        });
        let request = lambda_http::request::from_str(&event.to_string()).unwrap();
        request.map(axum::body::Body::new)
    }

    fn gateway_router() -> axum::Router {
        let state = AppState::new(
            Arc::new(InMemoryEventStore::default()),
            Arc::new(InMemoryReadModels::default()),
            Arc::new(SystemClock),
            Arc::new(InMemoryScheduler::default()),
            Auth::Gateway,
        );
        crate::router(state)
    }

    #[test]
    fn the_gateway_caller_is_sub_with_the_scopes_of_scope_and_scp() {
        let req = gateway_request(
            "GET",
            "/customers/c-1",
            "/customers/{id}",
            serde_json::json!({ "sub": "client-7", "scope": "openid crm/read", "scp": "[crm/admin]" }),
        );
        let (sub, scopes) = gateway_caller(&req).unwrap();
        assert_eq!(sub, "client-7");
        assert_eq!(scopes, Scopes::none().with(Scope::Read).with(Scope::Admin));
    }

    #[tokio::test]
    async fn behind_the_gateway_a_jwt_without_the_route_scope_gets_403_naming_it() {
        let erase = |scope: &str| {
            gateway_request(
                "DELETE",
                "/customers/0190d7a0-0000-7000-8000-000000000000",
                "/customers/{id}",
                serde_json::json!({ "sub": "support-agent", "scope": scope }),
            )
        };
        let refused = gateway_router()
            .oneshot(erase("crm/read crm/write crm/admin"))
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            refused.headers()[axum::http::header::WWW_AUTHENTICATE],
            r#"Bearer error="insufficient_scope", scope="crm/privacy""#
        );
        let body = axum::body::to_bytes(refused.into_body(), 1 << 16).await.unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["required_scope"], "crm/privacy");
        assert_eq!(problem["type"], "https://crm.dev/problems/insufficient-scope");

        // With the scope the request reaches erasure, which needs data keys
        // this router was not given: anything but the scope refusal.
        let allowed = gateway_router().oneshot(erase("crm/privacy")).await.unwrap();
        assert_ne!(allowed.status(), StatusCode::FORBIDDEN);
        assert_ne!(allowed.status(), StatusCode::UNAUTHORIZED);

        // A JWT without any claims the authorizer verified is no caller at all.
        let anonymous = gateway_request("GET", "/health", "/health", serde_json::json!({}));
        assert_eq!(
            gateway_router().oneshot(anonymous).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
}
