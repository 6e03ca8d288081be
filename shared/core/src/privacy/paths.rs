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
    ("RefundRequested", &[]),
    ("OrderRefunded", &[]),
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

#[cfg(test)]
#[path = "paths_coverage_tests.rs"]
mod coverage;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commerce::OrderEvent;
    use crate::customer::{Address, CustomerEvent, RegistrationSource, CUSTOMER_EVENT_TYPES};
    use crate::event::DomainEvent;
    use serde_json::json;

    fn key() -> DataKey {
        DataKey::generate().expect("a key")
    }

    fn address(line1: &str) -> Address {
        Address {
            line1: line1.into(),
            line2: Some("Flat 3".into()),
            city: "Berlin".into(),
            region: None,
            postal_code: "10115".into(),
            country: "DE".into(),
        }
    }

    fn registered() -> CustomerEvent {
        CustomerEvent::CustomerRegistered {
            customer_id: "cus-1".into(),
            email: "ada@example.com".into(),
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            phone: Some("+4930123456".into()),
            source: RegistrationSource::Web,
            ip: "192.0.2.7".into(),
            user_agent: "Mozilla/5.0 (Ada)".into(),
            timezone: Some("Europe/Berlin".into()),
            locale: None,
            terms_accepted: true,
        }
    }

    const PERSONAL_TEXT: &[&str] = &[
        "ada@example.com",
        "Ada",
        "Lovelace",
        "+4930123456",
        "192.0.2.7",
        "Mozilla",
        "Analytical Engine Street",
    ];

    fn assert_no_personal_text(value: &Value) {
        let text = crate::privacy::crypto::text_outside_ciphertext(value);
        for p in PERSONAL_TEXT {
            assert!(!text.contains(p), "{p} in {text}");
        }
    }

    #[test]
    fn every_customer_event_type_is_classified() {
        for t in CUSTOMER_EVENT_TYPES {
            assert!(
                PERSONAL_DATA.iter().any(|(name, _)| name == t),
                "{t} is not in PERSONAL_DATA"
            );
        }
        let mut names: Vec<_> = PERSONAL_DATA.iter().map(|(t, _)| *t).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PERSONAL_DATA.len(), "an event type is listed twice");
        assert_eq!(personal_data_paths("CartItemAdded"), &[] as &[&str]);
    }

    #[test]
    fn a_registration_round_trips_through_its_typed_event() {
        let k = key();
        let event = registered();
        let (event_type, mut data) = event.to_parts().expect("parts");
        let paths = personal_data_paths(&event_type);
        // Every listed path is a field of the payload.
        for p in paths {
            assert!(data.get(p).is_some(), "{p} is not a field of {event_type}");
        }
        encrypt_paths(&mut data, &k, "cus-1", paths).expect("encrypt");
        assert_no_personal_text(&data);
        for p in paths {
            assert!(is_encrypted(data[p].as_str().expect("a string")), "{p}");
        }
        // Not personal: left as it was.
        assert_eq!(data["timezone"], "Europe/Berlin");
        assert_eq!(data["customer_id"], "cus-1");

        // Encrypting again changes nothing.
        let once = data.clone();
        encrypt_paths(&mut data, &k, "cus-1", paths).expect("encrypt again");
        assert_eq!(data, once);

        decrypt_paths(&mut data, Some(&k), "cus-1", paths).expect("decrypt");
        let typed: CustomerEvent =
            serde_json::from_value(json!({ "type": event_type, "data": data })).expect("typed again");
        assert_eq!(typed, event);
    }

    #[test]
    fn addresses_are_encrypted_as_whole_objects() {
        let k = key();
        let placed = OrderEvent::OrderPlaced {
            order_id: "ord-1".into(),
            customer_id: "cus-1".into(),
            cart_id: None,
            items: vec![],
            subtotal_minor: 100,
            tax_minor: 19,
            shipping_minor: 0,
            total_minor: 119,
            currency: "EUR".into(),
            shipping_address: Some(address("1 Analytical Engine Street")),
            billing_address: Some(address("2 Analytical Engine Street")),
            discount_minor: 0,
            adjustment_minor: 0,
        };
        let (event_type, mut data) = placed.to_parts().expect("parts");
        let paths = personal_data_paths(&event_type);
        assert_eq!(paths, &["shipping_address", "billing_address"]);
        encrypt_paths(&mut data, &k, "cus-1", paths).expect("encrypt");
        assert_no_personal_text(&data);
        assert_eq!(data["total_minor"], 119);
        decrypt_paths(&mut data, Some(&k), "cus-1", paths).expect("decrypt");
        let typed: OrderEvent = serde_json::from_value(json!({ "type": event_type, "data": data })).expect("typed");
        assert_eq!(typed, placed);

        // An address change with no old address: null stays null.
        let changed = CustomerEvent::CustomerAddressChanged {
            old_address: None,
            new_address: Some(address("3 Analytical Engine Street")),
        };
        let (event_type, mut data) = changed.to_parts().expect("parts");
        let paths = personal_data_paths(&event_type);
        encrypt_paths(&mut data, &k, "cus-1", paths).expect("encrypt");
        assert_eq!(data["old_address"], Value::Null);
        assert_no_personal_text(&data);
        decrypt_paths(&mut data, Some(&k), "cus-1", paths).expect("decrypt");
        let typed: CustomerEvent = serde_json::from_value(json!({ "type": event_type, "data": data })).expect("typed");
        assert_eq!(typed, changed);
    }

    #[test]
    fn erased_fields_read_as_the_marker() {
        let k = key();
        let (event_type, mut data) = registered().to_parts().expect("parts");
        let paths = personal_data_paths(&event_type);
        encrypt_paths(&mut data, &k, "cus-1", paths).expect("encrypt");
        decrypt_paths(&mut data, None, "cus-1", paths).expect("no key: erased");
        for p in paths {
            assert_eq!(data[p], ERASED, "{p}");
        }
        assert_eq!(data["customer_id"], "cus-1");
        assert_eq!(data["terms_accepted"], true);

        // A payload stored in plain text before encryption: erased all the same.
        let (_, mut plain) = registered().to_parts().expect("parts");
        decrypt_paths(&mut plain, None, "cus-1", paths).expect("erased");
        assert_no_personal_text(&plain);
        // With a key, a plain payload reads as it is.
        let (_, mut plain) = registered().to_parts().expect("parts");
        let before = plain.clone();
        decrypt_paths(&mut plain, Some(&k), "cus-1", paths).expect("plain");
        assert_eq!(plain, before);
    }

    #[test]
    fn a_plain_value_that_looks_encrypted_is_encrypted_too() {
        let k = key();
        let mut data = json!({ "notes": "enc:v1:not-really", "first_name": "enc:" });
        let before = data.clone();
        encrypt_paths(&mut data, &k, "cus-1", &["notes", "first_name"]).expect("encrypt");
        assert!(!data.to_string().contains("not-really"));
        decrypt_paths(&mut data, Some(&k), "cus-1", &["notes", "first_name"]).expect("decrypt");
        assert_eq!(data, before);
    }

    #[test]
    fn a_payload_moved_to_another_customer_or_field_fails() {
        let k = key();
        let mut data =
            json!({ "old_email": "ada@example.com", "new_email": "ada@example.org", "nested": { "ip": "192.0.2.7" } });
        let paths = ["old_email", "new_email", "nested.ip", "missing", "nested.missing"];
        encrypt_paths(&mut data, &k, "cus-1", &paths).expect("encrypt");
        assert!(is_encrypted(data["nested"]["ip"].as_str().expect("string")));

        let mut other_customer = data.clone();
        assert_eq!(
            decrypt_paths(&mut other_customer, Some(&k), "cus-2", &paths),
            Err(CryptoError::Decrypt)
        );

        let mut swapped = data.clone();
        swapped["old_email"] = data["new_email"].clone();
        assert_eq!(
            decrypt_paths(&mut swapped, Some(&k), "cus-1", &paths),
            Err(CryptoError::Decrypt)
        );

        decrypt_paths(&mut data, Some(&k), "cus-1", &paths).expect("decrypt");
        assert_eq!(
            data,
            json!({ "old_email": "ada@example.com", "new_email": "ada@example.org", "nested": { "ip": "192.0.2.7" } })
        );
    }
}
