//! Campaign routes (list, publish, read, pause, resume, roll back) and the
//! journey reads: why a message was sent, and a customer's journeys.

use crate::http::{customer_id, parse_json, Principal, Problem, RawBody};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use crm_core::customer::views;
use crm_core::event::Actor;
use crm_core::failure::{Classify, FailureKind};
use crm_core::insights::campaign_stats::{campaign_stats, DEFAULT_CONVERSION_WINDOW_DAYS};
use crm_core::journey::catalog::{CampaignError, StoredCampaign};
use crm_core::journey::engine::{running_count, IndexedInstance, JOURNEY_INDEX};
use crm_core::journey::explain::explain as explain_message;
use crm_core::journey::instance::InstanceStatus;
use crm_core::ports::StoreError;
use serde_json::{json, Value};
use std::collections::HashMap;

fn view(c: &StoredCampaign) -> Value {
    json!({ "id": c.id, "version": c.version, "paused": c.paused, "definition": c.definition })
}

impl From<CampaignError> for Problem {
    fn from(e: CampaignError) -> Self {
        match e {
            CampaignError::Invalid(errors) => {
                let first = errors.first().map(|e| e.path.clone()).unwrap_or_default();
                let detail = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
                let list: Vec<Value> = errors
                    .iter()
                    .map(|e| json!({ "path": e.path, "message": e.message }))
                    .collect();
                let mut p = Problem::invalid(first, detail);
                p.errors = Some(Box::new(Value::Array(list)));
                p
            }
            CampaignError::NotFound => Problem::not_found("campaign not found"),
            e @ CampaignError::UnknownVersion(_) => Problem::not_found(e.to_string()).with_field("to"),
            e @ CampaignError::AlreadyCurrent { .. } => Problem::conflict(Some("to".into()), e.to_string()),
            e @ (CampaignError::AlreadyPaused | CampaignError::NotPaused | CampaignError::ChangedConcurrently) => {
                Problem::conflict(None, e.to_string())
            }
            CampaignError::Store(s) => s.into(),
            CampaignError::Failed(f) => failed(&f),
        }
    }
}

/// A classified failure the client cannot act on: 503 (retry the request)
/// unless it is poison (500). The failure is logged, not shown.
fn failed(e: &(impl Classify + std::fmt::Display)) -> Problem {
    match e.kind() {
        FailureKind::Poison => Problem::from(StoreError::Failed(e.to_string())),
        FailureKind::Retryable | FailureKind::Conflict => Problem::from(StoreError::Unavailable(e.to_string())),
    }
}

/// `GET /campaigns`: every campaign (shipped and stored, paused ones too)
/// at its current version, with its running instances (the journey index)
/// and its sends, conversions and revenue (the campaign-stats read model,
/// default conversion window). Not paged, like `GET /segments`: campaigns
/// are tens (decision 0070).
pub async fn list(State(state): State<AppState>) -> Result<Response, Problem> {
    let docs = state.read_models.as_ref();
    let mut items = Vec::new();
    for c in state.campaigns.list().await? {
        let running = running_count(docs, &c.id).await?;
        let stats = campaign_stats(docs, &c.id, DEFAULT_CONVERSION_WINDOW_DAYS).await?;
        items.push(json!({
            "id": c.id,
            "name": c.name,
            "status": if c.paused { "paused" } else { "active" },
            "version": c.version,
            "running_instances": running,
            "sends": stats.messages.sent,
            "conversions": stats.conversions,
            "revenue_minor": stats.revenue_minor,
        }));
    }
    Ok(Json(json!({ "items": items, "conversion_window_days": DEFAULT_CONVERSION_WINDOW_DAYS })).into_response())
}

/// `POST /campaigns/{id}/rollback?to=<version>`: the definition of version
/// `to` published again as a new current version (decision 0070). New
/// journeys start on it; running ones keep their version.
pub async fn rollback(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(q) = q.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = q.keys().find(|k| k.as_str() != "to") {
        return Err(Problem::invalid(unknown.clone(), "unknown query parameter"));
    }
    let to = match q.get("to").map(|v| v.trim().parse::<u64>()) {
        None => return Err(Problem::invalid("to", "`to` is required: the version to roll back to")),
        Some(Ok(v)) if v >= 1 => v,
        Some(_) => return Err(Problem::invalid("to", "`to` must be a version number (1 or more)")),
    };
    let c = state.campaigns.rollback(&id, to, Actor::api(&principal.0)).await?;
    let mut body = view(&c);
    body["rolled_back_to"] = json!(to);
    Ok(Json(body).into_response())
}

pub async fn put_campaign(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let definition: Value = parse_json(&body)?;
    let c = state.campaigns.put(&id, definition, Actor::api(&principal.0)).await?;
    Ok(Json(view(&c)).into_response())
}

pub async fn get_campaign(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let c = state
        .campaigns
        .get(&id)
        .await?
        .ok_or_else(|| Problem::not_found("campaign not found"))?;
    Ok(Json(view(&c)).into_response())
}

pub async fn pause(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let c = state.campaigns.pause(&id, Actor::api(&principal.0)).await?;
    // Running instances exit now, mid-wait, and their timers are deleted.
    let engine = crm_core::journey::engine::JourneyEngine::new(
        state.events.clone(),
        state.read_models.clone(),
        state.scheduler.clone(),
        std::sync::Arc::new(crm_core::journey::catalog::StoredCatalog::new(state.events.clone())),
        state.clock.clone(),
    );
    let exited = engine.on_campaign_paused(&id).await.map_err(|e| failed(&e))?;
    let mut body = view(&c);
    body["exited_instances"] = json!(exited.advanced.len());
    Ok(Json(body).into_response())
}

pub async fn resume(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let c = state.campaigns.resume(&id, Actor::api(&principal.0)).await?;
    Ok(Json(view(&c)).into_response())
}

/// `GET /messages/{message_id}/explain`: the causal chain of a requested message.
pub async fn explain(State(state): State<AppState>, Path(message_id): Path<String>) -> Result<Response, Problem> {
    let found = match explain_message(state.events.as_ref(), state.read_models.as_ref(), &message_id).await? {
        Some(found) => found,
        // A broadcast's message (decision 0084): its request, audience page and broadcast.
        None => crm_core::broadcast::explain::explain(state.events.as_ref(), state.read_models.as_ref(), &message_id)
            .await?
            .ok_or_else(|| Problem::not_found("message not found"))?,
    };
    Ok(Json(found).into_response())
}

/// `GET /customers/{id}/journeys`: the customer's journey instances, from
/// the index; a waiting one with its next timer (`next_timer`: the step,
/// when it is due, whether an event may end the wait first), folded from
/// its stream.
pub async fn journeys(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    if views::customer_profile(state.read_models.as_ref(), &id)
        .await?
        .is_none()
    {
        return Err(Problem::not_found("customer not found"));
    }
    let items = state
        .read_models
        .list(JOURNEY_INDEX, &id, "", None, 1000)
        .await?
        .into_iter()
        .map(|(_, v)| {
            serde_json::from_value::<IndexedInstance>(v).map_err(|e| StoreError::Failed(format!("journey index: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let engine = crm_core::journey::engine::JourneyEngine::new(
        state.events.clone(),
        state.read_models.clone(),
        state.scheduler.clone(),
        std::sync::Arc::new(crm_core::journey::catalog::StoredCatalog::new(state.events.clone())),
        state.clock.clone(),
    );
    let mut lines = Vec::with_capacity(items.len());
    for item in items {
        let waiting = if item.status == InstanceStatus::Waiting {
            let instance = engine.load(&item.instance_id).await.map_err(|e| failed(&e))?;
            instance.and_then(|i| i.waiting)
        } else {
            None
        };
        let mut line = serde_json::to_value(&item).map_err(|e| StoreError::Failed(format!("journey index: {e}")))?;
        line["next_timer"] = match waiting {
            Some(w) => json!({ "step_id": w.step_id, "due_at": w.due_at, "waiting_for_event": w.waiting_for_event }),
            None => Value::Null,
        };
        lines.push(line);
    }
    Ok(Json(json!({ "items": lines })).into_response())
}
