//! The campaign function's handler, assembled from its ports: the one
//! assembly the Lambda function ([`build`], called by its `main` with the AWS
//! ports) and the local runtime (crm-local, which depends on this crate's
//! library, with the SQLite ports and its own clock) share.

use crm_core::broadcast::hosting::CampaignFunctionHandler;
use crm_core::broadcast::BroadcastService;
use crm_core::clock::Clock;
use crm_core::commerce::{CartService, OrderService};
use crm_core::journey::campaigns::CampaignHandler;
use crm_core::journey::catalog::StoredCatalog;
use crm_core::journey::engine::JourneyEngine;
use crm_core::ports::{DeadLetterQueue, EventStore, ReadModelStore};
use crm_core::scheduler::Scheduler;
use std::sync::Arc;

/// What the campaign handler runs on.
pub struct CampaignPorts {
    /// The event store, decrypting on read and encrypting on append.
    pub events: Arc<dyn EventStore>,
    /// The read models (journey indexes, the consent ledger, profiles).
    pub docs: Arc<dyn ReadModelStore>,
    /// Where journey, cart and order timers are set.
    pub scheduler: Arc<dyn Scheduler>,
    pub clock: Arc<dyn Clock>,
    /// Where unusable events and timers are parked.
    pub dead_letters: Arc<dyn DeadLetterQueue>,
}

/// The journey engine (campaigns from the stored catalog), the cart and the
/// order services over `ports`, in one campaign handler, beside the
/// broadcasts' steps (decision 0084). The campaign function has no setting
/// that shapes it: its settings are its ports'.
pub fn build(ports: CampaignPorts) -> CampaignFunctionHandler {
    let CampaignPorts {
        events,
        docs,
        scheduler,
        clock,
        dead_letters,
    } = ports;
    let catalog = Arc::new(StoredCatalog::new(events.clone()));
    let engine = JourneyEngine::new(events.clone(), docs.clone(), scheduler.clone(), catalog, clock.clone());
    let carts = CartService::new(events.clone(), clock.clone(), scheduler.clone());
    let orders = OrderService::new(events.clone(), clock.clone(), scheduler.clone());
    let broadcasts = BroadcastService::new(events, docs, clock).with_scheduler(scheduler);
    let journeys = CampaignHandler::new(engine, carts, orders, dead_letters.clone());
    CampaignFunctionHandler::new(journeys, broadcasts, dead_letters)
}
