//! The channel function's message delivery, assembled from its ports and
//! its delivery settings: the one assembly the Lambda function ([`build`],
//! called by its `main` with the AWS ports, SES and SNS) and the local
//! runtime (crm-local, which depends on this crate's library, with the
//! SQLite ports and its mail sink) share.

use crm_core::clock::Clock;
use crm_core::messaging::delivery::{DeliverySettings, MessageDelivery, Providers};
use crm_core::messaging::unsubscribe::TokenSigner;
use crm_core::metrics::MetricsSink;
use crm_core::ports::{DeadLetterQueue, EventStore, ReadModelStore};
use crm_core::privacy::IdentifierHasher;
use crm_core::relay::TokioPause;
use crm_core::scheduler::Scheduler;
use std::sync::Arc;

/// What the message delivery runs on.
pub struct ChannelPorts {
    /// The event store, decrypting on read and encrypting on append.
    pub events: Arc<dyn EventStore>,
    /// The read models (consent ledger, suppressions, send counts).
    pub docs: Arc<dyn ReadModelStore>,
    /// Where deferral and settle timers are set.
    pub scheduler: Arc<dyn Scheduler>,
    pub clock: Arc<dyn Clock>,
    /// Email, SMS and push.
    pub providers: Providers,
    /// Signs the unsubscribe and preference-centre links.
    pub signer: Arc<TokenSigner>,
    /// Hashes identifiers for the suppression list and the proof ledger.
    pub identifiers: IdentifierHasher,
    /// Where failed messages and unusable events are parked.
    pub dead_letters: Arc<dyn DeadLetterQueue>,
    /// Where the sent, suppressed, deferred and failed counts go (none: nowhere).
    pub metrics: Option<Arc<dyn MetricsSink>>,
}

/// The message delivery over `ports` with `settings` (from address, links,
/// caps, settle window: `DeliverySettings::from_lookup`).
pub fn build(ports: ChannelPorts, settings: DeliverySettings) -> MessageDelivery {
    let ChannelPorts {
        events,
        docs,
        scheduler,
        clock,
        providers,
        signer,
        identifiers,
        dead_letters,
        metrics,
    } = ports;
    let delivery = MessageDelivery::new(
        events,
        docs,
        scheduler,
        clock,
        providers,
        signer,
        identifiers,
        dead_letters,
        settings,
    )
    .with_pause(Arc::new(TokioPause));
    match metrics {
        Some(metrics) => delivery.with_metrics(metrics),
        None => delivery,
    }
}
