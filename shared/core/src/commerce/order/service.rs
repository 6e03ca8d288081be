//! The order application service: the shared command loop
//! ([`AggregateService`]) plus what orders need around it: reading the cart
//! an order is placed from, and keeping the payment retry timer in step with
//! the order (set by `PaymentRetryScheduled`, gone once the retry ran, the
//! payment succeeded or the order was cancelled).

use super::{
    cart_reservation_key, order_id_of, stream_id, Order, OrderAggregate, OrderCommand, OrderError, PlaceOrder,
};
use crate::aggregate::{AggregateError, AggregateService, Executed, ResponseBuilder};
use crate::clock::Clock;
use crate::commerce::cart::{Cart, CartAggregate};
use crate::commerce::discount::{self, Discount, DiscountAggregate, Refusal};
use crate::event::{Actor, CommandMeta, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::ports::EventStore;
use crate::scheduler::{timer_name, Scheduler, SchedulerError, TimerKind, TimerPayload};
use std::sync::Arc;

/// The deterministic name of order `order_id`'s payment retry timer.
pub fn payment_retry_timer_name(order_id: &str) -> String {
    timer_name(TimerKind::PaymentRetry, &[&stream_id(order_id)])
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderCommandError {
    #[error(transparent)]
    Command(#[from] AggregateError<OrderError>),
    /// The events are stored but the payment retry timer could not be set or
    /// cancelled: retrying the request (same Idempotency-Key) sets it.
    #[error("the order was saved but its payment retry timer could not be set: {0}")]
    Timer(#[from] SchedulerError),
}

impl From<OrderError> for OrderCommandError {
    fn from(e: OrderError) -> Self {
        OrderCommandError::Command(AggregateError::Rejected(e))
    }
}

impl OrderCommandError {
    pub fn is_retryable(&self) -> bool {
        match self {
            OrderCommandError::Command(e) => e.is_retryable(),
            OrderCommandError::Timer(_) => true,
        }
    }
}

/// What a fired payment retry timer did.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryOutcome {
    /// The payment was initiated again (attempt n); its result comes from the provider.
    Retried { events: Vec<EventEnvelope> },
    /// The order no longer waits for this retry (paid, cancelled, or another attempt).
    Superseded,
    /// Not a payment retry timer, or no such order.
    Ignored,
}

pub struct OrderService {
    orders: AggregateService<OrderAggregate>,
    carts: AggregateService<CartAggregate>,
    discounts: AggregateService<DiscountAggregate>,
    scheduler: Arc<dyn Scheduler>,
}

impl OrderService {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>, scheduler: Arc<dyn Scheduler>) -> Self {
        OrderService {
            orders: AggregateService::new(store.clone(), clock.clone()),
            carts: AggregateService::new(store.clone(), clock.clone()),
            discounts: AggregateService::new(store, clock),
            scheduler,
        }
    }

    /// The service clock's now.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.orders.now()
    }

    pub async fn load(&self, order_id: &str) -> Result<Option<Order>, OrderCommandError> {
        Ok(self.orders.load(order_id).await?)
    }

    /// Fills in an order from a cart: its items and currency, after checking
    /// it is the customer's and not empty. (That the cart was not ordered
    /// before is checked atomically with the append, by a reservation.)
    pub async fn resolve_cart(&self, mut command: PlaceOrder) -> Result<PlaceOrder, OrderCommandError> {
        let Some(cart_id) = command.cart_id.clone() else {
            return Ok(command);
        };
        if command.items.is_some() {
            return Err(OrderError::invalid("items", "give either cart_id or items, not both").into());
        }
        let cart: Option<Cart> = self.carts.load(&cart_id).await.map_err(|e| match e {
            AggregateError::Store(s) => AggregateError::Store(s),
            AggregateError::Codec(c) => AggregateError::Codec(c),
            other => AggregateError::Rejected(OrderError::invalid("cart_id", other.to_string())),
        })?;
        let Some(cart) = cart else {
            return Err(OrderError::invalid("cart_id", "no such cart").into());
        };
        if cart.customer_id != command.customer_id {
            return Err(OrderError::invalid("cart_id", "the cart belongs to another customer").into());
        }
        if cart.items.is_empty() {
            return Err(OrderError::conflict_on("cart_id", "the cart is empty").into());
        }
        if let Some(currency) = &command.currency {
            if currency != &cart.currency {
                return Err(
                    OrderError::invalid("currency", format!("must be the cart's currency {}", cart.currency)).into(),
                );
            }
        }
        // Open, checked out or abandoned alike: a shopper may come back to an
        // abandoned cart and order it.
        command.currency = Some(cart.currency.clone());
        command.items = Some(
            cart.items
                .iter()
                .map(|i| super::OrderItem {
                    product_id: i.product_id.clone(),
                    name: i.name.clone(),
                    category: None,
                    quantity: i.quantity,
                    unit_price_minor: i.unit_price_minor,
                })
                .collect(),
        );
        Ok(command)
    }

    /// Finds the discount of an order's `discount_code` (decision 0074) and,
    /// on the API's `POST /orders`, takes its percent off the subtotal
    /// (`discount_minor`; the lines must be resolved). A code that is not
    /// ours, expired or another customer's is 422, a used one 409, both
    /// naming `discount_code`.
    pub async fn resolve_discount(&self, mut command: PlaceOrder) -> Result<PlaceOrder, OrderCommandError> {
        let Some(raw) = command.discount_code.clone() else {
            return Ok(command);
        };
        let discount = self
            .find_discount(&raw, &command.customer_id)
            .await?
            .map_err(|refusal| match refusal {
                Refusal::Used => OrderError::conflict_on("discount_code", refusal.to_string()),
                other => OrderError::invalid("discount_code", other.to_string()),
            })?;
        let subtotal = command
            .items
            .iter()
            .flatten()
            .try_fold(0i64, |sum, i| {
                i.unit_price_minor
                    .checked_mul(i64::from(i.quantity))
                    .and_then(|line| sum.checked_add(line))
            })
            .unwrap_or(0);
        command.discount_minor = discount.amount_off(subtotal);
        command.discount_code = Some(discount.issued.code.clone());
        command.discount = Some(discount);
        Ok(command)
    }

    /// The shop's coupon on an order it reports (Segment's `Order
    /// Completed.coupon`, decision 0074): the order keeps the shop's
    /// amounts and redeems the coupon when it is one of our codes the
    /// customer may use; otherwise the order is recorded without it and
    /// the refusal is returned, for ingestion to report.
    pub async fn resolve_coupon(
        &self,
        mut command: PlaceOrder,
    ) -> Result<(PlaceOrder, Option<Refusal>), OrderCommandError> {
        let Some(raw) = command.discount_code.take() else {
            return Ok((command, None));
        };
        match self.find_discount(&raw, &command.customer_id).await? {
            Ok(discount) => {
                command.discount_code = Some(discount.issued.code.clone());
                command.discount = Some(discount);
                Ok((command, None))
            }
            Err(refusal) => Ok((command, Some(refusal))),
        }
    }

    /// The discount `raw` names, if `customer_id` may redeem it now.
    async fn find_discount(
        &self,
        raw: &str,
        customer_id: &str,
    ) -> Result<Result<Discount, Refusal>, OrderCommandError> {
        let Some(code) = discount::normalize_code(raw) else {
            return Ok(Err(Refusal::Unknown));
        };
        let found = self.discounts.load(&code).await.map_err(|e| match e {
            AggregateError::Store(s) => OrderCommandError::Command(AggregateError::Store(s)),
            AggregateError::Codec(c) => OrderCommandError::Command(AggregateError::Codec(c)),
            other => OrderCommandError::Command(AggregateError::Rejected(OrderError::invalid(
                "discount_code",
                other.to_string(),
            ))),
        })?;
        let discount = match discount::check_redemption(found.as_ref(), customer_id, self.discounts.now()) {
            Ok(d) => d.clone(),
            Err(refusal) => return Ok(Err(refusal)),
        };
        let key = discount::reservation_key(&code);
        if self
            .orders
            .store()
            .reservation_owner(&key)
            .await
            .map_err(AggregateError::from)?
            .is_some()
        {
            return Ok(Err(Refusal::Used));
        }
        Ok(Ok(discount))
    }

    /// Runs a command (for `Place`, `order_id` is the id the new order gets,
    /// and a cart id must already be resolved by [`Self::resolve_cart`]).
    /// After the append, the payment retry timer is set or removed; a
    /// repeated idempotent request is answered from its receipt and the timer
    /// brought in step again.
    pub async fn execute(
        &self,
        order_id: &str,
        command: &OrderCommand,
        meta: &CommandMeta,
        idempotency: Option<&IdempotencyKey>,
        respond: ResponseBuilder<'_, Order>,
    ) -> Result<Executed<Order>, OrderCommandError> {
        let executed = self
            .orders
            .execute(order_id, command, &(), meta, idempotency, respond)
            .await
            .map_err(|e| self.explain_reservation(e, command))?;
        match &executed {
            Executed::Applied { state, events, .. } => {
                if events.iter().any(|e| touches_payment(&e.event_type)) {
                    self.sync_timer(state).await?;
                }
            }
            Executed::Replayed { .. } => {
                if let Some(order) = self.load(order_id).await? {
                    self.sync_timer(&order).await?;
                }
            }
        }
        Ok(executed)
    }

    fn explain_reservation(&self, e: AggregateError<OrderError>, command: &OrderCommand) -> AggregateError<OrderError> {
        match (e, command) {
            (AggregateError::ReservationTaken { key }, OrderCommand::Place(p))
                if p.cart_id.as_deref().map(cart_reservation_key).as_deref() == Some(key.as_str()) =>
            {
                AggregateError::Rejected(OrderError::conflict_on("cart_id", "the cart was already ordered"))
            }
            (
                AggregateError::ReservationTaken { key },
                OrderCommand::Place(p) | OrderCommand::PlacePaid { order: p, .. },
            ) if p.discount_code.as_deref().map(discount::reservation_key).as_deref() == Some(key.as_str()) => {
                AggregateError::Rejected(OrderError::conflict_on("discount_code", Refusal::Used.to_string()))
            }
            (e, _) => e,
        }
    }

    /// Sets the retry timer of an order waiting for a payment retry, removes it otherwise.
    pub async fn sync_timer(&self, order: &Order) -> Result<(), SchedulerError> {
        let name = payment_retry_timer_name(&order.id);
        match &order.pending_retry {
            None => self.scheduler.cancel(&name).await,
            Some(retry) => {
                self.scheduler
                    .schedule(TimerPayload {
                        name,
                        kind: TimerKind::PaymentRetry,
                        stream_id: stream_id(&order.id),
                        customer_id: Some(order.customer_id.clone()),
                        due_at: retry.retry_at,
                        set_at_version: order.version,
                        data: serde_json::json!({ "payment_id": retry.payment_id, "attempt": retry.attempt }),
                    })
                    .await
            }
        }
    }

    /// A payment retry timer fired: initiates the payment again (attempt n)
    /// unless the order no longer waits for exactly this retry.
    pub async fn on_payment_retry_timer(&self, payload: &TimerPayload) -> Result<RetryOutcome, OrderCommandError> {
        if payload.kind != TimerKind::PaymentRetry {
            return Ok(RetryOutcome::Ignored);
        }
        let Some(order_id) = order_id_of(&payload.stream_id) else {
            return Ok(RetryOutcome::Ignored);
        };
        let payment_id = payload.data.get("payment_id").and_then(|v| v.as_str());
        let attempt = payload
            .data
            .get("attempt")
            .and_then(|v| v.as_u64())
            .and_then(|a| u32::try_from(a).ok());
        let (Some(payment_id), Some(attempt)) = (payment_id, attempt) else {
            return Ok(RetryOutcome::Ignored);
        };
        let command = OrderCommand::RetryPayment {
            payment_id: payment_id.to_string(),
            attempt,
        };
        let meta = CommandMeta::new(Actor::system("payment-retry"));
        let respond = |_: &Order, _: &[EventEnvelope]| (200, serde_json::Value::Null);
        match self
            .orders
            .execute(order_id, &command, &(), &meta, None, &respond)
            .await
        {
            Ok(Executed::Applied { state, events, .. }) => {
                self.sync_timer(&state).await?;
                Ok(RetryOutcome::Retried { events })
            }
            Ok(Executed::Replayed { .. }) => Ok(RetryOutcome::Superseded),
            Err(AggregateError::Rejected(OrderError::NotFound)) => Ok(RetryOutcome::Ignored),
            Err(AggregateError::Rejected(OrderError::Conflict { .. })) => Ok(RetryOutcome::Superseded),
            Err(e) => Err(e.into()),
        }
    }
}

fn touches_payment(event_type: &str) -> bool {
    matches!(
        event_type,
        "PaymentInitiated" | "PaymentSucceeded" | "PaymentFailed" | "PaymentRetryScheduled" | "OrderCancelled"
    )
}
