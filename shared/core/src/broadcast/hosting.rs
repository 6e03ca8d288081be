//! The campaign function's handler (decision 0084): the journeys (the
//! [`CampaignHandler`]) and the broadcasts' steps. A broadcast event
//! (`source` crm.broadcast) or a broadcast's timer runs the broadcast's
//! next step; every other event and timer goes to the journeys.

use super::fanout::{BroadcastService, StepOutcome};
use crate::consumer::{ConsumeError, EventHandler, GroupOutcome, PageOutcome};
use crate::event::EventEnvelope;
use crate::failure::{Classify, Failure, FailureKind};
use crate::journey::campaigns::CampaignHandler;
use crate::ports::DeadLetterQueue;
use crate::scheduler::{SchedulerError, TimerHandler, TimerKind, TimerPayload};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::Arc;

const NAME: &str = "campaign";

/// The broadcast events after which a step may be due.
const STEPS_ON: &[&str] = &[
    "BroadcastScheduled",
    "BroadcastStarted",
    "BroadcastAudienceProgressed",
    "BroadcastAudienceSnapshotted",
    "BroadcastPageSent",
    "BroadcastResumed",
    "BroadcastWinnerChosen",
];

/// What the campaign function hosts: journeys and broadcasts.
pub struct CampaignFunctionHandler {
    journeys: CampaignHandler,
    broadcasts: BroadcastService,
    dead_letters: Arc<dyn DeadLetterQueue>,
}

impl CampaignFunctionHandler {
    pub fn new(
        journeys: CampaignHandler,
        broadcasts: BroadcastService,
        dead_letters: Arc<dyn DeadLetterQueue>,
    ) -> Self {
        CampaignFunctionHandler {
            journeys,
            broadcasts,
            dead_letters,
        }
    }

    pub fn journeys(&self) -> &CampaignHandler {
        &self.journeys
    }

    pub fn broadcasts(&self) -> &BroadcastService {
        &self.broadcasts
    }

    /// The broadcast a stored event moves, if it is one whose step may be due.
    fn broadcast_of(event: &EventEnvelope) -> Option<String> {
        if !STEPS_ON.contains(&event.event_type.as_str()) {
            return None;
        }
        event
            .data
            .get("broadcast_id")
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    async fn step(&self, event: &EventEnvelope, id: &str, now: DateTime<Utc>) -> Result<GroupOutcome, ConsumeError> {
        let mut outcome = GroupOutcome {
            applied: Vec::new(),
            duplicates: Vec::new(),
            parked: Vec::new(),
        };
        match self.broadcasts.step(id).await {
            Ok(StepOutcome::Superseded | StepOutcome::Nothing) => outcome.duplicates.push(NAME),
            Ok(_) => outcome.applied.push(NAME),
            Err(e) if e.kind() == FailureKind::Poison => {
                crate::consumer::park_poison(self.dead_letters.as_ref(), NAME, event, e.to_string(), now).await?;
                outcome.parked.push(NAME);
            }
            Err(e) => return Err(ConsumeError::failed(NAME, Failure::from_error(NAME, e))),
        }
        Ok(outcome)
    }
}

#[async_trait]
impl EventHandler for CampaignFunctionHandler {
    fn name(&self) -> &'static str {
        NAME
    }

    fn consumer_names(&self) -> Vec<&'static str> {
        vec![NAME]
    }

    async fn handle(&self, event: &EventEnvelope, now: DateTime<Utc>) -> Result<GroupOutcome, ConsumeError> {
        match Self::broadcast_of(event) {
            Some(id) => self.step(event, &id, now).await,
            None if event.event_type.starts_with("Broadcast") => Ok(GroupOutcome {
                applied: Vec::new(),
                duplicates: Vec::new(),
                parked: Vec::new(),
            }),
            None => self.journeys.handle(event, now).await,
        }
    }

    /// The broadcast events one by one, then the rest as a page to the
    /// journeys (which read their catalog once for it).
    async fn handle_page(&self, events: &[EventEnvelope], now: DateTime<Utc>) -> Result<PageOutcome, ConsumeError> {
        let (broadcast, journeys): (Vec<EventEnvelope>, Vec<EventEnvelope>) = events
            .iter()
            .cloned()
            .partition(|e| e.event_type.starts_with("Broadcast"));
        if broadcast.is_empty() {
            return self.journeys.handle_page(events, now).await;
        }
        let mut outcome = if journeys.is_empty() {
            PageOutcome::default()
        } else {
            self.journeys.handle_page(&journeys, now).await?
        };
        let mine = crate::consumer::handle_each(self, &broadcast, now).await?;
        outcome.merge(mine);
        Ok(outcome)
    }
}

#[async_trait]
impl TimerHandler for CampaignFunctionHandler {
    async fn on_timer(&self, payload: &TimerPayload) -> Result<(), SchedulerError> {
        if payload.kind != TimerKind::BroadcastStep {
            return self.journeys.on_timer(payload).await;
        }
        let Some(id) = payload.data.get("broadcast_id").and_then(Value::as_str) else {
            return Err(SchedulerError::Refused(format!(
                "timer {}: its data names no broadcast",
                payload.name
            )));
        };
        match self.broadcasts.step(id).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == FailureKind::Poison => Err(SchedulerError::Refused(e.to_string())),
            Err(e) => Err(SchedulerError::Unavailable(e.to_string())),
        }
    }
}
