//! What became of a broadcast's messages after they were sent: delivered,
//! opened, clicked, bounced, complained, once per message. The provider's
//! feedback names the message, and a broadcast's message ids name the
//! broadcast ([`super::message_id`]), so the projection needs nothing else.
//! Requested, sent, suppressed (by reason), conversions and revenue come
//! from the campaign stats under the broadcast's campaign id.
//!
//! A subject test's arms (decision 0087): the request names its variant
//! (`data.variant`); the request pointer keeps it, and each sent message and
//! outcome of a test message is counted again under `arm#<variant>#`.
//!
//! The list of broadcasts (`GET /broadcasts`): each `BroadcastScheduled`
//! puts one document under [`LIST_PARTITION`], sorted newest first by the
//! time it was scheduled ([`list_sort`]); its state comes from its stream.

use crate::consumer::{Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use serde_json::{json, Value};

/// The projection's name (checkpoints and documents).
pub const BROADCAST_STATS: &str = "broadcast-stats";

/// The outcomes counted, by event type, with their name in the stats.
const OUTCOMES: &[(&str, &str)] = &[
    ("EmailDelivered", "delivered"),
    ("EmailOpened", "opened"),
    ("EmailClicked", "clicked"),
    ("EmailBounced", "bounced"),
    ("EmailComplained", "complained"),
];

/// The sort-key prefix of a message's request pointer.
const REQUEST: &str = "request#";
/// A customer's broadcasts sent (under their partition), and the customers
/// who withdrew marketing consent within [`UNSUBSCRIBE_WINDOW_DAYS`] after
/// one (under the broadcast's).
const SENT: &str = "sent#";
const UNSUBSCRIBED: &str = "unsubscribed#";
/// A subject test arm's counts: `arm#<variant>#<sent|outcome>#<message id>`.
const ARM: &str = "arm#";

/// A marketing consent withdrawn this long after a broadcast was sent to
/// the customer counts as an unsubscribe from it.
pub const UNSUBSCRIBE_WINDOW_DAYS: i64 = 7;

fn customer_partition(customer_id: &str) -> String {
    format!("customer#{customer_id}")
}

/// A marketing consent withdrawn: an unsubscribe from each broadcast sent
/// to the customer within the window before it.
async fn unsubscribed(event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
    let (Some(customer), Some("marketing")) = (
        event.customer_id.as_deref(),
        event.data.get("purpose").and_then(Value::as_str),
    ) else {
        return Ok(Vec::new());
    };
    let sent = docs
        .list(BROADCAST_STATS, &customer_partition(customer), SENT, None, 1000)
        .await
        .map_err(ProjectionError::Store)?;
    let window = chrono::Duration::days(UNSUBSCRIBE_WINDOW_DAYS);
    let mut ops = Vec::new();
    for (sort, body) in sent {
        let at = body
            .get("at")
            .and_then(|v| serde_json::from_value::<chrono::DateTime<chrono::Utc>>(v.clone()).ok());
        let within = at.is_some_and(|at| event.occurred_at >= at && event.occurred_at <= at + window);
        if let (true, Some(broadcast)) = (within, sort.strip_prefix(SENT)) {
            ops.push(ReadOp::Put {
                partition: partition(broadcast),
                sort: format!("{UNSUBSCRIBED}{customer}"),
                body: json!({}),
            });
        }
    }
    Ok(ops)
}

fn partition(broadcast_id: &str) -> String {
    format!("broadcast#{broadcast_id}")
}

/// The broadcast a message id belongs to, if it is a broadcast's (`bc-<id>-<hash>`).
pub fn broadcast_of(message_id: &str) -> Option<&str> {
    let rest = message_id.strip_prefix("bc-")?;
    let (id, hash) = rest.rsplit_once('-')?;
    (hash.len() == 20 && !id.is_empty()).then_some(id)
}

/// The partition listing every broadcast, newest first.
pub const LIST_PARTITION: &str = "broadcasts";
const LISTED: &str = "at#";

/// The list's sort key of a broadcast scheduled at `at`: the milliseconds
/// before the end of time, zero-padded, so that the newest sorts first, then
/// the id (two scheduled in the same millisecond).
pub fn list_sort(at: chrono::DateTime<chrono::Utc>, broadcast_id: &str) -> String {
    let millis = u64::try_from(at.timestamp_millis()).unwrap_or(0);
    format!("{LISTED}{:020}#{broadcast_id}", u64::MAX - millis)
}

/// One listed broadcast: its id and definition as scheduled, and the cursor
/// of the list after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub cursor: String,
    pub broadcast_id: String,
    pub scheduled_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Whether `cursor` could be a [`Listed::cursor`].
pub fn is_list_cursor(cursor: &str) -> bool {
    cursor
        .split_once('#')
        .is_some_and(|(n, id)| n.len() == 20 && n.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty())
}

/// Up to `limit` broadcasts, newest first, after `after` (a [`Listed::cursor`]).
pub async fn list(docs: &dyn ReadModelStore, after: Option<&str>, limit: usize) -> Result<Vec<Listed>, StoreError> {
    let after = after.map(|a| format!("{LISTED}{a}"));
    let page = docs
        .list(BROADCAST_STATS, LIST_PARTITION, LISTED, after.as_deref(), limit)
        .await?;
    Ok(page
        .into_iter()
        .filter_map(|(sort, body)| {
            let cursor = sort.strip_prefix(LISTED)?.to_string();
            let broadcast_id = body.get("broadcast_id")?.as_str()?.to_string();
            let scheduled_at = body
                .get("scheduled_at")
                .and_then(|v| serde_json::from_value(v.clone()).ok());
            Some(Listed {
                cursor,
                broadcast_id,
                scheduled_at,
            })
        })
        .collect())
}

pub struct BroadcastStatsProjection;

#[async_trait]
impl Projection for BroadcastStatsProjection {
    fn name(&self) -> &'static str {
        BROADCAST_STATS
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "MessageRequested" | "MessageSent" | "ConsentRevoked" | "BroadcastScheduled"
        ) || OUTCOMES.iter().any(|(t, _)| *t == event_type)
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        if event.event_type == "ConsentRevoked" {
            return unsubscribed(event, docs).await;
        }
        if event.event_type == "BroadcastScheduled" {
            // The list of broadcasts: written once, by the time it was scheduled.
            let Some(broadcast) = event.data.get("broadcast_id").and_then(Value::as_str) else {
                return Ok(Vec::new());
            };
            return Ok(vec![ReadOp::Put {
                partition: LIST_PARTITION.to_string(),
                sort: list_sort(event.occurred_at, broadcast),
                body: json!({ "broadcast_id": broadcast, "scheduled_at": event.occurred_at }),
            }]);
        }
        let Some(message_id) = event.data.get("message_id").and_then(Value::as_str) else {
            return Ok(Vec::new());
        };
        if event.event_type == "MessageSent" {
            // When the customer was sent the broadcast: an unsubscribe soon after counts.
            let (Some(broadcast), Some(customer)) = (broadcast_of(message_id), event.customer_id.as_deref()) else {
                return Ok(Vec::new());
            };
            let mut ops = vec![ReadOp::Put {
                partition: customer_partition(customer),
                sort: format!("{SENT}{broadcast}"),
                body: json!({ "at": event.occurred_at }),
            }];
            ops.extend(arm_count(docs, broadcast, message_id, "sent").await?);
            return Ok(ops);
        }
        if event.event_type == "MessageRequested" {
            // Where the request is stored, for the explain API.
            let Some(broadcast) = broadcast_of(message_id) else {
                return Ok(Vec::new());
            };
            let mut pointer = json!({ "stream_id": event.stream_id, "version": event.version });
            if let Some(variant) = event.data.pointer("/data/variant").and_then(Value::as_str) {
                pointer["variant"] = json!(variant);
            }
            return Ok(vec![ReadOp::Put {
                partition: partition(broadcast),
                sort: format!("{REQUEST}{message_id}"),
                body: pointer,
            }]);
        }
        let (Some(broadcast), Some((_, name))) = (
            broadcast_of(message_id),
            OUTCOMES.iter().find(|(t, _)| *t == event.event_type),
        ) else {
            return Ok(Vec::new());
        };
        let mut ops = vec![ReadOp::Put {
            partition: partition(broadcast),
            sort: format!("{name}#{message_id}"),
            body: json!({}),
        }];
        ops.extend(arm_count(docs, broadcast, message_id, name).await?);
        Ok(ops)
    }
}

/// The arm's count of `what` for a subject test's message (nothing for a
/// message outside the test): its variant is on the request pointer.
async fn arm_count(
    docs: &dyn ReadModelStore,
    broadcast_id: &str,
    message_id: &str,
    what: &str,
) -> Result<Option<ReadOp>, ProjectionError> {
    let pointer = docs
        .get(
            BROADCAST_STATS,
            &partition(broadcast_id),
            &format!("{REQUEST}{message_id}"),
        )
        .await
        .map_err(ProjectionError::Store)?;
    let Some(variant) = pointer.as_ref().and_then(|p| p.get("variant")).and_then(Value::as_str) else {
        return Ok(None);
    };
    Ok(Some(ReadOp::Put {
        partition: partition(broadcast_id),
        sort: format!("{ARM}{variant}#{what}#{message_id}"),
        body: json!({}),
    }))
}

/// A subject test arm's counts: sent, then each outcome (0 included).
pub async fn arm_outcomes(
    docs: &dyn ReadModelStore,
    broadcast_id: &str,
    variant: &str,
) -> Result<Vec<(&'static str, u64)>, StoreError> {
    let mut out = vec![(
        "sent",
        count(docs, broadcast_id, &format!("{ARM}{variant}#sent#")).await?,
    )];
    for (_, name) in OUTCOMES {
        out.push((
            name,
            count(docs, broadcast_id, &format!("{ARM}{variant}#{name}#")).await?,
        ));
    }
    Ok(out)
}

/// Where the request of broadcast message `message_id` is stored (its
/// stream and version), once projected.
pub async fn request_pointer(
    docs: &dyn ReadModelStore,
    broadcast_id: &str,
    message_id: &str,
) -> Result<Option<(String, u64)>, StoreError> {
    let found = docs
        .get(
            BROADCAST_STATS,
            &partition(broadcast_id),
            &format!("{REQUEST}{message_id}"),
        )
        .await?;
    Ok(found.and_then(|v| Some((v.get("stream_id")?.as_str()?.to_string(), v.get("version")?.as_u64()?))))
}

/// How many documents of the broadcast's partition start with `prefix`.
async fn count(docs: &dyn ReadModelStore, broadcast_id: &str, prefix: &str) -> Result<u64, StoreError> {
    let mut count = 0u64;
    let mut after: Option<String> = None;
    loop {
        let page = docs
            .list(
                BROADCAST_STATS,
                &partition(broadcast_id),
                prefix,
                after.as_deref(),
                1000,
            )
            .await?;
        count += page.len() as u64;
        if page.len() < 1000 {
            return Ok(count);
        }
        after = page.last().map(|(k, _)| k.clone());
    }
}

/// The broadcast's outcome counts, each name with its count (0 included).
pub async fn outcomes(docs: &dyn ReadModelStore, broadcast_id: &str) -> Result<Vec<(&'static str, u64)>, StoreError> {
    let mut out = Vec::new();
    for (_, name) in OUTCOMES {
        out.push((*name, count(docs, broadcast_id, &format!("{name}#")).await?));
    }
    out.push(("unsubscribed", count(docs, broadcast_id, UNSUBSCRIBED).await?));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broadcast_message_id_names_its_broadcast() {
        let id = super::super::message_id("spring-sale", "c-1");
        assert_eq!(broadcast_of(&id), Some("spring-sale"));
        assert_eq!(broadcast_of("m-123"), None);
        assert_eq!(broadcast_of("bc-x-short"), None);
    }

    #[test]
    fn the_list_sorts_the_newest_first() {
        let older = list_sort(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000), "b");
        let newer = list_sort(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_001), "a");
        assert!(newer < older, "{newer} sorts before {older}");
        let cursor = newer.strip_prefix(LISTED).expect("prefix");
        assert!(is_list_cursor(cursor), "{cursor}");
        assert!(!is_list_cursor("12#a"));
        assert!(!is_list_cursor(&format!("{:020}#", 1)));
    }
}
