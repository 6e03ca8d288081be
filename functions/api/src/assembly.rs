//! The api's assembly ([`build`]: the handlers' state from its ports and
//! [`ApiSettings`]), which the Lambda `main` (its settings from the
//! environment and Secrets Manager, `crate::Settings`) and the local runtime
//! (crm-local, with its SQLite ports, its bearer token and its database's
//! secrets) share. No AWS here: crm-local builds it without the `lambda`
//! feature.

use crate::{AppState, Auth, IngestSources};
use crm_core::clock::Clock;
use crm_core::messaging::unsubscribe::TokenSigner;
use crm_core::ports::{ConsumerHealth, EventStore, ReadModelStore};
use crm_core::privacy::{IdentifierHasher, KeyStore};
use crm_core::scheduler::Scheduler;
use std::sync::Arc;

/// What the handlers are configured with: on Lambda from `Settings`
/// (API Gateway's auth, the secrets of Secrets Manager), locally from the
/// bearer token and the database's own secrets (or the same variables).
#[derive(Clone)]
pub struct ApiSettings {
    pub auth: Auth,
    /// Signs and checks the unsubscribe and preference-centre tokens.
    pub unsubscribe: TokenSigner,
    /// Where customers reach the API (links are `<base>/u/<token>`).
    pub public_base_url: String,
    /// The proof ledger's identifier hashes (the consent and channel functions' secret).
    pub identifiers: IdentifierHasher,
    /// The sources allowed to send to `/v1/*`, with their write keys.
    pub ingest_sources: IngestSources,
}

/// What the api runs on.
pub struct ApiPorts {
    /// The event store, encrypting on append and decrypting on read.
    pub events: Arc<dyn EventStore>,
    pub read_models: Arc<dyn ReadModelStore>,
    pub clock: Arc<dyn Clock>,
    /// Where cart and order timers are set.
    pub scheduler: Arc<dyn Scheduler>,
    /// The customers' data keys (erasure deletes one).
    pub keys: Arc<dyn KeyStore>,
    /// Where `GET /health` learns the consumers' lag (none: it cannot).
    pub health: Option<Arc<dyn ConsumerHealth>>,
}

/// The handlers' state over `ports`, configured with `settings`: the one
/// assembly of the Lambda function and the local runtime.
pub fn build(ports: ApiPorts, settings: ApiSettings) -> AppState {
    let ApiPorts {
        events,
        read_models,
        clock,
        scheduler,
        keys,
        health,
    } = ports;
    let ApiSettings {
        auth,
        unsubscribe,
        public_base_url,
        identifiers,
        ingest_sources,
    } = settings;
    let state = AppState::new(events, read_models, clock, scheduler, auth)
        .with_unsubscribe(unsubscribe, public_base_url)
        .with_keys(keys)
        .with_identifiers(identifiers)
        .with_ingest_sources(ingest_sources);
    match health {
        Some(health) => state.with_health(health),
        None => state,
    }
}
