//! The summary of one customer's activity day (`ActivityDaySummarized`):
//! retention folds a day of raw activity into it on the `activity-<id>`
//! stream ([`crate::retention`], decision 0021), and the profile metrics
//! ([`super::metrics`]) read it back in place of the raw events. It lives
//! with the activity it summarizes so that the customer context never
//! depends on retention.

use super::metrics::category_slug;
use crate::event::{EventCodecError, EventEnvelope};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The summary's event type.
pub const ACTIVITY_DAY_SUMMARIZED: &str = "ActivityDaySummarized";

/// One customer's activity of one UTC day, folded. No personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ActivityDaySummarized {
    pub day: NaiveDate,
    /// Raw events folded.
    pub events: u64,
    /// The versions of the first and last of them in the stream.
    pub first_version: u64,
    pub last_version: u64,
    pub first_at: DateTime<Utc>,
    pub last_at: DateTime<Utc>,
    /// Events per type.
    pub counts: BTreeMap<String, u64>,
    /// `ProductViewed` per product id.
    #[serde(default)]
    pub products_viewed: BTreeMap<String, u64>,
    /// `ProductViewed` per category slug.
    #[serde(default)]
    pub categories_viewed: BTreeMap<String, u64>,
    /// `CustomerLoggedIn` events, and the last one's time.
    #[serde(default)]
    pub logins: u64,
    #[serde(default)]
    pub last_login_at: Option<DateTime<Utc>>,
    /// Distinct session ids (the ids themselves are not kept).
    #[serde(default)]
    pub sessions: u64,
}

impl ActivityDaySummarized {
    /// Reads a stored summary.
    pub fn from_envelope(e: &EventEnvelope) -> Result<Self, EventCodecError> {
        serde_json::from_value(e.data.clone())
            .map_err(|err| EventCodecError(format!("{ACTIVITY_DAY_SUMMARIZED} {}: {err}", e.event_id)))
    }

    /// Folds the raw activity events of one day (`events` non-empty, all of `day`).
    pub fn fold(day: NaiveDate, events: &[&EventEnvelope]) -> Option<Self> {
        let first = events.iter().min_by_key(|e| e.version)?;
        let last = events.iter().max_by_key(|e| e.version)?;
        let mut s = ActivityDaySummarized {
            day,
            events: events.len() as u64,
            first_version: first.version,
            last_version: last.version,
            first_at: events.iter().map(|e| e.occurred_at).min()?,
            last_at: events.iter().map(|e| e.occurred_at).max()?,
            counts: BTreeMap::new(),
            products_viewed: BTreeMap::new(),
            categories_viewed: BTreeMap::new(),
            logins: 0,
            last_login_at: None,
            sessions: 0,
        };
        let mut sessions = BTreeSet::new();
        for e in events {
            *s.counts.entry(e.event_type.clone()).or_insert(0) += 1;
            let text = |name: &str| e.data.get(name).and_then(Value::as_str);
            if let Some(session) = text("session_id") {
                sessions.insert(session.to_string());
            }
            match e.event_type.as_str() {
                "ProductViewed" => {
                    if let Some(p) = text("product_id") {
                        *s.products_viewed.entry(p.to_string()).or_insert(0) += 1;
                    }
                    if let Some(c) = text("category").and_then(category_slug) {
                        *s.categories_viewed.entry(c).or_insert(0) += 1;
                    }
                }
                "CustomerLoggedIn" => {
                    s.logins += 1;
                    s.last_login_at = Some(s.last_login_at.map_or(e.occurred_at, |l| l.max(e.occurred_at)));
                }
                _ => {}
            }
        }
        s.sessions = sessions.len() as u64;
        Some(s)
    }
}
