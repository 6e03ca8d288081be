//! Campaigns as event-sourced, versioned data (decision 0009).
//!
//! Each campaign edited through the API has a stream `campaign-<id>`:
//! `CampaignPublished { definition }` (the campaign's version is the stream
//! version of that event), `CampaignPaused`, `CampaignResumed`. Ids without a
//! stream are the shipped campaigns at version 1. The first write to a
//! shipped id stores the shipped definition as version 1 in the same append,
//! so version 1 keeps meaning "as shipped" and running instances keep it.
//! The ids that have a stream are listed in the `campaigns` stream
//! (`CampaignRegistered`, appended before the first write; read deduplicated).
//! A pause exits the campaign's running instances one page at a time; each
//! page after the first is asked for by a `CampaignPauseContinued` on the
//! campaign's stream (decision 0033).

use super::campaigns::SHIPPED;
use super::definition::{Campaign, DefinitionError};
use super::engine::{CampaignAt, CampaignCatalog};
use crate::clock::Clock;
use crate::event::{envelopes, Actor, CommandMeta, DomainEvent};
use crate::ports::{AppendError, AppendRequest, EventStore, ExpectedVersion, StoreError};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The stream listing every campaign id that has a stream of its own.
pub const INDEX_STREAM: &str = "campaigns";

pub fn stream_id(campaign_id: &str) -> String {
    format!("campaign-{campaign_id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum CampaignEvent {
    CampaignPublished {
        definition: Value,
    },
    CampaignPaused,
    CampaignResumed,
    /// The pause has exited a page of the campaign's running instances and
    /// more may follow: the campaign function exits the next page, those
    /// after the instance id `after` in the journey index (decision 0033).
    CampaignPauseContinued {
        after: String,
    },
}

impl DomainEvent for CampaignEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum CampaignIndexEvent {
    CampaignRegistered { campaign_id: String },
}

impl DomainEvent for CampaignIndexEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// A campaign's current state, as its stream (or the shipped set) has it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCampaign {
    pub id: String,
    pub version: u64,
    pub paused: bool,
    pub definition: Value,
    pub campaign: Arc<Campaign>,
    /// Every published version: version → (definition, campaign).
    versions: BTreeMap<u64, (Value, Arc<Campaign>)>,
    /// The stream's version (0: no stream yet, a shipped campaign).
    stream_version: u64,
}

/// A shipped campaign: its definition as JSON and validated.
#[derive(Debug, Clone)]
struct Shipped {
    definition: Value,
    campaign: Arc<Campaign>,
}

fn load_shipped() -> BTreeMap<String, Shipped> {
    let mut out = BTreeMap::new();
    for (name, text) in SHIPPED {
        let definition: Value = match serde_yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(campaign = name, error = %e, "shipped campaign is not valid YAML");
                continue;
            }
        };
        match Campaign::from_value(&definition) {
            Ok(c) => {
                out.insert(
                    c.id.clone(),
                    Shipped {
                        definition,
                        campaign: Arc::new(c),
                    },
                );
            }
            Err(errors) => tracing::error!(campaign = name, ?errors, "shipped campaign is not valid"),
        }
    }
    out
}

/// The catalog the engine reads: stored campaigns first, the shipped ones otherwise.
pub struct StoredCatalog {
    events: Arc<dyn EventStore>,
    shipped: BTreeMap<String, Shipped>,
}

fn corrupt(stream: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("{stream}: {e}"))
}

impl StoredCatalog {
    /// Over `events`, with the shipped campaigns as the fallback.
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        StoredCatalog {
            events,
            shipped: load_shipped(),
        }
    }

    /// The ids that have a stream.
    async fn stored_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for e in self.events.read_stream(INDEX_STREAM, 0, usize::MAX).await? {
            let CampaignIndexEvent::CampaignRegistered { campaign_id } =
                CampaignIndexEvent::from_envelope(&e).map_err(|err| corrupt(INDEX_STREAM, err))?;
            if !ids.contains(&campaign_id) {
                ids.push(campaign_id);
            }
        }
        Ok(ids)
    }

    /// A campaign folded from its stream, or the shipped one; `None` if unknown.
    pub async fn get(&self, id: &str) -> Result<Option<StoredCampaign>, StoreError> {
        let stream = stream_id(id);
        let events = self.events.read_stream(&stream, 0, usize::MAX).await?;
        if events.is_empty() {
            return Ok(self.shipped.get(id).map(|s| StoredCampaign {
                id: id.to_string(),
                version: 1,
                paused: false,
                definition: s.definition.clone(),
                campaign: s.campaign.clone(),
                versions: BTreeMap::from([(1, (s.definition.clone(), s.campaign.clone()))]),
                stream_version: 0,
            }));
        }
        let mut versions = BTreeMap::new();
        let mut paused = false;
        let mut stream_version = 0;
        for e in &events {
            stream_version = e.version;
            match CampaignEvent::from_envelope(e).map_err(|err| corrupt(&stream, err))? {
                CampaignEvent::CampaignPublished { definition } => {
                    let campaign = Campaign::from_value(&definition)
                        .map_err(|errs| corrupt(&stream, format!("stored definition is invalid: {errs:?}")))?;
                    versions.insert(e.version, (definition, Arc::new(campaign)));
                }
                CampaignEvent::CampaignPaused => paused = true,
                CampaignEvent::CampaignResumed => paused = false,
                CampaignEvent::CampaignPauseContinued { .. } => {}
            }
        }
        let Some((version, (definition, campaign))) = versions.iter().next_back() else {
            return Err(corrupt(&stream, "no published definition"));
        };
        Ok(Some(StoredCampaign {
            id: id.to_string(),
            version: *version,
            paused,
            definition: definition.clone(),
            campaign: campaign.clone(),
            versions: versions.clone(),
            stream_version,
        }))
    }
}

#[async_trait]
impl CampaignCatalog for StoredCatalog {
    async fn active(&self) -> Result<Vec<(Arc<Campaign>, u64)>, StoreError> {
        let mut ids: Vec<String> = self.shipped.keys().cloned().collect();
        for id in self.stored_ids().await? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let mut out = Vec::new();
        for id in ids {
            if let Some(c) = self.get(&id).await? {
                if !c.paused {
                    out.push((c.campaign, c.version));
                }
            }
        }
        Ok(out)
    }

    async fn version(&self, id: &str, version: u64) -> Result<Option<CampaignAt>, StoreError> {
        Ok(self.get(id).await?.and_then(|c| {
            c.versions.get(&version).map(|(_, campaign)| CampaignAt {
                campaign: campaign.clone(),
                paused: c.paused,
            })
        }))
    }

    async fn ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = self.shipped.keys().cloned().collect();
        ids.extend(self.stored_ids().await?);
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CampaignError {
    #[error("the definition is invalid")]
    Invalid(Vec<DefinitionError>),
    #[error("campaign not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AppendError> for CampaignError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Store(s) => CampaignError::Store(s),
            AppendError::Conflict { .. } => {
                CampaignError::Conflict("the campaign was changed concurrently; retry".to_string())
            }
            other => CampaignError::Store(StoreError::Failed(other.to_string())),
        }
    }
}

/// Publishes, pauses and resumes campaigns.
pub struct CampaignService {
    catalog: Arc<StoredCatalog>,
    events: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
}

impl CampaignService {
    pub fn new(events: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        CampaignService {
            catalog: Arc::new(StoredCatalog::new(events.clone())),
            events,
            clock,
        }
    }

    /// The catalog the service writes (to hand to an engine).
    pub fn catalog(&self) -> Arc<StoredCatalog> {
        self.catalog.clone()
    }

    pub async fn get(&self, id: &str) -> Result<Option<StoredCampaign>, StoreError> {
        self.catalog.get(id).await
    }

    /// Validates and publishes a new version; `id` must be the definition's id.
    pub async fn put(&self, id: &str, definition: Value, actor: Actor) -> Result<StoredCampaign, CampaignError> {
        let campaign = Campaign::from_value(&definition).map_err(CampaignError::Invalid)?;
        if campaign.id != id {
            return Err(CampaignError::Invalid(vec![DefinitionError {
                path: "id".to_string(),
                message: format!("must equal the id in the path ({id})"),
            }]));
        }
        let current = self.catalog.get(id).await?;
        self.write(
            id,
            current.as_ref(),
            vec![CampaignEvent::CampaignPublished { definition }],
            actor,
        )
        .await
    }

    pub async fn pause(&self, id: &str, actor: Actor) -> Result<StoredCampaign, CampaignError> {
        let current = self.catalog.get(id).await?.ok_or(CampaignError::NotFound)?;
        if current.paused {
            return Err(CampaignError::Conflict("the campaign is already paused".to_string()));
        }
        self.write(id, Some(&current), vec![CampaignEvent::CampaignPaused], actor)
            .await
    }

    pub async fn resume(&self, id: &str, actor: Actor) -> Result<StoredCampaign, CampaignError> {
        let current = self.catalog.get(id).await?.ok_or(CampaignError::NotFound)?;
        if !current.paused {
            return Err(CampaignError::Conflict("the campaign is not paused".to_string()));
        }
        self.write(id, Some(&current), vec![CampaignEvent::CampaignResumed], actor)
            .await
    }

    async fn write(
        &self,
        id: &str,
        current: Option<&StoredCampaign>,
        mut events: Vec<CampaignEvent>,
        actor: Actor,
    ) -> Result<StoredCampaign, CampaignError> {
        let meta = CommandMeta::new(actor);
        let now = self.clock.now();
        let stream = stream_id(id);
        let stream_version = current.map_or(0, |c| c.stream_version);
        let expected = if stream_version == 0 {
            // First write: register the id (reading deduplicates), and keep
            // a shipped definition as version 1.
            let register = envelopes(
                INDEX_STREAM,
                None,
                &[CampaignIndexEvent::CampaignRegistered {
                    campaign_id: id.to_string(),
                }],
                &meta,
                now,
            )
            .map_err(|e| StoreError::Failed(e.to_string()))?;
            self.events
                .append(AppendRequest {
                    stream_id: INDEX_STREAM.to_string(),
                    expected: ExpectedVersion::Any,
                    events: register,
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await?;
            if let Some(c) = current {
                events.insert(
                    0,
                    CampaignEvent::CampaignPublished {
                        definition: c.definition.clone(),
                    },
                );
            }
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exactly(stream_version)
        };
        let envs = envelopes(&stream, None, &events, &meta, now).map_err(|e| StoreError::Failed(e.to_string()))?;
        self.events
            .append(AppendRequest {
                stream_id: stream,
                expected,
                events: envs,
                reservations: Vec::new(),
                receipt: None,
            })
            .await?;
        self.catalog.get(id).await?.ok_or(CampaignError::NotFound)
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
