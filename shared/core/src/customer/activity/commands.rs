//! An activity event as a client reports it, read from a request body.

use super::{max_lateness, max_skew, ActivityEvent, ACTIVITY_EVENT_TYPES};
use crate::customer::CustomerError;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// An activity event as a client reports it: the event and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordActivity {
    pub event: ActivityEvent,
    /// When it happened (default: now).
    pub occurred_at: Option<DateTime<Utc>>,
}

/// Reads one payload, naming the offending field (`utm.source`, `product_ids[1]`).
fn typed<T: serde::de::DeserializeOwned>(body: Value) -> Result<T, CustomerError> {
    serde_path_to_error::deserialize(body).map_err(|err| {
        let path = err.path().to_string();
        let message = err.into_inner().to_string();
        let named = ["missing field `", "unknown field `"]
            .iter()
            .find_map(|p| message.strip_prefix(p).and_then(|r| r.split('`').next()));
        let field = match named {
            Some(f) if path == "." => f.to_string(),
            Some(f) if !path.ends_with(f) => format!("{path}.{f}"),
            _ => path,
        };
        let message = message.split(" at line ").next().unwrap_or(&message).to_string();
        CustomerError::invalid(field, message)
    })
}

impl RecordActivity {
    /// Reads a request body: `{"type", ...the type's fields, "session_id"?,
    /// "utm"?, "occurred_at"?}`. Names the offending field on refusal.
    pub fn from_json(body: Value) -> Result<Self, CustomerError> {
        let Value::Object(mut map) = body else {
            return Err(CustomerError::invalid("body", "must be a JSON object"));
        };
        let event_type = match map.remove("type") {
            Some(Value::String(t)) if ACTIVITY_EVENT_TYPES.contains(&t.as_str()) => t,
            Some(Value::String(t)) => {
                return Err(CustomerError::invalid(
                    "type",
                    format!(
                        "unknown activity type \"{t}\"; one of {}",
                        ACTIVITY_EVENT_TYPES.join(", ")
                    ),
                ))
            }
            Some(_) => return Err(CustomerError::invalid("type", "must be a string")),
            None => return Err(CustomerError::invalid("type", "is required")),
        };
        let occurred_at = match map.remove("occurred_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                DateTime::parse_from_rfc3339(&s)
                    .map_err(|_| CustomerError::invalid("occurred_at", "must be an RFC 3339 date-time"))?
                    .with_timezone(&Utc),
            ),
            Some(_) => return Err(CustomerError::invalid("occurred_at", "must be an RFC 3339 date-time")),
        };
        if map.contains_key("late") {
            return Err(CustomerError::invalid("late", "is set by the server, not by clients"));
        }
        let body = Value::Object(map);
        let event = match event_type.as_str() {
            "ProductViewed" => ActivityEvent::ProductViewed(typed(body)?),
            "PageViewed" => ActivityEvent::PageViewed(typed(body)?),
            "SearchPerformed" => ActivityEvent::SearchPerformed(typed(body)?),
            "ProductCompared" => ActivityEvent::ProductCompared(typed(body)?),
            "ReviewRead" => ActivityEvent::ReviewRead(typed(body)?),
            "VideoWatched" => ActivityEvent::VideoWatched(typed(body)?),
            "CheckoutStepCompleted" => ActivityEvent::CheckoutStepCompleted(typed(body)?),
            "SessionStarted" => ActivityEvent::SessionStarted(typed(body)?),
            "ProductListViewed" => ActivityEvent::ProductListViewed(typed(body)?),
            "ProductClicked" => ActivityEvent::ProductClicked(typed(body)?),
            "ShoppingCartViewed" => ActivityEvent::ShoppingCartViewed(typed(body)?),
            "CheckoutStepViewed" => ActivityEvent::CheckoutStepViewed(typed(body)?),
            "CouponChanged" => ActivityEvent::CouponChanged(typed(body)?),
            "ProductWishlisted" => ActivityEvent::ProductWishlisted(typed(body)?),
            "ProductReviewed" => ActivityEvent::ProductReviewed(typed(body)?),
            "CustomEvent" => ActivityEvent::CustomEvent(typed(body)?),
            _ => ActivityEvent::CustomerLoggedIn(typed(body)?),
        };
        event.validate()?;
        Ok(RecordActivity { event, occurred_at })
    }

    /// When the event happened, checked against `now`: not in the future
    /// (beyond [`max_skew`]), not older than [`max_lateness`].
    pub fn occurred_at(&self, now: DateTime<Utc>) -> Result<DateTime<Utc>, CustomerError> {
        let Some(at) = self.occurred_at else { return Ok(now) };
        if at > now + max_skew() {
            return Err(CustomerError::invalid("occurred_at", "must not be in the future"));
        }
        if at < now - max_lateness() {
            return Err(CustomerError::invalid(
                "occurred_at",
                format!("is older than {} days: too late to record", max_lateness().num_days()),
            ));
        }
        Ok(at)
    }
}
