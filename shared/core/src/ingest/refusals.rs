//! The refused-messages log (issue 17 item 4, decision 0053): nothing a
//! source sends is dropped without a trace.
//!
//! A message refused on a single route gets its 4xx, but one refused inside
//! a `/v1/batch` is only "rejected" inside a 200 answer, which Segment's
//! libraries take as success. [`Ingestion::take`] therefore records every
//! refusal ([`IngestError::Rejected`], never a [`IngestError::Retry`]: that
//! one the client sends again) in a per-source log ([`RefusalLog`]):
//! when, which source, the messageId, the type, the event name, the field
//! and the reason, and the message itself without its personal values
//! ([`redact_message`]). Entries are kept [`KEPT_FOR_DAYS`] days
//! (`expires_at`: DynamoDB's TTL on AWS, deleted by the adapter locally),
//! listed newest first per source, and counted in the metric
//! [`MESSAGES_REFUSED`] (dimension `Source`).
//!
//! Recording is best effort: a log that cannot be written is reported in
//! the process log, and the client still gets the refusal it would have got.

use super::{Accepted, IngestError, Ingestion, Kind, Rejection, SegmentMessage, Source};
use crate::metrics::{MetricSet, MetricsSink, NoMetrics};
use crate::ports::StoreError;
use crate::privacy::scrub::{scrub, EMAIL_MARKER, PHONE_MARKER};
use crate::privacy::{IdentifierHasher, IdentifierKind, LookupKind};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// How long a refusal is kept.
pub const KEPT_FOR_DAYS: i64 = 7;

/// The metric counting refused messages (dimension `Source`).
pub const MESSAGES_REFUSED: &str = "MessagesRefused";

/// What a personal value that is not an identifier reads as in the log.
pub const REMOVED: &str = "[removed]";

/// What starts a keyed hash in the log (`hmac:<64 hex digits>`).
pub const HASH_PREFIX: &str = "hmac:";

/// The most entries one page of [`RefusalLog::list`] holds.
pub const MAX_PAGE: usize = 100;

/// The longest text kept of the messageId, type and event name as sent (they
/// may be what was refused for its length).
const MAX_LABEL_CHARS: usize = 200;

/// How long a refusal is kept.
pub fn kept_for() -> Duration {
    Duration::days(KEPT_FOR_DAYS)
}

/// One refused message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// Unique; with `refused_at`, the entry's place in the log ([`Refusal::cursor`]).
    pub id: String,
    pub refused_at: DateTime<Utc>,
    /// When the log forgets it ([`KEPT_FOR_DAYS`] after `refused_at`).
    pub expires_at: DateTime<Utc>,
    /// The source's name.
    pub source: String,
    /// As sent (absent when it was missing or not a string).
    pub message_id: Option<String>,
    /// `type` as sent, else the route's call.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `event` (track) or `name` (page, screen) as sent.
    pub event: Option<String>,
    /// The field refused (`properties.price`, `traits.email`, `body`).
    pub field: String,
    pub reason: String,
    /// The message without its personal values ([`redact_message`]);
    /// `null` when it was not a JSON object or was larger than a message may be.
    pub message: Value,
}

impl Refusal {
    /// Describes the refusal of `raw` from `source` at `now` (`expected`:
    /// the call of the route, for a message without `type`), its personal
    /// values removed or replaced by keyed hashes under `identifiers`
    /// (removed when there is no hasher).
    pub fn new(
        source: &str,
        raw: &Value,
        expected: Option<Kind>,
        rejection: &Rejection,
        identifiers: Option<&IdentifierHasher>,
        now: DateTime<Utc>,
    ) -> Self {
        let label = |field: &str| {
            raw.get(field)
                .and_then(Value::as_str)
                .map(|s| scrub(&s.chars().take(MAX_LABEL_CHARS).collect::<String>()).into_owned())
        };
        Refusal {
            id: uuid::Uuid::new_v4().to_string(),
            refused_at: now,
            expires_at: now + kept_for(),
            source: source.to_string(),
            message_id: label("messageId"),
            kind: label("type").or_else(|| expected.map(|k| k.as_str().to_string())),
            event: label("event").or_else(|| label("name")),
            field: scrub(&rejection.field).into_owned(),
            reason: scrub(&rejection.message).into_owned(),
            message: redact_message(raw, identifiers),
        }
    }

    /// The entry's place in its source's log: its time (to the microsecond)
    /// and its id. Text order is time order; a page of
    /// [`RefusalLog::list`] continues after (older than) a cursor.
    pub fn cursor(&self) -> String {
        format!("{}#{}", self.refused_at.format("%Y%m%dT%H%M%S%.6fZ"), self.id)
    }
}

/// Whether `text` can be a cursor of [`Refusal::cursor`] (asked by a caller).
pub fn is_cursor(text: &str) -> bool {
    text.len() <= 64 && !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "#.-".contains(c))
}

/// One page of a source's refusals, newest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RefusalPage {
    pub refusals: Vec<Refusal>,
    /// The cursor to ask for the next (older) page; `None`: this was the last.
    pub next_after: Option<String>,
}

/// Where refusals are kept: the read-models table on AWS (partition
/// `refused-messages#<source>`, with a TTL), a table of the local database.
#[async_trait]
pub trait RefusalLog: Send + Sync {
    /// Keeps `refusal` until its `expires_at`.
    async fn record(&self, refusal: &Refusal) -> Result<(), StoreError>;

    /// The refusals of `source` not expired at `now`, newest first, older
    /// than the cursor `after` when given, at most `limit` (at most [`MAX_PAGE`]).
    async fn list(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<RefusalPage, StoreError>;
}

/// What ingestion records refusals with: the log and the metric's sink.
#[derive(Clone)]
pub struct RefusedMessages {
    log: Arc<dyn RefusalLog>,
    metrics: Arc<dyn MetricsSink>,
}

impl std::fmt::Debug for RefusedMessages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefusedMessages(..)")
    }
}

impl RefusedMessages {
    /// Refusals go to `log`; the metric goes nowhere until [`Self::with_metrics`].
    pub fn new(log: Arc<dyn RefusalLog>) -> Self {
        RefusedMessages {
            log,
            metrics: Arc::new(NoMetrics),
        }
    }

    /// Counts each refusal in [`MESSAGES_REFUSED`] on `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<dyn MetricsSink>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn log(&self) -> &Arc<dyn RefusalLog> {
        &self.log
    }

    /// Counts and records one refusal; a failure to record is logged.
    pub async fn record(&self, refusal: &Refusal) {
        self.metrics.emit(
            MetricSet::new(refusal.refused_at)
                .dimension("Source", refusal.source.clone())
                .count(MESSAGES_REFUSED, 1)
                .property("Field", refusal.field.clone()),
        );
        tracing::info!(
            source = %refusal.source,
            message_id = refusal.message_id.as_deref().unwrap_or(""),
            field = %refusal.field,
            reason = %refusal.reason,
            "message refused"
        );
        if let Err(e) = self.log.record(refusal).await {
            tracing::warn!(source = %refusal.source, error = %scrub(&e.to_string()), "refusal not recorded");
        }
    }
}

impl Ingestion {
    /// Reads one message as sent (`expected`: the call of the route; `None`
    /// in a batch, where `type` is required), takes it, and records a
    /// refusal in the refused-messages log (when ingestion has one,
    /// [`Ingestion::with_refusals`]). The answer is what parsing and
    /// [`Ingestion::ingest`] answered, whether or not the refusal could be
    /// recorded.
    pub async fn take(
        &self,
        from: &Source,
        raw: &Value,
        expected: Option<Kind>,
        now: DateTime<Utc>,
    ) -> Result<Accepted, IngestError> {
        let parsed = SegmentMessage::parse(raw, expected, now);
        self.take_parsed(from, raw, expected, parsed, now).await
    }

    /// [`Ingestion::take`] for one message of a batch (its `type` required)
    /// whose `sentAt` was `batch_sent_at`: a message without its own
    /// `sentAt` has its timestamp corrected by the batch's
    /// ([`SegmentMessage::parse_sent`]).
    pub async fn take_in_batch(
        &self,
        from: &Source,
        raw: &Value,
        now: DateTime<Utc>,
        batch_sent_at: Option<DateTime<Utc>>,
    ) -> Result<Accepted, IngestError> {
        let parsed = SegmentMessage::parse_sent(raw, None, now, batch_sent_at);
        self.take_parsed(from, raw, None, parsed, now).await
    }

    async fn take_parsed(
        &self,
        from: &Source,
        raw: &Value,
        expected: Option<Kind>,
        parsed: Result<SegmentMessage, Rejection>,
        now: DateTime<Utc>,
    ) -> Result<Accepted, IngestError> {
        let outcome = match parsed {
            Ok(message) => self.ingest(from, &message).await,
            Err(rejection) => Err(IngestError::Rejected(rejection)),
        };
        if let (Err(IngestError::Rejected(rejection)), Some(refusals)) = (&outcome, &self.refusals) {
            let identifiers = self.customers.identifiers();
            let refusal = Refusal::new(&from.name, raw, expected, rejection, identifiers, now);
            refusals.record(&refusal).await;
        }
        outcome
    }
}

/// The keyed hash of an identifier of the log (`hmac:<hex>`).
fn hashed(hex: String) -> Value {
    Value::String(format!("{HASH_PREFIX}{hex}"))
}

/// A user id, anonymous id or previous id: the keyed hash of the id as
/// ingestion reads it (trimmed; a number as its text), the one the identity
/// streams are keyed by (decision 0046).
fn redact_id(value: &Value, identifiers: Option<&IdentifierHasher>) -> Value {
    let text = match value {
        Value::Null => return Value::Null,
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return Value::String(REMOVED.into()),
    };
    match identifiers {
        Some(h) => hashed(h.lookup(LookupKind::UserId, &text)),
        None => Value::String(REMOVED.into()),
    }
}

/// A key, lower case, without `_`, `-` and spaces: `first_name`,
/// `firstName` and `First Name` read alike.
fn folded(key: &str) -> String {
    key.chars()
        .filter(|c| !"_- ".contains(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Which identifier a key names, if it names one.
fn identifier_of(key: &str) -> Option<IdentifierKind> {
    match folded(key).as_str() {
        "email" | "emailaddress" => Some(IdentifierKind::Email),
        "phone" | "phonenumber" | "mobile" => Some(IdentifierKind::Phone),
        _ => None,
    }
}

/// Keys whose values are personal wherever they are (removed): names,
/// addresses, birthdays, network and device identifiers.
fn is_personal_key(key: &str) -> bool {
    let k = folded(key);
    matches!(
        k.as_str(),
        "firstname"
            | "lastname"
            | "fullname"
            | "username"
            | "birthday"
            | "dateofbirth"
            | "age"
            | "gender"
            | "ip"
            | "useragent"
            | "useragentdata"
            | "location"
            | "advertisingid"
            | "token"
            | "street"
            | "password"
            | "writekey"
    ) || k.ends_with("address")
}

/// An identifier's value: its keyed hash under its kind (the hash the proof
/// ledger and the email lookups use); removed when not a string or with no hasher.
fn redact_identifier(kind: IdentifierKind, value: &Value, identifiers: Option<&IdentifierHasher>) -> Value {
    match (value, identifiers) {
        (Value::Null, _) => Value::Null,
        (Value::String(s), Some(h)) => hashed(h.hash(kind, s)),
        _ => Value::String(REMOVED.into()),
    }
}

/// A trait's value: an email or phone number hashed, any other value removed
/// (traits describe the person; their names stay, to show what was sent).
fn redact_traits(traits: &Value, identifiers: Option<&IdentifierHasher>) -> Value {
    let Value::Object(map) = traits else {
        return match traits {
            Value::Null => Value::Null,
            _ => Value::String(REMOVED.into()),
        };
    };
    let out: Map<String, Value> = map
        .iter()
        .map(|(k, v)| {
            let value = match identifier_of(k) {
                Some(kind) => redact_identifier(kind, v, identifiers),
                None if v.is_null() => Value::Null,
                None => Value::String(REMOVED.into()),
            };
            (scrub(k).into_owned(), value)
        })
        .collect();
    Value::Object(out)
}

/// Any other part of a message: personal keys removed or hashed, a string
/// that is an email address hashed, addresses and phone numbers inside text
/// replaced by markers ([`scrub`]).
fn redact_value(value: &Value, identifiers: Option<&IdentifierHasher>) -> Value {
    match value {
        Value::String(s) => {
            let clean = scrub(s);
            if clean == EMAIL_MARKER {
                return redact_identifier(IdentifierKind::Email, value, identifiers);
            }
            if clean == PHONE_MARKER {
                return redact_identifier(IdentifierKind::Phone, value, identifiers);
            }
            Value::String(clean.into_owned())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| redact_value(v, identifiers)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (scrub(k).into_owned(), redact_entry(k, v, identifiers)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The value of the key `key` of an object.
fn redact_entry(key: &str, value: &Value, identifiers: Option<&IdentifierHasher>) -> Value {
    if let Some(kind) = identifier_of(key) {
        return redact_identifier(kind, value, identifiers);
    }
    match folded(key).as_str() {
        "traits" => redact_traits(value, identifiers),
        // `context.device.id`: a device's identifier.
        "device" => match value {
            Value::Object(device) => {
                let mut device = device.clone();
                if let Some(id) = device.get_mut("id").filter(|id| !id.is_null()) {
                    *id = Value::String(REMOVED.into());
                }
                redact_value(&Value::Object(device), identifiers)
            }
            other => redact_value(other, identifiers),
        },
        _ if is_personal_key(key) && !value.is_null() => Value::String(REMOVED.into()),
        _ => redact_value(value, identifiers),
    }
}

/// The message `raw` as the log keeps it:
/// * `userId`, `anonymousId` and `previousId`: their keyed hashes (the
///   identifier secret's, decision 0046), `hmac:<hex>`;
/// * `traits` (and `context.traits`): each trait's name kept, an email or a
///   phone number replaced by its keyed hash, every other value by
///   [`REMOVED`];
/// * anywhere else: `email`/`phone` keys and strings that are an email
///   address or a phone number hashed; names, addresses
///   (`shipping_address`...), birthdays, `ip`, `userAgent`, `location`,
///   device ids and tokens, and `writeKey` replaced by [`REMOVED`];
///   addresses and phone numbers inside other text replaced by `[email]`
///   and `[phone]` ([`scrub`]);
/// * `null` for a message that is not an object or is larger than a message may be.
pub fn redact_message(raw: &Value, identifiers: Option<&IdentifierHasher>) -> Value {
    let Value::Object(map) = raw else {
        return Value::Null;
    };
    if raw.to_string().len() > super::MAX_MESSAGE_BYTES {
        return Value::Null;
    }
    let out: Map<String, Value> = map
        .iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "userId" | "anonymousId" | "previousId" => redact_id(v, identifiers),
                _ => redact_entry(k, v, identifiers),
            };
            (scrub(k).into_owned(), value)
        })
        .collect();
    Value::Object(out)
}

/// A log in memory, for domain tests and the contract's own test.
#[cfg(any(test, feature = "contract"))]
#[derive(Default)]
pub struct InMemoryRefusals {
    entries: std::sync::Mutex<Vec<Refusal>>,
}

#[cfg(any(test, feature = "contract"))]
impl InMemoryRefusals {
    pub fn all(&self) -> Vec<Refusal> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[cfg(any(test, feature = "contract"))]
#[async_trait]
impl RefusalLog for InMemoryRefusals {
    async fn record(&self, refusal: &Refusal) -> Result<(), StoreError> {
        let mut entries = self.entries.lock().map_err(|_| StoreError::Failed("poisoned".into()))?;
        entries.push(refusal.clone());
        Ok(())
    }

    async fn list(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<RefusalPage, StoreError> {
        let mut matching: Vec<Refusal> = self
            .all()
            .into_iter()
            .filter(|r| r.source == source && r.expires_at > now)
            .filter(|r| after.is_none_or(|a| r.cursor().as_str() < a))
            .collect();
        matching.sort_by_key(|r| std::cmp::Reverse(r.cursor()));
        let limit = limit.clamp(1, MAX_PAGE);
        let more = matching.len() > limit;
        matching.truncate(limit);
        let next_after = if more {
            matching.last().map(Refusal::cursor)
        } else {
            None
        };
        Ok(RefusalPage {
            refusals: matching,
            next_after,
        })
    }
}

/// The contract every [`RefusalLog`] adapter passes (SQLite in crm-local,
/// DynamoDB in crm-aws): [`contract::check`] on a fresh log.
#[cfg(any(test, feature = "contract"))]
pub mod contract {
    use super::*;
    use serde_json::json;

    fn refusal(source: &str, at: DateTime<Utc>, n: usize) -> Refusal {
        let raw = json!({ "type": "track", "messageId": format!("m-{n}"), "event": "Order Completed",
            "userId": "ada@example.com", "properties": { "total": "x" } });
        Refusal::new(
            source,
            &raw,
            None,
            &Rejection::new("properties.total", "must be a number"),
            Some(&IdentifierHasher::new(b"contract")),
            at,
        )
    }

    /// Records, lists newest first in pages, keeps sources apart and
    /// forgets what expired.
    pub async fn check(log: Arc<dyn RefusalLog>) {
        let source = format!("contract-{}", uuid::Uuid::new_v4().simple());
        let other = format!("{source}-other");
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let now = t0 + Duration::days(1);
        let old = refusal(&source, t0 - Duration::days(KEPT_FOR_DAYS) - Duration::seconds(1), 0);
        log.record(&old).await.expect("record an expired refusal");
        let kept: Vec<Refusal> = (1..=5)
            .map(|n| refusal(&source, t0 + Duration::milliseconds(n as i64), n))
            .collect();
        for r in &kept {
            log.record(r).await.expect("record");
        }
        log.record(&refusal(&other, t0, 9))
            .await
            .expect("record another source's");

        let first = log.list(&source, None, 2, now).await.expect("first page");
        assert_eq!(
            first.refusals,
            vec![kept[4].clone(), kept[3].clone()],
            "newest first, whole"
        );
        let after = first.next_after.clone().expect("a next page");
        let second = log.list(&source, Some(&after), 2, now).await.expect("second page");
        assert_eq!(second.refusals, vec![kept[2].clone(), kept[1].clone()]);
        let third = log
            .list(&source, second.next_after.as_deref(), 2, now)
            .await
            .expect("third page");
        assert_eq!(third.refusals, vec![kept[0].clone()], "the expired one is not listed");
        assert_eq!(third.next_after, None);

        let all = log.list(&source, None, MAX_PAGE, now).await.expect("all");
        assert_eq!(all.refusals.len(), 5);
        assert_eq!(all.next_after, None);
        let others = log.list(&other, None, MAX_PAGE, now).await.expect("other source");
        assert_eq!(others.refusals.len(), 1, "sources are apart");
        let none = log.list("no-such-source", None, MAX_PAGE, now).await.expect("none");
        assert!(none.refusals.is_empty());

        let later = now + Duration::days(KEPT_FOR_DAYS);
        let gone = log.list(&source, None, MAX_PAGE, later).await.expect("after a week");
        assert!(
            gone.refusals.is_empty(),
            "kept {KEPT_FOR_DAYS} days: {:?}",
            gone.refusals
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hasher() -> IdentifierHasher {
        IdentifierHasher::new(b"refusals-test-secret")
    }

    #[test]
    fn personal_values_are_hashed_or_removed_and_the_rest_kept() {
        let h = hasher();
        let raw = json!({
            "type": "identify", "messageId": "m-1", "writeKey": "wk_secret_0123456789",
            "userId": " ada@example.com ", "anonymousId": "device-1", "previousId": 42,
            "traits": { "email": "Ada@Example.com", "first_name": "Ada", "phone": "+49 30 1234 5678",
                "address": { "city": "Berlin" }, "plan": "gold" },
            "context": { "ip": "203.0.113.9", "device": { "id": "dev-42", "type": "ios" }, "userAgent": "Mozilla/5.0", "locale": "de-DE",
                "traits": { "email": "ada@example.com", "name": "Ada L" },
                "page": { "url": "https://shop.example/?e=ada@example.com" } },
            "properties": { "total": "x", "email": "ada@example.com", "note": "call +49 30 1234 5678",
                "shipping_address": { "street": "Main 1" }, "contact": "ada@example.com",
                "products": [{ "sku": "SKU-1", "name": "Mug" }] },
        });
        let out = redact_message(&raw, Some(&h));
        let text = out.to_string();
        for secret in [
            "ada@",
            "Ada",
            "30 1234",
            "203.0.113",
            "Mozilla",
            "Berlin",
            "Main 1",
            "wk_secret",
            "device-1",
            "dev-42",
        ] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        let email = format!("{HASH_PREFIX}{}", h.email("ada@example.com"));
        assert_eq!(
            out["userId"],
            json!(format!(
                "{HASH_PREFIX}{}",
                h.lookup(LookupKind::UserId, "ada@example.com")
            ))
        );
        assert_eq!(
            out["previousId"],
            json!(format!("{HASH_PREFIX}{}", h.lookup(LookupKind::UserId, "42")))
        );
        assert_eq!(out["traits"]["email"], json!(email), "the proof ledger's email hash");
        assert_eq!(
            out["traits"]["phone"],
            json!(format!(
                "{HASH_PREFIX}{}",
                h.hash(IdentifierKind::Phone, "+493012345678")
            ))
        );
        assert_eq!(out["traits"]["first_name"], json!(REMOVED));
        assert_eq!(out["traits"]["plan"], json!(REMOVED), "every other trait value goes");
        assert_eq!(out["context"]["ip"], json!(REMOVED));
        assert_eq!(out["context"]["userAgent"], json!(REMOVED));
        assert_eq!(out["context"]["locale"], json!("de-DE"));
        assert_eq!(out["context"]["device"], json!({ "id": REMOVED, "type": "ios" }));
        assert_eq!(out["context"]["traits"]["email"], json!(email));
        assert_eq!(out["context"]["page"]["url"], json!("https://shop.example/?e=[email]"));
        assert_eq!(
            out["properties"]["total"],
            json!("x"),
            "what was refused stays readable"
        );
        assert_eq!(out["properties"]["email"], json!(email));
        assert_eq!(out["properties"]["contact"], json!(email), "a value that is an address");
        assert_eq!(out["properties"]["note"], json!("call [phone]"));
        assert_eq!(out["properties"]["shipping_address"], json!(REMOVED));
        assert_eq!(
            out["properties"]["products"],
            json!([{ "sku": "SKU-1", "name": "Mug" }])
        );
        assert_eq!(out["writeKey"], json!(REMOVED), "a write key is a secret");
        assert_eq!(out["type"], json!("identify"));
        assert_eq!(out["messageId"], json!("m-1"));
    }

    #[test]
    fn without_a_hasher_identifiers_are_removed_and_odd_messages_kept_out() {
        let out = redact_message(
            &json!({ "userId": "u-1", "traits": { "email": "ada@example.com" } }),
            None,
        );
        assert_eq!(out, json!({ "userId": REMOVED, "traits": { "email": REMOVED } }));
        assert_eq!(redact_message(&json!("ada@example.com"), Some(&hasher())), Value::Null);
        let huge = json!({ "properties": { "blob": "x".repeat(super::super::MAX_MESSAGE_BYTES) } });
        assert_eq!(redact_message(&huge, Some(&hasher())), Value::Null);
    }

    #[test]
    fn a_refusal_names_what_was_sent_without_personal_data() {
        let now = Utc::now();
        let raw = json!({ "messageId": "m-9", "event": "Order Completed", "userId": "u-1",
            "properties": { "revenue": "ada@example.com" } });
        let r = Refusal::new(
            "shop",
            &raw,
            Some(Kind::Track),
            &Rejection::new("properties.revenue", "\"ada@example.com\" is not a number"),
            Some(&hasher()),
            now,
        );
        assert_eq!(r.kind.as_deref(), Some("track"), "the route's call");
        assert_eq!(r.event.as_deref(), Some("Order Completed"));
        assert_eq!(r.message_id.as_deref(), Some("m-9"));
        assert_eq!(r.reason, "\"[email]\" is not a number");
        assert_eq!(r.expires_at - r.refused_at, Duration::days(7));
        assert!(is_cursor(&r.cursor()), "{}", r.cursor());
        assert!(!is_cursor("a b"));
        assert!(!r.message.to_string().contains("ada@"));
    }

    fn ingestion() -> Ingestion {
        use crate::clock::VirtualClock;
        use crate::commerce::{CartService, OrderService};
        use crate::customer::CustomerService;
        use crate::testing::{test_time, InMemoryEventStore, InMemoryScheduler};
        let store = Arc::new(InMemoryEventStore::default());
        let clock = Arc::new(VirtualClock::starting_at(test_time()));
        let scheduler = Arc::new(InMemoryScheduler::default());
        let customers = Arc::new(
            CustomerService::new(store.clone(), clock.clone()).with_identifiers(crate::testing::identifiers()),
        );
        Ingestion::new(
            store.clone(),
            customers,
            Arc::new(CartService::new(store.clone(), clock.clone(), scheduler.clone())),
            Arc::new(OrderService::new(store, clock, scheduler)),
            super::super::IngestSettings::default(),
        )
    }

    /// A log that cannot be written.
    struct Broken;

    #[async_trait]
    impl RefusalLog for Broken {
        async fn record(&self, _: &Refusal) -> Result<(), StoreError> {
            Err(StoreError::Unavailable("throttled".into()))
        }

        async fn list(&self, _: &str, _: Option<&str>, _: usize, _: DateTime<Utc>) -> Result<RefusalPage, StoreError> {
            Err(StoreError::Unavailable("throttled".into()))
        }
    }

    #[tokio::test]
    async fn take_records_what_it_refuses_and_counts_it_and_nothing_else() {
        use crate::metrics::RecordedMetrics;
        let log = Arc::new(InMemoryRefusals::default());
        let buffer = RecordedMetrics::default();
        let metrics = Arc::new(buffer.clone());
        let ingestion = ingestion().with_refusals(RefusedMessages::new(log.clone()).with_metrics(metrics));
        let shop = Source::server("shop");
        let now = crate::testing::test_time();

        let bad_price = json!({ "type": "track", "messageId": "m-1", "anonymousId": "a-1",
            "event": "Product Viewed", "properties": { "product_id": "sku-mug", "price": "ada@example.com" } });
        let refused = ingestion.take(&shop, &bad_price, None, now).await;
        let Err(IngestError::Rejected(rejection)) = refused else {
            panic!("refused: {refused:?}")
        };
        let no_type = json!({ "messageId": "m-2", "userId": "u-2" });
        assert!(matches!(
            ingestion.take_in_batch(&shop, &no_type, now, Some(now)).await,
            Err(IngestError::Rejected(_))
        ));
        let fine = json!({ "messageId": "m-3", "anonymousId": "a-1", "name": "Home",
            "properties": { "url": "https://shop.example/" } });
        assert_eq!(
            ingestion.take(&shop, &fine, Some(Kind::Page), now).await,
            Ok(Accepted::Stored { late: false })
        );

        let page = log.list("shop", None, MAX_PAGE, now).await.expect("listed");
        assert_eq!(page.refusals.len(), 2, "{:?}", page.refusals);
        let first = page
            .refusals
            .iter()
            .find(|r| r.message_id.as_deref() == Some("m-1"))
            .expect("m-1");
        assert_eq!(first.field, rejection.field);
        assert_eq!(first.event.as_deref(), Some("Product Viewed"));
        assert_eq!(first.kind.as_deref(), Some("track"));
        assert!(!first.message.to_string().contains("ada@"), "{}", first.message);
        assert!(first.message["anonymousId"]
            .as_str()
            .is_some_and(|a| a.starts_with(HASH_PREFIX)));
        let second = page
            .refusals
            .iter()
            .find(|r| r.message_id.as_deref() == Some("m-2"))
            .expect("m-2");
        assert_eq!(second.field, "type");
        let counted: Vec<Value> = buffer
            .documents()
            .into_iter()
            .filter(|d| d[MESSAGES_REFUSED] == json!(1.0) && d["Source"] == "shop")
            .collect();
        assert_eq!(counted.len(), 2, "{:?}", buffer.documents());

        // A log that cannot be written changes nothing of the answer.
        let broken = ingestion_with(Arc::new(Broken));
        assert!(matches!(
            broken.take(&shop, &bad_price, None, now).await,
            Err(IngestError::Rejected(r)) if r == rejection
        ));
    }

    fn ingestion_with(log: Arc<dyn RefusalLog>) -> Ingestion {
        ingestion().with_refusals(RefusedMessages::new(log))
    }

    #[tokio::test]
    async fn the_in_memory_log_passes_the_contract() {
        contract::check(Arc::new(InMemoryRefusals::default())).await;
    }
}
