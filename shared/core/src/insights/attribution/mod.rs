//! Multi-touch attribution (seed 000, "Multi-Touch Attribution"): which
//! touchpoints (marketing messages sent, opened and clicked; visits carrying UTM
//! parameters) led to an order, under five models.
//!
//! Credits are whole basis points (10 000 = 100 %) and values whole minor
//! units, each split by largest remainder so that they sum to exactly
//! 100 % and exactly the order total (ties go to the earlier touchpoint).
//!
//! The folder holds: the vocabulary here (the models, a touchpoint, an
//! order as attribution sees it, and where the projection keeps them),
//! [`projection`] (recording touchpoints, orders and messages as facts),
//! [`credit`] (the pure split of an order's credit under each model) and
//! [`report`] (reading an order's attribution and a period's report).

mod credit;
mod projection;
mod report;

pub use credit::{allocate, attribute, weights, window, Credit, ModelAttribution, TouchCredit};
pub use projection::{utm_touchpoint, AttributionProjection};
pub use report::{
    attribution_report, customer_touchpoints, order, order_attribution, order_touchpoints, summarise, touchpoints,
    AttributionReport, OrderAttribution, Summed,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The projection's name (checkpoints and documents).
pub const ATTRIBUTION: &str = "attribution";

/// Touchpoints older than this before an order are not credited.
pub const LOOKBACK_DAYS: i64 = 30;

/// The time-decay model's decay time, as the seed has it (`exp(-age / 7 d)`,
/// decision 0066): a touchpoint 7 days before the order weighs 1/e (0.37)
/// of one at the order, and half of it after 7 · ln 2 = 4.85 days.
pub const DECAY_DAYS: i64 = 7;

/// 100 % in basis points.
pub const FULL_CREDIT: i64 = 10_000;

/// Orders without any touchpoint in the lookback window go to this channel.
pub const DIRECT: &str = "direct";

const TOUCH_PREFIX: &str = "touch#";
const ORDER_SORT: &str = "order";
const ORDERS_DAY_PREFIX: &str = "orders-day#";
const MESSAGE_SORT: &str = "meta";
/// Where an order's redeemed discount code is kept (decision 0074).
const DISCOUNT_SORT: &str = "discount";

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

fn message_partition(message_id: &str) -> String {
    format!("message#{message_id}")
}

fn order_partition(order_id: &str) -> String {
    format!("order#{order_id}")
}
