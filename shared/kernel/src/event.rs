//! The event envelope: one shape for every event, stored and published alike
//! (ARCHITECTURE.md §4).

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;

/// One stored event. `version` is its position in its stream (1, 2, 3 ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub stream_id: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    #[serde(default)]
    pub causation_id: Option<Uuid>,
    pub correlation_id: Uuid,
    pub actor: String,
    pub data: serde_json::Value,
}

/// Who or what caused a change: `api:<principal>`, `journey:<campaign>@<version>`,
/// `system:<function>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor(String);

impl Actor {
    pub fn api(principal: &str) -> Self {
        Actor(format!("api:{principal}"))
    }
    pub fn journey(campaign: &str, version: u64) -> Self {
        Actor(format!("journey:{campaign}@{version}"))
    }
    pub fn system(function: &str) -> Self {
        Actor(format!("system:{function}"))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where a command comes from: its id, the chain it belongs to, and who sent it.
#[derive(Debug, Clone)]
pub struct CommandMeta {
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub actor: Actor,
}

impl CommandMeta {
    /// A command that starts a new chain: it is its own correlation id.
    pub fn new(actor: Actor) -> Self {
        let command_id = Uuid::now_v7();
        CommandMeta {
            command_id,
            correlation_id: command_id,
            causation_id: None,
            actor,
        }
    }

    /// A command caused by the stored event `cause`: it carries on the
    /// event's correlation id and names the event as its causation, so a
    /// chain can be walked back to its trigger. The one place a chain is
    /// continued (the engine, delivery and segments use it).
    pub fn caused_by(cause: &EventEnvelope, actor: Actor) -> Self {
        CommandMeta {
            command_id: Uuid::now_v7(),
            correlation_id: cause.correlation_id,
            causation_id: Some(cause.event_id),
            actor,
        }
    }
}

/// One step of a type's upcaster chain (decision 0022): turns the `data` of
/// an `event_type` stored at schema version `from` into its `from + 1` shape.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    pub event_type: &'static str,
    pub from: u32,
    pub upcast: fn(serde_json::Value) -> Result<serde_json::Value, EventCodecError>,
}

/// Field `name` of the `data` of an `event_type` stored at schema version 1
/// (for upcasters that need a field's typed value).
pub fn v1_field<T: DeserializeOwned>(
    data: &serde_json::Map<String, serde_json::Value>,
    event_type: &str,
    name: &str,
) -> Result<T, EventCodecError> {
    let value = data
        .get(name)
        .cloned()
        .ok_or_else(|| EventCodecError(format!("{event_type} v1: missing field `{name}`")))?;
    serde_json::from_value(value).map_err(|e| EventCodecError(format!("{event_type} v1: {name}: {e}")))
}

/// Brings the `data` of an `event_type` stored at schema version `from` up to
/// `to`, one step of `chain` at a time (v1 → v2 → …). A missing step is an
/// error, never a silent pass-through.
pub fn upcast(
    chain: &[Upcaster],
    event_type: &str,
    from: u32,
    to: u32,
    mut data: serde_json::Value,
) -> Result<serde_json::Value, EventCodecError> {
    for version in from..to {
        let step = chain
            .iter()
            .find(|u| u.event_type == event_type && u.from == version)
            .ok_or_else(|| EventCodecError(format!("{event_type}: no upcaster from schema version {version}")))?;
        data = (step.upcast)(data)?;
    }
    Ok(data)
}

/// A typed domain event: an enum serialised adjacently as `{"type", "data"}`.
pub trait DomainEvent: Serialize + DeserializeOwned + Sized {
    /// The schema version written for a type today.
    fn schema_version(event_type: &str) -> u32;

    /// The upcasters of this enum's types: one per schema version bump.
    fn upcasters() -> &'static [Upcaster] {
        &[]
    }

    /// Splits the event into its type name and payload.
    fn to_parts(&self) -> Result<(String, serde_json::Value), EventCodecError> {
        let value = serde_json::to_value(self).map_err(|e| EventCodecError(e.to_string()))?;
        let serde_json::Value::Object(mut map) = value else {
            return Err(EventCodecError("event did not serialise to an object".into()));
        };
        let event_type = match map.remove("type") {
            Some(serde_json::Value::String(t)) => t,
            _ => return Err(EventCodecError("event has no type".into())),
        };
        let data = map.remove("data").unwrap_or(serde_json::Value::Null);
        Ok((event_type, data))
    }

    /// Reads an envelope back into a typed event, upcasting older schema
    /// versions first.
    fn from_envelope(envelope: &EventEnvelope) -> Result<Self, EventCodecError> {
        let current = Self::schema_version(&envelope.event_type);
        if envelope.schema_version > current {
            return Err(EventCodecError(format!(
                "{} schema version {} is newer than this code understands ({current})",
                envelope.event_type, envelope.schema_version
            )));
        }
        let data = if envelope.schema_version < current {
            upcast(
                Self::upcasters(),
                &envelope.event_type,
                envelope.schema_version,
                current,
                envelope.data.clone(),
            )?
        } else {
            envelope.data.clone()
        };
        let value = serde_json::json!({ "type": envelope.event_type, "data": data });
        serde_json::from_value(value)
            .map_err(|e| EventCodecError(format!("{} v{}: {e}", envelope.event_type, envelope.schema_version)))
    }
}

/// An event could not be written or read as its type.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("event codec: {0}")]
pub struct EventCodecError(pub String);

/// Wraps typed events into envelopes ready to append (the store assigns versions).
pub fn envelopes<E: DomainEvent>(
    stream_id: &str,
    customer_id: Option<&str>,
    events: &[E],
    meta: &CommandMeta,
    now: DateTime<Utc>,
) -> Result<Vec<EventEnvelope>, EventCodecError> {
    events
        .iter()
        .map(|event| {
            let (event_type, data) = event.to_parts()?;
            Ok(EventEnvelope {
                event_id: Uuid::now_v7(),
                stream_id: stream_id.to_string(),
                version: 0,
                schema_version: E::schema_version(&event_type),
                event_type,
                customer_id: customer_id.map(str::to_string),
                occurred_at: now,
                recorded_at: now,
                causation_id: meta.causation_id.or(Some(meta.command_id)),
                correlation_id: meta.correlation_id,
                actor: meta.actor.as_str().to_string(),
                data,
            })
        })
        .collect()
}
