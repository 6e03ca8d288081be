//! `crm-local demo` runs the whole abandoned-cart story and explains the reminder.

use std::process::Command;

#[test]
fn the_demo_tells_the_abandoned_cart_story_and_explains_the_reminder() {
    let out = Command::new(env!("CARGO_BIN_EXE_crm-local"))
        .args(["demo"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run crm-local demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("CartAbandoned"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("MessageRequested") && l.contains("abandoned-cart-reminder")),
        "{stdout}"
    );
    assert!(stdout.contains("JourneyExited"), "{stdout}");
    let (_, why) = stdout.split_once("== Why was message").expect("an explain section");
    assert!(
        why.lines()
            .any(|l| l.starts_with("trigger") && l.contains("CartAbandoned")),
        "{why}"
    );
    assert!(
        why.lines()
            .any(|l| l.starts_with("history") && l.contains("ItemAddedToCart")),
        "{why}"
    );
}
