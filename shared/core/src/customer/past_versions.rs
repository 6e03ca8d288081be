//! Earlier schema versions of the customer stream's events, and the
//! upcasters that bring them to the current version (decision 0022; listed
//! for the schema registry in `schemas::history::HISTORY`).

use crate::event::{v1_field as field, EventCodecError, Upcaster};
use crate::vocabulary::{Channel, ConsentMethod, GdprContext, Purpose};
use schemars::JsonSchema;
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

/// The upcasters of the customer stream's events.
pub const CUSTOMER_UPCASTERS: &[Upcaster] = &[Upcaster {
    event_type: "ConsentGranted",
    from: 1,
    upcast: consent_granted_v1_to_v2,
}];

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
