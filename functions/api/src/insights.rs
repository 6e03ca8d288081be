//! Insight routes: the purchase funnel (per customer and per period), the
//! attribution of an order and of a period, and campaign stats. Answered
//! from the insight projections (crm_core::insights, decision 0013).

use crate::http::{customer_id, Problem};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use crm_core::customer::views;
use crm_core::insights::attribution::{self, Model};
use crm_core::insights::campaign_stats::{self, DEFAULT_CONVERSION_WINDOW_DAYS};
use crm_core::insights::{funnel, MAX_RANGE_DAYS};
use serde_json::json;
use std::collections::HashMap;

type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

/// The period a report covers when the request names none: the last 30 days.
const DEFAULT_RANGE_DAYS: i64 = 30;
const MAX_WINDOW_DAYS: i64 = 90;

fn query(q: QueryParams, allowed: &[&str]) -> Result<HashMap<String, String>, Problem> {
    let Query(q) = q.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Problem::invalid(unknown.clone(), "unknown query parameter"));
    }
    Ok(q)
}

fn time(q: &HashMap<String, String>, name: &str) -> Result<Option<DateTime<Utc>>, Problem> {
    q.get(name)
        .map(|v| {
            DateTime::parse_from_rfc3339(v.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| Problem::invalid(name, "must be an RFC 3339 date-time, e.g. 2026-11-01T00:00:00Z"))
        })
        .transpose()
}

/// `from` (inclusive) and `to` (exclusive): both optional, `from` < `to`.
/// An optional start and end.
type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn optional_period(q: &HashMap<String, String>) -> Result<Bounds, Problem> {
    let (from, to) = (time(q, "from")?, time(q, "to")?);
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(Problem::invalid("to", "must be later than from"));
        }
    }
    Ok((from, to))
}

/// A report's period: `to` defaults to now, `from` to 30 days before `to`;
/// at most 366 days.
fn period(q: &HashMap<String, String>, now: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), Problem> {
    let (from, to) = optional_period(q)?;
    let to = to.unwrap_or(now);
    let from = match from {
        Some(f) => f,
        None => to - Duration::days(DEFAULT_RANGE_DAYS),
    };
    if from >= to {
        return Err(Problem::invalid("from", "must be earlier than to"));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(Problem::invalid(
            "from",
            format!("the period from..to may span at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok((from, to))
}

/// `GET /insights/funnel?from=&to=`: customers and conversion per stage.
pub async fn funnel_report(State(state): State<AppState>, q: QueryParams) -> Result<Response, Problem> {
    let q = query(q, &["from", "to"])?;
    let now = state.clock.now();
    let (from, to) = period(&q, now)?;
    let report = funnel::funnel_report(state.read_models.as_ref(), from, to, now).await?;
    Ok(Json(report).into_response())
}

/// `GET /customers/{id}/funnel?from=&to=`: the customer's stages, current
/// stage, drop-off and time in each stage.
pub async fn customer_funnel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: QueryParams,
) -> Result<Response, Problem> {
    let id = customer_id(&id)?;
    let q = query(q, &["from", "to"])?;
    let (from, to) = optional_period(&q)?;
    if views::customer_profile(state.read_models.as_ref(), &id)
        .await?
        .is_none()
    {
        return Err(Problem::not_found("customer not found"));
    }
    let f = funnel::customer_funnel(state.read_models.as_ref(), &id, from, to, state.clock.now()).await?;
    Ok(Json(f).into_response())
}

fn credits(c: &[attribution::Credit], key: &str) -> serde_json::Value {
    c.iter()
        .map(|c| json!({ key: c.key, "credit": c.credit, "credit_bp": c.credit_bp, "value_minor": c.value_minor, "touches": c.touches }))
        .collect()
}

/// `GET /orders/{id}/attribution`: the order under all five models.
pub async fn order_attribution(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let id = id.trim();
    if id.is_empty() || id.len() > 128 {
        return Err(Problem::invalid("id", "must be an order id (1 to 128 characters)"));
    }
    let a = attribution::order_attribution(state.read_models.as_ref(), id)
        .await?
        .ok_or_else(|| Problem::not_found("order not found"))?;
    let mut models = serde_json::Map::new();
    for m in &a.models {
        models.insert(
            m.model.as_str().to_string(),
            json!({
                "touchpoints": m.touches,
                "channels": credits(&m.channels, "channel"),
                "campaigns": credits(&m.campaigns, "campaign"),
            }),
        );
    }
    Ok(Json(json!({
        "order_id": a.order.order_id,
        "customer_id": a.order.customer_id,
        "placed_at": a.order.placed_at,
        "total_minor": a.order.total_minor,
        "currency": a.order.currency,
        "lookback_days": a.lookback_days,
        "touchpoints": a.touchpoints,
        "models": models,
    }))
    .into_response())
}

fn summed(s: &[attribution::Summed], key: &str) -> serde_json::Value {
    s.iter()
        .map(|s| json!({ key: s.key, "conversions": s.conversions, "credit_bp": s.credit_bp, "value_minor": s.value_minor, "touches": s.touches }))
        .collect()
}

/// `GET /insights/attribution?model=&from=&to=`: credit per channel and
/// campaign over the orders of a period.
pub async fn attribution_report(State(state): State<AppState>, q: QueryParams) -> Result<Response, Problem> {
    let q = query(q, &["model", "from", "to"])?;
    let names = Model::ALL.map(Model::as_str).join(", ");
    let model = match q.get("model") {
        None => return Err(Problem::invalid("model", format!("is required: one of {names}"))),
        Some(m) => {
            Model::parse(m.trim()).ok_or_else(|| Problem::invalid("model", format!("must be one of {names}")))?
        }
    };
    let (from, to) = period(&q, state.clock.now())?;
    let r = attribution::attribution_report(state.read_models.as_ref(), model, from, to).await?;
    Ok(Json(json!({
        "model": r.model,
        "from": r.from,
        "to": r.to,
        "lookback_days": r.lookback_days,
        "orders": r.orders,
        "revenue_minor": r.revenue_minor,
        "channels": summed(&r.channels, "channel"),
        "campaigns": summed(&r.campaigns, "campaign"),
    }))
    .into_response())
}

/// `GET /campaigns/{id}/stats?window_days=`: entered, messages,
/// conversions within the window after a message, revenue.
pub async fn campaign_stats(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: QueryParams,
) -> Result<Response, Problem> {
    let q = query(q, &["window_days"])?;
    let window = match q.get("window_days") {
        None => DEFAULT_CONVERSION_WINDOW_DAYS,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if (1..=MAX_WINDOW_DAYS).contains(&n) => n,
            _ => {
                return Err(Problem::invalid(
                    "window_days",
                    format!("must be a whole number of days from 1 to {MAX_WINDOW_DAYS}"),
                ))
            }
        },
    };
    let Some(campaign) = state.campaigns.get(&id).await? else {
        return Err(Problem::not_found("campaign not found"));
    };
    // A holdout's arms show before anyone is held out (decision 0081).
    let holdout = campaign.campaign.holdout.is_some();
    let s = campaign_stats::campaign_stats_for(state.read_models.as_ref(), &id, window, holdout).await?;
    Ok(Json(s).into_response())
}
