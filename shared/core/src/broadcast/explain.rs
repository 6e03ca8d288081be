//! Why a broadcast's message was sent: the `MessageRequested` on its send
//! stream, the audience page that targeted the customer, and the
//! broadcast's start and schedule. The message's request is found through
//! the pointer the broadcast-stats projection keeps per message.
//!
//! With a subject test (decision 0087): a test message names its arm in
//! `variants` (experiment `subject`); a message to the rest has the
//! `BroadcastWinnerChosen` that gave it its subject in the chain (`winner`),
//! found by the version its request names (`data.winner`).

use super::stats::{broadcast_of, request_pointer};
use crate::event::EventEnvelope;
use crate::journey::explain::{AssignedVariant, Explanation, Link};
use crate::ports::{EventStore, ReadModelStore, StoreError};

fn link(role: &'static str, e: &EventEnvelope) -> Link {
    Link {
        role,
        event_id: e.event_id,
        event_type: e.event_type.clone(),
        stream_id: e.stream_id.clone(),
        version: e.version,
        occurred_at: e.occurred_at,
        actor: e.actor.clone(),
        step_id: None,
        variant: None,
    }
}

/// The chain of a broadcast's message, newest first: the request
/// (`message`), the audience page (`audience`), `BroadcastStarted` and
/// `BroadcastScheduled` (`broadcast`). `None` when `message_id` is not a
/// broadcast's, or its request is not known (yet).
pub async fn explain(
    events: &dyn EventStore,
    docs: &dyn ReadModelStore,
    message_id: &str,
) -> Result<Option<Explanation>, StoreError> {
    let Some(broadcast) = broadcast_of(message_id) else {
        return Ok(None);
    };
    let Some((stream_id, version)) = request_pointer(docs, broadcast, message_id).await? else {
        return Ok(None);
    };
    let Some(request) = events
        .read_stream(&stream_id, version.saturating_sub(1), 1)
        .await?
        .into_iter()
        .find(|e| e.version == version && e.event_type == "MessageRequested")
    else {
        return Ok(None);
    };
    let customer_id = request.customer_id.clone().unwrap_or_default();
    let mut chain = vec![link("message", &request)];
    // `broadcast-<id>-send-<bucket>-<page>`: the audience page it came from.
    let page = stream_id.rsplit('-').next().and_then(|p| p.parse::<u64>().ok());
    if let Some(page) = page {
        let audience = events
            .read_stream(&super::audience_stream(broadcast, page), 0, 10)
            .await?;
        chain.extend(audience.iter().rev().map(|e| link("audience", e)));
    }
    let variant = request.data.pointer("/data/variant").and_then(|v| v.as_str());
    let mut history: Vec<EventEnvelope> = events
        .read_stream(&super::stream_id(broadcast), 0, 10)
        .await?
        .into_iter()
        .filter(|e| matches!(e.event_type.as_str(), "BroadcastScheduled" | "BroadcastStarted"))
        .collect();
    if let Some(version) = request.data.pointer("/data/winner/version").and_then(|v| v.as_u64()) {
        history.extend(
            events
                .read_stream(&super::stream_id(broadcast), version.saturating_sub(1), 1)
                .await?
                .into_iter()
                .filter(|e| e.version == version && e.event_type == "BroadcastWinnerChosen"),
        );
    }
    chain.extend(history.iter().rev().map(|e| {
        let role = if e.event_type == "BroadcastWinnerChosen" {
            "winner"
        } else {
            "broadcast"
        };
        link(role, e)
    }));
    let variants = variant
        .map(|v| AssignedVariant {
            experiment: super::model::SUBJECT_EXPERIMENT.to_string(),
            variant: v.to_string(),
        })
        .into_iter()
        .collect();
    Ok(Some(Explanation {
        message_id: message_id.to_string(),
        instance_id: broadcast.to_string(),
        campaign: super::stream_id(broadcast),
        customer_id,
        chain,
        variants,
        channel_choice: None,
    }))
}
