//! One message of the Segment spec (track, identify, alias, page, screen),
//! read and checked field by field: a refusal names the field
//! (`properties.price`, `traits.email`, `batch[3].messageId`).

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

/// The largest message accepted (Segment's own limit).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// The most messages, and bytes, in one batch.
pub const MAX_BATCH_MESSAGES: usize = 500;
pub const MAX_BATCH_BYTES: usize = 500 * 1024;
/// How far in the future a timestamp may be (clock skew).
const MAX_SKEW_MINUTES: i64 = 5;
const MAX_ID: usize = 200;

/// The Segment call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Track,
    Identify,
    Alias,
    Page,
    Screen,
}

impl Kind {
    pub fn parse(text: &str) -> Option<Kind> {
        match text {
            "track" => Some(Kind::Track),
            "identify" => Some(Kind::Identify),
            "alias" => Some(Kind::Alias),
            "page" => Some(Kind::Page),
            "screen" => Some(Kind::Screen),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Track => "track",
            Kind::Identify => "identify",
            Kind::Alias => "alias",
            Kind::Page => "page",
            Kind::Screen => "screen",
        }
    }
}

/// Why one message was not accepted: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Rejection {
    pub field: String,
    pub message: String,
}

impl Rejection {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Rejection {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One message, read.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentMessage {
    pub kind: Kind,
    pub message_id: String,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    /// `alias`: the id being merged.
    pub previous_id: Option<String>,
    /// `track`: the event name.
    pub event: Option<String>,
    /// `page` / `screen`: the name.
    pub name: Option<String>,
    pub properties: Map<String, Value>,
    pub traits: Map<String, Value>,
    pub context: Map<String, Value>,
    /// When it happened, as the client says.
    pub timestamp: Option<DateTime<Utc>>,
}

fn id(map: &Map<String, Value>, field: &str) -> Result<Option<String>, Rejection> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        // Segment's libraries send numeric user ids as numbers at times.
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                return Err(Rejection::new(field, "must not be empty"));
            }
            if s.chars().count() > MAX_ID {
                return Err(Rejection::new(field, format!("must be at most {MAX_ID} characters")));
            }
            if s.chars().any(char::is_control) {
                return Err(Rejection::new(field, "must not contain control characters"));
            }
            Ok(Some(s.to_string()))
        }
        Some(_) => Err(Rejection::new(field, "must be a string")),
    }
}

fn object(map: &Map<String, Value>, field: &str) -> Result<Map<String, Value>, Rejection> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o.clone()),
        Some(_) => Err(Rejection::new(field, "must be an object")),
    }
}

impl SegmentMessage {
    /// Reads one message. `expected` is the call of the route (`/v1/track`
    /// ...): a `type` in the body must agree with it; in a batch, `type` is
    /// required.
    pub fn parse(value: &Value, expected: Option<Kind>, now: DateTime<Utc>) -> Result<Self, Rejection> {
        let Value::Object(map) = value else {
            return Err(Rejection::new("body", "must be a JSON object"));
        };
        let size = value.to_string().len();
        if size > MAX_MESSAGE_BYTES {
            return Err(Rejection::new(
                "body",
                format!("is {size} bytes; a message is at most {MAX_MESSAGE_BYTES}"),
            ));
        }
        let kind = match (map.get("type"), expected) {
            (None | Some(Value::Null), Some(kind)) => kind,
            (None | Some(Value::Null), None) => return Err(Rejection::new("type", "is required")),
            (Some(Value::String(t)), expected) => {
                let kind = Kind::parse(t).ok_or_else(|| {
                    Rejection::new(
                        "type",
                        format!("\"{t}\" is not one of track, identify, alias, page, screen"),
                    )
                })?;
                if expected.is_some_and(|e| e != kind) {
                    return Err(Rejection::new("type", format!("\"{t}\" does not match the route")));
                }
                kind
            }
            (Some(_), _) => return Err(Rejection::new("type", "must be a string")),
        };
        let message_id =
            id(map, "messageId")?.ok_or_else(|| Rejection::new("messageId", "is required (it makes retries safe)"))?;
        let anonymous_id = id(map, "anonymousId")?;
        let user_id = id(map, "userId")?;
        let previous_id = id(map, "previousId")?;
        let timestamp = match map.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let at = DateTime::parse_from_rfc3339(s)
                    .map_err(|_| Rejection::new("timestamp", "must be an ISO 8601 date-time with a time zone"))?
                    .with_timezone(&Utc);
                if at > now + Duration::minutes(MAX_SKEW_MINUTES) {
                    return Err(Rejection::new("timestamp", "must not be in the future"));
                }
                Some(at)
            }
            Some(_) => return Err(Rejection::new("timestamp", "must be a string")),
        };
        let text = |field: &str| -> Result<Option<String>, Rejection> {
            match map.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Err(Rejection::new(field, "must not be empty")),
                Some(Value::String(s)) if s.chars().count() > MAX_ID => {
                    Err(Rejection::new(field, format!("must be at most {MAX_ID} characters")))
                }
                Some(Value::String(s)) if s.chars().any(char::is_control) => {
                    Err(Rejection::new(field, "must not contain control characters"))
                }
                Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(_) => Err(Rejection::new(field, "must be a string")),
            }
        };
        let message = SegmentMessage {
            kind,
            message_id,
            anonymous_id,
            user_id,
            previous_id,
            event: text("event")?,
            name: text("name")?,
            properties: object(map, "properties")?,
            traits: object(map, "traits")?,
            context: object(map, "context")?,
            timestamp,
        };
        match kind {
            Kind::Alias => {
                if message.previous_id.is_none() {
                    return Err(Rejection::new("previousId", "is required for alias"));
                }
                if message.user_id.is_none() {
                    return Err(Rejection::new("userId", "is required for alias"));
                }
            }
            _ if message.user_id.is_none() && message.anonymous_id.is_none() => {
                return Err(Rejection::new("userId", "userId or anonymousId is required"));
            }
            Kind::Track if message.event.is_none() => return Err(Rejection::new("event", "is required for track")),
            Kind::Screen if message.name.is_none() => return Err(Rejection::new("name", "is required for screen")),
            _ => {}
        }
        object(map, "integrations")?;
        Ok(message)
    }

    /// A property as text (strings, and numbers written out).
    pub fn property_text(&self, name: &str) -> Option<String> {
        match self.properties.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        }
    }

    /// A trait as text, under any of its spellings (`firstName`, `first_name`).
    pub fn trait_text(&self, names: &[&str]) -> Option<String> {
        names.iter().find_map(|n| match self.traits.get(*n) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => None,
        })
    }

    /// `context.<a>.<b>` as text.
    pub fn context_text(&self, path: &[&str]) -> Option<String> {
        let mut v = self.context.get(*path.first()?)?;
        for key in &path[1..] {
            v = v.get(key)?;
        }
        v.as_str().map(str::to_string).filter(|s| !s.trim().is_empty())
    }
}

/// A decimal amount (`19.99`) in minor units (`1999`), for `field`.
pub fn minor_units(value: &Value, field: &str) -> Result<i64, Rejection> {
    let amount = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| Rejection::new(field, "must be a number"))?;
    if !amount.is_finite() || !(0.0..=1e12).contains(&amount) {
        return Err(Rejection::new(field, "must be a non-negative amount"));
    }
    Ok((amount * 100.0).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        crate::testing::test_time()
    }

    fn field(value: Value, expected: Option<Kind>) -> String {
        match SegmentMessage::parse(&value, expected, now()) {
            Err(r) => r.field,
            Ok(m) => panic!("accepted: {m:?}"),
        }
    }

    #[test]
    fn a_track_call_reads_every_field() {
        let m = SegmentMessage::parse(
            &json!({ "messageId": "m-1", "anonymousId": "a-1", "event": "Product Viewed",
                     "properties": { "product_id": "p1", "price": 19.99 },
                     "context": { "ip": "203.0.113.9", "page": { "url": "https://shop.example/p1" } },
                     "timestamp": "2026-11-23T11:00:00Z", "integrations": { "All": true } }),
            Some(Kind::Track),
            now(),
        )
        .expect("accepted");
        assert_eq!(m.kind, Kind::Track);
        assert_eq!((m.message_id.as_str(), m.anonymous_id.as_deref()), ("m-1", Some("a-1")));
        assert_eq!(m.event.as_deref(), Some("Product Viewed"));
        assert_eq!(m.property_text("product_id").as_deref(), Some("p1"));
        assert_eq!(
            m.context_text(&["page", "url"]).as_deref(),
            Some("https://shop.example/p1")
        );
        assert_eq!(minor_units(&m.properties["price"], "properties.price"), Ok(1999));
        assert_eq!(m.timestamp, Some(now() - Duration::hours(1)));
    }

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(
            field(json!({ "anonymousId": "a", "event": "x" }), Some(Kind::Track)),
            "messageId"
        );
        assert_eq!(
            field(json!({ "messageId": "m", "event": "x" }), Some(Kind::Track)),
            "userId"
        );
        assert_eq!(
            field(json!({ "messageId": "m", "anonymousId": "a" }), Some(Kind::Track)),
            "event"
        );
        assert_eq!(
            field(
                json!({ "messageId": "m", "anonymousId": "a", "type": "identify" }),
                Some(Kind::Track)
            ),
            "type"
        );
        assert_eq!(field(json!({ "messageId": "m", "anonymousId": "a" }), None), "type");
        assert_eq!(
            field(json!({ "messageId": "m", "anonymousId": "a", "type": "group" }), None),
            "type"
        );
        assert_eq!(
            field(json!({ "messageId": "m", "userId": "u", "type": "alias" }), None),
            "previousId"
        );
        assert_eq!(
            field(
                json!({ "messageId": "m", "anonymousId": "a", "event": "x", "properties": [1] }),
                Some(Kind::Track)
            ),
            "properties"
        );
        assert_eq!(
            field(
                json!({ "messageId": "m", "anonymousId": "a", "event": "x", "timestamp": "2099-01-01T00:00:00Z" }),
                Some(Kind::Track)
            ),
            "timestamp"
        );
        assert_eq!(
            field(
                json!({ "messageId": "", "anonymousId": "a", "event": "x" }),
                Some(Kind::Track)
            ),
            "messageId"
        );
        assert_eq!(field(json!([1, 2]), None), "body");
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(
            field(
                json!({ "messageId": "m", "anonymousId": "a", "event": "x", "properties": { "b": big } }),
                Some(Kind::Track)
            ),
            "body"
        );
        assert!(minor_units(&json!(-1), "f").is_err() && minor_units(&json!("abc"), "f").is_err());
    }
}
