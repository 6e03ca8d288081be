//! The campaigns as the catalog has them at one moment, and the port the
//! engine reads them through.

use crate::journey::definition::Campaign;
use crate::ports::StoreError;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One version of a campaign, and whether the campaign is paused now.
#[derive(Debug, Clone, PartialEq)]
pub struct CampaignAt {
    pub campaign: Arc<Campaign>,
    pub paused: bool,
}

/// One campaign in a [`CatalogSnapshot`]: every published version (running
/// instances keep theirs), the current one, and whether it is paused.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    pub id: String,
    pub current: u64,
    pub paused: bool,
    pub versions: BTreeMap<u64, Arc<Campaign>>,
}

/// The campaigns as the catalog had them at one moment: what a page of
/// events (or one event, one timer, one sweep step) is handled against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogSnapshot {
    entries: BTreeMap<String, CatalogEntry>,
}

impl CatalogSnapshot {
    pub fn new(entries: impl IntoIterator<Item = CatalogEntry>) -> Self {
        CatalogSnapshot {
            entries: entries.into_iter().map(|e| (e.id.clone(), e)).collect(),
        }
    }

    /// The campaigns new instances may start on, each at its current
    /// version, in id order.
    pub fn active(&self) -> Vec<(Arc<Campaign>, u64)> {
        self.entries
            .values()
            .filter(|e| !e.paused)
            .filter_map(|e| e.versions.get(&e.current).map(|c| (c.clone(), e.current)))
            .collect()
    }

    /// One version of a campaign, with the campaign's paused state.
    pub fn version(&self, id: &str, version: u64) -> Option<CampaignAt> {
        let entry = self.entries.get(id)?;
        entry.versions.get(&version).map(|campaign| CampaignAt {
            campaign: campaign.clone(),
            paused: entry.paused,
        })
    }

    /// Every campaign, paused ones too, in id order.
    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }

    /// Every campaign id, paused ones too, in order.
    pub fn ids(&self) -> Vec<String> {
        self.entries.keys().cloned().collect()
    }

    /// Whether some version of some campaign, paused ones included (their
    /// instances may still be running), could act on `bus_event`: its
    /// trigger, an exit rule, a goal or a `wait_until` step matches the
    /// event's pattern. Conditions are not looked at (they may need the
    /// profile), so this is a superset: false means no journey can start,
    /// advance or exit on the event (decision 0043).
    pub fn may_act_on(&self, bus_event: &Value) -> bool {
        self.entries
            .values()
            .flat_map(|e| e.versions.values())
            .any(|campaign| event_patterns(campaign).any(|p| p.matches(bus_event)))
    }
}

/// Every pattern of a campaign an event is matched against: the trigger's,
/// the exit rules', the goals' and the `wait_until` steps'.
fn event_patterns(campaign: &Campaign) -> impl Iterator<Item = &crate::pattern::EventPattern> {
    std::iter::once(&campaign.trigger.pattern)
        .chain(campaign.exit_on.iter().chain(&campaign.goals).map(|r| &r.pattern))
        .chain(campaign.steps.iter().filter_map(|s| match s {
            crate::journey::definition::Step::WaitUntil(w) => Some(&w.pattern),
            _ => None,
        }))
}

/// Where campaign definitions come from.
#[async_trait]
pub trait CampaignCatalog: Send + Sync {
    /// The campaigns now: every version of every campaign, and which are
    /// paused. The engine takes one snapshot per page, event, timer or
    /// sweep step.
    async fn current(&self) -> Result<Arc<CatalogSnapshot>, StoreError>;

    /// The campaigns new instances may start on, each at its current version.
    async fn active(&self) -> Result<Vec<(Arc<Campaign>, u64)>, StoreError> {
        Ok(self.current().await?.active())
    }
    /// One version of a campaign (running instances keep theirs), with the
    /// campaign's paused state now.
    async fn version(&self, id: &str, version: u64) -> Result<Option<CampaignAt>, StoreError> {
        Ok(self.current().await?.version(id, version))
    }
    /// Every campaign id, paused ones too, in order.
    async fn ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.current().await?.ids())
    }
}

/// A fixed set of campaigns at version 1, never paused: the shipped
/// campaigns, or a test's.
pub struct FixedCatalog {
    snapshot: Arc<CatalogSnapshot>,
}

impl FixedCatalog {
    pub fn new(campaigns: Vec<Campaign>) -> Self {
        FixedCatalog {
            snapshot: Arc::new(CatalogSnapshot::new(campaigns.into_iter().map(|c| CatalogEntry {
                id: c.id.clone(),
                current: 1,
                paused: c.starts_paused,
                versions: BTreeMap::from([(1, Arc::new(c))]),
            }))),
        }
    }
}

#[async_trait]
impl CampaignCatalog for FixedCatalog {
    async fn current(&self) -> Result<Arc<CatalogSnapshot>, StoreError> {
        Ok(self.snapshot.clone())
    }
}
