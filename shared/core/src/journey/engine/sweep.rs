//! The sweep: a walk over every campaign's running instances, a budget of
//! index pages at a time, that exits instances of paused campaigns, heals
//! instances left behind by a crash, fires overdue waits, re-arms lost
//! timers and removes orphaned index lines (decision 0033).

use super::{
    campaign_partition, CatalogSnapshot, EngineError, EngineOutcome, IndexedInstance, JourneyEngine, JOURNEY_INDEX,
};
use crate::failure::{Classify, FailureKind};
use crate::journey::instance::{self, JourneyInput};
use crate::ports::ReadOp;
use crate::scheduler::TimerPayload;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

impl JourneyEngine {
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
            Some(v) => serde_json::from_value(v).map_err(|e| EngineError::unreadable("sweep cursor", e))?,
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
                    Err(e) if e.kind() == FailureKind::Poison => {
                        tracing::error!(instance_id = %key, reason = %e, "sweep skipped an instance it cannot repair")
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
        let body = serde_json::to_value(&cursor).map_err(|e| EngineError::unreadable("sweep cursor", e))?;
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
            Err(e) => return Err(EngineError::Index(e)),
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
            Err(e) => Err(EngineError::Index(e)),
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
            .map_err(|e| EngineError::unreadable(format!("journey index line {key}"), e))?;
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
            let context = self.no_customer();
            if self
                .advance(
                    catalog,
                    &id,
                    &JourneyInput::CampaignPaused,
                    &context,
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
            let context = self.customer_context(&state.customer_id).await?;
            let input = JourneyInput::Timer {
                timer_name: wait.timer_name.clone(),
            };
            if self
                .advance(catalog, &id, &input, &context, None, Some(state.version), &mut advanced)
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
