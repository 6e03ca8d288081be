//! The journey engine: the campaign consumer's application service. For each
//! event of a customer it starts the instances whose trigger matches (at most
//! one per dedupe key, by construction), hands the event to the customer's
//! running instances (exits act at once, mid-wait), and for each fired timer
//! advances the instance it belongs to. Timers are set and deleted through the
//! [`Scheduler`] port after the instance's events are stored, and the journey
//! index is written last. A start also writes the instance's index lines at
//! version 0 before its append, so the customer's next events find an
//! instance whose start stopped half-way (one more index write per start).
//!
//! Those three writes are not one transaction, so the engine heals what a
//! crash between them leaves (decision 0033): a start or step that finds its
//! events already stored, while the index is behind the stream, re-arms the
//! pending timer (same deterministic name) and writes the index; the
//! [`JourneyEngine::sweep`] walks the running instances a page at a time and
//! re-arms missing timers or fires overdue ones. A paused campaign sends
//! nothing more: a timer or event reaching one of its instances exits it, and
//! pausing exits them a page at a time (`CampaignPauseContinued`).
//!
//! The queues do not keep order, so a start, and a step that runs on, look
//! back at the customer's events recorded after the trigger and catch up on
//! them in the same append (decision 0033, [`JourneyEngine::advance`]): an
//! exit event or an awaited event that reached the engine before the
//! instance existed still acts on it, and its later delivery changes nothing.
//! The sweep also removes the index lines of starts whose append never came
//! ([`ORPHAN_LINE_GRACE`]).
//!
//! Each page, event, timer or sweep step is handled against one
//! [`CatalogSnapshot`] of the campaigns, which the stored catalog keeps in
//! the process and checks with one read (decision 0043); an event no version
//! of any campaign could act on ([`CatalogSnapshot::may_act_on`]) reads
//! nothing more, neither the profile nor the journey index.

use super::catalog::{self as campaign_store, CampaignEvent};
use super::definition::Campaign;
use super::instance::{self, JourneyContext, JourneyEvent, JourneyInput, JourneyInstance, Recorded, TriggerRef};
use crate::bus::BusEntry;
use crate::clock::Clock;
use crate::consent::ledger;
use crate::customer::streams::CUSTOMER_STREAMS;
use crate::customer::views;
use crate::event::{Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::ports::{AppendError, AppendRequest, EventStore, ExpectedVersion, ReadModelStore, ReadOp, StoreError};
use crate::scheduler::{Scheduler, SchedulerError, TimerPayload};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// The read-model namespace of the engine's index: customer → instances.
pub use crate::vocabulary::streams::JOURNEY_INDEX;

/// The journey-index partition listing a campaign's running instances (an
/// instance leaves it when it exits, so pausing and sweeping walk only the
/// live ones).
pub fn campaign_partition(campaign_id: &str) -> String {
    format!("campaign:{campaign_id}")
}

/// The sort key of a message's entry in the journey index (partition: the message id).
pub const MESSAGE_SORT: &str = "message";

/// How many running instances one pause step exits; a full page asks for the
/// next with a `CampaignPauseContinued`.
pub const PAUSE_PAGE: usize = 100;

/// A timer re-armed by healing is due at least this far ahead: EventBridge
/// Scheduler refuses an `at()` in the past and fires with a minute's
/// precision.
pub const REARM_MARGIN: chrono::Duration = chrono::Duration::minutes(1);

/// A wait whose due time is this far past is overdue: its timer was lost
/// downstream (or the Scheduler still cannot deliver it), and the sweep fires
/// the step itself. The step is appended at the instance's expected version,
/// so a timer that does arrive later finds nothing to do.
pub const OVERDUE_AFTER: chrono::Duration = chrono::Duration::minutes(15);

/// A version-0 index line (written by a start before its append) whose
/// instance still has no stream this long after it was written is an
/// orphan: the start stopped before its append and its trigger never came
/// back. The sweep removes it. An hour is far past any redelivery of the
/// trigger's queue message (six visibility timeouts of a few minutes).
pub const ORPHAN_LINE_GRACE: chrono::Duration = chrono::Duration::hours(1);

/// The read-model namespace where the sweep keeps its place.
pub const SWEEP: &str = "journey-sweep";

/// The `stream_id` of a timer whose firing runs one sweep step
/// ([`JourneyEngine::on_timer`]); see [`sweep_timer`].
pub const SWEEP_STREAM: &str = "journey-sweep";

const SWEEP_CURSOR: &str = "cursor";

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
            super::definition::Step::WaitUntil(w) => Some(&w.pattern),
            _ => None,
        }))
}

/// The event types the engine acts on whatever the campaigns say: they end
/// every running journey of the customer.
const ENDS_JOURNEYS: &[&str] = &["CustomerDeactivated", "CustomerErasureRequested", "CustomerErased"];

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
                paused: false,
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

/// One line of the journey index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexedInstance {
    pub instance_id: String,
    pub campaign_id: String,
    pub campaign_version: u64,
    pub status: instance::InstanceStatus,
    pub current_step: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// The instance's stream version this line shows (0 in lines written
    /// before it was recorded).
    #[serde(default)]
    pub version: u64,
    /// Whose instance it is (absent in lines written before it was
    /// recorded): the sweep, meeting an orphaned start through its
    /// campaign's line, removes the customer's line too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// Worth retrying (the store or the scheduler was unavailable, or writers kept conflicting).
    #[error("retry: {0}")]
    Retry(String),
    /// Not worth retrying: park it.
    #[error("{0}")]
    Poison(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => EngineError::Retry(m),
            StoreError::Failed(m) => EngineError::Poison(m),
        }
    }
}

impl From<SchedulerError> for EngineError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::Unavailable(m) => EngineError::Retry(m),
            SchedulerError::Refused(m) => EngineError::Poison(m),
        }
    }
}

/// What handling one event or timer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineOutcome {
    pub started: Vec<String>,
    pub advanced: Vec<String>,
    pub messages: Vec<String>,
    /// Instances whose timer and index were made good after a crash had
    /// left them behind their stream.
    pub healed: Vec<String>,
}

/// What a stored decision descends from: the correlation id it carries on,
/// and the event that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cause {
    correlation_id: Uuid,
    causation_id: Uuid,
}

impl Cause {
    /// The cause of a decision taken because of `e`: its correlation, and `e` itself.
    fn of(e: &EventEnvelope) -> Self {
        Cause {
            correlation_id: e.correlation_id,
            causation_id: e.event_id,
        }
    }

    /// The metadata of the command this cause leads to. The one place where
    /// the engine sets correlation and causation: a start (from its trigger),
    /// a step (from its input event, or for a timer from the event that set
    /// it) and a pause's continuation (from the step before it) all go
    /// through here, so "why was this message sent?" can walk back from any
    /// journey event to its trigger.
    fn meta(self, actor: Actor) -> CommandMeta {
        CommandMeta {
            command_id: Uuid::now_v7(),
            correlation_id: self.correlation_id,
            causation_id: Some(self.causation_id),
            actor,
        }
    }
}

/// An instance as its stream has it: the folded state, and each event with
/// its stored envelope.
pub struct LoadedInstance {
    pub state: JourneyInstance,
    events: Vec<(JourneyEvent, u64)>,
    envelopes: Vec<EventEnvelope>,
}

impl LoadedInstance {
    /// What a decision without an outside event descends from: for a timer,
    /// the event that set it; otherwise the instance's latest event. `None`
    /// only for an empty stream, which no loaded instance has.
    fn own_cause(&self) -> Option<Cause> {
        let set_at = self.state.waiting.as_ref().map(|w| w.set_at_version);
        self.envelopes
            .iter()
            .rev()
            .find(|e| set_at.is_none_or(|v| e.version == v))
            .or(self.envelopes.last())
            .map(Cause::of)
    }
}

/// How much one [`JourneyEngine::sweep`] call may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepBudget {
    /// Index entries per read.
    pub page_size: usize,
    /// Reads (pages) per call.
    pub pages: usize,
    /// After a finished walk, the next one starts this much later at the earliest.
    pub rest: chrono::Duration,
}

impl Default for SweepBudget {
    /// Two pages of 100: a few seconds of a campaign function invocation.
    fn default() -> Self {
        SweepBudget {
            page_size: 100,
            pages: 2,
            rest: chrono::Duration::hours(1),
        }
    }
}

impl SweepBudget {
    /// The default, with what a sweep timer's `data` sets instead
    /// (`page_size`, `pages`, `rest_minutes`; each optional).
    pub fn from_timer_data(data: &Value) -> Self {
        let number = |key: &str| data.get(key).and_then(Value::as_u64);
        let default = SweepBudget::default();
        SweepBudget {
            page_size: number("page_size").map_or(default.page_size, |n| n.clamp(1, 1000) as usize),
            pages: number("pages").map_or(default.pages, |n| n.clamp(1, 100) as usize),
            rest: number("rest_minutes").map_or(default.rest, |n| {
                chrono::Duration::minutes(i64::try_from(n).unwrap_or(i64::MAX).min(60 * 24 * 30))
            }),
        }
    }
}

/// Where the sweep stands (the `journey-sweep` read model).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepCursor {
    /// The campaign being walked and the last instance id done in it; none
    /// between walks.
    #[serde(default)]
    pub position: Option<SweepPosition>,
    #[serde(default)]
    pub walk_started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_walk_finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPosition {
    pub campaign_id: String,
    #[serde(default)]
    pub after: Option<String>,
}

/// What one sweep call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Index pages read.
    pub pages: usize,
    /// Running instances looked at.
    pub examined: usize,
    /// Instances whose missing timer was created again.
    pub rearmed: Vec<String>,
    /// Instances whose overdue step was run by the sweep.
    pub fired: Vec<String>,
    /// Instances of paused campaigns that were exited.
    pub exited: Vec<String>,
    /// Instances whose index (and timer) lagged their stream and were made good.
    pub healed: Vec<String>,
    /// Instances whose version-0 index lines were removed: announced by a
    /// start whose append never happened, older than [`ORPHAN_LINE_GRACE`].
    pub orphans_removed: Vec<String>,
    /// Messages the fired steps requested.
    pub messages: Vec<String>,
    /// This call finished a walk over every campaign.
    pub finished_walk: bool,
    /// Nothing to do yet: the last walk finished less than the rest ago.
    pub resting: bool,
}

/// The timer a recurring schedule can fire to run the sweep: a fired timer
/// on [`SWEEP_STREAM`] makes [`JourneyEngine::on_timer`] run one
/// [`JourneyEngine::sweep`] step, with the budget its `data` sets
/// ([`SweepBudget::from_timer_data`]). Its `due_at` is not read.
pub fn sweep_timer(now: DateTime<Utc>) -> TimerPayload {
    TimerPayload {
        name: "crm-journey-sweep".to_string(),
        kind: crate::scheduler::TimerKind::JourneyWait,
        stream_id: SWEEP_STREAM.to_string(),
        customer_id: None,
        due_at: now,
        set_at_version: 0,
        data: Value::Null,
    }
}

pub struct JourneyEngine {
    events: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    scheduler: Arc<dyn Scheduler>,
    catalog: Arc<dyn CampaignCatalog>,
    clock: Arc<dyn Clock>,
}

const MAX_ATTEMPTS: u32 = 8;

impl JourneyEngine {
    pub fn new(
        events: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        scheduler: Arc<dyn Scheduler>,
        catalog: Arc<dyn CampaignCatalog>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        JourneyEngine {
            events,
            docs,
            scheduler,
            catalog,
            clock,
        }
    }

    /// The engine's "now".
    /// The read models the engine reads (instances, consent, profiles).
    pub fn docs(&self) -> &Arc<dyn ReadModelStore> {
        &self.docs
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The customer's instances, as the index has them.
    pub async fn instances_of(&self, customer_id: &str) -> Result<Vec<IndexedInstance>, StoreError> {
        self.docs
            .list(JOURNEY_INDEX, customer_id, "", None, 1000)
            .await?
            .into_iter()
            .map(|(_, v)| serde_json::from_value(v).map_err(|e| StoreError::Failed(format!("journey index: {e}"))))
            .collect()
    }

    /// One instance, folded from its stream.
    pub async fn load(&self, instance_id: &str) -> Result<Option<JourneyInstance>, EngineError> {
        Ok(self.load_history(instance_id).await?.map(|l| l.state))
    }

    /// One instance with its events.
    pub async fn load_history(&self, instance_id: &str) -> Result<Option<LoadedInstance>, EngineError> {
        let envelopes = self
            .events
            .read_stream(&instance::stream_id(instance_id), 0, usize::MAX)
            .await?;
        let mut state = None;
        let mut events = Vec::with_capacity(envelopes.len());
        for e in &envelopes {
            let typed = JourneyEvent::from_envelope(e).map_err(|e| EngineError::Poison(e.to_string()))?;
            state = instance::evolve(state, &typed, e.occurred_at, e.version);
            events.push((typed, e.version));
        }
        Ok(state.map(|state| LoadedInstance {
            state,
            events,
            envelopes,
        }))
    }

    async fn context_parts(&self, customer_id: &str) -> Result<(chrono_tz::Tz, Option<Value>), EngineError> {
        let profile = views::customer_profile(self.docs.as_ref(), customer_id).await?;
        let tz = profile
            .as_ref()
            .and_then(|p| p.customer.preferences.timezone.parse::<chrono_tz::Tz>().ok())
            .unwrap_or(chrono_tz::UTC);
        let json = profile.map(|p| serde_json::to_value(p).unwrap_or(Value::Null));
        Ok((tz, json))
    }

    /// The campaigns now, as the catalog has them: a page handled against
    /// one snapshot reads the catalog once ([`JourneyEngine::on_event_in`]).
    pub async fn catalog_now(&self) -> Result<Arc<CatalogSnapshot>, EngineError> {
        Ok(self.catalog.current().await?)
    }

    /// Handles one stored event of a customer, against the catalog as it is now.
    pub async fn on_event(&self, envelope: &EventEnvelope) -> Result<EngineOutcome, EngineError> {
        let catalog = self.catalog.current().await?;
        self.on_event_in(&catalog, envelope).await
    }

    /// Handles one stored event of a customer against `catalog` (the
    /// snapshot its page is handled against). An event no version of any
    /// campaign could act on ([`CatalogSnapshot::may_act_on`]), and that
    /// does not end journeys (deactivation, erasure), reads nothing more:
    /// neither the profile nor the journey index (decision 0043).
    pub async fn on_event_in(
        &self,
        catalog: &CatalogSnapshot,
        envelope: &EventEnvelope,
    ) -> Result<EngineOutcome, EngineError> {
        let mut outcome = EngineOutcome::default();
        // A pause, or the next page of one: exit a page of the campaign's instances.
        if let Some(campaign_id) = envelope.stream_id.strip_prefix("campaign-") {
            if matches!(
                envelope.event_type.as_str(),
                "CampaignPaused" | "CampaignPauseContinued"
            ) {
                return self.exit_paused_page(campaign_id, Some(envelope)).await;
            }
            return Ok(outcome);
        }
        let Some(customer_id) = envelope.customer_id.clone() else {
            return Ok(outcome);
        };
        if envelope.stream_id.starts_with("journey-") {
            return Ok(outcome);
        }
        let bus_event = BusEntry::for_event(envelope.clone()).to_event_json("000000000000", "local");
        if !ENDS_JOURNEYS.contains(&envelope.event_type.as_str()) && !catalog.may_act_on(&bus_event) {
            return Ok(outcome);
        }
        let (tz, profile) = self.context_parts(&customer_id).await?;
        let now = self.clock.now();
        let ctx = JourneyContext {
            now,
            timezone: tz,
            profile: profile.as_ref(),
        };

        // Running instances first: an exit must act even if the same event
        // would also start something. Those of anonymous profiles merged into
        // the customer are theirs too (identity resolution).
        let merged: Vec<String> = profile
            .as_ref()
            .and_then(|p| p.get("merged_profiles"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default();
        let mut running = self.instances_of(&customer_id).await?;
        for profile_id in &merged {
            running.extend(self.instances_of(profile_id).await?);
        }
        for indexed in running {
            if indexed.status == instance::InstanceStatus::Exited {
                continue;
            }
            let input = if envelope.event_type == "CustomerDeactivated" {
                JourneyInput::CustomerDeactivated {
                    event_id: envelope.event_id,
                }
            } else if matches!(
                envelope.event_type.as_str(),
                "CustomerErasureRequested" | "CustomerErased"
            ) {
                // Erasure ends every journey (and its timer) at once.
                JourneyInput::CustomerErased {
                    event_id: envelope.event_id,
                }
            } else {
                JourneyInput::Event {
                    event_id: envelope.event_id,
                    event: &bus_event,
                }
            };
            if self
                .advance(
                    catalog,
                    &indexed.instance_id,
                    &input,
                    &ctx,
                    Some(envelope),
                    Some(indexed.version),
                    &mut outcome,
                )
                .await?
            {
                outcome.advanced.push(indexed.instance_id.clone());
            }
        }

        for (campaign, version) in catalog.active() {
            if !campaign.trigger.pattern.matches(&bus_event)
                || !campaign
                    .trigger
                    .conditions
                    .iter()
                    .all(|c| c.holds(&bus_event, ctx.profile))
            {
                continue;
            }
            if let Some(required) = campaign.entry.consent {
                // An anonymous profile's consent is its customer's once merged;
                // before, there is no one to ask: the journey starts and the
                // channel function checks consent when it sends.
                let subject = crate::identity::resolve(self.events.as_ref(), &customer_id).await?;
                let ok = crate::identity::is_anonymous_profile(&subject)
                    || ledger::has_active_consent(
                        self.docs.as_ref(),
                        &subject,
                        required.purpose,
                        required.channel,
                        now,
                    )
                    .await?;
                if !ok {
                    continue;
                }
            }
            // Membership from the customer's segments stream, not the index
            // (which another consumer may not have caught up yet).
            if let Some(segment) = &campaign.entry.segment {
                if !crate::segments::is_member_now(self.events.as_ref(), segment, &customer_id).await? {
                    continue;
                }
            }
            let dedupe = match &campaign.entry.dedupe_key {
                Some(path) => {
                    let segments: Vec<&str> = path.trim_start_matches("event.").split('.').collect();
                    super::condition::lookup(&bus_event, &segments)
                        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
                        .unwrap_or_else(|| envelope.event_id.to_string())
                }
                None => envelope.event_id.to_string(),
            };
            let instance_id = instance::instance_id(&campaign, &customer_id, &dedupe, envelope.occurred_at);
            let trigger = TriggerRef {
                event_id: envelope.event_id,
                event_type: envelope.event_type.clone(),
                stream_id: envelope.stream_id.clone(),
                version: envelope.version,
                occurred_at: envelope.occurred_at,
            };
            let input = JourneyInput::Start {
                instance_id: instance_id.clone(),
                campaign_version: version,
                customer_id: customer_id.clone(),
                dedupe_key: dedupe,
                trigger: trigger.clone(),
                trigger_event: &bus_event,
            };
            let mut events =
                instance::decide(None, &campaign, &input, &ctx).map_err(|e| EngineError::Poison(e.to_string()))?;
            let meta = Cause::of(envelope).meta(Actor::journey(&campaign.id, version));
            // The index first (at version 0), so that an event handled
            // between a crashed start and its redelivery finds the instance.
            if !self.announce(&instance_id, &customer_id, &events).await? {
                // Indexed past its start: started before, and the index
                // proves its timers were set. Nothing to do.
                continue;
            }
            // Then the lookback: the customer's events recorded after the
            // trigger, some of which may have reached the engine before this
            // start (a reordered delivery), are caught up on in the same
            // append. After the announce, so an event stored later finds the
            // index line. (The announced line may show a state the lookback
            // then changes; the index write after the append corrects it.)
            if needs_lookback(&campaign, &events) {
                let found = self
                    .recorded_since_trigger(&customer_id, &trigger, &campaign, Lookback::Start)
                    .await?;
                if !found.is_empty() {
                    events = instance::decide_with_lookback(None, &campaign, &input, &ctx, &recorded(&found))
                        .map_err(|e| EngineError::Poison(e.to_string()))?;
                }
            }
            match self
                .store(
                    &instance_id,
                    &customer_id,
                    ExpectedVersion::NoStream,
                    &events,
                    &meta,
                    None,
                )
                .await
            {
                Ok(state) => {
                    collect_messages(&events, &mut outcome);
                    outcome.started.push(state.id);
                }
                // Already started by this trigger (a duplicate or reordered
                // delivery) or, for `once`, by an earlier one. If that start
                // stopped after its append (its timer or index write failed,
                // and this is the retry), finish it now.
                Err(StoreOutcome::Conflict) => {
                    let indexed_at = self
                        .docs
                        .checkpoint(JOURNEY_INDEX, &instance::stream_id(&instance_id))
                        .await?;
                    if indexed_at == 0 {
                        if let Some(loaded) = self.load_history(&instance_id).await? {
                            if self.heal(&loaded, indexed_at).await? {
                                outcome.healed.push(instance_id);
                            }
                        }
                    }
                }
                Err(StoreOutcome::Failed(e)) => return Err(e),
            }
        }
        Ok(outcome)
    }

    /// A campaign was paused: exits the first page of its running instances
    /// (reason `campaign-paused`, pending timers deleted) and, if the page
    /// was full, appends a `CampaignPauseContinued` that asks the campaign
    /// function for the next one. The same step runs when the campaign
    /// function receives the `CampaignPaused` itself; the two chains meet at
    /// the continuation's expected version and one of them stops.
    pub async fn on_campaign_paused(&self, campaign_id: &str) -> Result<EngineOutcome, EngineError> {
        self.exit_paused_page(campaign_id, None).await
    }

    /// One pause step: at most [`PAUSE_PAGE`] index entries read, their
    /// instances exited; `step` is the campaign event that asked for it (the
    /// `CampaignPaused` or a `CampaignPauseContinued`), `None` from the API
    /// right after the pause.
    async fn exit_paused_page(
        &self,
        campaign_id: &str,
        step: Option<&EventEnvelope>,
    ) -> Result<EngineOutcome, EngineError> {
        let mut outcome = EngineOutcome::default();
        let stream = campaign_store::stream_id(campaign_id);
        let history = self.events.read_stream(&stream, 0, usize::MAX).await?;
        let mut paused_by = None;
        for e in &history {
            match e.event_type.as_str() {
                "CampaignPaused" => paused_by = Some(e),
                "CampaignResumed" => paused_by = None,
                _ => {}
            }
        }
        // Resumed since (or never paused): nothing to exit.
        let Some(paused_by) = paused_by else {
            return Ok(outcome);
        };
        let step = step.unwrap_or(paused_by);
        let after = match CampaignEvent::from_envelope(step) {
            Ok(CampaignEvent::CampaignPauseContinued { after }) => Some(after),
            Ok(_) => None,
            Err(e) => return Err(EngineError::Poison(format!("{stream}: {e}"))),
        };
        let page = self
            .docs
            .list(
                JOURNEY_INDEX,
                &campaign_partition(campaign_id),
                "",
                after.as_deref(),
                PAUSE_PAGE,
            )
            .await?;
        let ctx = JourneyContext {
            now: self.clock.now(),
            timezone: chrono_tz::UTC,
            profile: None,
        };
        let catalog = self.catalog.current().await?;
        for (_, body) in &page {
            let indexed: IndexedInstance =
                serde_json::from_value(body.clone()).map_err(|e| EngineError::Poison(format!("journey index: {e}")))?;
            if self
                .advance(
                    &catalog,
                    &indexed.instance_id,
                    &JourneyInput::CampaignPaused,
                    &ctx,
                    Some(step),
                    Some(indexed.version),
                    &mut outcome,
                )
                .await?
            {
                outcome.advanced.push(indexed.instance_id);
            }
        }
        if page.len() == PAUSE_PAGE {
            if let Some((last, _)) = page.last() {
                self.continue_pause(campaign_id, step, last).await?;
            }
        }
        Ok(outcome)
    }

    /// Appends the `CampaignPauseContinued` after `step`, expecting the
    /// campaign stream where `step` left it: if a pause event came since
    /// (another chain's continuation, a resume, a new pause), that one
    /// carries on and this chain stops; an edit in between is stepped over.
    async fn continue_pause(&self, campaign_id: &str, step: &EventEnvelope, after: &str) -> Result<(), EngineError> {
        let stream = campaign_store::stream_id(campaign_id);
        let meta = Cause::of(step).meta(Actor::system("campaign"));
        let mut expected = step.version;
        for _ in 0..MAX_ATTEMPTS {
            let envelopes = crate::event::envelopes(
                &stream,
                None,
                &[CampaignEvent::CampaignPauseContinued {
                    after: after.to_string(),
                }],
                &meta,
                self.clock.now(),
            )
            .map_err(|e| EngineError::Poison(e.to_string()))?;
            match self
                .events
                .append(AppendRequest {
                    stream_id: stream.clone(),
                    expected: ExpectedVersion::Exactly(expected),
                    events: envelopes,
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(AppendError::Conflict { .. }) => {
                    let since = self.events.read_stream(&stream, expected, usize::MAX).await?;
                    if since.iter().any(|e| {
                        matches!(
                            e.event_type.as_str(),
                            "CampaignPaused" | "CampaignResumed" | "CampaignPauseContinued"
                        )
                    }) {
                        return Ok(());
                    }
                    match since.last() {
                        Some(e) => expected = e.version,
                        None => return Err(EngineError::Retry(format!("{stream} conflicted but did not move"))),
                    }
                }
                Err(AppendError::Store(e)) => return Err(e.into()),
                Err(other) => return Err(EngineError::Poison(other.to_string())),
            }
        }
        Err(EngineError::Retry(format!("{stream} kept changing")))
    }

    /// Handles a fired journey timer: the instance's wait, or (on
    /// [`SWEEP_STREAM`]) one sweep step.
    pub async fn on_timer(&self, timer: &TimerPayload) -> Result<EngineOutcome, EngineError> {
        let mut outcome = EngineOutcome::default();
        if timer.stream_id == SWEEP_STREAM {
            let swept = self.sweep(SweepBudget::from_timer_data(&timer.data)).await?;
            outcome.advanced = swept.fired.into_iter().chain(swept.exited).collect();
            outcome.messages = swept.messages;
            outcome.healed = swept.healed;
            return Ok(outcome);
        }
        let Some(instance_id) = timer.stream_id.strip_prefix("journey-") else {
            return Ok(outcome);
        };
        let catalog = self.catalog.current().await?;
        let customer = timer.customer_id.clone().unwrap_or_default();
        let (tz, profile) = self.context_parts(&customer).await?;
        let ctx = JourneyContext {
            now: self.clock.now(),
            timezone: tz,
            profile: profile.as_ref(),
        };
        let input = JourneyInput::Timer {
            timer_name: &timer.name,
        };
        if self
            .advance(&catalog, instance_id, &input, &ctx, None, None, &mut outcome)
            .await?
        {
            outcome.advanced.push(instance_id.to_string());
        }
        Ok(outcome)
    }

    /// Decides and stores one input for an existing instance; true if anything happened.
    /// `cause` is the event the input comes from (`None`: a timer, whose
    /// cause is the event that set it); `indexed_version` the version the
    /// caller's index line showed, if it read one.
    ///
    /// A timer or event reaching an instance of a paused campaign exits it
    /// instead: nothing is sent after a pause. An input that changes nothing
    /// (it was applied before: a retry) checks that the index caught up with
    /// the stream, and heals the instance if a crash left it behind.
    ///
    /// A decision that stores events, without ending the instance, of a
    /// campaign with exits, goals or `wait_until` steps looks back first
    /// ([`JourneyEngine::recorded_since_trigger`]): a missed exit or goal
    /// event recorded before the input ends the instance instead, a missed
    /// event its wait was waiting for ends the wait, and a `wait_until` the
    /// input enters is ended by a matching event recorded since the trigger
    /// that the instance has not acted on. All of it is one append.
    #[allow(clippy::too_many_arguments)]
    async fn advance(
        &self,
        catalog: &CatalogSnapshot,
        instance_id: &str,
        input: &JourneyInput<'_>,
        ctx: &JourneyContext<'_>,
        cause: Option<&EventEnvelope>,
        indexed_version: Option<u64>,
        outcome: &mut EngineOutcome,
    ) -> Result<bool, EngineError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(loaded) = self.load_history(instance_id).await? else {
                return Ok(false);
            };
            let state = &loaded.state;
            let Some(at) = catalog.version(&state.campaign_id, state.campaign_version) else {
                return Err(EngineError::Poison(format!(
                    "campaign {}@{} is unknown",
                    state.campaign_id, state.campaign_version
                )));
            };
            let input = match input {
                JourneyInput::Timer { .. } | JourneyInput::Event { .. } if at.paused => &JourneyInput::CampaignPaused,
                other => other,
            };
            let mut events = instance::decide(Some(state), &at.campaign, input, ctx)
                .map_err(|e| EngineError::Poison(e.to_string()))?;
            if needs_lookback(&at.campaign, &events) {
                let position = match (input, cause) {
                    (JourneyInput::Event { .. }, Some(e)) => Lookback::Event(e),
                    _ => Lookback::Timer,
                };
                let found = self
                    .recorded_since_trigger(&state.customer_id, &state.trigger, &at.campaign, position)
                    .await?;
                if !found.is_empty() {
                    events = instance::decide_with_lookback(Some(state), &at.campaign, input, ctx, &recorded(&found))
                        .map_err(|e| EngineError::Poison(e.to_string()))?;
                }
            }
            if events.is_empty() {
                let indexed_at = match indexed_version {
                    Some(v) if v >= state.version => v,
                    _ => {
                        self.docs
                            .checkpoint(JOURNEY_INDEX, &instance::stream_id(instance_id))
                            .await?
                    }
                };
                if self.heal(&loaded, indexed_at).await? {
                    outcome.healed.push(instance_id.to_string());
                }
                return Ok(false);
            }
            let Some(cause) = cause.map(Cause::of).or_else(|| loaded.own_cause()) else {
                return Err(EngineError::Poison(format!("journey {instance_id} has no events")));
            };
            let meta = cause.meta(Actor::journey(&at.campaign.id, state.campaign_version));
            let cancel = instance::timer_to_cancel(Some(state), &events);
            match self
                .store(
                    instance_id,
                    &state.customer_id,
                    ExpectedVersion::Exactly(state.version),
                    &events,
                    &meta,
                    Some(state),
                )
                .await
            {
                Ok(_) => {
                    if let Some(name) = cancel {
                        self.scheduler.cancel(&name).await?;
                    }
                    collect_messages(&events, outcome);
                    return Ok(true);
                }
                Err(StoreOutcome::Conflict) => continue,
                Err(StoreOutcome::Failed(e)) => return Err(e),
            }
        }
        Err(EngineError::Retry(format!("journey {instance_id} kept changing")))
    }

    /// The lookback (decision 0033): the events of `customer_id` recorded
    /// after the instance's trigger, in the order they were recorded, each
    /// with its bus form and whether it came before the input being decided.
    /// The journey's decision hands them to the instance as if they had
    /// arrived ([`instance::decide_with_lookback`]), so an event the queue
    /// delivered before the trigger (the trigger's batch failed and came
    /// back after the visibility timeout), or while the instance's start
    /// was half done, still ends its wait or exits it.
    ///
    /// Where they are read: the engine knows an event is the customer's by
    /// its envelope's `customer_id` (that is how `on_event` finds the
    /// customer's instances), and reads their streams through the
    /// [`EventStore`] port: the trigger's stream (from the trigger on), the
    /// streams named after the customer (`customer-`, `activity-`,
    /// `segments-`), and the other streams holding their events (carts and
    /// orders live in `cart-<id>` and `order-<id>`, named after neither),
    /// which the projector's [`CUSTOMER_STREAMS`] index lists. Journey
    /// streams are never read (the engine is never handed them), nor a
    /// stream whose bus source no exit rule, goal or `wait_until` of the
    /// campaign can match. Every stored event was stored before it was
    /// published, so this finds every event the engine was handed, and
    /// perhaps some it has not been handed yet: those it takes early, and
    /// their delivery later changes nothing
    /// ([`JourneyInstance::used_events`]).
    ///
    /// "After the trigger": in the trigger's own stream, a higher version
    /// (exact); in any other stream, a `recorded_at` strictly later than the
    /// trigger's (versions of different streams cannot be compared, and
    /// `occurred_at` is the client's time, up to days late for activity).
    /// `recorded_at` is the writer's clock, so events of two streams
    /// recorded within the writers' clock skew (milliseconds) may be
    /// misordered; an event recorded in the same millisecond as the trigger
    /// in another stream does not count.
    ///
    /// What it does not see: a cart or order stream the projector has not
    /// indexed yet (its event is then missed as before), and events of
    /// anonymous profiles merged into the customer. Cost: one index read and
    /// one stream read per stream of the customer that can match, per start
    /// or step that needs it ([`needs_lookback`]: a decision that stores
    /// events, does not end the instance, of a campaign with exits, goals
    /// or `wait_until` steps).
    async fn recorded_since_trigger(
        &self,
        customer_id: &str,
        trigger: &TriggerRef,
        campaign: &Campaign,
        position: Lookback<'_>,
    ) -> Result<Vec<(Uuid, Value, bool)>, EngineError> {
        let sources = rule_sources(campaign);
        let mut streams = std::collections::BTreeSet::from([
            crate::customer::stream_id(customer_id),
            crate::customer::activity::activity_stream_id(customer_id),
            crate::segments::stream_id(customer_id),
        ]);
        let mut after: Option<String> = None;
        loop {
            let page = self
                .docs
                .list(CUSTOMER_STREAMS, customer_id, "", after.as_deref(), LOOKBACK_PAGE)
                .await?;
            let done = page.len() < LOOKBACK_PAGE;
            after = page.last().map(|(k, _)| k.clone());
            streams.extend(page.into_iter().map(|(stream, _)| stream));
            if done {
                break;
            }
        }
        streams.remove(&trigger.stream_id);
        streams.retain(|stream| stream_can_match(stream, sources.as_ref()));

        // The trigger's stream from the trigger on: its time, and what came after it.
        let mut found = Vec::new();
        let mut trigger_recorded_at = trigger.occurred_at;
        for e in self
            .events
            .read_stream(&trigger.stream_id, trigger.version.saturating_sub(1), usize::MAX)
            .await?
        {
            if e.version == trigger.version {
                trigger_recorded_at = e.recorded_at;
            } else if e.version > trigger.version {
                found.push(e);
            }
        }
        for stream in &streams {
            let events = self.events.read_stream(stream, 0, usize::MAX).await?;
            found.extend(events.into_iter().filter(|e| e.recorded_at > trigger_recorded_at));
        }
        found.retain(|e| {
            e.customer_id.as_deref() == Some(customer_id)
                && e.event_id != trigger.event_id
                && !e.stream_id.starts_with("journey-")
                && !matches!(position, Lookback::Event(input) if input.event_id == e.event_id)
        });
        found.sort_by(|a, b| (a.recorded_at, &a.stream_id, a.version).cmp(&(b.recorded_at, &b.stream_id, b.version)));
        Ok(found
            .into_iter()
            .map(|e| {
                let before_input = match position {
                    Lookback::Start => false,
                    Lookback::Timer => true,
                    Lookback::Event(input) if input.stream_id == e.stream_id => e.version < input.version,
                    Lookback::Event(input) => e.recorded_at < input.recorded_at,
                };
                let bus = BusEntry::for_event(e.clone()).to_event_json("000000000000", "local");
                (e.event_id, bus, before_input)
            })
            .collect())
    }

    /// Writes the index lines of an instance about to start (its customer's
    /// line and, unless the start ends it at once, its campaign's), at
    /// version 0: "started, nothing applied yet". It runs before the start's
    /// append, so `on_event` (which finds running instances only through the
    /// index) hands the customer's next events to an instance whose start
    /// stopped after its append: [`JourneyEngine::advance`] then applies
    /// them, or heals the instance when they change nothing. Pausing and the
    /// sweep find it through the campaign's line.
    ///
    /// The lines are written only while the instance's index checkpoint is
    /// 0, so they never overwrite a line a finished start (or a later step)
    /// wrote: false then, the instance is started and indexed. A line whose
    /// stream does not exist (a crash between this write and the append) is
    /// harmless: steps on it find no instance and do nothing, and the
    /// redelivered trigger starts the instance (the append still expects no
    /// stream, so it starts once).
    ///
    /// Cost: one more index commit per journey start (a transaction of the
    /// checkpoint item and the two lines); a duplicate trigger of an indexed
    /// instance costs that commit's failed condition instead of an append
    /// and a checkpoint read.
    async fn announce(
        &self,
        instance_id: &str,
        customer_id: &str,
        events: &[JourneyEvent],
    ) -> Result<bool, EngineError> {
        let now = self.clock.now();
        let mut state = None;
        for (version, e) in (1u64..).zip(events) {
            state = instance::evolve(state, e, now, version);
        }
        let Some(state) = state else {
            return Err(EngineError::Poison(format!("journey {instance_id} without a start")));
        };
        let mut line = index_line(&state);
        line.version = 0;
        let body = serde_json::to_value(line).map_err(|e| EngineError::Poison(e.to_string()))?;
        let mut ops = vec![ReadOp::Put {
            partition: customer_id.to_string(),
            sort: instance_id.to_string(),
            body: body.clone(),
        }];
        if state.status != instance::InstanceStatus::Exited {
            ops.push(ReadOp::Put {
                partition: campaign_partition(&state.campaign_id),
                sort: instance_id.to_string(),
                body,
            });
        }
        match self
            .docs
            .commit(JOURNEY_INDEX, &instance::stream_id(instance_id), 0, 0, ops)
            .await
        {
            Ok(()) => Ok(true),
            Err(crate::ports::CommitError::Conflict { .. }) => Ok(false),
            Err(e) => Err(EngineError::Retry(e.to_string())),
        }
    }

    /// Appends an instance's events, schedules the timers they ask for and
    /// updates the index, in that order: an index that caught up with the
    /// stream therefore proves the timers were set.
    async fn store(
        &self,
        instance_id: &str,
        customer_id: &str,
        expected: ExpectedVersion,
        events: &[JourneyEvent],
        meta: &CommandMeta,
        before: Option<&JourneyInstance>,
    ) -> Result<JourneyInstance, StoreOutcome> {
        let now = self.clock.now();
        let stream = instance::stream_id(instance_id);
        let envelopes = crate::event::envelopes(&stream, Some(customer_id), events, meta, now)
            .map_err(|e| StoreOutcome::Failed(EngineError::Poison(e.to_string())))?;
        let appended = match self
            .events
            .append(AppendRequest {
                stream_id: stream.clone(),
                expected,
                events: envelopes,
                reservations: Vec::new(),
                receipt: None,
            })
            .await
        {
            Ok(a) => a,
            Err(AppendError::Conflict { .. }) => return Err(StoreOutcome::Conflict),
            Err(AppendError::Store(e)) => return Err(StoreOutcome::Failed(e.into())),
            Err(other) => return Err(StoreOutcome::Failed(EngineError::Poison(other.to_string()))),
        };
        let mut state = before.cloned();
        let mut versioned = Vec::new();
        for (e, stored) in events.iter().zip(&appended.events) {
            state = instance::evolve(state, e, stored.occurred_at, stored.version);
            versioned.push((e.clone(), stored.version));
        }
        let Some(state) = state else {
            return Err(StoreOutcome::Failed(EngineError::Poison(
                "journey without a start".into(),
            )));
        };
        crate::crash::point(crate::crash::JOURNEY_AFTER_APPEND);
        for timer in instance::timers_to_schedule(&state, &versioned) {
            self.scheduler
                .schedule(timer)
                .await
                .map_err(|e| StoreOutcome::Failed(e.into()))?;
        }
        crate::crash::point(crate::crash::JOURNEY_AFTER_TIMER);
        let indexed_at = self
            .docs
            .checkpoint(JOURNEY_INDEX, &stream)
            .await
            .map_err(|e| StoreOutcome::Failed(e.into()))?;
        let first_new = versioned.first().map_or(state.version, |(_, v)| *v);
        if indexed_at + 1 < first_new {
            // The index missed earlier events too (a crash after an earlier
            // append, such as a start's before its timer was set): index the
            // whole stream, with its message pointers. No earlier timer is
            // left to set: every input that stores events ends the pending
            // wait (an exit, or the end of a `wait_until`) or replaces it.
            if let Some(loaded) = self.load_history(instance_id).await.map_err(StoreOutcome::Failed)? {
                self.write_index(&loaded.state, &loaded.events, indexed_at)
                    .await
                    .map_err(StoreOutcome::Failed)?;
            }
        } else {
            self.write_index(&state, &versioned, indexed_at)
                .await
                .map_err(StoreOutcome::Failed)?;
        }
        Ok(state)
    }

    /// Makes good what a crash after an instance's append left undone, if
    /// its index (at `indexed_at`) is behind its stream: the pending timer is
    /// set again under its deterministic name (creating it, or replacing it
    /// by the same timer; due a margin ahead if its time has passed), then
    /// the index is written. True if anything was behind.
    async fn heal(&self, loaded: &LoadedInstance, indexed_at: u64) -> Result<bool, EngineError> {
        let state = &loaded.state;
        if indexed_at >= state.version {
            return Ok(false);
        }
        tracing::warn!(
            instance_id = %state.id,
            indexed_at,
            version = state.version,
            "journey index behind its stream: re-arming the timer and writing the index"
        );
        if let Some(timer) = instance::pending_timer(state) {
            self.scheduler.schedule(self.rearmable(timer)).await?;
        }
        self.write_index(state, &loaded.events, indexed_at).await?;
        Ok(true)
    }

    /// A timer as it can be created now: due no earlier than [`REARM_MARGIN`] ahead.
    fn rearmable(&self, mut timer: TimerPayload) -> TimerPayload {
        let earliest = self.clock.now() + REARM_MARGIN;
        if timer.due_at < earliest {
            timer.due_at = earliest;
        }
        timer
    }

    /// Writes the instance's index lines as of `state`, moving the index's
    /// checkpoint from `indexed_at`: the customer's line, the campaign's
    /// (removed once the instance exits), and a pointer for each message
    /// requested after `indexed_at` (`events` with their versions). A later
    /// writer's update wins.
    async fn write_index(
        &self,
        state: &JourneyInstance,
        events: &[(JourneyEvent, u64)],
        indexed_at: u64,
    ) -> Result<(), EngineError> {
        if indexed_at >= state.version {
            return Ok(());
        }
        let stream = instance::stream_id(&state.id);
        let body = serde_json::to_value(index_line(state)).map_err(|e| EngineError::Poison(e.to_string()))?;
        let mut ops = vec![ReadOp::Put {
            partition: state.customer_id.clone(),
            sort: state.id.clone(),
            body: body.clone(),
        }];
        // The campaign's partition lists its running instances, for pausing and sweeping.
        ops.push(if state.status == instance::InstanceStatus::Exited {
            ReadOp::Delete {
                partition: campaign_partition(&state.campaign_id),
                sort: state.id.clone(),
            }
        } else {
            ReadOp::Put {
                partition: campaign_partition(&state.campaign_id),
                sort: state.id.clone(),
                body,
            }
        });
        // Each requested message points back at its journey, for `explain`.
        for (e, version) in events.iter().filter(|(_, v)| *v > indexed_at) {
            if let JourneyEvent::MessageRequested { message_id, .. } = e {
                ops.push(ReadOp::Put {
                    partition: message_id.clone(),
                    sort: MESSAGE_SORT.into(),
                    body: serde_json::json!({ "instance_id": state.id, "version": version }),
                });
            }
        }
        match self
            .docs
            .commit(JOURNEY_INDEX, &stream, indexed_at, state.version, ops)
            .await
        {
            Ok(()) | Err(crate::ports::CommitError::Conflict { .. }) => Ok(()),
            Err(e) => Err(EngineError::Retry(e.to_string())),
        }
    }

    /// Removes a campaign-partition line of an exited instance whose index
    /// is otherwise current (lines written before exits removed them).
    async fn tidy(&self, state: &JourneyInstance, indexed_at: u64) -> Result<(), EngineError> {
        let ops = vec![ReadOp::Delete {
            partition: campaign_partition(&state.campaign_id),
            sort: state.id.clone(),
        }];
        match self
            .docs
            .commit(
                JOURNEY_INDEX,
                &instance::stream_id(&state.id),
                indexed_at,
                indexed_at,
                ops,
            )
            .await
        {
            Ok(()) | Err(crate::ports::CommitError::Conflict { .. }) => Ok(()),
            Err(e) => Err(EngineError::Retry(e.to_string())),
        }
    }

    /// One step of the walk over every campaign's running instances, at
    /// most `budget.pages` index reads of `budget.page_size` lines, from
    /// where the last step stopped (kept in the [`SWEEP`] read model). For
    /// each running instance it reads the stream and:
    /// - exits it if its campaign is paused;
    /// - heals it if its index is behind its stream (timer re-armed, index written);
    /// - runs its step if the wait is overdue ([`OVERDUE_AFTER`]) — once:
    ///   the step is appended at the instance's version;
    /// - otherwise creates its timer again if the scheduler has none.
    ///
    /// A version-0 line whose instance has no stream, written more than
    /// [`ORPHAN_LINE_GRACE`] ago, is removed (with the customer's line).
    ///
    /// A finished walk starts again after `budget.rest`. Two sweeps at once
    /// are harmless (every repair is idempotent); the later cursor write
    /// loses and its progress is walked again.
    pub async fn sweep(&self, budget: SweepBudget) -> Result<SweepOutcome, EngineError> {
        let mut out = SweepOutcome::default();
        let now = self.clock.now();
        let saved_at = self.docs.checkpoint(SWEEP, SWEEP_CURSOR).await?;
        let mut cursor: SweepCursor = match self.docs.get(SWEEP, SWEEP_CURSOR, SWEEP_CURSOR).await? {
            Some(v) => serde_json::from_value(v).map_err(|e| EngineError::Poison(format!("sweep cursor: {e}")))?,
            None => SweepCursor::default(),
        };
        let catalog = self.catalog.current().await?;
        let ids = catalog.ids();
        if cursor.position.is_none() {
            if cursor.last_walk_finished_at.is_some_and(|t| now < t + budget.rest) {
                out.resting = true;
                return Ok(out);
            }
            let Some(first) = ids.first() else {
                out.finished_walk = true;
                return Ok(out);
            };
            cursor.position = Some(SweepPosition {
                campaign_id: first.clone(),
                after: None,
            });
            cursor.walk_started_at = Some(now);
        }
        while out.pages < budget.pages.max(1) {
            let Some(position) = cursor.position.clone() else {
                break;
            };
            let page = self
                .docs
                .list(
                    JOURNEY_INDEX,
                    &campaign_partition(&position.campaign_id),
                    "",
                    position.after.as_deref(),
                    budget.page_size.max(1),
                )
                .await?;
            out.pages += 1;
            for (key, body) in &page {
                match self.sweep_instance(&catalog, key, body, now, &mut out).await {
                    Ok(()) => {}
                    Err(EngineError::Poison(reason)) => {
                        tracing::error!(instance_id = %key, %reason, "sweep skipped an instance it cannot repair")
                    }
                    Err(retry) => return Err(retry),
                }
            }
            cursor.position = if page.len() >= budget.page_size.max(1) {
                page.last().map(|(last, _)| SweepPosition {
                    campaign_id: position.campaign_id.clone(),
                    after: Some(last.clone()),
                })
            } else {
                ids.iter()
                    .find(|id| **id > position.campaign_id)
                    .map(|next| SweepPosition {
                        campaign_id: next.clone(),
                        after: None,
                    })
            };
            if cursor.position.is_none() {
                cursor.last_walk_finished_at = Some(now);
                out.finished_walk = true;
            }
        }
        let body = serde_json::to_value(&cursor).map_err(|e| EngineError::Poison(e.to_string()))?;
        match self
            .docs
            .commit(
                SWEEP,
                SWEEP_CURSOR,
                saved_at,
                saved_at + 1,
                vec![ReadOp::Put {
                    partition: SWEEP_CURSOR.into(),
                    sort: SWEEP_CURSOR.into(),
                    body,
                }],
            )
            .await
        {
            Ok(()) => {}
            Err(crate::ports::CommitError::Conflict { .. }) => {
                tracing::info!("another sweep moved the cursor first; this step's progress is walked again")
            }
            Err(e) => return Err(EngineError::Retry(e.to_string())),
        }
        if !(out.rearmed.is_empty()
            && out.fired.is_empty()
            && out.exited.is_empty()
            && out.healed.is_empty()
            && out.orphans_removed.is_empty())
        {
            tracing::warn!(
                rearmed = out.rearmed.len(),
                fired = out.fired.len(),
                exited = out.exited.len(),
                healed = out.healed.len(),
                orphans_removed = out.orphans_removed.len(),
                "journey sweep repaired instances"
            );
        }
        Ok(out)
    }

    /// Removes the index lines of an announced start whose stream never
    /// came (the campaign's, and the customer's if the line names the
    /// customer), on the condition that the instance's index checkpoint is
    /// still 0: a start that finished meanwhile moved it, and keeps its
    /// lines. A redelivered start racing this removal (its announce and
    /// append between the sweep's read of the stream and this commit) loses
    /// its lines only until its own index write puts them back; if it
    /// crashes in between, its next redelivery writes them (the announce
    /// finds the checkpoint still 0).
    async fn remove_orphan(&self, indexed: &IndexedInstance) -> Result<(), EngineError> {
        tracing::warn!(
            instance_id = %indexed.instance_id,
            campaign_id = %indexed.campaign_id,
            announced_at = %indexed.updated_at,
            "removing the index lines of a start whose append never happened"
        );
        let mut ops = vec![ReadOp::Delete {
            partition: campaign_partition(&indexed.campaign_id),
            sort: indexed.instance_id.clone(),
        }];
        if let Some(customer_id) = &indexed.customer_id {
            ops.push(ReadOp::Delete {
                partition: customer_id.clone(),
                sort: indexed.instance_id.clone(),
            });
        }
        match self
            .docs
            .commit(JOURNEY_INDEX, &instance::stream_id(&indexed.instance_id), 0, 0, ops)
            .await
        {
            Ok(()) | Err(crate::ports::CommitError::Conflict { .. }) => Ok(()),
            Err(e) => Err(EngineError::Retry(e.to_string())),
        }
    }

    /// The sweep's look at one line of a campaign's partition.
    async fn sweep_instance(
        &self,
        catalog: &CatalogSnapshot,
        key: &str,
        body: &Value,
        now: DateTime<Utc>,
        out: &mut SweepOutcome,
    ) -> Result<(), EngineError> {
        let indexed: IndexedInstance = serde_json::from_value(body.clone())
            .map_err(|e| EngineError::Poison(format!("journey index line {key}: {e}")))?;
        out.examined += 1;
        let Some(loaded) = self.load_history(&indexed.instance_id).await? else {
            if indexed.version == 0 && indexed.updated_at + ORPHAN_LINE_GRACE <= now {
                self.remove_orphan(&indexed).await?;
                out.orphans_removed.push(indexed.instance_id);
            }
            return Ok(());
        };
        let state = &loaded.state;
        let id = state.id.clone();
        let indexed_at = if indexed.version >= state.version {
            indexed.version
        } else {
            self.docs.checkpoint(JOURNEY_INDEX, &instance::stream_id(&id)).await?
        };
        if state.status == instance::InstanceStatus::Exited {
            if indexed_at >= state.version {
                self.tidy(state, indexed_at).await?;
            } else {
                self.write_index(state, &loaded.events, indexed_at).await?;
                out.healed.push(id);
            }
            return Ok(());
        }
        let mut advanced = EngineOutcome::default();
        let paused = catalog
            .version(&state.campaign_id, state.campaign_version)
            .is_some_and(|at| at.paused);
        if paused {
            let ctx = JourneyContext {
                now,
                timezone: chrono_tz::UTC,
                profile: None,
            };
            if self
                .advance(
                    catalog,
                    &id,
                    &JourneyInput::CampaignPaused,
                    &ctx,
                    None,
                    Some(indexed_at),
                    &mut advanced,
                )
                .await?
            {
                out.exited.push(id);
            }
            return Ok(());
        }
        let healed = self.heal(&loaded, indexed_at).await?;
        if healed {
            out.healed.push(id.clone());
        }
        let Some(wait) = &state.waiting else {
            return Ok(());
        };
        if wait.due_at + OVERDUE_AFTER <= now {
            let (tz, profile) = self.context_parts(&state.customer_id).await?;
            let ctx = JourneyContext {
                now,
                timezone: tz,
                profile: profile.as_ref(),
            };
            let input = JourneyInput::Timer {
                timer_name: &wait.timer_name,
            };
            if self
                .advance(catalog, &id, &input, &ctx, None, Some(state.version), &mut advanced)
                .await?
            {
                out.fired.push(id);
                out.messages.extend(advanced.messages);
            }
        } else if !healed && self.scheduler.get(&wait.timer_name).await?.is_none() {
            if let Some(timer) = instance::pending_timer(state) {
                self.scheduler.schedule(self.rearmable(timer)).await?;
                out.rearmed.push(id);
            }
        }
        Ok(())
    }
}

/// The index line of an instance.
fn index_line(state: &JourneyInstance) -> IndexedInstance {
    IndexedInstance {
        instance_id: state.id.clone(),
        campaign_id: state.campaign_id.clone(),
        campaign_version: state.campaign_version,
        status: state.status,
        current_step: state.current_step.clone(),
        started_at: state.started_at,
        updated_at: state.updated_at,
        version: state.version,
        customer_id: Some(state.customer_id.clone()),
    }
}

enum StoreOutcome {
    Conflict,
    Failed(EngineError),
}

/// Index lines read per page by the lookback.
const LOOKBACK_PAGE: usize = 500;

/// What the lookback is for: a start (every recorded event comes after
/// it), a fired timer (every one comes before it), or an event (those
/// recorded before it come before it).
#[derive(Clone, Copy)]
enum Lookback<'a> {
    Start,
    Timer,
    Event(&'a EventEnvelope),
}

/// Whether a decision needs the lookback: it stores events, the instance is
/// not ending with them, and the campaign has exits, goals or `wait_until`
/// steps (without them the lookback could find nothing to act on).
fn needs_lookback(campaign: &Campaign, events: &[JourneyEvent]) -> bool {
    !events.is_empty()
        && instance::looks_back(campaign)
        && !events.iter().any(|e| matches!(e, JourneyEvent::JourneyExited { .. }))
}

/// The lookback's finds as the instance's decision takes them.
fn recorded(found: &[(Uuid, Value, bool)]) -> Vec<Recorded<'_>> {
    found
        .iter()
        .map(|(event_id, event, before_input)| Recorded {
            event_id: *event_id,
            event,
            before_input: *before_input,
        })
        .collect()
}

/// The bus sources the campaign's exit rules, goals and `wait_until` steps
/// can match; `None` if one of them does not name its sources (it may match
/// any).
fn rule_sources(campaign: &Campaign) -> Option<std::collections::BTreeSet<String>> {
    let patterns = campaign
        .exit_on
        .iter()
        .chain(&campaign.goals)
        .map(|r| &r.pattern)
        .chain(campaign.steps.iter().filter_map(|s| match s {
            super::definition::Step::WaitUntil(w) => Some(&w.pattern),
            _ => None,
        }));
    let mut sources = std::collections::BTreeSet::new();
    for pattern in patterns {
        let named = pattern.as_value().get("source").and_then(Value::as_array)?;
        for s in named {
            sources.insert(s.as_str()?.to_string());
        }
    }
    Some(sources)
}

/// Whether events of `stream` can carry one of `sources` (the bus source
/// follows the event type, [`crate::bus::source_for`]; a stream's kind
/// bounds its types). A customer stream or one of an unknown kind always can.
fn stream_can_match(stream: &str, sources: Option<&std::collections::BTreeSet<String>>) -> bool {
    let Some(sources) = sources else {
        return !stream.starts_with("journey-");
    };
    let kind: &[&str] = match stream.split_once('-').map(|(kind, _)| kind) {
        Some("journey") => return false,
        Some("activity") => &["crm.customer"],
        Some("cart" | "order") => &["crm.commerce"],
        Some("segments") => &["crm.segments"],
        Some("message") => &["crm.messaging"],
        _ => return true,
    };
    kind.iter().any(|k| sources.contains(*k))
}

fn collect_messages(events: &[JourneyEvent], outcome: &mut EngineOutcome) {
    for e in events {
        if let JourneyEvent::MessageRequested { message_id, .. } = e {
            outcome.messages.push(message_id.clone());
        }
    }
}
