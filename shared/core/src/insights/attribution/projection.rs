//! The attribution projection: touchpoints per customer, orders by id and
//! by day, and each message's channel and campaign, recorded as facts.

use super::order;
use super::{
    message_partition, order_partition, OrderFact, Touchpoint, ACTIVITY_TYPES, ATTRIBUTION, DISCOUNT_SORT,
    MESSAGE_SORT, ORDERS_DAY_PREFIX, ORDER_SORT, TOUCH_PREFIX,
};
use crate::consumer::{Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::insights::{customer_of, data, day_key, encode, time_key};
use crate::ports::{ReadModelStore, ReadOp};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
struct DiscountRedeemedData {
    order_id: String,
    campaign_id: String,
    message_id: String,
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

#[async_trait]
impl Projection for AttributionProjection {
    fn name(&self) -> &'static str {
        ATTRIBUTION
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "OrderPlaced" | "OrderAmended" | "MessageSent" | "EmailOpened" | "EmailClicked" | "DiscountRedeemed"
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
            // The order redeemed a campaign's code (decision 0074): that
            // message, on its channel, is the order's one touchpoint.
            "DiscountRedeemed" => {
                let d: DiscountRedeemedData = data(event)?;
                let channel = match docs
                    .get(ATTRIBUTION, &message_partition(&d.message_id), MESSAGE_SORT)
                    .await?
                {
                    Some(v) => serde_json::from_value::<MessageMeta>(v).unwrap_or_default().channel,
                    None => String::new(),
                };
                let touch = Touchpoint {
                    at: event.occurred_at,
                    channel: if channel.is_empty() {
                        "discount-code".into()
                    } else {
                        channel
                    },
                    campaign: Some(d.campaign_id),
                    event_type: event.event_type.clone(),
                };
                Ok(vec![ReadOp::Put {
                    partition: order_partition(&d.order_id),
                    sort: DISCOUNT_SORT.into(),
                    body: encode(&touch)?,
                }])
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
