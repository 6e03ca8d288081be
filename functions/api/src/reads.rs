//! Read routes: answered from the projections (customer 360, timeline,
//! consent ledger, email and name indexes), never by folding streams.

use crate::http::{customer_id, number, page_limit, Problem};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crm_core::consent::ledger;
use crm_core::customer::name_index::customers_with_name;
use crm_core::customer::views;
use serde_json::json;
use std::collections::HashMap;

type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

fn query(q: QueryParams, allowed: &[&str]) -> Result<HashMap<String, String>, Problem> {
    let Query(q) = q.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Problem::invalid(unknown.clone(), "unknown query parameter"));
    }
    Ok(q)
}

/// The customer's profile (`customer-360`). A customer whose stream exists
/// but whose profile is not there is not "not found": the projector has not
/// caught up yet (it runs after the append, a moment later on AWS) or the
/// document was lost (`replay --consumer customer-360` rebuilds it), so the
/// answer is 503 with `Retry-After`, and 404 only when there is no such customer.
async fn profile_or_404(state: &AppState, id: &str) -> Result<views::CustomerProfile, Problem> {
    if let Some(profile) = views::customer_profile(state.read_models.as_ref(), id).await? {
        return Ok(profile);
    }
    let stream = crm_core::customer::stream_id(id);
    if state.events.read_stream(&stream, 0, 1).await?.is_empty() {
        return Err(Problem::not_found("customer not found"));
    }
    Err(Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Service unavailable",
        "the customer exists, but their profile is not projected yet: retry shortly",
    ))
}

/// The newest events of the customer's other streams the timeline shows.
const HISTORY_LIMIT: usize = 100;

/// The customer 360 as the API shows it.
pub(crate) fn profile_json(p: &views::CustomerProfile) -> serde_json::Value {
    serde_json::to_value(p).unwrap_or(serde_json::Value::Null)
}

/// `GET /customers/{id}`: the customer 360 with its profile metrics, whose
/// windows are evaluated against the clock now.
pub async fn get_customer(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    let mut view = profile_json(&profile_or_404(&state, &id).await?);
    let metrics = crate::segments::metrics_now(&state, &id).await?;
    view["metrics"] = crate::segments::metrics_json(&metrics);
    Ok(Json(view).into_response())
}

/// The most customers `GET /customers?name=` answers.
const NAME_MATCHES: usize = 100;

/// `GET /customers?email=`: the customers registered under an address;
/// `GET /customers?name=`: the customers whose first or last name is
/// exactly that name (any case, white space trimmed; at most 100). Both
/// look up a keyed hash of the value (decision 0046), never its text.
pub async fn find_customers(State(state): State<AppState>, q: QueryParams) -> Result<Response, Problem> {
    let q = query(q, &["email", "name"])?;
    for field in ["email", "name"] {
        if q.get(field).is_some_and(|v| v.trim().is_empty()) {
            return Err(Problem::invalid(field, "must not be empty"));
        }
    }
    let given = |k: &str| q.get(k);
    let Some(identifiers) = state.identifiers.as_ref() else {
        tracing::error!("a customer lookup asked of an API without an identifier secret");
        return Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "customer lookups are not available",
        ));
    };
    let ids = match (given("email"), given("name")) {
        (Some(_), Some(_)) => return Err(Problem::invalid("name", "give either email or name, not both")),
        (Some(email), None) => views::customers_with_email(state.read_models.as_ref(), identifiers, email).await?,
        (None, Some(name)) => customers_with_name(state.read_models.as_ref(), identifiers, name, NAME_MATCHES).await?,
        (None, None) => {
            return Err(Problem::invalid(
                "email",
                "is required (GET /customers?email=<address> or GET /customers?name=<first or last name>)",
            ))
        }
    };
    let mut items = Vec::new();
    for id in ids {
        if let Some(p) = views::customer_profile(state.read_models.as_ref(), &id).await? {
            items.push(profile_json(&p));
        }
    }
    Ok(Json(json!({ "items": items })).into_response())
}

pub async fn timeline(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: QueryParams,
) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    let q = query(q, &["after", "limit"])?;
    let after = number(&q, "after")?.unwrap_or(0);
    let limit = page_limit(&q)?;
    let profile = profile_or_404(&state, &id).await?;
    let mut items = views::timeline(state.read_models.as_ref(), &id, after, limit + 1).await?;
    let more = items.len() > limit;
    items.truncate(limit);
    let next_after = if more { items.last().map(|e| e.version) } else { None };
    // Everything else about them, anonymous profiles merged into them included.
    let activity = crm_core::customer::history::recent_history(
        state.read_models.as_ref(),
        state.events.as_ref(),
        &id,
        &profile.customer.merged_profiles,
        HISTORY_LIMIT,
    )
    .await?;
    Ok(Json(json!({ "items": items, "next_after": next_after, "activity": activity })).into_response())
}

/// `GET /customers/{id}/consents`: the ledger's current state and full history.
pub async fn consents(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    profile_or_404(&state, &id).await?;
    let now = state.customers.now();
    let current = ledger::current_consents(state.read_models.as_ref(), &id).await?;
    let current: Vec<serde_json::Value> = current
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
            v["active"] = json!(r.is_active_at(now));
            v
        })
        .collect();
    let history = ledger::consent_history(state.read_models.as_ref(), &id).await?;
    Ok(Json(json!({ "current": current, "history": history })).into_response())
}

/// `GET /health`: each consumer's lag and dead-letter depth; `degraded` when
/// any dead-letter queue holds something.
pub async fn health(State(state): State<AppState>) -> Result<Response, Problem> {
    let consumers = match &state.health {
        Some(h) => h.consumers().await?,
        None => Vec::new(),
    };
    let degraded = consumers.iter().any(|c| c.is_degraded());
    Ok(Json(json!({
        "status": if degraded { "degraded" } else { "ok" },
        "consumers": consumers,
    }))
    .into_response())
}
