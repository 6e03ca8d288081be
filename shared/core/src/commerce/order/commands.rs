//! What an order can be asked to do: the API's bodies and the commands
//! the order service and ingestion send.

use super::events::PaymentMethod;
use super::events::{OrderItem, RefundReason, RefundType};
use crate::customer::Address;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// `POST /orders`: from a cart (`cart_id`; the service fills in its items and
/// currency) or from `items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub customer_id: String,
    #[serde(default)]
    pub cart_id: Option<String>,
    #[serde(default)]
    pub items: Option<Vec<OrderItem>>,
    /// The sum of the lines; checked when given.
    #[serde(default)]
    pub subtotal_minor: Option<i64>,
    pub tax_minor: i64,
    pub shipping_minor: i64,
    /// Must be subtotal + tax + shipping.
    pub total_minor: i64,
    /// ISO 4217; from a cart, the cart's (checked when given).
    #[serde(default)]
    pub currency: Option<String>,
    /// Required of the API's `POST /orders`; an order reported by a shop
    /// (Segment's `Order Completed`) may have none (digital goods, or an
    /// address the shop keeps): `None`.
    #[serde(deserialize_with = "required_address")]
    pub shipping_address: Option<Address>,
    /// The shipping address when absent.
    #[serde(default)]
    pub billing_address: Option<Address>,
    /// The order-level discount (coupons) taken off the lines, in minor
    /// units; not taken by the API's `POST /orders`.
    #[serde(skip)]
    pub discount_minor: i64,
    /// What the reported total holds beyond lines − discount + tax +
    /// shipping (fees, rounding, or tax and shipping a shop did not
    /// itemise), signed; not taken by the API's `POST /orders`.
    #[serde(skip)]
    pub adjustment_minor: i64,
    /// A discount code to redeem (decision 0074). On the API's `POST
    /// /orders` it takes its percent off the subtotal (`discount_minor`).
    #[serde(default)]
    pub discount_code: Option<String>,
    /// The discount of `discount_code`, as the service found it.
    #[serde(skip)]
    pub discount: Option<crate::commerce::discount::Discount>,
}

/// `shipping_address` of the API's body: required (absent is refused), read as `Some`.
fn required_address<'de, D>(deserializer: D) -> Result<Option<Address>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Address::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PaymentStatus {
    Initiated,
    Succeeded,
    Failed,
}

/// `POST /orders/{id}/payments`: what the payment provider reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordPayment {
    pub payment_id: String,
    pub status: PaymentStatus,
    pub method: PaymentMethod,
    pub amount_minor: i64,
    pub currency: String,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub transaction_id: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub retryable: Option<bool>,
}

/// `POST /orders/{id}/ship`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipOrder {
    pub carrier: String,
    pub tracking_number: String,
    #[serde(default)]
    pub tracking_url: Option<String>,
    #[serde(default)]
    pub estimated_delivery: Option<NaiveDate>,
}

/// `POST /orders/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    pub reason: String,
}

/// `POST /orders/{id}/refunds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRefund {
    pub refund_type: RefundType,
    /// Required for a partial refund; for a full one, what is left (checked when given).
    #[serde(default)]
    pub amount_minor: Option<i64>,
    pub reason: RefundReason,
    /// The refunded products, when the refund is about some of them.
    #[serde(default)]
    pub items: Option<Vec<String>>,
    /// The return this refund pays back: required once the order was
    /// delivered, refused before (decision 0071).
    #[serde(default, rename = "return")]
    pub return_: Option<ReturnRequest>,
}

/// `return` of a refund request: the goods come back, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnRequest {
    pub reason: String,
}

/// `POST /orders/{id}/refunds/{refund_id}/complete`: the payment provider's
/// confirmation of a refund (decision 0071).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteRefund {
    pub transaction_id: String,
}

/// `POST /orders/{id}/reviews`: the customer's review of a product of a
/// delivered order (seed 000's `ReviewSubmitted`, decision 0073).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitReview {
    pub product_id: String,
    /// 1 to 5.
    pub rating: i64,
    /// The customer's words (personal data).
    #[serde(default)]
    pub review: Option<String>,
}

/// Everything an order can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    Place(Box<PlaceOrder>),
    /// An order placed and paid at once, in one write: what a shop reports
    /// with Segment's `Order Completed` (the customer completed it; the
    /// payment is the shop's). `payment` must be a succeeded payment of
    /// the order's total.
    PlacePaid {
        order: Box<PlaceOrder>,
        payment: RecordPayment,
    },
    RecordPayment(RecordPayment),
    /// The payment retry timer fired for `attempt` of `payment_id`.
    RetryPayment {
        payment_id: String,
        attempt: u32,
    },
    Ship(ShipOrder),
    Deliver,
    Cancel(CancelOrder),
    /// `refund_id` is the id the refund gets.
    Refund {
        refund_id: String,
        request: RequestRefund,
    },
    /// A refund the shop reports (Segment `Order Refunded`): a fact,
    /// recorded whatever the order's delivery state (decision 0071).
    /// `request.return_` is not used.
    RecordReportedRefund {
        refund_id: String,
        request: RequestRefund,
    },
    /// The provider paid refund `refund_id` out.
    CompleteRefund {
        refund_id: String,
        completion: CompleteRefund,
    },
    /// The order's lines and amounts as they are now (a shop's `Order
    /// Updated`, decision 0055).
    Amend(AmendOrder),
    /// The customer reviewed a product of the delivered order (decision 0073).
    SubmitReview(SubmitReview),
}

/// The order-level amounts besides the lines, in minor units: `total =
/// lines - discount + tax + shipping + adjustment`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub discount_minor: i64,
    pub tax_minor: i64,
    pub shipping_minor: i64,
    /// What a reported total holds beyond its itemised parts (signed).
    pub adjustment_minor: i64,
}

/// An order's amendment: all of its lines and amounts as they are now
/// (not a difference). Not taken by the API: a shop reports it through
/// Segment's `Order Updated` (decision 0055).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmendOrder {
    pub items: Vec<OrderItem>,
    /// The sum of the lines; checked when given.
    pub subtotal_minor: Option<i64>,
    pub amounts: Amounts,
    /// Must be subtotal - discount + tax + shipping + adjustment.
    pub total_minor: i64,
    /// Must be the order's (an amendment does not change the currency).
    pub currency: String,
}
