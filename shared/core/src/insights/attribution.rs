//! Multi-touch attribution (seed 000, "Multi-Touch Attribution"): which
//! touchpoints (marketing messages sent, opened and clicked; visits carrying UTM
//! parameters) led to an order, under five models.
//!
//! Credits are whole basis points (10 000 = 100 %) and values whole minor
//! units, each split by largest remainder so that they sum to exactly
//! 100 % and exactly the order total (ties go to the earlier touchpoint).

use super::{customer_of, data, day_key, days, decode_doc, encode, list_until, time_key};
use crate::consumer::{Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The projection's name (checkpoints and documents).
pub const ATTRIBUTION: &str = "attribution";

/// Touchpoints older than this before an order are not credited.
pub const LOOKBACK_DAYS: i64 = 30;

/// The time-decay model's half-life: a touchpoint 7 days before the order
/// weighs half as much as one at the order.
pub const HALF_LIFE_DAYS: i64 = 7;

/// 100 % in basis points.
pub const FULL_CREDIT: i64 = 10_000;

/// Orders without any touchpoint in the lookback window go to this channel.
pub const DIRECT: &str = "direct";

const TOUCH_PREFIX: &str = "touch#";
const ORDER_SORT: &str = "order";
const ORDERS_DAY_PREFIX: &str = "orders-day#";
const MESSAGE_SORT: &str = "meta";

/// Activity event types (decision 0012) whose `utm` makes them a touchpoint.
pub const ACTIVITY_TYPES: &[&str] = &[
    "ProductViewed",
    "PageViewed",
    "SearchPerformed",
    "ProductCompared",
    "ReviewRead",
    "VideoWatched",
    "CheckoutStepCompleted",
    "SessionStarted",
    // The rest of the Segment e-commerce spec's browsing and checkout
    // (decision 0052).
    "ProductListViewed",
    "ProductClicked",
    "ShoppingCartViewed",
    "CheckoutStepViewed",
    "CouponChanged",
    "ProductWishlisted",
    "ProductReviewed",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    FirstTouch,
    LastTouch,
    Linear,
    TimeDecay,
    PositionBased,
}

impl Model {
    pub const ALL: [Model; 5] = [
        Model::FirstTouch,
        Model::LastTouch,
        Model::Linear,
        Model::TimeDecay,
        Model::PositionBased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Model::FirstTouch => "first-touch",
            Model::LastTouch => "last-touch",
            Model::Linear => "linear",
            Model::TimeDecay => "time-decay",
            Model::PositionBased => "position-based",
        }
    }

    pub fn parse(s: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// One contact with the customer before an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Touchpoint {
    pub at: DateTime<Utc>,
    /// `email`, `sms`, `push`, or the UTM medium (else source) of a visit.
    pub channel: String,
    #[serde(default)]
    pub campaign: Option<String>,
    pub event_type: String,
}

/// An order as attribution sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFact {
    pub order_id: String,
    pub customer_id: String,
    pub placed_at: DateTime<Utc>,
    pub total_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct MessageMeta {
    channel: String,
    #[serde(default)]
    campaign_id: Option<String>,
    /// A transactional message (a verification, a receipt) is no touchpoint.
    #[serde(default)]
    transactional: bool,
}

#[derive(Deserialize)]
struct OrderPlacedData {
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    total_minor: i64,
    #[serde(default)]
    currency: String,
}

#[derive(Deserialize)]
struct MessageSentData {
    message_id: String,
    channel: String,
    #[serde(default)]
    campaign_id: Option<String>,
    #[serde(default)]
    category: Option<String>,
}

#[derive(Deserialize)]
struct MessageFeedbackData {
    message_id: String,
}

#[derive(Deserialize, Default)]
struct Utm {
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    medium: Option<String>,
    #[serde(default)]
    campaign: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// The touchpoint of an activity event's `utm`: channel = medium, else
/// source; campaign = campaign. None without either.
pub fn utm_touchpoint(event_type: &str, at: DateTime<Utc>, utm: &Value) -> Option<Touchpoint> {
    let utm: Utm = serde_json::from_value(utm.clone()).ok()?;
    let channel = non_empty(utm.medium).or(non_empty(utm.source))?;
    Some(Touchpoint {
        at,
        channel,
        campaign: non_empty(utm.campaign),
        event_type: event_type.to_string(),
    })
}

/// Records touchpoints per customer (sort: time, event id), orders by id and
/// by day, and each message's channel and campaign (its opens and clicks,
/// later on the same stream, read them).
pub struct AttributionProjection;

fn touch_op(customer: &str, event: &EventEnvelope, touch: &Touchpoint) -> Result<ReadOp, ProjectionError> {
    Ok(ReadOp::Put {
        partition: customer.to_string(),
        sort: format!("{TOUCH_PREFIX}{}#{}", time_key(event.occurred_at), event.event_id),
        body: encode(touch)?,
    })
}

fn message_partition(message_id: &str) -> String {
    format!("message#{message_id}")
}

fn order_partition(order_id: &str) -> String {
    format!("order#{order_id}")
}

#[async_trait]
impl Projection for AttributionProjection {
    fn name(&self) -> &'static str {
        ATTRIBUTION
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "OrderPlaced" | "OrderAmended" | "MessageSent" | "EmailOpened" | "EmailClicked"
        ) || ACTIVITY_TYPES.contains(&event_type)
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let Some(customer) = customer_of(event) else {
            tracing::warn!(event_id = %event.event_id, "attribution event without a customer: skipped");
            return Ok(Vec::new());
        };
        match event.event_type.as_str() {
            "OrderPlaced" => {
                let d: OrderPlacedData = data(event)?;
                let order_id = non_empty(d.order_id)
                    .or_else(|| event.stream_id.strip_prefix("order-").map(str::to_string))
                    .ok_or_else(|| {
                        ProjectionError::Invalid(format!("OrderPlaced {} has no order_id", event.event_id))
                    })?;
                let fact = OrderFact {
                    order_id: order_id.clone(),
                    customer_id: customer,
                    placed_at: event.occurred_at,
                    total_minor: d.total_minor,
                    currency: d.currency,
                };
                let body = encode(&fact)?;
                Ok(vec![
                    ReadOp::Put {
                        partition: order_partition(&order_id),
                        sort: ORDER_SORT.into(),
                        body: body.clone(),
                    },
                    ReadOp::Put {
                        partition: day_key(ORDERS_DAY_PREFIX, event.occurred_at.date_naive()),
                        sort: order_id,
                        body,
                    },
                ])
            }
            // An amended order is worth its new total (decision 0055).
            "OrderAmended" => {
                let d: OrderPlacedData = data(event)?;
                let order_id = non_empty(d.order_id)
                    .or_else(|| event.stream_id.strip_prefix("order-").map(str::to_string))
                    .unwrap_or_default();
                let Some(mut fact) = order(docs, &order_id).await? else {
                    return Ok(Vec::new());
                };
                fact.total_minor = d.total_minor;
                let body = encode(&fact)?;
                Ok(vec![
                    ReadOp::Put {
                        partition: order_partition(&order_id),
                        sort: ORDER_SORT.into(),
                        body: body.clone(),
                    },
                    ReadOp::Put {
                        partition: day_key(ORDERS_DAY_PREFIX, fact.placed_at.date_naive()),
                        sort: order_id,
                        body,
                    },
                ])
            }
            "MessageSent" => {
                let d: MessageSentData = data(event)?;
                let meta = MessageMeta {
                    channel: d.channel.clone(),
                    campaign_id: d.campaign_id.clone(),
                    transactional: d.category.as_deref() == Some("transactional"),
                };
                let touch = Touchpoint {
                    at: event.occurred_at,
                    channel: d.channel,
                    campaign: d.campaign_id,
                    event_type: event.event_type.clone(),
                };
                let mut ops = vec![ReadOp::Put {
                    partition: message_partition(&d.message_id),
                    sort: MESSAGE_SORT.into(),
                    body: encode(&meta)?,
                }];
                if !meta.transactional {
                    ops.push(touch_op(&customer, event, &touch)?);
                }
                Ok(ops)
            }
            "EmailOpened" | "EmailClicked" => {
                let d: MessageFeedbackData = data(event)?;
                // MessageSent comes first on the same stream, so it is here.
                let meta: MessageMeta = match docs
                    .get(ATTRIBUTION, &message_partition(&d.message_id), MESSAGE_SORT)
                    .await?
                {
                    Some(v) => serde_json::from_value(v).unwrap_or_default(),
                    None => MessageMeta::default(),
                };
                if meta.transactional {
                    return Ok(Vec::new());
                }
                let touch = Touchpoint {
                    at: event.occurred_at,
                    channel: if meta.channel.is_empty() {
                        "email".into()
                    } else {
                        meta.channel
                    },
                    campaign: meta.campaign_id,
                    event_type: event.event_type.clone(),
                };
                Ok(vec![touch_op(&customer, event, &touch)?])
            }
            _ => match event
                .data
                .get("utm")
                .and_then(|utm| utm_touchpoint(&event.event_type, event.occurred_at, utm))
            {
                Some(touch) => Ok(vec![touch_op(&customer, event, &touch)?]),
                None => Ok(Vec::new()),
            },
        }
    }
}

/// Splits `total` over `weights` in proportion, in whole units, exactly:
/// each gets the floor of its share, then the units left over go one each
/// to the largest remainders (the earlier on a tie). All-zero weights give
/// everything to the first.
pub fn allocate(total: i64, weights: &[u128]) -> Vec<i64> {
    if weights.is_empty() {
        return Vec::new();
    }
    let sum: u128 = weights.iter().sum();
    if sum == 0 {
        let mut out = vec![0; weights.len()];
        out[0] = total;
        return out;
    }
    let negative = total < 0;
    let magnitude = total.unsigned_abs() as u128;
    let mut shares: Vec<u128> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    for (i, w) in weights.iter().enumerate() {
        // magnitude < 2^63 and weights < 2^64 each: the product fits.
        let product = magnitude * w;
        shares.push(product / sum);
        remainders.push((product % sum, i));
    }
    let given: u128 = shares.iter().sum();
    let mut left = magnitude - given;
    // Largest remainder first; on a tie, the earlier touchpoint.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
        .into_iter()
        .map(|s| {
            let s = s as i64;
            if negative {
                -s
            } else {
                s
            }
        })
        .collect()
}

/// Time-decay weights are exact integers: 2^(-age / half-life) scaled by 2^40.
const DECAY_SCALE: f64 = (1u64 << 40) as f64;

/// Each touchpoint's weight under `model` (touchpoints oldest first).
pub fn weights(model: Model, touches: &[Touchpoint], order_at: DateTime<Utc>) -> Vec<u128> {
    let n = touches.len();
    if n == 0 {
        return Vec::new();
    }
    match model {
        Model::FirstTouch => (0..n).map(|i| u128::from(i == 0)).collect(),
        Model::LastTouch => (0..n).map(|i| u128::from(i == n - 1)).collect(),
        Model::Linear => vec![1; n],
        Model::TimeDecay => {
            let half_life = Duration::days(HALF_LIFE_DAYS).num_milliseconds() as f64;
            touches
                .iter()
                .map(|t| {
                    let age = (order_at - t.at).num_milliseconds().max(0) as f64;
                    ((2f64.powf(-age / half_life) * DECAY_SCALE).round() as u128).max(1)
                })
                .collect()
        }
        // The seed's rules: one touchpoint takes it all; two share the 40 and
        // 40 equally (50/50, so credits reach 100 %); otherwise 40 % first,
        // 40 % last and 20 % split evenly over the middle.
        Model::PositionBased => match n {
            1 => vec![1],
            2 => vec![1, 1],
            _ => {
                let middle = (n - 2) as u128;
                (0..n)
                    .map(|i| if i == 0 || i == n - 1 { 2 * middle } else { 1 })
                    .collect()
            }
        },
    }
}

/// What one touchpoint earned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TouchCredit {
    pub credit_bp: i64,
    pub value_minor: i64,
}

/// Credit summed over a channel or a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Credit {
    /// The channel, or the campaign (`None`: touchpoints without a campaign).
    pub key: Option<String>,
    /// Percent (two decimals): `credit_bp` / 100.
    pub credit: f64,
    pub credit_bp: i64,
    pub value_minor: i64,
    pub touches: u64,
}

/// One order under one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAttribution {
    pub model: Model,
    /// Per touchpoint, in the order of the touchpoints.
    pub touches: Vec<TouchCredit>,
    pub channels: Vec<Credit>,
    pub campaigns: Vec<Credit>,
}

fn group(touches: &[Touchpoint], credits: &[TouchCredit], key: impl Fn(&Touchpoint) -> Option<String>) -> Vec<Credit> {
    let mut by: BTreeMap<Option<String>, (i64, i64, u64)> = BTreeMap::new();
    for (t, c) in touches.iter().zip(credits) {
        let entry = by.entry(key(t)).or_default();
        entry.0 += c.credit_bp;
        entry.1 += c.value_minor;
        entry.2 += 1;
    }
    // A channel no model credits (first- and last-touch) is left out.
    by.into_iter()
        .filter(|(_, (credit_bp, value_minor, _))| *credit_bp != 0 || *value_minor != 0)
        .map(|(key, (credit_bp, value_minor, touches))| Credit {
            key,
            credit: credit_bp as f64 / 100.0,
            credit_bp,
            value_minor,
            touches,
        })
        .collect()
}

/// Attributes an order of `total_minor` placed at `order_at` to `touches`
/// (oldest first, all before the order). No touchpoint: all to `direct`.
pub fn attribute(model: Model, touches: &[Touchpoint], order_at: DateTime<Utc>, total_minor: i64) -> ModelAttribution {
    if touches.is_empty() {
        let direct = Credit {
            key: Some(DIRECT.into()),
            credit: 100.0,
            credit_bp: FULL_CREDIT,
            value_minor: total_minor,
            touches: 0,
        };
        return ModelAttribution {
            model,
            touches: Vec::new(),
            channels: vec![direct],
            campaigns: vec![Credit {
                key: None,
                credit: 100.0,
                credit_bp: FULL_CREDIT,
                value_minor: total_minor,
                touches: 0,
            }],
        };
    }
    let w = weights(model, touches, order_at);
    let credits: Vec<TouchCredit> = allocate(FULL_CREDIT, &w)
        .into_iter()
        .zip(allocate(total_minor, &w))
        .map(|(credit_bp, value_minor)| TouchCredit { credit_bp, value_minor })
        .collect();
    ModelAttribution {
        model,
        channels: group(touches, &credits, |t| Some(t.channel.clone())),
        campaigns: group(touches, &credits, |t| t.campaign.clone()),
        touches: credits,
    }
}

/// Touchpoints of the lookback window before an order (inclusive of the
/// order's instant), oldest first.
pub fn window(order_at: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (order_at - Duration::days(LOOKBACK_DAYS), order_at)
}

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
    let (from, to) = window(order.placed_at);
    let touches = customer_touchpoints(docs, &order.customer_id, from, to).await?;
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
        for (_, v) in super::list_all(docs, ATTRIBUTION, &day_key(ORDERS_DAY_PREFIX, day), "").await? {
            let order: OrderFact = decode_doc("order", v)?;
            if order.placed_at < from || order.placed_at >= to {
                continue;
            }
            let (start, end) = window(order.placed_at);
            let touches = customer_touchpoints(docs, &order.customer_id, start, end).await?;
            let a = attribute(model, &touches, order.placed_at, order.total_minor);
            orders.push((order, a));
        }
    }
    Ok(summarise(model, from, to, &orders))
}
