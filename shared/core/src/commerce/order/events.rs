//! What happened to an order (decision 0012), and the values its events carry.

use crate::customer::Address;
use crate::event::DomainEvent;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    pub product_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub quantity: u32,
    /// The price of one unit in minor units of the order's currency.
    pub unit_price_minor: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PaymentMethod {
    CreditCard,
    Paypal,
    BankTransfer,
    /// A method the reporter did not name, or one without a name here (a
    /// Segment `Order Completed` says the order was paid, not how).
    Other,
}

impl PaymentMethod {
    /// The method a shop's free-text `payment_method` names (`Visa`,
    /// `PayPal`, `SEPA transfer`...); [`PaymentMethod::Other`] otherwise.
    pub fn from_text(text: &str) -> PaymentMethod {
        let t = text.to_ascii_lowercase();
        if t.contains("paypal") {
            PaymentMethod::Paypal
        } else if ["bank", "transfer", "sepa", "wire", "iban"]
            .iter()
            .any(|w| t.contains(w))
        {
            PaymentMethod::BankTransfer
        } else if [
            "card",
            "visa",
            "master",
            "amex",
            "american express",
            "maestro",
            "discover",
        ]
        .iter()
        .any(|w| t.contains(w))
        {
            PaymentMethod::CreditCard
        } else {
            PaymentMethod::Other
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RefundReason {
    CustomerRequest,
    QualityIssue,
    DeliveryFailed,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RefundType {
    /// Everything not yet refunded.
    Full,
    /// `amount_minor` of it.
    Partial,
}

/// What a refund is (decision 0071): which rule let it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RefundOrigin {
    /// Requested through the API before delivery (the seed's `canBeRefunded`).
    Request,
    /// Requested through the API after delivery: the refund of a return,
    /// with the return's reason.
    Return,
    /// Reported by the shop (Segment `Order Refunded`): a fact, recorded
    /// whatever the order's delivery state.
    Shop,
}

/// An optional stored address that may read as `[erased]`.
fn optional_address_or_erased<'de, D>(deserializer: D) -> Result<Option<Address>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    crate::customer::address_or_erased(deserializer).map(Some)
}

pub(super) fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// What happened to an order (decision 0012). Every envelope carries the customer id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
#[allow(clippy::large_enum_variant)] // an order is placed once; boxing would only obscure the contract
pub enum OrderEvent {
    OrderPlaced {
        order_id: String,
        customer_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cart_id: Option<String>,
        items: Vec<OrderItem>,
        subtotal_minor: i64,
        tax_minor: i64,
        shipping_minor: i64,
        total_minor: i64,
        currency: String,
        /// Absent for an order without one (decision 0052).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "optional_address_or_erased"
        )]
        shipping_address: Option<Address>,
        /// The shipping address unless given; absent when neither is.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "optional_address_or_erased"
        )]
        billing_address: Option<Address>,
        /// The order-level discount; `total_minor` is `subtotal_minor -
        /// discount_minor + tax_minor + shipping_minor + adjustment_minor`.
        #[serde(default, skip_serializing_if = "is_zero")]
        discount_minor: i64,
        /// What a shop's reported total holds beyond its itemised parts (signed).
        #[serde(default, skip_serializing_if = "is_zero")]
        adjustment_minor: i64,
    },
    PaymentInitiated {
        order_id: String,
        payment_id: String,
        method: PaymentMethod,
        amount_minor: i64,
        currency: String,
        provider: String,
    },
    PaymentSucceeded {
        order_id: String,
        payment_id: String,
        amount_minor: i64,
        currency: String,
        transaction_id: String,
    },
    PaymentFailed {
        order_id: String,
        payment_id: String,
        amount_minor: i64,
        currency: String,
        error_code: String,
        error_message: String,
        retryable: bool,
        attempt: u32,
    },
    PaymentRetryScheduled {
        order_id: String,
        payment_id: String,
        /// The next attempt.
        attempt: u32,
        retry_at: DateTime<Utc>,
    },
    OrderConfirmed {
        order_id: String,
        confirmation_number: String,
        estimated_delivery: NaiveDate,
        items: Vec<OrderItem>,
        total_minor: i64,
        currency: String,
    },
    OrderShipped {
        order_id: String,
        carrier: String,
        tracking_number: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tracking_url: Option<String>,
        shipped_at: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        estimated_delivery: Option<NaiveDate>,
    },
    OrderDelivered {
        order_id: String,
        delivered_at: DateTime<Utc>,
        items: Vec<OrderItem>,
        total_minor: i64,
        currency: String,
    },
    OrderCancelled {
        order_id: String,
        reason: String,
        cancelled_at: DateTime<Utc>,
    },
    RefundRequested {
        order_id: String,
        refund_id: String,
        amount_minor: i64,
        currency: String,
        reason: RefundReason,
        refund_type: RefundType,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        items: Option<Vec<String>>,
        /// Schema version 2 (decision 0071): which rule let the refund in.
        origin: RefundOrigin,
        /// The return's reason, in the customer's or the shop's words: only
        /// for [`RefundOrigin::Return`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        return_reason: Option<String>,
    },
    /// The refunds reached the order total: the order is refunded (what
    /// was decided, not yet what the provider did; see `RefundCompleted`).
    OrderRefunded {
        order_id: String,
        refunded_total_minor: i64,
        currency: String,
    },
    /// The payment provider confirmed that refund `refund_id` was paid out
    /// (seed 000's `RefundCompleted`, decision 0071), with its transaction
    /// id. Once per refund; it changes no amount (the refund counted when
    /// it was requested).
    RefundCompleted {
        order_id: String,
        refund_id: String,
        amount_minor: i64,
        currency: String,
        transaction_id: String,
        completed_at: DateTime<Utc>,
    },
    /// The customer reviewed product `product_id` of the delivered order
    /// (seed 000's `ReviewSubmitted`, decision 0073): once per product.
    ReviewSubmitted {
        order_id: String,
        product_id: String,
        /// 1 to 5.
        rating: u8,
        /// The customer's words: personal data.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        review: Option<String>,
        submitted_at: DateTime<Utc>,
    },
    /// The order redeemed a discount code (decision 0074), in the same
    /// append as its `OrderPlaced`: the code is used, and the campaign that
    /// issued it gets the order's credit.
    DiscountRedeemed {
        code: String,
        order_id: String,
        customer_id: String,
        percent: u8,
        /// The order's discount: the code's percent of the subtotal on the
        /// API's `POST /orders`, what the shop reported for a shop's order.
        discount_minor: i64,
        campaign_id: String,
        campaign_version: u64,
        message_id: String,
    },
    /// The order's lines and amounts changed (a shop's `Order Updated`,
    /// decision 0055): all of them as they are now. `total_minor` is
    /// `subtotal_minor - discount_minor + tax_minor + shipping_minor +
    /// adjustment_minor`, in the order's currency.
    OrderAmended {
        order_id: String,
        items: Vec<OrderItem>,
        subtotal_minor: i64,
        #[serde(default, skip_serializing_if = "is_zero")]
        discount_minor: i64,
        tax_minor: i64,
        shipping_minor: i64,
        #[serde(default, skip_serializing_if = "is_zero")]
        adjustment_minor: i64,
        total_minor: i64,
        currency: String,
        /// The total before: a paid order's value changes by `total_minor -
        /// previous_total_minor`.
        previous_total_minor: i64,
        /// Whether the order was paid when amended: the shop settles the
        /// difference, so what it is worth (lifetime value, revenue) and
        /// what may be refunded follow the new total.
        paid: bool,
    },
}

impl DomainEvent for OrderEvent {
    fn schema_version(event_type: &str) -> u32 {
        match event_type {
            "RefundRequested" => 2,
            _ => 1,
        }
    }

    fn upcasters() -> &'static [crate::event::Upcaster] {
        super::past_versions::ORDER_UPCASTERS
    }
}

impl OrderEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::OrderPlaced { .. } => "OrderPlaced",
            OrderEvent::PaymentInitiated { .. } => "PaymentInitiated",
            OrderEvent::PaymentSucceeded { .. } => "PaymentSucceeded",
            OrderEvent::PaymentFailed { .. } => "PaymentFailed",
            OrderEvent::PaymentRetryScheduled { .. } => "PaymentRetryScheduled",
            OrderEvent::OrderConfirmed { .. } => "OrderConfirmed",
            OrderEvent::OrderShipped { .. } => "OrderShipped",
            OrderEvent::OrderDelivered { .. } => "OrderDelivered",
            OrderEvent::OrderCancelled { .. } => "OrderCancelled",
            OrderEvent::RefundRequested { .. } => "RefundRequested",
            OrderEvent::OrderRefunded { .. } => "OrderRefunded",
            OrderEvent::RefundCompleted { .. } => "RefundCompleted",
            OrderEvent::OrderAmended { .. } => "OrderAmended",
            OrderEvent::ReviewSubmitted { .. } => "ReviewSubmitted",
            OrderEvent::DiscountRedeemed { .. } => "DiscountRedeemed",
        }
    }
}
