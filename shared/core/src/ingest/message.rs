//! One message of the Segment spec (track, identify, alias, page, screen),
//! read and checked field by field: a refusal names the field
//! (`properties.price`, `traits.email`, `batch[3].messageId`).

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
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
    /// When it happened: the client's `timestamp`, corrected for the
    /// client's clock skew when it says when it sent the message
    /// ([`corrected_timestamp`]).
    pub timestamp: Option<DateTime<Utc>>,
}

/// A point in time in any form Segment's libraries send one: an ISO 8601
/// date-time with `Z` or an offset (`+01:00` or `+0100`), with or without
/// fractional seconds; one without an offset (read as UTC); a date alone
/// (midnight UTC); or a number of milliseconds since the epoch (a number
/// below 10^11, which as milliseconds would be before 1973, is read as
/// seconds). `None` when the value is none of these.
pub fn instant(value: &Value) -> Option<DateTime<Utc>> {
    match value {
        Value::String(s) => {
            let s = s.trim();
            if let Ok(at) = DateTime::parse_from_rfc3339(s) {
                return Some(at.with_timezone(&Utc));
            }
            for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z"] {
                if let Ok(at) = DateTime::parse_from_str(s, format) {
                    return Some(at.with_timezone(&Utc));
                }
            }
            for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
                if let Ok(at) = NaiveDateTime::parse_from_str(s, format) {
                    return Some(Utc.from_utc_datetime(&at));
                }
            }
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|at| Utc.from_utc_datetime(&at))
        }
        Value::Number(n) => {
            let number = n.as_f64().filter(|x| x.is_finite() && *x >= 0.0)?;
            let millis = if number < 1e11 { number * 1000.0 } else { number };
            // Beyond i64 milliseconds, or chrono's range, is no time.
            if millis >= 9.0e15 {
                return None;
            }
            DateTime::from_timestamp_millis(millis.round() as i64)
        }
        _ => None,
    }
}

/// Segment's clock-skew correction: a client whose clock is off stamps both
/// `timestamp` and `sentAt` with it, so the time between them is true; the
/// event happened that long before the server received it:
/// `receivedAt - (sentAt - timestamp)`. Without `sentAt`, the timestamp as sent.
pub fn corrected_timestamp(
    timestamp: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
) -> DateTime<Utc> {
    match sent_at {
        Some(sent_at) => received_at - (sent_at - timestamp),
        None => timestamp,
    }
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
        Self::parse_sent(value, expected, now, None)
    }

    /// Reads one message received at `now`, of a batch sent at
    /// `batch_sent_at` (the batch's `sentAt`; the message's own `sentAt`
    /// comes first): its timestamp is corrected for the client's clock skew
    /// ([`corrected_timestamp`]). A `sentAt` that is not a time is ignored
    /// (no correction): it never refuses the message.
    pub fn parse_sent(
        value: &Value,
        expected: Option<Kind>,
        now: DateTime<Utc>,
        batch_sent_at: Option<DateTime<Utc>>,
    ) -> Result<Self, Rejection> {
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
        let sent_at = map.get("sentAt").and_then(instant).or(batch_sent_at);
        let timestamp = match map.get("timestamp") {
            None | Some(Value::Null) => None,
            Some(value @ (Value::String(_) | Value::Number(_))) => {
                let at = instant(value).ok_or_else(|| {
                    Rejection::new(
                        "timestamp",
                        "must be an ISO 8601 date or date-time, or milliseconds since the epoch",
                    )
                })?;
                let at = corrected_timestamp(at, sent_at, now);
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
            // Whatever `context` holds is kept; one that is not an object is ignored.
            context: object(map, "context").unwrap_or_default(),
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
        // `integrations` (which destinations get the message) means nothing
        // here: any shape is ignored.
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
        trait_text_in(&self.traits, names)
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

/// A trait of `traits` as text, under the first of `names` that holds one:
/// trimmed, never blank.
pub fn trait_text_in(traits: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| match traits.get(*n) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    })
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

    fn parsed(value: Value) -> SegmentMessage {
        SegmentMessage::parse(&value, Some(Kind::Track), now()).expect("accepted")
    }

    #[test]
    fn timestamps_in_every_form_the_libraries_send() {
        let at = |ts: Value| {
            parsed(json!({ "messageId": "m", "anonymousId": "a", "event": "x", "timestamp": ts })).timestamp
        };
        let eleven = Some(now() - Duration::hours(1)); // 2026-11-23T11:00:00Z
        assert_eq!(at(json!("2026-11-23T11:00:00Z")), eleven);
        assert_eq!(at(json!("2026-11-23T12:00:00+01:00")), eleven);
        assert_eq!(
            at(json!("2026-11-23T12:00:00+0100")),
            eleven,
            "an offset without a colon (Java, Go)"
        );
        assert_eq!(at(json!("2026-11-23T06:00:00.000-05:00")), eleven);
        assert_eq!(
            at(json!("2026-11-23T11:00:00.123456+00:00")),
            eleven.map(|t| t + Duration::microseconds(123_456))
        );
        assert_eq!(at(json!("2026-11-23T11:00:00")), eleven, "no offset: UTC");
        assert_eq!(at(json!("2026-11-23 11:00:00Z")), eleven);
        assert_eq!(
            at(json!("2026-11-23")),
            Some(now() - Duration::hours(12)),
            "a date alone: midnight UTC"
        );
        let millis = (now() - Duration::hours(1)).timestamp_millis();
        assert_eq!(at(json!(millis)), eleven, "epoch milliseconds");
        assert_eq!(at(json!(millis / 1000)), eleven, "epoch seconds");
        assert_eq!(at(Value::Null), None);
        for bad in [json!("yesterday"), json!("2026-13-01"), json!(-5), json!(1e300)] {
            assert_eq!(
                field(
                    json!({ "messageId": "m", "anonymousId": "a", "event": "x", "timestamp": bad }),
                    Some(Kind::Track)
                ),
                "timestamp"
            );
        }
    }

    #[test]
    fn a_clients_clock_skew_is_corrected_by_its_sent_at() {
        // The device's clock is two hours fast: it says the event happened at
        // 13:59:50 and it sent it at 14:00:00; received at 12:00:00 (now).
        let skewed = json!({ "messageId": "m", "anonymousId": "a", "event": "x",
            "timestamp": "2026-11-23T13:59:50Z", "sentAt": "2026-11-23T14:00:00Z" });
        assert_eq!(parsed(skewed.clone()).timestamp, Some(now() - Duration::seconds(10)));
        // Without sentAt the same timestamp is in the future: refused.
        let mut unsent = skewed.clone();
        unsent.as_object_mut().expect("object").remove("sentAt");
        assert_eq!(field(unsent.clone(), Some(Kind::Track)), "timestamp");
        // The batch's sentAt applies to a message without its own.
        let batch_sent = Some(crate::testing::test_time() + Duration::hours(2));
        let m = SegmentMessage::parse_sent(&unsent, Some(Kind::Track), now(), batch_sent).expect("accepted");
        assert_eq!(m.timestamp, Some(now() - Duration::seconds(10)));
        // The message's own sentAt comes first.
        let m = SegmentMessage::parse_sent(&skewed, Some(Kind::Track), now(), Some(now())).expect("accepted");
        assert_eq!(m.timestamp, Some(now() - Duration::seconds(10)));
        // A sentAt that is not a time is ignored, never a refusal.
        let mut odd = skewed;
        odd["sentAt"] = json!({ "not": "a time" });
        odd["timestamp"] = json!("2026-11-23T11:00:00Z");
        assert_eq!(parsed(odd).timestamp, Some(now() - Duration::hours(1)));
        assert_eq!(
            corrected_timestamp(now(), None, now() + Duration::hours(3)),
            now(),
            "without sentAt, the timestamp as sent"
        );
    }

    #[test]
    fn unknown_context_and_integrations_are_kept_or_ignored() {
        let m = parsed(json!({ "messageId": "m", "anonymousId": "a", "event": "x",
            "context": { "library": { "name": "analytics.js", "version": "next-1.70.0" }, "novel": { "deep": [1, 2] } },
            "integrations": { "All": false, "Segment.io": { "apiKey": "k" }, "Mixpanel": ["odd"] },
            "_metadata": { "bundled": ["Segment.io"] }, "writeKey": "k", "receivedAt": "whenever" }));
        assert_eq!(m.context["novel"], json!({ "deep": [1, 2] }), "unknown context is kept");
        for odd in [json!("all"), json!([1]), json!(true), json!(3)] {
            let m = parsed(
                json!({ "messageId": "m", "anonymousId": "a", "event": "x", "integrations": odd, "context": odd }),
            );
            assert!(m.context.is_empty(), "a context that is not an object is ignored");
        }
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
