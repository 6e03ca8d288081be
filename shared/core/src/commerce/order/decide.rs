//! The order's rules: which events a command produces, or why it is refused.

use super::commands::*;
use super::events::{OrderEvent, OrderItem, PaymentMethod, RefundOrigin, RefundType};
use super::state::{confirmation_number, evolve, Order, OrderStatus};
use super::{
    cart_reservation_key, stream_id, OrderError, ESTIMATED_DELIVERY_DAYS, MAX_ITEMS, MAX_PAYMENT_ATTEMPTS,
    MAX_QUANTITY, PAYMENT_RETRY_BACKOFF_SECONDS,
};
use crate::aggregate::{Aggregate, DecideContext};
use crate::customer::Address;
use crate::ports::ReservationChange;
use chrono::{DateTime, Duration, Utc};

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
                // A code is used once (decision 0074).
                OrderEvent::DiscountRedeemed { code, .. } => Some(ReservationChange::Claim {
                    key: crate::commerce::discount::reservation_key(code),
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
        (None, OrderCommand::Place(cmd)) => place(cmd, order_id, now),
        (Some(_), OrderCommand::PlacePaid { .. }) => Err(OrderError::conflict("the order already exists")),
        (None, OrderCommand::PlacePaid { order, payment }) => {
            if payment.status != PaymentStatus::Succeeded {
                return Err(OrderError::invalid("status", "must be a succeeded payment"));
            }
            let mut events = place(order, order_id, now)?;
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
        (Some(o), OrderCommand::Refund { refund_id, request }) => refund(o, refund_id, request, false),
        (Some(o), OrderCommand::RecordReportedRefund { refund_id, request }) => refund(o, refund_id, request, true),
        (Some(o), OrderCommand::CompleteRefund { refund_id, completion }) => {
            complete_refund(o, refund_id, completion, now)
        }
        (Some(o), OrderCommand::Amend(cmd)) => amend(o, cmd),
        (Some(o), OrderCommand::SubmitReview(cmd)) => submit_review(o, cmd, now),
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

/// An order's lines and amounts, checked: they add up as
/// `subtotal_minor - discount_minor + tax_minor + shipping_minor +
/// adjustment_minor = total_minor`, the subtotal being the sum of the lines.
struct Priced {
    lines: Vec<OrderItem>,
    subtotal_minor: i64,
    total_minor: i64,
}

/// Checks the lines and amounts of an order being placed or amended.
fn priced(
    items: &[OrderItem],
    subtotal_minor: Option<i64>,
    amounts: Amounts,
    total_minor: i64,
) -> Result<Priced, OrderError> {
    if items.is_empty() {
        return Err(OrderError::invalid("items", "an order needs at least one item"));
    }
    if items.len() > MAX_ITEMS {
        return Err(OrderError::invalid(
            "items",
            format!("an order holds at most {MAX_ITEMS} lines"),
        ));
    }
    let mut lines = Vec::with_capacity(items.len());
    let mut subtotal: i64 = 0;
    for (i, item) in items.iter().enumerate() {
        let field = |name: &str| format!("items[{i}].{name}");
        if !crate::commerce::cart::valid_product_id(&item.product_id) {
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
    if let Some(given) = subtotal_minor {
        if given != subtotal {
            return Err(OrderError::invalid(
                "subtotal_minor",
                format!("must be the sum of the lines ({subtotal})"),
            ));
        }
    }
    for (field, v) in [
        ("tax_minor", amounts.tax_minor),
        ("shipping_minor", amounts.shipping_minor),
        ("discount_minor", amounts.discount_minor),
    ] {
        if v < 0 {
            return Err(OrderError::invalid(field, "must not be negative"));
        }
    }
    let total = subtotal
        .checked_sub(amounts.discount_minor)
        .and_then(|t| t.checked_add(amounts.tax_minor))
        .and_then(|t| t.checked_add(amounts.shipping_minor))
        .and_then(|t| t.checked_add(amounts.adjustment_minor))
        .ok_or_else(|| OrderError::invalid("total_minor", "is too large"))?;
    if total_minor != total {
        let formula = if amounts.discount_minor == 0 && amounts.adjustment_minor == 0 {
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
    Ok(Priced {
        lines,
        subtotal_minor: subtotal,
        total_minor: total,
    })
}

fn place(cmd: &PlaceOrder, order_id: &str, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
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
    let currency = cmd.currency.as_deref().unwrap_or("").trim();
    if !is_currency(currency) {
        return Err(OrderError::invalid(
            "currency",
            "is not an ISO 4217 currency code of three uppercase letters such as EUR",
        ));
    }
    let amounts = Amounts {
        discount_minor: cmd.discount_minor,
        tax_minor: cmd.tax_minor,
        shipping_minor: cmd.shipping_minor,
        adjustment_minor: cmd.adjustment_minor,
    };
    let priced = priced(items, cmd.subtotal_minor, amounts, cmd.total_minor)?;
    let shipping_address = cmd
        .shipping_address
        .as_ref()
        .map(|a| address("shipping_address", a))
        .transpose()?;
    let billing_address = match &cmd.billing_address {
        Some(a) => Some(address("billing_address", a)?),
        None => shipping_address.clone(),
    };
    let redeemed = redeemed(cmd, order_id, customer_id, now)?;
    let placed = OrderEvent::OrderPlaced {
        order_id: order_id.to_string(),
        customer_id: customer_id.to_string(),
        cart_id: cmd.cart_id.clone(),
        items: priced.lines,
        subtotal_minor: priced.subtotal_minor,
        tax_minor: cmd.tax_minor,
        shipping_minor: cmd.shipping_minor,
        total_minor: priced.total_minor,
        currency: currency.to_string(),
        shipping_address,
        billing_address,
        discount_minor: cmd.discount_minor,
        adjustment_minor: cmd.adjustment_minor,
    };
    Ok(std::iter::once(placed).chain(redeemed).collect())
}

/// The `DiscountRedeemed` of an order placed with a code (decision 0074):
/// the service found its discount; it must be the customer's and
/// unexpired at `now` (unused is the reservation on the code).
fn redeemed(
    cmd: &PlaceOrder,
    order_id: &str,
    customer_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<OrderEvent>, OrderError> {
    use crate::commerce::discount::{check_redemption, Refusal};
    if cmd.discount_code.is_none() {
        return Ok(None);
    }
    let refused = |r: Refusal| OrderError::invalid("discount_code", r.to_string());
    let discount = check_redemption(cmd.discount.as_ref(), customer_id, now).map_err(refused)?;
    Ok(Some(OrderEvent::DiscountRedeemed {
        code: discount.issued.code.clone(),
        order_id: order_id.to_string(),
        customer_id: customer_id.to_string(),
        percent: discount.issued.percent,
        discount_minor: cmd.discount_minor,
        campaign_id: discount.issued.campaign_id.clone(),
        campaign_version: discount.issued.campaign_version,
        message_id: discount.issued.message_id.clone(),
    }))
}

/// The order's new lines and amounts (Segment's `Order Updated`): allowed
/// until the order is shipped, never once cancelled or refunded, nor while
/// a payment of the old total awaits its result. The amounts add up as
/// they do for [`place`]. On a paid order the new total is what the order
/// is worth (the shop settles the difference with the customer): what is
/// left to refund follows it, and it may not fall below what was refunded.
/// The same lines and amounts again change nothing (no event).
fn amend(o: &Order, cmd: &AmendOrder) -> Result<Vec<OrderEvent>, OrderError> {
    if cmd.currency.trim() != o.currency {
        return Err(OrderError::invalid(
            "currency",
            format!("must be the order's currency {}", o.currency),
        ));
    }
    let priced = priced(&cmd.items, cmd.subtotal_minor, cmd.amounts, cmd.total_minor)?;
    let unchanged = priced.lines == o.items
        && priced.total_minor == o.total_minor
        && cmd.amounts
            == (Amounts {
                discount_minor: o.discount_minor,
                tax_minor: o.tax_minor,
                shipping_minor: o.shipping_minor,
                adjustment_minor: o.adjustment_minor,
            });
    if unchanged {
        return Ok(Vec::new());
    }
    let paid = match o.status {
        OrderStatus::PendingPayment | OrderStatus::PaymentFailed => false,
        OrderStatus::Confirmed => true,
        OrderStatus::InTransit => {
            return Err(OrderError::conflict(
                "the order was shipped: it can no longer be amended",
            ))
        }
        OrderStatus::Completed => {
            return Err(OrderError::conflict(
                "the order was delivered: it can no longer be amended",
            ))
        }
        OrderStatus::Cancelled => return Err(OrderError::conflict("the order is cancelled: it cannot be amended")),
        OrderStatus::Refunded => return Err(OrderError::conflict("the order is refunded: it cannot be amended")),
    };
    if let Some(p) = o.payment.as_ref().filter(|p| p.status == PaymentStatus::Initiated) {
        return Err(OrderError::conflict(format!(
            "payment {} of the order's total {} awaits its result: amend the order after it",
            p.payment_id, o.total_minor
        )));
    }
    if o.refunded_minor > 0 && priced.total_minor <= o.refunded_minor {
        return Err(OrderError::conflict_on(
            "total_minor",
            format!(
                "{} of the order was refunded already: its total must stay above that (refund the rest instead)",
                o.refunded_minor
            ),
        ));
    }
    Ok(vec![OrderEvent::OrderAmended {
        order_id: o.id.clone(),
        items: priced.lines,
        subtotal_minor: priced.subtotal_minor,
        discount_minor: cmd.amounts.discount_minor,
        tax_minor: cmd.amounts.tax_minor,
        shipping_minor: cmd.amounts.shipping_minor,
        adjustment_minor: cmd.amounts.adjustment_minor,
        total_minor: priced.total_minor,
        currency: o.currency.clone(),
        previous_total_minor: o.total_minor,
        paid,
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

/// Which rule lets a refund in (decision 0071). Through the API: a paid
/// order before delivery (the seed's `canBeRefunded`); after delivery only
/// as a return with a reason. Reported by the shop (`reported`): a fact,
/// recorded for any order that was paid, delivered or cancelled alike.
fn refund_origin(o: &Order, cmd: &RequestRefund, reported: bool) -> Result<(RefundOrigin, Option<String>), OrderError> {
    let paid = o.payment.as_ref().is_some_and(|p| p.status == PaymentStatus::Succeeded);
    if reported && o.status == OrderStatus::Cancelled && paid {
        return Ok((RefundOrigin::Shop, None));
    }
    if !o.status.can_be_refunded() {
        return Err(OrderError::conflict(match o.status {
            OrderStatus::PendingPayment | OrderStatus::PaymentFailed => {
                "the order is not paid: there is nothing to refund"
            }
            OrderStatus::Cancelled => "the order is cancelled: it cannot be refunded",
            _ => "the order is already fully refunded",
        }));
    }
    if reported {
        return Ok((RefundOrigin::Shop, None));
    }
    match (o.status, &cmd.return_) {
        (OrderStatus::Completed, Some(r)) => Ok((RefundOrigin::Return, Some(text("return.reason", &r.reason, 500)?))),
        (OrderStatus::Completed, None) => Err(OrderError::conflict_on(
            "return.reason",
            "the order was delivered: a refund after delivery is a return; give return.reason",
        )),
        (_, Some(_)) => Err(OrderError::invalid(
            "return",
            "the order was not delivered: there is nothing to return; leave it out",
        )),
        (_, None) => Ok((RefundOrigin::Request, None)),
    }
}

fn refund(o: &Order, refund_id: &str, cmd: &RequestRefund, reported: bool) -> Result<Vec<OrderEvent>, OrderError> {
    let (origin, return_reason) = refund_origin(o, cmd, reported)?;
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
        origin,
        return_reason,
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

/// The provider's confirmation of refund `refund_id` (decision 0071): once
/// per refund, idempotent on the transaction id. The same transaction again
/// is nothing new; another transaction for a completed refund, or one that
/// completed another refund of the order, is a conflict.
fn complete_refund(
    o: &Order,
    refund_id: &str,
    cmd: &CompleteRefund,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    let transaction_id = text("transaction_id", &cmd.transaction_id, 200)?;
    let Some(refund) = o.refunds.iter().find(|r| r.refund_id == refund_id) else {
        return Err(OrderError::invalid(
            "refund_id",
            format!("the order has no refund {refund_id}"),
        ));
    };
    match &refund.transaction_id {
        Some(done) if *done == transaction_id => return Ok(Vec::new()),
        Some(done) => {
            return Err(OrderError::conflict_on(
                "transaction_id",
                format!("refund {refund_id} was completed by transaction {done}"),
            ))
        }
        None => {}
    }
    if let Some(other) = o
        .refunds
        .iter()
        .find(|r| r.transaction_id.as_deref() == Some(transaction_id.as_str()))
    {
        return Err(OrderError::conflict_on(
            "transaction_id",
            format!("transaction {transaction_id} completed refund {}", other.refund_id),
        ));
    }
    Ok(vec![OrderEvent::RefundCompleted {
        order_id: o.id.clone(),
        refund_id: refund.refund_id.clone(),
        amount_minor: refund.amount_minor,
        currency: o.currency.clone(),
        transaction_id,
        completed_at: now,
    }])
}

/// The customer's review of a product of the order (decision 0073): only
/// once the order was delivered (409 `status` before), of a product the
/// order holds, rated 1 to 5. One review per product: the same review again
/// is nothing new; a different one is a conflict on `product_id`.
fn submit_review(o: &Order, cmd: &SubmitReview, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
    if o.delivered_at.is_none() {
        return Err(OrderError::conflict_on(
            "status",
            format!(
                "order {} is {}: only a delivered order can be reviewed",
                o.id,
                o.status.as_str()
            ),
        ));
    }
    let product_id = text("product_id", &cmd.product_id, 200)?;
    if !o.items.iter().any(|line| line.product_id == product_id) {
        return Err(OrderError::invalid(
            "product_id",
            format!("order {} has no product {product_id}", o.id),
        ));
    }
    let rating = u8::try_from(cmd.rating)
        .ok()
        .filter(|r| (1..=5).contains(r))
        .ok_or_else(|| OrderError::invalid("rating", "must be a whole number from 1 to 5"))?;
    let review = optional_text("review", &cmd.review, 5000)?;
    if let Some(done) = o.reviews.iter().find(|r| r.product_id == product_id) {
        if done.rating == rating && done.review == review {
            return Ok(Vec::new());
        }
        return Err(OrderError::conflict_on(
            "product_id",
            format!("product {product_id} of order {} was already reviewed", o.id),
        ));
    }
    Ok(vec![OrderEvent::ReviewSubmitted {
        order_id: o.id.clone(),
        product_id,
        rating,
        review,
        submitted_at: now,
    }])
}
