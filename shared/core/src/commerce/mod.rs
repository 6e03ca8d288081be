//! Commerce: the cart (and, later, orders, payments and refunds). A cart left
//! untouched for the inactivity period is abandoned by its timer
//! (ARCHITECTURE.md §7, docs/decisions/0008-cart-inactivity.md).

pub mod cart;
mod service;

pub use cart::{
    cart_id_of, decide, evolve, fold, stream_id, AddItem, Cart, CartCommand, CartError, CartEvent, CartItem,
    CartStatus, CreateCart, RemoveItem,
};
pub use service::{
    inactivity_timer_name, CartCommandError, CartExecuted, CartResponseBuilder, CartService, TimerOutcome,
    DEFAULT_INACTIVITY_MINUTES,
};

#[cfg(test)]
mod tests;
