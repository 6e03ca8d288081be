//! The customer's recent history beyond the audit trail (issue 8): the
//! events of every other stream about them — activity, carts, orders,
//! journeys, messages — and of the anonymous profiles merged into them,
//! newest first. Type, stream and time only: no payload, no personal data.

use crate::ports::{EventStore, ReadModelStore, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One event of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub stream_id: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    /// The anonymous profile it happened on, before it was merged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<String>,
    /// Arrived later than the tolerance (ingestion flags it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
}

const PAGE: usize = 500;

/// The newest `limit` events of the streams about `customer_id` and about
/// each of `merged` (other than the customer stream, which the audit trail
/// shows), newest first.
pub async fn recent_history(
    docs: &dyn ReadModelStore,
    events: &dyn EventStore,
    customer_id: &str,
    merged: &[String],
    limit: usize,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let own_stream = super::stream_id(customer_id);
    let mut out: Vec<HistoryEntry> = Vec::new();
    let profiles = std::iter::once((customer_id, None)).chain(merged.iter().map(|m| (m.as_str(), Some(m.clone()))));
    for (profile, merged_from) in profiles {
        for stream in super::streams::customer_streams(docs, profile).await? {
            if stream == own_stream {
                continue;
            }
            let mut after = 0;
            loop {
                let page = events.read_stream(&stream, after, PAGE).await?;
                let done = page.len() < PAGE;
                after = page.last().map_or(after, |e| e.version);
                out.extend(page.into_iter().map(|e| HistoryEntry {
                    late: e.data.get("late").and_then(serde_json::Value::as_bool).unwrap_or(false),
                    stream_id: e.stream_id,
                    version: e.version,
                    event_type: e.event_type,
                    occurred_at: e.occurred_at,
                    merged_from: merged_from.clone(),
                }));
                // Keep the newest `limit` only, as pages come in.
                if out.len() > limit * 2 {
                    out.sort_by(|a, b| b.occurred_at.cmp(&a.occurred_at).then(b.version.cmp(&a.version)));
                    out.truncate(limit);
                }
                if done {
                    break;
                }
            }
        }
    }
    out.sort_by(|a, b| b.occurred_at.cmp(&a.occurred_at).then(b.version.cmp(&a.version)));
    out.truncate(limit);
    Ok(out)
}
