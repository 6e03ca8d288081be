//! Envelope decoding: any bytes read as a stored event (the JSON of an
//! `EventEnvelope`, as a DynamoDB item or SQLite row holds it, or as the relay
//! and the bus consumers receive it), then as a typed customer or activity
//! event (`DomainEvent::from_envelope`, with its upcasters). Nothing may panic.
#![no_main]

use crm_core::customer::activity::ActivityEvent;
use crm_core::customer::CustomerEvent;
use crm_core::event::{DomainEvent, EventEnvelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = serde_json::from_slice::<EventEnvelope>(data) else {
        return;
    };
    // An envelope that decodes also encodes, and reads back the same.
    let text = serde_json::to_string(&envelope).expect("a decoded envelope encodes");
    let again: EventEnvelope = serde_json::from_str(&text).expect("an encoded envelope decodes");
    assert_eq!(again, envelope);
    if let Ok(event) = CustomerEvent::from_envelope(&envelope) {
        let _ = event.to_parts();
    }
    if let Ok(event) = ActivityEvent::from_envelope(&envelope) {
        let _ = event.to_parts();
    }
});
