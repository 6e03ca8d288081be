//! The journey engine: the campaign consumer's application service. For each
//! event of a customer it starts the instances whose trigger matches (at most
//! one per dedupe key, by construction), hands the event to the customer's
//! running instances (exits act at once, mid-wait), and for each fired timer
//! advances the instance it belongs to. Timers are set and deleted through the
//! [`Scheduler`] port after the instance's events are stored.

use super::definition::Campaign;
use super::instance::{self, JourneyContext, JourneyEvent, JourneyInput, JourneyInstance, TriggerRef};
use crate::bus::BusEntry;
use crate::clock::Clock;
use crate::consent::ledger;
use crate::customer::views;
use crate::event::{Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::ports::{AppendError, AppendRequest, EventStore, ExpectedVersion, ReadModelStore, ReadOp, StoreError};
use crate::scheduler::{Scheduler, SchedulerError, TimerPayload};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// The read-model namespace of the engine's index: customer → instances.
pub const JOURNEY_INDEX: &str = "journey-index";

/// The journey-index partition listing a campaign's instances.
pub fn campaign_partition(campaign_id: &str) -> String {
    format!("campaign:{campaign_id}")
}

/// The sort key of a message's entry in the journey index (partition: the message id).
pub const MESSAGE_SORT: &str = "message";

/// Where campaign definitions come from.
#[async_trait]
pub trait CampaignCatalog: Send + Sync {
    /// The campaigns new instances may start on, each at its current version.
    async fn active(&self) -> Result<Vec<(Arc<Campaign>, u64)>, StoreError>;
    /// One version of a campaign (running instances keep theirs).
    async fn version(&self, id: &str, version: u64) -> Result<Option<Arc<Campaign>>, StoreError>;
}

/// A fixed set of campaigns at version 1: the shipped campaigns, or a test's.
pub struct FixedCatalog {
    campaigns: Vec<Arc<Campaign>>,
}

impl FixedCatalog {
    pub fn new(campaigns: Vec<Campaign>) -> Self {
        FixedCatalog {
            campaigns: campaigns.into_iter().map(Arc::new).collect(),
        }
    }
}

#[async_trait]
impl CampaignCatalog for FixedCatalog {
    async fn active(&self) -> Result<Vec<(Arc<Campaign>, u64)>, StoreError> {
        Ok(self.campaigns.iter().map(|c| (c.clone(), 1)).collect())
    }
    async fn version(&self, id: &str, version: u64) -> Result<Option<Arc<Campaign>>, StoreError> {
        Ok(self.campaigns.iter().find(|c| c.id == id && version == 1).cloned())
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
        let events = self
            .events
            .read_stream(&instance::stream_id(instance_id), 0, usize::MAX)
            .await?;
        let mut state = None;
        for e in &events {
            let typed = JourneyEvent::from_envelope(e).map_err(|e| EngineError::Poison(e.to_string()))?;
            state = instance::evolve(state, &typed, e.occurred_at, e.version);
        }
        Ok(state)
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

    /// Handles one stored event of a customer.
    pub async fn on_event(&self, envelope: &EventEnvelope) -> Result<EngineOutcome, EngineError> {
        let mut outcome = EngineOutcome::default();
        let Some(customer_id) = envelope.customer_id.clone() else {
            return Ok(outcome);
        };
        if envelope.stream_id.starts_with("journey-") {
            return Ok(outcome);
        }
        let bus_event = BusEntry::for_event(envelope.clone()).to_event_json("000000000000", "local");
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
            if self.advance(&indexed.instance_id, &input, &ctx, &mut outcome).await? {
                outcome.advanced.push(indexed.instance_id.clone());
            }
        }

        for (campaign, version) in self.catalog.active().await? {
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
            let input = JourneyInput::Start {
                instance_id: instance_id.clone(),
                campaign_version: version,
                customer_id: customer_id.clone(),
                dedupe_key: dedupe,
                trigger: TriggerRef {
                    event_id: envelope.event_id,
                    event_type: envelope.event_type.clone(),
                    stream_id: envelope.stream_id.clone(),
                    version: envelope.version,
                    occurred_at: envelope.occurred_at,
                },
                trigger_event: &bus_event,
            };
            let events =
                instance::decide(None, &campaign, &input, &ctx).map_err(|e| EngineError::Poison(e.to_string()))?;
            let meta = CommandMeta {
                command_id: uuid::Uuid::now_v7(),
                correlation_id: envelope.correlation_id,
                causation_id: Some(envelope.event_id),
                actor: Actor::journey(&campaign.id, version),
            };
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
                // delivery) or, for `once`, by an earlier one.
                Err(StoreOutcome::Conflict) => {}
                Err(StoreOutcome::Failed(e)) => return Err(e),
            }
        }
        Ok(outcome)
    }

    /// A campaign was paused: every running instance of it exits now (reason
    /// `campaign-paused`) and its pending timer is deleted.
    pub async fn on_campaign_paused(&self, campaign_id: &str) -> Result<EngineOutcome, EngineError> {
        let mut outcome = EngineOutcome::default();
        let running: Vec<IndexedInstance> = self
            .docs
            .list(JOURNEY_INDEX, &campaign_partition(campaign_id), "", None, usize::MAX)
            .await?
            .into_iter()
            .map(|(_, v)| serde_json::from_value(v).map_err(|e| EngineError::Poison(format!("journey index: {e}"))))
            .collect::<Result<_, _>>()?;
        for indexed in running
            .into_iter()
            .filter(|i| i.status != instance::InstanceStatus::Exited)
        {
            let ctx = JourneyContext {
                now: self.clock.now(),
                timezone: chrono_tz::UTC,
                profile: None,
            };
            if self
                .advance(&indexed.instance_id, &JourneyInput::CampaignPaused, &ctx, &mut outcome)
                .await?
            {
                outcome.advanced.push(indexed.instance_id);
            }
        }
        Ok(outcome)
    }

    /// Handles a fired journey timer.
    pub async fn on_timer(&self, timer: &TimerPayload) -> Result<EngineOutcome, EngineError> {
        let mut outcome = EngineOutcome::default();
        let Some(instance_id) = timer.stream_id.strip_prefix("journey-") else {
            return Ok(outcome);
        };
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
        if self.advance(instance_id, &input, &ctx, &mut outcome).await? {
            outcome.advanced.push(instance_id.to_string());
        }
        Ok(outcome)
    }

    /// Decides and stores one input for an existing instance; true if anything happened.
    async fn advance(
        &self,
        instance_id: &str,
        input: &JourneyInput<'_>,
        ctx: &JourneyContext<'_>,
        outcome: &mut EngineOutcome,
    ) -> Result<bool, EngineError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(state) = self.load(instance_id).await? else {
                return Ok(false);
            };
            let Some(campaign) = self.catalog.version(&state.campaign_id, state.campaign_version).await? else {
                return Err(EngineError::Poison(format!(
                    "campaign {}@{} is unknown",
                    state.campaign_id, state.campaign_version
                )));
            };
            let events = instance::decide(Some(&state), &campaign, input, ctx)
                .map_err(|e| EngineError::Poison(e.to_string()))?;
            if events.is_empty() {
                return Ok(false);
            }
            let meta = CommandMeta {
                command_id: uuid::Uuid::now_v7(),
                correlation_id: uuid::Uuid::now_v7(),
                causation_id: None,
                actor: Actor::journey(&campaign.id, state.campaign_version),
            };
            let cancel = instance::timer_to_cancel(Some(&state), &events);
            match self
                .store(
                    instance_id,
                    &state.customer_id,
                    ExpectedVersion::Exactly(state.version),
                    &events,
                    &meta,
                    Some(&state),
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

    /// Appends an instance's events, schedules the timers they ask for and
    /// updates the index.
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
        for timer in instance::timers_to_schedule(&state, &versioned) {
            self.scheduler
                .schedule(timer)
                .await
                .map_err(|e| StoreOutcome::Failed(e.into()))?;
        }
        let indexed = IndexedInstance {
            instance_id: state.id.clone(),
            campaign_id: state.campaign_id.clone(),
            campaign_version: state.campaign_version,
            status: state.status,
            current_step: state.current_step.clone(),
            started_at: state.started_at,
            updated_at: state.updated_at,
        };
        let body =
            serde_json::to_value(&indexed).map_err(|e| StoreOutcome::Failed(EngineError::Poison(e.to_string())))?;
        // The index follows the stream's version; a later writer's update wins.
        let indexed_at = self
            .docs
            .checkpoint(JOURNEY_INDEX, &stream)
            .await
            .map_err(|e| StoreOutcome::Failed(e.into()))?;
        if indexed_at < state.version {
            let mut put = vec![
                ReadOp::Put {
                    partition: customer_id.to_string(),
                    sort: state.id.clone(),
                    body: body.clone(),
                },
                // The same line under the campaign, so pausing it finds its instances.
                ReadOp::Put {
                    partition: campaign_partition(&state.campaign_id),
                    sort: state.id.clone(),
                    body,
                },
            ];
            // Each requested message points back at its journey, for `explain`.
            for (e, version) in &versioned {
                if let JourneyEvent::MessageRequested { message_id, .. } = e {
                    put.push(ReadOp::Put {
                        partition: message_id.clone(),
                        sort: MESSAGE_SORT.into(),
                        body: serde_json::json!({ "instance_id": state.id, "version": version }),
                    });
                }
            }
            match self
                .docs
                .commit(JOURNEY_INDEX, &stream, indexed_at, state.version, put)
                .await
            {
                Ok(()) | Err(crate::ports::CommitError::Conflict { .. }) => {}
                Err(e) => return Err(StoreOutcome::Failed(EngineError::Retry(e.to_string()))),
            }
        }
        Ok(state)
    }
}

enum StoreOutcome {
    Conflict,
    Failed(EngineError),
}

fn collect_messages(events: &[JourneyEvent], outcome: &mut EngineOutcome) {
    for e in events {
        if let JourneyEvent::MessageRequested { message_id, .. } = e {
            outcome.messages.push(message_id.clone());
        }
    }
}
