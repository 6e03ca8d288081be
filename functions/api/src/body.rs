//! Request bodies: at most 64 KB, JSON parsed with the path of any bad field.

use crate::problem::Problem;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

/// The raw body, read up to [`crate::MAX_BODY_BYTES`] (413 beyond).
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Problem;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > crate::MAX_BODY_BYTES) {
            return Err(Problem::too_large());
        }
        axum::body::to_bytes(req.into_body(), crate::MAX_BODY_BYTES)
            .await
            .map(RawBody)
            .map_err(|_| Problem::too_large())
    }
}

/// Parses JSON: a syntax error is 400, a well-formed body with a wrong or
/// missing field is 422 naming that field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Problem::malformed("a JSON request body is required"));
    }
    // Syntax first (400), then shape (422), so a broken body is never
    // reported as a missing field.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Problem::malformed(format!("the body is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        Problem::invalid(field_of(&path, &message), strip_position(&message))
    })
}

/// serde reports a missing or unknown field at its parent's path: name the field itself.
fn field_of(path: &str, message: &str) -> String {
    let quoted = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('`').next())
            .map(str::to_string)
    };
    let named = quoted("missing field `").or_else(|| quoted("unknown field `"));
    match (path, named) {
        (p, Some(f)) if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
        (".", Some(f)) => f,
        (p, Some(f)) => format!("{p}.{f}"),
        (".", None) => "body".to_string(),
        (p, None) => p.to_string(),
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        country: String,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        address: Inner,
    }

    #[test]
    fn names_the_field() {
        let p = parse_json::<Outer>(br#"{"name": 5, "address": {"country": "DE"}}"#).unwrap_err();
        assert_eq!((p.status, p.field.as_deref()), (422, Some("name")));
        let p = parse_json::<Outer>(br#"{"name": "x", "address": {}}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("address.country"));
        let p = parse_json::<Outer>(br#"{"name": "x", "address": {"country": "DE"}, "extra": 1}"#).unwrap_err();
        assert_eq!(p.field.as_deref(), Some("extra"));
        let p = parse_json::<Outer>(br#"{"name": "x""#).unwrap_err();
        assert_eq!(p.status, 400);
        let p = parse_json::<Outer>(br#"{"name": "x", "address": {"country": "DE"}} trailing"#).unwrap_err();
        assert_eq!(p.status, 400);
    }
}
