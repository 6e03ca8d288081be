//! The order as the write side knows it, and how each event changes it.

use super::commands::PaymentStatus;
use super::events::{is_zero, OrderEvent, OrderItem, PaymentMethod, RefundOrigin, RefundReason, RefundType};
use super::MAX_PAYMENT_ATTEMPTS;
use crate::customer::Address;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrderStatus {
    PendingPayment,
    Confirmed,
    PaymentFailed,
    InTransit,
    Completed,
    Cancelled,
    Refunded,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending-payment",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::PaymentFailed => "payment-failed",
            OrderStatus::InTransit => "in-transit",
            OrderStatus::Completed => "completed",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// Not once shipped, nor twice. The seed's `canBeCancelled` allows
    /// pending payment and confirmed; a failed payment is allowed here too,
    /// which is ours, not the seed's (such an order has nothing to refund).
    pub fn can_be_cancelled(self) -> bool {
        matches!(
            self,
            OrderStatus::PendingPayment | OrderStatus::PaymentFailed | OrderStatus::Confirmed
        )
    }

    /// Paid and not cancelled or fully refunded. Before delivery this is the
    /// seed's `canBeRefunded`; a delivered (completed) order, which the seed
    /// does not refund, is refunded here only as a return with a reason, or
    /// when the shop reports the refund (ours, decision 0071).
    pub fn can_be_refunded(self) -> bool {
        matches!(
            self,
            OrderStatus::Confirmed | OrderStatus::InTransit | OrderStatus::Completed
        )
    }
}

/// The order's current (or last) payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<PaymentMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub status: PaymentStatus,
    /// 1 for the first attempt, then one more per retry.
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

/// A scheduled payment retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRetry {
    pub payment_id: String,
    pub attempt: u32,
    pub retry_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub amount_minor: i64,
    pub reason: RefundReason,
    pub refund_type: RefundType,
    pub requested_at: DateTime<Utc>,
    /// Which rule let it in (decision 0071).
    pub origin: RefundOrigin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_reason: Option<String>,
    /// The provider's transaction, once it confirmed the refund (`RefundCompleted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
}

/// A product of the order the customer reviewed (`ReviewSubmitted`,
/// decision 0073).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub product_id: String,
    pub rating: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
    pub submitted_at: DateTime<Utc>,
}

/// The order as the write side knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    pub cart_id: Option<String>,
    pub status: OrderStatus,
    pub items: Vec<OrderItem>,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub shipping_minor: i64,
    pub total_minor: i64,
    pub currency: String,
    /// `None` for an order reported without one (decision 0052).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_address: Option<Address>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub discount_minor: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub adjustment_minor: i64,
    pub payment: Option<Payment>,
    pub pending_retry: Option<PendingRetry>,
    pub confirmation_number: Option<String>,
    pub estimated_delivery: Option<NaiveDate>,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub shipped_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
    pub refunds: Vec<Refund>,
    pub refunded_minor: i64,
    /// One per reviewed product (decision 0073).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviews: Vec<Review>,
    /// The discount code the order redeemed (decision 0074).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_code: Option<String>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
}

impl Order {
    /// What is left to refund.
    pub fn refundable_minor(&self) -> i64 {
        self.total_minor.saturating_sub(self.refunded_minor)
    }
}

/// The deterministic confirmation number of order `order_id`: `CRM-` and
/// ten characters of the hash of its id.
pub fn confirmation_number(order_id: &str) -> String {
    let digest = hex::encode(Sha256::digest(order_id.as_bytes())).to_ascii_uppercase();
    format!("CRM-{}-{}", &digest[..5], &digest[5..10])
}

/// Folds one event into the state. `at` is when it occurred, `version` its
/// position in the stream.
pub fn evolve(state: Option<Order>, event: &OrderEvent, at: DateTime<Utc>, version: u64) -> Option<Order> {
    if let OrderEvent::OrderPlaced {
        order_id,
        customer_id,
        cart_id,
        items,
        subtotal_minor,
        tax_minor,
        shipping_minor,
        total_minor,
        currency,
        shipping_address,
        billing_address,
        discount_minor,
        adjustment_minor,
    } = event
    {
        return Some(Order {
            id: order_id.clone(),
            customer_id: customer_id.clone(),
            cart_id: cart_id.clone(),
            status: OrderStatus::PendingPayment,
            items: items.clone(),
            subtotal_minor: *subtotal_minor,
            tax_minor: *tax_minor,
            shipping_minor: *shipping_minor,
            total_minor: *total_minor,
            currency: currency.clone(),
            shipping_address: shipping_address.clone(),
            billing_address: billing_address.clone(),
            discount_minor: *discount_minor,
            adjustment_minor: *adjustment_minor,
            payment: None,
            pending_retry: None,
            confirmation_number: None,
            estimated_delivery: None,
            carrier: None,
            tracking_number: None,
            tracking_url: None,
            shipped_at: None,
            delivered_at: None,
            cancelled_at: None,
            cancel_reason: None,
            refunds: Vec::new(),
            reviews: Vec::new(),
            discount_code: None,
            refunded_minor: 0,
            placed_at: at,
            updated_at: at,
            version,
        });
    }
    let mut o = state?;
    o.updated_at = at;
    o.version = version;
    match event {
        OrderEvent::OrderPlaced { .. } => {}
        OrderEvent::PaymentInitiated {
            payment_id,
            method,
            provider,
            ..
        } => {
            // A retry continues its payment's attempts; a new payment starts at 1.
            let attempt = match o.pending_retry.take() {
                Some(r) if &r.payment_id == payment_id => r.attempt,
                _ => 1,
            };
            o.payment = Some(Payment {
                payment_id: payment_id.clone(),
                method: Some(*method),
                provider: Some(provider.clone()),
                status: PaymentStatus::Initiated,
                attempt,
                transaction_id: None,
                error_code: None,
            });
            o.status = OrderStatus::PendingPayment;
        }
        OrderEvent::PaymentSucceeded {
            payment_id,
            transaction_id,
            ..
        } => {
            let previous = o.payment.take().filter(|p| &p.payment_id == payment_id);
            o.payment = Some(Payment {
                payment_id: payment_id.clone(),
                method: previous.as_ref().and_then(|p| p.method),
                provider: previous.as_ref().and_then(|p| p.provider.clone()),
                status: PaymentStatus::Succeeded,
                attempt: previous.as_ref().map_or(1, |p| p.attempt),
                transaction_id: Some(transaction_id.clone()),
                error_code: None,
            });
            o.pending_retry = None;
        }
        OrderEvent::PaymentFailed {
            payment_id,
            error_code,
            retryable,
            attempt,
            ..
        } => {
            let previous = o.payment.take().filter(|p| &p.payment_id == payment_id);
            o.payment = Some(Payment {
                payment_id: payment_id.clone(),
                method: previous.as_ref().and_then(|p| p.method),
                provider: previous.as_ref().and_then(|p| p.provider.clone()),
                status: PaymentStatus::Failed,
                attempt: *attempt,
                transaction_id: None,
                error_code: Some(error_code.clone()),
            });
            if !(*retryable && *attempt < MAX_PAYMENT_ATTEMPTS) {
                o.status = OrderStatus::PaymentFailed;
            }
        }
        OrderEvent::PaymentRetryScheduled {
            payment_id,
            attempt,
            retry_at,
            ..
        } => {
            o.pending_retry = Some(PendingRetry {
                payment_id: payment_id.clone(),
                attempt: *attempt,
                retry_at: *retry_at,
            });
        }
        OrderEvent::OrderConfirmed {
            confirmation_number,
            estimated_delivery,
            ..
        } => {
            o.status = OrderStatus::Confirmed;
            o.confirmation_number = Some(confirmation_number.clone());
            o.estimated_delivery = Some(*estimated_delivery);
        }
        OrderEvent::OrderShipped {
            carrier,
            tracking_number,
            tracking_url,
            shipped_at,
            estimated_delivery,
            ..
        } => {
            o.status = OrderStatus::InTransit;
            o.carrier = Some(carrier.clone());
            o.tracking_number = Some(tracking_number.clone());
            o.tracking_url = tracking_url.clone();
            o.shipped_at = Some(*shipped_at);
            if estimated_delivery.is_some() {
                o.estimated_delivery = *estimated_delivery;
            }
        }
        OrderEvent::OrderDelivered { delivered_at, .. } => {
            o.status = OrderStatus::Completed;
            o.delivered_at = Some(*delivered_at);
        }
        OrderEvent::OrderCancelled {
            reason, cancelled_at, ..
        } => {
            o.status = OrderStatus::Cancelled;
            o.cancel_reason = Some(reason.clone());
            o.cancelled_at = Some(*cancelled_at);
            o.pending_retry = None;
        }
        OrderEvent::RefundRequested {
            refund_id,
            amount_minor,
            reason,
            refund_type,
            origin,
            return_reason,
            ..
        } => {
            o.refunded_minor = o.refunded_minor.saturating_add(*amount_minor);
            o.refunds.push(Refund {
                refund_id: refund_id.clone(),
                amount_minor: *amount_minor,
                reason: *reason,
                refund_type: *refund_type,
                requested_at: at,
                origin: *origin,
                return_reason: return_reason.clone(),
                transaction_id: None,
                completed_at: None,
            });
        }
        // A cancelled order the shop refunds stays cancelled (decision 0071).
        OrderEvent::OrderRefunded { .. } if o.status == OrderStatus::Cancelled => {}
        OrderEvent::OrderRefunded { .. } => o.status = OrderStatus::Refunded,
        OrderEvent::RefundCompleted {
            refund_id,
            transaction_id,
            completed_at,
            ..
        } => {
            if let Some(r) = o.refunds.iter_mut().find(|r| &r.refund_id == refund_id) {
                r.transaction_id = Some(transaction_id.clone());
                r.completed_at = Some(*completed_at);
            }
        }
        OrderEvent::ReviewSubmitted {
            product_id,
            rating,
            review,
            submitted_at,
            ..
        } => o.reviews.push(Review {
            product_id: product_id.clone(),
            rating: *rating,
            review: review.clone(),
            submitted_at: *submitted_at,
        }),
        OrderEvent::DiscountRedeemed { code, .. } => o.discount_code = Some(code.clone()),
        OrderEvent::OrderAmended {
            items,
            subtotal_minor,
            discount_minor,
            tax_minor,
            shipping_minor,
            adjustment_minor,
            total_minor,
            ..
        } => {
            o.items = items.clone();
            o.subtotal_minor = *subtotal_minor;
            o.discount_minor = *discount_minor;
            o.tax_minor = *tax_minor;
            o.shipping_minor = *shipping_minor;
            o.adjustment_minor = *adjustment_minor;
            o.total_minor = *total_minor;
        }
    }
    Some(o)
}
