//! The customer application service: the shared command loop
//! ([`AggregateService`]: load from the newest snapshot, decide, append
//! atomically with the email reservations and an idempotency receipt, retry
//! on a concurrency conflict, snapshot every 100 events).

use super::aggregate::{decide, evolve, reservations_for, Customer, DecisionInput};
use super::commands::CustomerCommand;
use super::events::CustomerEvent;
use super::keyed_reservations::KeyedReservations;
use super::{stream_id, CustomerError};
use crate::aggregate::{Aggregate, AggregateError, AggregateService, DecideContext};
use crate::clock::Clock;
use crate::event::{CommandMeta, EventCodecError, EventEnvelope};
use crate::failure::{Classify, FailureKind};
use crate::idempotency::IdempotencyKey;
use crate::ports::{EventStore, ReservationChange, StoreError};
use crate::privacy::IdentifierHasher;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

/// The shape of [`Customer`] kept in snapshots; bump it when `Customer` changes.
const SNAPSHOT_SCHEMA: u32 = 1;

/// Builds the answer stored in the receipt (status, JSON body) from the new
/// state and the events just written.
pub type ResponseBuilder<'a> = &'a (dyn Fn(&Customer, &[EventEnvelope]) -> (u16, serde_json::Value) + Send + Sync);

/// An idempotent request: its scoped key and fingerprint.
pub type IdempotencyRequest = IdempotencyKey;

/// What executing a customer command did.
pub type Executed = crate::aggregate::Executed<Customer>;

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

/// As [`AggregateError`] classifies the same cases: the store's kind, other
/// writers winning is a conflict, everything else is poison.
impl Classify for CommandError {
    fn kind(&self) -> FailureKind {
        match self {
            CommandError::Store(e) => e.kind(),
            CommandError::Contended { .. } => FailureKind::Conflict,
            CommandError::Rejected(_)
            | CommandError::EmailTaken { .. }
            | CommandError::IdempotencyKeyReused
            | CommandError::TooLarge(_)
            | CommandError::Codec(_) => FailureKind::Poison,
        }
    }
}

/// The customer aggregate for [`AggregateService`].
pub struct CustomerAggregate;

impl Aggregate for CustomerAggregate {
    type State = Customer;
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;
    type Input = DecisionInput;

    const SNAPSHOT_SCHEMA: Option<u32> = Some(SNAPSHOT_SCHEMA);

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }
    fn customer_id(state: &Customer) -> Option<&str> {
        Some(&state.id)
    }
    fn version(state: &Customer) -> u64 {
        state.version
    }
    fn not_found() -> CustomerError {
        CustomerError::NotFound
    }
    fn decide(
        state: Option<&Customer>,
        command: &CustomerCommand,
        ctx: &DecideContext<'_, DecisionInput>,
    ) -> Result<Vec<CustomerEvent>, CustomerError> {
        decide(state, command, ctx.input, ctx.now)
    }
    fn evolve(state: Option<Customer>, event: &CustomerEvent, at: DateTime<Utc>, version: u64) -> Option<Customer> {
        evolve(state, event, at, version)
    }
    fn reservations(id: &str, state: Option<&Customer>, events: &[CustomerEvent]) -> Vec<ReservationChange> {
        reservations_for(id, state, events)
    }
    fn to_snapshot(state: &Customer) -> Option<serde_json::Value> {
        serde_json::to_value(state).ok()
    }
    fn from_snapshot(value: serde_json::Value) -> Option<Customer> {
        serde_json::from_value(value).ok()
    }
}

/// Runs customer commands. Email reservations are written under the keyed
/// hash of the address ([`KeyedReservations`], decision 0046): a service
/// that registers customers, changes emails or erases needs the identifier
/// secret ([`CustomerService::with_identifiers`]); without it those commands
/// fail and write nothing, every other command works.
pub struct CustomerService {
    customers: AggregateService<CustomerAggregate>,
    keyed: Arc<KeyedReservations>,
    clock: Arc<dyn Clock>,
    snapshot_every: Option<u64>,
    identifiers: Option<IdentifierHasher>,
}

impl CustomerService {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        let keyed = Arc::new(KeyedReservations::new(store, None));
        CustomerService {
            customers: AggregateService::new(keyed.clone(), clock.clone()),
            keyed,
            clock,
            snapshot_every: None,
            identifiers: None,
        }
    }

    /// Keys email reservations (and, through this service, the identity
    /// streams and ingestion's lookups) with the identifier secret.
    pub fn with_identifiers(self, identifiers: IdentifierHasher) -> Self {
        let keyed = Arc::new(KeyedReservations::new(
            self.keyed.inner().clone(),
            Some(identifiers.clone()),
        ));
        let mut customers = AggregateService::new(keyed.clone(), self.clock.clone());
        if let Some(every) = self.snapshot_every {
            customers = customers.with_snapshot_every(every);
        }
        CustomerService {
            customers,
            keyed,
            clock: self.clock,
            snapshot_every: self.snapshot_every,
            identifiers: Some(identifiers),
        }
    }

    /// The identifier secret's hasher, when the service has one.
    pub fn identifiers(&self) -> Option<&IdentifierHasher> {
        self.identifiers.as_ref()
    }

    /// Snapshot a stream each time it passes a multiple of `every` events.
    pub fn with_snapshot_every(mut self, every: u64) -> Self {
        self.customers = self.customers.with_snapshot_every(every);
        self.snapshot_every = Some(every);
        self
    }

    /// The service's clock's "now".
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.customers.now()
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        self.customers.store()
    }

    /// The customer's current state, or `None` if there is no such customer.
    pub async fn load(&self, customer_id: &str) -> Result<Option<Customer>, CommandError> {
        self.customers
            .load(customer_id)
            .await
            .map_err(|e| from_aggregate(e, None))
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
        let input = DecisionInput {
            new_customer_id: customer_id.to_string(),
            verification_token: Uuid::new_v4().simple().to_string(),
        };
        self.customers
            .execute(customer_id, command, &input, meta, idempotency, respond)
            .await
            .map_err(|e| from_aggregate(e, Some(command)))
    }
}

/// The customer's errors from the shared loop's: a taken reservation is the
/// email of the command.
fn from_aggregate(e: AggregateError<CustomerError>, command: Option<&CustomerCommand>) -> CommandError {
    match e {
        AggregateError::Rejected(e) => CommandError::Rejected(e),
        AggregateError::ReservationTaken { .. } => CommandError::EmailTaken {
            field: match command {
                Some(CustomerCommand::ChangeEmail(_)) => "new_email",
                _ => "email",
            },
        },
        AggregateError::IdempotencyKeyReused => CommandError::IdempotencyKeyReused,
        AggregateError::Contended { attempts } => CommandError::Contended { attempts },
        AggregateError::TooLarge(reason) => CommandError::TooLarge(reason),
        AggregateError::Store(e) => CommandError::Store(e),
        AggregateError::Codec(e) => CommandError::Codec(e),
    }
}
