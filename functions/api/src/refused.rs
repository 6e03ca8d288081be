//! `GET /sources/{source}/refused` (decision 0053): the messages a source
//! sent that ingestion refused in the last week, newest first, each with
//! the field and the reason and the message without its personal values.
//! Paged by `after` (the previous page's `next_after`) and `limit`. A name
//! no configured source has is answered 404 (`field`: `source`); a source
//! with nothing refused, an empty page.

use crate::http::Problem;
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crm_core::ingest::refusals::{is_cursor, MAX_PAGE};
use serde_json::json;
use std::collections::HashMap;

/// A page when `limit` is not given.
const DEFAULT_PAGE: usize = 50;
/// The longest source name asked for.
const MAX_SOURCE_CHARS: usize = 200;

pub async fn list(
    State(state): State<AppState>,
    Path(source): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query.map_err(|e| Problem::malformed(format!("the query string is not valid: {e}")))?;
    if let Some(unknown) = query.keys().find(|k| !matches!(k.as_str(), "after" | "limit")) {
        return Err(Problem::invalid(unknown.clone(), "unknown query parameter"));
    }
    if source.is_empty() || source.chars().count() > MAX_SOURCE_CHARS || source.chars().any(char::is_control) {
        return Err(Problem::invalid(
            "source",
            format!("must be a source name of 1 to {MAX_SOURCE_CHARS} characters"),
        ));
    }
    if state.ingest_sources.named(&source).is_none() {
        return Err(Problem::not_found(format!(
            "no source is named \"{source}\": the sources are those of the ingestion write keys"
        ))
        .with_field("source"));
    }
    let limit = match query.get("limit") {
        None => DEFAULT_PAGE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => return Err(Problem::invalid("limit", format!("must be between 1 and {MAX_PAGE}"))),
        },
    };
    let after = query.get("after").map(String::as_str);
    if after.is_some_and(|a| !is_cursor(a)) {
        return Err(Problem::invalid("after", "must be a next_after of an earlier page"));
    }
    let Some(refusals) = &state.refusals else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "this deployment keeps no refused-messages log",
        ));
    };
    let page = refusals.log().list(&source, after, limit, state.clock.now()).await?;
    Ok(axum::Json(json!({ "source": source, "items": page.refusals, "next_after": page.next_after })).into_response())
}
