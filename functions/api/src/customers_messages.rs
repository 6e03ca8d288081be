//! `GET /customers/{id}/messages`: a customer's messages, newest first, each
//! with its status, channel, campaign and template.
//!
//! Built from what is stored already: the customer-streams index (decision
//! 0020) names every `message-<id>` stream of the customer with the time of
//! its first event, and each message stream is short (the channel's claim or
//! suppression or deferral, the send, the provider's feedback). A message is
//! listed once the channel has taken its request (a request still in the
//! channel's queue has no stream yet). Nothing personal is shown: ids,
//! channel, category, campaign, template, status and times.

use crate::http::{customer_id, page_limit, Problem};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use crm_core::customer::streams::CUSTOMER_STREAMS;
use crm_core::customer::views;
use crm_core::event::{DomainEvent, EventEnvelope};
use crm_core::messaging::events::MessageEvent;
use crm_core::ports::StoreError;
use serde_json::{json, Value};
use std::collections::HashMap;

type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The prefix of a message's stream id (`vocabulary::streams::message_stream_id`).
const MESSAGE_STREAM: &str = "message-";
/// Index documents read per page.
const INDEX_PAGE: usize = 500;
/// The most events read of one message stream.
const MESSAGE_EVENTS: usize = 200;

/// One message of the index: when its stream began, and its id.
struct Indexed {
    first_at: Option<DateTime<Utc>>,
    message_id: String,
}

/// Every message stream of the customer, newest first (by its first event,
/// then by id).
async fn indexed(state: &AppState, customer: &str) -> Result<Vec<Indexed>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = state
            .read_models
            .list(CUSTOMER_STREAMS, customer, MESSAGE_STREAM, after.as_deref(), INDEX_PAGE)
            .await?;
        let done = page.len() < INDEX_PAGE;
        after = page.last().map(|(k, _)| k.clone());
        for (stream, doc) in page {
            let Some(message_id) = stream.strip_prefix(MESSAGE_STREAM) else {
                continue;
            };
            out.push(Indexed {
                first_at: doc.get("first_at").and_then(|v| serde_json::from_value(v.clone()).ok()),
                message_id: message_id.to_string(),
            });
        }
        if done {
            break;
        }
    }
    out.sort_by(|a, b| (b.first_at, &b.message_id).cmp(&(a.first_at, &a.message_id)));
    Ok(out)
}

/// The status an event of a message's stream gives it (`None`: the event
/// changes nothing the list shows).
fn status_of(event: &MessageEvent) -> Option<&'static str> {
    Some(match event {
        MessageEvent::MessageSuppressed { .. } => "suppressed",
        MessageEvent::MessageDeferred { .. } => "deferred",
        MessageEvent::MessageClaimed { .. } => "sending",
        MessageEvent::MessageSent { .. } => "sent",
        MessageEvent::MessageFailed { .. } => "failed",
        MessageEvent::MessageOutcomeUnknown { .. } => "unknown",
        MessageEvent::MessageNotAccepted { .. } => "not-accepted",
        MessageEvent::MessageAccepted { .. } => return None,
        MessageEvent::MessageContentRejected { .. } => "rejected",
        MessageEvent::EmailDelivered { .. } => "delivered",
        MessageEvent::EmailBounced { .. } => "bounced",
        MessageEvent::EmailComplained { .. } => "complained",
        MessageEvent::EmailOpened { .. } => "opened",
        MessageEvent::EmailClicked { .. } => "clicked",
    })
}

/// The message as the list shows it, folded from its stream: the facts its
/// events name (channel, campaign, template, category, suppression reason)
/// and its status, that of its newest event.
fn summary(message_id: &str, events: &[EventEnvelope]) -> Value {
    let mut item = json!({
        "message_id": message_id,
        "status": Value::Null,
        "channel": Value::Null,
        "category": Value::Null,
        "campaign_id": Value::Null,
        "template": Value::Null,
        "template_version": Value::Null,
        "first_at": events.first().map(|e| e.occurred_at),
        "status_at": Value::Null,
    });
    for envelope in events {
        let Ok(event) = MessageEvent::from_envelope(envelope) else {
            continue;
        };
        match &event {
            MessageEvent::MessageSuppressed {
                campaign_id,
                channel,
                reason,
                ..
            } => {
                item["campaign_id"] = json!(campaign_id);
                item["channel"] = json!(channel);
                item["reason"] = json!(reason);
            }
            MessageEvent::MessageDeferred { channel, until, .. } => {
                item["channel"] = json!(channel);
                item["deferred_until"] = json!(until);
            }
            MessageEvent::MessageClaimed {
                channel,
                campaign_id,
                template,
                template_version,
                category,
                ..
            } => {
                item["channel"] = json!(channel);
                item["campaign_id"] = json!(campaign_id);
                item["template"] = json!(template);
                item["template_version"] = json!(template_version);
                item["category"] = json!(category);
            }
            MessageEvent::MessageSent {
                channel,
                category,
                campaign_id,
                ..
            } => {
                item["channel"] = json!(channel);
                item["category"] = json!(category);
                item["campaign_id"] = json!(campaign_id);
            }
            _ => {}
        }
        if let Some(status) = status_of(&event) {
            item["status"] = json!(status);
            item["status_at"] = json!(envelope.occurred_at);
        }
    }
    item
}

/// `GET /customers/{id}/messages?after=&limit=`: the customer's messages,
/// newest first; `next_after` (a message id) continues the list.
pub async fn messages(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: QueryParams,
) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    let Query(q) = q.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = q.keys().find(|k| !["after", "limit"].contains(&k.as_str())) {
        return Err(Problem::invalid(unknown.clone(), "unknown query parameter"));
    }
    let limit = page_limit(&q)?;
    if views::customer_profile(state.read_models.as_ref(), &id)
        .await?
        .is_none()
    {
        return Err(Problem::not_found("customer not found"));
    }
    let all = indexed(&state, &id).await?;
    let start = match q.get("after") {
        None => 0,
        Some(after) => {
            all.iter().position(|m| m.message_id == *after).ok_or_else(|| {
                Problem::invalid("after", "not a message of this customer (a next_after of this list)")
            })? + 1
        }
    };
    let page: Vec<&Indexed> = all.iter().skip(start).take(limit).collect();
    let next_after = if start + page.len() < all.len() {
        page.last().map(|m| m.message_id.clone())
    } else {
        None
    };
    let mut items = Vec::with_capacity(page.len());
    for m in page {
        let stream = format!("{MESSAGE_STREAM}{}", m.message_id);
        let events = state.events.read_stream(&stream, 0, MESSAGE_EVENTS).await?;
        items.push(summary(&m.message_id, &events));
    }
    Ok(Json(json!({ "items": items, "next_after": next_after })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(version: u64, event: Value) -> EventEnvelope {
        let id = uuid::Uuid::now_v7();
        EventEnvelope {
            event_id: id,
            stream_id: "message-m-1".into(),
            version,
            event_type: event["type"].as_str().unwrap_or_default().to_string(),
            schema_version: 1,
            customer_id: Some("c-1".into()),
            occurred_at: Utc::now(),
            recorded_at: Utc::now(),
            causation_id: None,
            correlation_id: id,
            actor: "test".into(),
            data: event["data"].clone(),
        }
    }

    #[test]
    fn a_message_takes_the_status_of_its_newest_event_and_the_facts_of_its_claim() {
        let claimed = envelope(
            1,
            json!({ "type": "MessageClaimed", "data": {
                "message_id": "m-1", "customer_id": "c-1", "channel": "email", "campaign_id": "welcome",
                "template": "welcome", "template_version": 2, "category": "marketing", "address_hash": "h"
            }}),
        );
        let delivered = envelope(
            2,
            json!({ "type": "EmailDelivered", "data": { "message_id": "m-1", "customer_id": "c-1" } }),
        );
        let s = summary("m-1", &[claimed.clone(), delivered]);
        assert_eq!(s["status"], "delivered", "{s}");
        assert_eq!(
            (&s["channel"], &s["campaign_id"], &s["template"], &s["template_version"]),
            (&json!("email"), &json!("welcome"), &json!("welcome"), &json!(2))
        );
        assert_eq!(summary("m-1", &[claimed])["status"], "sending");
        let suppressed = envelope(
            1,
            json!({ "type": "MessageSuppressed", "data": {
                "message_id": "m-1", "customer_id": "c-1", "campaign_id": "welcome", "channel": "sms",
                "reason": "no-consent", "detail": "none"
            }}),
        );
        let s = summary("m-1", &[suppressed]);
        assert_eq!(
            (&s["status"], &s["reason"]),
            (&json!("suppressed"), &json!("no-consent")),
            "{s}"
        );
    }
}
