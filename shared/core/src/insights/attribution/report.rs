//! Reading attribution: an order's under every model, and a period's
//! report under one, computed from the recorded facts when read.

use super::{
    attribute, order_partition, window, Credit, Model, ModelAttribution, OrderFact, Touchpoint, ATTRIBUTION,
    DISCOUNT_SORT, FULL_CREDIT, LOOKBACK_DAYS, ORDERS_DAY_PREFIX, ORDER_SORT, TOUCH_PREFIX,
};
use crate::insights::{day_key, days, decode_doc, list_all, list_until, time_key};
use crate::ports::{ReadModelStore, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The customer's touchpoints in `[from, to]`, oldest first.
pub async fn touchpoints(
    docs: &dyn ReadModelStore,
    customer_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Touchpoint>, StoreError> {
    let after = format!("{TOUCH_PREFIX}{}", time_key(from));
    // Every key of instant `to` is below `to` + "$" ('#' < '$').
    let end = format!("{TOUCH_PREFIX}{}$", time_key(to));
    list_until(docs, ATTRIBUTION, customer_id, TOUCH_PREFIX, Some(after), |key| {
        key >= end.as_str()
    })
    .await?
    .into_iter()
    .map(|(_, v)| decode_doc("touchpoint", v))
    .collect()
}

/// The touchpoints in `[from, to]` of a customer and of the anonymous
/// profiles merged into them (identity resolution: the visits before they
/// identified count), oldest first.
pub async fn customer_touchpoints(
    docs: &dyn ReadModelStore,
    customer_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Touchpoint>, StoreError> {
    let mut touches = touchpoints(docs, customer_id, from, to).await?;
    if let Some(profile) = crate::customer::views::customer_profile(docs, customer_id).await? {
        for merged in &profile.customer.merged_profiles {
            touches.extend(touchpoints(docs, merged, from, to).await?);
        }
        touches.sort_by_key(|t| t.at);
    }
    Ok(touches)
}

/// The touchpoints an order's credit goes to. An order that redeemed a
/// campaign's discount code (decision 0074) has one: the message that
/// carried the code, so every model credits its campaign with the whole
/// order. Any other order's are the customer's touchpoints in its window.
pub async fn order_touchpoints(docs: &dyn ReadModelStore, order: &OrderFact) -> Result<Vec<Touchpoint>, StoreError> {
    if let Some(v) = docs
        .get(ATTRIBUTION, &order_partition(&order.order_id), DISCOUNT_SORT)
        .await?
    {
        return Ok(vec![decode_doc("discount touchpoint", v)?]);
    }
    let (from, to) = window(order.placed_at);
    customer_touchpoints(docs, &order.customer_id, from, to).await
}

/// An order's attribution under every model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderAttribution {
    pub order: OrderFact,
    pub lookback_days: i64,
    pub touchpoints: Vec<Touchpoint>,
    pub models: Vec<ModelAttribution>,
}

pub async fn order(docs: &dyn ReadModelStore, order_id: &str) -> Result<Option<OrderFact>, StoreError> {
    docs.get(ATTRIBUTION, &order_partition(order_id), ORDER_SORT)
        .await?
        .map(|v| decode_doc("order", v))
        .transpose()
}

/// The attribution of an order under every model (None: unknown order).
pub async fn order_attribution(
    docs: &dyn ReadModelStore,
    order_id: &str,
) -> Result<Option<OrderAttribution>, StoreError> {
    let Some(order) = order(docs, order_id).await? else {
        return Ok(None);
    };
    let touches = order_touchpoints(docs, &order).await?;
    let models = Model::ALL
        .into_iter()
        .map(|m| attribute(m, &touches, order.placed_at, order.total_minor))
        .collect();
    Ok(Some(OrderAttribution {
        order,
        lookback_days: LOOKBACK_DAYS,
        touchpoints: touches,
        models,
    }))
}

/// Credit over many orders for one channel or campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summed {
    pub key: Option<String>,
    /// Orders credited, fractionally (credit_bp / 10 000 summed).
    pub conversions: f64,
    pub credit_bp: i64,
    /// Value credited per currency.
    pub value_minor: BTreeMap<String, i64>,
    pub touches: u64,
}

/// The attribution report of a period under one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributionReport {
    pub model: Model,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub lookback_days: i64,
    pub orders: u64,
    /// Order totals per currency.
    pub revenue_minor: BTreeMap<String, i64>,
    pub channels: Vec<Summed>,
    pub campaigns: Vec<Summed>,
}

fn add(into: &mut BTreeMap<Option<String>, Summed>, credits: &[Credit], currency: &str) {
    for c in credits {
        let s = into.entry(c.key.clone()).or_insert_with(|| Summed {
            key: c.key.clone(),
            conversions: 0.0,
            credit_bp: 0,
            value_minor: BTreeMap::new(),
            touches: 0,
        });
        s.credit_bp += c.credit_bp;
        s.conversions = s.credit_bp as f64 / FULL_CREDIT as f64;
        *s.value_minor.entry(currency.to_string()).or_insert(0) += c.value_minor;
        s.touches += c.touches;
    }
}

/// Sums the attribution of the orders placed in `[from, to)` under `model`.
pub fn summarise(
    model: Model,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    orders: &[(OrderFact, ModelAttribution)],
) -> AttributionReport {
    let mut channels = BTreeMap::new();
    let mut campaigns = BTreeMap::new();
    let mut revenue: BTreeMap<String, i64> = BTreeMap::new();
    for (order, a) in orders {
        *revenue.entry(order.currency.clone()).or_insert(0) += order.total_minor;
        add(&mut channels, &a.channels, &order.currency);
        add(&mut campaigns, &a.campaigns, &order.currency);
    }
    AttributionReport {
        model,
        from,
        to,
        lookback_days: LOOKBACK_DAYS,
        orders: orders.len() as u64,
        revenue_minor: revenue,
        channels: channels.into_values().collect(),
        campaigns: campaigns.into_values().collect(),
    }
}

/// The attribution report of the orders placed in `[from, to)`.
pub async fn attribution_report(
    docs: &dyn ReadModelStore,
    model: Model,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<AttributionReport, StoreError> {
    let mut orders = Vec::new();
    for day in days(from, to) {
        for (_, v) in list_all(docs, ATTRIBUTION, &day_key(ORDERS_DAY_PREFIX, day), "").await? {
            let order: OrderFact = decode_doc("order", v)?;
            if order.placed_at < from || order.placed_at >= to {
                continue;
            }
            let touches = order_touchpoints(docs, &order).await?;
            let a = attribute(model, &touches, order.placed_at, order.total_minor);
            orders.push((order, a));
        }
    }
    Ok(summarise(model, from, to, &orders))
}
