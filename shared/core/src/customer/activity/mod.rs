//! Activity events (docs/decisions/0012-commerce-events.md): what a customer
//! does on the site or in the app, appended to `activity-<customer id>` with
//! bus source `crm.customer`. Typed and validated strictly: an unknown type
//! or field is refused, naming it.
//!
//! The folder has the shape of every business area: [`events`] (the event
//! types as stored), [`commands`] (an event as a client reports it, read from
//! JSON), [`validate`] (the checks beyond JSON types), [`service`] (recording
//! one, with its idempotency receipt).

mod commands;
mod events;
mod service;
#[cfg(test)]
mod tests;
mod validate;

use chrono::Duration;

pub use commands::RecordActivity;
pub use events::*;
pub use service::{activity_view, record_activity, ActivityError, Recorded};
pub use validate::MAX_LISTED_PRODUCTS;

/// The stream of customer `id`'s activity.
pub fn activity_stream_id(customer_id: &str) -> String {
    format!("activity-{customer_id}")
}

/// How late an activity event may arrive (its `occurred_at` at most this far back).
pub fn max_lateness() -> Duration {
    Duration::days(7)
}

/// How far ahead of our clock a client's `occurred_at` may be (clock skew).
pub fn max_skew() -> Duration {
    Duration::minutes(5)
}
