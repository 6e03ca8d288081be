//! Dead letters hold what was stored (issue 16 item 3, decision 0040).
//!
//! A consumer parks what it could not use as it saw it: the event envelope
//! with its personal fields decrypted ([`super::park_poison`]), or the
//! channel's `MessageRequest`, whose `data` is the template data (the
//! address, the names). [`SealedDeadLetters`] puts them back into their
//! stored form before the letter leaves the process: each personal field
//! ([`personal_data_paths`], and a request's `data`, the path its
//! `MessageRequested` event stores it under) encrypted under the customer's
//! data key, exactly as the event store keeps it. A dead-letter queue
//! therefore never holds personal data in clear, and erasure (deleting the
//! key) shreds its copies too.
//!
//! Sealing never creates a key: a customer without one was erased (or has
//! no encrypted data at all), and a new key would turn their copies from
//! erased into unreadable. Their personal fields are parked as [`ERASED`](crate::privacy::ERASED).
//!
//! A letter's `reason` is free text (a provider's answer, an error that
//! quotes what it could not read), and no customer key covers it: it is
//! scrubbed of email addresses and phone numbers ([`scrub`]) before it is
//! kept. SES feedback parked by the channel function (decision 0048) is the
//! raw SES notification: the recipient's address in `destination`, the
//! headers and the bounce, the subject (which may hold a name). Its `detail`
//! is sealed as one field under the customer its `customer_id` tag names,
//! while that customer has a key; otherwise (no tag, an erased customer) it
//! is scrubbed and its headers are dropped.
//!
//! [`open_letter`] is the reverse, for operators only (`crm-local dlq
//! show`, `crm-ops dlq list --data`): the fields decrypted while the key
//! exists, [`ERASED`](crate::privacy::ERASED) once it is gone. Redrive needs neither: the bus
//! targets decrypt what they are handed, stored events and sealed letters
//! alike.

use crate::event::EventEnvelope;
use crate::ports::{DeadLetter, DeadLetterQueue, StoreError};
use crate::privacy::scrub::{scrub, scrub_json};
use crate::privacy::{
    decrypt_field, decrypt_paths, encrypt_field, encrypt_paths, personal_data_paths, DataKey, KeyError, KeyStore,
    ERASED,
};
use crate::vocabulary::{MessageRequest, CUSTOMER_ID_TAG, SES_SOURCE};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// The path of a `MessageRequest`'s personal data: its `data`, as the
/// `MessageRequested` event (whose payload is the request) lists it.
const REQUEST_DATA: &[&str] = &["data"];

/// The field path (associated data) of a sealed SES event's `detail`.
const SES_DETAIL_FIELD: &str = "$ses.detail";
/// The key of the object a sealed `detail` is stored as.
const SEALED: &str = "$sealed";
/// What the headers of an SES event that could not be sealed read as.
const REMOVED: &str = "[removed]";

/// A [`DeadLetterQueue`] that seals every letter's payload ([`seal_letter`])
/// before `inner` keeps it.
pub struct SealedDeadLetters {
    inner: Arc<dyn DeadLetterQueue>,
    keys: Arc<dyn KeyStore>,
}

impl SealedDeadLetters {
    pub fn new(inner: Arc<dyn DeadLetterQueue>, keys: Arc<dyn KeyStore>) -> Self {
        SealedDeadLetters { inner, keys }
    }
}

#[async_trait]
impl DeadLetterQueue for SealedDeadLetters {
    async fn park(&self, mut letter: DeadLetter) -> Result<(), StoreError> {
        seal_letter(self.keys.as_ref(), &mut letter.payload).await?;
        if let std::borrow::Cow::Owned(reason) = scrub(&letter.reason) {
            letter.reason = reason;
        }
        self.inner.park(letter).await
    }
}

/// What a letter's payload carries that holds personal data.
enum Carried {
    /// An event envelope (the payload itself, or a bus event's `detail`):
    /// its customer, and the personal paths of its type.
    Event {
        customer_id: Option<String>,
        paths: &'static [&'static str],
    },
    /// A `MessageRequest`: its customer (the paths are [`REQUEST_DATA`]).
    Request { customer_id: Option<String> },
    /// An SES event (the channel's feedback): its `detail` as a whole, for
    /// the customer of its `customer_id` tag.
    ProviderFeedback { customer_id: Option<String> },
}

impl Carried {
    /// The customer whose key covers the fields; `None`: no customer to
    /// encrypt for, so the fields can only be parked as [`ERASED`](crate::privacy::ERASED).
    fn customer_id(&self) -> Option<&str> {
        match self {
            Carried::Event { customer_id, .. }
            | Carried::Request { customer_id }
            | Carried::ProviderFeedback { customer_id } => customer_id.as_deref(),
        }
    }

    /// The customer's existing key (never a new one).
    async fn key(&self, keys: &dyn KeyStore) -> Result<Option<DataKey>, StoreError> {
        match self.customer_id() {
            Some(customer_id) => keys.existing_key(customer_id).await.map_err(key_error),
            None => Ok(None),
        }
    }
}

/// The customer whose key covers `event`: its `customer_id`, or the
/// customer of a `customer-<id>` stream (as the event store decides).
fn event_customer(event: &EventEnvelope) -> Option<String> {
    event.customer_id.clone().or_else(|| {
        event
            .stream_id
            .strip_prefix("customer-")
            .filter(|id| !id.is_empty())
            .map(str::to_string)
    })
}

/// The part of `payload` that holds personal data (the payload itself, or
/// a bus event's `detail`) and what it is; `None` when there is none.
fn carried(payload: &mut Value) -> Option<(&mut Value, Carried)> {
    if payload.get("source").and_then(Value::as_str) == Some(SES_SOURCE) {
        let customer_id = ses_customer(payload);
        let detail = payload.get_mut("detail")?;
        return Some((detail, Carried::ProviderFeedback { customer_id }));
    }
    let slot = if payload.get("detail").is_some_and(Value::is_object) {
        payload.get_mut("detail")?
    } else {
        payload
    };
    if let Ok(event) = EventEnvelope::deserialize(&*slot) {
        let paths = personal_data_paths(&event.event_type);
        if paths.is_empty() {
            return None;
        }
        let customer_id = event_customer(&event);
        return Some((slot, Carried::Event { customer_id, paths }));
    }
    if let Ok(request) = MessageRequest::deserialize(&*slot) {
        return Some((
            slot,
            Carried::Request {
                customer_id: Some(request.customer_id).filter(|id| !id.is_empty()),
            },
        ));
    }
    None
}

/// The customer an SES event's `customer_id` tag names (read loosely: the
/// event may be one the channel could not read), or the one its sealed
/// `detail` was sealed for.
fn ses_customer(payload: &Value) -> Option<String> {
    if let Some(sealed) = payload.pointer(&format!("/detail/{SEALED}")) {
        return sealed.get("customer_id").and_then(Value::as_str).map(str::to_string);
    }
    payload
        .pointer(&format!("/detail/mail/tags/{CUSTOMER_ID_TAG}"))
        .and_then(Value::as_array)?
        .iter()
        .filter_map(Value::as_str)
        .map(str::trim)
        .find(|id| !id.is_empty())
        .map(str::to_string)
}

/// Whether an SES event's `detail` is already in its parked form: sealed,
/// or erased.
fn is_sealed_detail(detail: &Value) -> bool {
    detail.get(SEALED).is_some() || detail.as_str() == Some(ERASED)
}

/// Seals an SES event's `detail` under the customer's `key`
/// (`{"$sealed": {customer_id, ciphertext}}`); without a key, scrubs it
/// ([`scrub_json`]) and drops its headers (the subject and the display
/// names may name the customer).
fn seal_feedback(detail: &mut Value, customer_id: Option<&str>, key: Option<&DataKey>) -> Result<(), StoreError> {
    if is_sealed_detail(detail) {
        return Ok(());
    }
    match (customer_id, key) {
        (Some(customer_id), Some(key)) => {
            let text = encrypt_field(key, customer_id, SES_DETAIL_FIELD, &detail.to_string())
                .map_err(|e| StoreError::Failed(format!("dead letter of {customer_id}: {e}")))?;
            *detail = serde_json::json!({ SEALED: { "customer_id": customer_id, "ciphertext": text } });
        }
        _ => {
            if let Some(mail) = detail.get_mut("mail").and_then(Value::as_object_mut) {
                for headers in ["headers", "commonHeaders"] {
                    if let Some(h) = mail.get_mut(headers) {
                        *h = Value::String(REMOVED.into());
                    }
                }
            }
            scrub_json(detail);
        }
    }
    Ok(())
}

/// An SES event's sealed `detail` opened with `key` (while it exists), or
/// [`ERASED`]; a detail that is not sealed is left as it is.
fn open_feedback(detail: &mut Value, key: Option<&DataKey>) -> Result<(), StoreError> {
    let Some(sealed) = detail.get(SEALED) else {
        return Ok(());
    };
    let (Some(customer_id), Some(text)) = (
        sealed.get("customer_id").and_then(Value::as_str),
        sealed.get("ciphertext").and_then(Value::as_str),
    ) else {
        return Err(StoreError::Failed(
            "a sealed SES event without its customer or ciphertext".into(),
        ));
    };
    *detail = match key {
        None => Value::String(ERASED.into()),
        Some(key) => {
            let json = decrypt_field(key, customer_id, SES_DETAIL_FIELD, text)
                .map_err(|e| StoreError::Failed(format!("dead letter of {customer_id}: {e}")))?;
            serde_json::from_str(&json).map_err(|e| StoreError::Failed(format!("dead letter of {customer_id}: {e}")))?
        }
    };
    Ok(())
}

/// Whether `payload` is SES feedback parked sealed ([`seal_letter`]): the
/// channel opens it ([`open_letter`]) before it reads it again (a redrive).
pub fn is_sealed_feedback(payload: &Value) -> bool {
    payload.get("source").and_then(Value::as_str) == Some(SES_SOURCE)
        && payload.get("detail").is_some_and(|d| d.get(SEALED).is_some())
}

fn key_error(e: KeyError) -> StoreError {
    match e {
        KeyError::Unavailable(m) => StoreError::Unavailable(m),
        KeyError::Corrupt(m) => StoreError::Failed(m),
    }
}

/// Encrypts (`key`) or, with no key, marks as [`ERASED`](crate::privacy::ERASED) the personal fields
/// of `slot`; `open` decrypts instead.
fn apply(slot: &mut Value, what: &Carried, key: Option<&DataKey>, open: bool) -> Result<(), StoreError> {
    let customer_id = what.customer_id().unwrap_or_default();
    let (data, paths) = match what {
        Carried::Event { paths, .. } => (slot.get_mut("data"), *paths),
        Carried::Request { .. } => (Some(slot), REQUEST_DATA),
        Carried::ProviderFeedback { customer_id } => {
            return match open {
                false => seal_feedback(slot, customer_id.as_deref(), key),
                true => open_feedback(slot, key),
            };
        }
    };
    let Some(data) = data else {
        return Ok(());
    };
    let failed = |e: crate::privacy::CryptoError| StoreError::Failed(format!("dead letter of {customer_id}: {e}"));
    match (key, open) {
        (Some(key), false) => encrypt_paths(data, key, customer_id, paths).map_err(failed),
        (key, _) => decrypt_paths(data, key, customer_id, paths).map_err(failed),
    }
}

/// Puts the personal fields of a letter's payload in their stored form: an
/// event envelope (the payload, or a bus event's `detail`) or a
/// `MessageRequest`, encrypted under the customer's existing key, or
/// [`ERASED`](crate::privacy::ERASED) when they have none (or the payload names no customer).
/// Fields already encrypted under that key
/// stay as they are (sealing twice changes nothing). SES feedback has its
/// `detail` sealed whole under the key of the customer its tag names, or,
/// with no such key, scrubbed of addresses and phone numbers and stripped of
/// its headers. Any other payload (a timer, a body that is not JSON) is left
/// alone. A payload
/// that cannot be sealed is an error: parking it in clear is not an option,
/// and the caller retries.
pub async fn seal_letter(keys: &dyn KeyStore, payload: &mut Value) -> Result<(), StoreError> {
    let Some((slot, what)) = carried(payload) else {
        return Ok(());
    };
    let key = what.key(keys).await?;
    apply(slot, &what, key.as_ref(), false)
}

/// A letter's payload as an operator may read it: the personal fields of an
/// envelope or a `MessageRequest` decrypted with the customer's key, or
/// [`ERASED`](crate::privacy::ERASED) when the key is gone (fields parked before sealing, in clear,
/// read as [`ERASED`](crate::privacy::ERASED) too). Nothing is written back: the letter stays as
/// stored.
pub async fn open_letter(keys: &dyn KeyStore, payload: &Value) -> Result<Value, StoreError> {
    let mut shown = payload.clone();
    let Some((slot, what)) = carried(&mut shown) else {
        return Ok(shown);
    };
    let key = what.key(keys).await?;
    apply(slot, &what, key.as_ref(), true)?;
    Ok(shown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::memory::InMemoryKeyStore;
    use crate::privacy::{decrypt_envelope, encrypt_envelope, is_encrypted, ERASED};
    use crate::testing::{dead_letter, InMemoryDeadLetters};
    use serde_json::json;

    const CUSTOMER: &str = "0190a000-0000-7000-8000-00000000d040";
    const EMAIL: &str = "ottoline.brackenridge-dl40@sealed-letters.example";
    const FIRST: &str = "Ottolinebrackenridge";
    const AGENT: &str = "SealedLetterAgent/40.1 (brackenridge)";

    fn registered() -> EventEnvelope {
        crate::testing::registered_event(
            CUSTOMER,
            json!({ "email": EMAIL, "first_name": FIRST, "last_name": null, "user_agent": AGENT, "locale": "en" }),
        )
    }

    fn request() -> Value {
        json!({
            "message_id": "msg-40", "instance_id": "ins-40", "campaign_id": "welcome", "campaign_version": 1,
            "step_id": "send-welcome", "customer_id": CUSTOMER, "channel": "email", "template": "welcome",
            "category": "marketing", "purpose": "marketing",
            "data": { "email": EMAIL, "first_name": FIRST, "trigger": { "user_agent": AGENT } }
        })
    }

    fn plaintext_in(value: &Value) -> Vec<&'static str> {
        let text = value.to_string();
        [EMAIL, FIRST, AGENT].into_iter().filter(|p| text.contains(p)).collect()
    }

    async fn keys_with_key() -> Arc<InMemoryKeyStore> {
        let keys = Arc::new(InMemoryKeyStore::new());
        keys.data_key(CUSTOMER).await.expect("key");
        keys
    }

    #[tokio::test]
    async fn envelopes_bus_events_and_requests_are_parked_as_stored() {
        let keys = keys_with_key().await;
        let kept = Arc::new(InMemoryDeadLetters::default());
        let queue = SealedDeadLetters::new(kept.clone(), keys.clone());
        let event = registered();
        let plain = serde_json::to_value(&event).expect("json");
        for payload in [
            plain.clone(),
            json!({ "source": "crm.customer", "detail-type": "CustomerRegistered", "detail": plain }),
            request(),
        ] {
            assert!(!plaintext_in(&payload).is_empty(), "the test parks plain text");
            queue
                .park(dead_letter("customer-360", "poison", payload))
                .await
                .expect("parked");
        }
        let letters = kept.letters.lock().expect("lock").clone();
        assert_eq!(letters.len(), 3);
        for letter in &letters {
            let stored = serde_json::to_value(letter).expect("json");
            assert_eq!(plaintext_in(&stored), Vec::<&str>::new(), "{stored}");
        }
        // The envelope is exactly as the event store keeps it: decrypting it
        // as a stored event gives the event back.
        for parked in [&letters[0].payload, &letters[1].payload["detail"]] {
            let mut back = EventEnvelope::deserialize(parked).expect("an envelope");
            assert!(back.data["email"].as_str().is_some_and(is_encrypted));
            assert_eq!(back.data["locale"], "en", "not personal: as it was");
            decrypt_envelope(keys.as_ref(), &mut back).await.expect("decrypts");
            assert_eq!(back, event);
        }
        // The request's data is encrypted as its MessageRequested event stores it.
        let data = &letters[2].payload["data"];
        assert!(data.as_str().is_some_and(is_encrypted), "{data}");
        assert_eq!(letters[2].payload["message_id"], "msg-40");
        let mut stored_request = crate::testing::raw_event("journey-ins-40", "MessageRequested", request());
        stored_request.customer_id = Some(CUSTOMER.into());
        let mut as_event = stored_request.clone();
        as_event.data = letters[2].payload.clone();
        decrypt_envelope(keys.as_ref(), &mut as_event)
            .await
            .expect("decrypts as a stored request");
        assert_eq!(as_event.data, request());
    }

    #[tokio::test]
    async fn letters_already_stored_or_of_no_event_are_parked_as_they_are() {
        let keys = keys_with_key().await;
        let mut stored = registered();
        encrypt_envelope(keys.as_ref(), &mut stored).await.expect("encrypted");
        let mut payload = serde_json::to_value(&stored).expect("json");
        let before = payload.clone();
        seal_letter(keys.as_ref(), &mut payload).await.expect("sealed");
        assert_eq!(payload, before, "sealing what is stored changes nothing");

        let mut request = request();
        seal_letter(keys.as_ref(), &mut request).await.expect("sealed");
        let once = request.clone();
        seal_letter(keys.as_ref(), &mut request).await.expect("sealed again");
        assert_eq!(request, once, "sealing twice changes nothing");

        let mut timer = json!({ "source": "crm.scheduler", "detail": { "name": "t", "due_at": "now" } });
        let timer_before = timer.clone();
        seal_letter(keys.as_ref(), &mut timer).await.expect("left alone");
        assert_eq!(timer, timer_before);
    }

    #[tokio::test]
    async fn an_erased_customer_is_parked_erased_and_no_key_is_made() {
        let keys = Arc::new(InMemoryKeyStore::new());
        let mut payload = serde_json::to_value(registered()).expect("json");
        seal_letter(keys.as_ref(), &mut payload).await.expect("sealed");
        assert_eq!(payload["data"]["email"], ERASED);
        assert_eq!(payload["data"]["first_name"], ERASED);
        assert_eq!(payload["data"]["last_name"], Value::Null);
        assert_eq!(payload["data"]["locale"], "en");
        let mut request = request();
        seal_letter(keys.as_ref(), &mut request).await.expect("sealed");
        assert_eq!(request["data"], ERASED);
        assert_eq!(
            keys.existing_key(CUSTOMER).await.expect("keys"),
            None,
            "no key was made"
        );
    }

    #[tokio::test]
    async fn operators_read_letters_decrypted_while_the_key_exists_then_erased() {
        let keys = keys_with_key().await;
        let mut event = serde_json::to_value(registered()).expect("json");
        let mut bus_event = json!({ "detail": event.clone() });
        let mut request = request();
        for payload in [&mut event, &mut bus_event, &mut request] {
            seal_letter(keys.as_ref(), payload).await.expect("sealed");
        }
        let shown = open_letter(keys.as_ref(), &event).await.expect("opened");
        assert_eq!(shown["data"]["email"], EMAIL);
        assert_eq!(shown["data"]["user_agent"], AGENT);
        let shown = open_letter(keys.as_ref(), &bus_event).await.expect("opened");
        assert_eq!(shown["detail"]["data"]["first_name"], FIRST);
        let shown = open_letter(keys.as_ref(), &request).await.expect("opened");
        assert_eq!(shown, self::request());
        assert!(plaintext_in(&event).is_empty(), "opening wrote nothing back");

        keys.delete(CUSTOMER).await.expect("erased");
        let shown = open_letter(keys.as_ref(), &event).await.expect("opened");
        assert_eq!(shown["data"]["email"], ERASED);
        assert_eq!(shown["data"]["locale"], "en");
        assert_eq!(
            open_letter(keys.as_ref(), &request).await.expect("opened")["data"],
            ERASED
        );
        // A letter parked in clear before sealing reads as erased too.
        let old = serde_json::to_value(registered()).expect("json");
        let shown = open_letter(keys.as_ref(), &old).await.expect("opened");
        assert_eq!(plaintext_in(&shown), Vec::<&str>::new(), "{shown}");
    }

    /// The bounce sample of `events/channel/`, to and about `address`, its
    /// receiving server quoting the address, for the customer of the tests.
    fn ses_bounce(address: &str) -> Value {
        let path = format!(
            "{}/../../events/channel/ses-bounce-permanent.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("the bounce sample");
        let mut event: Value = serde_json::from_str(&text.replace("grace.hopper@example.com", address)).expect("json");
        event["detail"]["mail"]["tags"]["customer_id"] = json!([CUSTOMER]);
        event["detail"]["mail"]["commonHeaders"]["subject"] = json!(format!("{FIRST}, your cart is waiting"));
        event["detail"]["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = json!(format!(
            "smtp; 550 5.1.1 <{address}>: Recipient address rejected: user unknown"
        ));
        event
    }

    #[tokio::test]
    async fn ses_feedback_is_parked_sealed_under_the_customers_key_and_opens_while_it_exists() {
        let keys = keys_with_key().await;
        let kept = Arc::new(InMemoryDeadLetters::default());
        let queue = SealedDeadLetters::new(kept.clone(), keys.clone());
        let event = ses_bounce(EMAIL);
        assert!(!plaintext_in(&event).is_empty(), "the test parks plain text");
        let reason = format!("malformed SES event: invalid type: string \"{EMAIL}\", expected a sequence");
        queue
            .park(dead_letter("channel", &reason, event.clone()))
            .await
            .expect("parked");
        let letter = kept.letters.lock().expect("lock")[0].clone();
        let stored = serde_json::to_value(&letter).expect("json");
        assert_eq!(plaintext_in(&stored), Vec::<&str>::new(), "{stored}");
        assert_eq!(
            letter.reason,
            "malformed SES event: invalid type: string \"[email]\", expected a sequence"
        );
        // What a redrive needs to find its way back stays readable.
        assert_eq!(letter.payload["source"], SES_SOURCE);
        assert_eq!(letter.payload["detail-type"], "Email Bounced");
        assert!(is_sealed_feedback(&letter.payload));
        let mut again = letter.payload.clone();
        seal_letter(keys.as_ref(), &mut again).await.expect("sealed again");
        assert_eq!(again, letter.payload, "sealing twice changes nothing");

        assert_eq!(
            open_letter(keys.as_ref(), &letter.payload).await.expect("opened"),
            event
        );
        keys.delete(CUSTOMER).await.expect("erased");
        let shown = open_letter(keys.as_ref(), &letter.payload).await.expect("opened");
        assert_eq!(shown["detail"], ERASED);
        assert_eq!(shown["source"], SES_SOURCE);
    }

    #[tokio::test]
    async fn ses_feedback_without_a_customer_key_is_parked_scrubbed_without_its_headers() {
        let keys = keys_with_key().await;
        // No customer tag; then a customer without a key (erased).
        let mut untagged = ses_bounce(EMAIL);
        untagged["detail"]["mail"]["tags"] = json!({});
        let erased = {
            let mut e = ses_bounce(EMAIL);
            e["detail"]["mail"]["tags"]["customer_id"] = json!(["0190a000-0000-7000-8000-0000000e4a5e"]);
            e
        };
        for mut payload in [untagged, erased] {
            seal_letter(keys.as_ref(), &mut payload).await.expect("parked");
            assert!(!is_sealed_feedback(&payload));
            assert_eq!(plaintext_in(&payload), Vec::<&str>::new(), "{payload}");
            let detail = &payload["detail"];
            assert_eq!(
                detail["bounce"]["bouncedRecipients"][0]["diagnosticCode"],
                "smtp; 550 5.1.1 <[email]>: Recipient address rejected: user unknown"
            );
            assert_eq!(detail["mail"]["destination"], json!(["[email]"]));
            assert_eq!(detail["mail"]["commonHeaders"], "[removed]");
            assert_eq!(detail["mail"]["headers"], "[removed]");
            // What says which message and what happened is kept.
            assert_eq!(detail["bounce"]["bounceType"], "Permanent");
            assert_eq!(
                detail["mail"]["messageId"],
                "010001937a5b2c3d-8f2e4a1b-6c7d-4e8f-9a0b-1c2d3e4f5a6b-000000"
            );
            let shown = open_letter(keys.as_ref(), &payload).await.expect("opened");
            assert_eq!(shown, payload, "nothing sealed: shown as kept");
        }
        assert_eq!(
            keys.existing_key("0190a000-0000-7000-8000-0000000e4a5e")
                .await
                .expect("keys"),
            None,
            "no key was made"
        );
    }
}
