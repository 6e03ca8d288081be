//! The CRM's HTTP API as an axum [`Router`]. The Lambda binary wraps it with
//! `lambda_http`; the local runtime serves it directly. Handlers only
//! translate HTTP to commands of crm-core and results back to HTTP.
//!
//! The `lambda` feature (default) adds what only the Lambda function needs:
//! its settings from the environment and Secrets Manager (`Settings`,
//! over crm-aws) and API Gateway's verified JWT claims (`Auth::Gateway`,
//! from `lambda_http`). The local runtime depends on this library without
//! it, so it links no AWS SDK and no Lambda crate (decision 0057).

mod assembly;
mod auth;
mod broadcasts;
mod campaigns;
mod carts;
pub mod console;
mod cors;
mod customers;
mod customers_messages;
mod export;
mod gzipped;
mod http;
mod ingest;
mod insights;
mod operations;
mod orders;
mod reads;
mod refused;
mod schemas;
pub mod scopes;
mod segment_settings;
mod segments;
#[cfg(feature = "lambda")]
mod settings;
mod templates;
mod unsubscribe;

pub use assembly::{build, ApiPorts, ApiSettings};
pub use auth::{caller_of_claims, Auth, VerifyJwt};
pub use cors::{AllowedOrigins, OriginsError};
pub use http::respond::Problem;
pub use ingest::IngestSources;
pub use scopes::{mint_local_token, Access, Route, Scope, Scopes};
#[cfg(feature = "lambda")]
pub use settings::{ingest_sources_from_secret, ApiSecrets, Settings, SettingsError};

use axum::routing::{delete, get, post, put};
use axum::Router;
use crm_core::clock::Clock;
use crm_core::commerce::{CartService, OrderService};
use crm_core::customer::CustomerService;
use crm_core::ingest::refusals::RefusedMessages;
use crm_core::journey::catalog::CampaignService;
use crm_core::messaging::templates::TemplateService;
use crm_core::messaging::unsubscribe::TokenSigner;
use crm_core::ports::{ConsumerHealth, EventStore, ReadModelStore};
use crm_core::privacy::read_models::SealedReadModels;
use crm_core::privacy::{IdentifierHasher, KeyStore};
use crm_core::scheduler::Scheduler;
use crm_core::schemas::CustomEventSchemas;
use std::sync::Arc;

/// The largest request body accepted (413 beyond it).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route and how it is authorised (decision 0039): the scope a bearer
/// token must carry, or the route's own credential. The router checks each
/// request against this table (a route missing from it is refused to every
/// token), `openapi.yaml` lists the same scope per operation and
/// `template.yaml` gives it to the HTTP API's authorizer (tests check both).
pub const ROUTE_TABLE: &[Route] = &[
    route("GET", "/health", AUTHENTICATED),
    route("GET", "/customers", READ),
    route("POST", "/customers", WRITE),
    route("GET", "/customers/{id}", READ),
    route("PATCH", "/customers/{id}", WRITE),
    route("DELETE", "/customers/{id}", PRIVACY),
    route("PUT", "/customers/{id}/email", WRITE),
    route("POST", "/customers/{id}/email/verify", WRITE),
    route("PUT", "/customers/{id}/preferences", WRITE),
    route("POST", "/customers/{id}/push-devices", WRITE),
    route("POST", "/customers/{id}/consents", WRITE),
    route("DELETE", "/customers/{id}/consents/{purpose}/{channel}", WRITE),
    route("POST", "/customers/{id}/deactivate", WRITE),
    route("POST", "/customers/{id}/reactivate", WRITE),
    route("GET", "/customers/{id}/events", READ),
    route("GET", "/customers/{id}/timeline", READ),
    route("GET", "/customers/{id}/messages", READ),
    route("GET", "/customers/{id}/consents", READ),
    route("GET", "/customers/{id}/export", PRIVACY),
    route("POST", "/customers/{id}/activity", WRITE),
    route("GET", "/customers/{id}/segments", READ),
    route("GET", "/segments", READ),
    route("GET", "/segments/{id}", READ),
    route("PUT", "/segments/{id}", ADMIN),
    route("POST", "/segments/{id}/preview", ADMIN),
    route("GET", "/segments/{id}/members", READ),
    route("POST", "/carts", WRITE),
    route("GET", "/carts/{id}", READ),
    route("POST", "/carts/{id}/items", WRITE),
    route("DELETE", "/carts/{id}/items/{product}", WRITE),
    route("POST", "/carts/{id}/checkout", WRITE),
    route("POST", "/orders", WRITE),
    route("GET", "/orders/{id}", READ),
    route("POST", "/orders/{id}/payments", WRITE),
    route("POST", "/orders/{id}/ship", WRITE),
    route("POST", "/orders/{id}/deliver", WRITE),
    route("POST", "/orders/{id}/cancel", WRITE),
    route("POST", "/orders/{id}/refunds", WRITE),
    route("POST", "/orders/{id}/refunds/{refund_id}/complete", WRITE),
    route("POST", "/orders/{id}/reviews", WRITE),
    route("GET", "/campaigns", READ),
    route("GET", "/campaigns/{id}", ADMIN),
    route("PUT", "/campaigns/{id}", ADMIN),
    route("POST", "/campaigns/{id}/pause", ADMIN),
    route("POST", "/campaigns/{id}/resume", ADMIN),
    route("POST", "/campaigns/{id}/rollback", ADMIN),
    route("GET", "/campaigns/{id}/versions", ADMIN),
    route("POST", "/broadcasts", ADMIN),
    route("GET", "/broadcasts", READ),
    route("GET", "/broadcasts/{id}", READ),
    route("POST", "/broadcasts/{id}/pause", ADMIN),
    route("POST", "/broadcasts/{id}/resume", ADMIN),
    route("POST", "/broadcasts/{id}/cancel", ADMIN),
    route("GET", "/messages/{message_id}/explain", READ),
    route("GET", "/customers/{id}/journeys", READ),
    route("GET", "/customers/{id}/funnel", READ),
    route("GET", "/orders/{id}/attribution", READ),
    route("GET", "/campaigns/{id}/stats", READ),
    route("GET", "/insights/funnel", READ),
    route("GET", "/insights/attribution", READ),
    route("GET", "/templates", READ),
    route("GET", "/templates/{id}", READ),
    route("PUT", "/templates/{id}", ADMIN),
    route("POST", "/templates/{id}/preview", ADMIN),
    route("GET", "/schemas/custom/{name}", ADMIN),
    route("PUT", "/schemas/custom/{name}", ADMIN),
    route("GET", "/sources/{source}/refused", ADMIN),
    // The operator's routes (decision 0085).
    route("GET", "/customers/search", READ),
    route("POST", "/customers/{id}/email/verification", WRITE),
    route("GET", "/dead-letters", READ),
    route("GET", "/dead-letters/{id}", READ),
    route("POST", "/dead-letters/{id}/redrive", ADMIN),
    route("GET", "/operations/replays", READ),
    route("GET", "/operations/overview", READ),
    route("GET", "/", PUBLIC),
    route("GET", "/openapi.yaml", PUBLIC),
    // The console (decision 0089): static files, and who the token is.
    route("GET", "/console", PUBLIC),
    route("GET", "/console/config.json", PUBLIC),
    route("GET", "/console/{asset}", PUBLIC),
    route("GET", "/me", AUTHENTICATED),
    route("GET", "/u/{token}", SIGNED_LINK),
    route("POST", "/u/{token}", SIGNED_LINK),
    route("POST", "/v1/track", WRITE_KEY),
    route("POST", "/v1/identify", WRITE_KEY),
    route("POST", "/v1/alias", WRITE_KEY),
    route("POST", "/v1/page", WRITE_KEY),
    route("POST", "/v1/screen", WRITE_KEY),
    route("POST", "/v1/batch", WRITE_KEY),
    // analytics-next's one-letter paths (decision 0050), and its settings.
    route("POST", "/v1/t", WRITE_KEY),
    route("POST", "/v1/i", WRITE_KEY),
    route("POST", "/v1/a", WRITE_KEY),
    route("POST", "/v1/p", WRITE_KEY),
    route("POST", "/v1/s", WRITE_KEY),
    route("POST", "/v1/b", WRITE_KEY),
    route("GET", "/v1/projects/{writeKey}/settings", WRITE_KEY),
];

const fn route(method: &'static str, path: &'static str, access: Access) -> Route {
    Route { method, path, access }
}

const READ: Access = Access::Scope(Scope::Read);
const WRITE: Access = Access::Scope(Scope::Write);
const PRIVACY: Access = Access::Scope(Scope::Privacy);
const ADMIN: Access = Access::Scope(Scope::Admin);
const AUTHENTICATED: Access = Access::Authenticated;
const SIGNED_LINK: Access = Access::SignedLink;
const WRITE_KEY: Access = Access::WriteKey;
const PUBLIC: Access = Access::Public;

const ROUTE_PAIRS: [(&str, &str); ROUTE_TABLE.len()] = scopes::pairs(ROUTE_TABLE);
const SIGNED_LINK_PAIRS: [(&str, &str); scopes::count(ROUTE_TABLE, SIGNED_LINK)] =
    scopes::pairs_of(ROUTE_TABLE, SIGNED_LINK);
const WRITE_KEY_PAIRS: [(&str, &str); scopes::count(ROUTE_TABLE, WRITE_KEY)] = scopes::pairs_of(ROUTE_TABLE, WRITE_KEY);

/// Every route, as `(method, path)` in OpenAPI's path syntax (from
/// [`ROUTE_TABLE`]). `openapi.yaml` must describe exactly these (a test checks it).
pub const ROUTES: &[(&str, &str)] = &ROUTE_PAIRS;

/// The routes reached without a bearer token that answer HTML or text: a
/// signed link's (the token in the path is the credential) and the public
/// landing page and API description (decision 0085).
pub const PUBLIC_ROUTES: &[(&str, &str)] = &SIGNED_LINK_PAIRS;

/// The Segment-compatible ingestion routes: no bearer token either (the API
/// Gateway lets them through); each request is checked against a source's
/// write key instead (HTTP Basic or the body's `writeKey`; the settings
/// route's is in its path).
pub const WRITE_KEY_ROUTES: &[(&str, &str)] = &WRITE_KEY_PAIRS;

/// What every handler shares: built once per process.
#[derive(Clone)]
pub struct AppState {
    pub customers: Arc<CustomerService>,
    pub carts: Arc<CartService>,
    /// Orders, payments and refunds (and their payment retry timers).
    pub orders: Arc<OrderService>,
    /// Campaign definitions: stored, versioned, paused and resumed.
    pub campaigns: Arc<CampaignService>,
    /// Message templates: stored, versioned, the shipped ones as version 1 (decision 0077).
    pub templates: Arc<TemplateService>,
    /// The event store (the explain route reads journey and trigger streams).
    pub events: Arc<dyn EventStore>,
    /// Where timers are set (the carts' inactivity timers).
    pub scheduler: Arc<dyn Scheduler>,
    /// The projections the read routes answer from.
    pub read_models: Arc<dyn ReadModelStore>,
    /// Where `/health` learns the consumers' lag; `None` when it cannot.
    pub health: Option<Arc<dyn ConsumerHealth>>,
    pub clock: Arc<dyn Clock>,
    pub auth: Auth,
    /// Signs and checks the unsubscribe / preference-centre tokens of `/u/{token}`.
    pub unsubscribe: Arc<TokenSigner>,
    /// Where customers reach this API from outside (links are `<base>/u/<token>`).
    pub public_base_url: String,
    /// The customers' data keys: erasure deletes one (`None`: erasure is unavailable).
    pub keys: Option<Arc<dyn KeyStore>>,
    /// Hashes identifiers for the proof ledger (decision 0019): erasure
    /// records the customer's hashed email and phone (`None`: erasure is unavailable).
    pub identifiers: Option<IdentifierHasher>,
    /// Custom event schemas (decision 0022): registered through the API,
    /// checked by ingestion.
    pub custom_schemas: Arc<CustomEventSchemas>,
    /// The sources allowed to send to `/v1/*`, with their write keys.
    pub ingest_sources: IngestSources,
    /// Where ingestion records the messages it refuses, and
    /// `GET /sources/{source}/refused` reads them (decision 0053); `None`: nowhere.
    pub refusals: Option<RefusedMessages>,
    /// How ingestion takes messages: the shop's
    /// `tracking.require_analytics_consent` (decision 0079).
    pub ingest_settings: crm_core::ingest::IngestSettings,
    /// The dead letters the operator routes list and redrive (decision
    /// 0085); `None`: this deployment watches no dead-letter queue.
    pub dead_letters: Option<Arc<dyn crm_core::ports::DeadLetterAdmin>>,
    /// How the console signs in (decision 0089).
    pub console: console::ConsoleSignIn,
}

impl AppState {
    pub fn new(
        store: Arc<dyn EventStore>,
        read_models: Arc<dyn ReadModelStore>,
        clock: Arc<dyn Clock>,
        scheduler: Arc<dyn Scheduler>,
        auth: Auth,
    ) -> Self {
        AppState {
            customers: Arc::new(CustomerService::new(store.clone(), clock.clone())),
            campaigns: Arc::new(CampaignService::new(store.clone(), clock.clone())),
            templates: Arc::new(TemplateService::new(store.clone(), clock.clone())),
            events: store.clone(),
            custom_schemas: Arc::new(CustomEventSchemas::new(store.clone()).with_clock(clock.clone())),
            orders: Arc::new(OrderService::new(store.clone(), clock.clone(), scheduler.clone())),
            carts: Arc::new(CartService::new(store, clock.clone(), scheduler.clone())),
            scheduler,
            read_models,
            health: None,
            clock,
            auth,
            // Until configured (`with_unsubscribe`): a secret of this process
            // only, so no link made elsewhere is ever accepted.
            unsubscribe: Arc::new(TokenSigner::new(
                format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple()).as_bytes(),
            )),
            public_base_url: "http://127.0.0.1:3000".into(),
            keys: None,
            identifiers: None,
            ingest_sources: IngestSources::default(),
            refusals: None,
            ingest_settings: crm_core::ingest::IngestSettings::default(),
            dead_letters: None,
            console: console::ConsoleSignIn::default(),
        }
    }

    /// How the console signs in (decision 0089).
    pub fn with_console(mut self, console: console::ConsoleSignIn) -> Self {
        self.console = console;
        self
    }

    /// The dead letters of the operator routes (decision 0085).
    pub fn with_dead_letters(mut self, dead_letters: Arc<dyn crm_core::ports::DeadLetterAdmin>) -> Self {
        self.dead_letters = Some(dead_letters);
        self
    }

    /// The data keys the event store encrypts with (the ones erasure
    /// deletes). The read models are sealed under them from here on: the
    /// handlers read and write them through [`SealedReadModels`], which
    /// decrypts their personal values, or reads `[erased]` once the key is
    /// gone (decision 0045). Give the table itself, not a sealed one.
    pub fn with_keys(mut self, keys: Arc<dyn KeyStore>) -> Self {
        self.read_models = Arc::new(SealedReadModels::new(self.read_models.clone(), keys.clone()));
        self.keys = Some(keys);
        self
    }

    /// The secret of the identifier hashes (the same as the consent, channel
    /// and projector functions'). The customer service keys email
    /// reservations and user ids with it, and the email and name lookups
    /// find their keyed hashes (decision 0046): without it, registering,
    /// changing an email, erasing, ingesting identities and those lookups
    /// are unavailable.
    pub fn with_identifiers(mut self, hasher: IdentifierHasher) -> Self {
        self.customers =
            Arc::new(CustomerService::new(self.events.clone(), self.clock.clone()).with_identifiers(hasher.clone()));
        self.identifiers = Some(hasher);
        self
    }

    /// The sources of the ingestion API and their write keys.
    pub fn with_ingest_sources(mut self, sources: IngestSources) -> Self {
        self.ingest_sources = sources;
        self
    }

    /// The secret of the unsubscribe tokens and the public base URL of the links.
    pub fn with_unsubscribe(mut self, signer: TokenSigner, public_base_url: impl Into<String>) -> Self {
        self.unsubscribe = Arc::new(signer);
        self.public_base_url = public_base_url.into().trim_end_matches('/').to_string();
        self
    }

    /// Replaces the cart service (for example one with another inactivity period).
    pub fn with_carts(mut self, carts: CartService) -> Self {
        self.carts = Arc::new(carts);
        self
    }

    /// The refused-messages log of ingestion (decision 0053).
    pub fn with_refusals(mut self, refusals: RefusedMessages) -> Self {
        self.refusals = Some(refusals);
        self
    }

    pub fn with_health(mut self, health: Arc<dyn ConsumerHealth>) -> Self {
        self.health = Some(health);
        self
    }

    /// How ingestion takes messages (decision 0079: the shop's
    /// `tracking.require_analytics_consent`).
    pub fn with_ingest_settings(mut self, settings: crm_core::ingest::IngestSettings) -> Self {
        self.ingest_settings = settings;
        self
    }
}

/// The API router.
pub fn router(state: AppState) -> Router {
    use customers as c;
    Router::new()
        .route("/health", get(reads::health))
        .route("/customers", post(c::register).get(reads::find_customers))
        .route(
            "/customers/{id}",
            get(reads::get_customer).patch(c::update_profile).delete(c::erase),
        )
        .route("/customers/{id}/email", put(c::change_email))
        .route("/customers/{id}/email/verify", post(c::verify_email))
        .route("/customers/{id}/preferences", put(c::update_preferences))
        .route("/customers/{id}/push-devices", post(c::register_push_device))
        .route("/customers/{id}/consents", post(c::grant_consent))
        .route(
            "/customers/{id}/consents/{purpose}/{channel}",
            delete(c::revoke_consent),
        )
        .route("/customers/{id}/deactivate", post(c::deactivate))
        .route("/customers/{id}/reactivate", post(c::reactivate))
        .route("/customers/{id}/events", get(c::list_events))
        .route("/customers/{id}/timeline", get(reads::timeline))
        .route("/customers/{id}/messages", get(customers_messages::messages))
        .route("/customers/{id}/consents", get(reads::consents))
        .route("/customers/{id}/export", get(export::export))
        .route("/customers/{id}/activity", post(segments::record))
        .route("/customers/{id}/segments", get(segments::customer_segments))
        .route("/segments", get(segments::list))
        .route("/segments/{id}", get(segments::get_segment).put(segments::put_segment))
        .route("/segments/{id}/preview", post(segments::preview_segment))
        .route("/segments/{id}/members", get(segments::members))
        .route("/carts", post(carts::create))
        .route("/carts/{id}", get(carts::get_cart))
        .route("/carts/{id}/items", post(carts::add_item))
        .route("/carts/{id}/items/{product}", delete(carts::remove_item))
        .route("/carts/{id}/checkout", post(carts::checkout))
        .route("/orders", post(orders::place))
        .route("/orders/{id}", get(orders::get_order))
        .route("/orders/{id}/payments", post(orders::record_payment))
        .route("/orders/{id}/ship", post(orders::ship))
        .route("/orders/{id}/deliver", post(orders::deliver))
        .route("/orders/{id}/cancel", post(orders::cancel))
        .route("/orders/{id}/refunds", post(orders::refund))
        .route(
            "/orders/{id}/refunds/{refund_id}/complete",
            post(orders::complete_refund),
        )
        .route("/orders/{id}/reviews", post(orders::submit_review))
        .route("/campaigns", get(campaigns::list))
        .route(
            "/campaigns/{id}",
            get(campaigns::get_campaign).put(campaigns::put_campaign),
        )
        .route("/campaigns/{id}/pause", post(campaigns::pause))
        .route("/campaigns/{id}/resume", post(campaigns::resume))
        .route("/campaigns/{id}/rollback", post(campaigns::rollback))
        .route("/campaigns/{id}/versions", get(campaigns::versions))
        .route("/broadcasts", post(broadcasts::schedule).get(broadcasts::list))
        .route("/broadcasts/{id}", get(broadcasts::get_broadcast))
        .route("/broadcasts/{id}/pause", post(broadcasts::pause))
        .route("/broadcasts/{id}/resume", post(broadcasts::resume))
        .route("/broadcasts/{id}/cancel", post(broadcasts::cancel))
        .route("/messages/{message_id}/explain", get(campaigns::explain))
        .route("/customers/{id}/journeys", get(campaigns::journeys))
        .route("/customers/{id}/funnel", get(insights::customer_funnel))
        .route("/orders/{id}/attribution", get(insights::order_attribution))
        .route("/campaigns/{id}/stats", get(insights::campaign_stats))
        .route("/insights/funnel", get(insights::funnel_report))
        .route("/insights/attribution", get(insights::attribution_report))
        .route("/templates", get(templates::list))
        .route(
            "/templates/{id}",
            get(templates::get_template).put(templates::put_template),
        )
        .route("/templates/{id}/preview", post(templates::preview))
        .route(
            "/schemas/custom/{name}",
            get(schemas::get_custom).put(schemas::put_custom),
        )
        .route("/sources/{source}/refused", get(refused::list))
        .route("/customers/search", get(operations::search_customers))
        .route("/customers/{id}/email/verification", post(c::resend_verification))
        .route("/dead-letters", get(operations::list_dead_letters))
        .route("/dead-letters/{id}", get(operations::show_dead_letter))
        .route("/dead-letters/{id}/redrive", post(operations::redrive_dead_letter))
        .route("/operations/replays", get(operations::replays))
        .route("/operations/overview", get(operations::overview))
        .route("/me", get(console::me))
        .fallback(http::respond::no_route)
        .method_not_allowed_fallback(http::respond::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_principal,
        ))
        .with_state(state.clone())
        // Reached from links in messages: no bearer token (merged after the auth layer).
        .merge(
            Router::new()
                .route("/u/{token}", get(unsubscribe::page).post(unsubscribe::submit))
                // The landing page and the API description: public (decision 0085).
                .route("/", get(operations::landing))
                .route("/openapi.yaml", get(operations::openapi))
                .route("/console", get(console::index))
                .route("/console/config.json", get(console::config))
                .route("/console/{asset}", get(console::asset))
                .with_state(state.clone()),
        )
        // Authenticated by a source's write key instead; CORS for the pages
        // of the origins the sources allow (decision 0050).
        .merge(
            Router::new()
                .route("/v1/track", post(ingest::track))
                .route("/v1/identify", post(ingest::identify))
                .route("/v1/alias", post(ingest::alias))
                .route("/v1/page", post(ingest::page))
                .route("/v1/screen", post(ingest::screen))
                .route("/v1/batch", post(ingest::batch))
                .route("/v1/t", post(ingest::track))
                .route("/v1/i", post(ingest::identify))
                .route("/v1/a", post(ingest::alias))
                .route("/v1/p", post(ingest::page))
                .route("/v1/s", post(ingest::screen))
                .route("/v1/b", post(ingest::batch))
                .route("/v1/projects/{writeKey}/settings", get(segment_settings::settings))
                .layer(axum::middleware::from_fn_with_state(state.clone(), cors::layer))
                .with_state(state),
        )
}
