//! The segment rules: the fixed segments, the RFM scores and the seed's RFM
//! segments, and [`evaluate`], the computed segments a customer's profile
//! metrics put them in, each with why.

use crate::customer::metrics::ProfileMetrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An affinity segment's id is this prefix and the category's slug.
pub const AFFINITY_PREFIX: &str = "affinity-";
/// More than this share of purchased items in one category is an affinity (seed: 0.7).
pub const AFFINITY_THRESHOLD: f64 = 0.7;
/// High value: lifetime value above this (minor units: 1000.00) ...
pub const HIGH_VALUE_LTV_MINOR: i64 = 100_000;
/// ... and more than this many paid orders (seed: `ltv > 1000 && orderFrequency > 5`).
pub const HIGH_VALUE_MIN_ORDERS: u64 = 5;

/// A fixed segment: its id and the rule that decides membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SegmentDefinition {
    pub id: &'static str,
    pub name: &'static str,
    pub rule: &'static str,
}

/// The fixed segments; `affinity-<category>` ones appear as categories are bought.
pub const SEGMENTS: &[SegmentDefinition] = &[
    SegmentDefinition {
        id: "champions",
        name: "Champions",
        rule: "RFM recency >= 4, frequency >= 4 and monetary >= 4",
    },
    SegmentDefinition {
        id: "loyal-customers",
        name: "Loyal customers",
        rule: "RFM frequency >= 4 (not a champion)",
    },
    SegmentDefinition {
        id: "at-risk",
        name: "At risk",
        rule: "RFM recency <= 2, frequency >= 3 and monetary >= 3 (not loyal)",
    },
    SegmentDefinition {
        id: "new-customers",
        name: "New customers",
        rule: "RFM recency >= 4 and frequency <= 2",
    },
    SegmentDefinition {
        id: "needs-attention",
        name: "Needs attention",
        rule: "every other buyer (RFM)",
    },
    SegmentDefinition {
        id: "high-value",
        name: "High value customers",
        rule: "lifetime value > 1000.00 and more than 5 paid orders",
    },
    SegmentDefinition {
        id: "buyers",
        name: "Buyers",
        rule: "at least one paid order (first purchase)",
    },
];

/// The rule of an affinity segment.
pub fn affinity_rule(category: &str) -> String {
    format!("more than 70 % of purchased items in category {category}")
}

/// Is `id` a computed segment (fixed or affinity)? The others are manual:
/// journeys add and remove customers with `update_segment` steps.
pub fn is_computed(id: &str) -> bool {
    SEGMENTS.iter().any(|s| s.id == id) || id.starts_with(AFFINITY_PREFIX)
}

/// The rule of a manual segment.
pub const MANUAL_RULE: &str = "added and removed by campaigns (update_segment steps)";

/// A computed segment's rule, if `id` names one.
pub fn rule_of(id: &str) -> Option<String> {
    SEGMENTS
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.rule.to_string())
        .or_else(|| id.strip_prefix(AFFINITY_PREFIX).map(affinity_rule))
}

/// RFM scores, each 1 (worst) to 5 (best).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rfm {
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
}

/// The recency, in days, of a customer who never bought (no delivered
/// order), as in seed 000's `calculateRFMSegments`: it scores 1.
pub const NEVER_BOUGHT_RECENCY_DAYS: i64 = 999;

/// Recency: days since the last delivered order (<= 30: 5, <= 60: 4, <= 90: 3, <= 180: 2, else 1).
pub fn score_recency(days: i64) -> u8 {
    match days {
        ..=30 => 5,
        31..=60 => 4,
        61..=90 => 3,
        91..=180 => 2,
        _ => 1,
    }
}

/// Frequency: delivered orders (0-1: 1, 2: 2, 3-4: 3, 5-7: 4, 8+: 5).
pub fn score_frequency(orders: u64) -> u8 {
    match orders {
        0 | 1 => 1,
        2 => 2,
        3 | 4 => 3,
        5..=7 => 4,
        _ => 5,
    }
}

/// Monetary: lifetime value in minor units (< 100.00: 1, < 250.00: 2, < 500.00: 3, < 1000.00: 4, else 5).
pub fn score_monetary(ltv_minor: i64) -> u8 {
    match ltv_minor {
        ..=9_999 => 1,
        10_000..=24_999 => 2,
        25_000..=49_999 => 3,
        50_000..=99_999 => 4,
        _ => 5,
    }
}

/// The RFM recency in days: since the last delivered order, or
/// [`NEVER_BOUGHT_RECENCY_DAYS`] without one.
pub fn recency_days(m: &ProfileMetrics) -> i64 {
    m.days_since_last_delivery.unwrap_or(NEVER_BOUGHT_RECENCY_DAYS)
}

impl Rfm {
    /// The scores of a buyer, as seed 000 computes them: recency and
    /// frequency on delivered orders (the seed's purchase is
    /// `OrderDelivered`; never delivered is 999 days), monetary on the
    /// lifetime value (paid less refunded; the seed sums payments, decision
    /// 0066). `None` before the first paid order: only buyers are scored.
    pub fn of(m: &ProfileMetrics) -> Option<Rfm> {
        m.days_since_last_transaction?;
        Some(Rfm {
            recency: score_recency(recency_days(m)),
            frequency: score_frequency(m.delivered_orders),
            monetary: score_monetary(m.lifetime_value_minor),
        })
    }

    /// The seed's `determineRFMSegment`, rule for rule, in its order.
    pub fn segment(&self) -> &'static str {
        if self.recency >= 4 && self.frequency >= 4 && self.monetary >= 4 {
            "champions"
        } else if self.frequency >= 4 {
            "loyal-customers"
        } else if self.recency <= 2 && self.frequency >= 3 && self.monetary >= 3 {
            "at-risk"
        } else if self.recency >= 4 && self.frequency <= 2 {
            "new-customers"
        } else {
            "needs-attention"
        }
    }
}

/// Why a deactivated customer left every segment.
pub const DEACTIVATED: &str = "customer deactivated";
/// Why an erased customer (or one being erased) left every segment.
pub const ERASED: &str = "customer erased";

/// The rule of fixed segment `id` (one of [`SEGMENTS`]).
fn fixed_rule(id: &str) -> String {
    SEGMENTS
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.rule.to_string())
        .unwrap_or_default()
}

/// The segments a customer with metrics `m` belongs to, each with why: the
/// segment's rule, the same for every member. A reason never holds the
/// customer's own figures (scores, values, shares): the membership events
/// outlive an erasure (decision 0065), so they must say nothing about anyone.
pub fn evaluate(m: &ProfileMetrics) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(rfm) = Rfm::of(m) else { return out };
    let segment = rfm.segment();
    out.insert(segment.to_string(), fixed_rule(segment));
    out.insert("buyers".into(), fixed_rule("buyers"));
    if m.lifetime_value_minor > HIGH_VALUE_LTV_MINOR && m.orders > HIGH_VALUE_MIN_ORDERS {
        out.insert("high-value".into(), fixed_rule("high-value"));
    }
    for (category, affinity) in &m.category_affinity {
        if *affinity > AFFINITY_THRESHOLD {
            out.insert(format!("{AFFINITY_PREFIX}{category}"), affinity_rule(category));
        }
    }
    out
}
