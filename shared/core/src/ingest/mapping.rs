//! Segment's names onto the CRM's events (the Segment e-commerce spec v2 for
//! the names it knows; everything else is a `CustomEvent`).

use super::message::{minor_units, Kind, Rejection, SegmentMessage};
use crate::commerce::{AddItem, OrderItem};
use crate::customer::activity::{
    ActivityEvent, CheckoutStepCompleted, CustomEvent, CustomerLoggedIn, PageViewed, ProductViewed, SearchPerformed,
    Utm,
};
use crate::customer::Address;
use serde_json::Value;

/// What one track, page or screen call becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    Activity(ActivityEvent),
    /// `Product Added`: the client's cart id, its currency, the line.
    AddToCart {
        cart: String,
        currency: String,
        item: AddItem,
    },
    /// `Product Removed`.
    RemoveFromCart {
        cart: String,
        product_id: String,
    },
    /// `Order Completed`.
    Order(Box<OrderRequest>),
}

/// An `Order Completed`, read.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRequest {
    pub order_id: String,
    pub items: Vec<OrderItem>,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub shipping_minor: i64,
    pub total_minor: i64,
    pub currency: String,
    pub shipping_address: Option<Address>,
}

/// The names mapped onto typed events (others are custom events).
pub const KNOWN_EVENTS: &[&str] = &[
    "Product Viewed",
    "Products Searched",
    "Product Added",
    "Product Removed",
    "Checkout Step Completed",
    "Order Completed",
    "Signed In",
];

fn required(m: &SegmentMessage, names: &[&str]) -> Result<String, Rejection> {
    names
        .iter()
        .find_map(|n| m.property_text(n))
        .ok_or_else(|| Rejection::new(format!("properties.{}", names[0]), "is required"))
}

fn currency(m: &SegmentMessage) -> String {
    m.property_text("currency")
        .map(|c| c.to_uppercase())
        .unwrap_or_else(|| "USD".into())
}

/// `context.campaign` (Segment's UTM parameters).
fn utm(m: &SegmentMessage) -> Option<Utm> {
    let c = m.context.get("campaign")?.as_object()?;
    let get = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    let utm = Utm {
        source: get("source"),
        medium: get("medium"),
        campaign: get("name"),
        term: get("term"),
        content: get("content"),
    };
    (utm != Utm::default()).then_some(utm)
}

fn session(m: &SegmentMessage) -> Option<String> {
    m.context_text(&["sessionId"])
}

fn quantity(value: Option<&Value>, field: &str) -> Result<u32, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(1),
        Some(v) => v
            .as_u64()
            .and_then(|q| u32::try_from(q).ok())
            .filter(|q| *q > 0)
            .ok_or_else(|| Rejection::new(field, "must be a positive whole number")),
    }
}

fn address(value: &Value) -> Result<Address, Rejection> {
    let field = "properties.shipping_address";
    let get = |k: &[&str]| {
        k.iter()
            .find_map(|k| value.get(*k).and_then(Value::as_str).map(str::to_string))
    };
    Ok(Address {
        line1: get(&["line1", "street"]).ok_or_else(|| Rejection::new(format!("{field}.line1"), "is required"))?,
        line2: get(&["line2"]),
        city: get(&["city"]).ok_or_else(|| Rejection::new(format!("{field}.city"), "is required"))?,
        region: get(&["region", "state"]),
        postal_code: get(&["postal_code", "postalCode"])
            .ok_or_else(|| Rejection::new(format!("{field}.postal_code"), "is required"))?,
        country: get(&["country"]).ok_or_else(|| Rejection::new(format!("{field}.country"), "is required"))?,
    })
}

fn order(m: &SegmentMessage) -> Result<OrderRequest, Rejection> {
    let order_id = required(m, &["order_id", "checkout_id"])?;
    let products = m
        .properties
        .get("products")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Rejection::new("properties.products", "must list the products ordered"))?;
    let mut items = Vec::new();
    for (i, p) in products.iter().enumerate() {
        let field = |k: &str| format!("properties.products[{i}].{k}");
        let text = |keys: &[&str]| {
            keys.iter().find_map(|k| match p.get(*k) {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        };
        items.push(OrderItem {
            product_id: text(&["product_id", "sku", "id"])
                .ok_or_else(|| Rejection::new(field("product_id"), "is required"))?,
            name: text(&["name"]).ok_or_else(|| Rejection::new(field("name"), "is required"))?,
            category: text(&["category"]),
            quantity: quantity(p.get("quantity"), &field("quantity"))?,
            unit_price_minor: minor_units(p.get("price").unwrap_or(&Value::Null), &field("price"))?,
        });
    }
    let amount = |k: &str| -> Result<Option<i64>, Rejection> {
        m.properties
            .get(k)
            .filter(|v| !v.is_null())
            .map(|v| minor_units(v, &format!("properties.{k}")))
            .transpose()
    };
    let lines: i64 = items.iter().map(|i| i64::from(i.quantity) * i.unit_price_minor).sum();
    let subtotal_minor = amount("subtotal")?.unwrap_or(lines);
    let tax_minor = amount("tax")?.unwrap_or(0);
    let shipping_minor = amount("shipping")?.unwrap_or(0);
    let total_minor = amount("total")?.unwrap_or(subtotal_minor + tax_minor + shipping_minor);
    let shipping_address = m
        .properties
        .get("shipping_address")
        .filter(|v| !v.is_null())
        .map(address)
        .transpose()?;
    Ok(OrderRequest {
        order_id,
        items,
        subtotal_minor,
        tax_minor,
        shipping_minor,
        total_minor,
        currency: currency(m),
        shipping_address,
    })
}

/// A track call kept as it came, a `CustomEvent` of its name and
/// properties: every name not mapped onto a typed event, and what a client
/// source may not do itself (`Order Completed` from a browser's key is
/// recorded as activity, never placed as an order; decision 0042).
pub fn as_custom_event(m: &SegmentMessage, late: bool) -> ActivityEvent {
    ActivityEvent::CustomEvent(CustomEvent {
        event: m.event.clone().unwrap_or_default(),
        properties: Value::Object(m.properties.clone()),
        session_id: session(m),
        utm: utm(m),
        late,
    })
}

/// Maps a track, page or screen call; `late` flags an event older than the
/// tolerance.
pub fn map(m: &SegmentMessage, late: bool) -> Result<Mapped, Rejection> {
    let (session_id, utm) = (session(m), utm(m));
    let activity = match m.kind {
        Kind::Page => {
            let url = m
                .property_text("url")
                .or_else(|| m.context_text(&["page", "url"]))
                .or_else(|| m.property_text("path"))
                .or_else(|| m.context_text(&["page", "path"]))
                .ok_or_else(|| Rejection::new("properties.url", "is required (or context.page.url)"))?;
            ActivityEvent::PageViewed(PageViewed {
                url,
                title: m.property_text("title").or_else(|| m.name.clone()),
                referrer: m
                    .property_text("referrer")
                    .or_else(|| m.context_text(&["page", "referrer"]))
                    .filter(|r| r.starts_with("http://") || r.starts_with("https://") || r.starts_with('/')),
                session_id,
                utm,
                late,
            })
        }
        Kind::Screen => {
            let name = m.name.clone().unwrap_or_default();
            let slug: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect();
            ActivityEvent::PageViewed(PageViewed {
                url: format!("/screens/{slug}"),
                title: Some(name),
                referrer: None,
                session_id,
                utm,
                late,
            })
        }
        Kind::Track => match m.event.as_deref().unwrap_or_default() {
            "Product Viewed" => ActivityEvent::ProductViewed(ProductViewed {
                product_id: required(m, &["product_id", "sku"])?,
                name: required(m, &["name"])?,
                category: m.property_text("category").unwrap_or_else(|| "uncategorised".into()),
                price_minor: m
                    .properties
                    .get("price")
                    .filter(|v| !v.is_null())
                    .map(|v| minor_units(v, "properties.price"))
                    .transpose()?,
                session_id,
                utm,
                late,
            }),
            "Products Searched" => ActivityEvent::SearchPerformed(SearchPerformed {
                query: required(m, &["query"])?,
                results_count: m.properties.get("results_count").and_then(Value::as_u64).unwrap_or(0),
                session_id,
                utm,
                late,
            }),
            "Signed In" => ActivityEvent::CustomerLoggedIn(CustomerLoggedIn { session_id, utm, late }),
            "Checkout Step Completed" => ActivityEvent::CheckoutStepCompleted(CheckoutStepCompleted {
                cart_id: required(m, &["cart_id", "checkout_id"])?,
                step: required(m, &["step"])?,
                session_id,
                utm,
                late,
            }),
            "Product Added" => {
                return Ok(Mapped::AddToCart {
                    cart: required(m, &["cart_id"])?,
                    currency: currency(m),
                    item: AddItem {
                        product_id: required(m, &["product_id", "sku"])?,
                        name: required(m, &["name"])?,
                        quantity: quantity(m.properties.get("quantity"), "properties.quantity")?,
                        unit_price_minor: minor_units(
                            m.properties.get("price").unwrap_or(&Value::Null),
                            "properties.price",
                        )?,
                    },
                })
            }
            "Product Removed" => {
                return Ok(Mapped::RemoveFromCart {
                    cart: required(m, &["cart_id"])?,
                    product_id: required(m, &["product_id", "sku"])?,
                })
            }
            "Order Completed" => return Ok(Mapped::Order(Box::new(order(m)?))),
            _ => as_custom_event(m, late),
        },
        Kind::Identify | Kind::Alias => {
            return Err(Rejection::new("type", "identify and alias are not activity"));
        }
    };
    Ok(Mapped::Activity(activity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(body: Value) -> SegmentMessage {
        SegmentMessage::parse(&body, None, crate::testing::test_time()).expect("a message")
    }

    #[test]
    fn known_names_map_onto_typed_events() {
        let viewed = message(
            json!({ "type": "track", "messageId": "1", "anonymousId": "a", "event": "Product Viewed",
            "properties": { "sku": "lamp-1", "name": "Desk lamp", "price": 40.5 },
            "context": { "campaign": { "source": "news", "name": "winter" } } }),
        );
        let Ok(Mapped::Activity(ActivityEvent::ProductViewed(p))) = map(&viewed, false) else {
            panic!("not a product view");
        };
        assert_eq!((p.product_id.as_str(), p.price_minor), ("lamp-1", Some(4050)));
        assert_eq!(p.utm.as_ref().and_then(|u| u.campaign.as_deref()), Some("winter"));

        let added = message(
            json!({ "type": "track", "messageId": "2", "anonymousId": "a", "event": "Product Added",
            "properties": { "cart_id": "c-9", "product_id": "lamp-1", "name": "Desk lamp", "price": 40, "quantity": 2, "currency": "eur" } }),
        );
        assert_eq!(
            map(&added, false),
            Ok(Mapped::AddToCart {
                cart: "c-9".into(),
                currency: "EUR".into(),
                item: AddItem {
                    product_id: "lamp-1".into(),
                    name: "Desk lamp".into(),
                    quantity: 2,
                    unit_price_minor: 4000
                }
            })
        );

        let order = message(
            json!({ "type": "track", "messageId": "3", "userId": "u", "event": "Order Completed",
            "properties": { "order_id": "o-1", "tax": 1.5, "currency": "EUR",
                "products": [{ "product_id": "lamp-1", "name": "Desk lamp", "price": 40, "quantity": 2 }] } }),
        );
        let Ok(Mapped::Order(o)) = map(&order, false) else {
            panic!("not an order")
        };
        assert_eq!((o.subtotal_minor, o.tax_minor, o.total_minor), (8000, 150, 8150));

        let page = message(
            json!({ "type": "page", "messageId": "4", "anonymousId": "a", "name": "Home",
            "context": { "page": { "url": "https://shop.example/" } } }),
        );
        let Ok(Mapped::Activity(ActivityEvent::PageViewed(p))) = map(&page, true) else {
            panic!("not a page")
        };
        assert_eq!(
            (p.url.as_str(), p.title.as_deref(), p.late),
            ("https://shop.example/", Some("Home"), true)
        );
    }

    #[test]
    fn other_names_are_custom_events_and_refusals_name_the_field() {
        let custom = message(
            json!({ "type": "track", "messageId": "1", "anonymousId": "a", "event": "Wishlist Shared",
            "properties": { "list": "xmas" } }),
        );
        let Ok(Mapped::Activity(ActivityEvent::CustomEvent(c))) = map(&custom, false) else {
            panic!("not custom")
        };
        assert_eq!(
            (c.event.as_str(), &c.properties),
            ("Wishlist Shared", &json!({ "list": "xmas" }))
        );

        let field = |body: Value| match map(&message(body), false) {
            Err(r) => r.field,
            Ok(m) => panic!("mapped: {m:?}"),
        };
        assert_eq!(
            field(
                json!({ "type": "track", "messageId": "1", "anonymousId": "a", "event": "Product Viewed",
            "properties": { "name": "x" } })
            ),
            "properties.product_id"
        );
        assert_eq!(
            field(
                json!({ "type": "track", "messageId": "1", "anonymousId": "a", "event": "Product Added",
            "properties": { "cart_id": "c", "product_id": "p", "name": "n", "price": "free" } })
            ),
            "properties.price"
        );
        assert_eq!(
            field(
                json!({ "type": "track", "messageId": "1", "userId": "u", "event": "Order Completed",
            "properties": { "order_id": "o", "products": [{ "product_id": "p", "price": 1 }] } })
            ),
            "properties.products[0].name"
        );
        assert_eq!(
            field(json!({ "type": "page", "messageId": "1", "anonymousId": "a" })),
            "properties.url"
        );
    }
}
