//! Activity events, profile metrics and segments
//! (docs/decisions/0014-profile-metrics-and-segments.md).

use crate::http::{answer, customer_id, number, page_limit, parse_json, CommandCall, Principal, Problem, RawBody};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use crm_core::customer::activity::{record_activity, ActivityError, RecordActivity, Recorded};
use crm_core::customer::metrics::{profile_metrics, ProfileMetrics};
use crm_core::customer::CustomerError;
use crm_core::event::{Actor, CommandMeta};
use crm_core::failure::{Classify, FailureKind};
use crm_core::journey::definition::Step;
use crm_core::ports::StoreError;
use crm_core::segments::definition::{
    defined_segment, defined_segments, preview, DefinedSegment, DefinitionError, SegmentDefinitions,
};
use crm_core::segments::{self, Rfm};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};

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

/// `GET /segments`: every segment with its kind, rule and member count;
/// a segment defined by rules (decision 0082) with its name, description
/// and current version.
pub async fn list(State(state): State<AppState>) -> Result<Response, Problem> {
    let docs = state.read_models.as_ref();
    let defined = defined_segments(state.events.as_ref()).await?;
    let mut items = Vec::new();
    for (id, name, rule) in segments::all_segments(docs).await? {
        // A rule segment with members is in the members index too: listed below.
        if defined.iter().any(|d| d.segment.id == id) {
            continue;
        }
        let members = segments::member_count(docs, &id).await?;
        let kind = if segments::is_computed(&id) {
            "computed"
        } else {
            "manual"
        };
        items.push(json!({ "id": id, "name": name, "kind": kind, "rule": rule, "members": members }));
    }
    for d in &defined {
        let members = segments::member_count(docs, &d.segment.id).await?;
        items.push(json!({
            "id": d.segment.id,
            "name": d.segment.name,
            "kind": "rules",
            "rule": d.segment.description.clone().unwrap_or_else(|| RULES.to_string()),
            "version": d.version,
            "members": members,
        }));
    }
    Ok(Json(json!({ "items": items })).into_response())
}

/// The rule of a segment defined by rules without a description.
const RULES: &str = "defined by rules (GET /segments/{id} for the definition)";

/// The largest sample `POST /segments/{id}/preview` returns.
pub const MAX_PREVIEW_SAMPLE: u64 = 100;
/// The sample it returns by default.
pub const DEFAULT_PREVIEW_SAMPLE: u64 = 10;

impl From<DefinitionError> for Problem {
    fn from(e: DefinitionError) -> Self {
        match e {
            DefinitionError::Invalid(errors) => {
                let first = errors.first().map(|e| e.path.clone()).unwrap_or_default();
                let detail = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                let list: Vec<Value> = errors
                    .iter()
                    .map(|e| json!({ "path": e.path, "message": e.message }))
                    .collect();
                let mut p = Problem::invalid(first, detail);
                p.errors = Some(Box::new(Value::Array(list)));
                p
            }
            DefinitionError::Clash { path, message } => {
                let mut p = Problem::conflict(Some(path.clone()), format!("{path}: {message}"));
                p.errors = Some(Box::new(json!([{ "path": path, "message": message }])));
                p
            }
            DefinitionError::Cycle { path, cycle } => {
                let message = format!("in_segment closes a cycle: {}", cycle.join(" -> "));
                let mut p = Problem::conflict(Some(path.clone()), format!("{path}: {message}"));
                p.errors = Some(Box::new(json!([{ "path": path, "message": message, "cycle": cycle }])));
                p
            }
            e @ DefinitionError::ChangedConcurrently => Problem::conflict(None, e.to_string()),
            DefinitionError::Store(s) => s.into(),
            DefinitionError::Failed(f) => match f.kind() {
                FailureKind::Poison => Problem::from(StoreError::Failed(f.to_string())),
                FailureKind::Retryable | FailureKind::Conflict => Problem::from(StoreError::Unavailable(f.to_string())),
            },
        }
    }
}

/// The manual segments in use: those the members index has seen (not
/// computed, not defined by rules) and those the campaigns' `update_segment`
/// steps name. A rule segment may read them (`in_segment`) but not take
/// their id.
async fn manual_segments(state: &AppState) -> Result<BTreeSet<String>, Problem> {
    let defined: BTreeSet<String> = defined_segments(state.events.as_ref())
        .await?
        .into_iter()
        .map(|d| d.segment.id)
        .collect();
    let mut out: BTreeSet<String> = segments::all_segments(state.read_models.as_ref())
        .await?
        .into_iter()
        .map(|(id, _, _)| id)
        .filter(|id| !segments::is_computed(id) && !defined.contains(id))
        .collect();
    for summary in state.campaigns.list().await? {
        let Some(campaign) = state.campaigns.get(&summary.id).await? else {
            continue;
        };
        for step in &campaign.campaign.steps {
            if let Step::UpdateSegment(s) = step {
                out.insert(s.segment.clone());
            }
        }
    }
    Ok(out)
}

fn defined_view(d: &DefinedSegment, size: u64) -> Value {
    json!({
        "id": d.segment.id,
        "kind": "rules",
        "name": d.segment.name,
        "description": d.segment.description,
        "version": d.version,
        "defined_at": d.defined_at,
        "definition": d.segment,
        "size": size,
    })
}

/// `GET /segments/{id}`: a segment's kind and size (its members now, from
/// the members index); a segment defined by rules with its definition and
/// current version. A computed or manual segment has no definition.
pub async fn get_segment(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let docs = state.read_models.as_ref();
    if let Some(d) = defined_segment(state.events.as_ref(), &id).await? {
        let size = segments::member_count(docs, &id).await?;
        return Ok(Json(defined_view(&d, size)).into_response());
    }
    let known = segments::all_segments(docs)
        .await?
        .into_iter()
        .find(|(s, _, _)| *s == id);
    let (name, rule) = match (known, segments::rule_of(&id)) {
        (Some((_, name, rule)), _) => (name, rule),
        (None, Some(rule)) => (id.clone(), rule),
        (None, None) => return Err(Problem::not_found(format!("no segment {id}"))),
    };
    let kind = if segments::is_computed(&id) {
        "computed"
    } else {
        "manual"
    };
    let size = segments::member_count(docs, &id).await?;
    Ok(Json(json!({
        "id": id,
        "kind": kind,
        "name": name,
        "rule": rule,
        "definition": null,
        "size": size,
    }))
    .into_response())
}

/// `PUT /segments/{id}`: a definition by rules (JSON, decision 0080),
/// stored as a new version (201) unless it is the current one already (200,
/// `changed: false`, nothing written). 422 names every invalid field; 409
/// for an id taken by a computed or manual segment, or a cycle through
/// `in_segment`.
pub async fn put_segment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let document: Value = parse_json(&body)?;
    let manual = manual_segments(&state).await?;
    let definitions = SegmentDefinitions::new(state.events.clone(), state.clock.clone());
    let (d, changed) = definitions
        .put(&id, &document, &manual, Actor::api(&principal.0))
        .await?;
    let size = segments::member_count(state.read_models.as_ref(), &id).await?;
    let mut body = defined_view(&d, size);
    body["changed"] = json!(changed);
    let status = if changed { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(body)).into_response())
}

/// `POST /segments/{id}/preview?sample=<n>`: a draft definition (the body,
/// checked as `PUT` checks it, never stored) evaluated now over every
/// active customer: how many it matches and the first `n` of them by id
/// (default 10, at most 100).
pub async fn preview_segment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: QueryParams,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let q = query(q, &["sample"])?;
    let sample = match number(&q, "sample")? {
        None => DEFAULT_PREVIEW_SAMPLE,
        Some(n) if n <= MAX_PREVIEW_SAMPLE => n,
        Some(_) => {
            return Err(Problem::invalid(
                "sample",
                format!("must be between 0 and {MAX_PREVIEW_SAMPLE}"),
            ))
        }
    };
    let document: Value = parse_json(&body)?;
    let manual = manual_segments(&state).await?;
    let definitions = SegmentDefinitions::new(state.events.clone(), state.clock.clone());
    let segment = definitions.check(&id, &document, &manual).await?;
    let now = state.clock.now();
    let found = preview::preview(
        state.events.as_ref(),
        state.read_models.as_ref(),
        &segment,
        now,
        sample as usize,
    )
    .await?;
    Ok(Json(json!({
        "segment": id,
        "at": now,
        "count": found.count,
        "evaluated": found.evaluated,
        "sample": found.sample,
    }))
    .into_response())
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
            .any(|(s, _, _)| *s == id)
        || defined_segment(state.events.as_ref(), &id).await?.is_some();
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
