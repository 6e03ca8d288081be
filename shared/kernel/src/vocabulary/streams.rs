//! The names several contexts (and privacy's framework) use for one
//! context's streams and read models. Each context re-exports its own under
//! its usual name (`customer::stream_id`, `segments::stream_id`,
//! `journey::instance::stream_id`, `messaging::events::message_stream`,
//! `customer::views::CUSTOMER_360`, ...); the customer-streams index, the
//! sealing of read models and the plaintext migration name them from here
//! without depending on the contexts that own them.

/// The customer aggregate's stream.
pub fn customer_stream_id(customer_id: &str) -> String {
    format!("customer-{customer_id}")
}

/// A customer's segment-membership stream.
pub fn segments_stream_id(customer_id: &str) -> String {
    format!("segments-{customer_id}")
}

/// A journey instance's stream.
pub fn journey_stream_id(instance_id: &str) -> String {
    format!("journey-{instance_id}")
}

/// The stream of one message.
pub fn message_stream_id(message_id: &str) -> String {
    format!("message-{message_id}")
}

/// The customer 360 read model (customer context).
pub const CUSTOMER_360: &str = "customer-360";
/// The customer timeline read model (customer context).
pub const TIMELINE: &str = "timeline";
/// The consent ledger read model (consent context).
pub const CONSENT_LEDGER: &str = "consent-ledger";
/// The journeys of each customer (journey context; partition: the customer).
pub const JOURNEY_INDEX: &str = "journey-index";
/// The messages of each customer (messaging context; partition: the customer).
pub const MESSAGE_LOG: &str = "message-log";
