//! The credit of an order under each model: pure, in whole basis points
//! and whole minor units, split by largest remainder.

use super::{Model, Touchpoint, DECAY_DAYS, DIRECT, FULL_CREDIT, LOOKBACK_DAYS};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// Time-decay weights are exact integers: exp(-age / 7 d) scaled by 2^40.
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
            let decay = Duration::days(DECAY_DAYS).num_milliseconds() as f64;
            touches
                .iter()
                .map(|t| {
                    let age = (order_at - t.at).num_milliseconds().max(0) as f64;
                    (((-age / decay).exp() * DECAY_SCALE).round() as u128).max(1)
                })
                .collect()
        }
        // 40 % first, 40 % last and 20 % split evenly over the middle, as the
        // seed has it; one touchpoint takes it all, as the seed does (it falls
        // back to first touch). Two: 50/50, which is ours, not the seed's:
        // its code gives 40 + 40 and leaves 20 % to no one (decision 0013).
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
