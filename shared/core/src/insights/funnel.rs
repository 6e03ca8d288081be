//! The purchase funnel (seed 000, "Building Funnels from Events"): each
//! customer's way through awareness, consideration, intent, checkout and
//! purchase, and the aggregate counts and conversion per stage.

use super::{customer_of, day_key, days, decode_doc, encode, list_until, time_key};
use crate::consumer::{Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The projection's name (checkpoints and documents).
pub const FUNNEL: &str = "funnel";

const STEP_PREFIX: &str = "step#";
const DAY_PREFIX: &str = "day#";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    Awareness,
    Consideration,
    Intent,
    Checkout,
    Purchase,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Awareness,
        Stage::Consideration,
        Stage::Intent,
        Stage::Checkout,
        Stage::Purchase,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Awareness => "awareness",
            Stage::Consideration => "consideration",
            Stage::Intent => "intent",
            Stage::Checkout => "checkout",
            Stage::Purchase => "purchase",
        }
    }

    pub fn next(self) -> Option<Stage> {
        Stage::ALL.get(self.index() + 1).copied()
    }
}

/// The stage an event type shows (decision 0012's activity, cart and order
/// events, mapped as the seed's analyzer does; decision 0066). Awareness is
/// finding products: the seed's `PageViewed` and `ProductViewed` (its
/// analyzer) and `SearchPerformed` (its "awareness stage events"), with
/// Segment's list views and clicks, which are the same browsing.
/// Consideration is weighing one: comparing, reading reviews, watching a
/// video, wishlisting, reviewing.
pub fn stage_of(event_type: &str) -> Option<Stage> {
    Some(match event_type {
        "PageViewed" | "SessionStarted" | "ProductViewed" | "SearchPerformed" | "ProductListViewed"
        | "ProductClicked" => Stage::Awareness,
        "ProductCompared" | "ReviewRead" | "VideoWatched" | "ProductWishlisted" | "ProductReviewed" => {
            Stage::Consideration
        }
        "CartCreated" | "ItemAddedToCart" | "ShoppingCartViewed" | "CouponChanged" => Stage::Intent,
        "CheckoutStarted" | "CheckoutStepViewed" | "CheckoutStepCompleted" => Stage::Checkout,
        "OrderPlaced" | "PaymentSucceeded" => Stage::Purchase,
        _ => return None,
    })
}

/// One recorded funnel event of a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelStep {
    pub stage: Stage,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
}

/// Records every funnel event under its customer (sort: time, event id) and
/// marks the customer active on that day (for the aggregate).
pub struct FunnelProjection;

#[async_trait]
impl Projection for FunnelProjection {
    fn name(&self) -> &'static str {
        FUNNEL
    }

    fn handles(&self, event_type: &str) -> bool {
        stage_of(event_type).is_some()
    }

    async fn project(&self, event: &EventEnvelope, _docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let (Some(stage), Some(customer)) = (stage_of(&event.event_type), customer_of(event)) else {
            tracing::warn!(event_id = %event.event_id, "funnel event without a customer: skipped");
            return Ok(Vec::new());
        };
        let step = FunnelStep {
            stage,
            event_type: event.event_type.clone(),
            occurred_at: event.occurred_at,
        };
        Ok(vec![
            ReadOp::Put {
                partition: customer.clone(),
                sort: format!("{STEP_PREFIX}{}#{}", time_key(event.occurred_at), event.event_id),
                body: encode(&step)?,
            },
            ReadOp::Put {
                partition: day_key(DAY_PREFIX, event.occurred_at.date_naive()),
                sort: customer,
                body: serde_json::json!({}),
            },
        ])
    }
}

/// One stage a customer reached: when, by which event, and how long they
/// stayed before reaching the next one (`None` while it is their current stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageProgress {
    pub stage: Stage,
    pub event_type: String,
    pub entered_at: DateTime<Utc>,
    pub time_in_stage_seconds: Option<i64>,
    pub progressed_to_next: bool,
}

/// Where a customer stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropOff {
    pub stage: Stage,
    pub next_expected_stage: Stage,
    pub seconds_since_last_activity: i64,
}

/// One customer's funnel (the seed's `FunnelAnalysis`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerFunnel {
    pub customer_id: String,
    pub stages: Vec<StageProgress>,
    pub current_stage: Option<Stage>,
    pub drop_off: Option<DropOff>,
    pub completed: bool,
    /// Stages reached (the furthest one's position) out of five.
    pub conversion_rate: f64,
}

/// The seed's analyzer over steps in time order: a step counts when its stage
/// is beyond the furthest reached so far (stages may be skipped, never
/// revisited); time in a stage runs until the next counted step.
pub fn analyze(customer_id: &str, steps: &[FunnelStep], now: DateTime<Utc>) -> CustomerFunnel {
    let mut progress: Vec<StageProgress> = Vec::new();
    let mut reached = 0usize;
    for step in steps {
        if step.stage.index() >= reached {
            if let Some(last) = progress.last_mut() {
                last.time_in_stage_seconds = Some((step.occurred_at - last.entered_at).num_seconds());
                last.progressed_to_next = true;
            }
            progress.push(StageProgress {
                stage: step.stage,
                event_type: step.event_type.clone(),
                entered_at: step.occurred_at,
                time_in_stage_seconds: None,
                progressed_to_next: false,
            });
            reached = step.stage.index() + 1;
        }
    }
    let current_stage = progress.last().map(|p| p.stage);
    let drop_off = progress.last().and_then(|last| {
        last.stage.next().map(|next| DropOff {
            stage: last.stage,
            next_expected_stage: next,
            seconds_since_last_activity: (now - last.entered_at).num_seconds().max(0),
        })
    });
    CustomerFunnel {
        customer_id: customer_id.to_string(),
        completed: current_stage == Some(Stage::Purchase),
        conversion_rate: reached as f64 / Stage::ALL.len() as f64,
        stages: progress,
        current_stage,
        drop_off,
    }
}

/// A customer's funnel steps in `[from, to)` (either end open), oldest first.
pub async fn customer_steps(
    docs: &dyn ReadModelStore,
    customer_id: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<Vec<FunnelStep>, StoreError> {
    let after = from.map(|f| format!("{STEP_PREFIX}{}", time_key(f)));
    let end = to.map(|t| format!("{STEP_PREFIX}{}", time_key(t)));
    list_until(docs, FUNNEL, customer_id, STEP_PREFIX, after, |key| {
        end.as_deref().is_some_and(|end| key >= end)
    })
    .await?
    .into_iter()
    .map(|(_, v)| decode_doc("funnel step", v))
    .collect()
}

/// One customer's funnel over `[from, to)`.
pub async fn customer_funnel(
    docs: &dyn ReadModelStore,
    customer_id: &str,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<CustomerFunnel, StoreError> {
    let steps = customer_steps(docs, customer_id, from, to).await?;
    Ok(analyze(customer_id, &steps, now))
}

/// One stage of the aggregate funnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageCount {
    pub stage: Stage,
    /// Customers whose furthest stage is this one or a later one.
    pub customers: u64,
    /// Customers whose furthest stage is this one (they dropped off here; 0 for purchase).
    pub dropped_off: u64,
    /// `customers` over the previous stage's (the first stage: over all customers).
    pub conversion_from_previous: f64,
    /// `customers` over the customers of the period.
    pub conversion_from_start: f64,
}

/// The aggregate funnel of a period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Customers with at least one funnel event in the period.
    pub customers: u64,
    pub stages: Vec<StageCount>,
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0
    }
}

/// Counts per stage from the furthest stage of each customer.
pub fn report(from: DateTime<Utc>, to: DateTime<Utc>, furthest: &[Stage]) -> FunnelReport {
    let total = furthest.len() as u64;
    let mut stages = Vec::new();
    let mut previous = total;
    for stage in Stage::ALL {
        let customers = furthest.iter().filter(|s| **s >= stage).count() as u64;
        let at = furthest.iter().filter(|s| **s == stage).count() as u64;
        stages.push(StageCount {
            stage,
            customers,
            dropped_off: if stage == Stage::Purchase { 0 } else { at },
            conversion_from_previous: ratio(customers, previous),
            conversion_from_start: ratio(customers, total),
        });
        previous = customers;
    }
    FunnelReport {
        from,
        to,
        customers: total,
        stages,
    }
}

/// The aggregate funnel over `[from, to)`: every customer with a funnel
/// event in the period, analysed over the period.
pub async fn funnel_report(
    docs: &dyn ReadModelStore,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<FunnelReport, StoreError> {
    let mut customers = BTreeSet::new();
    for day in days(from, to) {
        for (customer, _) in super::list_all(docs, FUNNEL, &day_key(DAY_PREFIX, day), "").await? {
            customers.insert(customer);
        }
    }
    let mut furthest = Vec::new();
    for customer in customers {
        if let Some(stage) = customer_funnel(docs, &customer, Some(from), Some(to), now)
            .await?
            .current_stage
        {
            furthest.push(stage);
        }
    }
    Ok(report(from, to, &furthest))
}
