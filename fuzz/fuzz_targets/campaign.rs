//! Campaign definitions: any text as a campaign's YAML (`campaigns/*.yaml`,
//! `PUT /campaigns/{id}`), parsed and validated. Nothing may panic.
#![no_main]

use crm_core::journey::Campaign;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Campaign::from_yaml(text);
});
