//! `crm-local test-event-pattern`, run as a process.

use std::process::{Command, Output};

const PATTERN: &str = r#"{
    "source": ["crm.commerce"],
    "detail-type": ["OrderPlaced"],
    "detail": {"payload": {"total": [{"numeric": [">=", 100]}]}}
}"#;

fn event(total: f64) -> String {
    serde_json::json!({
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "OrderPlaced",
        "source": "crm.commerce",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": {"payload": {"total": total}}
    })
    .to_string()
}

fn run(pattern: &str, event: &str) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_crm-local"))
        .args(["test-event-pattern", "--event-pattern", pattern, "--event", event])
        .env("RUST_LOG", "off")
        .output()
    {
        Ok(output) => output,
        Err(e) => panic!("cannot run crm-local: {e}"),
    }
}

fn stdout_json(output: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => panic!("stdout is not JSON ({e}): {text:?}"),
    }
}

#[test]
fn a_matching_event_prints_result_true() {
    let output = run(PATTERN, &event(149.5));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), r#"{"Result": true}"#);
    assert_eq!(stdout_json(&output), serde_json::json!({"Result": true}));
}

#[test]
fn a_non_matching_event_prints_result_false() {
    let output = run(PATTERN, &event(99.99));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(stdout_json(&output), serde_json::json!({"Result": false}));
}

#[test]
fn an_invalid_pattern_exits_2_with_the_reason() {
    let output = run(r#"{"detail": {"total": [{"numeric": [">", 0, ">", 5]}]}}"#, &event(1.0));
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("$.detail.total[0].numeric"), "{stderr}");
}

#[test]
fn an_invalid_event_exits_2() {
    let output = run(PATTERN, "{not json");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid event"));
}
