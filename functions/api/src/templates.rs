//! `POST /templates/{id}/preview`: a message template rendered with its
//! sample variables, or with the caller's changes to them.

use crate::http::{parse_json, Problem, RawBody};
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crm_core::messaging::render::{self, RenderError};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The optional body: `data` is applied to the template's sample variables
/// as a JSON Merge Patch (RFC 7396; `null` removes a variable).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    #[serde(default)]
    data: Option<Map<String, Value>>,
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

pub async fn preview(Path(id): Path<String>, RawBody(body): RawBody) -> Result<Response, Problem> {
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        PreviewRequest::default()
    } else {
        parse_json::<PreviewRequest>(&body)?
    };
    let patch = request.data.map(Value::Object);
    let (channel, rendered) = render::preview(&id, patch.as_ref())?;
    Ok(Json(json!({
        "template": id,
        "channel": channel,
        "subject": rendered.subject,
        "html": rendered.html,
        "text": rendered.text,
    }))
    .into_response())
}
