//! Earlier schema versions of event payloads (decision 0022): [`HISTORY`]
//! lists every one still readable, whose JSON Schemas under
//! `schemas/events/` are generated from the types. The types and the
//! upcasters that bring them up to the current version live with their
//! events (`customer::past_versions`, `messaging::past_versions`,
//! `commerce::order::past_versions`), so no
//! context depends on the schema registry.
//!
//! Bumping a type's schema version means: keep its old payload as a type
//! next to its events, add it to [`HISTORY`], add an upcaster from the old version to the
//! [`DomainEvent::upcasters`](crate::event::DomainEvent::upcasters) chain of
//! its enum, and a test. The schema tests fail until all of that is there.

use schemars::{Schema, SchemaGenerator};

pub use crate::commerce::order::{refund_requested_v1_to_v2, RefundRequestedV1, ORDER_UPCASTERS};
pub use crate::customer::past_versions::{consent_granted_v1_to_v2, ConsentGrantedV1, CUSTOMER_UPCASTERS};
pub use crate::messaging::past_versions::{message_deferred_v1_to_v2, MessageDeferredV1, MESSAGE_UPCASTERS};

/// One earlier version of an event type's payload.
pub struct PastVersion {
    pub event_type: &'static str,
    pub version: u32,
    /// The JSON Schema of the payload (`data`) as it was at `version`.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
}

/// Every earlier schema version still readable, oldest first per type.
pub const HISTORY: &[PastVersion] = &[
    PastVersion {
        event_type: "ConsentGranted",
        version: 1,
        schema: |g| g.root_schema_for::<ConsentGrantedV1>(),
    },
    PastVersion {
        event_type: "MessageDeferred",
        version: 1,
        schema: |g| g.root_schema_for::<MessageDeferredV1>(),
    },
    PastVersion {
        event_type: "RefundRequested",
        version: 1,
        schema: |g| g.root_schema_for::<RefundRequestedV1>(),
    },
];
