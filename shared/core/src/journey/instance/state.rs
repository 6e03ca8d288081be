//! A journey instance as its events fold it.

use super::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceStatus {
    Running,
    Waiting,
    Exited,
}

/// A pending wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWait {
    pub step_id: String,
    pub timer_name: String,
    pub due_at: DateTime<Utc>,
    pub waiting_for_event: bool,
    /// The stream version of the `JourneyWaitScheduled` that set the timer
    /// (the timer's `set_at_version`, so a re-armed timer is the same timer).
    #[serde(default)]
    pub set_at_version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JourneyInstance {
    pub id: String,
    pub campaign_id: String,
    pub campaign_version: u64,
    pub customer_id: String,
    pub status: InstanceStatus,
    pub current_step: Option<String>,
    pub waiting: Option<PendingWait>,
    pub visits: BTreeMap<String, u32>,
    pub trigger: TriggerRef,
    pub trigger_event: Value,
    pub exit_reason: Option<ExitReason>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
    /// The customer events this instance has acted on (its trigger, the
    /// events that ended its waits, the one that exited it): handed again
    /// (a redelivery, or an event the lookback took before it arrived),
    /// they change nothing.
    #[serde(default)]
    pub used_events: BTreeSet<Uuid>,
    /// The variant each experiment assigned (decision 0081), by experiment id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, String>,
}

/// Folds one event into the instance.
pub fn evolve(
    state: Option<JourneyInstance>,
    event: &JourneyEvent,
    at: DateTime<Utc>,
    version: u64,
) -> Option<JourneyInstance> {
    if let JourneyEvent::JourneyStarted {
        instance_id,
        campaign_id,
        campaign_version,
        customer_id,
        trigger,
        trigger_event,
        ..
    } = event
    {
        return Some(JourneyInstance {
            id: instance_id.clone(),
            campaign_id: campaign_id.clone(),
            campaign_version: *campaign_version,
            customer_id: customer_id.clone(),
            status: InstanceStatus::Running,
            current_step: None,
            waiting: None,
            visits: BTreeMap::new(),
            trigger: trigger.clone(),
            trigger_event: trigger_event.clone(),
            exit_reason: None,
            started_at: at,
            updated_at: at,
            version,
            used_events: BTreeSet::from([trigger.event_id]),
            variants: BTreeMap::new(),
        });
    }
    let mut s = state?;
    s.updated_at = at;
    if version > 0 {
        s.version = version;
    }
    match event {
        JourneyEvent::JourneyStarted { .. } => {}
        JourneyEvent::JourneyStepEntered { step_id, visit, .. } => {
            s.current_step = Some(step_id.clone());
            s.visits.insert(step_id.clone(), *visit);
            s.status = InstanceStatus::Running;
        }
        JourneyEvent::JourneyWaitScheduled {
            step_id,
            timer_name,
            due_at,
            waiting_for_event,
        } => {
            s.status = InstanceStatus::Waiting;
            s.waiting = Some(PendingWait {
                step_id: step_id.clone(),
                timer_name: timer_name.clone(),
                due_at: *due_at,
                waiting_for_event: *waiting_for_event,
                set_at_version: s.version,
            });
        }
        JourneyEvent::TimerFired { .. } | JourneyEvent::JourneyWaitEnded { .. } => {
            if let JourneyEvent::JourneyWaitEnded { event_id: Some(id), .. } = event {
                s.used_events.insert(*id);
            }
            s.waiting = None;
            s.status = InstanceStatus::Running;
        }
        JourneyEvent::MessageRequested { .. }
        | JourneyEvent::SegmentMembershipRequested { .. }
        | JourneyEvent::JourneyEventEmitted { .. }
        | JourneyEvent::JourneyHoldoutAssigned { .. } => {}
        JourneyEvent::JourneyVariantAssigned {
            experiment, variant, ..
        } => {
            s.variants.insert(experiment.clone(), variant.clone());
        }
        JourneyEvent::JourneyExited { reason, event_id, .. } => {
            if let Some(id) = event_id {
                s.used_events.insert(*id);
            }
            s.status = InstanceStatus::Exited;
            s.exit_reason = Some(*reason);
            s.waiting = None;
        }
    }
    Some(s)
}
