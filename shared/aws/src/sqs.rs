//! `crm_core::ports::DeadLetterQueue` over an SQS queue: each dead letter is
//! one message whose body is the letter as JSON, with message attributes
//! `consumer` and `reason` so the queue can be inspected without parsing
//! bodies.

use crate::eventbridge::is_transient;
use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::MessageAttributeValue;
use aws_sdk_sqs::Client;
use crm_core::ports::{DeadLetter, DeadLetterQueue, StoreError};

/// SQS's classic message size limit (body and attributes together). Queues
/// may allow more today; staying under the classic limit works everywhere.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The longest `reason` attribute; the body keeps the whole reason (up to
/// [`MAX_BODY_REASON_BYTES`]).
pub const MAX_REASON_ATTRIBUTE_BYTES: usize = 1024;

/// The longest reason kept in the body.
pub const MAX_BODY_REASON_BYTES: usize = 16 * 1024;

/// Room left for JSON punctuation and the truncation marker.
const SLACK_BYTES: usize = 1024;

/// The dead-letter queue at `queue_url`.
#[derive(Debug, Clone)]
pub struct SqsDeadLetterQueue {
    client: Client,
    queue_url: String,
}

impl SqsDeadLetterQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsDeadLetterQueue {
            client,
            queue_url: queue_url.into(),
        }
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The longest prefix of `s` of at most `max` bytes, on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// SQS accepts only #x9, #xA, #xD, #x20-#xD7FF, #xE000-#xFFFD and
/// #x10000-#x10FFFF in bodies and string attributes.
fn sqs_char(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// A string attribute value SQS accepts (never empty).
fn attribute_text(s: &str, max: usize) -> String {
    let clean: String = truncate(s, max)
        .chars()
        .map(|c| if sqs_char(c) { c } else { '?' })
        .collect();
    if clean.is_empty() {
        "-".to_string()
    } else {
        clean
    }
}

/// JSON text escapes every control character, but writes U+FFFE and U+FFFF
/// as they are, and SQS refuses them: escape those too (they can only occur
/// inside JSON strings, where `\uXXXX` means the same).
fn sqs_safe_json(json: String) -> String {
    if json.chars().all(sqs_char) {
        json
    } else {
        json.replace('\u{FFFE}', "\\ufffe").replace('\u{FFFF}', "\\uffff")
    }
}

fn encode(letter: &DeadLetter) -> Result<String, StoreError> {
    serde_json::to_string(letter)
        .map(sqs_safe_json)
        .map_err(|e| StoreError::Failed(format!("dead letter cannot be serialised: {e}")))
}

/// The message body for `letter` within `budget` bytes: the letter as JSON,
/// or, when that is too large, the letter with its payload replaced by
/// `{"truncated": true, "payload_bytes": n, "payload_head": "<first bytes of
/// the payload's JSON>"}`.
pub fn message_body(letter: &DeadLetter, budget: usize) -> Result<String, StoreError> {
    let body = encode(letter)?;
    if body.len() <= budget {
        return Ok(body);
    }
    let payload = serde_json::to_string(&letter.payload)
        .map_err(|e| StoreError::Failed(format!("dead letter cannot be serialised: {e}")))?;
    let mut short = DeadLetter {
        reason: truncate(&letter.reason, MAX_BODY_REASON_BYTES).to_string(),
        payload: serde_json::Value::Null,
        ..letter.clone()
    };
    let frame = encode(&short)?.len() + SLACK_BYTES;
    // Escaping can make the head up to six times longer as JSON text.
    let head_bytes = budget.saturating_sub(frame) / 6;
    short.payload = serde_json::json!({
        "truncated": true,
        "payload_bytes": payload.len(),
        "payload_head": truncate(&payload, head_bytes),
    });
    let body = encode(&short)?;
    if body.len() > budget {
        return Err(StoreError::Failed(format!(
            "dead letter does not fit a message even truncated ({} bytes)",
            body.len()
        )));
    }
    Ok(body)
}

#[async_trait]
impl DeadLetterQueue for SqsDeadLetterQueue {
    async fn park(&self, letter: DeadLetter) -> Result<(), StoreError> {
        let consumer = attribute_text(&letter.consumer, MAX_REASON_ATTRIBUTE_BYTES);
        let reason = attribute_text(&letter.reason, MAX_REASON_ATTRIBUTE_BYTES);
        // Attribute names, types ("String") and values count towards the limit.
        let attributes = "consumer".len() + "reason".len() + 2 * "String".len() + consumer.len() + reason.len();
        let body = message_body(&letter, MAX_MESSAGE_BYTES - attributes - SLACK_BYTES)?;
        let attribute = |value: String| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| StoreError::Failed(format!("building a message attribute: {e}")))
        };
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_attributes("consumer", attribute(consumer)?)
            .message_attributes("reason", attribute(reason)?)
            .send()
            .await
            .map_err(|e| {
                let message = format!("SendMessage to {}: {}", self.queue_url, DisplayErrorContext(&e));
                if is_transient(&e) {
                    StoreError::Unavailable(message)
                } else {
                    StoreError::Failed(message)
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn letter(payload: serde_json::Value) -> DeadLetter {
        DeadLetter {
            consumer: "relay".into(),
            reason: "not an event".into(),
            payload,
            failed_at: Utc::now(),
            attempts: 1,
        }
    }

    #[test]
    fn a_small_letter_is_its_json() {
        let l = letter(serde_json::json!({"a": 1}));
        let body = message_body(&l, MAX_MESSAGE_BYTES).expect("body");
        let back: DeadLetter = serde_json::from_str(&body).expect("json");
        assert_eq!(back, l);
    }

    #[test]
    fn a_large_payload_is_truncated_to_fit() {
        let l = letter(serde_json::json!({"blob": "\"é\u{1}".repeat(200_000)}));
        let body = message_body(&l, 200_000).expect("body");
        assert!(body.len() <= 200_000, "{}", body.len());
        let back: DeadLetter = serde_json::from_str(&body).expect("json");
        assert_eq!(back.reason, l.reason);
        assert_eq!(back.payload["truncated"], true);
        assert!(back.payload["payload_bytes"].as_u64().unwrap_or(0) > 200_000);
        assert!(back.payload["payload_head"]
            .as_str()
            .is_some_and(|h| h.starts_with("{\"blob\":")));
    }

    #[test]
    fn noncharacters_are_escaped_and_attributes_cleaned() {
        let l = letter(serde_json::json!({"s": "a\u{FFFF}b"}));
        let body = message_body(&l, MAX_MESSAGE_BYTES).expect("body");
        assert!(body.chars().all(sqs_char));
        let back: DeadLetter = serde_json::from_str(&body).expect("json");
        assert_eq!(back.payload["s"], "a\u{FFFF}b");
        assert_eq!(attribute_text("x\u{0}y", 10), "x?y");
        assert_eq!(attribute_text("", 10), "-");
        assert_eq!(attribute_text("ééé", 3), "é");
    }
}
