//! The cart application service: the shared command loop
//! ([`AggregateService`]: load, decide, append with an idempotency receipt,
//! retry on a concurrency conflict); then keep the cart's inactivity timer in
//! step with the cart (docs/decisions/0008-cart-inactivity.md): while the
//! cart is open, its inactivity; once its checkout started, the checkout
//! period, after which a checkout no order completed is abandoned
//! (`CheckoutAbandoned`, docs/decisions/0069-browse-and-checkout-abandonment.md).

use super::cart::{stream_id, Cart, CartAggregate, CartCommand, CartError, CartStatus};
use crate::aggregate::{AggregateError, AggregateService, Executed};
use crate::clock::Clock;
use crate::event::{Actor, CommandMeta, EventCodecError, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::ports::{EventStore, StoreError};
use crate::scheduler::{timer_name, Scheduler, SchedulerError, TimerKind, TimerPayload};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// Builds the answer stored in the receipt (status, JSON body) from the new
/// state and the events just written.
pub type CartResponseBuilder<'a> = &'a (dyn Fn(&Cart, &[EventEnvelope]) -> (u16, serde_json::Value) + Send + Sync);

/// The default inactivity period after which an open cart is abandoned.
pub const DEFAULT_INACTIVITY_MINUTES: i64 = 60;

/// The default time a started checkout has to become an order before it is
/// abandoned (seed 000: 60 minutes).
pub const DEFAULT_CHECKOUT_MINUTES: i64 = 60;

/// The deterministic name of cart `cart_id`'s timer: its inactivity timer
/// while open, its checkout timer once checked out (one timer per cart).
pub fn inactivity_timer_name(cart_id: &str) -> String {
    timer_name(TimerKind::CartInactivity, &[&stream_id(cart_id)])
}

/// What executing a cart command did.
pub type CartExecuted = Executed<Cart>;

/// What a fired inactivity timer did.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerOutcome {
    /// The cart was open and untouched since the timer was set: now abandoned.
    Abandoned { events: Vec<EventEnvelope> },
    /// The cart's checkout started a checkout period ago and no order was
    /// placed from it: `CheckoutAbandoned`.
    CheckoutAbandoned { events: Vec<EventEnvelope> },
    /// A later activity replaced the timer (or won the race against it).
    Superseded,
    /// The cart is abandoned, or its checkout already was.
    NotOpen,
    /// An order was placed from the cart: it is not abandoned.
    Ordered,
    /// Not a cart inactivity timer, or no such cart.
    Ignored,
    /// The cart's customer is deactivated or erased: no abandonment (and
    /// so no campaign) for them.
    CustomerInactive,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CartCommandError {
    #[error(transparent)]
    Rejected(#[from] CartError),
    /// The idempotency key was first used for a different request (422).
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// Other writers kept winning (409, retry later).
    #[error("the cart kept changing; gave up after {attempts} attempts")]
    Contended { attempts: u32 },
    #[error("command too large: {0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] EventCodecError),
    /// The events are stored but the inactivity timer could not be set or
    /// cancelled: retrying the request (same Idempotency-Key) sets it.
    #[error("the cart was saved but its timer could not be set: {0}")]
    Timer(#[from] SchedulerError),
}

impl CartCommandError {
    /// Worth retrying the same request later?
    pub fn is_retryable(&self) -> bool {
        match self {
            CartCommandError::Store(e) => e.is_retryable(),
            CartCommandError::Contended { .. } | CartCommandError::Timer(_) => true,
            _ => false,
        }
    }
}

impl From<AggregateError<CartError>> for CartCommandError {
    fn from(e: AggregateError<CartError>) -> Self {
        match e {
            AggregateError::Rejected(e) => CartCommandError::Rejected(e),
            AggregateError::IdempotencyKeyReused => CartCommandError::IdempotencyKeyReused,
            AggregateError::Contended { attempts } => CartCommandError::Contended { attempts },
            AggregateError::ReservationTaken { key } => {
                CartCommandError::Store(StoreError::Failed(format!("unexpected reservation {key}")))
            }
            AggregateError::TooLarge(reason) => CartCommandError::TooLarge(reason),
            AggregateError::Store(e) => CartCommandError::Store(e),
            AggregateError::Codec(e) => CartCommandError::Codec(e),
        }
    }
}

pub struct CartService {
    carts: AggregateService<CartAggregate>,
    customers: crate::customer::CustomerService,
    scheduler: Arc<dyn Scheduler>,
    inactivity: Duration,
    checkout: Duration,
}

impl CartService {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>, scheduler: Arc<dyn Scheduler>) -> Self {
        CartService {
            customers: crate::customer::CustomerService::new(store.clone(), clock.clone()),
            carts: AggregateService::new(store, clock),
            scheduler,
            inactivity: Duration::minutes(DEFAULT_INACTIVITY_MINUTES),
            checkout: Duration::minutes(DEFAULT_CHECKOUT_MINUTES),
        }
    }

    /// How long a started checkout may go without an order before it is
    /// abandoned (at least a second).
    pub fn with_checkout_period(mut self, period: Duration) -> Self {
        self.checkout = period.max(Duration::seconds(1));
        self
    }

    pub fn checkout_period(&self) -> Duration {
        self.checkout
    }

    /// How long a cart may stay untouched before it is abandoned (at least a second).
    pub fn with_inactivity(mut self, period: Duration) -> Self {
        self.inactivity = period.max(Duration::seconds(1));
        self
    }

    pub fn inactivity(&self) -> Duration {
        self.inactivity
    }

    pub fn scheduler(&self) -> &Arc<dyn Scheduler> {
        &self.scheduler
    }

    /// The cart's current state, or `None` if there is no such cart. Carts
    /// are short: the whole stream is folded.
    pub async fn load(&self, cart_id: &str) -> Result<Option<Cart>, CartCommandError> {
        Ok(self.carts.load(cart_id).await?)
    }

    /// Runs a command: for `Create`, `cart_id` is the id the new cart gets.
    /// After the append, sets (activity) or cancels (checkout) the cart's
    /// inactivity timer. A repeated idempotent request is answered from its
    /// receipt, and the timer brought in step with the cart again.
    pub async fn execute(
        &self,
        cart_id: &str,
        command: &CartCommand,
        meta: &CommandMeta,
        idempotency: Option<&IdempotencyKey>,
        respond: CartResponseBuilder<'_>,
    ) -> Result<CartExecuted, CartCommandError> {
        let executed = self
            .carts
            .execute(cart_id, command, &(), meta, idempotency, respond)
            .await?;
        match &executed {
            // After the append: an outside effect under a deterministic
            // name, safe to repeat.
            Executed::Applied { state, .. } => self.sync_timer(state).await?,
            // The first attempt may have stored the events and then failed
            // to set the timer: set it now.
            Executed::Replayed { .. } => {
                if let Some(cart) = self.load(cart_id).await? {
                    self.sync_timer(&cart).await?;
                }
            }
        }
        Ok(executed)
    }

    /// Sets the timer of an open cart (due one inactivity period after its
    /// last activity) or of a started checkout not yet abandoned (due one
    /// checkout period after it started), tagged with the cart's version;
    /// cancels it otherwise.
    pub async fn sync_timer(&self, cart: &Cart) -> Result<(), SchedulerError> {
        let name = inactivity_timer_name(&cart.id);
        let due_at = match (cart.status, cart.checkout_started_at, cart.checkout_abandoned_at) {
            (CartStatus::Open, _, _) => cart.last_activity_at + self.inactivity,
            (CartStatus::CheckedOut, Some(started), None) => started + self.checkout,
            _ => return self.scheduler.cancel(&name).await,
        };
        self.scheduler
            .schedule(TimerPayload {
                name,
                kind: TimerKind::CartInactivity,
                stream_id: stream_id(&cart.id),
                customer_id: Some(cart.customer_id.clone()),
                due_at,
                set_at_version: cart.version,
                data: serde_json::json!({}),
            })
            .await
    }

    /// A cart's timer fired at `now`: abandons the cart (open) or its
    /// checkout (checked out, no order placed from it) unless a later
    /// activity replaced the timer or that already happened.
    pub async fn on_inactivity_timer(
        &self,
        payload: &TimerPayload,
        now: DateTime<Utc>,
    ) -> Result<TimerOutcome, CartCommandError> {
        let Some(cart_id) = super::cart::cart_id_of(&payload.stream_id) else {
            return Ok(TimerOutcome::Ignored);
        };
        if payload.kind != TimerKind::CartInactivity {
            return Ok(TimerOutcome::Ignored);
        }
        let Some(cart) = self.load(cart_id).await? else {
            return Ok(TimerOutcome::Ignored);
        };
        let checkout = match (cart.status, cart.checkout_abandoned_at) {
            (CartStatus::Open, _) => false,
            (CartStatus::CheckedOut, None) => true,
            _ => return Ok(TimerOutcome::NotOpen),
        };
        // Deactivation and erasure cancel the timer; one that fired anyway
        // (a race, or a cart the cancellation did not know of yet) stops here.
        let customer = self.customers.load(&cart.customer_id).await.map_err(|e| match e {
            crate::customer::CommandError::Store(e) => CartCommandError::Store(e),
            other => CartCommandError::Store(StoreError::Failed(other.to_string())),
        })?;
        if customer.is_some_and(|c| c.is_erased() || c.status == crate::customer::CustomerStatus::Deactivated) {
            return Ok(TimerOutcome::CustomerInactive);
        }
        if payload.set_at_version != cart.version {
            return Ok(TimerOutcome::Superseded);
        }
        // An order placed from the cart holds its reservation (decision 0015).
        let ordered = self
            .carts
            .store()
            .reservation_owner(&super::order::cart_reservation_key(cart_id))
            .await?;
        if ordered.is_some() {
            return Ok(TimerOutcome::Ordered);
        }
        let (actor, command) = if checkout {
            ("checkout-timeout", CartCommand::MarkCheckoutAbandoned { now })
        } else {
            ("cart-inactivity", CartCommand::MarkAbandoned { now })
        };
        let meta = CommandMeta::new(Actor::system(actor));
        let respond = |_: &Cart, _: &[EventEnvelope]| (200, serde_json::Value::Null);
        // One attempt against the state the timer was checked on: a
        // concurrent activity that wins has set a new timer.
        match self
            .carts
            .try_once(cart_id, Some(cart), &command, &(), &meta, None, &respond)
            .await?
        {
            Some(Executed::Applied { events, .. }) if checkout => Ok(TimerOutcome::CheckoutAbandoned { events }),
            Some(Executed::Applied { events, .. }) => Ok(TimerOutcome::Abandoned { events }),
            Some(Executed::Replayed { .. }) | None => Ok(TimerOutcome::Superseded),
        }
    }
}
