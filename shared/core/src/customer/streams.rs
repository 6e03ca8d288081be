//! Which streams belong to a customer (decision 0020): every envelope names
//! its customer (`customer_id`), so [`CustomerStreamsProjection`] (in the
//! projector) keeps an index `customer → stream ids` of every stream
//! holding an event about them: their customer, activity and segment
//! streams, carts, orders, journey instances and message streams.
//! [`customer_streams`] reads it, together with the streams named after the
//! customer and the journey index and message log (which cover streams from
//! before the index existed). The export, the customer's history, erasure's
//! timer cancelling and the journeys' look-back read it.
//!
//! The names of other contexts' streams and read models come from
//! [`crate::vocabulary::streams`], so the customer context depends on none
//! of them.

use crate::consumer::{Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use crate::vocabulary::streams::{
    journey_stream_id, message_stream_id, segments_stream_id, JOURNEY_INDEX, MESSAGE_LOG,
};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The read model of the streams each customer has events in (partition: the
/// customer id, sort: the stream id).
pub const CUSTOMER_STREAMS: &str = "customer-streams";

/// Documents read per page.
const PAGE: usize = 500;

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
pub(crate) async fn list_all(
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
        super::stream_id(customer_id),
        super::activity::activity_stream_id(customer_id),
        segments_stream_id(customer_id),
    ];
    let mut others = BTreeSet::new();
    for (stream, _) in list_all(docs, CUSTOMER_STREAMS, customer_id, "").await? {
        others.insert(stream);
    }
    for (_, doc) in list_all(docs, JOURNEY_INDEX, customer_id, "").await? {
        if let Some(instance) = doc.get("instance_id").and_then(Value::as_str) {
            others.insert(journey_stream_id(instance));
        }
    }
    for (_, doc) in list_all(docs, MESSAGE_LOG, customer_id, "").await? {
        if let Some(message) = doc.get("message_id").and_then(Value::as_str) {
            others.insert(message_stream_id(message));
        }
    }
    let mut streams: Vec<String> = own.to_vec();
    streams.extend(others.into_iter().filter(|s| !own.contains(s)));
    Ok(streams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::InMemoryReadModels;
    use chrono::Utc;

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
