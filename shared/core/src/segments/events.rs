//! What happened to a customer's segment membership: the events of their
//! `segments-<customer id>` stream.

use crate::event::DomainEvent;
use serde::{Deserialize, Serialize};

/// A membership change, on the customer's `segments-<id>` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum SegmentEvent {
    CustomerSegmentAdded {
        segment: String,
        customer_id: String,
        reason: String,
    },
    CustomerSegmentRemoved {
        segment: String,
        customer_id: String,
        reason: String,
    },
}

impl DomainEvent for SegmentEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

pub const SEGMENT_EVENT_TYPES: &[&str] = &["CustomerSegmentAdded", "CustomerSegmentRemoved"];
