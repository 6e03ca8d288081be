//! The CRM's HTTP API as an axum [`Router`]. The Lambda binary wraps it with
//! `lambda_http`; the local runtime serves it directly. Handlers only
//! translate HTTP to commands of crm-core and results back to HTTP.

mod auth;
mod body;
mod customers;
mod problem;

pub use auth::Auth;
pub use problem::Problem;

use axum::routing::{delete, get, post, put};
use axum::Router;
use crm_core::clock::Clock;
use crm_core::customer::CustomerService;
use crm_core::ports::EventStore;
use std::sync::Arc;

/// The largest request body accepted (413 beyond it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route, as `(method, path)` in OpenAPI's path syntax. `openapi.yaml`
/// must describe exactly these (a test checks it).
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/customers"),
    ("GET", "/customers/{id}"),
    ("PATCH", "/customers/{id}"),
    ("PUT", "/customers/{id}/email"),
    ("POST", "/customers/{id}/email/verify"),
    ("PUT", "/customers/{id}/preferences"),
    ("POST", "/customers/{id}/consents"),
    ("DELETE", "/customers/{id}/consents/{purpose}/{channel}"),
    ("POST", "/customers/{id}/deactivate"),
    ("POST", "/customers/{id}/reactivate"),
    ("GET", "/customers/{id}/events"),
];

/// What every handler shares: built once per process.
#[derive(Clone)]
pub struct AppState {
    pub customers: Arc<CustomerService>,
    pub auth: Auth,
}

impl AppState {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>, auth: Auth) -> Self {
        AppState {
            customers: Arc::new(CustomerService::new(store, clock)),
            auth,
        }
    }
}

/// The API router.
pub fn router(state: AppState) -> Router {
    use customers as c;
    Router::new()
        .route("/customers", post(c::register))
        .route(
            "/customers/{id}",
            get(c::get_customer).patch(c::update_profile),
        )
        .route("/customers/{id}/email", put(c::change_email))
        .route("/customers/{id}/email/verify", post(c::verify_email))
        .route("/customers/{id}/preferences", put(c::update_preferences))
        .route("/customers/{id}/consents", post(c::grant_consent))
        .route(
            "/customers/{id}/consents/{purpose}/{channel}",
            delete(c::revoke_consent),
        )
        .route("/customers/{id}/deactivate", post(c::deactivate))
        .route("/customers/{id}/reactivate", post(c::reactivate))
        .route("/customers/{id}/events", get(c::list_events))
        .fallback(problem::no_route)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_principal,
        ))
        .with_state(state)
}
