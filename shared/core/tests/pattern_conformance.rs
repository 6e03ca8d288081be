//! Conformance of `crm_core::pattern` with Amazon EventBridge: every case in
//! testdata/eventbridge-patterns.jsonl (validated against AWS by the
//! LocalStack project, see testdata/README.md) must give the expected result.
//! All failures are collected and reported together.

use crm_core::pattern::EventPattern;
use serde_json::Value;

const DATA: &str = include_str!("../testdata/eventbridge-patterns.jsonl");

#[derive(Debug, serde::Deserialize)]
struct Case {
    name: String,
    expect: String,
    event: Value,
    pattern: Value,
}

#[test]
fn every_eventbridge_case_gives_the_expected_result() {
    let mut failures = Vec::new();
    let mut counts = [0usize; 3]; // match, no_match, invalid
    let mut total = 0;

    for (index, line) in DATA.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        total += 1;
        let case: Case = match serde_json::from_str(line) {
            Ok(case) => case,
            Err(e) => {
                failures.push(format!("line {}: unreadable case: {e}", index + 1));
                continue;
            }
        };
        let parsed = EventPattern::from_value(&case.pattern);
        let outcome = match (case.expect.as_str(), parsed) {
            ("invalid", Err(_)) => Ok(2),
            ("invalid", Ok(_)) => Err("the pattern was accepted but AWS rejects it".to_string()),
            ("match" | "no_match", Err(e)) => Err(format!("the pattern was rejected: {e}")),
            (want @ ("match" | "no_match"), Ok(pattern)) => {
                let expected = want == "match";
                let got = pattern.matches(&case.event);
                if got == expected {
                    Ok(if expected { 0 } else { 1 })
                } else {
                    Err(format!("expected {want}, got matches() = {got}"))
                }
            }
            (other, _) => Err(format!("unknown expectation \"{other}\"")),
        };
        match outcome {
            Ok(kind) => counts[kind] += 1,
            Err(why) => failures.push(format!("{} (line {}): {why}", case.name, index + 1)),
        }
    }

    println!(
        "{total} cases: {} match, {} no_match, {} invalid passed; {} failed",
        counts[0],
        counts[1],
        counts[2],
        failures.len()
    );
    assert!(total > 0, "no cases found");
    assert!(
        failures.is_empty(),
        "{} of {total} EventBridge pattern cases failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
