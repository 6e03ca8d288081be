//! Earlier schema versions of event payloads, kept as types (their JSON
//! Schemas under `schemas/events/` are generated from them) next to the
//! upcasters that bring them up to the current version (decision 0022).
//!
//! Bumping a type's schema version means: keep its old payload here as a
//! type, add it to [`HISTORY`], add an upcaster from the old version to the
//! [`DomainEvent::upcasters`](crate::event::DomainEvent::upcasters) chain of
//! its enum, and a test. The schema tests fail until all of that is there.

use crate::consent::{Channel, ConsentMethod, GdprContext, Purpose};
use crate::event::{EventCodecError, Upcaster};
use crate::messaging::events::{DeferralReason, MessageRequest, RequestRef};
use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `ConsentGranted` schema version 1: a grant without its GDPR context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConsentGrantedV1 {
    pub purpose: Purpose,
    pub channel: Channel,
    pub method: ConsentMethod,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

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
];

/// The upcasters of the customer stream's events.
pub const CUSTOMER_UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "ConsentGranted",
    from: 1,
    upcast: consent_granted_v1_to_v2,
}];

/// The upcasters of the message stream's events.
pub const MESSAGE_UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "MessageDeferred",
    from: 1,
    upcast: message_deferred_v1_to_v2,
}];

fn field<T: serde::de::DeserializeOwned>(
    data: &serde_json::Map<String, Value>,
    event_type: &str,
    name: &str,
) -> Result<T, EventCodecError> {
    let value = data
        .get(name)
        .cloned()
        .ok_or_else(|| EventCodecError(format!("{event_type} v1: missing field `{name}`")))?;
    serde_json::from_value(value).map_err(|e| EventCodecError(format!("{event_type} v1: {name}: {e}")))
}

/// `ConsentGranted` v1 → v2: adds the GDPR context the v1 data implies
/// (the legal basis of its purpose, explicit when the method shows the
/// customer acted, no jurisdiction: it was not recorded). Every other field
/// is kept as stored (personal fields may still be encrypted here).
pub fn consent_granted_v1_to_v2(data: Value) -> Result<Value, EventCodecError> {
    let Value::Object(mut map) = data else {
        return Err(EventCodecError("ConsentGranted v1: data is not an object".into()));
    };
    let purpose: Purpose = field(&map, "ConsentGranted", "purpose")?;
    let method: ConsentMethod = field(&map, "ConsentGranted", "method")?;
    if !map.contains_key("gdpr") {
        let gdpr = serde_json::to_value(GdprContext::new(purpose, method, None))
            .map_err(|e| EventCodecError(format!("ConsentGranted v1: {e}")))?;
        map.insert("gdpr".to_string(), gdpr);
    }
    Ok(Value::Object(map))
}

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
        stream_id: crate::journey::instance::stream_id(instance_id),
        version: None,
    };
    let requested = serde_json::to_value(requested).map_err(|e| EventCodecError(format!("MessageDeferred v1: {e}")))?;
    map.insert("requested".to_string(), requested);
    Ok(Value::Object(map))
}
