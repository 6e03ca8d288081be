//! The personal fields of event payloads, and their encryption as a whole.
//!
//! A path names a field of an event's `data` object; dots go into nested
//! objects (`a.b`). The field's JSON value (a string, or an object such as an
//! address) is encrypted as its JSON text with [`encrypt_field`], the path as
//! the field path of the associated data. Absent and `null` fields are left
//! alone: there is nothing personal in them.

use super::crypto::{decrypt_field, encrypt_field, is_encrypted, CryptoError};
use super::DataKey;
use serde_json::Value;

/// What a personal field reads as once its customer's key is deleted.
pub const ERASED: &str = "[erased]";

/// The personal fields of each event type that has them, as paths into the
/// event's `data` (email, names, phone, address, date of birth, IP, user
/// agent, free-text notes, device tokens, and free text a provider or a
/// person wrote about the customer: error texts and bounce diagnostics, which
/// quote the address). Event types not listed carry none.
/// Customer events: `crate::customer::CustomerEvent`; order events:
/// `crate::commerce::OrderEvent`. A path may name a field of an earlier
/// schema version still stored (`MessageDeferred` v1's `request.data`). The
/// test in `paths_coverage_tests.rs` walks the generated schemas of every
/// event type and version and fails on a field that can hold personal data
/// and is not covered here.
pub const PERSONAL_DATA: &[(&str, &[&str])] = &[
    // Customer stream.
    (
        "CustomerRegistered",
        &["email", "first_name", "last_name", "phone", "ip", "user_agent"],
    ),
    ("ConsentGranted", &["ip", "user_agent"]),
    ("ConsentRevoked", &[]),
    ("EmailVerificationRequested", &["email"]),
    ("EmailVerified", &["email"]),
    ("CustomerEmailChanged", &["old_email", "new_email"]),
    (
        "CustomerNameChanged",
        &["old_first_name", "old_last_name", "new_first_name", "new_last_name"],
    ),
    ("CustomerPhoneChanged", &["old_phone", "new_phone"]),
    ("CustomerAddressChanged", &["old_address", "new_address"]),
    (
        "CustomerDateOfBirthChanged",
        &["old_date_of_birth", "new_date_of_birth"],
    ),
    ("PreferencesUpdated", &[]),
    ("CustomerDeactivated", &["notes"]),
    ("CustomerReactivated", &[]),
    // A push token identifies the customer's device (an online identifier).
    ("PushDeviceRegistered", &["token"]),
    // The reason of an invalidation by a bounce quotes the receiving
    // server's answer, which often quotes the address (decision 0048).
    ("CustomerEmailInvalidated", &["email", "reason"]),
    ("CustomerErasureRequested", &[]),
    ("CustomerErased", &[]),
    ("CustomersMerged", &[]),
    // Journey streams: the bus event that started the journey, kept whole
    // (it may be a customer event with every personal field).
    ("JourneyStarted", &["trigger_event"]),
    // A message's template data (the verification email's address, ...).
    ("MessageRequested", &["data"]),
    // Message streams. A deferral names where its request is stored
    // (decision 0041); one stored at schema version 1 kept a copy of the
    // request, whose data is the trigger event's.
    ("MessageDeferred", &["request.data"]),
    // A provider's or the send's error text, and the receiving server's
    // answer to a bounce: free text that often quotes the recipient's
    // address (`550 5.1.1 <ada@example.com>: user unknown`, decision 0048).
    ("MessageFailed", &["error"]),
    ("MessageOutcomeUnknown", &["error"]),
    ("MessageContentRejected", &["reason"]),
    ("EmailBounced", &["diagnostic"]),
    // Activity: a custom event's properties are whatever the client sent.
    ("CustomEvent", &["properties"]),
    // Identity streams name customers only.
    ("AnonymousProfileMerged", &[]),
    ("UserIdLinked", &[]),
    // Order stream.
    ("OrderPlaced", &["shipping_address", "billing_address"]),
    ("PaymentInitiated", &[]),
    ("PaymentSucceeded", &[]),
    // The payment provider's words (which may name the card holder).
    ("PaymentFailed", &["error_message"]),
    ("PaymentRetryScheduled", &[]),
    ("OrderConfirmed", &[]),
    ("OrderShipped", &[]),
    ("OrderDelivered", &[]),
    // Free text the shop wrote about the customer's order.
    ("OrderCancelled", &["reason"]),
    // A return's reason: the customer's words about their order.
    ("RefundRequested", &["return_reason"]),
    ("OrderRefunded", &[]),
    ("RefundCompleted", &[]),
    // A review's text: the customer's words (decision 0073).
    ("ReviewSubmitted", &["review"]),
];

/// Deserialises an optional personal field that may read as [`ERASED`]
/// (its customer was erased): the marker becomes `None`, so a typed event
/// whose field is an object or a date (an address, a date of birth) still
/// reads and replays after erasure.
pub fn erasable<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::Deserialize;
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == ERASED => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some).map_err(serde::de::Error::custom),
    }
}

/// The personal fields of `event_type` (none when it is not in [`PERSONAL_DATA`]).
pub fn personal_data_paths(event_type: &str) -> &'static [&'static str] {
    PERSONAL_DATA
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, paths)| *paths)
        .unwrap_or(&[])
}

/// The field at a dotted `path` of `value`, when it is there.
fn field_mut<'a>(value: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.')
        .try_fold(value, |v, key| v.as_object_mut()?.get_mut(key))
}

/// Encrypts each field of `value` at `paths` for `customer_id`: its JSON text
/// becomes an `enc:v1:` string. Absent and `null` fields are left alone, and
/// so are fields this key already encrypted for this customer and path, so
/// encrypting twice changes nothing. A plain value that merely looks
/// encrypted (a name typed as `enc:v1:…`) is encrypted like any other.
pub fn encrypt_paths(value: &mut Value, key: &DataKey, customer_id: &str, paths: &[&str]) -> Result<(), CryptoError> {
    for path in paths {
        let Some(field) = field_mut(value, path) else {
            continue;
        };
        match field {
            Value::Null => {}
            Value::String(s) if is_encrypted(s) && decrypt_field(key, customer_id, path, s).is_ok() => {}
            other => {
                let json = other.to_string();
                *other = Value::String(encrypt_field(key, customer_id, path, &json)?);
            }
        }
    }
    Ok(())
}

/// Decrypts each encrypted field of `value` at `paths` back to its JSON value.
///
/// With no key (the customer was erased), every present, non-null field at
/// `paths` becomes [`ERASED`], whether it was encrypted or (an event stored
/// before encryption) plain. With a key, plain fields are left as they are,
/// and a field that does not decrypt is an error, never silently dropped.
pub fn decrypt_paths(
    value: &mut Value,
    key: Option<&DataKey>,
    customer_id: &str,
    paths: &[&str],
) -> Result<(), CryptoError> {
    for path in paths {
        let Some(field) = field_mut(value, path) else {
            continue;
        };
        match (key, &*field) {
            (_, Value::Null) => {}
            (None, _) => *field = Value::String(ERASED.to_string()),
            (Some(key), Value::String(s)) if is_encrypted(s) => {
                let json = decrypt_field(key, customer_id, path, s)?;
                *field = serde_json::from_str(&json).map_err(|e| CryptoError::Invalid(format!("{path}: {e}")))?;
            }
            (Some(_), _) => {}
        }
    }
    Ok(())
}
