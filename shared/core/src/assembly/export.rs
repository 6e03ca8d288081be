//! Export (GDPR Art. 20, issue 7, decision 0020): everything stored about a
//! customer as one JSON document, written piece by piece to an
//! [`ExportSink`] so a long history never sits in memory whole.
//!
//! Which streams belong to a customer: [`customer_streams`], the index the
//! projector keeps ([`crate::customer::streams`]).
//!
//! The export reads every context (the customer, its metrics, segments,
//! consents, journeys, messages), so it lives in the assembly layer above
//! them all (docs/architecture.md, decision 0058).
//!
//! The events are read through the store the caller gives, normally the
//! decrypting [`crate::privacy::EncryptingEventStore`]: personal fields come out in
//! plain text, or as `[erased]` once the customer was erased.

use crate::customer::streams::list_all;
use crate::customer::views;
use crate::customer::CustomerService;
use crate::ports::{EventStore, ReadModelStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

pub use crate::customer::streams::{customer_streams, CustomerStreamsProjection, CUSTOMER_STREAMS};

/// The version of the export document's shape.
pub const EXPORT_FORMAT: &str = "crm-customer-export/1";

/// Events and documents read per page.
const PAGE: usize = 500;

/// Bytes collected before they go to the sink.
const CHUNK: usize = 64 * 1024;

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
