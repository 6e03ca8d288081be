//! Campaign stats: customers who entered a campaign, its messages
//! (requested, sent, suppressed), and the orders that followed a message
//! within the conversion window, with their revenue.
//!
//! Experiments (decision 0081): per arm of each experiment (a split's
//! variants, the campaign's holdout and the customers it did not hold out)
//! the instances that entered it, the messages sent in it, the instances
//! converted (an order within the window after the instance started, so
//! that a holdout, which is sent nothing, compares with the rest), their
//! revenue, the conversion rate with its 95 % Wilson score interval, and
//! the lift over the holdout: the difference of the two rates with
//! Newcombe's hybrid score interval.

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
const ARM: &str = "arm#";

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

/// An instance's arm of an experiment (decision 0081).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ArmDoc {
    experiment: String,
    arm: String,
}

/// A requested message's instance (absent in lines written before 0081).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct RequestedDoc {
    #[serde(default)]
    instance_id: Option<String>,
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
                | "JourneyVariantAssigned"
                | "JourneyHoldoutAssigned"
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
        if let Some(arm) = arm_of(event) {
            let instance = event.stream_id.strip_prefix("journey-").unwrap_or(&event.stream_id);
            return Ok(vec![ReadOp::Put {
                partition,
                sort: format!("{ARM}{instance}#{}", arm.experiment),
                body: encode(&arm)?,
            }]);
        }
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
            "MessageRequested" => (
                format!("{REQUESTED}{}", id(d.message_id)),
                encode(&RequestedDoc {
                    instance_id: d.instance_id,
                })?,
            ),
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

/// The arm a `JourneyVariantAssigned` or `JourneyHoldoutAssigned` puts
/// its instance in.
fn arm_of(event: &EventEnvelope) -> Option<ArmDoc> {
    let text = |key: &str| {
        event
            .data
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    match event.event_type.as_str() {
        "JourneyVariantAssigned" => Some(ArmDoc {
            experiment: text("experiment")?,
            arm: text("variant")?,
        }),
        "JourneyHoldoutAssigned" => Some(ArmDoc {
            experiment: HOLDOUT_EXPERIMENT.to_string(),
            arm: HOLDOUT_ARM.to_string(),
        }),
        _ => None,
    }
}

/// The experiment under which a campaign's holdout is reported: the id
/// journeys record it under (`journey::experiment::HOLDOUT` is this one).
pub const HOLDOUT_EXPERIMENT: &str = "holdout";
/// The holdout's arm.
pub const HOLDOUT_ARM: &str = "holdout";
/// The arm of the customers a holdout did not take.
pub const TREATED_ARM: &str = "treated";

/// z for a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// A confidence interval of a proportion or a difference of two.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The Wilson score interval of `successes` out of `n` at `z` (decision
/// 0081); `[0, 1]` for `n = 0`.
pub fn wilson(successes: u64, n: u64, z: f64) -> Interval {
    if n == 0 {
        return Interval { low: 0.0, high: 1.0 };
    }
    let n_f = n as f64;
    let p = successes.min(n) as f64 / n_f;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n_f);
    let spread = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    let denominator = 1.0 + z2 / n_f;
    // At 0 (or n) successes the bound is exactly 0 (or 1); rounding in
    // `centre - spread` would leave it a few ulps off.
    Interval {
        low: if successes == 0 {
            0.0
        } else {
            ((centre - spread) / denominator).max(0.0)
        },
        high: if successes >= n {
            1.0
        } else {
            ((centre + spread) / denominator).min(1.0)
        },
    }
}

/// The difference `x1/n1 − x2/n2` and Newcombe's hybrid score interval of
/// it (method 10 of Newcombe 1998), built from each rate's Wilson interval.
pub fn difference(x1: u64, n1: u64, x2: u64, n2: u64, z: f64) -> (f64, Interval) {
    let rate = |x: u64, n: u64| if n == 0 { 0.0 } else { x.min(n) as f64 / n as f64 };
    let (p1, p2) = (rate(x1, n1), rate(x2, n2));
    let (a, b) = (wilson(x1, n1, z), wilson(x2, n2, z));
    let d = p1 - p2;
    (
        d,
        Interval {
            low: d - ((p1 - a.low).powi(2) + (b.high - p2).powi(2)).sqrt(),
            high: d + ((a.high - p1).powi(2) + (p2 - b.low).powi(2)).sqrt(),
        },
    )
}

/// An arm's lift over the campaign's holdout (decision 0081).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lift {
    /// The arm's conversion rate minus the holdout's.
    pub difference: f64,
    /// Newcombe's hybrid score 95 % interval of the difference: the lift is
    /// significant at the 5 % level when it excludes 0.
    pub interval: Interval,
    /// The difference over the holdout's rate; absent while that is 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relative: Option<f64>,
}

/// One arm of an experiment (decision 0081).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    /// The split's experiment id, or `holdout` for the campaign's holdout.
    pub experiment: String,
    /// The variant's id; for the holdout experiment `holdout` or `treated`
    /// (every instance the holdout did not take).
    pub arm: String,
    /// Instances assigned to the arm.
    pub entered: u64,
    /// Messages of the campaign sent to instances of the arm.
    pub sent: u64,
    /// Instances with an order within the window after they started.
    pub converted: u64,
    /// Those orders' totals per currency (each order once per arm).
    pub revenue_minor: BTreeMap<String, i64>,
    /// `converted / entered` (0 when none entered).
    pub conversion_rate: f64,
    /// The Wilson score 95 % interval of the rate.
    pub interval: Interval,
    /// Against the campaign's holdout; absent without one, and on the
    /// holdout itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lift_over_holdout: Option<Lift>,
}

/// Message counts of a campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    pub requested: u64,
    pub sent: u64,
    pub suppressed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Per arm of each experiment and the holdout (decision 0081), by
    /// experiment then arm; empty for a campaign without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub experiments: Vec<ArmStats>,
}

/// A campaign's suppressed messages by reason (`no-consent`,
/// `suppressed`, `frequency-cap`, ...), for a broadcast's stats (decision 0084).
pub async fn suppressed_by_reason(
    docs: &dyn ReadModelStore,
    campaign_id: &str,
) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut out = BTreeMap::new();
    for (_, body) in list_all(docs, CAMPAIGN_STATS, &campaign_partition(campaign_id), SUPPRESSED).await? {
        let reason = body
            .get("reason")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        *out.entry(reason).or_insert(0) += 1;
    }
    Ok(out)
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
    let sent_lines = list_all(docs, CAMPAIGN_STATS, &partition, SENT).await?;
    let sent_ids: Vec<String> = sent_lines
        .iter()
        .map(|(sort, _)| sort.trim_start_matches(SENT).to_string())
        .collect();
    let sent: Vec<Sent> = sent_lines
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
        experiments: experiments(docs, &partition, &sent_ids, window).await?,
    })
}

/// Who entered when, and whose orders followed, per arm (decision 0081).
async fn experiments(
    docs: &dyn ReadModelStore,
    partition: &str,
    sent_ids: &[String],
    window: Duration,
) -> Result<Vec<ArmStats>, StoreError> {
    let arms = list_all(docs, CAMPAIGN_STATS, partition, ARM).await?;
    if arms.is_empty() {
        return Ok(Vec::new());
    }
    // instance → (customer, started at)
    let mut entered: BTreeMap<String, Sent> = BTreeMap::new();
    for (sort, body) in list_all(docs, CAMPAIGN_STATS, partition, ENTERED).await? {
        entered.insert(sort.trim_start_matches(ENTERED).to_string(), decode_doc("entry", body)?);
    }
    // (experiment, arm) → instances
    let mut members: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut held_out = BTreeSet::new();
    for (sort, body) in arms {
        let arm: ArmDoc = decode_doc("arm", body)?;
        let instance = sort
            .trim_start_matches(ARM)
            .rsplit_once('#')
            .map_or(String::new(), |(i, _)| i.to_string());
        if arm.experiment == HOLDOUT_EXPERIMENT {
            held_out.insert(instance.clone());
        }
        members.entry((arm.experiment, arm.arm)).or_default().insert(instance);
    }
    if !held_out.is_empty() {
        let treated = entered.keys().filter(|i| !held_out.contains(*i)).cloned().collect();
        members.insert((HOLDOUT_EXPERIMENT.to_string(), TREATED_ARM.to_string()), treated);
    }
    // message → instance (one listing, not a read per message), then the
    // messages sent per instance
    let mut instance_of: BTreeMap<String, String> = BTreeMap::new();
    for (sort, body) in list_all(docs, CAMPAIGN_STATS, partition, REQUESTED).await? {
        let requested: RequestedDoc = decode_doc("requested message", body)?;
        if let Some(instance) = requested.instance_id {
            instance_of.insert(sort.trim_start_matches(REQUESTED).to_string(), instance);
        }
    }
    let mut sent_by_instance: BTreeMap<String, u64> = BTreeMap::new();
    for instance in sent_ids.iter().filter_map(|m| instance_of.get(m)) {
        *sent_by_instance.entry(instance.clone()).or_insert(0) += 1;
    }
    // instance → the orders within the window after its start
    let mut orders_of: BTreeMap<String, Vec<CustomerOrder>> = BTreeMap::new();
    let mut by_customer: BTreeMap<String, Vec<CustomerOrder>> = BTreeMap::new();
    for (instance, entry) in &entered {
        if !by_customer.contains_key(&entry.customer_id) {
            let orders: Vec<CustomerOrder> =
                list_all(docs, CAMPAIGN_STATS, &customer_partition(&entry.customer_id), ORDER)
                    .await?
                    .into_iter()
                    .map(|(_, v)| decode_doc("order", v))
                    .collect::<Result<_, _>>()?;
            by_customer.insert(entry.customer_id.clone(), orders);
        }
        let following: Vec<CustomerOrder> = by_customer
            .get(&entry.customer_id)
            .into_iter()
            .flatten()
            .filter(|o| o.at > entry.at && o.at <= entry.at + window)
            .cloned()
            .collect();
        orders_of.insert(instance.clone(), following);
    }
    let mut out: Vec<ArmStats> = members
        .into_iter()
        .map(|((experiment, arm), instances)| {
            let mut orders = BTreeSet::new();
            let mut revenue: BTreeMap<String, i64> = BTreeMap::new();
            let mut converted = 0;
            for instance in &instances {
                let following = orders_of.get(instance).map(Vec::as_slice).unwrap_or_default();
                if !following.is_empty() {
                    converted += 1;
                }
                for o in following {
                    if orders.insert(o.order_id.clone()) {
                        *revenue.entry(o.currency.clone()).or_insert(0) += o.total_minor;
                    }
                }
            }
            let n = instances.len() as u64;
            ArmStats {
                sent: instances.iter().filter_map(|i| sent_by_instance.get(i)).sum(),
                entered: n,
                converted,
                revenue_minor: revenue,
                conversion_rate: if n == 0 { 0.0 } else { converted as f64 / n as f64 },
                interval: wilson(converted, n, Z95),
                lift_over_holdout: None,
                experiment,
                arm,
            }
        })
        .collect();
    let holdout = out
        .iter()
        .find(|a| a.experiment == HOLDOUT_EXPERIMENT && a.arm == HOLDOUT_ARM)
        .map(|h| (h.converted, h.entered, h.conversion_rate));
    if let Some((x0, n0, rate0)) = holdout {
        for arm in out
            .iter_mut()
            .filter(|a| a.arm != HOLDOUT_ARM || a.experiment != HOLDOUT_EXPERIMENT)
        {
            let (d, interval) = difference(arm.converted, arm.entered, x0, n0, Z95);
            arm.lift_over_holdout = Some(Lift {
                difference: d,
                interval,
                relative: (rate0 > 0.0).then(|| d / rate0),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod interval_tests {
    //! The interval maths against the published worked examples (Newcombe
    //! 1998, "Two-sided confidence intervals for the single proportion",
    //! Table I, and "Interval estimation for the difference between
    //! independent proportions", Table II, method 10), to four places.

    use super::*;

    fn close(found: f64, expected: f64) {
        assert!((found - expected).abs() < 5e-5, "{found} is not {expected}");
    }

    #[test]
    fn wilson_matches_newcombes_examples() {
        for (x, n, low, high) in [
            (81, 263, 0.2553, 0.3662),
            (15, 148, 0.0624, 0.1605),
            (0, 20, 0.0, 0.1611),
            (1, 29, 0.0061, 0.1718),
        ] {
            let i = wilson(x, n, Z95);
            close(i.low, low);
            close(i.high, high);
        }
        let all = wilson(20, 20, Z95);
        close(all.high, 1.0);
        close(all.low, 1.0 - 0.1611);
        assert_eq!(wilson(0, 0, Z95), Interval { low: 0.0, high: 1.0 });
    }

    #[test]
    fn the_difference_interval_matches_newcombes_method_10() {
        for ((x1, n1, x2, n2), (d, low, high)) in [
            ((56, 70, 48, 80), (0.2, 0.0524, 0.3339)),
            ((9, 10, 3, 10), (0.6, 0.1705, 0.8090)),
            ((5, 56, 0, 29), (0.0893, -0.0381, 0.1926)),
        ] {
            let (found, i) = difference(x1, n1, x2, n2, Z95);
            close(found, d);
            close(i.low, low);
            close(i.high, high);
        }
        // Swapping the arms mirrors the interval.
        let (d, i) = difference(48, 80, 56, 70, Z95);
        close(d, -0.2);
        close(i.low, -0.3339);
        close(i.high, -0.0524);
    }
}
