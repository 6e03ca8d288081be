//! The item codec: how envelopes, reservations, receipts and snapshots are laid
//! out in the one `events` table (ARCHITECTURE.md §5).
//!
//! Every item has `pk` (S) and `sk` (N) and a `kind`:
//!
//! | kind          | pk                 | sk      | other attributes |
//! | ------------- | ------------------ | ------- | ---------------- |
//! | `event`       | stream id          | version | event_id, type, schema_version (N), customer_id (omitted if none), occurred_at, recorded_at, causation_id (omitted if none), correlation_id, actor, data (JSON string), expires_at (N, retention's TTL, written by the store: activity events; every item of order streams and erased customers' streams, decision 0078) |
//! | `snapshot`    | stream id          | 0       | version (N), state_schema (N), state (JSON string) |
//! | `reservation` | e.g. `email#<hex>` | 0       | owner |
//! | `receipt`     | e.g. `command#...` | 0       | request_hash, status (N), body (JSON string), recorded_at, expires_at (N, epoch seconds, the table's TTL attribute) |
//!
//! Event versions start at 1, so `sk = 0` in a stream's partition is free for
//! its snapshot. Times are RFC 3339 in UTC with as many fraction digits as
//! needed (nanoseconds round-trip exactly).

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::event::EventEnvelope;
use crm_core::ports::{CommandReceipt, Snapshot};
use std::collections::HashMap;
use uuid::Uuid;

/// One DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

pub const PK: &str = "pk";
pub const SK: &str = "sk";
pub const KIND: &str = "kind";

pub const KIND_EVENT: &str = "event";
pub const KIND_SNAPSHOT: &str = "snapshot";
pub const KIND_RESERVATION: &str = "reservation";
pub const KIND_RECEIPT: &str = "receipt";

pub const EVENT_ID: &str = "event_id";
pub const TYPE: &str = "type";
pub const SCHEMA_VERSION: &str = "schema_version";
pub const CUSTOMER_ID: &str = "customer_id";
pub const OCCURRED_AT: &str = "occurred_at";
pub const RECORDED_AT: &str = "recorded_at";
pub const CAUSATION_ID: &str = "causation_id";
pub const CORRELATION_ID: &str = "correlation_id";
pub const ACTOR: &str = "actor";
pub const DATA: &str = "data";

pub const OWNER: &str = "owner";

pub const REQUEST_HASH: &str = "request_hash";
pub const STATUS: &str = "status";
pub const BODY: &str = "body";
/// The table's TTL attribute (epoch seconds).
pub const EXPIRES_AT: &str = "expires_at";

pub const VERSION: &str = "version";
pub const STATE_SCHEMA: &str = "state_schema";
pub const STATE: &str = "state";

/// How long a command receipt is kept before DynamoDB's TTL may delete it.
pub const RECEIPT_RETENTION: chrono::Duration = chrono::Duration::days(7);

/// An item could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("item has no attribute {0}")]
    Missing(&'static str),
    #[error("attribute {name} is not of type {expected}")]
    WrongType { name: &'static str, expected: &'static str },
    #[error("attribute {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("item is a {found}, not a {expected}")]
    WrongKind { expected: &'static str, found: String },
}

/// The RFC 3339 form every time is stored in.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The primary key of an item.
pub fn key(pk: &str, sk: u64) -> Item {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), n(sk))])
}

fn json_string(name: &'static str, value: &serde_json::Value) -> Result<AttributeValue, CodecError> {
    serde_json::to_string(value)
        .map(AttributeValue::S)
        .map_err(|e| CodecError::Invalid {
            name,
            reason: e.to_string(),
        })
}

/// An event item.
pub fn event_to_item(e: &EventEnvelope) -> Result<Item, CodecError> {
    let mut item = key(&e.stream_id, e.version);
    item.insert(KIND.into(), s(KIND_EVENT));
    item.insert(EVENT_ID.into(), s(e.event_id.to_string()));
    item.insert(TYPE.into(), s(&e.event_type));
    item.insert(SCHEMA_VERSION.into(), n(e.schema_version));
    if let Some(c) = &e.customer_id {
        item.insert(CUSTOMER_ID.into(), s(c));
    }
    item.insert(OCCURRED_AT.into(), s(format_time(&e.occurred_at)));
    item.insert(RECORDED_AT.into(), s(format_time(&e.recorded_at)));
    if let Some(c) = &e.causation_id {
        item.insert(CAUSATION_ID.into(), s(c.to_string()));
    }
    item.insert(CORRELATION_ID.into(), s(e.correlation_id.to_string()));
    item.insert(ACTOR.into(), s(&e.actor));
    item.insert(DATA.into(), json_string(DATA, &e.data)?);
    Ok(item)
}

/// An item's size as DynamoDB counts it for capacity: the UTF-8 bytes of
/// every attribute name and of its string or number value (a number is
/// counted by its digits, slightly over what DynamoDB stores).
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(v) | AttributeValue::N(v) => v.len(),
                    _ => 0,
                }
        })
        .sum()
}

/// Reads an event item back into its envelope.
pub fn event_from_item(item: &Item) -> Result<EventEnvelope, CodecError> {
    expect_kind(item, KIND_EVENT)?;
    Ok(EventEnvelope {
        event_id: get_uuid(item, EVENT_ID)?,
        stream_id: get_s(item, PK)?.to_string(),
        version: get_n(item, SK)?,
        event_type: get_s(item, TYPE)?.to_string(),
        schema_version: get_n(item, SCHEMA_VERSION)?,
        customer_id: get_opt_s(item, CUSTOMER_ID)?.map(str::to_string),
        occurred_at: get_time(item, OCCURRED_AT)?,
        recorded_at: get_time(item, RECORDED_AT)?,
        causation_id: match get_opt_s(item, CAUSATION_ID)? {
            Some(_) => Some(get_uuid(item, CAUSATION_ID)?),
            None => None,
        },
        correlation_id: get_uuid(item, CORRELATION_ID)?,
        actor: get_s(item, ACTOR)?.to_string(),
        data: get_json(item, DATA)?,
    })
}

/// A reservation item: `key` held by `owner`.
pub fn reservation_to_item(reservation_key: &str, owner: &str) -> Item {
    let mut item = key(reservation_key, 0);
    item.insert(KIND.into(), s(KIND_RESERVATION));
    item.insert(OWNER.into(), s(owner));
    item
}

/// The owner of a reservation item.
pub fn reservation_owner_from_item(item: &Item) -> Result<String, CodecError> {
    expect_kind(item, KIND_RESERVATION)?;
    Ok(get_s(item, OWNER)?.to_string())
}

/// A receipt item. It expires [`RECEIPT_RETENTION`] after it was recorded
/// (and never less than that from `now`, so a receipt with an old
/// `recorded_at` is not deleted at once).
pub fn receipt_to_item(r: &CommandReceipt, now: DateTime<Utc>) -> Result<Item, CodecError> {
    let mut item = key(&r.key, 0);
    item.insert(KIND.into(), s(KIND_RECEIPT));
    item.insert(REQUEST_HASH.into(), s(&r.request_hash));
    item.insert(STATUS.into(), n(r.status));
    item.insert(BODY.into(), json_string(BODY, &r.body)?);
    item.insert(RECORDED_AT.into(), s(format_time(&r.recorded_at)));
    let expires = r.recorded_at.max(now) + RECEIPT_RETENTION;
    item.insert(EXPIRES_AT.into(), n(expires.timestamp()));
    Ok(item)
}

/// Reads a receipt item back.
pub fn receipt_from_item(item: &Item) -> Result<CommandReceipt, CodecError> {
    expect_kind(item, KIND_RECEIPT)?;
    Ok(CommandReceipt {
        key: get_s(item, PK)?.to_string(),
        request_hash: get_s(item, REQUEST_HASH)?.to_string(),
        status: get_n(item, STATUS)?,
        body: get_json(item, BODY)?,
        recorded_at: get_time(item, RECORDED_AT)?,
    })
}

/// A snapshot item, at `sk = 0` of its stream's partition.
pub fn snapshot_to_item(snap: &Snapshot) -> Result<Item, CodecError> {
    let mut item = key(&snap.stream_id, 0);
    item.insert(KIND.into(), s(KIND_SNAPSHOT));
    item.insert(VERSION.into(), n(snap.version));
    item.insert(STATE_SCHEMA.into(), n(snap.state_schema));
    item.insert(STATE.into(), json_string(STATE, &snap.state)?);
    Ok(item)
}

/// Reads a snapshot item back.
pub fn snapshot_from_item(item: &Item) -> Result<Snapshot, CodecError> {
    expect_kind(item, KIND_SNAPSHOT)?;
    Ok(Snapshot {
        stream_id: get_s(item, PK)?.to_string(),
        version: get_n(item, VERSION)?,
        state_schema: get_n(item, STATE_SCHEMA)?,
        state: get_json(item, STATE)?,
    })
}

/// The item's `kind`, if it has one.
pub fn kind_of(item: &Item) -> Option<&str> {
    item.get(KIND).and_then(|v| v.as_s().ok()).map(String::as_str)
}

fn expect_kind(item: &Item, expected: &'static str) -> Result<(), CodecError> {
    match kind_of(item) {
        Some(k) if k == expected => Ok(()),
        Some(k) => Err(CodecError::WrongKind {
            expected,
            found: k.to_string(),
        }),
        None => Err(CodecError::Missing(KIND)),
    }
}

fn get_opt_s<'a>(item: &'a Item, name: &'static str) -> Result<Option<&'a str>, CodecError> {
    match item.get(name) {
        None | Some(AttributeValue::Null(_)) => Ok(None),
        Some(AttributeValue::S(v)) => Ok(Some(v)),
        Some(_) => Err(CodecError::WrongType { name, expected: "S" }),
    }
}

pub fn get_s<'a>(item: &'a Item, name: &'static str) -> Result<&'a str, CodecError> {
    get_opt_s(item, name)?.ok_or(CodecError::Missing(name))
}

pub fn get_n<T: std::str::FromStr>(item: &Item, name: &'static str) -> Result<T, CodecError>
where
    T::Err: std::fmt::Display,
{
    match item.get(name) {
        None => Err(CodecError::Missing(name)),
        Some(AttributeValue::N(v)) => v.parse().map_err(|e: T::Err| CodecError::Invalid {
            name,
            reason: format!("{v:?}: {e}"),
        }),
        Some(_) => Err(CodecError::WrongType { name, expected: "N" }),
    }
}

fn get_uuid(item: &Item, name: &'static str) -> Result<Uuid, CodecError> {
    let v = get_s(item, name)?;
    Uuid::parse_str(v).map_err(|e| CodecError::Invalid {
        name,
        reason: format!("{v:?}: {e}"),
    })
}

fn get_time(item: &Item, name: &'static str) -> Result<DateTime<Utc>, CodecError> {
    let v = get_s(item, name)?;
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| CodecError::Invalid {
            name,
            reason: format!("{v:?}: {e}"),
        })
}

fn get_json(item: &Item, name: &'static str) -> Result<serde_json::Value, CodecError> {
    serde_json::from_str(get_s(item, name)?).map_err(|e| CodecError::Invalid {
        name,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn envelope() -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            stream_id: "customer-1".into(),
            version: 7,
            event_type: "CustomerRegistered".into(),
            schema_version: 2,
            customer_id: Some("c-1".into()),
            occurred_at: Utc
                .with_ymd_and_hms(2026, 11, 23, 10, 0, 0)
                .single()
                .unwrap_or_default()
                + chrono::Duration::nanoseconds(123_456_789),
            recorded_at: Utc::now(),
            causation_id: Some(Uuid::now_v7()),
            correlation_id: Uuid::now_v7(),
            actor: "api:someone".into(),
            data: serde_json::json!({"a": [1, 2.5, null], "b": "grüße \"q\""}),
        }
    }

    #[test]
    fn event_round_trips() {
        let e = envelope();
        let item = event_to_item(&e).expect("encode");
        assert_eq!(item.get(SK), Some(&n(7)));
        assert_eq!(item.get(KIND), Some(&s(KIND_EVENT)));
        assert_eq!(item.get(OCCURRED_AT), Some(&s("2026-11-23T10:00:00.123456789Z")));
        assert_eq!(event_from_item(&item).expect("decode"), e);
    }

    #[test]
    fn optional_fields_are_omitted() {
        let mut e = envelope();
        e.customer_id = None;
        e.causation_id = None;
        let item = event_to_item(&e).expect("encode");
        assert!(!item.contains_key(CUSTOMER_ID));
        assert!(!item.contains_key(CAUSATION_ID));
        assert_eq!(event_from_item(&item).expect("decode"), e);
    }

    #[test]
    fn kinds_are_checked() {
        let item = reservation_to_item("email#ab", "customer-1");
        assert_eq!(reservation_owner_from_item(&item).expect("owner"), "customer-1");
        assert!(matches!(event_from_item(&item), Err(CodecError::WrongKind { .. })));
        assert!(snapshot_from_item(&item).is_err());
    }

    #[test]
    fn receipt_and_snapshot_round_trip() {
        let at = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single().unwrap_or_default();
        let r = CommandReceipt {
            key: "command#x".into(),
            request_hash: "h".into(),
            status: 201,
            body: serde_json::json!({"id": 1}),
            recorded_at: at,
        };
        let item = receipt_to_item(&r, at).expect("encode");
        assert_eq!(item.get(EXPIRES_AT), Some(&n((at + RECEIPT_RETENTION).timestamp())));
        assert_eq!(receipt_from_item(&item).expect("decode"), r);

        let snap = Snapshot {
            stream_id: "customer-1".into(),
            version: 12,
            state_schema: 3,
            state: serde_json::json!({"x": true}),
        };
        let item = snapshot_to_item(&snap).expect("encode");
        assert_eq!(item.get(SK), Some(&n(0)));
        assert_eq!(snapshot_from_item(&item).expect("decode"), snap);
    }

    #[test]
    fn corrupt_items_are_errors_not_panics() {
        let mut item = event_to_item(&envelope()).expect("encode");
        item.insert(SK.into(), s("seven"));
        assert!(matches!(
            event_from_item(&item),
            Err(CodecError::WrongType { name: SK, .. })
        ));
        item.insert(SK.into(), n("x"));
        assert!(matches!(
            event_from_item(&item),
            Err(CodecError::Invalid { name: SK, .. })
        ));
        item.remove(ACTOR);
        item.insert(SK.into(), n(1));
        assert_eq!(event_from_item(&item), Err(CodecError::Missing(ACTOR)));
    }
}
