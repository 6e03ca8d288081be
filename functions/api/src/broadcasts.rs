//! Broadcast routes (decision 0084): schedule one, read its state, progress
//! and stats, pause, resume and cancel it. The campaign function runs the
//! send; these routes only record the broadcast's commands.

use crate::http::{page_limit, Principal, Problem, RawBody};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, NaiveDate, Utc};
use crm_core::broadcast::{
    Audience, BroadcastDefinition, BroadcastError, BroadcastRejected, BroadcastService, SendTime, SubjectTest,
    SubjectVariant, WinnerMetric,
};
use crm_core::consent::Channel;
use crm_core::event::Actor;
use crm_core::ports::StoreError;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

/// Messages per second when the request names no rate.
const DEFAULT_RATE_PER_SECOND: u32 = 50;

const FIELDS: &[&str] = &[
    "id",
    "template",
    "channel",
    "audience",
    "send",
    "rate_per_second",
    "subject_test",
];

fn service(state: &AppState) -> BroadcastService {
    BroadcastService::new(state.events.clone(), state.read_models.clone(), state.clock.clone())
        .with_scheduler(state.scheduler.clone())
}

/// A 422 naming `field`, with `errors[0].path` the same.
fn invalid(field: &str, message: impl Into<String>) -> Problem {
    let message = message.into();
    let mut p = Problem::invalid(field, message.clone());
    p.errors = Some(Box::new(json!([{ "path": field, "message": message }])));
    p
}

impl From<BroadcastError> for Problem {
    fn from(e: BroadcastError) -> Self {
        match e {
            BroadcastError::Invalid { field, message } => invalid(&field, message),
            BroadcastError::Rejected(BroadcastRejected::NotFound) => Problem::not_found("broadcast not found"),
            e @ BroadcastError::Rejected(BroadcastRejected::AlreadyExists(_)) => {
                Problem::conflict(Some("id".into()), e.to_string())
            }
            BroadcastError::Rejected(e @ BroadcastRejected::NotNow(_)) => Problem::conflict(None, e.to_string()),
            BroadcastError::Store(s) => s.into(),
            e @ (BroadcastError::Contended(_) | BroadcastError::Scheduler(_) | BroadcastError::Read { .. }) => {
                Problem::from(StoreError::Unavailable(e.to_string()))
            }
            e @ BroadcastError::Codec(_) => Problem::from(StoreError::Failed(e.to_string())),
        }
    }
}

fn text<'a>(body: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, Problem> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn segment_list(value: Option<&Value>, field: &str) -> Result<Vec<String>, Problem> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let Some(items) = value.as_array() else {
        return Err(invalid(field, "must be an array of segment ids"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| invalid(&format!("{field}[{i}]"), "must be a segment id"))
        })
        .collect()
}

fn send_time(value: Option<&Value>) -> Result<SendTime, Problem> {
    let Some(Value::Object(send)) = value else {
        return Err(invalid(
            "send",
            "required: {\"type\": \"now\"}, {\"type\": \"at\", \"at\": <UTC time>} or {\"type\": \"local\", \"date\": \"YYYY-MM-DD\", \"time\": \"HH:MM\"}",
        ));
    };
    let allowed: &[&str] = match send.get("type").and_then(Value::as_str) {
        Some("now") => &["type"],
        Some("at") => &["type", "at"],
        Some("local") => &["type", "date", "time"],
        _ => return Err(invalid("send.type", "one of now, at, local")),
    };
    if let Some(k) = send.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid(&format!("send.{k}"), "unknown field"));
    }
    let field = |k: &str| send.get(k).and_then(Value::as_str);
    match send.get("type").and_then(Value::as_str) {
        Some("at") => {
            let at = field("at")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .ok_or_else(|| invalid("send.at", "an RFC 3339 time, e.g. 2026-12-24T09:00:00Z"))?;
            Ok(SendTime::At {
                at: at.with_timezone(&Utc),
            })
        }
        Some("local") => {
            let date = field("date")
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .ok_or_else(|| invalid("send.date", "a date YYYY-MM-DD"))?;
            let time = field("time")
                .filter(|t| SendTime::local_time(t).is_some())
                .ok_or_else(|| invalid("send.time", "a local time HH:MM"))?;
            Ok(SendTime::Local {
                date,
                time: time.to_string(),
            })
        }
        _ => Ok(SendTime::Now),
    }
}

/// A whole number of `field` in `body`, or the error naming it.
fn whole(body: &Map<String, Value>, field: &str, path: &str) -> Result<u32, Problem> {
    body.get(field)
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| invalid(path, "required: a whole number"))
}

/// A subject-line test (decision 0087), or the first field that is wrong.
fn subject_test(value: Option<&Value>) -> Result<Option<SubjectTest>, Problem> {
    let test = match value {
        None => return Ok(None),
        Some(Value::Object(test)) => test,
        Some(_) => {
            return Err(invalid(
                "subject_test",
                "an object: {\"variants\": [{\"id\", \"subject\"}, ...], \"test_percent\", \"decide_after_minutes\", \"metric\"}",
            ))
        }
    };
    const TEST_FIELDS: &[&str] = &["variants", "test_percent", "decide_after_minutes", "metric"];
    if let Some(k) = test.keys().find(|k| !TEST_FIELDS.contains(&k.as_str())) {
        return Err(invalid(&format!("subject_test.{k}"), "unknown field"));
    }
    let Some(Value::Array(items)) = test.get("variants") else {
        return Err(invalid("subject_test.variants", "required: an array of {id, subject}"));
    };
    let mut variants = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("subject_test.variants[{i}]");
        let Value::Object(v) = item else {
            return Err(invalid(&path, "an object {id, subject}"));
        };
        if let Some(k) = v.keys().find(|k| !["id", "subject"].contains(&k.as_str())) {
            return Err(invalid(&format!("{path}.{k}"), "unknown field"));
        }
        let part = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| invalid(&format!("{path}.{k}"), "required: a string"))
        };
        variants.push(SubjectVariant {
            id: part("id")?,
            subject: part("subject")?,
        });
    }
    let metric = match test.get("metric").and_then(Value::as_str) {
        Some("opened") => WinnerMetric::Opened,
        Some("clicked") => WinnerMetric::Clicked,
        _ => return Err(invalid("subject_test.metric", "one of opened, clicked")),
    };
    Ok(Some(SubjectTest {
        variants,
        test_percent: whole(test, "test_percent", "subject_test.test_percent")?,
        decide_after_minutes: whole(test, "decide_after_minutes", "subject_test.decide_after_minutes")?,
        metric,
    }))
}

/// The broadcast a request body asks for, or the first field that is wrong.
fn definition(body: &Map<String, Value>) -> Result<BroadcastDefinition, Problem> {
    if let Some(k) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(k, "unknown field"));
    }
    let template = text(body, "template")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("template", "required: the template to send"))?;
    let channel = text(body, "channel")?.ok_or_else(|| invalid("channel", "required: email, sms or push"))?;
    let channel: Channel =
        serde_json::from_value(json!(channel)).map_err(|_| invalid("channel", "one of email, sms, push"))?;
    let Some(Value::Object(audience)) = body.get("audience") else {
        return Err(invalid(
            "audience",
            "required: {\"segments\": [...], \"exclude\": [...]}",
        ));
    };
    if let Some(k) = audience.keys().find(|k| !["segments", "exclude"].contains(&k.as_str())) {
        return Err(invalid(&format!("audience.{k}"), "unknown field"));
    }
    let segments = segment_list(audience.get("segments"), "audience.segments")?;
    let exclude = segment_list(audience.get("exclude"), "audience.exclude")?;
    let rate_per_second = match body.get("rate_per_second") {
        None => DEFAULT_RATE_PER_SECOND,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid("rate_per_second", "a whole number of messages per second"))?,
    };
    Ok(BroadcastDefinition {
        template: template.to_string(),
        channel,
        audience: Audience { segments, exclude },
        send: send_time(body.get("send"))?,
        rate_per_second,
        subject_test: subject_test(body.get("subject_test"))?,
    })
}

async fn answer(service: &BroadcastService, id: &str, status: StatusCode) -> Result<Response, Problem> {
    let view = service
        .view(id)
        .await?
        .ok_or_else(|| Problem::not_found("broadcast not found"))?;
    let mut response = (status, Json(view)).into_response();
    if status == StatusCode::CREATED {
        if let Ok(location) = header::HeaderValue::from_str(&format!("/broadcasts/{id}")) {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    Ok(response)
}

/// `POST /broadcasts`: schedules a broadcast (201). With an `id`, the same
/// request again answers 200 with the broadcast as it stands; another
/// definition under that id is 409.
pub async fn schedule(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let value: Value = crate::http::parse_json(&body)?;
    let Value::Object(body) = value else {
        return Err(Problem::malformed("the body must be a JSON object"));
    };
    let definition = definition(&body)?;
    let id = match text(&body, "id")? {
        Some(id) => id.to_string(),
        None => uuid::Uuid::now_v7().simple().to_string(),
    };
    let service = service(&state);
    let existed = service.load(&id).await?.is_some();
    service.schedule(&id, definition, Actor::api(&principal.0)).await?;
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    answer(&service, &id, status).await
}

/// `GET /broadcasts?after=&limit=`: the broadcasts, newest first (by when
/// they were scheduled), each with its status and progress from its stream;
/// `next_after` continues the list. The campaign stats and outcomes are in
/// `GET /broadcasts/{id}`.
pub async fn list(State(state): State<AppState>, q: QueryParams) -> Result<Response, Problem> {
    let Query(q) = q.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = q.keys().find(|k| !["after", "limit"].contains(&k.as_str())) {
        return Err(invalid(unknown, "unknown query parameter"));
    }
    let after = q.get("after").map(String::as_str);
    if after.is_some_and(|a| !crm_core::broadcast::stats::is_list_cursor(a)) {
        return Err(invalid("after", "must be a next_after of this list"));
    }
    let limit = page_limit(&q)?;
    let mut page = crm_core::broadcast::stats::list(state.read_models.as_ref(), after, limit + 1).await?;
    let more = page.len() > limit;
    page.truncate(limit);
    let next_after = if more {
        page.last().map(|l| l.cursor.clone())
    } else {
        None
    };
    let service = service(&state);
    let mut items = Vec::new();
    for listed in page {
        let Some(s) = service.load(&listed.broadcast_id).await? else {
            continue;
        };
        items.push(json!({
            "id": s.id,
            "campaign_id": crm_core::broadcast::stream_id(&s.id),
            "status": s.status(),
            "template": s.definition.template,
            "channel": s.definition.channel,
            "send": s.definition.send,
            "scheduled_at": s.scheduled_at,
            "starts_at": s.definition.send.start_at(s.scheduled_at),
            "started_at": s.started_at,
            "finished_at": s.finished_at,
            "audience_size": s.size,
            "requested": s.requested,
        }));
    }
    Ok(Json(json!({ "items": items, "next_after": next_after })).into_response())
}

/// `GET /broadcasts/{id}`: its state, progress and stats.
pub async fn get_broadcast(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    answer(&service(&state), &id, StatusCode::OK).await
}

pub async fn pause(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let service = service(&state);
    service.pause(&id, Actor::api(&principal.0)).await?;
    answer(&service, &id, StatusCode::OK).await
}

pub async fn resume(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let service = service(&state);
    service.resume(&id, Actor::api(&principal.0)).await?;
    answer(&service, &id, StatusCode::OK).await
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let service = service(&state);
    service.cancel(&id, Actor::api(&principal.0)).await?;
    answer(&service, &id, StatusCode::OK).await
}
