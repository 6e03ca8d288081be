//! `crm-local test-event-pattern`: the local `aws events test-event-pattern`.
//!
//! Prints `{"Result": true}` or `{"Result": false}` and exits 0; an invalid
//! pattern or event is reported on stderr with exit code 2.

use crm_core::pattern::{EventPattern, PatternError};
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;

/// Exit code for an invalid pattern or event (as for command-line misuse).
pub const EXIT_INVALID: u8 = 2;

/// Why the inputs could not be tested.
#[derive(Debug, thiserror::Error)]
pub enum TestPatternError {
    #[error("{0}")]
    Pattern(#[from] PatternError),
    #[error("invalid event: {0}")]
    Event(String),
}

/// Whether `event` (JSON text of a full EventBridge event) matches
/// `pattern` (JSON text of an event pattern).
pub fn test_event_pattern(pattern: &str, event: &str) -> Result<bool, TestPatternError> {
    let pattern = EventPattern::parse(pattern)?;
    let event: Value =
        serde_json::from_str(event).map_err(|e| TestPatternError::Event(format!("not valid JSON: {e}")))?;
    if !event.is_object() {
        return Err(TestPatternError::Event("an event must be a JSON object".to_string()));
    }
    Ok(pattern.matches(&event))
}

/// The output line, as `aws events test-event-pattern` reports it.
pub fn result_json(matched: bool) -> String {
    format!("{{\"Result\": {matched}}}")
}

/// Runs the subcommand: prints the result or the error, returns the exit code.
pub fn run(pattern: &str, event: &str) -> ExitCode {
    match test_event_pattern(pattern, event) {
        Ok(matched) => {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{}", result_json(matched)).is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crm-local: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_match_and_no_match() {
        let pattern = r#"{"source": ["crm.commerce"], "detail": {"total": [{"numeric": [">", 10]}]}}"#;
        let hit = r#"{"source": "crm.commerce", "detail": {"total": 11}}"#;
        let miss = r#"{"source": "crm.commerce", "detail": {"total": 9}}"#;
        assert!(matches!(test_event_pattern(pattern, hit), Ok(true)));
        assert!(matches!(test_event_pattern(pattern, miss), Ok(false)));
        assert_eq!(result_json(true), r#"{"Result": true}"#);
        assert_eq!(result_json(false), r#"{"Result": false}"#);
    }

    #[test]
    fn rejects_invalid_inputs_with_the_reason() {
        let bad = test_event_pattern(r#"{"source": "crm"}"#, "{}");
        assert!(matches!(&bad, Err(TestPatternError::Pattern(_))), "{bad:?}");
        let msg = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("$.source"), "{msg}");
        assert!(matches!(
            test_event_pattern(r#"{"source": ["a"]}"#, "{nope"),
            Err(TestPatternError::Event(_))
        ));
        assert!(matches!(
            test_event_pattern(r#"{"source": ["a"]}"#, "[1]"),
            Err(TestPatternError::Event(_))
        ));
    }
}
