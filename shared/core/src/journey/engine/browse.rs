//! The browse-abandonment entry rule (`entry.browsed`, decision 0069): at
//! the trigger, the customer has viewed at least N distinct products within
//! the rule's time before it, and has neither created a cart nor added an
//! item to one in that time.

use super::{EngineError, JourneyEngine};
use crate::customer::streams::CUSTOMER_STREAMS;
use crate::event::EventEnvelope;
use crate::journey::definition::BrowseRule;
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;

/// Activity events read per page, walking back from the trigger.
const PAGE: usize = 200;

/// The event types that show the customer put something in a cart.
const CART_TOUCHED: &[&str] = &["CartCreated", "ItemAddedToCart"];

const VIEWED: &str = "ProductViewed";

impl JourneyEngine {
    /// Whether `trigger` meets `rule` for `customer_id`.
    ///
    /// The window is `[trigger.occurred_at - within, trigger.occurred_at]`,
    /// by when each event occurred. Views are read from the customer's
    /// activity stream, from the trigger back (a page at a time, stopping
    /// at the first page that begins before the window: an event that
    /// occurred in the window was recorded in it or later). Carts are the
    /// `cart-` streams the customer-streams index lists (decision 0020); a
    /// cart the projector has not indexed yet is not seen, as in the
    /// lookback.
    pub(super) async fn browsed_without_cart(
        &self,
        customer_id: &str,
        trigger: &EventEnvelope,
        rule: &BrowseRule,
    ) -> Result<bool, EngineError> {
        let until = trigger.occurred_at;
        let from = until - rule.within.to_chrono();
        let in_window = |e: &EventEnvelope| e.occurred_at >= from && e.occurred_at <= until;

        let mut products = BTreeSet::new();
        if trigger.event_type == VIEWED {
            products.extend(product_of(trigger));
        }
        for e in self.activity_back_to(customer_id, trigger, from).await? {
            if e.event_type == VIEWED && e.customer_id.as_deref() == Some(customer_id) && in_window(&e) {
                products.extend(product_of(&e));
            }
        }
        let needed = usize::try_from(rule.min_distinct_products).unwrap_or(usize::MAX);
        if products.len() < needed {
            return Ok(false);
        }

        let carts =
            crate::customer::streams::list_all(self.docs.as_ref(), CUSTOMER_STREAMS, customer_id, "cart-").await?;
        for (stream, _) in carts {
            let touched = self
                .events
                .read_stream(&stream, 0, usize::MAX)
                .await?
                .iter()
                .any(|e| CART_TOUCHED.contains(&e.event_type.as_str()) && in_window(e));
            if touched {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The customer's activity events up to the trigger (in its stream, by
    /// version; elsewhere the whole stream), back to those recorded before
    /// `from`.
    async fn activity_back_to(
        &self,
        customer_id: &str,
        trigger: &EventEnvelope,
        from: DateTime<Utc>,
    ) -> Result<Vec<EventEnvelope>, EngineError> {
        let stream = crate::customer::activity::activity_stream_id(customer_id);
        if trigger.stream_id != stream {
            return Ok(self.events.read_stream(&stream, 0, usize::MAX).await?);
        }
        let mut found = Vec::new();
        let mut upto = trigger.version;
        loop {
            let after = upto.saturating_sub(PAGE as u64);
            let page = self.events.read_stream(&stream, after, PAGE).await?;
            let begins_before = page.first().is_some_and(|e| e.recorded_at < from);
            found.extend(page.into_iter().filter(|e| e.version <= upto));
            if after == 0 || begins_before {
                return Ok(found);
            }
            upto = after;
        }
    }
}

/// The product id a `ProductViewed` names.
fn product_of(e: &EventEnvelope) -> Option<String> {
    e.data
        .get("product_id")
        .and_then(serde_json::Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}
