//! Export (GDPR Art. 20, issue 7, decision 0020): everything stored about a
//! customer as one JSON document, written piece by piece to an
//! [`ExportSink`] so a long history never sits in memory whole.
//!
//! Which streams belong to a customer: every envelope names its customer
//! (`customer_id`), so [`CustomerStreamsProjection`] (in the projector) keeps
//! an index `customer → stream ids` of every stream holding an event about
//! them: their customer, activity and segment streams, carts, orders,
//! journey instances and message streams. [`customer_streams`] reads it,
//! together with the streams named after the customer and the journey index
//! and message log (which cover streams from before the index existed).
//!
//! The events are read through the store the caller gives, normally the
//! decrypting [`super::EncryptingEventStore`]: personal fields come out in
//! plain text, or as `[erased]` once the customer was erased.

use crate::consumer::{Projection, ProjectionError};
use crate::customer::views;
use crate::customer::CustomerService;
use crate::event::EventEnvelope;
use crate::ports::{EventStore, ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The read model of the streams each customer has events in (partition: the
/// customer id, sort: the stream id).
pub const CUSTOMER_STREAMS: &str = "customer-streams";

/// The version of the export document's shape.
pub const EXPORT_FORMAT: &str = "crm-customer-export/1";

/// Events and documents read per page.
const PAGE: usize = 500;

/// Bytes collected before they go to the sink.
const CHUNK: usize = 64 * 1024;

/// Indexes, for every event naming a customer, the stream it is in. One
/// document per (customer, stream), written the first time; later events of
/// the stream cost a read and write nothing.
pub struct CustomerStreamsProjection;

#[async_trait]
impl Projection for CustomerStreamsProjection {
    fn name(&self) -> &'static str {
        CUSTOMER_STREAMS
    }

    fn handles(&self, _event_type: &str) -> bool {
        true
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let Some(customer) = event.customer_id.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(Vec::new());
        };
        if docs.get(CUSTOMER_STREAMS, customer, &event.stream_id).await?.is_some() {
            return Ok(Vec::new());
        }
        Ok(vec![ReadOp::Put {
            partition: customer.to_string(),
            sort: event.stream_id.clone(),
            body: json!({
                "stream_id": event.stream_id,
                "first_version": event.version,
                "first_type": event.event_type,
                "first_at": event.occurred_at,
            }),
        }])
    }
}

/// Every document of one partition of `namespace` whose sort key starts with
/// `prefix`, page by page.
async fn list_all(
    docs: &dyn ReadModelStore,
    namespace: &str,
    partition: &str,
    prefix: &str,
) -> Result<Vec<(String, Value)>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = docs.list(namespace, partition, prefix, after.as_deref(), PAGE).await?;
        let done = page.len() < PAGE;
        after = page.last().map(|(k, _)| k.clone());
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// The streams holding events about `customer_id`: the ones named after them
/// first (customer, activity, segments), then every other stream of the
/// [`CUSTOMER_STREAMS`] index, the journey index and the message log, each
/// once, in stream-id order.
pub async fn customer_streams(docs: &dyn ReadModelStore, customer_id: &str) -> Result<Vec<String>, StoreError> {
    let own = [
        crate::customer::stream_id(customer_id),
        crate::customer::activity::activity_stream_id(customer_id),
        crate::segments::stream_id(customer_id),
    ];
    let mut others = BTreeSet::new();
    for (stream, _) in list_all(docs, CUSTOMER_STREAMS, customer_id, "").await? {
        others.insert(stream);
    }
    for (_, doc) in list_all(docs, crate::journey::engine::JOURNEY_INDEX, customer_id, "").await? {
        if let Some(instance) = doc.get("instance_id").and_then(Value::as_str) {
            others.insert(crate::journey::instance::stream_id(instance));
        }
    }
    for (_, doc) in list_all(docs, crate::messaging::delivery::MESSAGE_LOG, customer_id, "").await? {
        if let Some(message) = doc.get("message_id").and_then(Value::as_str) {
            others.insert(crate::messaging::events::message_stream(message));
        }
    }
    let mut streams: Vec<String> = own.to_vec();
    streams.extend(others.into_iter().filter(|s| !own.contains(s)));
    Ok(streams)
}

/// Why an export stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("customer {0} not found")]
    NotFound(String),
    #[error("export could not be encoded: {0}")]
    Encode(String),
    /// The reader went away (the HTTP client disconnected).
    #[error("the export's reader went away")]
    Closed,
    #[error("writing the export: {0}")]
    Write(String),
}

impl From<crate::customer::CommandError> for ExportError {
    fn from(e: crate::customer::CommandError) -> Self {
        match e {
            crate::customer::CommandError::Store(e) => ExportError::Store(e),
            other => ExportError::Store(StoreError::Failed(other.to_string())),
        }
    }
}

/// Where an export's JSON text goes, chunk by chunk (an HTTP body, a file).
#[async_trait]
pub trait ExportSink: Send {
    async fn write(&mut self, chunk: String) -> Result<(), ExportError>;
}

/// Collects JSON text and hands it to the sink in chunks of about [`CHUNK`] bytes.
struct Writer<'a> {
    sink: &'a mut dyn ExportSink,
    buf: String,
}

impl Writer<'_> {
    async fn raw(&mut self, text: &str) -> Result<(), ExportError> {
        self.buf.push_str(text);
        if self.buf.len() >= CHUNK {
            let chunk = std::mem::take(&mut self.buf);
            self.sink.write(chunk).await?;
        }
        Ok(())
    }

    async fn value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ExportError> {
        let text = serde_json::to_string(value).map_err(|e| ExportError::Encode(e.to_string()))?;
        self.raw(&text).await
    }

    /// `"name":` preceded by a comma unless it is the first field.
    async fn field<T: Serialize + ?Sized>(&mut self, name: &str, value: &T, first: bool) -> Result<(), ExportError> {
        let key = serde_json::to_string(name).map_err(|e| ExportError::Encode(e.to_string()))?;
        self.raw(&format!("{}{key}:", if first { "" } else { "," })).await?;
        self.value(value).await
    }

    async fn finish(mut self) -> Result<(), ExportError> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.sink.write(chunk).await?;
        }
        Ok(())
    }
}

/// What an export wrote (for the CLI's summary).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub streams: usize,
    pub events: usize,
}

/// Writes everything stored about `customer_id` to `sink` as one JSON
/// object:
///
/// ```text
/// { "format", "customer_id", "exported_at", "status",
///   "customer" (the 360 projection, null when it has none), "metrics",
///   "segments", "consents" {"current", "history"}, "journeys",
///   "messages" (the send log), "timeline" (every entry),
///   "streams": [{"stream_id", "events": [...]}, ...], "event_count" }
/// ```
///
/// Events are read through `customers`' store, page by page. The customer
/// must exist on the write side ([`ExportError::NotFound`] otherwise, before
/// anything is written). An error after the first chunk leaves the document
/// unfinished: the caller must make that visible (abort the HTTP body, exit
/// non-zero).
pub async fn export_customer(
    customers: &CustomerService,
    docs: &dyn ReadModelStore,
    customer_id: &str,
    sink: &mut dyn ExportSink,
) -> Result<ExportSummary, ExportError> {
    let Some(customer) = customers.load(customer_id).await? else {
        return Err(ExportError::NotFound(customer_id.to_string()));
    };
    let now: DateTime<Utc> = customers.now();
    let store: &dyn EventStore = customers.store().as_ref();
    let profile = views::customer_profile(docs, customer_id).await?;
    let metrics = crate::customer::metrics::profile_metrics(docs, customer_id, now).await?;
    let segments = crate::segments::customer_segments(docs, customer_id).await?;
    let current: Vec<Value> = crate::consent::ledger::current_consents(docs, customer_id)
        .await?
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
            v["active"] = json!(r.is_active_at(now));
            v
        })
        .collect();
    let history = crate::consent::ledger::consent_history(docs, customer_id).await?;
    let journeys: Vec<Value> = list_all(docs, crate::journey::engine::JOURNEY_INDEX, customer_id, "")
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .filter(|v| v.get("instance_id").is_some())
        .collect();
    let messages: Vec<Value> = list_all(docs, crate::messaging::delivery::MESSAGE_LOG, customer_id, "")
        .await?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let streams = customer_streams(docs, customer_id).await?;

    let mut w = Writer {
        sink,
        buf: String::with_capacity(CHUNK + 4096),
    };
    w.raw("{").await?;
    w.field("format", EXPORT_FORMAT, true).await?;
    w.field("customer_id", customer_id, false).await?;
    w.field("exported_at", &now, false).await?;
    w.field("status", &customer.status, false).await?;
    w.field("customer", &profile, false).await?;
    w.field("metrics", &metrics, false).await?;
    w.field("segments", &segments, false).await?;
    w.field("consents", &json!({ "current": current, "history": history }), false)
        .await?;
    w.field("journeys", &journeys, false).await?;
    w.field("messages", &messages, false).await?;

    // The timeline, page by page.
    w.raw(",\"timeline\":[").await?;
    let mut after = 0;
    let mut first = true;
    loop {
        let page = views::timeline(docs, customer_id, after, PAGE).await?;
        for entry in &page {
            if !first {
                w.raw(",").await?;
            }
            first = false;
            w.value(entry).await?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = last.version,
            _ => break,
        }
    }
    w.raw("]").await?;

    // Every stream, each page by page.
    let mut summary = ExportSummary::default();
    w.raw(",\"streams\":[").await?;
    for stream in &streams {
        let mut after = 0;
        let mut opened = false;
        loop {
            let page = store.read_stream(stream, after, PAGE).await?;
            if page.is_empty() && opened {
                break;
            }
            if page.is_empty() {
                // A stream the index names that holds nothing (any more): skipped.
                break;
            }
            if !opened {
                if summary.streams > 0 {
                    w.raw(",").await?;
                }
                w.raw("{").await?;
                w.field("stream_id", stream, true).await?;
                w.raw(",\"events\":[").await?;
                opened = true;
                summary.streams += 1;
            } else {
                w.raw(",").await?;
            }
            for (n, event) in page.iter().enumerate() {
                if n > 0 {
                    w.raw(",").await?;
                }
                w.value(event).await?;
            }
            summary.events += page.len();
            let last = page.last().map(|e| e.version).unwrap_or(after);
            if page.len() < PAGE {
                break;
            }
            after = last;
        }
        if opened {
            w.raw("]}").await?;
        }
    }
    w.raw("]").await?;
    w.field("event_count", &summary.events, false).await?;
    w.raw("}").await?;
    w.finish().await?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::InMemoryReadModels;

    fn event(stream: &str, customer: Option<&str>, version: u64) -> EventEnvelope {
        let id = uuid::Uuid::now_v7();
        EventEnvelope {
            event_id: id,
            stream_id: stream.into(),
            version,
            event_type: "ItemAddedToCart".into(),
            schema_version: 1,
            customer_id: customer.map(str::to_string),
            occurred_at: Utc::now(),
            recorded_at: Utc::now(),
            causation_id: None,
            correlation_id: id,
            actor: "test".into(),
            data: json!({}),
        }
    }

    #[tokio::test]
    async fn the_index_names_each_stream_of_a_customer_once() {
        let docs = InMemoryReadModels::default();
        let p = CustomerStreamsProjection;
        let ops = p
            .project(&event("cart-1", Some("c-1"), 1), &docs)
            .await
            .expect("project");
        assert_eq!(ops.len(), 1);
        docs.commit(CUSTOMER_STREAMS, "cart-1", 0, 1, ops)
            .await
            .expect("commit");
        let again = p
            .project(&event("cart-1", Some("c-1"), 2), &docs)
            .await
            .expect("project");
        assert!(again.is_empty(), "a stream already indexed writes nothing");
        let none = p.project(&event("campaigns", None, 1), &docs).await.expect("project");
        assert!(none.is_empty(), "an event naming no customer is not indexed");
        let streams = customer_streams(&docs, "c-1").await.expect("streams");
        assert_eq!(streams, vec!["customer-c-1", "activity-c-1", "segments-c-1", "cart-1"]);
    }
}
