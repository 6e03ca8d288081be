//! "Why was this message sent?": the causal chain from a requested message
//! back through its journey to the triggering event and the events on the
//! trigger's stream that led to it.

use super::engine::{JOURNEY_INDEX, MESSAGE_SORT};
use super::instance::{self, JourneyEvent};
use crate::event::{DomainEvent, EventEnvelope};
use crate::ports::{EventStore, ReadModelStore, StoreError};
use crate::vocabulary::streams::message_stream_id;
use crate::vocabulary::ChannelChoice;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// One link of the chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Link {
    /// `message`, `journey`, `trigger`, or `history` (what led to the trigger).
    pub role: &'static str,
    pub event_id: uuid::Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub stream_id: String,
    pub version: u64,
    pub occurred_at: DateTime<Utc>,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// A `JourneyVariantAssigned` link (decision 0081): the experiment and
    /// the variant the customer was assigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<AssignedVariant>,
}

/// A variant of an experiment the journey assigned (decision 0081).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssignedVariant {
    pub experiment: String,
    pub variant: String,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub message_id: String,
    pub instance_id: String,
    pub campaign: String,
    pub customer_id: String,
    /// Newest first: the message, the journey steps, the trigger, its history.
    pub chain: Vec<Link>,
    /// The variants the journey had been assigned when it requested the
    /// message (decision 0081), oldest first: the message was sent in them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<AssignedVariant>,
    /// A `channel: preferred` send (decision 0076): the channel taken, and
    /// why each channel was or was not, as the message stream recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel_choice: Option<ChannelChoice>,
}

/// The most events of a message stream read for its channel choice.
const MESSAGE_EVENTS_READ: usize = 1000;

/// The latest channel choice recorded on the message's stream (on its
/// claim or its suppression), if it was a `channel: preferred` send.
async fn channel_choice(events: &dyn EventStore, message_id: &str) -> Result<Option<ChannelChoice>, StoreError> {
    let stream = events
        .read_stream(&message_stream_id(message_id), 0, MESSAGE_EVENTS_READ)
        .await?;
    let latest = stream.iter().rev().find_map(|e| e.data.get("channel_choice"));
    match latest {
        None => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| StoreError::Failed(format!("the channel choice of {message_id} is unreadable: {e}"))),
    }
}

fn link(role: &'static str, e: &EventEnvelope, step_id: Option<String>) -> Link {
    Link {
        role,
        event_id: e.event_id,
        event_type: e.event_type.clone(),
        stream_id: e.stream_id.clone(),
        version: e.version,
        occurred_at: e.occurred_at,
        actor: e.actor.clone(),
        step_id,
        variant: None,
    }
}

fn step_of(e: &JourneyEvent) -> Option<String> {
    match e {
        JourneyEvent::JourneyStepEntered { step_id, .. }
        | JourneyEvent::JourneyWaitScheduled { step_id, .. }
        | JourneyEvent::TimerFired { step_id, .. }
        | JourneyEvent::JourneyWaitEnded { step_id, .. }
        | JourneyEvent::MessageRequested { step_id, .. }
        | JourneyEvent::JourneyVariantAssigned { step_id, .. } => Some(step_id.clone()),
        _ => None,
    }
}

/// Explains message `message_id`, or `None` if no journey requested it.
pub async fn explain(
    events: &dyn EventStore,
    docs: &dyn ReadModelStore,
    message_id: &str,
) -> Result<Option<Explanation>, StoreError> {
    let Some(pointer) = docs.get(JOURNEY_INDEX, message_id, MESSAGE_SORT).await? else {
        return Ok(None);
    };
    let (Some(instance_id), Some(version)) = (pointer["instance_id"].as_str(), pointer["version"].as_u64()) else {
        return Err(StoreError::Failed(format!(
            "message index entry of {message_id} is unreadable"
        )));
    };
    let journey = events
        .read_stream(&instance::stream_id(instance_id), 0, version as usize)
        .await?;
    let mut chain = Vec::new();
    let mut started = None;
    let mut variants = Vec::new();
    for e in journey.iter().rev() {
        let typed = JourneyEvent::from_envelope(e).map_err(|err| StoreError::Failed(err.to_string()))?;
        let role = if e.version == version { "message" } else { "journey" };
        let mut l = link(role, e, step_of(&typed));
        if let JourneyEvent::JourneyVariantAssigned {
            experiment, variant, ..
        } = &typed
        {
            let assigned = AssignedVariant {
                experiment: experiment.clone(),
                variant: variant.clone(),
            };
            variants.insert(0, assigned.clone());
            l.variant = Some(assigned);
        }
        chain.push(l);
        if let JourneyEvent::JourneyStarted {
            campaign_id,
            campaign_version,
            customer_id,
            trigger,
            ..
        } = typed
        {
            started = Some((format!("{campaign_id}@{campaign_version}"), customer_id, trigger));
        }
    }
    let Some((campaign, customer_id, trigger)) = started else {
        return Err(StoreError::Failed(format!("journey {instance_id} has no start")));
    };
    // The trigger and, before it, the events on its stream that led to it.
    let history = events
        .read_stream(&trigger.stream_id, 0, trigger.version as usize)
        .await?;
    for e in history.iter().rev() {
        let role = if e.event_id == trigger.event_id {
            "trigger"
        } else {
            "history"
        };
        chain.push(link(role, e, None));
    }
    Ok(Some(Explanation {
        message_id: message_id.to_string(),
        instance_id: instance_id.to_string(),
        campaign,
        customer_id,
        chain,
        variants,
        channel_choice: channel_choice(events, message_id).await?,
    }))
}
