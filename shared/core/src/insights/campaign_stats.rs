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
//!
//! Each order is recorded twice: under its customer (`customer#<id>`) and
//! under its day (`orders#<YYYY-MM-DD>`). Matching a campaign's messages (or
//! entrants) with the orders that followed reads whichever is fewer: each
//! recipient's orders, or every order of the days the window spans
//! (decision 0081, addendum).

use super::{customer_of, data, day_key, decode_doc, encode, list_all, time_key};
use crate::consumer::{Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
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
/// The partition prefix of the orders of a day: `orders#<YYYY-MM-DD>`.
const DAY_ORDERS: &str = "orders#";

fn campaign_partition(campaign_id: &str) -> String {
    format!("campaign#{campaign_id}")
}

fn customer_partition(customer_id: &str) -> String {
    format!("customer#{customer_id}")
}

/// An order's line among the orders of its day: its partition and sort key.
fn day_line(order: &CustomerOrder) -> (String, String) {
    (
        day_key(DAY_ORDERS, order.at.date_naive()),
        format!("{}#{}", time_key(order.at), order.order_id),
    )
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

/// An order among the orders of its day, with its customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DayOrder {
    customer_id: String,
    #[serde(flatten)]
    order: CustomerOrder,
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
                    let (day, day_sort) = day_line(&order);
                    return Ok(vec![
                        ReadOp::Put {
                            partition: customer_partition(&customer),
                            sort,
                            body: encode(&order)?,
                        },
                        ReadOp::Put {
                            partition: day,
                            sort: day_sort,
                            body: encode(&DayOrder {
                                customer_id: customer.clone(),
                                order,
                            })?,
                        },
                    ]);
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
            let (day, day_sort) = day_line(&order);
            return Ok(vec![
                ReadOp::Put {
                    partition: customer_partition(&customer),
                    sort: format!("{ORDER}{}#{order_id}", time_key(event.occurred_at)),
                    body: encode(&order)?,
                },
                ReadOp::Put {
                    partition: day,
                    sort: day_sort,
                    body: encode(&DayOrder {
                        customer_id: customer,
                        order,
                    })?,
                },
            ]);
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

/// What the campaign list shows of a campaign (decision 0070): its
/// entrants, its sends, and the conversions within the window with their
/// revenue, counted exactly as [`campaign_stats`] counts them, without the
/// message fates and the experiments (which match every entrant's orders).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignSummary {
    pub campaign_id: String,
    /// Journeys started (JourneyStarted) for the campaign.
    pub entered: u64,
    /// Messages sent (MessageSent).
    pub sent: u64,
    pub conversion_window_days: i64,
    /// Orders placed within the window after a message sent to the customer (each once).
    pub conversions: u64,
    /// The conversions' totals per currency.
    pub revenue_minor: BTreeMap<String, i64>,
}

/// The summary of a campaign with a conversion window of `window_days`.
pub async fn campaign_summary(
    docs: &dyn ReadModelStore,
    campaign_id: &str,
    window_days: i64,
) -> Result<CampaignSummary, StoreError> {
    let partition = campaign_partition(campaign_id);
    let entered = list_all(docs, CAMPAIGN_STATS, &partition, ENTERED).await?.len() as u64;
    let sent = sent_messages(docs, &partition).await?;
    let (conversions, revenue_minor) = conversions(docs, &sent, Duration::days(window_days)).await?;
    Ok(CampaignSummary {
        campaign_id: campaign_id.to_string(),
        entered,
        sent: sent.len() as u64,
        conversion_window_days: window_days,
        conversions,
        revenue_minor,
    })
}

/// The stats of a campaign with a conversion window of `window_days`.
pub async fn campaign_stats(
    docs: &dyn ReadModelStore,
    campaign_id: &str,
    window_days: i64,
) -> Result<CampaignStats, StoreError> {
    campaign_stats_for(docs, campaign_id, window_days, false).await
}

/// The stats of a campaign whose current definition has a holdout when
/// `holdout` is true: its two arms are shown even before anyone was held
/// out (the holdout with 0 entered, the treated arm with every entrant).
pub async fn campaign_stats_for(
    docs: &dyn ReadModelStore,
    campaign_id: &str,
    window_days: i64,
    holdout: bool,
) -> Result<CampaignStats, StoreError> {
    let partition = campaign_partition(campaign_id);
    let window = Duration::days(window_days);
    let mut entered: BTreeMap<String, Sent> = BTreeMap::new();
    for (sort, body) in list_all(docs, CAMPAIGN_STATS, &partition, ENTERED).await? {
        entered.insert(sort.trim_start_matches(ENTERED).to_string(), decode_doc("entry", body)?);
    }
    let requested = list_all(docs, CAMPAIGN_STATS, &partition, REQUESTED).await?;
    let suppressed = list_all(docs, CAMPAIGN_STATS, &partition, SUPPRESSED).await?.len() as u64;
    let sent = sent_messages(docs, &partition).await?;
    let (conversions, revenue) = conversions(docs, &sent, window).await?;
    Ok(CampaignStats {
        campaign_id: campaign_id.to_string(),
        entered: entered.len() as u64,
        messages: MessageCounts {
            requested: requested.len() as u64,
            sent: sent.len() as u64,
            suppressed,
        },
        conversion_window_days: window_days,
        conversions,
        revenue_minor: revenue,
        experiments: experiments(docs, &partition, &entered, requested, &sent, window, holdout).await?,
    })
}

/// The campaign's sent messages: the message id, its recipient and when.
async fn sent_messages(docs: &dyn ReadModelStore, partition: &str) -> Result<Vec<(String, Sent)>, StoreError> {
    list_all(docs, CAMPAIGN_STATS, partition, SENT)
        .await?
        .into_iter()
        .map(|(sort, v)| {
            Ok((
                sort.trim_start_matches(SENT).to_string(),
                decode_doc("sent message", v)?,
            ))
        })
        .collect()
}

/// The orders placed within `window` after a message sent to their customer
/// (each once), and their totals per currency.
async fn conversions(
    docs: &dyn ReadModelStore,
    sent: &[(String, Sent)],
    window: Duration,
) -> Result<(u64, BTreeMap<String, i64>), StoreError> {
    let mut by_customer: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for (_, s) in sent {
        by_customer.entry(s.customer_id.as_str()).or_default().push(s.at);
    }
    let orders = orders_following(docs, sent.iter().map(|(_, s)| s), window).await?;
    let mut converted = BTreeSet::new();
    let mut revenue: BTreeMap<String, i64> = BTreeMap::new();
    for (customer, sends) in by_customer {
        for order in orders.get(customer).into_iter().flatten() {
            let follows = sends.iter().any(|sent| order.at > *sent && order.at <= *sent + window);
            if follows && converted.insert(order.order_id.clone()) {
                *revenue.entry(order.currency.clone()).or_insert(0) += order.total_minor;
            }
        }
    }
    Ok((converted.len() as u64, revenue))
}

/// The orders that may follow one of `starts` (a customer and a time)
/// within `window`, by customer: at least every order of those customers
/// placed after the earliest start and no later than the latest start plus
/// the window. It reads whichever needs fewer reads: each customer's orders
/// (one listing per customer), or every order of each day of that span
/// (one listing per day), keeping those customers' (addendum of decision 0081).
async fn orders_following<'a>(
    docs: &dyn ReadModelStore,
    starts: impl IntoIterator<Item = &'a Sent>,
    window: Duration,
) -> Result<BTreeMap<String, Vec<CustomerOrder>>, StoreError> {
    let mut customers = BTreeSet::new();
    let mut span: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for s in starts {
        customers.insert(s.customer_id.as_str());
        span = Some(match span {
            None => (s.at, s.at),
            Some((first, last)) => (first.min(s.at), last.max(s.at)),
        });
    }
    let Some((first, last)) = span else {
        return Ok(BTreeMap::new());
    };
    let (first_day, last_day) = (first.date_naive(), (last + window).date_naive());
    let day_count = (last_day - first_day).num_days() + 1;
    if i64::try_from(customers.len()).unwrap_or(i64::MAX) <= day_count {
        orders_by_customer(docs, &customers).await
    } else {
        orders_by_day(docs, &customers, first_day, last_day).await
    }
}

/// Every order of each of `customers`: one listing per customer.
async fn orders_by_customer(
    docs: &dyn ReadModelStore,
    customers: &BTreeSet<&str>,
) -> Result<BTreeMap<String, Vec<CustomerOrder>>, StoreError> {
    let mut out = BTreeMap::new();
    for customer in customers {
        let orders: Vec<CustomerOrder> = list_all(docs, CAMPAIGN_STATS, &customer_partition(customer), ORDER)
            .await?
            .into_iter()
            .map(|(_, v)| decode_doc("order", v))
            .collect::<Result<_, _>>()?;
        out.insert(customer.to_string(), orders);
    }
    Ok(out)
}

/// The orders of `customers` placed on the days `first` to `last`
/// (inclusive, UTC): one listing per day, in time order.
async fn orders_by_day(
    docs: &dyn ReadModelStore,
    customers: &BTreeSet<&str>,
    first: NaiveDate,
    last: NaiveDate,
) -> Result<BTreeMap<String, Vec<CustomerOrder>>, StoreError> {
    let mut out: BTreeMap<String, Vec<CustomerOrder>> = BTreeMap::new();
    let mut day = first;
    while day <= last {
        for (_, body) in list_all(docs, CAMPAIGN_STATS, &day_key(DAY_ORDERS, day), "").await? {
            let line: DayOrder = decode_doc("order of the day", body)?;
            if customers.contains(line.customer_id.as_str()) {
                out.entry(line.customer_id).or_default().push(line.order);
            }
        }
        match day.succ_opt() {
            Some(next) => day = next,
            None => break,
        }
    }
    Ok(out)
}

/// Who entered when, and whose orders followed, per arm (decision 0081).
/// With `holdout` (the definition has one) the holdout's two arms are
/// there even while nobody is held out.
async fn experiments(
    docs: &dyn ReadModelStore,
    partition: &str,
    entered: &BTreeMap<String, Sent>,
    requested: Vec<(String, serde_json::Value)>,
    sent: &[(String, Sent)],
    window: Duration,
    holdout: bool,
) -> Result<Vec<ArmStats>, StoreError> {
    let arms = list_all(docs, CAMPAIGN_STATS, partition, ARM).await?;
    if arms.is_empty() && !holdout {
        return Ok(Vec::new());
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
    if holdout || !held_out.is_empty() {
        members
            .entry((HOLDOUT_EXPERIMENT.to_string(), HOLDOUT_ARM.to_string()))
            .or_default();
        let treated = entered.keys().filter(|i| !held_out.contains(*i)).cloned().collect();
        members.insert((HOLDOUT_EXPERIMENT.to_string(), TREATED_ARM.to_string()), treated);
    }
    // message → instance (one listing, not a read per message), then the
    // messages sent per instance
    let mut instance_of: BTreeMap<String, String> = BTreeMap::new();
    for (sort, body) in requested {
        let requested: RequestedDoc = decode_doc("requested message", body)?;
        if let Some(instance) = requested.instance_id {
            instance_of.insert(sort.trim_start_matches(REQUESTED).to_string(), instance);
        }
    }
    let mut sent_by_instance: BTreeMap<String, u64> = BTreeMap::new();
    for instance in sent.iter().filter_map(|(m, _)| instance_of.get(m)) {
        *sent_by_instance.entry(instance.clone()).or_insert(0) += 1;
    }
    // instance → the orders within the window after its start
    let by_customer = orders_following(docs, entered.values(), window).await?;
    let mut orders_of: BTreeMap<String, Vec<CustomerOrder>> = BTreeMap::new();
    for (instance, entry) in entered {
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
    // No lift over a holdout nobody is in yet: it would compare with nothing.
    let holdout = out
        .iter()
        .find(|a| a.experiment == HOLDOUT_EXPERIMENT && a.arm == HOLDOUT_ARM && a.entered > 0)
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
mod reading_tests {
    //! The two ways of reading the orders that may follow a campaign's
    //! messages find the same orders, and the stats count the same from
    //! either; a declared holdout shows its arms before anyone is in it.

    use super::*;
    use crate::consumer::Consumer;
    use crate::insights::tests::{all_events, put, random_history, t, Rng};
    use crate::testing::{InMemoryEventStore, InMemoryReadModels};
    use serde_json::json;
    use std::sync::Arc;

    async fn projected(store: Arc<InMemoryEventStore>) -> Arc<InMemoryReadModels> {
        let docs = Arc::new(InMemoryReadModels::default());
        let consumer = Consumer::new(Arc::new(CampaignStatsProjection), store.clone(), docs.clone());
        for e in all_events(&store).await {
            consumer.deliver(&e).await.expect("deliver");
        }
        docs
    }

    fn flat(orders: BTreeMap<String, Vec<CustomerOrder>>) -> BTreeSet<(String, String, i64, DateTime<Utc>)> {
        orders
            .into_iter()
            .flat_map(|(c, os)| {
                os.into_iter()
                    .map(move |o| (c.clone(), o.order_id, o.total_minor, o.at))
            })
            .collect()
    }

    #[tokio::test]
    async fn the_orders_of_the_days_are_each_customers_orders_of_those_days() {
        let store = random_history(120, &mut Rng(0x0DA7_5EED)).await;
        let events = all_events(&store).await;
        let orders: Vec<&EventEnvelope> = events.iter().filter(|e| e.event_type == "OrderPlaced").collect();
        assert!(orders.len() > 10, "a history with orders ({})", orders.len());
        // One order amended: both of its lines carry the new total.
        let amended = orders[0];
        let customer = amended.customer_id.clone().expect("customer");
        let order_id = amended.data["order_id"].as_str().expect("order id").to_string();
        put(
            &store,
            &amended.stream_id,
            "OrderAmended",
            &customer,
            amended.occurred_at + Duration::hours(1),
            json!({ "order_id": order_id, "customer_id": customer, "total_minor": 77, "currency": "EUR" }),
        )
        .await;
        let docs = projected(store).await;
        let names: Vec<String> = (0..120).map(|n| format!("c{n}")).collect();
        let customers: BTreeSet<&str> = names.iter().map(String::as_str).step_by(2).collect();
        let (first, last) = (
            (t() - Duration::days(12)).date_naive(),
            (t() - Duration::days(4)).date_naive(),
        );
        let by_day = flat(
            orders_by_day(docs.as_ref(), &customers, first, last)
                .await
                .expect("by day"),
        );
        let by_customer: BTreeSet<_> = flat(
            orders_by_customer(docs.as_ref(), &customers)
                .await
                .expect("by customer"),
        )
        .into_iter()
        .filter(|(_, _, _, at)| (first..=last).contains(&at.date_naive()))
        .collect();
        assert!(by_day.len() > 3, "{by_day:?}");
        assert_eq!(by_day, by_customer);
        let all: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let everything = flat(orders_by_customer(docs.as_ref(), &all).await.expect("all"));
        assert!(everything
            .iter()
            .any(|(c, o, total, _)| *c == customer && *o == order_id && *total == 77));
        let (from, to) = (
            (t() - Duration::days(40)).date_naive(),
            (t() + Duration::days(40)).date_naive(),
        );
        assert_eq!(
            flat(orders_by_day(docs.as_ref(), &all, from, to).await.expect("all days")),
            everything
        );
    }

    /// Five customers sent a message on one day, one not; their orders
    /// around it. A 1-day window spans fewer days than recipients (read by
    /// day), a 7-day window more (read by customer).
    #[tokio::test]
    async fn the_stats_count_the_same_conversions_read_by_day_or_by_customer() {
        let store = Arc::new(InMemoryEventStore::default());
        let sent_at = t() - Duration::days(3);
        for n in 0..5 {
            let c = format!("k{n}");
            let started = json!({ "instance_id": format!("i{n}"), "campaign_id": "promo", "customer_id": c });
            put(
                &store,
                &format!("journey-i{n}"),
                "JourneyStarted",
                &c,
                sent_at - Duration::minutes(5),
                started,
            )
            .await;
            let sent = json!({ "message_id": format!("m{n}"), "customer_id": c, "channel": "email",
                               "category": "marketing", "campaign_id": "promo" });
            put(&store, &format!("message-m{n}"), "MessageSent", &c, sent_at, sent).await;
        }
        let order = |id: &str, c: &str, total: i64| json!({ "order_id": id, "customer_id": c, "total_minor": total, "currency": "EUR" });
        for (id, c, at, total) in [
            ("o0", "k0", sent_at + Duration::hours(2), 1000), // within a day
            ("o1", "k1", sent_at - Duration::hours(2), 2000), // before the message
            ("o2", "k2", sent_at + Duration::days(2), 3000),  // within 7 days, not 1
            ("o3", "k3", sent_at + Duration::hours(1), 4000), // within a day, amended
            ("o9", "k9", sent_at + Duration::hours(1), 9000), // sent nothing
        ] {
            put(
                &store,
                &format!("order-{id}"),
                "OrderPlaced",
                c,
                at,
                order(id, c, total),
            )
            .await;
        }
        put(
            &store,
            "order-o3",
            "OrderAmended",
            "k3",
            sent_at + Duration::hours(3),
            order("o3", "k3", 3500),
        )
        .await;
        let docs = projected(store).await;
        for (window, conversions, revenue) in [(1, 2, 4500), (7, 3, 7500)] {
            let stats = campaign_stats(docs.as_ref(), "promo", window).await.expect("stats");
            assert_eq!((stats.entered, stats.messages.sent), (5, 5));
            assert_eq!(stats.conversions, conversions, "window {window}");
            assert_eq!(stats.revenue_minor.get("EUR"), Some(&revenue), "window {window}");
            let summary = campaign_summary(docs.as_ref(), "promo", window).await.expect("summary");
            assert_eq!(
                (
                    summary.entered,
                    summary.sent,
                    summary.conversions,
                    &summary.revenue_minor
                ),
                (
                    stats.entered,
                    stats.messages.sent,
                    stats.conversions,
                    &stats.revenue_minor
                )
            );
        }
        // A campaign nobody entered: zeros, and no read of any order.
        let none = campaign_summary(docs.as_ref(), "other", 7).await.expect("summary");
        assert_eq!((none.entered, none.sent, none.conversions), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_declared_holdout_nobody_is_in_shows_its_two_arms() {
        let store = Arc::new(InMemoryEventStore::default());
        for n in 0..3 {
            let c = format!("h{n}");
            let started = json!({ "instance_id": format!("i{n}"), "campaign_id": "held", "customer_id": c });
            put(&store, &format!("journey-i{n}"), "JourneyStarted", &c, t(), started).await;
        }
        let docs = projected(store).await;
        let without = campaign_stats_for(docs.as_ref(), "held", 7, false)
            .await
            .expect("stats");
        assert!(without.experiments.is_empty(), "{:?}", without.experiments);
        let with = campaign_stats_for(docs.as_ref(), "held", 7, true).await.expect("stats");
        let arms: Vec<(&str, &str, u64, bool)> = with
            .experiments
            .iter()
            .map(|a| {
                (
                    a.experiment.as_str(),
                    a.arm.as_str(),
                    a.entered,
                    a.lift_over_holdout.is_some(),
                )
            })
            .collect();
        assert_eq!(
            arms,
            [
                (HOLDOUT_EXPERIMENT, HOLDOUT_ARM, 0, false),
                (HOLDOUT_EXPERIMENT, TREATED_ARM, 3, false)
            ]
        );
        assert_eq!(with.experiments[0].interval, Interval { low: 0.0, high: 1.0 });
    }
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
