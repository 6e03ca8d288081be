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
//!
//! One file per concern: [`pages`] (page and screen calls), [`browsing`],
//! [`cart`] (the cart, its checkout and coupons) and [`orders`]; [`read`]
//! reads the spec's properties.

mod browsing;
mod cart;
mod orders;
mod pages;
mod read;
#[cfg(test)]
mod tests;

use super::message::{Kind, Rejection, SegmentMessage};
use crate::commerce::{AddItem, OrderItem, PaymentMethod};
use crate::customer::activity::{ActivityEvent, CustomEvent};
use crate::customer::Address;
use read::{session, utm};
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
    /// `Product Reviewed` naming its `order_id`: the review of a product of
    /// that order (`ReviewSubmitted`, decision 0073).
    ReviewOrder(Box<OrderReview>),
}

/// A `Product Reviewed` with an `order_id`, read. `activity` is what the
/// call is without its order (`ProductReviewed`): what a browser's key
/// records, and what is kept when the order cannot take the review (it is
/// not delivered or does not hold the product).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderReview {
    pub order: String,
    pub product_id: String,
    /// As sent; the order takes 1 to 5.
    pub rating: i64,
    /// `review_body`.
    pub review: Option<String>,
    pub activity: ActivityEvent,
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
            Mapped::Order(_)
                | Mapped::AmendOrder(_)
                | Mapped::CancelOrder { .. }
                | Mapped::RefundOrder(_)
                | Mapped::ReviewOrder(_)
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
    /// `coupon`: redeemed when it is one of our discount codes (decision 0074).
    pub coupon: Option<String>,
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

/// One track call being mapped: the message, its source (whose ids the
/// client's cart and order ids become) and whether it is late.
struct Call<'a> {
    m: &'a SegmentMessage,
    source: &'a str,
    late: bool,
}

impl Call<'_> {
    /// The call kept as it came ([`as_custom_event`]).
    fn custom(&self) -> Result<Mapped, Rejection> {
        Ok(Mapped::Activity(as_custom_event(self.m, self.late)))
    }
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

/// Maps a track, page or screen call from `source`; `late` flags an event
/// older than the tolerance. Client ids (`cart_id`, `order_id`...) in
/// activity events become the CRM's ids of that source's carts and orders.
pub fn map(m: &SegmentMessage, source: &str, late: bool) -> Result<Mapped, Rejection> {
    match m.kind {
        Kind::Page => pages::page(m, late),
        Kind::Screen => Ok(pages::screen(m, late)),
        Kind::Track => {
            let call = Call { m, source, late };
            let event = m.event.as_deref().unwrap_or_default();
            if browsing::NAMES.contains(&event) {
                browsing::track(&call, event)
            } else if cart::NAMES.contains(&event) {
                cart::track(&call, event)
            } else if orders::NAMES.contains(&event) {
                orders::track(&call, event)
            } else {
                // Every other name: kept as it came.
                call.custom()
            }
        }
        Kind::Identify | Kind::Alias => Err(Rejection::new("type", "identify and alias are not activity")),
    }
}
