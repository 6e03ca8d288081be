//! Recommendations from the shop's own co-purchases (issue 19 item 5,
//! decision 0075; seed 000's `ProductAffinityDetected`).
//!
//! Two consumers of the projector, after the profile metrics, on each
//! `OrderDelivered`:
//! - the [`CoPurchaseProjection`] records the order's basket in the [`CO_PURCHASES`] read model: one
//!   document per (product, order) holding the order's distinct products,
//!   and the product's name and unit price as last delivered (`catalog`).
//!   Each basket document is written only by its order's stream, so the
//!   checkpoint per (consumer, stream) protects it; nothing is counted in
//!   place, so concurrent deliveries never race on a counter;
//! - the [`AffinityDetector`] reads the customer's category affinity (the profile metrics, the same
//!   shares as the `affinity-<category>` segments). When one category's
//!   share is above [`AFFINITY_THRESHOLD`] (seed: 0.7), it ranks the
//!   products bought together with the customer's products of that
//!   category ([`rank`]) and appends `ProductAffinityDetected` to the
//!   customer's `recommendations-<customer id>` stream, unless the last one
//!   for that category says the same (score and products): a redelivered
//!   event, or a delivery that changes nothing, appends nothing.
//!
//! [`latest_recommendations`] reads the newest recommended products back
//! (one stream read, strongly consistent): the channel puts them in a
//! marketing message's `data.recommendations` at send time.

use super::rules::AFFINITY_THRESHOLD;
use crate::aggregate::{AggregateError, AggregateService};
use crate::clock::{Clock, SystemClock};
use crate::commerce::{OrderAggregate, OrderItem};
use crate::consumer::{Projection, ProjectionError};
use crate::customer::metrics::{category_slug, profile_metrics};
use crate::event::{envelopes, Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::failure::{Classify, Failure, FailureKind};
use crate::ports::{AppendError, AppendRequest, EventStore, ExpectedVersion, ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The projection's name, and the read model of baskets and product names.
pub const CO_PURCHASES: &str = "co-purchases";
/// The consumer that appends `ProductAffinityDetected` (it writes no documents).
pub const AFFINITY_DETECTOR: &str = "affinity-detector";
/// At most this many products are recommended.
pub const TOP_N: usize = 3;
/// A product is recommended only when at least this many delivered orders
/// hold it together with one of the customer's products.
pub const MIN_CO_ORDERS: u64 = 2;
/// At most this many baskets are read per product of the customer.
pub const MAX_BASKETS_PER_PRODUCT: usize = 2000;
/// The distinct products of one order that are recorded (two documents
/// each, within one read-model commit).
pub const MAX_PRODUCTS_PER_ORDER: usize = 40;
/// The event type.
pub const PRODUCT_AFFINITY_DETECTED: &str = "ProductAffinityDetected";
/// The event types of the recommendations stream.
pub const AFFINITY_EVENT_TYPES: &[&str] = &[PRODUCT_AFFINITY_DETECTED];

const CATALOG: &str = "catalog";
const PAGE: usize = 500;

/// The stream of customer `id`'s affinity and recommendations.
pub fn recommendations_stream_id(customer_id: &str) -> String {
    format!("recommendations-{customer_id}")
}

fn product_partition(product_id: &str) -> String {
    format!("product#{product_id}")
}

/// A product recommended to a customer, as the shop last delivered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RecommendedProduct {
    pub product_id: String,
    pub name: String,
    /// Its unit price in the order that last delivered it (minor units).
    pub price_minor: i64,
}

/// A customer's affinity for a category, on their `recommendations-<id>` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum AffinityEvent {
    ProductAffinityDetected {
        customer_id: String,
        /// The category's slug, as in the `affinity-<category>` segment.
        category: String,
        /// The category's share of the quantities the customer bought (0 to 1).
        affinity_score: f64,
        /// The delivered order that led to it.
        order_id: String,
        /// Best first, at most [`TOP_N`]; none of them the customer bought.
        recommended_products: Vec<RecommendedProduct>,
    },
}

impl DomainEvent for AffinityEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// One delivered order's distinct products.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Basket {
    pub order_id: String,
    pub products: Vec<String>,
}

/// The co-purchase ranking: for each product, the number of distinct
/// orders (`baskets`) holding it together with at least one of `anchors`.
/// Products in `exclude` (what the customer already bought) and the
/// anchors themselves are left out, and so is a product with fewer than
/// [`MIN_CO_ORDERS`] such orders. Best first (more orders, then product id),
/// at most `top`.
pub fn rank(
    baskets: &[Basket],
    anchors: &BTreeSet<String>,
    exclude: &BTreeSet<String>,
    top: usize,
) -> Vec<(String, u64)> {
    let mut seen = BTreeSet::new();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for basket in baskets {
        if !seen.insert(basket.order_id.as_str()) || !basket.products.iter().any(|p| anchors.contains(p)) {
            continue;
        }
        let distinct: BTreeSet<&str> = basket.products.iter().map(String::as_str).collect();
        for p in distinct {
            if !anchors.contains(p) && !exclude.contains(p) {
                *counts.entry(p).or_insert(0) += 1;
            }
        }
    }
    let mut ranked: Vec<(String, u64)> = counts
        .into_iter()
        .filter(|(_, n)| *n >= MIN_CO_ORDERS)
        .map(|(p, n)| (p.to_string(), n))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(top);
    ranked
}

/// Why a recommendation did not finish; nothing half-done is left (the
/// append is atomic, and a retry finds what is still to do).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecommendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("an order of {customer_id} is unreadable: {reason}")]
    Order { customer_id: String, reason: String },
    #[error("recommendations of {customer_id}: {source}")]
    Append {
        customer_id: String,
        #[source]
        source: AppendError,
    },
    #[error("recommendations of {customer_id}: {source}")]
    Codec {
        customer_id: String,
        #[source]
        source: crate::event::EventCodecError,
    },
}

impl Classify for RecommendError {
    fn kind(&self) -> FailureKind {
        match self {
            RecommendError::Store(e) => e.kind(),
            RecommendError::Append { source, .. } => source.kind(),
            RecommendError::Order { .. } | RecommendError::Codec { .. } => FailureKind::Poison,
        }
    }
}

/// The items of a delivered order, as the event carries them.
#[derive(Deserialize)]
struct Delivered {
    order_id: String,
    items: Vec<OrderItem>,
}

/// The read-model writes of one delivered order: a basket document under
/// each of its products, and each product's name and price.
fn basket_ops(order_id: &str, items: &[OrderItem]) -> Vec<ReadOp> {
    let mut products: BTreeMap<&str, &OrderItem> = BTreeMap::new();
    for item in items {
        products.insert(item.product_id.as_str(), item);
    }
    let kept: Vec<(&str, &OrderItem)> = products.into_iter().take(MAX_PRODUCTS_PER_ORDER).collect();
    let basket = Basket {
        order_id: order_id.to_string(),
        products: kept.iter().map(|(p, _)| p.to_string()).collect(),
    };
    let mut ops = Vec::new();
    for (product, item) in &kept {
        ops.push(ReadOp::Put {
            partition: product_partition(product),
            sort: order_id.to_string(),
            body: serde_json::json!(basket),
        });
        ops.push(ReadOp::Put {
            partition: CATALOG.into(),
            sort: product.to_string(),
            body: serde_json::json!(RecommendedProduct {
                product_id: product.to_string(),
                name: item.name.clone(),
                price_minor: item.unit_price_minor,
            }),
        });
    }
    ops
}

/// The baskets recorded under `product` (at most [`MAX_BASKETS_PER_PRODUCT`]).
pub async fn baskets_of(docs: &dyn ReadModelStore, product: &str) -> Result<Vec<Basket>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = docs
            .list(CO_PURCHASES, &product_partition(product), "", after.as_deref(), PAGE)
            .await?;
        let done = page.len() < PAGE;
        after = page.last().map(|(k, _)| k.clone());
        for (_, v) in page {
            let basket: Basket = serde_json::from_value(v)
                .map_err(|e| StoreError::Failed(format!("co-purchase basket unreadable: {e}")))?;
            out.push(basket);
        }
        if done || out.len() >= MAX_BASKETS_PER_PRODUCT {
            out.truncate(MAX_BASKETS_PER_PRODUCT);
            return Ok(out);
        }
    }
}

/// A product's name and price as last delivered.
async fn catalog_entry(docs: &dyn ReadModelStore, product: &str) -> Result<Option<RecommendedProduct>, StoreError> {
    match docs.get(CO_PURCHASES, CATALOG, product).await? {
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| StoreError::Failed(format!("co-purchase catalog entry unreadable: {e}"))),
        None => Ok(None),
    }
}

/// Every item the customer ordered: their order streams (the customer-streams
/// index) read from the event store, and `current`'s items.
async fn bought_items(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    customer_id: &str,
    current: &[OrderItem],
) -> Result<Vec<OrderItem>, RecommendError> {
    let mut items = current.to_vec();
    let orders = AggregateService::<OrderAggregate, _>::borrowing(store, Arc::new(SystemClock));
    for stream in crate::customer::streams::customer_streams(docs, customer_id).await? {
        let Some(order_id) = crate::commerce::order::order_id_of(&stream) else {
            continue;
        };
        match orders.load(order_id).await {
            Ok(Some(order)) => items.extend(order.items),
            Ok(None) => {}
            Err(AggregateError::Store(e)) => return Err(e.into()),
            // An order that does not fold names no products to leave out;
            // it does not stop the customer's recommendations.
            Err(e) => tracing::warn!(customer_id, order_id, error = %e, "an order of the customer is unreadable"),
        }
    }
    Ok(items)
}

/// What the customer's affinity in `category` recommends: the products
/// bought with theirs of that category, named and priced from the catalog.
async fn recommend(
    docs: &dyn ReadModelStore,
    category: &str,
    bought: &[OrderItem],
) -> Result<Vec<RecommendedProduct>, StoreError> {
    let exclude: BTreeSet<String> = bought.iter().map(|i| i.product_id.clone()).collect();
    let anchors: BTreeSet<String> = bought
        .iter()
        .filter(|i| i.category.as_deref().and_then(category_slug).as_deref() == Some(category))
        .map(|i| i.product_id.clone())
        .collect();
    let mut baskets = Vec::new();
    for anchor in &anchors {
        baskets.extend(baskets_of(docs, anchor).await?);
    }
    let mut out = Vec::new();
    for (product, _) in rank(&baskets, &anchors, &exclude, TOP_N) {
        if let Some(entry) = catalog_entry(docs, &product).await? {
            out.push(entry);
        }
    }
    Ok(out)
}

/// The last `ProductAffinityDetected` of `category` on the stream, if any.
fn last_of(events: &[EventEnvelope], category: &str) -> Option<AffinityEvent> {
    events
        .iter()
        .rev()
        .filter(|e| e.event_type == PRODUCT_AFFINITY_DETECTED)
        .filter_map(|e| AffinityEvent::from_envelope(e).ok())
        .find(|e| matches!(e, AffinityEvent::ProductAffinityDetected { category: c, .. } if c == category))
}

/// Do two detections state the same facts (score and products)?
fn same_facts(a: &AffinityEvent, b: &AffinityEvent) -> bool {
    let (
        AffinityEvent::ProductAffinityDetected {
            affinity_score: sa,
            recommended_products: pa,
            ..
        },
        AffinityEvent::ProductAffinityDetected {
            affinity_score: sb,
            recommended_products: pb,
            ..
        },
    ) = (a, b);
    (sa - sb).abs() < 1e-9 && pa == pb
}

/// Appends `event` to the customer's stream unless its last detection of
/// the category says the same; returns what was appended.
async fn append_detection(
    store: &dyn EventStore,
    customer_id: &str,
    category: &str,
    event: AffinityEvent,
    cause: &EventEnvelope,
    clock: &dyn Clock,
) -> Result<Vec<EventEnvelope>, RecommendError> {
    let stream = recommendations_stream_id(customer_id);
    let meta = CommandMeta::caused_by(cause, Actor::system("recommendations"));
    let mut attempts = 0;
    loop {
        let loaded = store.load(&stream).await?;
        if last_of(&loaded.events, category).is_some_and(|last| same_facts(&last, &event)) {
            return Ok(Vec::new());
        }
        let events = envelopes(
            &stream,
            Some(customer_id),
            std::slice::from_ref(&event),
            &meta,
            clock.now(),
        )
        .map_err(|source| RecommendError::Codec {
            customer_id: customer_id.to_string(),
            source,
        })?;
        let expected = if loaded.version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exactly(loaded.version)
        };
        let request = AppendRequest {
            stream_id: stream.clone(),
            expected,
            events,
            reservations: Vec::new(),
            receipt: None,
        };
        match store.append(request).await {
            Ok(appended) => return Ok(appended.events),
            Err(AppendError::Conflict { .. }) if attempts < 3 => attempts += 1,
            Err(source) => {
                return Err(RecommendError::Append {
                    customer_id: customer_id.to_string(),
                    source,
                })
            }
        }
    }
}

/// After `delivered` (an `OrderDelivered` of `customer_id`): the customer's
/// affinity, and its detection with recommendations when a category's share
/// is above the threshold. Returns the events appended.
pub async fn detect_affinity(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    customer_id: &str,
    delivered: &EventEnvelope,
    clock: &dyn Clock,
) -> Result<Vec<EventEnvelope>, RecommendError> {
    let Delivered { order_id, items } =
        serde_json::from_value(delivered.data.clone()).map_err(|e| RecommendError::Order {
            customer_id: customer_id.to_string(),
            reason: format!("OrderDelivered {}: {e}", delivered.event_id),
        })?;
    let metrics = profile_metrics(docs, customer_id, clock.now()).await?;
    let Some((category, score)) = metrics
        .category_affinity
        .iter()
        .find(|(_, share)| **share > AFFINITY_THRESHOLD)
        .map(|(c, s)| (c.clone(), *s))
    else {
        return Ok(Vec::new());
    };
    let bought = bought_items(store, docs, customer_id, &items).await?;
    let recommended_products = recommend(docs, &category, &bought).await?;
    let event = AffinityEvent::ProductAffinityDetected {
        customer_id: customer_id.to_string(),
        category: category.clone(),
        affinity_score: score,
        order_id,
        recommended_products,
    };
    append_detection(store, customer_id, &category, event, delivered, clock).await
}

/// The products most recently recommended to `customer_id` (the newest
/// `ProductAffinityDetected` on their stream), none when there is none.
pub async fn latest_recommendations(
    store: &dyn EventStore,
    customer_id: &str,
) -> Result<Vec<RecommendedProduct>, StoreError> {
    let loaded = store.load(&recommendations_stream_id(customer_id)).await?;
    Ok(loaded
        .events
        .iter()
        .rev()
        .filter(|e| e.event_type == PRODUCT_AFFINITY_DETECTED)
        .find_map(|e| AffinityEvent::from_envelope(e).ok())
        .map(
            |AffinityEvent::ProductAffinityDetected {
                 recommended_products, ..
             }| recommended_products,
        )
        .unwrap_or_default())
}

/// Records each delivered order's basket and its products' names and
/// prices (decision 0075).
pub struct CoPurchaseProjection;

#[async_trait]
impl Projection for CoPurchaseProjection {
    fn name(&self) -> &'static str {
        CO_PURCHASES
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "OrderDelivered"
    }

    async fn project(&self, event: &EventEnvelope, _docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let delivered: Delivered = serde_json::from_value(event.data.clone())
            .map_err(|e| ProjectionError::Invalid(format!("OrderDelivered {}: {e}", event.event_id)))?;
        Ok(basket_ops(&delivered.order_id, &delivered.items))
    }
}

/// Detects the customer's affinity after each delivery and appends
/// `ProductAffinityDetected` (decision 0075); it writes no documents.
pub struct AffinityDetector {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
}

impl AffinityDetector {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        AffinityDetector { store, clock }
    }
}

#[async_trait]
impl Projection for AffinityDetector {
    fn name(&self) -> &'static str {
        AFFINITY_DETECTOR
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type == "OrderDelivered"
    }

    /// It appends `ProductAffinityDetected` and keeps no documents: a
    /// rebuild passes over it (decision 0093).
    fn decides(&self) -> bool {
        true
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        // An order of an anonymous profile has a basket but no affinity.
        let Some(customer) = event.customer_id.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(Vec::new());
        };
        match detect_affinity(self.store.as_ref(), docs, customer, event, self.clock.as_ref()).await {
            Ok(_) => Ok(Vec::new()),
            Err(RecommendError::Store(e)) => Err(ProjectionError::Store(e)),
            Err(e) => Err(ProjectionError::Failed(Failure::from_error(AFFINITY_DETECTOR, e))),
        }
    }
}

/// The data of a message with the customer's recommendations: `data` with
/// `recommendations` set to `products`, unless the data has one already or
/// there is none to give (a non-object `data` is left as it is).
pub fn with_recommendations(mut data: Value, products: &[RecommendedProduct]) -> Value {
    if products.is_empty() {
        return data;
    }
    if let Some(object) = data.as_object_mut() {
        if !object.contains_key("recommendations") {
            object.insert("recommendations".into(), serde_json::json!(products));
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basket(order: &str, products: &[&str]) -> Basket {
        Basket {
            order_id: order.into(),
            products: products.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn set(products: &[&str]) -> BTreeSet<String> {
        products.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn products_bought_with_the_anchor_in_more_orders_rank_first() {
        let baskets = [
            basket("o1", &["a", "b", "c"]),
            basket("o2", &["a", "b"]),
            basket("o3", &["a", "c"]),
            basket("o4", &["a", "b", "d"]),
            basket("o5", &["a", "d"]),
            // Without the anchor: does not count for b.
            basket("o6", &["b", "c"]),
            basket("o7", &["b", "c"]),
        ];
        let ranked = rank(&baskets, &set(&["a"]), &set(&["a"]), 3);
        assert_eq!(
            ranked,
            [("b".to_string(), 3), ("c".to_string(), 2), ("d".to_string(), 2)]
        );
    }

    #[test]
    fn what_the_customer_bought_is_never_recommended() {
        let baskets = [basket("o1", &["a", "b", "c"]), basket("o2", &["a", "b", "c"])];
        let ranked = rank(&baskets, &set(&["a"]), &set(&["a", "b"]), 3);
        assert_eq!(ranked, [("c".to_string(), 2)]);
    }

    #[test]
    fn one_order_is_not_enough_and_an_order_counts_once() {
        // o1 is read under both anchors a and e: it counts once for b.
        let baskets = [
            basket("o1", &["a", "e", "b"]),
            basket("o1", &["a", "e", "b"]),
            basket("o2", &["a", "c"]),
            basket("o3", &["e", "c"]),
        ];
        let ranked = rank(&baskets, &set(&["a", "e"]), &set(&[]), 3);
        assert_eq!(ranked, [("c".to_string(), 2)], "b is in one order only");
    }

    #[test]
    fn at_most_top_n_ties_by_product_id() {
        let baskets = [
            basket("o1", &["a", "z", "y", "x", "w"]),
            basket("o2", &["a", "w", "x", "y", "z"]),
        ];
        let ranked = rank(&baskets, &set(&["a"]), &set(&[]), TOP_N);
        assert_eq!(
            ranked.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["w", "x", "y"]
        );
    }

    #[test]
    fn a_delivered_order_writes_its_basket_under_each_product() {
        let item = |id: &str, price: i64| OrderItem {
            product_id: id.into(),
            name: format!("Product {id}"),
            category: Some("toys".into()),
            quantity: 2,
            unit_price_minor: price,
        };
        let ops = basket_ops("o1", &[item("b", 500), item("a", 300), item("a", 300)]);
        assert_eq!(ops.len(), 4, "two products, each a basket and a catalog entry");
        let ReadOp::Put { partition, sort, body } = &ops[0] else {
            panic!("a put")
        };
        assert_eq!((partition.as_str(), sort.as_str()), ("product#a", "o1"));
        assert_eq!(body["products"], serde_json::json!(["a", "b"]));
        let ReadOp::Put { partition, sort, body } = &ops[3] else {
            panic!("a put")
        };
        assert_eq!((partition.as_str(), sort.as_str()), ("catalog", "b"));
        assert_eq!(body["price_minor"], 500);
    }

    #[test]
    fn recommendations_fill_the_data_unless_it_has_its_own() {
        let products = [RecommendedProduct {
            product_id: "b".into(),
            name: "B".into(),
            price_minor: 100,
        }];
        let filled = with_recommendations(serde_json::json!({ "order_id": "o1" }), &products);
        assert_eq!(filled["recommendations"][0]["product_id"], "b");
        let own = serde_json::json!({ "recommendations": [] });
        assert_eq!(with_recommendations(own.clone(), &products), own);
        let none = serde_json::json!({ "order_id": "o1" });
        assert_eq!(with_recommendations(none.clone(), &[]), none);
    }
}
