//! Browsing: searches, product lists, a product clicked, viewed, wished
//! for or reviewed, and `Signed In`: activity of the shopper.

use super::read::{amount, first_text, listed_product_ids, session, utm};
use super::{Call, Mapped};
use crate::customer::activity::{
    ActivityEvent, CustomerLoggedIn, ProductClicked, ProductListViewed, ProductReviewed, ProductViewed,
    ProductWishlisted, SearchPerformed,
};
use crate::ingest::message::Rejection;
use serde_json::Value;

/// The track calls mapped here.
pub(super) const NAMES: &[&str] = &[
    "Products Searched",
    "Product List Viewed",
    "Product Clicked",
    "Product Viewed",
    "Product Added to Wishlist",
    "Product Reviewed",
    "Signed In",
];

/// Maps a track call named one of [`NAMES`].
pub(super) fn track(call: &Call<'_>, event: &str) -> Result<Mapped, Rejection> {
    let (m, late) = (call.m, call.late);
    let (session_id, utm) = (session(m), utm(m));
    let product = first_text(&m.properties, &["product_id", "sku"]);
    let name = m.property_text("name");
    let category = m.property_text("category");
    let activity = match event {
        "Products Searched" => {
            let query = match m.properties.get("query") {
                Some(Value::String(q)) if !q.trim().is_empty() => q.trim().to_string(),
                // The spec allows an object (a structured query).
                Some(q @ Value::Object(o)) if !o.is_empty() => q.to_string(),
                _ => return call.custom(),
            };
            ActivityEvent::SearchPerformed(SearchPerformed {
                query,
                results_count: m.properties.get("results_count").and_then(Value::as_u64).unwrap_or(0),
                session_id,
                utm,
                late,
            })
        }
        "Product List Viewed" => ActivityEvent::ProductListViewed(ProductListViewed {
            list_id: m.property_text("list_id"),
            category,
            product_ids: listed_product_ids(m),
            session_id,
            utm,
            late,
        }),
        "Product Clicked" => {
            let Some(product_id) = product else {
                return call.custom();
            };
            ActivityEvent::ProductClicked(ProductClicked {
                product_id,
                name,
                category,
                session_id,
                utm,
                late,
            })
        }
        "Product Viewed" => {
            let Some(product_id) = product else {
                return call.custom();
            };
            ActivityEvent::ProductViewed(ProductViewed {
                name: name.unwrap_or_else(|| product_id.clone()),
                product_id,
                category: category.unwrap_or_else(|| "uncategorised".into()),
                price_minor: amount(&m.properties, "price", "properties.price")?,
                session_id,
                utm,
                late,
            })
        }
        "Product Added to Wishlist" => {
            let Some(product_id) = product else {
                return call.custom();
            };
            ActivityEvent::ProductWishlisted(ProductWishlisted {
                product_id,
                name,
                wishlist_id: m.property_text("wishlist_id"),
                session_id,
                utm,
                late,
            })
        }
        "Product Reviewed" => {
            let Some(product_id) = product else {
                return call.custom();
            };
            let sent = m.property_text("rating").and_then(|r| r.parse::<f64>().ok());
            let activity = ActivityEvent::ProductReviewed(ProductReviewed {
                product_id: product_id.clone(),
                review_id: m.property_text("review_id"),
                rating: sent.filter(|r| (0.0..=100.0).contains(r)).map(|r| r.round() as u32),
                session_id,
                utm,
                late,
            });
            // With its order: the review of a product of that order
            // (decision 0073). A rating the order cannot take (not a whole
            // number from 1 to 5) is refused, naming it.
            if let Some(order) = m.property_text("order_id") {
                let rating = sent
                    .filter(|r| r.fract() == 0.0 && (1.0..=5.0).contains(r))
                    .map_or(0, |r| r as i64);
                return Ok(Mapped::ReviewOrder(Box::new(super::OrderReview {
                    order,
                    product_id,
                    rating,
                    review: m.property_text("review_body"),
                    activity,
                })));
            }
            activity
        }
        "Signed In" => ActivityEvent::CustomerLoggedIn(CustomerLoggedIn { session_id, utm, late }),
        _ => return call.custom(),
    };
    Ok(Mapped::Activity(activity))
}
