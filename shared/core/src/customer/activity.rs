//! Activity events (docs/decisions/0012-commerce-events.md): what a customer
//! does on the site or in the app, appended to `activity-<customer id>` with
//! bus source `crm.customer`. Typed and validated strictly: an unknown type
//! or field is refused, naming it.

use super::CustomerError;
use crate::event::{envelopes, CommandMeta, DomainEvent, EventCodecError, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::ports::{AppendError, AppendRequest, CommandReceipt, EventStore, ExpectedVersion, StoreError};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// Campaign parameters of the visit; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Utm {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Declares one activity payload: its own fields plus the `session_id` and
/// `utm` every activity event may carry.
macro_rules! activity {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub session_id: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub utm: Option<Utm>,
            /// Set by ingestion when the event arrived later than the
            /// tolerance allows: stored, but flagged (seed 001).
            #[serde(default, skip_serializing_if = "std::ops::Not::not")]
            pub late: bool,
        }
    };
}

activity!(ProductViewed {
    product_id: String,
    name: String,
    category: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    price_minor: Option<i64>,
});
activity!(PageViewed {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    referrer: Option<String>,
});
activity!(SearchPerformed {
    query: String,
    results_count: u64,
});
activity!(ProductCompared { product_ids: Vec<String> });
activity!(ReviewRead { product_id: String });
activity!(VideoWatched {
    video_id: String,
    seconds_watched: u64,
});
activity!(CheckoutStepCompleted {
    cart_id: String,
    step: String,
});
activity!(SessionStarted {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<String>,
});
activity!(
    /// A login; `session_id` (optional) is the session it opened.
    CustomerLoggedIn {}
);

activity!(
    /// A product list or category was shown (Segment `Product List Viewed`).
    ProductListViewed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        list_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        /// The products shown, in order (at most 100).
        #[serde(default)]
        product_ids: Vec<String>,
    }
);
activity!(
    /// A product was clicked in a list (Segment `Product Clicked`).
    ProductClicked {
        product_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
    }
);
activity!(
    /// The shopper looked at their cart (Segment `Cart Viewed`); `cart_id`
    /// is the CRM's id of the cart.
    ShoppingCartViewed {
        cart_id: String,
        #[serde(default)]
        product_ids: Vec<String>,
    }
);
activity!(
    /// A checkout step was shown (Segment `Checkout Step Viewed`).
    CheckoutStepViewed { cart_id: String, step: String }
);
activity!(
    /// A coupon was entered, applied, denied or removed (Segment's four
    /// `Coupon ...` events), on a cart or an order (the CRM's ids).
    CouponChanged {
        change: CouponChange,
        coupon: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        coupon_name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cart_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        discount_minor: Option<i64>,
    }
);
activity!(
    /// A product was added to a wish list (Segment `Product Added to Wishlist`).
    ProductWishlisted {
        product_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wishlist_id: Option<String>,
    }
);
activity!(
    /// The customer reviewed a product (Segment `Product Reviewed`): its
    /// rating, not its text (the review's body stays with the shop).
    ProductReviewed {
        product_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        review_id: Option<String>,
        /// 0 to 100 (a shop's 1 to 5 stars as sent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rating: Option<u32>,
    }
);

/// What happened to a coupon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CouponChange {
    Entered,
    Applied,
    Denied,
    Removed,
}

activity!(
    /// Any other tracked event: a `track` whose name the CRM does not map
    /// to a typed event, with its properties as sent (ingestion, issue 8).
    CustomEvent {
        event: String,
        #[serde(default)]
        properties: Value,
    }
);

/// One activity event, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum ActivityEvent {
    ProductViewed(ProductViewed),
    PageViewed(PageViewed),
    SearchPerformed(SearchPerformed),
    ProductCompared(ProductCompared),
    ReviewRead(ReviewRead),
    VideoWatched(VideoWatched),
    CheckoutStepCompleted(CheckoutStepCompleted),
    SessionStarted(SessionStarted),
    CustomerLoggedIn(CustomerLoggedIn),
    ProductListViewed(ProductListViewed),
    ProductClicked(ProductClicked),
    ShoppingCartViewed(ShoppingCartViewed),
    CheckoutStepViewed(CheckoutStepViewed),
    CouponChanged(CouponChanged),
    ProductWishlisted(ProductWishlisted),
    ProductReviewed(ProductReviewed),
    CustomEvent(CustomEvent),
}

/// Every activity event type, as `type` names it.
pub const ACTIVITY_EVENT_TYPES: &[&str] = &[
    "ProductViewed",
    "PageViewed",
    "SearchPerformed",
    "ProductCompared",
    "ReviewRead",
    "VideoWatched",
    "CheckoutStepCompleted",
    "SessionStarted",
    "CustomerLoggedIn",
    "ProductListViewed",
    "ProductClicked",
    "ShoppingCartViewed",
    "CheckoutStepViewed",
    "CouponChanged",
    "ProductWishlisted",
    "ProductReviewed",
    "CustomEvent",
];

impl DomainEvent for ActivityEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// An activity event as a client reports it: the event and when it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordActivity {
    pub event: ActivityEvent,
    /// When it happened (default: now).
    pub occurred_at: Option<DateTime<Utc>>,
}

const MAX_TEXT: usize = 500;

fn text(field: &str, value: &str, max: usize) -> Result<(), CustomerError> {
    if value.trim().is_empty() {
        return Err(CustomerError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(CustomerError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(CustomerError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn optional_text(field: &str, value: &Option<String>, max: usize) -> Result<(), CustomerError> {
    value.as_deref().map_or(Ok(()), |v| text(field, v, max))
}

fn product_id(field: &str, value: &str) -> Result<(), CustomerError> {
    if crate::vocabulary::valid_product_id(value) {
        Ok(())
    } else {
        Err(CustomerError::invalid(
            field,
            "must be 1 to 64 letters, digits or . _ : -",
        ))
    }
}

fn cart_id(field: &str, value: &str) -> Result<(), CustomerError> {
    if uuid::Uuid::parse_str(value).is_err() {
        return Err(CustomerError::invalid(field, "is not a cart id"));
    }
    Ok(())
}

/// Most products one list event names.
pub const MAX_LISTED_PRODUCTS: usize = 100;

fn product_list(field: &str, ids: &[String]) -> Result<(), CustomerError> {
    if ids.len() > MAX_LISTED_PRODUCTS {
        return Err(CustomerError::invalid(
            field,
            format!("must name at most {MAX_LISTED_PRODUCTS} products"),
        ));
    }
    for (i, p) in ids.iter().enumerate() {
        product_id(&format!("{field}[{i}]"), p)?;
    }
    Ok(())
}

fn url(field: &str, value: &str) -> Result<(), CustomerError> {
    text(field, value, 2048)?;
    if value.starts_with("https://") || value.starts_with("http://") || value.starts_with('/') {
        Ok(())
    } else {
        Err(CustomerError::invalid(
            field,
            "must be an http(s) URL or an absolute path",
        ))
    }
}

impl ActivityEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            ActivityEvent::ProductViewed(_) => "ProductViewed",
            ActivityEvent::PageViewed(_) => "PageViewed",
            ActivityEvent::SearchPerformed(_) => "SearchPerformed",
            ActivityEvent::ProductCompared(_) => "ProductCompared",
            ActivityEvent::ReviewRead(_) => "ReviewRead",
            ActivityEvent::VideoWatched(_) => "VideoWatched",
            ActivityEvent::CheckoutStepCompleted(_) => "CheckoutStepCompleted",
            ActivityEvent::SessionStarted(_) => "SessionStarted",
            ActivityEvent::CustomerLoggedIn(_) => "CustomerLoggedIn",
            ActivityEvent::ProductListViewed(_) => "ProductListViewed",
            ActivityEvent::ProductClicked(_) => "ProductClicked",
            ActivityEvent::ShoppingCartViewed(_) => "ShoppingCartViewed",
            ActivityEvent::CheckoutStepViewed(_) => "CheckoutStepViewed",
            ActivityEvent::CouponChanged(_) => "CouponChanged",
            ActivityEvent::ProductWishlisted(_) => "ProductWishlisted",
            ActivityEvent::ProductReviewed(_) => "ProductReviewed",
            ActivityEvent::CustomEvent(_) => "CustomEvent",
        }
    }

    fn common(&self) -> (&Option<String>, &Option<Utm>) {
        match self {
            ActivityEvent::ProductViewed(e) => (&e.session_id, &e.utm),
            ActivityEvent::PageViewed(e) => (&e.session_id, &e.utm),
            ActivityEvent::SearchPerformed(e) => (&e.session_id, &e.utm),
            ActivityEvent::ProductCompared(e) => (&e.session_id, &e.utm),
            ActivityEvent::ReviewRead(e) => (&e.session_id, &e.utm),
            ActivityEvent::VideoWatched(e) => (&e.session_id, &e.utm),
            ActivityEvent::CheckoutStepCompleted(e) => (&e.session_id, &e.utm),
            ActivityEvent::SessionStarted(e) => (&e.session_id, &e.utm),
            ActivityEvent::CustomerLoggedIn(e) => (&e.session_id, &e.utm),
            ActivityEvent::ProductListViewed(e) => (&e.session_id, &e.utm),
            ActivityEvent::ProductClicked(e) => (&e.session_id, &e.utm),
            ActivityEvent::ShoppingCartViewed(e) => (&e.session_id, &e.utm),
            ActivityEvent::CheckoutStepViewed(e) => (&e.session_id, &e.utm),
            ActivityEvent::CouponChanged(e) => (&e.session_id, &e.utm),
            ActivityEvent::ProductWishlisted(e) => (&e.session_id, &e.utm),
            ActivityEvent::ProductReviewed(e) => (&e.session_id, &e.utm),
            ActivityEvent::CustomEvent(e) => (&e.session_id, &e.utm),
        }
    }

    /// Checks every field beyond its JSON type.
    pub fn validate(&self) -> Result<(), CustomerError> {
        let (session, utm) = self.common();
        optional_text("session_id", session, 128)?;
        if let Some(u) = utm {
            for (name, v) in [
                ("utm.source", &u.source),
                ("utm.medium", &u.medium),
                ("utm.campaign", &u.campaign),
                ("utm.term", &u.term),
                ("utm.content", &u.content),
            ] {
                optional_text(name, v, 200)?;
            }
        }
        match self {
            ActivityEvent::ProductViewed(e) => {
                product_id("product_id", &e.product_id)?;
                text("name", &e.name, MAX_TEXT)?;
                text("category", &e.category, 100)?;
                if e.price_minor.is_some_and(|p| p < 0) {
                    return Err(CustomerError::invalid("price_minor", "must not be negative"));
                }
            }
            ActivityEvent::PageViewed(e) => {
                url("url", &e.url)?;
                optional_text("title", &e.title, MAX_TEXT)?;
                if let Some(r) = &e.referrer {
                    url("referrer", r)?;
                }
            }
            ActivityEvent::SearchPerformed(e) => text("query", &e.query, MAX_TEXT)?,
            ActivityEvent::ProductCompared(e) => {
                if !(2..=20).contains(&e.product_ids.len()) {
                    return Err(CustomerError::invalid("product_ids", "must name 2 to 20 products"));
                }
                for (i, p) in e.product_ids.iter().enumerate() {
                    product_id(&format!("product_ids[{i}]"), p)?;
                }
            }
            ActivityEvent::ReviewRead(e) => product_id("product_id", &e.product_id)?,
            ActivityEvent::VideoWatched(e) => text("video_id", &e.video_id, 128)?,
            ActivityEvent::CheckoutStepCompleted(e) => {
                cart_id("cart_id", &e.cart_id)?;
                text("step", &e.step, 64)?;
            }
            ActivityEvent::CheckoutStepViewed(e) => {
                cart_id("cart_id", &e.cart_id)?;
                text("step", &e.step, 64)?;
            }
            ActivityEvent::ProductListViewed(e) => {
                optional_text("list_id", &e.list_id, 128)?;
                optional_text("category", &e.category, 100)?;
                product_list("product_ids", &e.product_ids)?;
            }
            ActivityEvent::ProductClicked(e) => {
                product_id("product_id", &e.product_id)?;
                optional_text("name", &e.name, MAX_TEXT)?;
                optional_text("category", &e.category, 100)?;
            }
            ActivityEvent::ShoppingCartViewed(e) => {
                cart_id("cart_id", &e.cart_id)?;
                product_list("product_ids", &e.product_ids)?;
            }
            ActivityEvent::CouponChanged(e) => {
                text("coupon", &e.coupon, 128)?;
                optional_text("coupon_name", &e.coupon_name, 200)?;
                if let Some(c) = &e.cart_id {
                    cart_id("cart_id", c)?;
                }
                if let Some(o) = &e.order_id {
                    if uuid::Uuid::parse_str(o).is_err() {
                        return Err(CustomerError::invalid("order_id", "is not an order id"));
                    }
                }
                if e.discount_minor.is_some_and(|d| d < 0) {
                    return Err(CustomerError::invalid("discount_minor", "must not be negative"));
                }
            }
            ActivityEvent::ProductWishlisted(e) => {
                product_id("product_id", &e.product_id)?;
                optional_text("name", &e.name, MAX_TEXT)?;
                optional_text("wishlist_id", &e.wishlist_id, 128)?;
            }
            ActivityEvent::ProductReviewed(e) => {
                product_id("product_id", &e.product_id)?;
                optional_text("review_id", &e.review_id, 128)?;
                if e.rating.is_some_and(|r| r > 100) {
                    return Err(CustomerError::invalid("rating", "must be 0 to 100"));
                }
            }
            ActivityEvent::SessionStarted(e) => optional_text("device", &e.device, 128)?,
            ActivityEvent::CustomerLoggedIn(_) => {}
            ActivityEvent::CustomEvent(e) => {
                text("event", &e.event, 200)?;
                if !(e.properties.is_object() || e.properties.is_null()) {
                    return Err(CustomerError::invalid("properties", "must be an object"));
                }
            }
        }
        Ok(())
    }
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

/// Why an activity event was not recorded. Nothing was written in every case.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActivityError {
    #[error(transparent)]
    Rejected(#[from] CustomerError),
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] EventCodecError),
    #[error("write too large: {0}")]
    TooLarge(String),
}

/// What recording did: the stored event, or the first answer to a repeated request.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    Applied { event: Box<EventEnvelope>, body: Value },
    Replayed { status: u16, body: Value },
}

/// The answer to a recorded activity event. Without the stream version: the
/// receipt is written with the event, before the store assigns it, and a
/// replay must answer the same.
pub fn activity_view(e: &EventEnvelope) -> Value {
    serde_json::json!({
        "event_id": e.event_id,
        "stream_id": e.stream_id,
        "type": e.event_type,
        "customer_id": e.customer_id,
        "occurred_at": e.occurred_at,
        "recorded_at": e.recorded_at,
        "data": e.data,
    })
}

/// Appends one activity event of an existing customer (the caller checks the
/// customer exists) at `now`, with an idempotency receipt when a key is given.
pub async fn record_activity(
    store: &dyn EventStore,
    customer_id: &str,
    request: &RecordActivity,
    meta: &CommandMeta,
    idempotency: Option<&IdempotencyKey>,
    now: DateTime<Utc>,
) -> Result<Recorded, ActivityError> {
    let check = |receipt: CommandReceipt, key: &IdempotencyKey| {
        if receipt.request_hash != key.request_hash {
            Err(ActivityError::IdempotencyKeyReused)
        } else {
            Ok(Recorded::Replayed {
                status: receipt.status,
                body: receipt.body,
            })
        }
    };
    if let Some(key) = idempotency {
        if let Some(receipt) = store.receipt(&key.receipt_key).await? {
            return check(receipt, key);
        }
    }
    let occurred_at = request.occurred_at(now)?;
    let stream = activity_stream_id(customer_id);
    let mut events = envelopes(
        &stream,
        Some(customer_id),
        std::slice::from_ref(&request.event),
        meta,
        now,
    )?;
    for e in &mut events {
        e.occurred_at = occurred_at;
    }
    // The answer is known before the append (it has no version).
    let mut preview = events
        .first()
        .cloned()
        .ok_or_else(|| EventCodecError("the activity event did not encode".into()))?;
    let receipt = idempotency.map(|key| CommandReceipt {
        key: key.receipt_key.clone(),
        request_hash: key.request_hash.clone(),
        status: 201,
        body: activity_view(&preview),
        recorded_at: now,
    });
    let appended = store
        .append(AppendRequest {
            stream_id: stream,
            expected: ExpectedVersion::Any,
            events,
            reservations: Vec::new(),
            receipt,
        })
        .await;
    match appended {
        Ok(a) => {
            if let Some(stored) = a.events.into_iter().next() {
                preview = stored;
            }
            let body = activity_view(&preview);
            Ok(Recorded::Applied {
                event: Box::new(preview),
                body,
            })
        }
        Err(AppendError::DuplicateCommand(receipt)) => match idempotency {
            Some(key) => check(*receipt, key),
            None => Err(ActivityError::IdempotencyKeyReused),
        },
        Err(AppendError::Store(e)) => Err(e.into()),
        Err(AppendError::TooLarge(m)) => Err(ActivityError::TooLarge(m)),
        Err(e @ (AppendError::Conflict { .. } | AppendError::ReservationTaken { .. })) => {
            Err(StoreError::Unavailable(e.to_string()).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T09:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn field(body: Value) -> String {
        match RecordActivity::from_json(body) {
            Err(CustomerError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_typed_event_is_read_with_its_common_fields() {
        let r = RecordActivity::from_json(json!({
            "type": "ProductViewed", "product_id": "sku-1", "name": "Lamp", "category": "lighting",
            "price_minor": 4000, "session_id": "s1", "utm": {"source": "newsletter", "medium": "email"},
            "occurred_at": "2026-11-22T09:00:00Z"
        }))
        .expect("valid");
        let ActivityEvent::ProductViewed(p) = &r.event else {
            panic!("type")
        };
        assert_eq!((p.category.as_str(), p.price_minor), ("lighting", Some(4000)));
        assert_eq!(p.utm.as_ref().and_then(|u| u.source.as_deref()), Some("newsletter"));
        assert_eq!(r.occurred_at(now()), Ok(now() - Duration::days(1)));
        let (t, data) = r.event.to_parts().expect("parts");
        assert_eq!(t, "ProductViewed");
        assert_eq!(data["session_id"], "s1");
        assert!(data.get("occurred_at").is_none());
    }

    #[test]
    fn unknown_types_and_fields_and_bad_values_are_named() {
        assert_eq!(field(json!({"type": "ProductLiked"})), "type");
        assert_eq!(field(json!({"product_id": "x"})), "type");
        assert_eq!(
            field(json!({"type": "ReviewRead", "product_id": "p", "stars": 5})),
            "stars"
        );
        assert_eq!(field(json!({"type": "ReviewRead"})), "product_id");
        assert_eq!(
            field(json!({"type": "ReviewRead", "product_id": "p", "utm": {"source": "x", "bogus": 1}})),
            "utm.bogus"
        );
        assert_eq!(
            field(json!({"type": "SearchPerformed", "query": "x", "results_count": -1})),
            "results_count"
        );
        assert_eq!(
            field(json!({"type": "PageViewed", "url": "javascript:alert(1)"})),
            "url"
        );
        assert_eq!(
            field(json!({"type": "ProductCompared", "product_ids": ["a"]})),
            "product_ids"
        );
        assert_eq!(
            field(json!({"type": "ReviewRead", "product_id": "p", "occurred_at": "yesterday"})),
            "occurred_at"
        );
        assert_eq!(
            field(json!({"type": "CheckoutStepCompleted", "cart_id": "c", "step": "shipping"})),
            "cart_id"
        );
    }

    #[test]
    fn occurred_at_is_neither_future_nor_too_late() {
        let at = |t: DateTime<Utc>| RecordActivity {
            event: ActivityEvent::CustomerLoggedIn(CustomerLoggedIn {
                session_id: None,
                utm: None,
                late: false,
            }),
            occurred_at: Some(t),
        };
        assert!(at(now() + Duration::hours(1)).occurred_at(now()).is_err());
        assert!(at(now() - Duration::days(8)).occurred_at(now()).is_err());
        assert!(at(now() - Duration::days(6)).occurred_at(now()).is_ok());
    }
}
