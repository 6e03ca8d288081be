//! The order aggregate (docs/decisions/0012-commerce-events.md): a state
//! machine from `pending-payment` through `confirmed`, `in-transit` and
//! `completed`, with failed payments, payment retries, cancellation and
//! refunds. `decide` and `evolve` are pure.
//!
//! There is no real payment provider: the provider (or whoever speaks for
//! it) reports through `POST /orders/{id}/payments`. A retryable failure
//! schedules a retry; when the retry timer fires the payment is initiated
//! again (`PaymentInitiated`, the same payment id, attempt n) and its outcome
//! comes, as the first one did, from the provider's callback.
//!
//! The folder has the shape of every business area: [`commands`] (what an
//! order can be asked to do), [`events`] (what happened to it), [`state`]
//! (the order as the write side knows it, and `evolve`), [`decide`] (the
//! rules), [`service`] (the command loop and the payment retry timer).

mod commands;
mod decide;
mod events;
mod past_versions;
mod service;
mod state;
#[cfg(test)]
mod tests;

pub use commands::{
    AmendOrder, Amounts, CancelOrder, CompleteRefund, OrderCommand, PaymentStatus, PlaceOrder, RecordPayment,
    RequestRefund, ReturnRequest, ShipOrder, SubmitReview,
};
pub use decide::{decide, OrderAggregate};
pub use events::{OrderEvent, OrderItem, PaymentMethod, RefundOrigin, RefundReason, RefundType};
pub use past_versions::{refund_requested_v1_to_v2, RefundRequestedV1, ORDER_UPCASTERS};
pub use service::{payment_retry_timer_name, OrderCommandError, OrderService, RetryOutcome};
pub use state::{confirmation_number, evolve, Order, OrderStatus, Payment, PendingRetry, Refund, Review};

/// The stream of order `id`.
pub fn stream_id(order_id: &str) -> String {
    format!("order-{order_id}")
}

/// The order id of an `order-<id>` stream.
pub fn order_id_of(stream_id: &str) -> Option<&str> {
    stream_id.strip_prefix("order-").filter(|id| !id.is_empty())
}

/// The reservation an order from a cart holds, so a cart is ordered once.
pub fn cart_reservation_key(cart_id: &str) -> String {
    format!("cart-order#{cart_id}")
}

/// Most attempts of one payment (the first and its retries).
pub const MAX_PAYMENT_ATTEMPTS: u32 = 3;
/// How long after a retryable failure the payment is tried again.
pub const PAYMENT_RETRY_BACKOFF_SECONDS: i64 = 300;
/// The estimated delivery of a confirmed order: this many days after confirmation.
pub const ESTIMATED_DELIVERY_DAYS: i64 = 5;
/// Most lines in one order.
pub const MAX_ITEMS: usize = 100;
/// Most units of one line.
pub const MAX_QUANTITY: u32 = 10_000;

/// Why an order command was refused, as an HTTP-free kind of refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// The input is not acceptable (422), naming the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such order (404).
    #[error("order not found")]
    NotFound,
    /// The command is valid but the order's state forbids it (409).
    #[error("{message}")]
    Conflict { field: Option<String>, message: String },
}

impl OrderError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        OrderError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        OrderError::Conflict {
            field: None,
            message: message.into(),
        }
    }
    pub fn conflict_on(field: &str, message: impl Into<String>) -> Self {
        OrderError::Conflict {
            field: Some(field.to_string()),
            message: message.into(),
        }
    }
}
