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

use crate::aggregate::{Aggregate, DecideContext};
use crate::customer::Address;
use crate::event::DomainEvent;
use crate::ports::ReservationChange;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

    /// The seed's can-be-cancelled rule: not once shipped, nor twice.
    pub fn can_be_cancelled(self) -> bool {
        matches!(
            self,
            OrderStatus::PendingPayment | OrderStatus::PaymentFailed | OrderStatus::Confirmed
        )
    }

    /// The seed's can-be-refunded rule: paid and not cancelled or fully refunded.
    pub fn can_be_refunded(self) -> bool {
        matches!(
            self,
            OrderStatus::Confirmed | OrderStatus::InTransit | OrderStatus::Completed
        )
    }
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
}

/// `shipping_address` of the API's body: required (absent is refused), read as `Some`.
fn required_address<'de, D>(deserializer: D) -> Result<Option<Address>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Address::deserialize(deserializer).map(Some)
}

/// An optional stored address that may read as `[erased]`.
fn optional_address_or_erased<'de, D>(deserializer: D) -> Result<Option<Address>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    crate::customer::address_or_erased(deserializer).map(Some)
}

fn is_zero(v: &i64) -> bool {
    *v == 0
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
    },
    OrderRefunded {
        order_id: String,
        refunded_total_minor: i64,
        currency: String,
    },
}

impl DomainEvent for OrderEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
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
        }
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

/// The order aggregate for [`crate::aggregate::AggregateService`].
pub struct OrderAggregate;

impl Aggregate for OrderAggregate {
    type State = Order;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Input = ();

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }
    fn customer_id(state: &Order) -> Option<&str> {
        Some(&state.customer_id)
    }
    fn version(state: &Order) -> u64 {
        state.version
    }
    fn not_found() -> OrderError {
        OrderError::NotFound
    }
    fn decide(
        state: Option<&Order>,
        command: &OrderCommand,
        ctx: &DecideContext<'_, ()>,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        decide(state, command, ctx.id, ctx.now)
    }
    fn evolve(state: Option<Order>, event: &OrderEvent, at: DateTime<Utc>, version: u64) -> Option<Order> {
        evolve(state, event, at, version)
    }
    fn reservations(id: &str, _state: Option<&Order>, events: &[OrderEvent]) -> Vec<ReservationChange> {
        events
            .iter()
            .filter_map(|e| match e {
                OrderEvent::OrderPlaced {
                    cart_id: Some(cart_id), ..
                } => Some(ReservationChange::Claim {
                    key: cart_reservation_key(cart_id),
                    owner: stream_id(id),
                }),
                _ => None,
            })
            .collect()
    }
}

/// Decides which events a command produces at `now`, or why it is refused.
/// `order_id` is the id a new order gets (used by `Place` only).
pub fn decide(
    state: Option<&Order>,
    command: &OrderCommand,
    order_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    match (state, command) {
        (Some(_), OrderCommand::Place(_)) => Err(OrderError::conflict("the order already exists")),
        (None, OrderCommand::Place(cmd)) => place(cmd, order_id),
        (Some(_), OrderCommand::PlacePaid { .. }) => Err(OrderError::conflict("the order already exists")),
        (None, OrderCommand::PlacePaid { order, payment }) => {
            if payment.status != PaymentStatus::Succeeded {
                return Err(OrderError::invalid("status", "must be a succeeded payment"));
            }
            let mut events = place(order, order_id)?;
            let placed = events
                .iter()
                .fold(None, |state, e| evolve(state, e, now, 1))
                .ok_or(OrderError::NotFound)?;
            events.extend(succeed(&placed, payment, now)?);
            Ok(events)
        }
        (None, _) => Err(OrderError::NotFound),
        (Some(o), OrderCommand::RecordPayment(p)) => match p.status {
            PaymentStatus::Initiated => initiate(o, p),
            PaymentStatus::Succeeded => succeed(o, p, now),
            PaymentStatus::Failed => fail(o, p, now),
        },
        (Some(o), OrderCommand::RetryPayment { payment_id, attempt }) => retry(o, payment_id, *attempt),
        (Some(o), OrderCommand::Ship(cmd)) => ship(o, cmd, now),
        (Some(o), OrderCommand::Deliver) => deliver(o, now),
        (Some(o), OrderCommand::Cancel(cmd)) => cancel(o, cmd, now),
        (Some(o), OrderCommand::Refund { refund_id, request }) => refund(o, refund_id, request),
    }
}

fn is_currency(c: &str) -> bool {
    c.len() == 3 && c.chars().all(|c| c.is_ascii_uppercase())
}

fn text(field: &str, raw: &str, max: usize) -> Result<String, OrderError> {
    let v = raw.trim();
    if v.is_empty() {
        return Err(OrderError::invalid(field, "is required"));
    }
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(OrderError::invalid(
            field,
            format!("must be at most {max} characters without control characters"),
        ));
    }
    Ok(v.to_string())
}

fn optional_text(field: &str, raw: &Option<String>, max: usize) -> Result<Option<String>, OrderError> {
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => text(field, v, max).map(Some),
    }
}

fn address(field: &str, a: &Address) -> Result<Address, OrderError> {
    let country = a.country.trim().to_ascii_uppercase();
    if country.len() != 2 || !country.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(OrderError::invalid(
            format!("{field}.country"),
            "is not an ISO 3166-1 alpha-2 country code such as DE",
        ));
    }
    Ok(Address {
        line1: text(&format!("{field}.line1"), &a.line1, 200)?,
        line2: optional_text(&format!("{field}.line2"), &a.line2, 200)?,
        city: text(&format!("{field}.city"), &a.city, 200)?,
        region: optional_text(&format!("{field}.region"), &a.region, 200)?,
        postal_code: text(&format!("{field}.postal_code"), &a.postal_code, 20)?,
        country,
    })
}

fn place(cmd: &PlaceOrder, order_id: &str) -> Result<Vec<OrderEvent>, OrderError> {
    let customer_id = cmd.customer_id.trim();
    if customer_id.is_empty() {
        return Err(OrderError::invalid("customer_id", "is required"));
    }
    let Some(items) = &cmd.items else {
        return Err(OrderError::invalid("items", "give either cart_id or items"));
    };
    if items.is_empty() {
        return Err(OrderError::invalid("items", "an order needs at least one item"));
    }
    if items.len() > MAX_ITEMS {
        return Err(OrderError::invalid(
            "items",
            format!("an order holds at most {MAX_ITEMS} lines"),
        ));
    }
    let currency = cmd.currency.as_deref().unwrap_or("").trim();
    if !is_currency(currency) {
        return Err(OrderError::invalid(
            "currency",
            "is not an ISO 4217 currency code of three uppercase letters such as EUR",
        ));
    }
    let mut lines = Vec::with_capacity(items.len());
    let mut subtotal: i64 = 0;
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| format!("items[{i}].{name}");
        if !super::cart::valid_product_id(&item.product_id) {
            return Err(OrderError::invalid(
                field("product_id"),
                "must be 1 to 64 letters, digits or . _ : -",
            ));
        }
        if item.quantity < 1 || item.quantity > MAX_QUANTITY {
            return Err(OrderError::invalid(
                field("quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            ));
        }
        if item.unit_price_minor < 0 {
            return Err(OrderError::invalid(field("unit_price_minor"), "must not be negative"));
        }
        subtotal = item
            .unit_price_minor
            .checked_mul(i64::from(item.quantity))
            .and_then(|line| subtotal.checked_add(line))
            .ok_or_else(|| OrderError::invalid(field("unit_price_minor"), "the order's total would be too large"))?;
        lines.push(OrderItem {
            product_id: item.product_id.clone(),
            name: text(&field("name"), &item.name, 200)?,
            category: optional_text(&field("category"), &item.category, 100)?,
            quantity: item.quantity,
            unit_price_minor: item.unit_price_minor,
        });
    }
    if let Some(given) = cmd.subtotal_minor {
        if given != subtotal {
            return Err(OrderError::invalid(
                "subtotal_minor",
                format!("must be the sum of the lines ({subtotal})"),
            ));
        }
    }
    for (field, v) in [
        ("tax_minor", cmd.tax_minor),
        ("shipping_minor", cmd.shipping_minor),
        ("discount_minor", cmd.discount_minor),
    ] {
        if v < 0 {
            return Err(OrderError::invalid(field, "must not be negative"));
        }
    }
    let total = subtotal
        .checked_sub(cmd.discount_minor)
        .and_then(|t| t.checked_add(cmd.tax_minor))
        .and_then(|t| t.checked_add(cmd.shipping_minor))
        .and_then(|t| t.checked_add(cmd.adjustment_minor))
        .ok_or_else(|| OrderError::invalid("total_minor", "is too large"))?;
    if cmd.total_minor != total {
        let formula = if cmd.discount_minor == 0 && cmd.adjustment_minor == 0 {
            "subtotal_minor + tax_minor + shipping_minor"
        } else {
            "subtotal_minor - discount_minor + tax_minor + shipping_minor + adjustment_minor"
        };
        return Err(OrderError::invalid(
            "total_minor",
            format!("must equal {formula} ({total})"),
        ));
    }
    if total < 0 {
        return Err(OrderError::invalid("total_minor", "must not be negative"));
    }
    let shipping_address = cmd
        .shipping_address
        .as_ref()
        .map(|a| address("shipping_address", a))
        .transpose()?;
    let billing_address = match &cmd.billing_address {
        Some(a) => Some(address("billing_address", a)?),
        None => shipping_address.clone(),
    };
    Ok(vec![OrderEvent::OrderPlaced {
        order_id: order_id.to_string(),
        customer_id: customer_id.to_string(),
        cart_id: cmd.cart_id.clone(),
        items: lines,
        subtotal_minor: subtotal,
        tax_minor: cmd.tax_minor,
        shipping_minor: cmd.shipping_minor,
        total_minor: total,
        currency: currency.to_string(),
        shipping_address,
        billing_address,
        discount_minor: cmd.discount_minor,
        adjustment_minor: cmd.adjustment_minor,
    }])
}

/// The reason an order in `status` is not awaiting a payment.
fn not_payable(status: OrderStatus) -> OrderError {
    OrderError::conflict(match status {
        OrderStatus::Confirmed | OrderStatus::InTransit | OrderStatus::Completed => {
            format!("the order is {}: it is already paid", status.as_str())
        }
        OrderStatus::Cancelled => "the order is cancelled: it takes no payment".to_string(),
        OrderStatus::Refunded => "the order is refunded: it takes no payment".to_string(),
        OrderStatus::PendingPayment | OrderStatus::PaymentFailed => "the order awaits a payment".to_string(),
    })
}

fn check_amount(o: &Order, p: &RecordPayment) -> Result<(String, String), OrderError> {
    let payment_id = text("payment_id", &p.payment_id, 128)?;
    if p.currency != o.currency {
        return Err(OrderError::invalid(
            "currency",
            format!("must be the order's currency {}", o.currency),
        ));
    }
    if p.amount_minor != o.total_minor {
        return Err(OrderError::invalid(
            "amount_minor",
            format!("must be the order total {}", o.total_minor),
        ));
    }
    let provider = optional_text("provider", &p.provider, 100)?.unwrap_or_else(|| "unspecified".to_string());
    Ok((payment_id, provider))
}

fn retry_pending(o: &Order) -> Result<(), OrderError> {
    match &o.pending_retry {
        Some(r) => Err(OrderError::conflict(format!(
            "payment {} is scheduled to be retried (attempt {}) at {}",
            r.payment_id,
            r.attempt,
            r.retry_at.to_rfc3339()
        ))),
        None => Ok(()),
    }
}

fn initiate(o: &Order, p: &RecordPayment) -> Result<Vec<OrderEvent>, OrderError> {
    if !matches!(o.status, OrderStatus::PendingPayment | OrderStatus::PaymentFailed) {
        return Err(not_payable(o.status));
    }
    retry_pending(o)?;
    let (payment_id, provider) = check_amount(o, p)?;
    if let Some(current) = &o.payment {
        if current.payment_id == payment_id && current.status == PaymentStatus::Initiated {
            return Err(OrderError::conflict_on(
                "payment_id",
                format!("payment {payment_id} is already initiated and awaits its result"),
            ));
        }
    }
    Ok(vec![OrderEvent::PaymentInitiated {
        order_id: o.id.clone(),
        payment_id,
        method: p.method,
        amount_minor: p.amount_minor,
        currency: p.currency.clone(),
        provider,
    }])
}

fn succeed(o: &Order, p: &RecordPayment, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
    if !matches!(o.status, OrderStatus::PendingPayment | OrderStatus::PaymentFailed) {
        return Err(not_payable(o.status));
    }
    let (payment_id, provider) = check_amount(o, p)?;
    let transaction_id = optional_text("transaction_id", &p.transaction_id, 128)?
        .ok_or_else(|| OrderError::invalid("transaction_id", "is required for a succeeded payment"))?;
    let mut events: Vec<OrderEvent> = implied_initiation(o, p, &payment_id, &provider).into_iter().collect();
    events.extend([
        OrderEvent::PaymentSucceeded {
            order_id: o.id.clone(),
            payment_id,
            amount_minor: p.amount_minor,
            currency: p.currency.clone(),
            transaction_id,
        },
        OrderEvent::OrderConfirmed {
            order_id: o.id.clone(),
            confirmation_number: confirmation_number(&o.id),
            estimated_delivery: (now + Duration::days(ESTIMATED_DELIVERY_DAYS)).date_naive(),
            items: o.items.clone(),
            total_minor: o.total_minor,
            currency: o.currency.clone(),
        },
    ]);
    Ok(events)
}

/// A result reported for a payment the order never saw initiated: its
/// initiation is recorded first, from the report (so every payment starts
/// with `PaymentInitiated`, and a retry knows its method and provider).
fn implied_initiation(o: &Order, p: &RecordPayment, payment_id: &str, provider: &str) -> Option<OrderEvent> {
    let known = o.payment.as_ref().is_some_and(|c| c.payment_id == payment_id);
    (!known).then(|| OrderEvent::PaymentInitiated {
        order_id: o.id.clone(),
        payment_id: payment_id.to_string(),
        method: p.method,
        amount_minor: p.amount_minor,
        currency: p.currency.clone(),
        provider: provider.to_string(),
    })
}

fn fail(o: &Order, p: &RecordPayment, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
    match o.status {
        OrderStatus::PendingPayment => {}
        OrderStatus::PaymentFailed => {
            return Err(OrderError::conflict(
                "the order's payment already failed; initiate a new payment first",
            ))
        }
        other => return Err(not_payable(other)),
    }
    retry_pending(o)?;
    let (payment_id, provider) = check_amount(o, p)?;
    let error_code = optional_text("error_code", &p.error_code, 100)?
        .ok_or_else(|| OrderError::invalid("error_code", "is required for a failed payment"))?;
    let error_message = optional_text("error_message", &p.error_message, 500)?.unwrap_or_default();
    let retryable = p.retryable.unwrap_or(false);
    let attempt = match &o.payment {
        Some(current) if current.payment_id == payment_id => current.attempt,
        _ => 1,
    };
    let mut events: Vec<OrderEvent> = implied_initiation(o, p, &payment_id, &provider).into_iter().collect();
    events.push(OrderEvent::PaymentFailed {
        order_id: o.id.clone(),
        payment_id: payment_id.clone(),
        amount_minor: p.amount_minor,
        currency: p.currency.clone(),
        error_code,
        error_message,
        retryable,
        attempt,
    });
    if retryable && attempt < MAX_PAYMENT_ATTEMPTS {
        events.push(OrderEvent::PaymentRetryScheduled {
            order_id: o.id.clone(),
            payment_id,
            attempt: attempt + 1,
            retry_at: now + Duration::seconds(PAYMENT_RETRY_BACKOFF_SECONDS),
        });
    }
    Ok(events)
}

fn retry(o: &Order, payment_id: &str, attempt: u32) -> Result<Vec<OrderEvent>, OrderError> {
    let Some(pending) = o.pending_retry.as_ref() else {
        return Err(OrderError::conflict("no payment retry is scheduled"));
    };
    if pending.payment_id != payment_id || pending.attempt != attempt {
        return Err(OrderError::conflict(format!(
            "the scheduled retry is attempt {} of payment {}",
            pending.attempt, pending.payment_id
        )));
    }
    let current = o.payment.as_ref();
    Ok(vec![OrderEvent::PaymentInitiated {
        order_id: o.id.clone(),
        payment_id: pending.payment_id.clone(),
        method: current.and_then(|p| p.method).unwrap_or(PaymentMethod::CreditCard),
        amount_minor: o.total_minor,
        currency: o.currency.clone(),
        provider: current
            .and_then(|p| p.provider.clone())
            .unwrap_or_else(|| "unspecified".to_string()),
    }])
}

fn ship(o: &Order, cmd: &ShipOrder, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
    match o.status {
        OrderStatus::Confirmed => {}
        OrderStatus::PendingPayment | OrderStatus::PaymentFailed => {
            return Err(OrderError::conflict("the order is not paid yet: it cannot be shipped"))
        }
        OrderStatus::InTransit => return Err(OrderError::conflict("the order was already shipped")),
        OrderStatus::Completed => return Err(OrderError::conflict("the order was already delivered")),
        OrderStatus::Cancelled => return Err(OrderError::conflict("the order is cancelled: it cannot be shipped")),
        OrderStatus::Refunded => return Err(OrderError::conflict("the order is refunded: it cannot be shipped")),
    }
    let tracking_url = optional_text("tracking_url", &cmd.tracking_url, 500)?;
    if let Some(url) = &tracking_url {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(OrderError::invalid("tracking_url", "must be an http(s) URL"));
        }
    }
    Ok(vec![OrderEvent::OrderShipped {
        order_id: o.id.clone(),
        carrier: text("carrier", &cmd.carrier, 100)?,
        tracking_number: text("tracking_number", &cmd.tracking_number, 100)?,
        tracking_url,
        shipped_at: now,
        estimated_delivery: cmd.estimated_delivery,
    }])
}

fn deliver(o: &Order, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
    match o.status {
        OrderStatus::InTransit => {}
        OrderStatus::PendingPayment | OrderStatus::PaymentFailed => {
            return Err(OrderError::conflict(
                "the order is not paid yet: it cannot be delivered",
            ))
        }
        OrderStatus::Confirmed => {
            return Err(OrderError::conflict(
                "the order was not shipped yet: it cannot be delivered",
            ))
        }
        OrderStatus::Completed => return Err(OrderError::conflict("the order was already delivered")),
        OrderStatus::Cancelled => return Err(OrderError::conflict("the order is cancelled: it cannot be delivered")),
        OrderStatus::Refunded => return Err(OrderError::conflict("the order is refunded: it cannot be delivered")),
    }
    Ok(vec![OrderEvent::OrderDelivered {
        order_id: o.id.clone(),
        delivered_at: now,
        items: o.items.clone(),
        total_minor: o.total_minor,
        currency: o.currency.clone(),
    }])
}

fn cancel(o: &Order, cmd: &CancelOrder, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
    if !o.status.can_be_cancelled() {
        return Err(OrderError::conflict(match o.status {
            OrderStatus::InTransit => "the order was shipped: it can no longer be cancelled",
            OrderStatus::Completed => "the order was delivered: it can no longer be cancelled",
            OrderStatus::Cancelled => "the order is already cancelled",
            _ => "the order is refunded: it can no longer be cancelled",
        }));
    }
    Ok(vec![OrderEvent::OrderCancelled {
        order_id: o.id.clone(),
        reason: text("reason", &cmd.reason, 200)?,
        cancelled_at: now,
    }])
}

fn refund(o: &Order, refund_id: &str, cmd: &RequestRefund) -> Result<Vec<OrderEvent>, OrderError> {
    if !o.status.can_be_refunded() {
        return Err(OrderError::conflict(match o.status {
            OrderStatus::PendingPayment | OrderStatus::PaymentFailed => {
                "the order is not paid: there is nothing to refund"
            }
            OrderStatus::Cancelled => "the order is cancelled: it cannot be refunded",
            _ => "the order is already fully refunded",
        }));
    }
    let left = o.refundable_minor();
    let amount = match (cmd.refund_type, cmd.amount_minor) {
        (RefundType::Full, None) => left,
        (RefundType::Full, Some(a)) if a == left => a,
        (RefundType::Full, Some(_)) => {
            return Err(OrderError::invalid(
                "amount_minor",
                format!("a full refund is what is left to refund ({left}); leave it out or use a partial refund"),
            ))
        }
        (RefundType::Partial, None) => {
            return Err(OrderError::invalid("amount_minor", "is required for a partial refund"))
        }
        (RefundType::Partial, Some(a)) => a,
    };
    if amount <= 0 {
        return Err(OrderError::invalid("amount_minor", "must be positive"));
    }
    if amount > left {
        return Err(OrderError::conflict_on(
            "amount_minor",
            format!("only {left} of the order total {} is left to refund", o.total_minor),
        ));
    }
    if let Some(items) = &cmd.items {
        for (i, product) in items.iter().enumerate() {
            if !o.items.iter().any(|line| &line.product_id == product) {
                return Err(OrderError::invalid(
                    format!("items[{i}]"),
                    format!("product {product} is not in the order"),
                ));
            }
        }
    }
    let mut events = vec![OrderEvent::RefundRequested {
        order_id: o.id.clone(),
        refund_id: refund_id.to_string(),
        amount_minor: amount,
        currency: o.currency.clone(),
        reason: cmd.reason,
        refund_type: cmd.refund_type,
        items: cmd.items.clone().filter(|i| !i.is_empty()),
    }];
    if o.refunded_minor + amount == o.total_minor {
        events.push(OrderEvent::OrderRefunded {
            order_id: o.id.clone(),
            refunded_total_minor: o.total_minor,
            currency: o.currency.clone(),
        });
    }
    Ok(events)
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
            ..
        } => {
            o.refunded_minor = o.refunded_minor.saturating_add(*amount_minor);
            o.refunds.push(Refund {
                refund_id: refund_id.clone(),
                amount_minor: *amount_minor,
                reason: *reason,
                refund_type: *refund_type,
                requested_at: at,
            });
        }
        OrderEvent::OrderRefunded { .. } => o.status = OrderStatus::Refunded,
    }
    Some(o)
}
