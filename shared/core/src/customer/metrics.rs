//! Profile metrics of the customer 360 (seed 001, "time windows and decay";
//! docs/decisions/0013-profile-metrics-and-segments.md).
//!
//! The projection keeps facts, not windowed counters: one document per order
//! (`order#<order id>`: the day and amount of its successful payment, its
//! refunds, its items' categories) and one per customer's activity stream
//! (`activity`: logins per UTC day). Each document is written only by the
//! events of one stream, so the checkpoint per (consumer, stream) protects
//! it. The windows (30 days, 7 days) are evaluated against the clock when
//! the metrics are read, so they stay right as time passes with no events.
//!
//! A transaction is an order with a `PaymentSucceeded`; its value is what
//! was paid, changed by its `OrderAmended` after payment (the shop settles
//! the difference, decision 0055), less what `RefundRequested` took back.

use crate::consumer::{Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

pub const PROFILE_METRICS: &str = "profile-metrics";

const ORDER_PREFIX: &str = "order#";
const ACTIVITY_SORT: &str = "activity";

/// Days of the transaction window.
pub const TRANSACTION_WINDOW_DAYS: i64 = 30;
/// Days of the login window.
pub const LOGIN_WINDOW_DAYS: i64 = 7;
/// Login buckets older than this (from the newest login) are dropped.
const LOGIN_BUCKET_DAYS: i64 = 400;

/// The event types this projection reads.
/// `ActivityDaySummarized` (retention) carries a folded day's logins, so a
/// rebuild after the raw logins expired gives the same answers.
pub const METRIC_EVENT_TYPES: &[&str] = &[
    "OrderPlaced",
    "PaymentSucceeded",
    "RefundRequested",
    "OrderAmended",
    "OrderDelivered",
    "CustomerLoggedIn",
    super::day_summary::ACTIVITY_DAY_SUMMARIZED,
];

/// One successful payment or one refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    pub id: String,
    pub at: DateTime<Utc>,
    pub amount_minor: i64,
    pub currency: String,
}

/// What one order contributes to its customer's metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFacts {
    pub order_id: String,
    #[serde(default)]
    pub placed_at: Option<DateTime<Utc>>,
    /// Quantity per category of the order's items (uncategorised items are left out).
    #[serde(default)]
    pub categories: BTreeMap<String, u64>,
    #[serde(default)]
    pub payments: Vec<Movement>,
    #[serde(default)]
    pub refunds: Vec<Movement>,
    /// What amendments of the paid order changed its value by (signed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amendments: Vec<Movement>,
    /// When the order was delivered (`OrderDelivered`): the RFM's purchase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

impl OrderFacts {
    /// When the order became a transaction: its first successful payment.
    pub fn paid_at(&self) -> Option<DateTime<Utc>> {
        self.payments.iter().map(|p| p.at).min()
    }
    fn currency(&self) -> Option<&str> {
        self.payments.first().map(|p| p.currency.as_str())
    }
    fn sum(movements: &[Movement], currency: &str) -> i64 {
        movements
            .iter()
            .filter(|m| m.currency == currency)
            .map(|m| m.amount_minor)
            .sum()
    }
}

/// Logins per UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityFacts {
    #[serde(default)]
    pub logins_by_day: BTreeMap<NaiveDate, u64>,
    #[serde(default)]
    pub last_login_at: Option<DateTime<Utc>>,
}

/// The metrics as of one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileMetrics {
    pub as_of: DateTime<Utc>,
    /// The currency of the values: that of the first paid order (orders paid
    /// in another currency count as transactions, not in the values).
    pub currency: Option<String>,
    /// Paid orders whose payment fell on one of the last 30 UTC days (today included).
    pub transactions_30d: u64,
    /// Their value, less their refunds.
    pub transaction_value_30d_minor: i64,
    /// Logins on the last 7 UTC days (today included).
    pub logins_7d: u64,
    pub last_login_at: Option<DateTime<Utc>>,
    pub first_transaction_at: Option<DateTime<Utc>>,
    pub last_transaction_at: Option<DateTime<Utc>>,
    pub days_since_last_transaction: Option<i64>,
    /// Paid orders, ever.
    pub orders: u64,
    /// Everything paid, before refunds.
    pub total_spent_minor: i64,
    pub refunded_minor: i64,
    /// Lifetime value: paid less refunded.
    pub lifetime_value_minor: i64,
    /// Lifetime value per paid order (integer division).
    pub average_order_value_minor: i64,
    /// Paid orders per month (30 days) since the first, the first month counting whole.
    pub order_frequency_per_month: f64,
    /// Share of each category in the quantities of paid orders' items (0 to 1).
    pub category_affinity: BTreeMap<String, f64>,
    /// Delivered orders, ever (the RFM frequency, seed 000).
    #[serde(default)]
    pub delivered_orders: u64,
    /// Whole days since the last delivery (the RFM recency), `None` before one.
    #[serde(default)]
    pub days_since_last_delivery: Option<i64>,
}

fn day_window(now: DateTime<Utc>, days: i64) -> NaiveDate {
    (now - Duration::days(days - 1)).date_naive()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl ProfileMetrics {
    /// Evaluates the facts against `now`.
    pub fn compute(orders: &[OrderFacts], activity: Option<&ActivityFacts>, now: DateTime<Utc>) -> Self {
        let mut paid: Vec<&OrderFacts> = orders.iter().filter(|o| o.paid_at().is_some()).collect();
        paid.sort_by_key(|o| (o.paid_at(), o.order_id.clone()));
        let currency = paid.first().and_then(|o| o.currency()).map(str::to_string);
        let cur = currency.as_deref().unwrap_or("");
        let tx_from = day_window(now, TRANSACTION_WINDOW_DAYS);
        let (mut spent, mut refunded, mut tx_30, mut value_30) = (0i64, 0i64, 0u64, 0i64);
        let mut quantities: BTreeMap<String, u64> = BTreeMap::new();
        for o in &paid {
            let p = OrderFacts::sum(&o.payments, cur) + OrderFacts::sum(&o.amendments, cur);
            let r = OrderFacts::sum(&o.refunds, cur);
            spent += p;
            refunded += r;
            if o.paid_at().is_some_and(|at| at.date_naive() >= tx_from && at <= now) {
                tx_30 += 1;
                value_30 += p - r;
            }
            for (c, q) in &o.categories {
                *quantities.entry(c.clone()).or_insert(0) += q;
            }
        }
        let total_quantity: u64 = quantities.values().sum();
        let category_affinity = quantities
            .into_iter()
            .map(|(c, q)| (c, round2(q as f64 / total_quantity.max(1) as f64)))
            .collect();
        let first = paid.first().and_then(|o| o.paid_at());
        let last = paid.iter().filter_map(|o| o.paid_at()).max();
        let count = paid.len() as u64;
        let ltv = spent - refunded;
        let months = first
            .map(|f| ((now - f).num_days().max(0) as f64 / 30.0).max(1.0))
            .unwrap_or(1.0);
        let login_from = day_window(now, LOGIN_WINDOW_DAYS);
        let today = now.date_naive();
        let delivered: Vec<DateTime<Utc>> = orders.iter().filter_map(|o| o.delivered_at).collect();
        let last_delivery = delivered.iter().max().copied();
        let logins_7d = activity
            .map(|a| a.logins_by_day.range(login_from..=today).map(|(_, n)| n).sum())
            .unwrap_or(0);
        ProfileMetrics {
            as_of: now,
            currency,
            transactions_30d: tx_30,
            transaction_value_30d_minor: value_30,
            logins_7d,
            last_login_at: activity.and_then(|a| a.last_login_at),
            first_transaction_at: first,
            last_transaction_at: last,
            days_since_last_transaction: last.map(|l| (now - l).num_days().max(0)),
            orders: count,
            total_spent_minor: spent,
            refunded_minor: refunded,
            lifetime_value_minor: ltv,
            average_order_value_minor: if count == 0 { 0 } else { ltv / count as i64 },
            order_frequency_per_month: if count == 0 { 0.0 } else { round2(count as f64 / months) },
            category_affinity,
            delivered_orders: delivered.len() as u64,
            days_since_last_delivery: last_delivery.map(|l| (now - l).num_days().max(0)),
        }
    }
}

/// A category as a slug (`Home & Garden` → `home-garden`), or `None` if nothing is left.
pub fn category_slug(category: &str) -> Option<String> {
    let mut out = String::new();
    for c in category.trim().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').chars().take(48).collect::<String>();
    let out = out.trim_end_matches('-').to_string();
    (!out.is_empty()).then_some(out)
}

fn field<'a>(event: &'a EventEnvelope, name: &str) -> Result<&'a Value, ProjectionError> {
    event
        .data
        .get(name)
        .filter(|v| !v.is_null())
        .ok_or_else(|| ProjectionError::Invalid(format!("{} {} has no {name}", event.event_type, event.event_id)))
}

fn string(event: &EventEnvelope, name: &str) -> Result<String, ProjectionError> {
    field(event, name)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ProjectionError::Invalid(format!("{}.{name} is not a string", event.event_type)))
}

fn integer(event: &EventEnvelope, name: &str) -> Result<i64, ProjectionError> {
    field(event, name)?
        .as_i64()
        .ok_or_else(|| ProjectionError::Invalid(format!("{}.{name} is not an integer", event.event_type)))
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Failed(format!("profile metrics document unreadable: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Value, ProjectionError> {
    serde_json::to_value(v).map_err(|e| ProjectionError::Invalid(e.to_string()))
}

/// Keeps the facts the profile metrics are computed from.
pub struct ProfileMetricsProjection;

#[async_trait]
impl Projection for ProfileMetricsProjection {
    fn name(&self) -> &'static str {
        PROFILE_METRICS
    }

    fn handles(&self, event_type: &str) -> bool {
        METRIC_EVENT_TYPES.contains(&event_type)
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let customer = event.customer_id.as_deref().ok_or_else(|| {
            ProjectionError::Invalid(format!("{} {} has no customer_id", event.event_type, event.event_id))
        })?;
        if event.event_type == "CustomerLoggedIn" || event.event_type == super::day_summary::ACTIVITY_DAY_SUMMARIZED {
            let mut facts: ActivityFacts = docs
                .get(PROFILE_METRICS, customer, ACTIVITY_SORT)
                .await?
                .map(decode)
                .transpose()?
                .unwrap_or_default();
            let login_at = if event.event_type == "CustomerLoggedIn" {
                *facts.logins_by_day.entry(event.occurred_at.date_naive()).or_insert(0) += 1;
                event.occurred_at
            } else {
                // A folded day: its count replaces whatever the raw logins of
                // that day added (the same number), so the summary counts once
                // whether or not they were seen.
                let summary = super::day_summary::ActivityDaySummarized::from_envelope(event)?;
                match summary.last_login_at {
                    Some(at) if summary.logins > 0 => {
                        facts.logins_by_day.insert(summary.day, summary.logins);
                        at
                    }
                    _ => return Ok(Vec::new()),
                }
            };
            let last = facts.last_login_at.map_or(login_at, |l| l.max(login_at));
            facts.last_login_at = Some(last);
            let keep_from = (last - Duration::days(LOGIN_BUCKET_DAYS)).date_naive();
            facts.logins_by_day.retain(|d, _| *d >= keep_from);
            return Ok(vec![ReadOp::Put {
                partition: customer.to_string(),
                sort: ACTIVITY_SORT.into(),
                body: encode(&facts)?,
            }]);
        }
        let order_id = string(event, "order_id")?;
        let sort = format!("{ORDER_PREFIX}{order_id}");
        let mut facts: OrderFacts = docs
            .get(PROFILE_METRICS, customer, &sort)
            .await?
            .map(decode)
            .transpose()?
            .unwrap_or_else(|| OrderFacts {
                order_id: order_id.clone(),
                ..OrderFacts::default()
            });
        match event.event_type.as_str() {
            "OrderPlaced" => {
                facts.placed_at = Some(event.occurred_at);
                // Only the categories matter here: an order without items
                // (older samples) simply has none.
                let items = event.data.get("items").and_then(Value::as_array);
                for item in items.into_iter().flatten() {
                    let quantity = item.get("quantity").and_then(Value::as_u64).unwrap_or(1);
                    if let Some(c) = item.get("category").and_then(Value::as_str).and_then(category_slug) {
                        *facts.categories.entry(c).or_insert(0) += quantity;
                    }
                }
            }
            "PaymentSucceeded" => {
                let id = string(event, "payment_id")?;
                if !facts.payments.iter().any(|p| p.id == id) {
                    facts.payments.push(Movement {
                        id,
                        at: event.occurred_at,
                        amount_minor: integer(event, "amount_minor")?,
                        currency: string(event, "currency")?,
                    });
                }
            }
            "RefundRequested" => {
                let id = string(event, "refund_id")?;
                if !facts.refunds.iter().any(|r| r.id == id) {
                    facts.refunds.push(Movement {
                        id,
                        at: event.occurred_at,
                        amount_minor: integer(event, "amount_minor")?,
                        currency: string(event, "currency")?,
                    });
                }
            }
            "OrderAmended" if event.data.get("paid").and_then(Value::as_bool) == Some(true) => {
                let id = event.event_id.to_string();
                if !facts.amendments.iter().any(|a| a.id == id) {
                    facts.amendments.push(Movement {
                        id,
                        at: event.occurred_at,
                        amount_minor: integer(event, "total_minor")?
                            .saturating_sub(integer(event, "previous_total_minor")?),
                        currency: string(event, "currency")?,
                    });
                }
            }
            "OrderDelivered" => {
                let at = event.data.get("delivered_at").and_then(Value::as_str);
                let at = at.and_then(|t| DateTime::parse_from_rfc3339(t).ok());
                facts.delivered_at = Some(at.map_or(event.occurred_at, |t| t.with_timezone(&Utc)));
            }
            _ => return Ok(Vec::new()),
        }
        Ok(vec![ReadOp::Put {
            partition: customer.to_string(),
            sort,
            body: encode(&facts)?,
        }])
    }
}

/// The facts of one customer: their orders and their activity.
pub async fn customer_facts(
    docs: &dyn ReadModelStore,
    customer_id: &str,
) -> Result<(Vec<OrderFacts>, Option<ActivityFacts>), StoreError> {
    let mut orders = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = docs
            .list(PROFILE_METRICS, customer_id, ORDER_PREFIX, after.as_deref(), 500)
            .await?;
        let done = page.len() < 500;
        after = page.last().map(|(k, _)| k.clone());
        for (_, v) in page {
            orders.push(decode(v)?);
        }
        if done {
            break;
        }
    }
    let activity = docs
        .get(PROFILE_METRICS, customer_id, ACTIVITY_SORT)
        .await?
        .map(decode)
        .transpose()?;
    Ok((orders, activity))
}

/// The profile metrics of `customer_id` as of `now`.
pub async fn profile_metrics(
    docs: &dyn ReadModelStore,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<ProfileMetrics, StoreError> {
    let (mut orders, activity) = customer_facts(docs, customer_id).await?;
    // Orders placed for a user profile merged into the customer since (decision 0055).
    if let Some(profile) = super::views::customer_profile(docs, customer_id).await? {
        for merged in &profile.customer.merged_profiles {
            orders.extend(customer_facts(docs, merged).await?.0);
        }
    }
    Ok(ProfileMetrics::compute(&orders, activity.as_ref(), now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn order(id: &str, paid: &str, amount: i64, refund: i64, categories: &[(&str, u64)]) -> OrderFacts {
        OrderFacts {
            order_id: id.into(),
            placed_at: Some(t(paid)),
            categories: categories.iter().map(|(c, q)| (c.to_string(), *q)).collect(),
            payments: vec![Movement {
                id: format!("p-{id}"),
                at: t(paid),
                amount_minor: amount,
                currency: "EUR".into(),
            }],
            refunds: (refund > 0)
                .then(|| Movement {
                    id: format!("r-{id}"),
                    at: t(paid) + Duration::days(1),
                    amount_minor: refund,
                    currency: "EUR".into(),
                })
                .into_iter()
                .collect(),
            amendments: Vec::new(),
            delivered_at: None,
        }
    }

    #[test]
    fn windows_follow_the_clock_and_refunds_reduce_value() {
        let orders = vec![
            order("a", "2026-10-01T10:00:00Z", 10_000, 0, &[("lamps", 3)]),
            order("b", "2026-11-10T10:00:00Z", 5_000, 1_000, &[("lamps", 1), ("books", 1)]),
            // Placed, never paid: not a transaction.
            OrderFacts {
                order_id: "c".into(),
                placed_at: Some(t("2026-11-11T10:00:00Z")),
                ..OrderFacts::default()
            },
        ];
        let activity = ActivityFacts {
            logins_by_day: [
                (t("2026-11-14T00:00:00Z").date_naive(), 2),
                (t("2026-11-19T00:00:00Z").date_naive(), 1),
            ]
            .into_iter()
            .collect(),
            last_login_at: Some(t("2026-11-19T08:00:00Z")),
        };
        let m = ProfileMetrics::compute(&orders, Some(&activity), t("2026-11-20T12:00:00Z"));
        assert_eq!((m.orders, m.total_spent_minor, m.refunded_minor), (2, 15_000, 1_000));
        assert_eq!((m.lifetime_value_minor, m.average_order_value_minor), (14_000, 7_000));
        assert_eq!((m.transactions_30d, m.transaction_value_30d_minor), (1, 4_000));
        assert_eq!(m.logins_7d, 3, "the 14th to the 20th");
        assert_eq!(m.days_since_last_transaction, Some(10));
        // 50 days since the first: 1.67 months, 2 orders.
        assert_eq!(m.order_frequency_per_month, 1.2);
        assert_eq!(m.category_affinity.get("lamps"), Some(&0.8));
        // A day later the 14th drops out of the login window; on 10 December
        // the order of 10 November leaves the 30-day window.
        let m = ProfileMetrics::compute(&orders, Some(&activity), t("2026-11-21T00:00:00Z"));
        assert_eq!(m.logins_7d, 1);
        let m = ProfileMetrics::compute(&orders, Some(&activity), t("2026-12-09T23:59:00Z"));
        assert_eq!(m.transactions_30d, 1);
        let m = ProfileMetrics::compute(&orders, Some(&activity), t("2026-12-10T00:00:00Z"));
        assert_eq!((m.transactions_30d, m.transaction_value_30d_minor), (0, 0));
        assert_eq!(m.lifetime_value_minor, 14_000, "lifetime figures do not decay");
    }

    #[test]
    fn categories_become_slugs() {
        assert_eq!(category_slug(" Home & Garden "), Some("home-garden".into()));
        assert_eq!(category_slug("--"), None);
    }
}
