//! Custom event schemas (decision 0022): `PUT /schemas/custom/{name}`
//! registers a JSON Schema for a custom event's `properties` (the body is
//! the schema), `GET` answers the latest version.

use crate::http::{parse_json, Principal, Problem, RawBody};
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use crm_core::event::Actor;
use crm_core::schemas::{CustomSchema, CustomSchemaError};
use serde_json::{json, Value};

fn view(s: &CustomSchema) -> Value {
    json!({
        "name": s.name,
        "version": s.version,
        "schema": s.schema,
        "registered_at": s.registered_at,
    })
}

impl From<CustomSchemaError> for Problem {
    fn from(e: CustomSchemaError) -> Self {
        match e {
            // The body is the schema: `schema.properties.x` is the body's `properties.x`.
            CustomSchemaError::Invalid { field, message } => {
                let field = match field.strip_prefix("schema") {
                    Some("") => "body".to_string(),
                    Some(rest) => rest.trim_start_matches('.').to_string(),
                    None => field,
                };
                Problem::invalid(field.clone(), format!("{field}: {message}"))
            }
            CustomSchemaError::Conflict(m) => Problem::conflict(None, m),
            CustomSchemaError::Store(s) => s.into(),
        }
    }
}

pub async fn put_custom(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let schema: Value = parse_json(&body)?;
    let s = state
        .custom_schemas
        .register(&name, schema, Actor::api(&principal.0))
        .await?;
    Ok(Json(view(&s)).into_response())
}

pub async fn get_custom(State(state): State<AppState>, Path(name): Path<String>) -> Result<Response, Problem> {
    let s = state
        .custom_schemas
        .get(&name)
        .await?
        .ok_or_else(|| Problem::not_found("no schema is registered for this custom event"))?;
    Ok(Json(view(&s)).into_response())
}
