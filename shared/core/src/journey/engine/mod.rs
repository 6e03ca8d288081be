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
//!
//! The engine's parts, one file each:
//! - `snapshot`: the campaigns as the catalog has them (the
//!   [`CampaignCatalog`] port and its [`CatalogSnapshot`]),
//! - `start`: a customer's event, handed to the running instances and
//!   starting the journeys it triggers,
//! - `advance`: a fired timer, and one input decided for an instance,
//! - `lookback`: the customer's events recorded after a trigger,
//! - `browse`: the browse-abandonment entry rule (distinct products
//!   viewed, no cart, before the trigger; decision 0069),
//! - `pause`: a paused campaign's instances exited a page at a time,
//! - `stream`: an instance's stream loaded and folded, its events
//!   stored, and healing after a crash,
//! - `index`: the journey index (customer → instances, campaign →
//!   running instances, message → journey),
//! - `sweep`: the walk that re-arms lost timers and fires overdue ones,
//! - `error`: what a caller retries and what it parks.

mod advance;
mod browse;
mod error;
mod index;
mod lookback;
mod pause;
mod snapshot;
mod start;
mod stream;
mod sweep;

pub use error::EngineError;
pub use index::{campaign_partition, running_count, IndexedInstance, JOURNEY_INDEX, MESSAGE_SORT};
pub use pause::PAUSE_PAGE;
pub use snapshot::{CampaignAt, CampaignCatalog, CatalogEntry, CatalogSnapshot, FixedCatalog};
pub use stream::{LoadedInstance, REARM_MARGIN};
pub use sweep::{
    sweep_timer, SweepBudget, SweepCursor, SweepOutcome, SweepPosition, ORPHAN_LINE_GRACE, OVERDUE_AFTER, SWEEP,
    SWEEP_STREAM,
};

use super::catalog::CampaignAggregate;
use super::definition::Campaign;
use super::instance::{JourneyAggregate, JourneyContext, JourneyEvent, JourneyFacts};
use crate::aggregate::AggregateService;
use crate::clock::Clock;
use crate::customer::views;
use crate::ports::{EventStore, ReadModelStore};
use crate::scheduler::Scheduler;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

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

pub struct JourneyEngine {
    events: Arc<dyn EventStore>,
    /// The instances' command path: loads, decisions and appends.
    instances: AggregateService<JourneyAggregate>,
    /// The campaigns' command path (a pause's continuations).
    campaigns: AggregateService<CampaignAggregate>,
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
            instances: AggregateService::new(events.clone(), clock.clone()).with_max_attempts(MAX_ATTEMPTS),
            campaigns: AggregateService::new(events.clone(), clock.clone()).with_max_attempts(MAX_ATTEMPTS),
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

    /// The customer's time zone and profile, read now.
    async fn customer_context(&self, customer_id: &str) -> Result<CustomerContext, EngineError> {
        let profile = views::customer_profile(self.docs.as_ref(), customer_id).await?;
        let timezone = profile
            .as_ref()
            .and_then(|p| crm_kernel::vocabulary::Zone::named(&p.customer.preferences.timezone))
            .unwrap_or(crm_kernel::vocabulary::Zone::UTC);
        let json = profile.map(|p| Arc::new(serde_json::to_value(p).unwrap_or(Value::Null)));
        Ok(CustomerContext {
            now: self.clock.now(),
            timezone,
            profile: json,
            customer_id: Some(customer_id.to_string()),
            segments: OnceLock::new(),
        })
    }

    /// Reads the segments the customer is in (decision 0086), once per
    /// context and only for a campaign whose conditions name a segment:
    /// one read of their segments stream, strongly consistent as
    /// `entry.segment` is ([`crate::segments::is_member_now`]).
    async fn read_segments_for(&self, context: &CustomerContext, campaign: &Campaign) -> Result<(), EngineError> {
        let Some(customer_id) = &context.customer_id else {
            return Ok(());
        };
        if context.segments.get().is_some() || campaign.segments_named().is_empty() {
            return Ok(());
        }
        let segments = crate::segments::segments_now(self.events.as_ref(), customer_id).await?;
        // Only this task fills it; a second set cannot happen.
        let _ = context.segments.set(Arc::new(segments));
        Ok(())
    }

    /// No customer's context (a pause): UTC, no profile.
    fn no_customer(&self) -> CustomerContext {
        CustomerContext {
            now: self.clock.now(),
            timezone: crm_kernel::vocabulary::Zone::UTC,
            profile: None,
            customer_id: None,
            segments: OnceLock::new(),
        }
    }

    /// The campaigns now, as the catalog has them: a page handled against
    /// one snapshot reads the catalog once ([`JourneyEngine::on_event_in`]).
    pub async fn catalog_now(&self) -> Result<Arc<CatalogSnapshot>, EngineError> {
        Ok(self.catalog.current().await?)
    }
}

/// What the engine read for an input before deciding it: its now when it
/// took the input, the customer's time zone and profile (none for a pause),
/// and, once a campaign whose conditions name a segment needs them, the
/// segments the customer is in (decision 0086).
#[derive(Debug, Clone)]
pub(super) struct CustomerContext {
    now: chrono::DateTime<chrono::Utc>,
    timezone: crm_kernel::vocabulary::Zone,
    profile: Option<Arc<Value>>,
    customer_id: Option<String>,
    segments: OnceLock<Arc<BTreeSet<String>>>,
}

impl CustomerContext {
    /// The context the instance's decision reads.
    fn journey(&self) -> JourneyContext<'_> {
        JourneyContext {
            now: self.now,
            timezone: self.timezone,
            profile: self.profile.as_deref(),
            segments: self.segments.get().map(|s| s.as_ref()),
        }
    }

    /// The facts of a decision on `campaign` (the lookback's finds added later, if any).
    fn facts(&self, campaign: Arc<Campaign>) -> JourneyFacts {
        JourneyFacts {
            campaign,
            timezone: self.timezone,
            profile: self.profile.clone(),
            segments: self.segments.get().cloned(),
            lookback: Vec::new(),
        }
    }
}

fn collect_messages(events: &[JourneyEvent], outcome: &mut EngineOutcome) {
    for e in events {
        if let JourneyEvent::MessageRequested { message_id, .. } = e {
            outcome.messages.push(message_id.clone());
        }
    }
}
