//! The checks of an activity event beyond its JSON types: texts, ids,
//! URLs and lists, naming the offending field.

use super::{ActivityEvent, Utm};
use crate::customer::CustomerError;

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
