//! Segment's names onto the CRM's events: the Segment e-commerce spec v2
//! as written (decision 0052), and `Signed In`. Every other name is a
//! `CustomEvent`.
//!
//! The spec's own property names are read (`order_id`, `checkout_id`,
//! `cart_id`, `products[].product_id|sku|name|price|quantity|category`,
//! `total`, `revenue`, `subtotal`, `tax`, `shipping`, `discount`,
//! `coupon`, `currency`...). The spec makes every property optional: a
//! missing one never refuses the message. When what a typed event is about
//! is missing (a `Product Clicked` naming no product, a `Cart Viewed`
//! naming no cart), the call is kept as the `CustomEvent` of its name. A
//! value that is there but malformed (a price of `"free"`) is refused,
//! naming the field. An order, a refund or a cancellation needs its
//! `order_id`.

use super::derived_id;
use super::message::{minor_units, Kind, Rejection, SegmentMessage};
use crate::commerce::cart::valid_product_id;
use crate::commerce::{AddItem, OrderItem, PaymentMethod};
use crate::customer::activity::{
    ActivityEvent, CheckoutStepCompleted, CheckoutStepViewed, CouponChange, CouponChanged, CustomEvent,
    CustomerLoggedIn, PageViewed, ProductClicked, ProductListViewed, ProductReviewed, ProductViewed, ProductWishlisted,
    SearchPerformed, ShoppingCartViewed, Utm, MAX_LISTED_PRODUCTS,
};
use crate::customer::Address;
use serde_json::{Map, Value};

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
    /// `Checkout Started`: the client's cart (its `cart_id`, else its
    /// `checkout_id` or `order_id`), and the lines it lists (the cart is
    /// created with them when the CRM does not know it).
    Checkout {
        cart: String,
        currency: String,
        items: Vec<AddItem>,
    },
    /// `Order Completed`.
    Order(Box<OrderRequest>),
    /// `Order Cancelled`: the client's order id and why.
    CancelOrder {
        order: String,
        reason: String,
    },
    /// `Order Refunded`.
    RefundOrder(RefundRequest),
    /// `Order Updated`: the order's amendment (decision 0055).
    AmendOrder(Box<OrderUpdate>),
}

/// An `Order Updated`, read: the client's order id and what the call says
/// the order is now. What it leaves out stays as the order has it (`None`).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderUpdate {
    pub order: String,
    /// `products`, when it lists any.
    pub items: Option<Vec<OrderItem>>,
    pub discount_minor: Option<i64>,
    pub tax_minor: Option<i64>,
    pub shipping_minor: Option<i64>,
    pub total_minor: Option<i64>,
    /// The spec's `revenue` (the lines after the discount, before tax and shipping).
    pub revenue_minor: Option<i64>,
    pub currency: Option<String>,
}

/// An `Order Refunded`, read: the client's order id, the amount (`total`,
/// else the listed products' value; `None`: all that is left) and the
/// products.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundRequest {
    pub order: String,
    pub amount_minor: Option<i64>,
    pub product_ids: Vec<String>,
}

impl Mapped {
    /// Whether this changes an order (placing, amending, cancelling,
    /// refunding): what only a server source may do (decision 0042).
    pub fn changes_an_order(&self) -> bool {
        matches!(
            self,
            Mapped::Order(_) | Mapped::AmendOrder(_) | Mapped::CancelOrder { .. } | Mapped::RefundOrder(_)
        )
    }
}

/// An `Order Completed`, read.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRequest {
    pub order_id: String,
    pub items: Vec<OrderItem>,
    /// The sum of the lines (the spec's `subtotal` is after the discount).
    pub subtotal_minor: i64,
    pub discount_minor: i64,
    pub tax_minor: i64,
    pub shipping_minor: i64,
    /// `total`, else `revenue` − discount + tax + shipping, else the lines'.
    pub total_minor: i64,
    /// What `total_minor` holds beyond lines − discount + tax + shipping.
    pub adjustment_minor: i64,
    pub currency: String,
    pub shipping_address: Option<Address>,
    /// From `payment_method` when given.
    pub payment_method: PaymentMethod,
    /// The call's `userId`: an order for a user id known only by its id
    /// is that user's profile's (decision 0055).
    pub user_id: Option<String>,
}

/// The spec v2 names mapped onto typed events (others are custom events).
pub const KNOWN_EVENTS: &[&str] = &[
    "Products Searched",
    "Product List Viewed",
    "Product Clicked",
    "Product Viewed",
    "Product Added",
    "Product Removed",
    "Cart Viewed",
    "Checkout Started",
    "Checkout Step Viewed",
    "Checkout Step Completed",
    "Payment Info Entered",
    "Order Completed",
    "Order Updated",
    "Order Refunded",
    "Order Cancelled",
    "Coupon Entered",
    "Coupon Applied",
    "Coupon Denied",
    "Coupon Removed",
    "Product Added to Wishlist",
    "Product Reviewed",
    "Signed In",
];

fn required(m: &SegmentMessage, names: &[&str]) -> Result<String, Rejection> {
    first_text(&m.properties, names).ok_or_else(|| Rejection::new(format!("properties.{}", names[0]), "is required"))
}

/// The first of `names` that is non-empty text (or a number) in `map`.
fn first_text(map: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| match map.get(*n) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
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

/// An amount property in minor units: `None` when absent or null.
fn amount(map: &Map<String, Value>, key: &str, field: &str) -> Result<Option<i64>, Rejection> {
    map.get(key)
        .filter(|v| !v.is_null())
        .map(|v| minor_units(v, field))
        .transpose()
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

/// One entry of `products`, read: its id (`product_id`, else `sku`), name
/// (else its id), category, quantity (default 1) and unit price (default 0).
fn product_line(p: &Value, i: usize) -> Result<OrderItem, Rejection> {
    let field = |k: &str| format!("properties.products[{i}].{k}");
    let empty = Map::new();
    let map = p.as_object().unwrap_or(&empty);
    let product_id = first_text(map, &["product_id", "sku", "id"])
        .ok_or_else(|| Rejection::new(field("product_id"), "is required"))?;
    Ok(OrderItem {
        name: first_text(map, &["name"]).unwrap_or_else(|| product_id.clone()),
        category: first_text(map, &["category"]),
        quantity: quantity(map.get("quantity"), &field("quantity"))?,
        unit_price_minor: amount(map, "price", &field("price"))?.unwrap_or(0),
        product_id,
    })
}

/// Every entry of `products`.
fn product_lines(m: &SegmentMessage) -> Result<Vec<OrderItem>, Rejection> {
    let products = m.properties.get("products").and_then(Value::as_array);
    products
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| product_line(p, i))
        .collect()
}

/// The ids of the listed products that are valid product ids (at most
/// [`MAX_LISTED_PRODUCTS`]): a list view never fails on one odd entry.
fn listed_product_ids(m: &SegmentMessage) -> Vec<String> {
    let products = m.properties.get("products").and_then(Value::as_array);
    products
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_object().and_then(|p| first_text(p, &["product_id", "sku"])))
        .filter(|id| valid_product_id(id))
        .take(MAX_LISTED_PRODUCTS)
        .collect()
}

fn order(m: &SegmentMessage) -> Result<OrderRequest, Rejection> {
    let order_id = required(m, &["order_id", "checkout_id"])?;
    let items = product_lines(m)?;
    if items.is_empty() {
        return Err(Rejection::new("properties.products", "must list the products ordered"));
    }
    let props = &m.properties;
    let at = |k: &str| amount(props, k, &format!("properties.{k}"));
    let lines: i64 = items.iter().map(|i| i64::from(i.quantity) * i.unit_price_minor).sum();
    let discount_minor = at("discount")?.unwrap_or(0);
    let tax_minor = at("tax")?.unwrap_or(0);
    let shipping_minor = at("shipping")?.unwrap_or(0);
    let itemised = lines - discount_minor + tax_minor + shipping_minor;
    let total_minor = match (at("total")?, at("revenue")?) {
        (Some(total), _) => total,
        (None, Some(revenue)) => (revenue - discount_minor + tax_minor + shipping_minor).max(0),
        (None, None) => itemised.max(0),
    };
    let shipping_address = m
        .properties
        .get("shipping_address")
        .filter(|v| !v.is_null())
        .map(address)
        .transpose()?;
    Ok(OrderRequest {
        order_id,
        items,
        subtotal_minor: lines,
        discount_minor,
        tax_minor,
        shipping_minor,
        total_minor,
        adjustment_minor: total_minor - itemised,
        currency: currency(m),
        shipping_address,
        payment_method: m
            .property_text("payment_method")
            .map_or(PaymentMethod::Other, |t| PaymentMethod::from_text(&t)),
        user_id: m.user_id.clone(),
    })
}

/// An `Order Updated` naming its order; `None` (kept as activity) without
/// an `order_id`.
fn order_update(m: &SegmentMessage) -> Result<Option<OrderUpdate>, Rejection> {
    let Some(order) = first_text(&m.properties, &["order_id"]) else {
        return Ok(None);
    };
    let props = &m.properties;
    let at = |k: &str| amount(props, k, &format!("properties.{k}"));
    let items = product_lines(m)?;
    Ok(Some(OrderUpdate {
        order,
        items: (!items.is_empty()).then_some(items),
        discount_minor: at("discount")?,
        tax_minor: at("tax")?,
        shipping_minor: at("shipping")?,
        total_minor: at("total")?,
        revenue_minor: at("revenue")?,
        currency: m.property_text("currency").map(|c| c.to_uppercase()),
    }))
}

/// A track call kept as it came, a `CustomEvent` of its name and
/// properties: every name not mapped onto a typed event, a call missing
/// what its typed event is about, and what a client source may not do
/// itself (`Order Completed`, `Order Updated`, `Order Refunded`, `Order
/// Cancelled` from a browser's key are recorded as activity, never applied
/// to an order; decision 0042).
pub fn as_custom_event(m: &SegmentMessage, late: bool) -> ActivityEvent {
    ActivityEvent::CustomEvent(CustomEvent {
        event: m.event.clone().unwrap_or_default(),
        properties: Value::Object(m.properties.clone()),
        session_id: session(m),
        utm: utm(m),
        late,
    })
}

/// The CRM's cart id of the first of `names` the call carries.
fn cart_of(m: &SegmentMessage, source: &str, names: &[&str]) -> Option<String> {
    first_text(&m.properties, names).map(|c| derived_id("cart", source, &c))
}

/// Maps a track, page or screen call from `source`; `late` flags an event
/// older than the tolerance. Client ids (`cart_id`, `order_id`...) in
/// activity events become the CRM's ids of that source's carts and orders.
pub fn map(m: &SegmentMessage, source: &str, late: bool) -> Result<Mapped, Rejection> {
    let (session_id, utm) = (session(m), utm(m));
    let custom = || Ok(Mapped::Activity(as_custom_event(m, late)));
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
        Kind::Track => {
            let product = first_text(&m.properties, &["product_id", "sku"]);
            let name = m.property_text("name");
            let category = m.property_text("category");
            match m.event.as_deref().unwrap_or_default() {
                "Products Searched" => {
                    let query = match m.properties.get("query") {
                        Some(Value::String(q)) if !q.trim().is_empty() => q.trim().to_string(),
                        // The spec allows an object (a structured query).
                        Some(q @ Value::Object(o)) if !o.is_empty() => q.to_string(),
                        _ => return custom(),
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
                    let Some(product_id) = product else { return custom() };
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
                    let Some(product_id) = product else { return custom() };
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
                "Product Added" => {
                    let (Some(cart), Some(product_id)) = (m.property_text("cart_id"), product) else {
                        return custom();
                    };
                    return Ok(Mapped::AddToCart {
                        cart,
                        currency: currency(m),
                        item: AddItem {
                            name: name.unwrap_or_else(|| product_id.clone()),
                            product_id,
                            quantity: quantity(m.properties.get("quantity"), "properties.quantity")?,
                            unit_price_minor: amount(&m.properties, "price", "properties.price")?.unwrap_or(0),
                        },
                    });
                }
                "Product Removed" => {
                    let (Some(cart), Some(product_id)) = (m.property_text("cart_id"), product) else {
                        return custom();
                    };
                    return Ok(Mapped::RemoveFromCart { cart, product_id });
                }
                "Cart Viewed" => {
                    let Some(cart_id) = cart_of(m, source, &["cart_id"]) else {
                        return custom();
                    };
                    ActivityEvent::ShoppingCartViewed(ShoppingCartViewed {
                        cart_id,
                        product_ids: listed_product_ids(m),
                        session_id,
                        utm,
                        late,
                    })
                }
                "Checkout Started" => {
                    let Some(cart) = first_text(&m.properties, &["cart_id", "checkout_id", "order_id"]) else {
                        return custom();
                    };
                    let items = product_lines(m)?
                        .into_iter()
                        .map(|i| AddItem {
                            product_id: i.product_id,
                            name: i.name,
                            quantity: i.quantity,
                            unit_price_minor: i.unit_price_minor,
                        })
                        .collect();
                    return Ok(Mapped::Checkout {
                        cart,
                        currency: currency(m),
                        items,
                    });
                }
                event @ ("Checkout Step Viewed" | "Checkout Step Completed" | "Payment Info Entered") => {
                    let Some(cart_id) = cart_of(m, source, &["cart_id", "checkout_id", "order_id"]) else {
                        return custom();
                    };
                    let step = m.property_text("step").unwrap_or_else(|| {
                        if event == "Payment Info Entered" {
                            "payment"
                        } else {
                            "unnumbered"
                        }
                        .to_string()
                    });
                    if event == "Checkout Step Viewed" {
                        ActivityEvent::CheckoutStepViewed(CheckoutStepViewed {
                            cart_id,
                            step,
                            session_id,
                            utm,
                            late,
                        })
                    } else {
                        ActivityEvent::CheckoutStepCompleted(CheckoutStepCompleted {
                            cart_id,
                            step,
                            session_id,
                            utm,
                            late,
                        })
                    }
                }
                "Order Completed" => return Ok(Mapped::Order(Box::new(order(m)?))),
                "Order Updated" => {
                    let Some(update) = order_update(m)? else {
                        return custom();
                    };
                    return Ok(Mapped::AmendOrder(Box::new(update)));
                }
                "Order Cancelled" => {
                    return Ok(Mapped::CancelOrder {
                        order: required(m, &["order_id"])?,
                        reason: m
                            .property_text("reason")
                            .unwrap_or_else(|| "cancelled by the shop (Order Cancelled)".into()),
                    })
                }
                "Order Refunded" => {
                    let order = required(m, &["order_id"])?;
                    let lines = product_lines(m)?;
                    let listed: i64 = lines.iter().map(|i| i64::from(i.quantity) * i.unit_price_minor).sum();
                    let amount_minor = match amount(&m.properties, "total", "properties.total")? {
                        Some(total) => Some(total),
                        None if listed > 0 => Some(listed),
                        None => None,
                    };
                    return Ok(Mapped::RefundOrder(RefundRequest {
                        order,
                        amount_minor,
                        product_ids: lines.into_iter().map(|i| i.product_id).collect(),
                    }));
                }
                event @ ("Coupon Entered" | "Coupon Applied" | "Coupon Denied" | "Coupon Removed") => {
                    let Some(coupon) = first_text(&m.properties, &["coupon_id", "coupon"]) else {
                        return custom();
                    };
                    let change = match event {
                        "Coupon Entered" => CouponChange::Entered,
                        "Coupon Applied" => CouponChange::Applied,
                        "Coupon Denied" => CouponChange::Denied,
                        _ => CouponChange::Removed,
                    };
                    ActivityEvent::CouponChanged(CouponChanged {
                        change,
                        coupon,
                        coupon_name: m.property_text("coupon_name"),
                        cart_id: cart_of(m, source, &["cart_id"]),
                        order_id: first_text(&m.properties, &["order_id"]).map(|o| derived_id("order", source, &o)),
                        discount_minor: amount(&m.properties, "discount", "properties.discount")?,
                        session_id,
                        utm,
                        late,
                    })
                }
                "Product Added to Wishlist" => {
                    let Some(product_id) = product else { return custom() };
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
                    let Some(product_id) = product else { return custom() };
                    ActivityEvent::ProductReviewed(ProductReviewed {
                        product_id,
                        review_id: m.property_text("review_id"),
                        rating: m
                            .property_text("rating")
                            .and_then(|r| r.parse::<f64>().ok())
                            .filter(|r| (0.0..=100.0).contains(r))
                            .map(|r| r.round() as u32),
                        session_id,
                        utm,
                        late,
                    })
                }
                "Signed In" => ActivityEvent::CustomerLoggedIn(CustomerLoggedIn { session_id, utm, late }),
                // Every other name: kept as it came.
                _ => return custom(),
            }
        }
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

    const SOURCE: &str = "shop";

    fn message(body: Value) -> SegmentMessage {
        SegmentMessage::parse(&body, None, crate::testing::test_time()).expect("a message")
    }

    fn track(event: &str, properties: Value) -> SegmentMessage {
        message(json!({ "type": "track", "messageId": "1", "userId": "u", "event": event, "properties": properties }))
    }

    fn mapped(event: &str, properties: Value) -> Mapped {
        map(&track(event, properties), SOURCE, false).expect("mapped")
    }

    fn activity(event: &str, properties: Value) -> ActivityEvent {
        match mapped(event, properties) {
            Mapped::Activity(a) => a,
            other => panic!("{event}: not activity: {other:?}"),
        }
    }

    #[test]
    fn known_names_map_onto_typed_events() {
        let viewed = message(
            json!({ "type": "track", "messageId": "1", "anonymousId": "a", "event": "Product Viewed",
            "properties": { "sku": "lamp-1", "name": "Desk lamp", "price": 40.5 },
            "context": { "campaign": { "source": "news", "name": "winter" } } }),
        );
        let Ok(Mapped::Activity(ActivityEvent::ProductViewed(p))) = map(&viewed, SOURCE, false) else {
            panic!("not a product view");
        };
        assert_eq!((p.product_id.as_str(), p.price_minor), ("lamp-1", Some(4050)));
        assert_eq!(p.utm.as_ref().and_then(|u| u.campaign.as_deref()), Some("winter"));

        assert_eq!(
            mapped(
                "Product Added",
                json!({ "cart_id": "c-9", "product_id": "lamp-1", "name": "Desk lamp", "price": 40, "quantity": 2, "currency": "eur" })
            ),
            Mapped::AddToCart {
                cart: "c-9".into(),
                currency: "EUR".into(),
                item: AddItem {
                    product_id: "lamp-1".into(),
                    name: "Desk lamp".into(),
                    quantity: 2,
                    unit_price_minor: 4000
                }
            }
        );

        let Mapped::Order(o) = mapped(
            "Order Completed",
            json!({ "order_id": "o-1", "tax": 1.5, "currency": "EUR",
                "products": [{ "product_id": "lamp-1", "name": "Desk lamp", "price": 40, "quantity": 2 }] }),
        ) else {
            panic!("not an order")
        };
        assert_eq!((o.subtotal_minor, o.tax_minor, o.total_minor), (8000, 150, 8150));
        assert_eq!(o.adjustment_minor, 0);

        let page = message(
            json!({ "type": "page", "messageId": "4", "anonymousId": "a", "name": "Home",
            "context": { "page": { "url": "https://shop.example/" } } }),
        );
        let Ok(Mapped::Activity(ActivityEvent::PageViewed(p))) = map(&page, SOURCE, true) else {
            panic!("not a page")
        };
        assert_eq!(
            (p.url.as_str(), p.title.as_deref(), p.late),
            ("https://shop.example/", Some("Home"), true)
        );
    }

    /// The spec's Order Completed example: lines 25.00, discount 2.50,
    /// subtotal (after the discount) 22.50, tax 2, shipping 3, total 27.50.
    #[test]
    fn the_spec_order_balances_with_its_discount_and_a_bare_one_with_an_adjustment() {
        let products = json!([
            { "product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "name": "Monopoly: 3rd Edition",
              "price": 19, "quantity": 1, "category": "Games" },
            { "product_id": "505bd76785ebb509fc183733", "sku": "46493-32", "name": "Uno Card Game",
              "price": 3, "quantity": 2, "category": "Games" }
        ]);
        let Mapped::Order(o) = mapped(
            "Order Completed",
            json!({ "checkout_id": "fksdjfsdjfisjf9sdfjsd9f", "order_id": "50314b8e9bcf000000000000",
                "affiliation": "Google Store", "total": 27.50, "subtotal": 22.50, "revenue": 25.00, "shipping": 3,
                "tax": 2, "discount": 2.5, "coupon": "hasbros", "currency": "USD", "products": products }),
        ) else {
            panic!("not an order")
        };
        assert_eq!(o.order_id, "50314b8e9bcf000000000000");
        assert_eq!(
            (
                o.subtotal_minor,
                o.discount_minor,
                o.tax_minor,
                o.shipping_minor,
                o.total_minor,
                o.adjustment_minor
            ),
            (2500, 250, 200, 300, 2750, 0)
        );
        assert_eq!(
            (o.shipping_address.as_ref(), o.payment_method),
            (None, PaymentMethod::Other)
        );
        assert_eq!(o.items[1].category.as_deref(), Some("Games"));

        // Only order_id, total, currency and products: the difference is an adjustment.
        let Mapped::Order(bare) = mapped(
            "Order Completed",
            json!({ "order_id": "o-2", "total": 30, "currency": "usd", "products": products }),
        ) else {
            panic!("not an order")
        };
        assert_eq!(
            (bare.total_minor, bare.adjustment_minor, bare.currency.as_str()),
            (3000, 500, "USD")
        );
        // Only revenue: revenue - discount + tax + shipping.
        let Mapped::Order(revenue) = mapped(
            "Order Completed",
            json!({ "order_id": "o-3", "revenue": 25, "payment_method": "Visa", "products": products }),
        ) else {
            panic!("not an order")
        };
        assert_eq!((revenue.total_minor, revenue.adjustment_minor), (2500, 0));
        assert_eq!(revenue.payment_method, PaymentMethod::CreditCard);
    }

    #[test]
    fn browsing_checkout_coupons_wishlists_and_reviews_are_typed() {
        let ActivityEvent::ProductListViewed(list) = activity(
            "Product List Viewed",
            json!({ "list_id": "hot_deals_1", "category": "Deals", "products": [
                { "product_id": "507f1f77bcf86cd799439011", "name": "Monopoly" }, { "sku": "46493-32" }, { "name": "no id" },
                { "product_id": "not a valid/id" } ] }),
        ) else {
            panic!("list")
        };
        assert_eq!(list.list_id.as_deref(), Some("hot_deals_1"));
        assert_eq!(list.product_ids, vec!["507f1f77bcf86cd799439011", "46493-32"]);

        let ActivityEvent::ProductClicked(clicked) = activity(
            "Product Clicked",
            json!({ "sku": "G-32", "name": "Monopoly: 3rd Edition" }),
        ) else {
            panic!("clicked")
        };
        assert_eq!(clicked.product_id, "G-32");

        let ActivityEvent::ShoppingCartViewed(cart) = activity(
            "Cart Viewed",
            json!({ "cart_id": "d92jd29jd92jd29j92d92jd", "products": [{ "product_id": "p-1" }] }),
        ) else {
            panic!("cart")
        };
        assert_eq!(cart.cart_id, derived_id("cart", SOURCE, "d92jd29jd92jd29j92d92jd"));

        let ActivityEvent::CheckoutStepViewed(step) = activity(
            "Checkout Step Viewed",
            json!({ "checkout_id": "50314b8e9bcf000000000000", "step": 2, "shipping_method": "Fedex" }),
        ) else {
            panic!("step viewed")
        };
        assert_eq!(
            (step.cart_id.as_str(), step.step.as_str()),
            (derived_id("cart", SOURCE, "50314b8e9bcf000000000000").as_str(), "2")
        );
        let ActivityEvent::CheckoutStepCompleted(payment) = activity(
            "Payment Info Entered",
            json!({ "checkout_id": "39f39fj39f3jf93fj9fj39fj3f", "order_id": "dkfsjidfjsdifsdfksdjfkdsfjsdfkdsf" }),
        ) else {
            panic!("payment info")
        };
        assert_eq!(payment.step, "payment");

        let Mapped::Checkout { cart, currency, items } = mapped(
            "Checkout Started",
            json!({ "order_id": "50314b8e9bcf000000000000", "currency": "USD",
                "products": [{ "product_id": "p-1", "name": "Uno", "price": 3, "quantity": 2 }] }),
        ) else {
            panic!("checkout")
        };
        assert_eq!((cart.as_str(), currency.as_str()), ("50314b8e9bcf000000000000", "USD"));
        assert_eq!((items[0].quantity, items[0].unit_price_minor), (2, 300));

        for (event, change) in [
            ("Coupon Entered", CouponChange::Entered),
            ("Coupon Applied", CouponChange::Applied),
            ("Coupon Denied", CouponChange::Denied),
            ("Coupon Removed", CouponChange::Removed),
        ] {
            let ActivityEvent::CouponChanged(c) = activity(
                event,
                json!({ "order_id": "50314b8e9bcf000000000000", "cart_id": "923923929jd29jd92dj9j93fj3",
                    "coupon": "may_deals_2016", "discount": 23.32 }),
            ) else {
                panic!("{event}")
            };
            assert_eq!(
                (c.change, c.coupon.as_str(), c.discount_minor),
                (change, "may_deals_2016", Some(2332))
            );
            assert_eq!(
                c.order_id,
                Some(derived_id("order", SOURCE, "50314b8e9bcf000000000000"))
            );
        }

        let ActivityEvent::ProductWishlisted(w) = activity(
            "Product Added to Wishlist",
            json!({ "wishlist_id": "skdjsidjsdkdj29j", "wishlist_name": "Loved Games", "product_id": "507f1f77bcf86cd799439011" }),
        ) else {
            panic!("wishlist")
        };
        assert_eq!(w.wishlist_id.as_deref(), Some("skdjsidjsdkdj29j"));
        let ActivityEvent::ProductReviewed(r) = activity(
            "Product Reviewed",
            json!({ "product_id": "507f1f77bcf86cd799439011", "review_id": "kdfjrj39fj39jf3",
                "review_body": "I love this product", "rating": "5" }),
        ) else {
            panic!("review")
        };
        assert_eq!((r.rating, r.review_id.as_deref()), (Some(5), Some("kdfjrj39fj39jf3")));

        assert_eq!(
            mapped("Order Cancelled", json!({ "order_id": "o-1", "total": 30 })),
            Mapped::CancelOrder {
                order: "o-1".into(),
                reason: "cancelled by the shop (Order Cancelled)".into()
            }
        );
        assert_eq!(
            mapped(
                "Order Refunded",
                json!({ "order_id": "o-1", "products": [{ "product_id": "p-1", "price": 19, "quantity": 1 }] })
            ),
            Mapped::RefundOrder(RefundRequest {
                order: "o-1".into(),
                amount_minor: Some(1900),
                product_ids: vec!["p-1".into()]
            })
        );
        for event in [
            activity("Product Viewed", json!({ "product_id": "p" })),
            activity("Products Searched", json!({ "query": { "color": "blue" } })),
        ] {
            event.validate().expect("valid");
        }
        assert!(mapped("Order Refunded", json!({ "order_id": "o-1" })).changes_an_order());
        assert_eq!(
            mapped(
                "Order Updated",
                json!({ "order_id": "o-1", "total": 27.5, "tax": 2, "coupon": "x", "currency": "eur",
                    "products": [{ "sku": "p-1", "price": 19, "quantity": 1 }] })
            ),
            Mapped::AmendOrder(Box::new(OrderUpdate {
                order: "o-1".into(),
                items: Some(vec![OrderItem {
                    product_id: "p-1".into(),
                    name: "p-1".into(),
                    category: None,
                    quantity: 1,
                    unit_price_minor: 1900
                }]),
                discount_minor: None,
                tax_minor: Some(200),
                shipping_minor: None,
                total_minor: Some(2750),
                revenue_minor: None,
                currency: Some("EUR".into())
            }))
        );
        assert!(mapped("Order Updated", json!({ "order_id": "o-1" })).changes_an_order());
    }

    #[test]
    fn missing_what_an_event_is_about_keeps_it_as_a_custom_event() {
        for (event, properties) in [
            ("Wishlist Shared", json!({ "list": "xmas" })),
            ("Order Updated", json!({ "total": 27.5 })),
            ("Product Viewed", json!({ "name": "x" })),
            ("Product Clicked", json!({})),
            ("Product Added", json!({ "product_id": "p", "price": 1 })),
            ("Cart Viewed", json!({ "products": [] })),
            ("Checkout Started", json!({ "products": [] })),
            ("Checkout Step Completed", json!({ "step": 2 })),
            ("Coupon Applied", json!({ "discount": 1 })),
            ("Product Reviewed", json!({ "rating": "5" })),
            ("Products Searched", json!({})),
        ] {
            let ActivityEvent::CustomEvent(c) = activity(event, properties.clone()) else {
                panic!("{event}: not custom")
            };
            assert_eq!((c.event.as_str(), &c.properties), (event, &properties));
        }
    }

    #[test]
    fn malformed_values_and_orders_without_an_id_are_refused_naming_the_field() {
        let field = |body: Value| match map(&message(body), SOURCE, false) {
            Err(r) => r.field,
            Ok(m) => panic!("mapped: {m:?}"),
        };
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
            "properties": { "order_id": "o", "products": [{ "name": "no id", "price": 1 }] } })
            ),
            "properties.products[0].product_id"
        );
        assert_eq!(
            field(
                json!({ "type": "track", "messageId": "1", "userId": "u", "event": "Order Completed",
            "properties": { "total": 3, "products": [{ "product_id": "p" }] } })
            ),
            "properties.order_id"
        );
        assert_eq!(
            field(
                json!({ "type": "track", "messageId": "1", "userId": "u", "event": "Order Refunded",
            "properties": { "total": 3 } })
            ),
            "properties.order_id"
        );
        assert_eq!(
            field(json!({ "type": "page", "messageId": "1", "anonymousId": "a" })),
            "properties.url"
        );
    }
}
