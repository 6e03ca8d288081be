//! Commerce: the cart, and orders with their payments and refunds
//! (docs/decisions/0012-commerce-events.md). A cart left
//! untouched for the inactivity period is abandoned by its timer
//! (ARCHITECTURE.md §7, docs/decisions/0008-cart-inactivity.md).

pub mod cart;
pub mod discount;
pub mod order;
mod service;

pub use cart::{
    cart_id_of, decide, evolve, fold, stream_id, AddItem, Cart, CartAggregate, CartCommand, CartError, CartEvent,
    CartItem, CartStatus, CreateCart, RemoveItem, ReportCheckout,
};
pub use order::{
    payment_retry_timer_name, CancelOrder, Order, OrderAggregate, OrderCommand, OrderCommandError, OrderError,
    OrderEvent, OrderItem, OrderService, OrderStatus, PaymentMethod, PaymentStatus, PlaceOrder, RecordPayment,
    RefundReason, RefundType, RequestRefund, RetryOutcome, ShipOrder,
};
pub use order::{CompleteRefund, RefundOrigin, ReturnRequest, Review, SubmitReview};
pub use service::{
    inactivity_timer_name, CartCommandError, CartExecuted, CartResponseBuilder, CartService, TimerOutcome,
    DEFAULT_CHECKOUT_MINUTES, DEFAULT_INACTIVITY_MINUTES,
};

#[cfg(test)]
mod tests;
