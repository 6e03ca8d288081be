//! EventBridge patterns: any bytes as `<pattern JSON>\n<event JSON>`; the
//! pattern is parsed and validated, and when valid matched against the event.
//! Nothing may panic, and a valid pattern read back from its own JSON matches
//! the same events.
#![no_main]

use crm_core::pattern::EventPattern;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, event) = text.split_once('\n').unwrap_or((text, "{}"));
    let Ok(pattern) = EventPattern::parse(pattern) else {
        return;
    };
    let Ok(event) = serde_json::from_str::<serde_json::Value>(event) else {
        return;
    };
    let matched = pattern.matches(&event);
    let again = EventPattern::from_value(pattern.as_value()).expect("a valid pattern's own JSON is valid");
    assert_eq!(again.matches(&event), matched);
});
