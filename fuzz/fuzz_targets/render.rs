//! Template rendering: the first byte picks a template, the rest is a JSON
//! Merge Patch applied to its sample variables (as `POST /templates/{id}/preview`
//! does with what a client sends, and as customer-typed values reach every
//! message); then the template is rendered. The `money` filter's formatting is
//! also driven directly. Nothing may panic.
#![no_main]

use crm_core::journey::templates::KNOWN_TEMPLATES;
use crm_core::messaging::render::{format_money, merge_patch, render, sample_data};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    if rest.len() >= 8 {
        let minor = i64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
        let currency = String::from_utf8_lossy(&rest[8..]);
        let _ = format_money(minor, &currency);
    }
    let Ok(patch) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let template = KNOWN_TEMPLATES[pick as usize % KNOWN_TEMPLATES.len()];
    let mut vars = sample_data(template).expect("every known template has sample data");
    merge_patch(&mut vars, &patch);
    let _ = render(template, &vars);
});
