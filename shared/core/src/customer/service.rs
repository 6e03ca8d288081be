//! The customer application service: load, decide, append atomically (with
//! reservations and an idempotency receipt), retry on a concurrency conflict.

use super::aggregate::{decide, evolve, reservations_for, Customer, DecisionInput};
use super::commands::CustomerCommand;
use super::events::CustomerEvent;
use super::{stream_id, CustomerError};
use crate::clock::Clock;
use crate::event::{envelopes, CommandMeta, DomainEvent, EventCodecError, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::ports::{AppendError, AppendRequest, CommandReceipt, EventStore, ExpectedVersion, Snapshot, StoreError};
use std::sync::Arc;
use uuid::Uuid;

/// The shape of [`Customer`] kept in snapshots; bump it when `Customer` changes.
const SNAPSHOT_SCHEMA: u32 = 1;

/// Builds the answer stored in the receipt (status, JSON body) from the new
/// state and the events just written.
pub type ResponseBuilder<'a> = &'a (dyn Fn(&Customer, &[EventEnvelope]) -> (u16, serde_json::Value) + Send + Sync);

/// An idempotent request: its scoped key and fingerprint.
pub type IdempotencyRequest = IdempotencyKey;

/// What executing a command did.
#[derive(Debug, Clone, PartialEq)]
pub enum Executed {
    /// The command was applied now.
    Applied {
        customer: Box<Customer>,
        events: Vec<EventEnvelope>,
        status: u16,
        body: serde_json::Value,
    },
    /// The same request was applied before; this is its first answer.
    Replayed { status: u16, body: serde_json::Value },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rejected(#[from] CustomerError),
    /// The email belongs to another customer (409).
    #[error("{field}: this email address is already registered")]
    EmailTaken { field: &'static str },
    /// The idempotency key was first used for a different request (422).
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    /// Other writers kept winning (409, retry later).
    #[error("the customer kept changing; gave up after {attempts} attempts")]
    Contended { attempts: u32 },
    #[error("command too large: {0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] EventCodecError),
}

impl CommandError {
    /// Worth retrying the same request later?
    pub fn is_retryable(&self) -> bool {
        match self {
            CommandError::Store(e) => e.is_retryable(),
            CommandError::Contended { .. } => true,
            _ => false,
        }
    }
}

pub struct CustomerService {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
    max_attempts: u32,
    snapshot_every: u64,
}

impl CustomerService {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        CustomerService {
            store,
            clock,
            max_attempts: 8,
            snapshot_every: 100,
        }
    }

    /// Snapshot a stream each time it passes a multiple of `every` events.
    pub fn with_snapshot_every(mut self, every: u64) -> Self {
        self.snapshot_every = every.max(1);
        self
    }

    /// The service's clock's "now".
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The customer's current state, or `None` if there is no such customer.
    pub async fn load(&self, customer_id: &str) -> Result<Option<Customer>, CommandError> {
        let stream = stream_id(customer_id);
        let loaded = self.store.load(&stream).await?;
        let (mut state, events) = match loaded.snapshot {
            Some(s) if s.state_schema == SNAPSHOT_SCHEMA => match serde_json::from_value::<Customer>(s.state) {
                Ok(c) => (Some(c), loaded.events),
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %e, "unreadable snapshot, folding the whole stream");
                    (None, self.store.read_stream(&stream, 0, usize::MAX).await?)
                }
            },
            Some(_) => (None, self.store.read_stream(&stream, 0, usize::MAX).await?),
            None => (None, loaded.events),
        };
        for envelope in &events {
            let event = CustomerEvent::from_envelope(envelope)?;
            state = evolve(state, &event, envelope.occurred_at, envelope.version);
        }
        Ok(state)
    }

    /// Runs a command: for `Register`, `customer_id` is the id the new
    /// customer gets. Retries a conflicting write by reloading and deciding
    /// again; answers a repeated idempotent request from its receipt.
    pub async fn execute(
        &self,
        customer_id: &str,
        command: &CustomerCommand,
        meta: &CommandMeta,
        idempotency: Option<&IdempotencyRequest>,
        respond: ResponseBuilder<'_>,
    ) -> Result<Executed, CommandError> {
        if let Some(key) = idempotency {
            if let Some(receipt) = self.store.receipt(&key.receipt_key).await? {
                return replay(&receipt, key);
            }
        }
        let stream = stream_id(customer_id);
        let input = DecisionInput {
            new_customer_id: customer_id.to_string(),
            verification_token: Uuid::new_v4().simple().to_string(),
        };
        for _attempt in 0..self.max_attempts {
            let state = self.load(customer_id).await?;
            let decided = decide(state.as_ref(), command, &input)?;
            let now = self.clock.now();
            let current_version = state.as_ref().map_or(0, |c| c.version);
            let expected = match state {
                None => ExpectedVersion::NoStream,
                Some(_) => ExpectedVersion::Exactly(current_version),
            };
            let mut stored = envelopes(&stream, Some(customer_id), &decided, meta, now)?;
            let mut new_state = state;
            for (i, (envelope, event)) in stored.iter_mut().zip(&decided).enumerate() {
                envelope.version = current_version + 1 + i as u64;
                new_state = evolve(new_state, event, now, envelope.version);
            }
            let Some(new_state) = new_state else {
                return Err(CustomerError::NotFound.into());
            };
            let (status, body) = respond(&new_state, &stored);
            let receipt = idempotency.map(|key| CommandReceipt {
                key: key.receipt_key.clone(),
                request_hash: key.request_hash.clone(),
                status,
                body: body.clone(),
                recorded_at: now,
            });
            if stored.is_empty() && receipt.is_none() {
                return Ok(Executed::Applied {
                    customer: Box::new(new_state),
                    events: stored,
                    status,
                    body,
                });
            }
            let request = AppendRequest {
                stream_id: stream.clone(),
                expected,
                events: stored,
                reservations: reservations_for(customer_id, &decided),
                receipt,
            };
            match self.store.append(request).await {
                Ok(appended) => {
                    self.maybe_snapshot(&stream, current_version, &new_state).await;
                    return Ok(Executed::Applied {
                        customer: Box::new(new_state),
                        events: appended.events,
                        status,
                        body,
                    });
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(AppendError::ReservationTaken { .. }) => {
                    let field = match command {
                        CustomerCommand::ChangeEmail(_) => "new_email",
                        _ => "email",
                    };
                    return Err(CommandError::EmailTaken { field });
                }
                Err(AppendError::DuplicateCommand(receipt)) => match idempotency {
                    Some(key) => return replay(&receipt, key),
                    None => return Err(StoreError::Failed("unexpected duplicate command".into()).into()),
                },
                Err(AppendError::TooLarge(reason)) => return Err(CommandError::TooLarge(reason)),
                Err(AppendError::Store(e)) => return Err(e.into()),
            }
        }
        Err(CommandError::Contended {
            attempts: self.max_attempts,
        })
    }

    async fn maybe_snapshot(&self, stream: &str, before: u64, state: &Customer) {
        if before / self.snapshot_every == state.version / self.snapshot_every {
            return;
        }
        let snapshot = match serde_json::to_value(state) {
            Ok(value) => Snapshot {
                stream_id: stream.to_string(),
                version: state.version,
                state_schema: SNAPSHOT_SCHEMA,
                state: value,
            },
            Err(e) => {
                tracing::warn!(stream, error = %e, "could not serialise snapshot");
                return;
            }
        };
        if let Err(e) = self.store.save_snapshot(snapshot).await {
            // A missing snapshot only makes loading slower; the events are safe.
            tracing::warn!(stream, error = %e, "could not save snapshot");
        }
    }
}

fn replay(receipt: &CommandReceipt, key: &IdempotencyKey) -> Result<Executed, CommandError> {
    if receipt.request_hash != key.request_hash {
        return Err(CommandError::IdempotencyKeyReused);
    }
    Ok(Executed::Replayed {
        status: receipt.status,
        body: receipt.body.clone(),
    })
}
