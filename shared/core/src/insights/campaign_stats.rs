//! Campaign stats: customers who entered a campaign, its messages
//! (requested, sent, suppressed), and the orders that followed a message
//! within the conversion window, with their revenue.

use super::{customer_of, data, decode_doc, encode, list_all, time_key};
use crate::consumer::{Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The projection's name (checkpoints and documents).
pub const CAMPAIGN_STATS: &str = "campaign-stats";

/// An order counts as a conversion of a campaign when it is placed within
/// this many days after one of the campaign's messages was sent to the customer.
pub const DEFAULT_CONVERSION_WINDOW_DAYS: i64 = 7;

const ENTERED: &str = "entered#";
const REQUESTED: &str = "requested#";
const SENT: &str = "sent#";
const SUPPRESSED: &str = "suppressed#";
const ORDER: &str = "order#";

fn campaign_partition(campaign_id: &str) -> String {
    format!("campaign#{campaign_id}")
}

fn customer_partition(customer_id: &str) -> String {
    format!("customer#{customer_id}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Sent {
    customer_id: String,
    at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CustomerOrder {
    order_id: String,
    at: DateTime<Utc>,
    total_minor: i64,
    currency: String,
}

#[derive(Deserialize)]
struct WithCampaign {
    campaign_id: String,
    #[serde(default)]
    instance_id: Option<String>,
    #[serde(default)]
    message_id: Option<String>,
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

/// Records per campaign who entered and each message's fate, and per
/// customer their orders; conversions are matched when read.
pub struct CampaignStatsProjection;

#[async_trait]
impl Projection for CampaignStatsProjection {
    fn name(&self) -> &'static str {
        CAMPAIGN_STATS
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "JourneyStarted"
                | "MessageRequested"
                | "MessageSent"
                | "MessageSuppressed"
                | "OrderPlaced"
                | "OrderAmended"
        )
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let customer = customer_of(event).unwrap_or_default();
        if event.event_type == "OrderAmended" {
            // The conversion is worth the order's new total (decision 0055).
            let d: OrderPlacedData = data(event)?;
            let order_id = d.order_id.filter(|o| !o.is_empty());
            let orders = list_all(docs, CAMPAIGN_STATS, &customer_partition(&customer), ORDER).await?;
            for (sort, body) in orders {
                let mut order: CustomerOrder = decode_doc("order", body)?;
                if Some(&order.order_id) == order_id.as_ref() {
                    order.total_minor = d.total_minor;
                    return Ok(vec![ReadOp::Put {
                        partition: customer_partition(&customer),
                        sort,
                        body: encode(&order)?,
                    }]);
                }
            }
            return Ok(Vec::new());
        }
        if event.event_type == "OrderPlaced" {
            if customer.is_empty() {
                return Ok(Vec::new());
            }
            let d: OrderPlacedData = data(event)?;
            let order_id = d
                .order_id
                .filter(|o| !o.is_empty())
                .or_else(|| event.stream_id.strip_prefix("order-").map(str::to_string))
                .unwrap_or_else(|| event.event_id.to_string());
            let order = CustomerOrder {
                order_id: order_id.clone(),
                at: event.occurred_at,
                total_minor: d.total_minor,
                currency: d.currency,
            };
            return Ok(vec![ReadOp::Put {
                partition: customer_partition(&customer),
                sort: format!("{ORDER}{}#{order_id}", time_key(event.occurred_at)),
                body: encode(&order)?,
            }]);
        }
        let d: WithCampaign = data(event)?;
        let partition = campaign_partition(&d.campaign_id);
        let id = |what: Option<String>| {
            what.filter(|s| !s.is_empty())
                .unwrap_or_else(|| event.event_id.to_string())
        };
        let (sort, body) = match event.event_type.as_str() {
            "JourneyStarted" => (
                format!("{ENTERED}{}", id(d.instance_id)),
                encode(&Sent {
                    customer_id: customer,
                    at: event.occurred_at,
                })?,
            ),
            "MessageRequested" => (format!("{REQUESTED}{}", id(d.message_id)), serde_json::json!({})),
            "MessageSent" => (
                format!("{SENT}{}", id(d.message_id)),
                encode(&Sent {
                    customer_id: customer,
                    at: event.occurred_at,
                })?,
            ),
            _ => (
                format!("{SUPPRESSED}{}", id(d.message_id)),
                serde_json::json!({ "reason": event.data.get("reason") }),
            ),
        };
        Ok(vec![ReadOp::Put { partition, sort, body }])
    }
}

/// Message counts of a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    pub requested: u64,
    pub sent: u64,
    pub suppressed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignStats {
    pub campaign_id: String,
    /// Journeys started (JourneyStarted) for the campaign.
    pub entered: u64,
    pub messages: MessageCounts,
    pub conversion_window_days: i64,
    /// Orders placed within the window after a message sent to the customer (each once).
    pub conversions: u64,
    /// The conversions' totals per currency.
    pub revenue_minor: BTreeMap<String, i64>,
}

/// The stats of a campaign with a conversion window of `window_days`.
pub async fn campaign_stats(
    docs: &dyn ReadModelStore,
    campaign_id: &str,
    window_days: i64,
) -> Result<CampaignStats, StoreError> {
    let partition = campaign_partition(campaign_id);
    let count = |prefix: &'static str| {
        let partition = partition.clone();
        async move {
            list_all(docs, CAMPAIGN_STATS, &partition, prefix)
                .await
                .map(|v| v.len() as u64)
        }
    };
    let entered = count(ENTERED).await?;
    let requested = count(REQUESTED).await?;
    let suppressed = count(SUPPRESSED).await?;
    let sent: Vec<Sent> = list_all(docs, CAMPAIGN_STATS, &partition, SENT)
        .await?
        .into_iter()
        .map(|(_, v)| decode_doc("sent message", v))
        .collect::<Result<_, _>>()?;
    let window = Duration::days(window_days);
    let mut by_customer: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for s in &sent {
        by_customer.entry(s.customer_id.as_str()).or_default().push(s.at);
    }
    let mut converted = BTreeSet::new();
    let mut revenue: BTreeMap<String, i64> = BTreeMap::new();
    for (customer, sends) in by_customer {
        let orders: Vec<CustomerOrder> = list_all(docs, CAMPAIGN_STATS, &customer_partition(customer), ORDER)
            .await?
            .into_iter()
            .map(|(_, v)| decode_doc("order", v))
            .collect::<Result<_, _>>()?;
        for order in orders {
            let follows = sends.iter().any(|sent| order.at > *sent && order.at <= *sent + window);
            if follows && converted.insert(order.order_id.clone()) {
                *revenue.entry(order.currency.clone()).or_insert(0) += order.total_minor;
            }
        }
    }
    Ok(CampaignStats {
        campaign_id: campaign_id.to_string(),
        entered,
        messages: MessageCounts {
            requested,
            sent: sent.len() as u64,
            suppressed,
        },
        conversion_window_days: window_days,
        conversions: converted.len() as u64,
        revenue_minor: revenue,
    })
}
