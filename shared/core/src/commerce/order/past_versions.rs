//! Earlier schema versions of the order stream's events, and the upcasters
//! that bring them to the current version (decision 0022; listed for the
//! schema registry in `schemas::history::HISTORY`).

use super::events::{RefundReason, RefundType};
use crate::event::{v1_field as field, EventCodecError, Upcaster};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `RefundRequested` schema version 1: a refund without its origin. Any
/// paid order could be refunded, delivered or not; version 2 says which
/// rule let the refund in (`origin`) and carries a return's reason
/// (decision 0071).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RefundRequestedV1 {
    pub order_id: String,
    pub refund_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub reason: RefundReason,
    pub refund_type: RefundType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<String>>,
}

/// The upcasters of the order stream's events.
pub const ORDER_UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "RefundRequested",
    from: 1,
    upcast: refund_requested_v1_to_v2,
}];

/// `RefundRequested` v1 → v2: the origin the refund id shows. Ingestion
/// named a shop's refund by a derived id (`ingest::derived_id`, a UUID of
/// version 8); the API by a fresh UUID v7. So a version-8 id is `shop` and
/// anything else `request` (a v1 refund was never a return: there were
/// none). Nothing else changes.
pub fn refund_requested_v1_to_v2(data: Value) -> Result<Value, EventCodecError> {
    let Value::Object(mut map) = data else {
        return Err(EventCodecError("RefundRequested v1: data is not an object".into()));
    };
    let refund_id: String = field(&map, "RefundRequested", "refund_id")?;
    let reported = uuid::Uuid::parse_str(&refund_id).is_ok_and(|id| id.get_version_num() == 8);
    let origin = if reported { "shop" } else { "request" };
    map.insert("origin".to_string(), Value::String(origin.to_string()));
    Ok(Value::Object(map))
}
