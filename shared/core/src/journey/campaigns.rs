//! The campaign function's application service: stored events go to the
//! journey engine; fired timers go to the journey they belong to or, for cart
//! inactivity, to the cart service, or, for payment retries, to the order
//! service. Also the shipped campaigns.

use super::definition::Campaign;
use super::engine::{CatalogSnapshot, EngineError, FixedCatalog, JourneyEngine};
use crate::commerce::{CartService, OrderService};
use crate::consumer::{ConsumeError, EventHandler, GroupOutcome};
use crate::event::EventEnvelope;
use crate::failure::{Classify, Failure, FailureKind};
use crate::ports::DeadLetterQueue;
use crate::scheduler::{timer_name, SchedulerError, TimerHandler, TimerKind, TimerPayload};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// The campaigns under `campaigns/`, built in.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "abandoned-cart",
        include_str!("../../../../campaigns/abandoned-cart.yaml"),
    ),
    (
        "browse-abandonment",
        include_str!("../../../../campaigns/browse-abandonment.yaml"),
    ),
    (
        "checkout-abandonment",
        include_str!("../../../../campaigns/checkout-abandonment.yaml"),
    ),
    (
        "consent-renewal",
        include_str!("../../../../campaigns/consent-renewal.yaml"),
    ),
    ("cross-sell", include_str!("../../../../campaigns/cross-sell.yaml")),
    (
        "email-verification",
        include_str!("../../../../campaigns/email-verification.yaml"),
    ),
    (
        "order-confirmation",
        include_str!("../../../../campaigns/order-confirmation.yaml"),
    ),
    (
        "payment-failed-recovery",
        include_str!("../../../../campaigns/payment-failed-recovery.yaml"),
    ),
    (
        "replenishment",
        include_str!("../../../../campaigns/replenishment.yaml"),
    ),
    (
        "review-request",
        include_str!("../../../../campaigns/review-request.yaml"),
    ),
    ("shipping", include_str!("../../../../campaigns/shipping.yaml")),
    ("welcome", include_str!("../../../../campaigns/welcome.yaml")),
];

/// The shipped campaigns, loaded and validated.
pub fn shipped_catalog() -> Result<FixedCatalog, String> {
    let mut campaigns = Vec::new();
    for (name, text) in SHIPPED {
        let c = Campaign::from_yaml(text).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("campaigns/{name}.yaml: {}", list.join("; "))
        })?;
        campaigns.push(c);
    }
    Ok(FixedCatalog::new(campaigns))
}

/// What the campaign function hosts.
pub struct CampaignHandler {
    engine: JourneyEngine,
    carts: CartService,
    orders: OrderService,
    dead_letters: Arc<dyn DeadLetterQueue>,
}

const NAME: &str = "campaign";

impl CampaignHandler {
    pub fn new(
        engine: JourneyEngine,
        carts: CartService,
        orders: OrderService,
        dead_letters: Arc<dyn DeadLetterQueue>,
    ) -> Self {
        CampaignHandler {
            engine,
            carts,
            orders,
            dead_letters,
        }
    }

    pub fn engine(&self) -> &JourneyEngine {
        &self.engine
    }

    /// Deactivation and erasure (issue 7): besides the journeys (which the
    /// engine exits with their timers), the customer's other schedules go:
    /// the inactivity timers of their carts and the timers of their deferred
    /// messages, found through the customer-streams index. A timer this
    /// misses (a cart the index has not seen yet) finds the customer
    /// inactive when it fires and does nothing.
    pub async fn cancel_customer_schedules(&self, customer_id: &str) -> Result<usize, EngineError> {
        let streams = crate::customer::streams::customer_streams(self.engine.docs().as_ref(), customer_id).await?;
        let mut cancelled = 0;
        for stream in streams {
            let name = if stream.starts_with("cart-") {
                timer_name(TimerKind::CartInactivity, &[&stream])
            } else if let Some(message_id) = stream.strip_prefix("message-") {
                timer_name(TimerKind::MessageDeferral, &[message_id])
            } else {
                continue;
            };
            self.carts.scheduler().cancel(&name).await?;
            cancelled += 1;
        }
        Ok(cancelled)
    }
}

/// The customer events after which nothing more is scheduled for them.
const ENDS_SCHEDULES: &[&str] = &["CustomerDeactivated", "CustomerErasureRequested", "CustomerErased"];

#[async_trait]
impl EventHandler for CampaignHandler {
    fn name(&self) -> &'static str {
        NAME
    }

    fn consumer_names(&self) -> Vec<&'static str> {
        vec![NAME]
    }

    async fn handle(&self, event: &EventEnvelope, now: DateTime<Utc>) -> Result<GroupOutcome, ConsumeError> {
        let catalog = self.engine.catalog_now().await;
        self.handle_in(catalog, event, now).await
    }

    /// A page is handled against one snapshot of the catalog, read once
    /// (decision 0043): a publish, pause or resume stored before the page
    /// was taken acts on all of it.
    async fn handle_page(
        &self,
        events: &[crate::event::EventEnvelope],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::consumer::PageOutcome, crate::consumer::ConsumeError> {
        let catalog = self.engine.catalog_now().await;
        crate::consumer::handle_by_customer(&PageOf { handler: self, catalog }, events, now).await
    }
}

/// The campaign handler over one page: every event against the catalog
/// snapshot read for the page (or its error: each event then fails, or is
/// parked, as it would alone).
struct PageOf<'a> {
    handler: &'a CampaignHandler,
    catalog: Result<Arc<CatalogSnapshot>, EngineError>,
}

#[async_trait]
impl EventHandler for PageOf<'_> {
    fn name(&self) -> &'static str {
        NAME
    }

    fn consumer_names(&self) -> Vec<&'static str> {
        vec![NAME]
    }

    async fn handle(&self, event: &EventEnvelope, now: DateTime<Utc>) -> Result<GroupOutcome, ConsumeError> {
        self.handler.handle_in(self.catalog.clone(), event, now).await
    }

    async fn handle_page(
        &self,
        events: &[crate::event::EventEnvelope],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::consumer::PageOutcome, crate::consumer::ConsumeError> {
        crate::consumer::handle_by_customer(self, events, now).await
    }
}

impl CampaignHandler {
    /// [`EventHandler::handle`] against `catalog` (or the error reading it).
    async fn handle_in(
        &self,
        catalog: Result<Arc<CatalogSnapshot>, EngineError>,
        event: &EventEnvelope,
        now: DateTime<Utc>,
    ) -> Result<GroupOutcome, ConsumeError> {
        let mut outcome = GroupOutcome {
            applied: Vec::new(),
            duplicates: Vec::new(),
            parked: Vec::new(),
        };
        let handled = match catalog {
            Ok(catalog) => self.engine.on_event_in(&catalog, event).await,
            Err(e) => Err(e),
        };
        match handled {
            Ok(_) => {
                if let Some(customer_id) = event
                    .customer_id
                    .as_deref()
                    .filter(|_| ENDS_SCHEDULES.contains(&event.event_type.as_str()))
                {
                    // Whatever the scheduler said, cancelling may succeed
                    // when the event comes again.
                    self.cancel_customer_schedules(customer_id)
                        .await
                        .map_err(|e| ConsumeError::retry(NAME, e))?;
                }
                outcome.applied.push(NAME)
            }
            Err(e) if e.kind() == FailureKind::Poison => {
                crate::consumer::park_poison(self.dead_letters.as_ref(), NAME, event, e.to_string(), now).await?;
                outcome.parked.push(NAME);
            }
            // Retryable, or a conflict that kept coming back: the event comes again.
            Err(e) => return Err(ConsumeError::failed(NAME, Failure::from_error(NAME, e))),
        }
        Ok(outcome)
    }
}

#[async_trait]
impl TimerHandler for CampaignHandler {
    async fn on_timer(&self, payload: &TimerPayload) -> Result<(), SchedulerError> {
        match payload.kind {
            TimerKind::JourneyWait => match self.engine.on_timer(payload).await {
                Ok(_) => Ok(()),
                Err(e) if e.retryable() => Err(SchedulerError::Unavailable(e.to_string())),
                Err(e) => Err(SchedulerError::Refused(e.to_string())),
            },
            TimerKind::CartInactivity => {
                let now = self.engine.now();
                match self.carts.on_inactivity_timer(payload, now).await {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_retryable() => Err(SchedulerError::Unavailable(e.to_string())),
                    Err(e) => Err(SchedulerError::Refused(e.to_string())),
                }
            }
            // The payment is initiated again; its result comes from the provider's callback.
            TimerKind::PaymentRetry => match self.orders.on_payment_retry_timer(payload).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_retryable() => Err(SchedulerError::Unavailable(e.to_string())),
                Err(e) => Err(SchedulerError::Refused(e.to_string())),
            },
            // Deferred messages belong to the channel function; a
            // broadcast's steps to the broadcasts (decision 0084).
            // Rule segments' windows belong to the rule-segments function (decision 0083).
            TimerKind::MessageDeferral | TimerKind::BroadcastStep | TimerKind::SegmentWindow => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_shipped_campaign_is_built_in_and_loads() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../campaigns");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.retain(|f| f.ends_with(".yaml"));
        files.sort();
        let built_in: Vec<String> = super::SHIPPED.iter().map(|(n, _)| format!("{n}.yaml")).collect();
        assert_eq!(built_in, files);
        if let Err(e) = super::shipped_catalog() {
            panic!("{e}")
        }
    }
}
