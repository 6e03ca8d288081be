//! The preview of a definition (decision 0083): how many active customers
//! it matches now, and a sample of them, without saving anything
//! (`POST /segments/{id}/preview`).
//!
//! There is no directory of customers: the active ones are found in one
//! pass over the stored events ([`EventStore::read_all`]), folding each
//! `customer-` stream's lifecycle events (registered, deactivated,
//! reactivated, erasure requested, erased). Each active customer's facts
//! are then gathered as the incremental evaluator gathers them
//! ([`super::facts::gather`]) and evaluated at `now`. The cost is one read
//! of every event plus one gathering per active customer (decision 0083).

use super::facts::gather;
use super::RuleSegment;
use crate::ports::{EventStore, ReadModelStore, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// Events read per page of the pass over the store.
const PAGE: usize = 1000;

/// What a draft definition would hold now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    /// Active customers it matches.
    pub count: u64,
    /// Up to the sample size of them, by customer id.
    pub sample: Vec<String>,
    /// Active customers evaluated.
    pub evaluated: u64,
}

/// Where a customer stands, as their stream's lifecycle events say.
fn lifecycle_step(active: bool, event_type: &str) -> bool {
    match event_type {
        "CustomerRegistered" | "CustomerReactivated" => true,
        "CustomerDeactivated" | "CustomerErasureRequested" | "CustomerErased" => false,
        _ => active,
    }
}

/// The ids of every active customer (registered, not deactivated, erased or
/// being erased), in id order: one pass over the stored events.
pub async fn active_customers(store: &dyn EventStore) -> Result<Vec<String>, StoreError> {
    let mut status: BTreeMap<String, bool> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.read_all(after.as_deref(), PAGE).await?;
        for e in &page.events {
            if let Some(id) = e.stream_id.strip_prefix("customer-") {
                let active = status.get(id).copied().unwrap_or(false);
                status.insert(id.to_string(), lifecycle_step(active, &e.event_type));
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(status
        .into_iter()
        .filter(|(_, active)| *active)
        .map(|(id, _)| id)
        .collect())
}

/// Evaluates `segment` at `now` over every active customer: how many match,
/// the first `sample` of them by id, and how many were evaluated.
pub async fn preview(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    segment: &RuleSegment,
    now: DateTime<Utc>,
    sample: usize,
) -> Result<Preview, StoreError> {
    let deps = segment.dependencies();
    let mut out = Preview {
        count: 0,
        sample: Vec::new(),
        evaluated: 0,
    };
    for customer_id in active_customers(store).await? {
        let facts = gather(store, docs, &customer_id, &deps, now).await?;
        out.evaluated += 1;
        if segment.evaluate(&facts, now).matches {
            out.count += 1;
            if out.sample.len() < sample {
                out.sample.push(customer_id);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::facts::gather;
    use super::*;
    use crate::assembly::AssembledGroups;
    use crate::consumer::ConsumerGroup;
    use crate::event::EventEnvelope;
    use crate::ports::{AppendRequest, ExpectedVersion};
    use crate::testing::{
        customer_id, raw_event, register_customers, InMemoryDeadLetters, InMemoryEventStore, InMemoryReadModels,
    };
    use chrono::Duration;
    use serde_json::json;
    use std::sync::Arc;

    fn now() -> DateTime<Utc> {
        crate::testing::test_time() + Duration::days(30)
    }

    struct World {
        store: Arc<InMemoryEventStore>,
        docs: Arc<InMemoryReadModels>,
    }

    impl World {
        async fn new(customers: usize) -> Self {
            let store = Arc::new(InMemoryEventStore::default());
            register_customers(store.clone(), customers).await;
            World {
                store,
                docs: Arc::new(InMemoryReadModels::default()),
            }
        }

        async fn append(&self, customer: &str, stream: &str, event_type: &str, days_ago: i64, data: serde_json::Value) {
            let mut e: EventEnvelope = raw_event(stream, event_type, data);
            e.customer_id = Some(customer.to_string());
            e.occurred_at = now() - Duration::days(days_ago);
            e.recorded_at = e.occurred_at;
            self.store
                .append(AppendRequest {
                    stream_id: stream.to_string(),
                    expected: ExpectedVersion::Any,
                    events: vec![e],
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await
                .expect("append");
        }

        async fn view(&self, customer: &str, product: &str, category: &str, days_ago: i64) {
            let stream = crate::customer::activity::activity_stream_id(customer);
            let data = json!({ "product_id": product, "name": product, "category": category });
            self.append(customer, &stream, "ProductViewed", days_ago, data).await;
        }

        /// The projector's read models (the customer-streams index above all).
        async fn project(&self) {
            let group = ConsumerGroup::projector(
                self.store.clone(),
                self.docs.clone(),
                Arc::new(InMemoryDeadLetters::default()),
                crate::testing::identifiers(),
            );
            let page = self.store.read_all(None, 10_000).await.expect("read all");
            group.handle_page(&page.events, now()).await.expect("projected");
        }
    }

    fn segment() -> RuleSegment {
        RuleSegment::from_yaml(
            "id: lamp-lookers\nname: Lamp lookers\nmatch:\n  all:\n    - performed: ProductViewed\n      where: [{path: category, op: equals, value: lighting}]\n      distinct: product_id\n      at_least: 3\n      within_days: 7\n    - not_performed: OrderPlaced\n      within_days: 30\n",
        )
        .expect("valid")
    }

    #[tokio::test]
    async fn facts_hold_the_listed_events_in_the_window_with_the_campaign_of_a_message() {
        let w = World::new(1).await;
        let c = customer_id(0);
        w.view(&c, "lamp", "lighting", 1).await;
        w.view(&c, "old-lamp", "lighting", 10).await;
        w.append(
            &c,
            &format!("order-o-{c}"),
            "OrderPlaced",
            40,
            json!({ "order_id": "o" }),
        )
        .await;
        w.append(
            &c,
            "message-m1",
            "MessageClaimed",
            3,
            json!({ "message_id": "m1", "campaign_id": "welcome" }),
        )
        .await;
        w.append(
            &c,
            "message-m1",
            "EmailOpened",
            2,
            json!({ "message_id": "m1", "customer_id": c }),
        )
        .await;
        w.project().await;

        let deps = segment().dependencies();
        let facts = gather(w.store.as_ref(), w.docs.as_ref(), &c, &deps, now())
            .await
            .expect("facts");
        let kinds: Vec<(&str, Option<&str>)> = facts
            .events
            .iter()
            .map(|e| (e.event_type.as_str(), e.properties["product_id"].as_str()))
            .collect();
        // The view 10 days ago is within 30 days (the longest window); the order 40 days ago is not.
        assert_eq!(
            kinds,
            [("ProductViewed", Some("old-lamp")), ("ProductViewed", Some("lamp"))]
        );

        let engaged = RuleSegment::from_yaml(
            "id: opened-welcome\nname: W\nmatch:\n  engaged: opened\n  campaign: welcome\n  within_days: 7\n",
        )
        .expect("valid");
        let facts = gather(w.store.as_ref(), w.docs.as_ref(), &c, &engaged.dependencies(), now())
            .await
            .expect("facts");
        assert_eq!(facts.events.len(), 1);
        assert_eq!(facts.events[0].properties["campaign_id"], "welcome");
        assert!(engaged.evaluate(&facts, now()).matches);
    }

    #[tokio::test]
    async fn the_preview_counts_and_samples_active_customers_only() {
        let w = World::new(4).await;
        let (a, b, c, d) = (customer_id(0), customer_id(1), customer_id(2), customer_id(3));
        for customer in [&a, &b, &c, &d] {
            for (n, product) in ["lamp", "shade", "bulb"].iter().enumerate() {
                w.view(customer, product, "lighting", n as i64).await;
            }
        }
        // b ordered 5 days ago; d left the shop.
        w.append(
            &b,
            &format!("order-o-{b}"),
            "OrderPlaced",
            5,
            json!({ "order_id": "o" }),
        )
        .await;
        w.project().await;
        w.append(&d, &crate::customer::stream_id(&d), "CustomerDeactivated", 0, json!({}))
            .await;

        let p = preview(w.store.as_ref(), w.docs.as_ref(), &segment(), now(), 1)
            .await
            .expect("preview");
        assert_eq!(p.evaluated, 3, "the deactivated customer is not evaluated");
        assert_eq!(p.count, 2, "a and c match; b ordered");
        assert_eq!(p.sample, [customer_id(0)]);
        assert_eq!(active_customers(w.store.as_ref()).await.expect("ids"), [a, b, c]);
    }
}
