//! Message templates as data (decision 0077): `GET /templates` (the list),
//! `GET /templates/{id}` (a version, the current one by default),
//! `PUT /templates/{id}` (a new version, checked by rendering its sample)
//! and `POST /templates/{id}/preview` (a version rendered with its sample
//! variables, or with the caller's changes to them).

use crate::http::{parse_json, Principal, Problem, RawBody};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use crm_core::consent::Channel;
use crm_core::event::Actor;
use crm_core::failure::{Classify, FailureKind};
use crm_core::messaging::render::{RenderError, TemplateParts};
use crm_core::messaging::templates::{self, StoredTemplate, TemplateError};
use crm_core::ports::StoreError;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// The optional body: `data` is applied to the template's sample variables
/// as a JSON Merge Patch (RFC 7396; `null` removes a variable).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    #[serde(default)]
    data: Option<Map<String, Value>>,
}

/// The body of `PUT /templates/{id}`: the parts for the channel, and the
/// sample variables (by default the current version's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutRequest {
    channel: Channel,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    mjml: Option<String>,
    text: String,
    #[serde(default)]
    sample: Option<Value>,
}

impl From<RenderError> for Problem {
    fn from(e: RenderError) -> Self {
        match e {
            RenderError::UnknownTemplate(_) => Problem::not_found("template not found"),
            RenderError::MissingVariable { variable, .. } => Problem::invalid(
                format!("data.{variable}"),
                format!("the template needs the variable {variable}"),
            ),
            RenderError::InvalidVariables { .. } => Problem::invalid("data", "the variables must be a JSON object"),
            RenderError::Invalid { part, message, .. } => {
                Problem::invalid("data", format!("the template did not render ({part}): {message}"))
            }
        }
    }
}

impl From<TemplateError> for Problem {
    fn from(e: TemplateError) -> Self {
        match e {
            TemplateError::Invalid { field, line, message } => {
                let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
                let mut p = Problem::invalid(field.clone(), format!("{field}{at}: {message}"));
                p.errors = Some(Box::new(json!([{ "path": field, "line": line, "message": message }])));
                p
            }
            TemplateError::NotFound => Problem::not_found("template not found"),
            e @ TemplateError::UnknownVersion(_) => Problem::not_found(e.to_string()).with_field("version"),
            e @ TemplateError::ChangedConcurrently => Problem::conflict(None, e.to_string()),
            TemplateError::Store(s) => s.into(),
            TemplateError::Failed(f) => match f.kind() {
                FailureKind::Poison => Problem::from(StoreError::Failed(f.to_string())),
                FailureKind::Retryable | FailureKind::Conflict => Problem::from(StoreError::Unavailable(f.to_string())),
            },
        }
    }
}

fn view(t: &StoredTemplate) -> Value {
    json!({
        "id": t.id,
        "version": t.version,
        "current_version": t.current_version,
        "versions": t.versions,
        "channel": t.parts.channel,
        "subject": t.parts.subject,
        "mjml": t.parts.mjml,
        "text": t.parts.text,
        "sample": t.sample,
        "source": t.origin,
        "published_at": t.published_at,
    })
}

/// `?version=<n>` (the only query parameter), if given.
fn version_query(q: Result<Query<HashMap<String, String>>, QueryRejection>) -> Result<Option<u64>, Problem> {
    let Query(q) = q.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = q.keys().find(|k| k.as_str() != "version") {
        return Err(Problem::invalid(unknown.clone(), "unknown query parameter"));
    }
    match q.get("version").map(|v| v.trim().parse::<u64>()) {
        None => Ok(None),
        Some(Ok(v)) if v >= 1 => Ok(Some(v)),
        Some(_) => Err(Problem::invalid(
            "version",
            "`version` must be a version number (1 or more)",
        )),
    }
}

/// `GET /templates`: every template, shipped and stored, in id order, at its
/// current version. Not paged: templates are tens.
pub async fn list(State(state): State<AppState>) -> Result<Response, Problem> {
    let items = state.templates.list().await?;
    Ok(Json(json!({ "items": items })).into_response())
}

/// `GET /templates/{id}?version=<n>`: a version (the current one by default).
pub async fn get_template(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let version = version_query(q)?;
    let t = state.templates.get(&id, version).await?;
    Ok(Json(view(&t)).into_response())
}

/// `PUT /templates/{id}`: a new version, stored if it renders its sample.
/// 201 for a new template, 200 otherwise (`changed: false` when it was the
/// current version already: nothing is written).
pub async fn put_template(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let request: PutRequest = parse_json(&body)?;
    let existing = match state.templates.get(&id, None).await {
        Ok(t) => Some(t),
        Err(TemplateError::NotFound) => None,
        Err(e) => return Err(e.into()),
    };
    let sample = match (request.sample, &existing) {
        (Some(sample), _) => sample,
        (None, Some(t)) => t.sample.clone(),
        (None, None) => {
            return Err(Problem::invalid(
                "sample",
                "a new template needs its sample variables: it is checked by rendering them",
            ))
        }
    };
    let parts = TemplateParts {
        channel: request.channel,
        subject: request.subject,
        mjml: request.mjml,
        text: request.text,
    };
    let (t, changed) = state
        .templates
        .put(&id, parts, sample, Actor::api(&principal.0))
        .await?;
    let mut body = view(&t);
    body["changed"] = json!(changed);
    let status = if existing.is_none() {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(body)).into_response())
}

/// `POST /templates/{id}/preview?version=<n>`: the version (the current one
/// by default) rendered with its sample, `data` merged over it.
pub async fn preview(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let version = version_query(q)?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        PreviewRequest::default()
    } else {
        parse_json::<PreviewRequest>(&body)?
    };
    let template = state.templates.get(&id, version).await?;
    let patch = request.data.map(Value::Object);
    let rendered = templates::preview(&template, patch.as_ref())?;
    Ok(Json(json!({
        "template": id,
        "version": template.version,
        "channel": template.parts.channel,
        "subject": rendered.subject,
        "html": rendered.html,
        "text": rendered.text,
    }))
    .into_response())
}
