//! Events on the bus: every stored event is published with `source` =
//! `crm.<context>`, `detail-type` = its type and `detail` = its envelope
//! (ARCHITECTURE.md §4), so rules read like the domain.

use crate::event::EventEnvelope;
use serde::{Deserialize, Serialize};

/// The name of the custom event bus.
pub const BUS_NAME: &str = "crm";

/// EventBridge refuses an entry larger than 256 KB (source, detail-type and
/// detail together, UTF-8).
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// PutEvents takes at most ten entries a call.
pub const MAX_ENTRIES_PER_PUT: usize = 10;

/// The bounded context an event type belongs to, as its bus `source`.
pub fn source_for(event_type: &str) -> &'static str {
    match event_type {
        "ConsentGranted" | "ConsentRevoked" | "ConsentExpired" => "crm.consent",
        t if t.starts_with("Journey") || t.starts_with("Campaign") || t == "TimerFired" => "crm.journey",
        t if t.starts_with("Message") => "crm.messaging",
        // Templates as data (decision 0077).
        "TemplatePublished" | "TemplateRegistered" => "crm.messaging",
        "EmailDelivered" | "EmailBounced" | "EmailComplained" | "EmailOpened" | "EmailClicked" => "crm.messaging",
        t if t.starts_with("Segment") => "crm.segments",
        // Broadcasts (decision 0084).
        t if t.starts_with("Broadcast") => "crm.broadcast",
        "CustomerSegmentAdded" | "CustomerSegmentRemoved" => "crm.segments",
        // Affinity and recommendations (decision 0075).
        "ProductAffinityDetected" => "crm.segments",
        "ItemAddedToCart" | "ItemRemovedFromCart" | "CheckoutStarted" | "CheckoutAbandoned" => "crm.commerce",
        // An order's review (decision 0073).
        "ReviewSubmitted" => "crm.commerce",
        // Discount codes (decision 0074).
        "DiscountIssued" | "DiscountRedeemed" => "crm.commerce",
        t if t.starts_with("Order") || t.starts_with("Cart") || t.starts_with("Payment") || t.starts_with("Refund") => {
            "crm.commerce"
        }
        _ => "crm.customer",
    }
}

/// One entry for the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusEntry {
    pub source: String,
    #[serde(rename = "detail-type")]
    pub detail_type: String,
    pub detail: EventEnvelope,
}

impl BusEntry {
    pub fn for_event(envelope: EventEnvelope) -> Self {
        BusEntry {
            source: source_for(&envelope.event_type).to_string(),
            detail_type: envelope.event_type.clone(),
            detail: envelope,
        }
    }

    /// The size EventBridge counts for this entry.
    pub fn size_bytes(&self) -> usize {
        let detail = serde_json::to_vec(&self.detail)
            .map(|v| v.len())
            .unwrap_or(usize::MAX / 2);
        self.source.len() + self.detail_type.len() + detail
    }

    /// The entry as a full EventBridge event (what rules match and targets
    /// receive), given the envelope fields EventBridge adds.
    pub fn to_event_json(&self, account: &str, region: &str) -> serde_json::Value {
        serde_json::json!({
            "version": "0",
            "id": self.detail.event_id,
            "detail-type": self.detail_type,
            "source": self.source,
            "account": account,
            "time": self.detail.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "region": region,
            "resources": [],
            "detail": self.detail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_follow_the_bounded_contexts() {
        assert_eq!(source_for("CustomerRegistered"), "crm.customer");
        assert_eq!(source_for("EmailVerified"), "crm.customer");
        assert_eq!(source_for("ConsentRevoked"), "crm.consent");
        assert_eq!(source_for("JourneyStarted"), "crm.journey");
        assert_eq!(source_for("CampaignPublished"), "crm.journey");
        assert_eq!(source_for("CampaignPaused"), "crm.journey");
        assert_eq!(source_for("SegmentMembershipRequested"), "crm.segments");
        assert_eq!(source_for("CustomerSegmentAdded"), "crm.segments");
        assert_eq!(source_for("CustomerSegmentRemoved"), "crm.segments");
        assert_eq!(source_for("ProductViewed"), "crm.customer");
        assert_eq!(source_for("ReviewSubmitted"), "crm.commerce");
        assert_eq!(source_for("CustomerLoggedIn"), "crm.customer");
        assert_eq!(source_for("MessageSent"), "crm.messaging");
        assert_eq!(source_for("EmailBounced"), "crm.messaging");
        assert_eq!(source_for("OrderConfirmed"), "crm.commerce");
        assert_eq!(source_for("ItemAddedToCart"), "crm.commerce");
        assert_eq!(source_for("CheckoutStarted"), "crm.commerce");
        assert_eq!(source_for("CartAbandoned"), "crm.commerce");
        assert_eq!(source_for("CheckoutAbandoned"), "crm.commerce");
    }
}
