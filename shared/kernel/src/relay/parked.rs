//! An event parked on the dead-letter queue, and reading a relay's dead
//! letter back.

use super::entry::{wire_size, MAX_PARKED_ENTRY_BYTES};
use super::RELAY_CONSUMER;
use crate::bus::BusEntry;
use crate::ports::DeadLetter;
use serde::{Deserialize, Serialize};

/// An event's key in the events table.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventKey {
    /// The stream id.
    pub pk: String,
    /// The version.
    pub sk: u64,
}

/// The payload of the relay's dead letter for an event it could not put on
/// the bus: enough to publish it again without the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// Where the event lives in the events table.
    pub key: EventKey,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    /// The stream record it came from (its sequence number), or the caller's
    /// id for it (`crm-ops republish`: `pk/sk`).
    pub record_id: String,
    /// Its size as PutEvents counts it.
    pub size_bytes: usize,
    /// The bus entry as the relay built it, the envelope as stored (personal
    /// fields encrypted); absent when over [`MAX_PARKED_ENTRY_BYTES`]: then
    /// the event is re-read from the table by `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<BusEntry>,
}

impl ParkedEvent {
    /// `entry` of record `record_id` as parked: whole when it fits a queue
    /// message, else by its key.
    pub fn of(record_id: impl Into<String>, entry: &BusEntry) -> Self {
        let size_bytes = wire_size(entry);
        let e = &entry.detail;
        ParkedEvent {
            key: EventKey {
                pk: e.stream_id.clone(),
                sk: e.version,
            },
            event_id: e.event_id,
            event_type: e.event_type.clone(),
            record_id: record_id.into(),
            size_bytes,
            stored: (size_bytes <= MAX_PARKED_ENTRY_BYTES).then(|| entry.clone()),
        }
    }
}

/// What the relay parked, read back from a dead letter.
#[derive(Debug, Clone, PartialEq)]
pub enum RelayLetter {
    /// An event it could not publish.
    Event(Box<ParkedEvent>),
    /// A stream record it could not read as an event; the key, when the
    /// record carries one (`dynamodb.Keys`), names the item to read again.
    Poison { key: Option<EventKey> },
}

impl RelayLetter {
    /// The relay's letter in `letter`; `None` for another consumer's.
    pub fn from_letter(letter: &DeadLetter) -> Option<Self> {
        if letter.consumer != RELAY_CONSUMER {
            return None;
        }
        if let Ok(parked) = serde_json::from_value::<ParkedEvent>(letter.payload.clone()) {
            return Some(RelayLetter::Event(Box::new(parked)));
        }
        Some(RelayLetter::Poison {
            key: stream_record_key(&letter.payload),
        })
    }

    /// The key of the event to read again, when there is one.
    pub fn key(&self) -> Option<&EventKey> {
        match self {
            RelayLetter::Event(p) => Some(&p.key),
            RelayLetter::Poison { key } => key.as_ref(),
        }
    }
}

/// The item key of a DynamoDB stream record as Lambda delivers it
/// (`dynamodb.Keys.pk.S`, `dynamodb.Keys.sk.N`).
pub fn stream_record_key(record: &serde_json::Value) -> Option<EventKey> {
    let keys = record.get("dynamodb")?.get("Keys")?;
    Some(EventKey {
        pk: keys.get("pk")?.get("S")?.as_str()?.to_string(),
        sk: keys.get("sk")?.get("N")?.as_str()?.parse().ok()?,
    })
}
