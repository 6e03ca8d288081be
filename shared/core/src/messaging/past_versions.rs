//! Earlier schema versions of the message stream's events, and the
//! upcasters that bring them to the current version (decision 0022; listed
//! for the schema registry in `schemas::history::HISTORY`).

use super::events::{DeferralReason, RequestRef};
use crate::event::{v1_field as field, EventCodecError, Upcaster};
use crate::vocabulary::{Channel, MessageRequest};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `MessageDeferred` schema version 1: the deferral kept a copy of the
/// whole request, whose `data` is the trigger event's personal data (so
/// `privacy::paths` lists `request.data` for the v1 events still stored).
/// Version 2 names where the request is stored instead (decision 0041).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MessageDeferredV1 {
    pub message_id: String,
    pub customer_id: String,
    pub channel: Channel,
    pub reason: DeferralReason,
    pub until: DateTime<Utc>,
    pub request: MessageRequest,
}

/// The upcasters of the message stream's events.
pub const MESSAGE_UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "MessageDeferred",
    from: 1,
    upcast: message_deferred_v1_to_v2,
}];

/// `MessageDeferred` v1 → v2: the copy of the request becomes where the
/// request is stored: the journey stream of its instance (the version was
/// not recorded: the stream is searched for the message id). The copy is
/// dropped, its `data` (plain, encrypted or `[erased]`) with it.
pub fn message_deferred_v1_to_v2(data: Value) -> Result<Value, EventCodecError> {
    let Value::Object(mut map) = data else {
        return Err(EventCodecError("MessageDeferred v1: data is not an object".into()));
    };
    let message_id: String = field(&map, "MessageDeferred", "message_id")?;
    let request = map
        .remove("request")
        .ok_or_else(|| EventCodecError("MessageDeferred v1: missing field `request`".into()))?;
    let instance_id = request
        .get("instance_id")
        .and_then(Value::as_str)
        .ok_or_else(|| EventCodecError("MessageDeferred v1: request: missing field `instance_id`".into()))?;
    let requested = RequestRef {
        message_id,
        stream_id: crate::vocabulary::streams::journey_stream_id(instance_id),
        version: None,
    };
    let requested = serde_json::to_value(requested).map_err(|e| EventCodecError(format!("MessageDeferred v1: {e}")))?;
    map.insert("requested".to_string(), requested);
    Ok(Value::Object(map))
}
