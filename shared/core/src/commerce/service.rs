//! The cart application service: load, decide, append (with an idempotency
//! receipt), retry on a concurrency conflict; then keep the cart's inactivity
//! timer in step with the cart (docs/decisions/0008-cart-inactivity.md).

use super::cart::{decide, evolve, stream_id, Cart, CartCommand, CartError, CartEvent, CartStatus};
use crate::clock::Clock;
use crate::event::{envelopes, Actor, CommandMeta, DomainEvent, EventCodecError, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::ports::{AppendError, AppendRequest, CommandReceipt, EventStore, ExpectedVersion, StoreError};
use crate::scheduler::{timer_name, Scheduler, SchedulerError, TimerKind, TimerPayload};
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// Builds the answer stored in the receipt (status, JSON body) from the new
/// state and the events just written.
pub type CartResponseBuilder<'a> = &'a (dyn Fn(&Cart, &[EventEnvelope]) -> (u16, serde_json::Value) + Send + Sync);

/// The default inactivity period after which an open cart is abandoned.
pub const DEFAULT_INACTIVITY_MINUTES: i64 = 60;

/// The deterministic name of cart `cart_id`'s inactivity timer.
pub fn inactivity_timer_name(cart_id: &str) -> String {
    timer_name(TimerKind::CartInactivity, &[&stream_id(cart_id)])
}

/// What executing a cart command did.
#[derive(Debug, Clone, PartialEq)]
pub enum CartExecuted {
    Applied {
        cart: Box<Cart>,
        events: Vec<EventEnvelope>,
        status: u16,
        body: serde_json::Value,
    },
    /// The same request was applied before; this is its first answer.
    Replayed { status: u16, body: serde_json::Value },
}

/// What a fired inactivity timer did.
#[derive(Debug, Clone, PartialEq)]
pub enum TimerOutcome {
    /// The cart was open and untouched since the timer was set: now abandoned.
    Abandoned { events: Vec<EventEnvelope> },
    /// A later activity replaced the timer (or won the race against it).
    Superseded,
    /// The cart is checked out or already abandoned.
    NotOpen,
    /// Not a cart inactivity timer, or no such cart.
    Ignored,
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

pub struct CartService {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    scheduler: Arc<dyn Scheduler>,
    inactivity: Duration,
    max_attempts: u32,
}

impl CartService {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>, scheduler: Arc<dyn Scheduler>) -> Self {
        CartService {
            store,
            clock,
            scheduler,
            inactivity: Duration::minutes(DEFAULT_INACTIVITY_MINUTES),
            max_attempts: 8,
        }
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
        let stream = stream_id(cart_id);
        let loaded = self.store.load(&stream).await?;
        let events = match loaded.snapshot {
            Some(_) => self.store.read_stream(&stream, 0, usize::MAX).await?,
            None => loaded.events,
        };
        let mut state = None;
        for envelope in &events {
            let event = CartEvent::from_envelope(envelope)?;
            state = evolve(state, &event, envelope.occurred_at, envelope.version);
        }
        Ok(state)
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
        if let Some(key) = idempotency {
            if let Some(receipt) = self.store.receipt(&key.receipt_key).await? {
                let replayed = replay(&receipt, key)?;
                // The first attempt may have stored the events and then
                // failed to set the timer: set it now.
                if let Some(cart) = self.load(cart_id).await? {
                    self.sync_timer(&cart).await?;
                }
                return Ok(replayed);
            }
        }
        let stream = stream_id(cart_id);
        for _attempt in 0..self.max_attempts {
            let state = self.load(cart_id).await?;
            let decided = decide(state.as_ref(), command, cart_id)?;
            let now = self.clock.now();
            let current_version = state.as_ref().map_or(0, |c| c.version);
            let expected = match state {
                None => ExpectedVersion::NoStream,
                Some(_) => ExpectedVersion::Exactly(current_version),
            };
            let mut new_state = state;
            for (i, event) in decided.iter().enumerate() {
                new_state = evolve(new_state, event, now, current_version + 1 + i as u64);
            }
            let Some(new_state) = new_state else {
                return Err(CartError::NotFound.into());
            };
            let mut stored = envelopes(&stream, Some(&new_state.customer_id), &decided, meta, now)?;
            for (i, envelope) in stored.iter_mut().enumerate() {
                envelope.version = current_version + 1 + i as u64;
            }
            let (status, body) = respond(&new_state, &stored);
            let receipt = idempotency.map(|key| CommandReceipt {
                key: key.receipt_key.clone(),
                request_hash: key.request_hash.clone(),
                status,
                body: body.clone(),
                recorded_at: now,
            });
            let request = AppendRequest {
                stream_id: stream.clone(),
                expected,
                events: stored,
                reservations: Vec::new(),
                receipt,
            };
            match self.store.append(request).await {
                Ok(appended) => {
                    // After the append: an outside effect under a deterministic
                    // name, safe to repeat.
                    self.sync_timer(&new_state).await?;
                    return Ok(CartExecuted::Applied {
                        cart: Box::new(new_state),
                        events: appended.events,
                        status,
                        body,
                    });
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(AppendError::DuplicateCommand(receipt)) => match idempotency {
                    Some(key) => return replay(&receipt, key),
                    None => return Err(StoreError::Failed("unexpected duplicate command".into()).into()),
                },
                Err(AppendError::ReservationTaken { key }) => {
                    return Err(StoreError::Failed(format!("unexpected reservation {key}")).into())
                }
                Err(AppendError::TooLarge(reason)) => return Err(CartCommandError::TooLarge(reason)),
                Err(AppendError::Store(e)) => return Err(e.into()),
            }
        }
        Err(CartCommandError::Contended {
            attempts: self.max_attempts,
        })
    }

    /// Sets the timer of an open cart (due one inactivity period after its
    /// last activity, tagged with its version), cancels it otherwise.
    pub async fn sync_timer(&self, cart: &Cart) -> Result<(), SchedulerError> {
        let name = inactivity_timer_name(&cart.id);
        if cart.status != CartStatus::Open {
            return self.scheduler.cancel(&name).await;
        }
        self.scheduler
            .schedule(TimerPayload {
                name,
                kind: TimerKind::CartInactivity,
                stream_id: stream_id(&cart.id),
                customer_id: Some(cart.customer_id.clone()),
                due_at: cart.last_activity_at + self.inactivity,
                set_at_version: cart.version,
                data: serde_json::json!({}),
            })
            .await
    }

    /// A cart inactivity timer fired at `now`: abandons the cart unless a
    /// later activity replaced the timer or the cart is no longer open.
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
        if cart.status != CartStatus::Open {
            return Ok(TimerOutcome::NotOpen);
        }
        if payload.set_at_version != cart.version {
            return Ok(TimerOutcome::Superseded);
        }
        let decided = decide(Some(&cart), &CartCommand::MarkAbandoned { now }, cart_id)?;
        let meta = CommandMeta::new(Actor::system("cart-inactivity"));
        let mut stored = envelopes(&stream_id(cart_id), Some(&cart.customer_id), &decided, &meta, now)?;
        for (i, envelope) in stored.iter_mut().enumerate() {
            envelope.version = cart.version + 1 + i as u64;
        }
        let request = AppendRequest {
            stream_id: stream_id(cart_id),
            expected: ExpectedVersion::Exactly(cart.version),
            events: stored,
            reservations: Vec::new(),
            receipt: None,
        };
        match self.store.append(request).await {
            Ok(appended) => Ok(TimerOutcome::Abandoned {
                events: appended.events,
            }),
            // A concurrent activity won; it set a new timer.
            Err(AppendError::Conflict { .. }) => Ok(TimerOutcome::Superseded),
            Err(AppendError::TooLarge(reason)) => Err(CartCommandError::TooLarge(reason)),
            Err(AppendError::Store(e)) => Err(e.into()),
            Err(other) => Err(StoreError::Failed(other.to_string()).into()),
        }
    }
}

fn replay(receipt: &CommandReceipt, key: &IdempotencyKey) -> Result<CartExecuted, CartCommandError> {
    if receipt.request_hash != key.request_hash {
        return Err(CartCommandError::IdempotencyKeyReused);
    }
    Ok(CartExecuted::Replayed {
        status: receipt.status,
        body: receipt.body.clone(),
    })
}
