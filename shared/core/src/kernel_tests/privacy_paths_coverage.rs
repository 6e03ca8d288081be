//! [`PERSONAL_DATA`] checked against the event types themselves (issue 16,
//! decision 0041): every field of every event type, at every schema version
//! still stored, that can hold personal data must be covered by a listed
//! path. The fields are found by walking the JSON Schemas generated from the
//! Rust types (`crate::schemas::event_schemas`, what `schemas/events/`
//! holds), never from a list kept by hand:
//!
//! * a field whose name says it is personal: its last words (split at `_`
//!   and case changes) name an email, a first, last or full name, a phone,
//!   an address, an IP, a user agent, a date of birth, notes or a (device)
//!   token (`old_email`, `shipping_address`; not `address_hash`, which names
//!   the value without holding it, nor `email_frequency`);
//! * a field whose type says it is personal (`Address`, ...: the same words
//!   in the definition's name);
//! * free text whose name says it is someone's words about the message or
//!   the customer: its last word names an error, a diagnostic, a reason, a
//!   detail, a message, a description or a comment (`error`,
//!   `error_message`, a bounce's `diagnostic`), and its schema is text that
//!   is not an enumeration (`reason: SuppressionReason` is not free text).
//!   A provider's answer often quotes the recipient's address (`550 5.1.1
//!   <ada@example.com>: user unknown`, decision 0048);
//! * a field that can hold anything: no type (a `serde_json::Value`: the
//!   trigger event of a journey, a message's template data, a custom
//!   event's properties), or a map of any keys to text or to anything.
//!   Whatever the client or the trigger sent may be personal. (An object
//!   schema without properties is how schemars writes a struct with no
//!   fields, `CustomerErased {}`; maps carry `additionalProperties`.)
//!
//! Paths cannot reach into arrays or maps, so a personal field inside one
//! must be covered by the array's or the map's own path. A field is covered
//! when a listed path is the field's path or a prefix of it (`request`
//! covers `request.data`).
//!
//! Free-form fields that can never be personal (a JSON Schema, a campaign's
//! definition: written by staff, about no customer) are named in
//! [`NOT_PERSONAL`] with the reason; a test fails when an entry there no
//! longer names such a field.

use crate::privacy::PERSONAL_DATA;
use crate::schemas::{event_schemas, EventSchema};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Words (and word pairs) of a field or type name that say it holds
/// personal data.
const PERSONAL_WORDS: &[&[&str]] = &[
    &["email"],
    &["first", "name"],
    &["last", "name"],
    &["full", "name"],
    &["given", "name"],
    &["family", "name"],
    &["phone"],
    &["mobile"],
    &["address"],
    &["ip"],
    &["user", "agent"],
    &["date", "of", "birth"],
    &["birthday"],
    &["dob"],
    &["notes"],
    &["token"],
    &["street"],
    &["postal", "code"],
];

/// The last words of a text field's name that say it is free text someone
/// (a provider, a person) wrote: it may quote an address or a name.
const FREE_TEXT_WORDS: &[&str] = &[
    "error",
    "diagnostic",
    "reason",
    "detail",
    "message",
    "description",
    "comment",
];

/// Free-form fields that hold no personal data, with why: `(event type,
/// path)`. Only what the walk would flag belongs here; a stale entry fails
/// [`not_personal_entries_name_free_form_fields`].
const NOT_PERSONAL: &[(&str, &str, &str)] = &[
    (
        "CampaignPublished",
        "definition",
        "a campaign's definition, written by staff; about no customer",
    ),
    (
        "CustomEventSchemaRegistered",
        "schema",
        "a JSON Schema registered by staff; about no customer",
    ),
    (
        "TemplatePublished",
        "sample",
        "a template's sample variables, example data written by staff to check and preview it (decision 0077); about no customer",
    ),
    (
        "SegmentDefined",
        "definition",
        "a rule segment's definition, written by staff (decision 0082); about no customer",
    ),
    (
        "JourneyEventEmitted",
        "data",
        "the emit step's constant data from the campaign definition (journey::instance copies it as written); nothing of the customer is put in it",
    ),
    (
        "MessageSuppressed",
        "detail",
        "written by the decision (messaging::decision) from fixed phrases and the campaign's topic; no provider text, no address",
    ),
    (
        "MessageClaimed",
        "channel_choice.considered",
        "the channel choice's reasons (messaging::choice, decision 0076), fixed phrases naming channels and purposes; no address",
    ),
    (
        "MessageSuppressed",
        "channel_choice.considered",
        "the channel choice's reasons (messaging::choice, decision 0076), fixed phrases naming channels and purposes; no address",
    ),
    (
        "MessageNotAccepted",
        "reason",
        "written by the settle check from a fixed phrase and counts (no Send within N s of send M); no provider text",
    ),
    (
        "ConsentRevoked",
        "reason",
        "a short reason code (customer-erased, complaint, unsubscribe-link, or the API's documented reason): the consent proof keeps it readable after erasure (consent::proof), so it must never hold more",
    ),
    (
        "CustomerSegmentAdded",
        "reason",
        "the segment's rule as staff wrote it (segments::rule_of), the same for every member; about no one",
    ),
    (
        "CustomerSegmentRemoved",
        "reason",
        "the segment's rule as staff wrote it (segments::rule_of), the same for every member; about no one",
    ),
    (
        "EmailVerificationRequested",
        "token",
        "a random one-time secret the shop issued (not a device token): no one's data, and it names no one once the email it went to is erased",
    ),
];

/// One field that can hold personal data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Finding {
    event_type: String,
    version: u32,
    /// The path paths.rs must cover (a prefix of `field` when the field is
    /// inside an array or a map).
    path: String,
    /// The field as found (`[]` for an array's items, `*` for a map's values).
    field: String,
    why: String,
}

/// The words of a snake_case or CamelCase name, lower case.
fn words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if c == '_' || c == '-' || c == '.' || c == ' ' {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Why a name says its value is personal, if it does: its last words are
/// one of [`PERSONAL_WORDS`] (`old_email`, `shipping_address`, `IpAddress`;
/// not `email_frequency`, a setting about email, nor `address_hash`).
fn personal_name(name: &str) -> Option<String> {
    let w = words(name);
    PERSONAL_WORDS
        .iter()
        .find(|phrase| w.ends_with(&phrase.iter().map(|p| p.to_string()).collect::<Vec<_>>()))
        .map(|phrase| format!("named `{}`", phrase.join("_")))
}

/// Why a text field's name says it is free text someone wrote, if it does
/// (its last word is one of [`FREE_TEXT_WORDS`]).
fn free_text_name(name: &str) -> Option<String> {
    let w = words(name);
    let last = w.last()?;
    FREE_TEXT_WORDS
        .iter()
        .find(|word| *word == last)
        .map(|word| format!("free text named `{word}`"))
}

/// Whether `schema` is text that is not one of a fixed set of values: a
/// string (or, for an optional or listed field, an alternative that is one)
/// without `enum` or `const`.
fn is_free_text(schema: &Value) -> bool {
    let plain = is_text(schema) && schema.get("enum").is_none() && schema.get("const").is_none();
    plain
        || ["anyOf", "oneOf"].iter().any(|k| {
            schema
                .get(*k)
                .and_then(Value::as_array)
                .is_some_and(|alts| alts.iter().any(|a| !is_protected_marker(a) && is_free_text(a)))
        })
}

/// The schema keywords that constrain what a value is.
const SHAPE_KEYWORDS: &[&str] = &[
    "type",
    "$ref",
    "properties",
    "items",
    "enum",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "additionalProperties",
    "patternProperties",
];

/// Whether `schema` accepts any value at all (a `serde_json::Value`).
fn accepts_anything(schema: &Value) -> bool {
    match schema {
        Value::Bool(b) => *b,
        Value::Object(o) => !SHAPE_KEYWORDS.iter().any(|k| o.contains_key(*k)),
        _ => false,
    }
}

/// Whether `schema` is a string (text whose meaning its key would say).
fn is_text(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "string",
        Some(Value::Array(types)) => types.iter().any(|t| t == "string"),
        _ => false,
    }
}

/// The stored-as-encrypted alternative `schemas` adds to a listed field.
fn is_protected_marker(schema: &Value) -> bool {
    schema
        .get("pattern")
        .and_then(Value::as_str)
        .is_some_and(|p| p.starts_with("^(enc:v1:"))
}

struct Walk<'a> {
    event_type: &'a str,
    version: u32,
    definitions: &'a Map<String, Value>,
    out: Vec<Finding>,
}

impl Walk<'_> {
    fn flag(&mut self, field: &[String], cover: Option<&[String]>, why: String) {
        let path = cover.unwrap_or(field).join(".");
        self.out.push(Finding {
            event_type: self.event_type.to_string(),
            version: self.version,
            path,
            field: field.join("."),
            why,
        });
    }

    /// Walks the value at `field` (`cover`: the path of the array or map
    /// it is inside, if any), `seen` the definitions on the way (recursion).
    fn value(&mut self, schema: &Value, field: &[String], cover: Option<&[String]>, seen: &BTreeSet<String>) {
        if accepts_anything(schema) {
            self.flag(field, cover, "can hold anything".into());
            return;
        }
        let Value::Object(o) = schema else { return };
        if let Some(Value::String(r)) = o.get("$ref") {
            let name = r.strip_prefix("#/definitions/").unwrap_or(r);
            if let Some(why) = personal_name(name) {
                self.flag(field, cover, format!("of type {name} ({why})"));
                return;
            }
            if seen.contains(name) {
                return;
            }
            let mut seen = seen.clone();
            seen.insert(name.to_string());
            if let Some(def) = self.definitions.get(name) {
                self.value(def, field, cover, &seen);
            }
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            for alternative in o.get(key).and_then(Value::as_array).into_iter().flatten() {
                if !is_protected_marker(alternative) {
                    self.value(alternative, field, cover, seen);
                }
            }
        }
        if let Some(Value::Object(props)) = o.get("properties") {
            for (name, sub) in props {
                let mut path = field.to_vec();
                path.push(name.clone());
                match personal_name(name) {
                    Some(why) => self.flag(&path, cover, why),
                    None => match free_text_name(name).filter(|_| is_free_text(sub)) {
                        Some(why) => self.flag(&path, cover, why),
                        None => self.value(sub, &path, cover, seen),
                    },
                }
            }
        }
        match o.get("additionalProperties") {
            Some(values) if accepts_anything(values) || is_text(values) => {
                self.flag(field, cover, "a map of any keys to text or anything".into());
            }
            Some(values @ Value::Object(_)) => {
                let mut path = field.to_vec();
                path.push("*".into());
                self.value(values, &path, Some(cover.unwrap_or(field)), seen);
            }
            _ => {}
        }
        if let Some(items) = o.get("items") {
            let mut path = field.to_vec();
            path.push("[]".into());
            let inside = Some(cover.unwrap_or(field));
            match items {
                Value::Array(tuple) => tuple.iter().for_each(|i| self.value(i, &path, inside, seen)),
                one => self.value(one, &path, inside, seen),
            }
        }
    }
}

/// Every field of every event type and stored schema version that can hold
/// personal data.
fn findings(schemas: &[EventSchema]) -> Vec<Finding> {
    let empty = Map::new();
    let mut out = Vec::new();
    for s in schemas {
        let definitions = s.schema.get("definitions").and_then(Value::as_object).unwrap_or(&empty);
        let Some(data) = s.schema.pointer("/properties/data") else {
            continue;
        };
        let mut walk = Walk {
            event_type: &s.event_type,
            version: s.version,
            definitions,
            out: Vec::new(),
        };
        walk.value(data, &[], None, &BTreeSet::new());
        out.extend(walk.out);
    }
    out.sort();
    out.dedup();
    out
}

/// Whether the listed paths of `event_type` cover `path`.
fn covered(event_type: &str, path: &str) -> bool {
    let listed = PERSONAL_DATA
        .iter()
        .find(|(t, _)| *t == event_type)
        .map(|(_, paths)| *paths)
        .unwrap_or(&[]);
    listed.iter().any(|l| path == *l || path.starts_with(&format!("{l}.")))
}

fn exempt(f: &Finding) -> bool {
    NOT_PERSONAL.iter().any(|(t, p, _)| *t == f.event_type && *p == f.path)
}

fn all_schemas() -> Vec<EventSchema> {
    event_schemas().expect("the event types generate their schemas")
}

#[test]
fn every_field_that_can_hold_personal_data_is_listed() {
    let missing: Vec<String> = findings(&all_schemas())
        .into_iter()
        .filter(|f| !exempt(f) && !covered(&f.event_type, &f.path))
        .map(|f| {
            format!(
                "{} v{}: `{}` ({}{}) is not in privacy/paths.rs",
                f.event_type,
                f.version,
                f.path,
                f.why,
                if f.field != f.path {
                    format!(", at {}", f.field)
                } else {
                    String::new()
                }
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "personal fields not encrypted:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_listed_path_is_a_field_of_its_event_type() {
    let schemas = all_schemas();
    for (event_type, paths) in PERSONAL_DATA {
        for path in *paths {
            let found = schemas.iter().filter(|s| &s.event_type == event_type).any(|s| {
                let pointer: String = path.split('.').map(|k| format!("/properties/{k}")).collect();
                let data = s.schema.pointer("/properties/data");
                data.and_then(|d| d.pointer(&pointer)).is_some()
                    || data.is_some_and(|d| field_through_refs(&s.schema, d, path))
            });
            assert!(
                found,
                "{event_type}: `{path}` is no field of any of its schema versions"
            );
        }
    }
}

/// Whether `path` is a field of `data`, following `$ref`s into the
/// document's definitions.
fn field_through_refs(doc: &Value, data: &Value, path: &str) -> bool {
    let mut at = data.clone();
    for key in path.split('.') {
        for _ in 0..8 {
            let Some(r) = at.get("$ref").and_then(Value::as_str) else {
                break;
            };
            let Some(def) = r.strip_prefix("#/").and_then(|p| doc.pointer(&format!("/{p}"))) else {
                return false;
            };
            at = def.clone();
        }
        let Some(next) = at.pointer(&format!("/properties/{key}")) else {
            return false;
        };
        at = next.clone();
    }
    true
}

#[test]
fn not_personal_entries_name_free_form_fields() {
    let found = findings(&all_schemas());
    for (event_type, path, why) in NOT_PERSONAL {
        assert!(!why.is_empty(), "{event_type} {path}: say why it is not personal");
        assert!(
            found.iter().any(|f| f.event_type == *event_type && f.path == *path),
            "NOT_PERSONAL: {event_type} `{path}` is no longer a field the walk flags: remove it"
        );
        assert!(
            !covered(event_type, path),
            "{event_type} `{path}` is both encrypted and declared not personal"
        );
    }
}

// The walk itself, on hand-made schemas: it must find what it claims to.

fn walk(data: Value, definitions: Value) -> Vec<(String, String)> {
    let schema = serde_json::json!({ "properties": { "data": data }, "definitions": definitions });
    let s = EventSchema {
        event_type: "Probe".into(),
        version: 1,
        source: "crm.test",
        latest: true,
        schema,
    };
    findings(&[s]).into_iter().map(|f| (f.path, f.why)).collect()
}

#[test]
fn the_walk_finds_names_types_free_form_values_and_stops_at_arrays_and_maps() {
    use serde_json::json;
    let found = walk(
        json!({
            "type": "object",
            "properties": {
                "customer_id": { "type": "string" },
                "old_email": { "type": "string" },
                "address_hash": { "type": "string" },
                "IpAddress": { "type": "string" },
                "shipping": { "$ref": "#/definitions/Address" },
                "nested": { "type": "object", "properties": { "userAgent": { "type": "string" }, "n": { "type": "integer" } } },
                "request": { "$ref": "#/definitions/Request" },
                "items": { "type": "array", "items": { "type": "object", "properties": { "first_name": { "type": "string" } } } },
                "traits": { "type": "object", "additionalProperties": { "type": "string" } },
                "counts": { "type": "object", "additionalProperties": { "type": "integer" } },
                "bag": { "type": "object", "additionalProperties": {} },
                "nothing": { "type": "object" },
                "email_frequency": { "type": "string" },
                "maybe": { "anyOf": [{ "$ref": "#/definitions/Request" }, { "type": "null" }] },
                "listed": { "anyOf": [{ "type": "string" }, { "type": "string", "pattern": "^(enc:v1:|\\[erased\\]$)" }] },
                "status": { "type": "string", "enum": ["a", "b"] },
                "error": { "type": "string" },
                "diagnostic": { "type": ["string", "null"], "default": null },
                "error_message": { "anyOf": [{ "type": "string" }, { "type": "string", "pattern": "^(enc:v1:|\\[erased\\]$)" }] },
                "reason": { "$ref": "#/definitions/Reason" },
                "kind_reason": { "type": "string", "enum": ["x"] },
                "error_count": { "type": "integer" },
            }
        }),
        json!({
            "Address": { "type": "object", "properties": { "line1": { "type": "string" } } },
            "Request": { "type": "object", "properties": { "template": { "type": "string" }, "data": {} } },
            "Reason": { "type": "string", "enum": ["quiet-hours"] },
        }),
    );
    let paths: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "IpAddress",
            "bag",
            "diagnostic",
            "error",
            "error_message",
            "items",
            "maybe.data",
            "nested.userAgent",
            "old_email",
            "request.data",
            "shipping",
            "traits",
        ],
        "{found:?}"
    );
    assert!(found.contains(&("shipping".into(), "of type Address (named `address`)".into())));
    assert!(found.contains(&("request.data".into(), "can hold anything".into())));
    // A map of counts holds no text, and the hash of an address is not the address.
    assert!(!paths.contains(&"counts") && !paths.contains(&"address_hash"));
    assert!(found.contains(&("diagnostic".into(), "free text named `diagnostic`".into())));
    // An enumeration of reasons is no one's words, nor is a count of errors.
    assert!(!paths.contains(&"reason") && !paths.contains(&"kind_reason") && !paths.contains(&"error_count"));
}

/// The provider texts of the message stream, and the texts that quote
/// them, are found by the walk of the real schemas (not only listed by
/// hand): a provider's answer quotes the recipient's address (decision 0048).
#[test]
fn the_walk_flags_provider_and_error_texts() {
    let found = findings(&all_schemas());
    for (event_type, path) in [
        ("MessageFailed", "error"),
        ("MessageOutcomeUnknown", "error"),
        ("MessageContentRejected", "reason"),
        ("EmailBounced", "diagnostic"),
        ("CustomerEmailInvalidated", "reason"),
        ("PaymentFailed", "error_message"),
    ] {
        assert!(
            found.iter().any(|f| f.event_type == event_type && f.path == path),
            "{event_type} `{path}` is free provider text the walk does not flag"
        );
        assert!(covered(event_type, path), "{event_type} `{path}` is not encrypted");
    }
}

#[test]
fn names_split_into_words() {
    assert_eq!(words("old_first_name"), vec!["old", "first", "name"]);
    assert_eq!(words("userAgent"), vec!["user", "agent"]);
    assert_eq!(words("ShippingAddress"), vec!["shipping", "address"]);
    assert!(personal_name("new_date_of_birth").is_some());
    assert!(personal_name("shipping_address").is_some());
    assert!(personal_name("address_hash").is_none());
    assert!(personal_name("campaign_name").is_none());
    assert!(personal_name("tip").is_none(), "a word, not a substring");
    assert!(personal_name("email_frequency").is_none(), "a setting about email");
    assert!(personal_name("IpAddress").is_some());
}
