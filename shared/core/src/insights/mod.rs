//! Customer insight (issue 6): funnels, multi-touch attribution and campaign
//! stats, each a projection run by the projector's consumer group.
//!
//! The projections only record facts, one document per event under a key
//! made of the event's own time and id (plus small per-stream documents that
//! only events of the same stream read). Events of different streams may
//! arrive in any order, so nothing is computed across streams while
//! projecting: funnels, attribution and campaign stats are computed from
//! the facts when they are read. That keeps the read models equal to the
//! in-order ones whatever the bus does (the consumers' property test).
//! The rules (stage mapping, the lookback window, the conversion window, the
//! rounding of credits) are in `docs/decisions/0013-funnel-attribution-stats.md`.

pub mod attribution;
pub mod campaign_stats;
pub mod funnel;

#[cfg(test)]
pub(crate) mod tests;

use crate::consumer::ProjectionError;
use crate::event::EventEnvelope;
use crate::ports::{ReadModelStore, StoreError};
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The longest period an aggregate read spans (days of index partitions read).
pub const MAX_RANGE_DAYS: i64 = 366;

/// A time as a fixed-width sort key: lexical order is time order.
pub(crate) fn time_key(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The day partition `<prefix><YYYY-MM-DD>` of a time.
pub(crate) fn day_key(prefix: &str, day: NaiveDate) -> String {
    format!("{prefix}{}", day.format("%Y-%m-%d"))
}

/// Every day from the one of `from` to the one just before `to` (exclusive end).
pub(crate) fn days(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let mut day = from.date_naive();
    while day.and_hms_opt(0, 0, 0).map(|t| t.and_utc() < to).unwrap_or(false) {
        out.push(day);
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }
    out
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Value, ProjectionError> {
    serde_json::to_value(value).map_err(|e| ProjectionError::Invalid(e.to_string()))
}

pub(crate) fn decode_doc<T: DeserializeOwned>(what: &str, value: Value) -> Result<T, StoreError> {
    serde_json::from_value(value).map_err(|e| StoreError::Failed(format!("{what} unreadable: {e}")))
}

/// The event's data as `T`; an event this code cannot read is poison.
pub(crate) fn data<T: DeserializeOwned>(event: &EventEnvelope) -> Result<T, ProjectionError> {
    serde_json::from_value(event.data.clone()).map_err(|e| {
        ProjectionError::Invalid(format!(
            "{} {} of {}: {e}",
            event.event_type, event.event_id, event.stream_id
        ))
    })
}

/// The customer an event is about: the envelope's, else the data's.
pub(crate) fn customer_of(event: &EventEnvelope) -> Option<String> {
    event
        .customer_id
        .clone()
        .or_else(|| {
            event
                .data
                .get("customer_id")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .filter(|c| !c.is_empty())
}

/// Every document of a partition whose sort key starts with `prefix`, after
/// `after`, until `stop` says a key is past the end (sort order).
pub(crate) async fn list_until(
    docs: &dyn ReadModelStore,
    consumer: &str,
    partition: &str,
    prefix: &str,
    after: Option<String>,
    stop: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Value)>, StoreError> {
    const PAGE: usize = 500;
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let page = docs.list(consumer, partition, prefix, cursor.as_deref(), PAGE).await?;
        let full = page.len() == PAGE;
        for (key, value) in page {
            if stop(&key) {
                return Ok(out);
            }
            cursor = Some(key.clone());
            out.push((key, value));
        }
        if !full {
            return Ok(out);
        }
    }
}

/// Every document of a partition whose sort key starts with `prefix`.
pub(crate) async fn list_all(
    docs: &dyn ReadModelStore,
    consumer: &str,
    partition: &str,
    prefix: &str,
) -> Result<Vec<(String, Value)>, StoreError> {
    list_until(docs, consumer, partition, prefix, None, |_| false).await
}
