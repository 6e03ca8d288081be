//! The dead letters as an operator sees them (decision 0085), one place for
//! `crm-local dlq`, `crm-ops dlq` and the API's `/dead-letters` routes: a
//! summary that never opens the payload (the listing), and the whole letter
//! with its personal fields decrypted for display while the customer's key
//! exists ([`open_letter`], decision 0040).

use crate::consumer::open_letter;
use crate::ports::{ParkedLetter, StoreError};
use crate::privacy::KeyStore;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// A letter in a listing: who parked it, when and why, and what it holds
/// (the event's type and stream), never its payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LetterSummary {
    pub id: String,
    pub consumer: String,
    pub reason: String,
    pub failed_at: DateTime<Utc>,
    pub attempts: u32,
    /// The parked event's type (`type` of an envelope, `detail-type` of a bus event), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// The parked event's stream (ids only), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
}

/// The envelope a payload carries: itself, a bus event's `detail`, or a relay letter's `payload`.
fn envelope(payload: &Value) -> &Value {
    if let Some(detail) = payload.get("detail").filter(|d| d.is_object()) {
        return detail;
    }
    if let Some(inner) = payload.get("payload").filter(|d| d.is_object()) {
        return envelope(inner);
    }
    payload
}

/// The listing's view of `parked`: nothing of its payload but the event's type and stream.
pub fn summary(parked: &ParkedLetter) -> LetterSummary {
    let l = &parked.letter;
    let event = envelope(&l.payload);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    LetterSummary {
        id: parked.id.clone(),
        consumer: l.consumer.clone(),
        reason: l.reason.clone(),
        failed_at: l.failed_at,
        attempts: l.attempts,
        event_type: text(event.get("type")).or_else(|| text(l.payload.get("detail-type"))),
        stream_id: text(event.get("stream_id")),
    }
}

/// The whole letter as `dlq show` prints it: its payload decrypted for
/// display with the customer's key while it exists, `[erased]` after; with
/// `stored`, as the queue keeps it. Nothing is written back.
pub async fn shown(keys: &dyn KeyStore, parked: &ParkedLetter, stored: bool) -> Result<Value, StoreError> {
    let l = &parked.letter;
    let payload = match stored {
        true => l.payload.clone(),
        false => open_letter(keys, &l.payload).await?,
    };
    let mut view = serde_json::to_value(summary(parked)).map_err(|e| StoreError::Failed(e.to_string()))?;
    view["payload"] = payload;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::DeadLetter;

    #[test]
    fn a_summary_names_the_event_and_never_carries_the_payload() {
        let parked = ParkedLetter {
            id: "7".into(),
            letter: DeadLetter {
                consumer: "projector".into(),
                reason: "bad".into(),
                payload: serde_json::json!({"detail-type": "CustomerRegistered", "detail": {
                    "type": "CustomerRegistered", "stream_id": "customer-1", "data": {"email": "a@example.com"}}}),
                failed_at: Utc::now(),
                attempts: 3,
            },
        };
        let s = serde_json::to_string(&summary(&parked)).expect("json");
        assert!(s.contains("CustomerRegistered") && s.contains("customer-1"), "{s}");
        assert!(!s.contains("a@example.com"), "{s}");
    }
}
