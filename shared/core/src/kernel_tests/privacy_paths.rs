use crate::commerce::OrderEvent;
use crate::customer::{Address, CustomerEvent, RegistrationSource, CUSTOMER_EVENT_TYPES};
use crate::event::DomainEvent;
use crate::privacy::DataKey;
use crate::privacy::*;
use crate::privacy::{is_encrypted, CryptoError};
use serde_json::json;
use serde_json::Value;

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
    let text = crate::privacy::text_outside_ciphertext(value);
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
