//! Campaign routes (list, publish, read, pause, resume, roll back) and the
//! journey reads: why a message was sent, and a customer's journeys.

use crate::http::{customer_id, parse_json, Principal, Problem, RawBody};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use crm_core::customer::views;
use crm_core::event::Actor;
use crm_core::failure::{Classify, FailureKind};
use crm_core::insights::campaign_stats::{campaign_summary, DEFAULT_CONVERSION_WINDOW_DAYS};
use crm_core::journey::catalog::{stream_id, CampaignError, StoredCampaign};
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
/// and its entrants, sends, conversions and revenue (the campaign-stats
/// read model's summary, default conversion window: the numbers of `GET
/// /campaigns/{id}/stats`, without its experiments). Not paged, like `GET
/// /segments`: campaigns are tens (decision 0070).
pub async fn list(State(state): State<AppState>) -> Result<Response, Problem> {
    let docs = state.read_models.as_ref();
    let mut items = Vec::new();
    for c in state.campaigns.list().await? {
        let running = running_count(docs, &c.id).await?;
        let stats = campaign_summary(docs, &c.id, DEFAULT_CONVERSION_WINDOW_DAYS).await?;
        items.push(json!({
            "id": c.id,
            "name": c.name,
            "status": if c.paused { "paused" } else { "active" },
            "version": c.version,
            "running_instances": running,
            "entered": stats.entered,
            "sends": stats.sent,
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

/// `GET /campaigns/{id}/versions`: every version the campaign published,
/// in version order: its number, the definition's name, when and by whom
/// (the event's actor) it was published, `current` or `superseded`, and
/// `same_as`, the first earlier version with the same definition (what a
/// rollback published again, decision 0070). A shipped campaign never
/// edited has one version, as shipped: no time, by `shipped`. Read from the
/// campaign's stream, like `GET /campaigns/{id}`; `crm/admin`, like it.
pub async fn versions(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let c = state
        .campaigns
        .get(&id)
        .await?
        .ok_or_else(|| Problem::not_found("campaign not found"))?;
    let events = state.events.read_stream(&stream_id(&id), 0, usize::MAX).await?;
    let mut published: Vec<(u64, Option<chrono::DateTime<chrono::Utc>>, String, &Value)> = events
        .iter()
        .filter(|e| e.event_type == "CampaignPublished")
        .map(|e| (e.version, Some(e.occurred_at), e.actor.clone(), &e.data["definition"]))
        .collect();
    if published.is_empty() {
        published.push((c.version, None, "shipped".to_string(), &c.definition));
    }
    let items: Vec<Value> = published
        .iter()
        .enumerate()
        .map(|(i, (version, at, by, definition))| {
            let same_as = published[..i].iter().find(|p| p.3 == *definition).map(|p| p.0);
            json!({
                "version": version,
                "name": definition.get("name"),
                "published_at": at,
                "published_by": by,
                "status": if *version == c.version { "current" } else { "superseded" },
                "same_as": same_as,
            })
        })
        .collect();
    Ok(Json(json!({
        "id": c.id,
        "version": c.version,
        "status": if c.paused { "paused" } else { "active" },
        "items": items,
    }))
    .into_response())
}

/// `PUT /campaigns/{id}`: the definition as JSON (`application/json`, or no
/// `Content-Type`) or as YAML (`application/yaml`, `text/yaml`), the same
/// value either way, then the same checks. A YAML syntax error is 422 naming
/// where the parser stopped (its path, else `body`) and the line. The
/// current definition put again publishes nothing: the answer is the
/// current version.
pub async fn put_campaign(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let definition: Value = match BodyType::of(&headers)? {
        BodyType::Json => parse_json(&body)?,
        BodyType::Yaml => parse_yaml(&body)?,
    };
    if let Some(current) = state.campaigns.get(&id).await? {
        if current.definition == definition {
            return Ok(Json(view(&current)).into_response());
        }
    }
    let c = state.campaigns.put(&id, definition, Actor::api(&principal.0)).await?;
    Ok(Json(view(&c)).into_response())
}

/// The media types `PUT /campaigns/{id}` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyType {
    Json,
    Yaml,
}

const YAML_TYPES: [&str; 4] = ["application/yaml", "text/yaml", "application/x-yaml", "text/x-yaml"];

/// The media type of `value` (`application/yaml; charset=utf-8` →
/// `application/yaml`), lower case.
fn media_type(value: &str) -> String {
    value.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

impl BodyType {
    /// JSON when `Content-Type` is absent, `application/json` or a `+json`
    /// type (as before YAML was taken); YAML for the YAML types; 415 naming
    /// `Content-Type` for anything else.
    fn of(headers: &HeaderMap) -> Result<BodyType, Problem> {
        let Some(raw) = headers.get(header::CONTENT_TYPE) else {
            return Ok(BodyType::Json);
        };
        let unsupported = |shown: &str| {
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!("the Content-Type \"{shown}\" is not supported; send application/json or application/yaml"),
            )
            .with_field("Content-Type")
        };
        let text = raw.to_str().map_err(|_| unsupported("(not text)"))?;
        let media = media_type(text);
        if media == "application/json" || (media.starts_with("application/") && media.ends_with("+json")) {
            Ok(BodyType::Json)
        } else if YAML_TYPES.contains(&media.as_str()) {
            Ok(BodyType::Yaml)
        } else {
            Err(unsupported(text))
        }
    }
}

/// Parses a YAML body into the value a JSON body would give: an empty body
/// is 400 (as for JSON); a syntax error is 422 naming `body` and the line,
/// YAML no JSON value can hold 422 naming its path when serde gives one,
/// in `field`, `detail` and `errors`.
fn parse_yaml(bytes: &[u8]) -> Result<Value, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::malformed("a YAML request body is required"));
    }
    let deserializer = serde_yaml::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize::<_, Value>(deserializer).map_err(|err| {
        // A syntax error is found before any value is read (the whole
        // document is parsed first): no path, `?` in serde_path_to_error's.
        let path = match err.path().to_string() {
            p if p.is_empty() || p == "." || p.contains('?') => "body".to_string(),
            p => p,
        };
        let inner = err.into_inner();
        let message = match inner.location() {
            Some(at) => format!(
                "the body is not valid YAML at line {} column {}: {}",
                at.line(),
                at.column(),
                strip_location(&inner.to_string())
            ),
            None => format!("the body is not valid YAML: {inner}"),
        };
        let mut p = Problem::invalid(path.clone(), message.clone());
        p.errors = Some(Box::new(json!([{ "path": path, "message": message }])));
        p
    })
}

/// serde_yaml's message without its trailing ` at line L column C` (said first instead).
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// Whether `Accept` asks for YAML before JSON: a YAML type with a higher
/// weight than any JSON type (`application/json`, `application/*`, `*/*`),
/// or the same weight and listed first. JSON otherwise, also for a type
/// neither is (the API answers JSON by default).
fn wants_yaml(headers: &HeaderMap) -> bool {
    let mut yaml: Option<(f32, usize)> = None;
    let mut json: Option<(f32, usize)> = None;
    let ranges = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .enumerate();
    for (order, range) in ranges {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let weight = parts
            .filter_map(|p| p.trim().strip_prefix("q=").map(str::to_string))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = if YAML_TYPES.contains(&media.as_str()) {
            &mut yaml
        } else if matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
            &mut json
        } else {
            continue;
        };
        if slot.is_none_or(|(w, _)| weight > w) {
            *slot = Some((weight, order));
        }
    }
    match (yaml, json) {
        (Some((y, _)), _) if y <= 0.0 => false,
        (Some(_), None) => true,
        (Some((y, yo)), Some((j, jo))) => y > j || (y == j && yo < jo),
        (None, _) => false,
    }
}

/// Keys an editor reads first, in this order; the others follow in name order.
const FIRST_KEYS: [&str; 10] = [
    "id",
    "name",
    "kind",
    "description",
    "type",
    "trigger",
    "entry",
    "exit_on",
    "holdout",
    "steps",
];

/// The definition as a YAML value, each mapping's keys in [`FIRST_KEYS`]
/// order, then by name (a JSON object's keys come sorted).
fn to_yaml(value: &Value) -> serde_yaml::Value {
    use serde_yaml::Value as Y;
    match value {
        Value::Null => Y::Null,
        Value::Bool(b) => Y::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Y::Number(u.into()),
            (_, Some(i), _) => Y::Number(i.into()),
            (_, _, Some(f)) => Y::Number(f.into()),
            _ => Y::String(n.to_string()),
        },
        Value::String(s) => Y::String(s.clone()),
        Value::Array(items) => Y::Sequence(items.iter().map(to_yaml).collect()),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            let rank = |k: &str| FIRST_KEYS.iter().position(|f| *f == k).unwrap_or(FIRST_KEYS.len());
            keys.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
            let mut out = serde_yaml::Mapping::with_capacity(keys.len());
            for k in keys {
                out.insert(Y::String(k.clone()), to_yaml(&map[k]));
            }
            Y::Mapping(out)
        }
    }
}

/// `GET /campaigns/{id}`: JSON (id, version, paused, definition) by default;
/// with `Accept: application/yaml` (or `text/yaml`) the definition alone as
/// YAML, what `PUT` takes back, with the version in `X-Campaign-Version` and
/// `active` or `paused` in `X-Campaign-Status`.
pub async fn get_campaign(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let c = state
        .campaigns
        .get(&id)
        .await?
        .ok_or_else(|| Problem::not_found("campaign not found"))?;
    let vary = (header::VARY, HeaderValue::from_static("Accept"));
    if !wants_yaml(&headers) {
        return Ok(([vary], Json(view(&c))).into_response());
    }
    let text = serde_yaml::to_string(&to_yaml(&c.definition))
        .map_err(|e| StoreError::Failed(format!("campaign {id} as YAML: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/yaml")),
            vary,
            (
                HeaderName::from_static("x-campaign-version"),
                HeaderValue::from(c.version),
            ),
            (
                HeaderName::from_static("x-campaign-status"),
                HeaderValue::from_static(if c.paused { "paused" } else { "active" }),
            ),
        ],
        text,
    )
        .into_response())
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
