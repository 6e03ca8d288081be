//! The operator's routes (decision 0085), which the console reads: the dead
//! letters (list, show, redrive), replay progress, the overview counters,
//! the customer search, and the public landing page and API description.
//! Each answers from one place shared with the CLIs: the dead letters
//! through the [`DeadLetterAdmin`] port (the local bus, the SQS queues) and
//! `crm_core::ops::dead_letters`; replay progress and the counters from
//! their read models (`crm_core::ops::progress`, `crm_core::ops::counters`);
//! the search through the keyed-hash indexes (decision 0046).

use crate::http::{page_limit, Problem};
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crm_core::customer::name_index::customers_with_name;
use crm_core::customer::views;
use crm_core::ops::{counters, dead_letters, progress};
use crm_core::ports::{DeadLetterAdmin, Redriven};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

fn query(q: QueryParams, allowed: &[&str]) -> Result<HashMap<String, String>, Problem> {
    let Query(q) = q.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Problem::invalid(unknown.clone(), "unknown query parameter"));
    }
    Ok(q)
}

fn unavailable(what: &str) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "Service unavailable",
        format!("this deployment has no {what}"),
    )
}

fn admin(state: &AppState) -> Result<&Arc<dyn DeadLetterAdmin>, Problem> {
    state
        .dead_letters
        .as_ref()
        .ok_or_else(|| unavailable("dead-letter queues configured (HEALTH_QUEUES)"))
}

/// A dead letter's id as the queues make them: a row number locally, an
/// SQS message id (a UUID) on AWS; anything else names no letter.
fn is_letter_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// `GET /dead-letters`: the parked letters, oldest first, paged by
/// `after` (the previous page's `next_after`) and `limit`; each with who
/// parked it, when and why, and the event's type and stream, never the
/// payload (decision 0040: it holds personal data).
pub async fn list_dead_letters(State(state): State<AppState>, q: QueryParams) -> Result<Response, Problem> {
    let q = query(q, &["after", "limit"])?;
    let limit = page_limit(&q)?;
    let after = q.get("after").map(String::as_str);
    let admin = admin(&state)?;
    if after.is_some_and(|a| !is_letter_id(a) || !admin.is_cursor(a)) {
        return Err(Problem::invalid("after", "must be a next_after of an earlier page"));
    }
    let page = admin.list(after, limit).await?;
    let items: Vec<_> = page.items.iter().map(dead_letters::summary).collect();
    Ok(Json(json!({ "items": items, "next_after": page.next, "depth": admin.depth().await? })).into_response())
}

/// `GET /dead-letters/{id}`: one letter, its reason, and its payload with
/// the personal fields decrypted for display while the customer's key
/// exists (`[erased]` after), as `crm-local dlq show` prints it.
pub async fn show_dead_letter(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let missing = || Problem::not_found(format!("no dead letter {id}"));
    if !is_letter_id(&id) {
        return Err(missing());
    }
    let parked = admin(&state)?.get(&id).await?.ok_or_else(missing)?;
    let Some(keys) = state.keys.as_ref() else {
        return Err(unavailable("key store"));
    };
    Ok(Json(dead_letters::shown(keys.as_ref(), &parked, false).await?).into_response())
}

/// `POST /dead-letters/{id}/redrive`: delivers the letter again to the
/// consumer that parked it (locally handled at once and removed; on AWS
/// moved back to the consumer's queue). 409 when it fails again (it stays).
pub async fn redrive_dead_letter(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, Problem> {
    let missing = || Problem::not_found(format!("no dead letter {id}"));
    if !is_letter_id(&id) {
        return Err(missing());
    }
    match admin(&state)?.redrive(&id).await? {
        Redriven::Done => Ok(Json(json!({ "id": id, "redriven": true })).into_response()),
        Redriven::NotFound => Err(missing()),
        Redriven::Failed(why) => Err(Problem::new(
            StatusCode::CONFLICT,
            "redrive-failed",
            "Redrive failed",
            format!("dead letter {id} was not redriven and stays parked: {why}"),
        )),
    }
}

/// `GET /operations/replays`: each replay or rebuild recorded (running or
/// the last one of its name) with the events it reached, and each
/// consumer's position against the store's head (its lag).
pub async fn replays(State(state): State<AppState>) -> Result<Response, Problem> {
    let replays = progress::recorded(state.read_models.as_ref()).await?;
    let consumers = match &state.health {
        Some(h) => h.consumers().await?,
        None => Vec::new(),
    };
    Ok(Json(json!({ "replays": replays, "consumers": consumers })).into_response())
}

/// `GET /operations/overview`: events per minute over the last hour,
/// messages per channel and outcome over the last 24 hours, consumer lag,
/// dead-letter depth and running journeys.
pub async fn overview(State(state): State<AppState>) -> Result<Response, Problem> {
    let now = state.clock.now();
    let counted = counters::counters(state.read_models.as_ref(), now).await?;
    let consumers = match &state.health {
        Some(h) => h.consumers().await?,
        None => Vec::new(),
    };
    let depth = match &state.dead_letters {
        Some(admin) => admin.depth().await?,
        None => consumers.iter().map(|c| c.dead_letters).sum(),
    };
    Ok(Json(json!({
        "at": now,
        "events_per_minute": counted.events_per_minute,
        "messages_24h": counted.messages_24h,
        "consumers": consumers,
        "dead_letters": depth,
        "running_journeys": counted.running_journeys,
    }))
    .into_response())
}

/// The most customers a name search answers.
const NAME_MATCHES: usize = 100;

/// `GET /customers/search?q=`: an email address (it holds `@`), a customer
/// id (a UUID) or one whole first or last name (any case): through the
/// email and name indexes' keyed hashes (decision 0046), never the text;
/// a part of a name finds nobody.
pub async fn search_customers(State(state): State<AppState>, q: QueryParams) -> Result<Response, Problem> {
    let q = query(q, &["q"])?;
    let text = q.get("q").map(|v| v.trim()).unwrap_or_default();
    if text.is_empty() || text.chars().count() > 320 {
        return Err(Problem::invalid(
            "q",
            "is required: an email address, a customer id or a first or last name (at most 320 characters)",
        ));
    }
    let Some(identifiers) = state.identifiers.as_ref() else {
        return Err(unavailable("identifier secret"));
    };
    let docs = state.read_models.as_ref();
    let (matched_by, ids) = if let Ok(id) = uuid::Uuid::parse_str(text) {
        ("id", vec![id.to_string()])
    } else if text.contains('@') {
        ("email", views::customers_with_email(docs, identifiers, text).await?)
    } else {
        (
            "name",
            customers_with_name(docs, identifiers, text, NAME_MATCHES).await?,
        )
    };
    let mut items = Vec::new();
    for id in ids {
        if let Some(p) = views::customer_profile(docs, &id).await? {
            items.push(crate::reads::profile_json(&p));
        }
    }
    Ok(Json(json!({ "matched_by": matched_by, "items": items })).into_response())
}

/// The API description, built in gzipped (`build.rs`).
const OPENAPI_GZ: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi.yaml.gz"));

/// `GET /openapi.yaml`: this API's description (public, as on any API),
/// gzipped if the request accepts it.
pub async fn openapi(request: axum::http::HeaderMap) -> Response {
    crate::gzipped::respond(OPENAPI_GZ, &request, "application/yaml; charset=utf-8")
}

/// The landing page: no script, no style, nothing from elsewhere.
const LANDING: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CRM</title>
</head>
<body>
<main>
<h1>CRM</h1>
<p>An event-sourced customer-engagement backend. Its API answers bearer tokens.</p>
<ul>
<li><a href="/console">Console</a>: customers, campaigns, segments and operations in the browser.</li>
<li><a href="/openapi.yaml">API description</a> (OpenAPI 3.1).</li>
<li><a href="/health">Health</a> (any valid token).</li>
</ul>
</main>
</body>
</html>
"#;

/// `GET /`: the landing page, linking the console, the API description and
/// health. A strict policy: nothing but the page itself.
pub async fn landing() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        LANDING,
    )
        .into_response()
}
