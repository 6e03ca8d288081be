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
//!
//! The `campaigns` stream is also the catalog's change signal (decision
//! 0043): every publish, pause and resume appends a `CampaignRegistered` of
//! its campaign there after its own append, so a process keeps the catalog
//! and checks it with one read of that stream after the version it has seen
//! (usually empty), re-reading only the campaigns named since.

mod aggregate;

pub use aggregate::{CampaignAggregate, CampaignCommand, CampaignInput, CampaignState};

use super::campaigns::SHIPPED;
use super::definition::{Campaign, DefinitionError};
use super::engine::{CampaignCatalog, CatalogEntry, CatalogSnapshot};
use super::templates::{stored_ids, KnownTemplates};
use crate::aggregate::{AggregateError, AggregateService, Executed};
use crate::clock::{Clock, SystemClock};
use crate::event::{Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::failure::{Classify, Failure, FailureKind};
use crate::ports::{append_unordered, AppendError, EventStore, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
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

/// One line of the campaign list: a campaign at its current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignSummary {
    pub id: String,
    pub name: String,
    pub version: u64,
    pub paused: bool,
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

/// How long a process trusts its catalog between two full reads. The change
/// signal misses only a write whose process stopped between the campaign's
/// append and its signal (the API then answered an error); such a write
/// takes effect within this bound (decision 0043).
pub const FULL_READ_EVERY: chrono::Duration = chrono::Duration::minutes(5);

/// The catalog the engine reads: stored campaigns first, the shipped ones
/// otherwise. It keeps the campaigns in the process: [`CampaignCatalog::current`]
/// reads the `campaigns` stream after the version it has seen (one Query,
/// usually empty) and re-reads only the campaigns a new entry names; every
/// [`FULL_READ_EVERY`] it reads them all again.
pub struct StoredCatalog {
    events: Arc<dyn EventStore>,
    /// The campaigns' streams, loaded through the command path.
    campaigns: AggregateService<CampaignAggregate>,
    shipped: BTreeMap<String, Shipped>,
    clock: Arc<dyn Clock>,
    full_read_every: chrono::Duration,
    cache: futures::lock::Mutex<Option<Cached>>,
}

/// What a [`StoredCatalog`] keeps between calls.
struct Cached {
    /// The `campaigns` stream's version read.
    index_version: u64,
    /// When every campaign was last read.
    read_at: DateTime<Utc>,
    entries: BTreeMap<String, CatalogEntry>,
    snapshot: Arc<CatalogSnapshot>,
}

impl StoredCampaign {
    fn entry(&self) -> CatalogEntry {
        CatalogEntry {
            id: self.id.clone(),
            current: self.version,
            paused: self.paused,
            versions: self.versions.iter().map(|(v, (_, c))| (*v, c.clone())).collect(),
        }
    }
}

fn registered_id(e: &crate::event::EventEnvelope) -> Result<String, StoreError> {
    let CampaignIndexEvent::CampaignRegistered { campaign_id } =
        CampaignIndexEvent::from_envelope(e).map_err(|err| corrupt(INDEX_STREAM, err))?;
    Ok(campaign_id)
}

fn corrupt(stream: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("{stream}: {e}"))
}

impl StoredCatalog {
    /// Over `events`, with the shipped campaigns as the fallback, read in
    /// full every [`FULL_READ_EVERY`].
    pub fn new(events: Arc<dyn EventStore>) -> Self {
        Self::reading_all_every(events, Arc::new(SystemClock), FULL_READ_EVERY)
    }

    /// Over `events`, read in full every `full_read_every` by `clock`.
    pub fn reading_all_every(
        events: Arc<dyn EventStore>,
        clock: Arc<dyn Clock>,
        full_read_every: chrono::Duration,
    ) -> Self {
        StoredCatalog {
            campaigns: AggregateService::new(events.clone(), clock.clone()),
            events,
            shipped: load_shipped(),
            clock,
            full_read_every,
            cache: futures::lock::Mutex::new(None),
        }
    }

    /// Every campaign read: the `campaigns` stream from its start and each
    /// campaign's stream (or its shipped definition).
    async fn read_all(&self, now: DateTime<Utc>) -> Result<Cached, StoreError> {
        let index = self.events.read_stream(INDEX_STREAM, 0, usize::MAX).await?;
        let mut ids: BTreeSet<String> = self.shipped.keys().cloned().collect();
        for e in &index {
            ids.insert(registered_id(e)?);
        }
        let mut entries = BTreeMap::new();
        for id in ids {
            if let Some(c) = self.get(&id).await? {
                entries.insert(id, c.entry());
            }
        }
        Ok(Cached {
            index_version: index.last().map_or(0, |e| e.version),
            read_at: now,
            snapshot: Arc::new(CatalogSnapshot::new(entries.values().cloned())),
            entries,
        })
    }

    /// A campaign folded from its stream (through the command path), or the
    /// shipped one; `None` if unknown. A stored definition that no longer
    /// validates, or an event that does not decode, is a failed store.
    pub async fn get(&self, id: &str) -> Result<Option<StoredCampaign>, StoreError> {
        let stream = stream_id(id);
        let state = match self.campaigns.load_stream(id).await {
            Ok((state, _)) => state,
            Err(AggregateError::Store(e)) => return Err(e),
            Err(e) => return Err(corrupt(&stream, e)),
        };
        let Some(state) = state else {
            return Ok(self.shipped.get(id).map(|s| StoredCampaign {
                id: id.to_string(),
                version: 1,
                paused: s.campaign.starts_paused,
                definition: s.definition.clone(),
                campaign: s.campaign.clone(),
                versions: BTreeMap::from([(1, (s.definition.clone(), s.campaign.clone()))]),
                stream_version: 0,
            }));
        };
        let mut versions = BTreeMap::new();
        for (version, definition) in state.versions {
            // Its templates were checked when it was published, and are never deleted.
            let campaign = Campaign::from_value_with(&definition, &KnownTemplates::Any)
                .map_err(|errs| corrupt(&stream, format!("stored definition is invalid: {errs:?}")))?;
            versions.insert(version, (definition, Arc::new(campaign)));
        }
        let Some((version, (definition, campaign))) = versions.iter().next_back() else {
            return Err(corrupt(&stream, "no published definition"));
        };
        Ok(Some(StoredCampaign {
            id: id.to_string(),
            version: *version,
            paused: state.paused,
            definition: definition.clone(),
            campaign: campaign.clone(),
            versions: versions.clone(),
            stream_version: state.version,
        }))
    }

    /// The shipped definition of `id`, if it is a shipped campaign.
    fn shipped_definition(&self, id: &str) -> Option<Value> {
        self.shipped.get(id).map(|s| s.definition.clone())
    }
}

#[async_trait]
impl CampaignCatalog for StoredCatalog {
    /// The kept campaigns, after one read of the `campaigns` stream past the
    /// version seen: the campaigns its new entries name are read again. A
    /// first call, or one [`FULL_READ_EVERY`] after the last full read,
    /// reads every campaign. Calls wait for each other, so a call returns
    /// the campaigns as they were at some moment after it began.
    async fn current(&self) -> Result<Arc<CatalogSnapshot>, StoreError> {
        let mut cache = self.cache.lock().await;
        let now = self.clock.now();
        let cached = match cache.as_mut() {
            Some(cached) if now < cached.read_at + self.full_read_every => cached,
            _ => {
                let fresh = self.read_all(now).await?;
                return Ok(cache.insert(fresh).snapshot.clone());
            }
        };
        let since = self
            .events
            .read_stream(INDEX_STREAM, cached.index_version, usize::MAX)
            .await?;
        let Some(last) = since.last().map(|e| e.version) else {
            return Ok(cached.snapshot.clone());
        };
        let mut named = BTreeSet::new();
        for e in &since {
            named.insert(registered_id(e)?);
        }
        for id in named {
            match self.get(&id).await? {
                Some(c) => {
                    cached.entries.insert(id, c.entry());
                }
                None => {
                    cached.entries.remove(&id);
                }
            }
        }
        cached.index_version = last;
        cached.snapshot = Arc::new(CatalogSnapshot::new(cached.entries.values().cloned()));
        Ok(cached.snapshot.clone())
    }
}

/// Why a campaign command was not applied; nothing was written. Its kind
/// ([`Classify`]) says what a caller does: a refusal is poison, a stream
/// another writer changed first a conflict (retry the request), a store
/// failure the store's own kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CampaignError {
    #[error("the definition is invalid")]
    Invalid(Vec<DefinitionError>),
    #[error("campaign not found")]
    NotFound,
    #[error("the campaign is already paused")]
    AlreadyPaused,
    #[error("the campaign is not paused")]
    NotPaused,
    /// A rollback to a version the campaign never published.
    #[error("the campaign has no version {0}")]
    UnknownVersion(u64),
    /// A rollback to the current version, or to one whose definition the
    /// current version already is (decision 0070).
    #[error("version {to}'s definition is already the current one (version {current})")]
    AlreadyCurrent { to: u64, current: u64 },
    /// Another writer changed the campaign's stream between its read and
    /// this append (not retried here: the caller retries the request).
    #[error("the campaign was changed concurrently; retry")]
    ChangedConcurrently,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The command path failed otherwise (a stored event that does not
    /// decode, an append the store refused), its error kept.
    #[error(transparent)]
    Failed(Failure),
}

impl Classify for CampaignError {
    fn kind(&self) -> FailureKind {
        match self {
            CampaignError::Invalid(_)
            | CampaignError::NotFound
            | CampaignError::AlreadyPaused
            | CampaignError::NotPaused
            | CampaignError::UnknownVersion(_)
            | CampaignError::AlreadyCurrent { .. } => FailureKind::Poison,
            CampaignError::ChangedConcurrently => FailureKind::Conflict,
            CampaignError::Store(e) => e.kind(),
            CampaignError::Failed(f) => f.kind(),
        }
    }
}

impl From<AggregateError<CampaignError>> for CampaignError {
    fn from(e: AggregateError<CampaignError>) -> Self {
        match e {
            AggregateError::Rejected(e) => e,
            AggregateError::Store(e) => CampaignError::Store(e),
            AggregateError::Contended { .. } => CampaignError::ChangedConcurrently,
            other => CampaignError::Failed(Failure::from_error("campaign", other)),
        }
    }
}

/// Publishes, pauses and resumes campaigns.
pub struct CampaignService {
    catalog: Arc<StoredCatalog>,
    events: Arc<dyn EventStore>,
    campaigns: AggregateService<CampaignAggregate>,
    clock: Arc<dyn Clock>,
}

impl CampaignService {
    pub fn new(events: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        CampaignService {
            catalog: Arc::new(StoredCatalog::new(events.clone())),
            campaigns: AggregateService::new(events.clone(), clock.clone()),
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
        self.write(id, CampaignCommand::Publish { definition }, actor).await
    }

    pub async fn pause(&self, id: &str, actor: Actor) -> Result<StoredCampaign, CampaignError> {
        self.write(id, CampaignCommand::Pause, actor).await
    }

    pub async fn resume(&self, id: &str, actor: Actor) -> Result<StoredCampaign, CampaignError> {
        self.write(id, CampaignCommand::Resume, actor).await
    }

    /// Publishes the definition of version `to` again, as the new current
    /// version (decision 0070). Running instances keep their version; a
    /// paused campaign stays paused.
    pub async fn rollback(&self, id: &str, to: u64, actor: Actor) -> Result<StoredCampaign, CampaignError> {
        self.write(id, CampaignCommand::Rollback { to }, actor).await
    }

    /// Every campaign the catalog knows (shipped and stored, paused ones
    /// too), in id order, at its current version: from the service's kept
    /// catalog, which reads only the `campaigns` stream past the version it
    /// has seen (decision 0043).
    pub async fn list(&self) -> Result<Vec<CampaignSummary>, StoreError> {
        let snapshot = self.catalog.current().await?;
        Ok(snapshot
            .entries()
            .filter_map(|e| {
                e.versions.get(&e.current).map(|c| CampaignSummary {
                    id: e.id.clone(),
                    name: c.name.clone(),
                    version: e.current,
                    paused: e.paused,
                })
            })
            .collect())
    }

    /// Appends a `CampaignRegistered` of `id` to the `campaigns` stream:
    /// before a campaign's first write (the listing), and after every write
    /// (the change signal).
    async fn register(&self, id: &str, meta: &CommandMeta, now: DateTime<Utc>) -> Result<(), AppendError> {
        let register = [CampaignIndexEvent::CampaignRegistered {
            campaign_id: id.to_string(),
        }];
        append_unordered(self.events.as_ref(), INDEX_STREAM, &register, meta, now).await?;
        Ok(())
    }

    /// Runs `command` once through the command path, on the stream as read
    /// now: a writer that changed it in between makes it a
    /// [`CampaignError::ChangedConcurrently`] (not retried here). The first
    /// write of an id registers it first (once the command is known to be
    /// accepted), and every write is signalled after its append.
    async fn write(&self, id: &str, command: CampaignCommand, actor: Actor) -> Result<StoredCampaign, CampaignError> {
        let meta = CommandMeta::new(actor);
        // A definition it publishes may name a stored template (decision 0077).
        let templates = match command {
            CampaignCommand::Publish { .. } | CampaignCommand::Rollback { .. } => {
                KnownTemplates::With(stored_ids(self.events.as_ref()).await?)
            }
            _ => KnownTemplates::Shipped,
        };
        let input = CampaignInput {
            shipped: self.catalog.shipped_definition(id),
            templates,
        };
        let (state, _) = self.campaigns.load_stream(id).await?;
        if state.is_none() {
            // First write: refusals first (nothing is registered for them),
            // then register the id (reading deduplicates).
            let now = self.clock.now();
            let ctx = crate::aggregate::DecideContext { id, now, input: &input };
            <CampaignAggregate as crate::aggregate::Aggregate>::decide(None, &command, &ctx)?;
            self.register(id, &meta, now).await.map_err(append_failed)?;
        }
        let no_answer = |_: &CampaignState, _: &[EventEnvelope]| (200, Value::Null);
        match self
            .campaigns
            .try_once(id, state, &command, &input, &meta, None, &no_answer)
            .await?
        {
            Some(Executed::Applied { .. }) => {}
            None => return Err(CampaignError::ChangedConcurrently),
            // Only a command with an idempotency key is answered from a receipt.
            Some(Executed::Replayed { .. }) => {
                return Err(CampaignError::Store(StoreError::Failed(
                    "answered from a receipt it never asked for".into(),
                )))
            }
        }
        // The change signal, after the append: a catalog that reads it
        // reads this campaign again (decision 0043). If it is lost, the
        // change is stored and reaches the catalogs at their next full read.
        if let Err(e) = self.register(id, &meta, self.clock.now()).await {
            tracing::warn!(campaign_id = id, error = %e, "the campaign changed, but its change signal was not written: running catalogs see it at their next full read");
        }
        self.catalog.get(id).await?.ok_or(CampaignError::NotFound)
    }
}

/// A failed append of the `campaigns` stream as the command's error.
fn append_failed(e: AppendError) -> CampaignError {
    match e {
        AppendError::Store(e) => CampaignError::Store(e),
        AppendError::Conflict { .. } => CampaignError::ChangedConcurrently,
        other => CampaignError::Failed(Failure::from_error(INDEX_STREAM, other)),
    }
}

#[cfg(test)]
mod tests;
