//! What an entry of the log keeps of the message: identifiers hashed,
//! other personal values removed ([`redact_message`]).

use super::{HASH_PREFIX, REMOVED};
use crate::privacy::scrub::{scrub, EMAIL_MARKER, PHONE_MARKER};
use crate::privacy::{IdentifierHasher, IdentifierKind, LookupKind};
use serde_json::{Map, Value};

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
    if raw.to_string().len() > crate::ingest::MAX_MESSAGE_BYTES {
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
