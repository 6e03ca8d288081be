//! Activity events, profile metrics and segments
//! (docs/decisions/0014-profile-metrics-and-segments.md).

use crate::http::{answer, customer_id, page_limit, CommandCall, Problem};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crm_core::customer::activity::{record_activity, ActivityError, RecordActivity, Recorded};
use crm_core::customer::metrics::{profile_metrics, ProfileMetrics};
use crm_core::customer::CustomerError;
use crm_core::event::{Actor, CommandMeta};
use crm_core::segments::{self, Rfm};
use serde_json::{json, Value};
use std::collections::HashMap;

type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

fn query(q: QueryParams, allowed: &[&str]) -> Result<HashMap<String, String>, Problem> {
    let Query(q) = q.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Problem::invalid(unknown.clone(), "unknown query parameter"));
    }
    Ok(q)
}

impl From<ActivityError> for Problem {
    fn from(e: ActivityError) -> Self {
        match e {
            ActivityError::Rejected(CustomerError::Invalid { field, message }) => Problem::invalid(field, message),
            ActivityError::Rejected(CustomerError::NotFound) => Problem::not_found("customer not found"),
            ActivityError::Rejected(CustomerError::Conflict { field, message }) => Problem::conflict(field, message),
            ActivityError::IdempotencyKeyReused => Problem::idempotency_key_reused(),
            ActivityError::Store(e) => e.into(),
            ActivityError::Codec(e) => Problem::unreadable_event(&e),
            ActivityError::TooLarge(detail) => Problem::command_too_large(detail),
        }
    }
}

/// `POST /customers/{id}/activity`: one typed activity event (or a login).
pub async fn record(
    State(state): State<AppState>,
    Path(id): Path<String>,
    call: CommandCall,
) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    let body = &call.body;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::malformed("a JSON request body is required"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Problem::malformed(format!("the body is not valid JSON: {e}")))?;
    let request = RecordActivity::from_json(value).map_err(ActivityError::from)?;
    let key = call.idempotency;
    // The customer must exist, as the write side knows it (and not be erased).
    if state.customers.load(&id).await?.is_none_or(|c| c.is_erased()) {
        return Err(Problem::not_found("customer not found"));
    }
    let meta = CommandMeta::new(Actor::api(&call.principal.0));
    let now = state.clock.now();
    let recorded = record_activity(state.events.as_ref(), &id, &request, &meta, key.as_ref(), now).await?;
    Ok(match recorded {
        Recorded::Applied { body, .. } => answer(201, &body, false, ""),
        Recorded::Replayed { status, body } => answer(status, &body, true, ""),
    })
}

/// The metrics as the API shows them.
pub fn metrics_json(m: &ProfileMetrics) -> Value {
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// The customer's profile metrics now (windows evaluated against the clock).
pub async fn metrics_now(state: &AppState, id: &str) -> Result<ProfileMetrics, Problem> {
    Ok(profile_metrics(state.read_models.as_ref(), id, state.clock.now()).await?)
}

/// `GET /customers/{id}/segments`: the segments the customer is in, and the
/// RFM scores as of now.
pub async fn customer_segments(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    if crm_core::customer::views::customer_profile(state.read_models.as_ref(), &id)
        .await?
        .is_none()
    {
        return Err(Problem::not_found("customer not found"));
    }
    let members = segments::customer_segments(state.read_models.as_ref(), &id).await?;
    let metrics = metrics_now(&state, &id).await?;
    let rfm = Rfm::of(&metrics);
    Ok(Json(json!({
        "customer_id": id,
        "items": members.iter().map(|m| json!({ "segment": m.segment, "since": m.since, "reason": m.reason })).collect::<Vec<_>>(),
        "rfm": rfm.map(|r| json!({ "recency": r.recency, "frequency": r.frequency, "monetary": r.monetary, "segment": r.segment() })),
    }))
    .into_response())
}

/// `GET /segments`: every segment with its rule and member count.
pub async fn list(State(state): State<AppState>) -> Result<Response, Problem> {
    let mut items = Vec::new();
    for (id, name, rule) in segments::all_segments(state.read_models.as_ref()).await? {
        let members = segments::member_count(state.read_models.as_ref(), &id).await?;
        items.push(json!({ "id": id, "name": name, "rule": rule, "members": members }));
    }
    Ok(Json(json!({ "items": items })).into_response())
}

/// `GET /segments/{id}/members?after=&limit=`: members by customer id.
pub async fn members(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: QueryParams,
) -> Result<Response, Problem> {
    let q = query(q, &["after", "limit"])?;
    let known = segments::rule_of(&id).is_some()
        || segments::all_segments(state.read_models.as_ref())
            .await?
            .iter()
            .any(|(s, _, _)| *s == id);
    if !known {
        return Err(Problem::not_found(format!("no segment {id}")));
    }
    let after = match q.get("after") {
        None => None,
        Some(a) => Some(customer_id(a).map_err(|_| Problem::invalid("after", "must be a customer id"))?),
    };
    let limit = page_limit(&q)?;
    let mut page = segments::members(state.read_models.as_ref(), &id, after.as_deref(), limit + 1).await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next_after = if more {
        page.last().map(|m| m.customer_id.clone())
    } else {
        None
    };
    let items: Vec<Value> = page
        .iter()
        .map(|m| json!({ "customer_id": m.customer_id, "since": m.since, "reason": m.reason }))
        .collect();
    Ok(Json(json!({ "segment": id, "items": items, "next_after": next_after })).into_response())
}
