//! Identity resolution (issue 8, decision 0023): activity from an
//! `anonymousId` accumulates on an anonymous profile, and `identify` or
//! `alias` merges that profile into a known customer.
//!
//! * An anonymous profile's id is derived from the `anonymousId`
//!   ([`anonymous_profile_id`]): a UUID of the custom version (8), so it is
//!   known to be anonymous without a lookup ([`is_anonymous_profile`]) and
//!   never collides with a customer id (version 7).
//! * `identity-<profile id>` holds at most one `AnonymousProfileMerged`: the
//!   customer the profile now belongs to. It is appended with
//!   `ExpectedVersion::NoStream`, so of two concurrent merges one wins, and a
//!   merge into another customer is refused: an anonymous profile never
//!   joins two customers.
//! * `user-<keyed hash of the user id>` holds at most one `UserIdLinked`:
//!   which customer a source's `userId` names (first link wins; the user id
//!   itself is not stored, it may be an email address). The hash is an HMAC
//!   under the identifier secret (decision 0046), so the stream's name
//!   cannot be found by hashing a list of addresses. A link made before
//!   decision 0046 lives on a stream named by the unkeyed SHA-256
//!   ([`unkeyed_user_stream`]); it is still read, and carried over to the
//!   keyed stream when its user id is next linked.
//! * A user id known only by its id (a `server` source identified it without
//!   an email address, decision 0051) has a profile of its own, like an
//!   anonymous profile: [`user_profile_id`], derived from the user id's
//!   keyed hash, linked as the user id's first link. Its activity, carts
//!   and journeys live there; when the user id is identified with an email,
//!   the profile is merged into that customer, and the link (which still
//!   names the profile) resolves to them ([`IdentityService::customer_of_user`]).
//! * The customer's own stream records `CustomersMerged`, which the
//!   projections and the journey engine follow.

use crate::aggregate::{Aggregate, AggregateError, AggregateService, DecideContext, Executed};
use crate::clock::Clock;
use crate::customer::{CommandError, CustomerCommand, CustomerService, RecordMerge};
use crate::event::{CommandMeta, DomainEvent, EventEnvelope};
use crate::failure::{Classify, FailureKind};
use crate::ports::{EventStore, StoreError};
use crate::privacy::{IdentifierHasher, LookupKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The events of identity streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum IdentityEvent {
    /// The anonymous profile belongs to `customer_id` from now on.
    AnonymousProfileMerged { customer_id: String },
    /// A source's user id names `customer_id`.
    UserIdLinked { customer_id: String },
}

impl DomainEvent for IdentityEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// Every event type of identity streams.
pub const IDENTITY_EVENT_TYPES: &[&str] = &["AnonymousProfileMerged", "UserIdLinked"];

fn digest(domain: &str, value: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(domain.as_bytes());
    hash.update([0u8]);
    hash.update(value.as_bytes());
    hash.finalize().into()
}

/// The id of the anonymous profile of `anonymous_id`.
pub fn anonymous_profile_id(anonymous_id: &str) -> String {
    let digest = digest("crm-anonymous-profile", anonymous_id);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// The profile of a user id known only by its id (decision 0051): a UUID of
/// the custom version, like [`anonymous_profile_id`], derived from the user
/// id's keyed hash (decision 0046), so the id names no user id and cannot be
/// found by hashing a list of them. It is an anonymous profile in every
/// other respect ([`is_anonymous_profile`]): it is merged into a customer,
/// never joined to two.
pub fn user_profile_id(identifiers: &IdentifierHasher, user_id: &str) -> String {
    let digest = digest("crm-user-profile", &identifiers.lookup(LookupKind::UserId, user_id));
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// Whether `id` names an anonymous profile (not a registered customer).
pub fn is_anonymous_profile(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version() == Some(uuid::Version::Custom))
}

/// The identity stream of an anonymous profile.
pub fn identity_stream(profile_id: &str) -> String {
    format!("identity-{profile_id}")
}

/// The stream naming which customer a user id belongs to: `user-` and the
/// first 128 bits of the user id's keyed hash.
pub fn user_stream(identifiers: &IdentifierHasher, user_id: &str) -> String {
    let hash = identifiers.lookup(LookupKind::UserId, user_id);
    format!("user-{}", &hash[..32])
}

/// The stream links were made on before decision 0046 (an unkeyed SHA-256
/// of the user id): read only, never appended to.
pub fn unkeyed_user_stream(user_id: &str) -> String {
    format!("user-{}", hex::encode(&digest("crm-user-id", user_id)[..16]))
}

/// The customer of the first event of an identity `stream`, if any.
async fn owner(store: &dyn EventStore, stream: &str) -> Result<Option<String>, StoreError> {
    let first = store.read_stream(stream, 0, 1).await?;
    Ok(first.first().and_then(|e| match IdentityEvent::from_envelope(e) {
        Ok(IdentityEvent::AnonymousProfileMerged { customer_id } | IdentityEvent::UserIdLinked { customer_id }) => {
            Some(customer_id)
        }
        Err(_) => None,
    }))
}

/// The customer an anonymous profile was merged into (strongly consistent:
/// read from the event store).
pub async fn merged_into(store: &dyn EventStore, profile_id: &str) -> Result<Option<String>, StoreError> {
    if !is_anonymous_profile(profile_id) {
        return Ok(None);
    }
    owner(store, &identity_stream(profile_id)).await
}

/// Who `id` is now: the customer an anonymous profile was merged into, else
/// `id` itself.
pub async fn resolve(store: &dyn EventStore, id: &str) -> Result<String, StoreError> {
    Ok(merged_into(store, id).await?.unwrap_or_else(|| id.to_string()))
}

/// The owner an identity stream names: the customer of its first event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityClaim {
    pub customer_id: String,
    pub version: u64,
}

/// What an identity stream can be asked: to name its owner, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimCommand {
    /// The anonymous profile joins `customer_id` (`identity-<profile id>`).
    MergeProfile { customer_id: String },
    /// The user id names `customer_id` (`user-<keyed hash>`).
    LinkUserId { customer_id: String },
}

/// The claim after `event`: the first event names the owner for good.
pub fn evolve(state: Option<IdentityClaim>, event: &IdentityEvent, version: u64) -> Option<IdentityClaim> {
    let (IdentityEvent::AnonymousProfileMerged { customer_id } | IdentityEvent::UserIdLinked { customer_id }) = event;
    let mut claim = state.unwrap_or_else(|| IdentityClaim {
        customer_id: customer_id.clone(),
        version: 0,
    });
    claim.version = version;
    Some(claim)
}

/// The first claim wins: a stream that names an owner already takes nothing more.
pub fn decide(state: Option<&IdentityClaim>, command: &ClaimCommand) -> Vec<IdentityEvent> {
    if state.is_some() {
        return Vec::new();
    }
    vec![match command {
        ClaimCommand::MergeProfile { customer_id } => IdentityEvent::AnonymousProfileMerged {
            customer_id: customer_id.clone(),
        },
        ClaimCommand::LinkUserId { customer_id } => IdentityEvent::UserIdLinked {
            customer_id: customer_id.clone(),
        },
    }]
}

/// A claim is never refused; this is the command path's answer to a claim
/// that wrote nothing on a stream naming no one (which [`decide`] never does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the identity stream names no customer")]
    Unclaimed,
}

/// An identity stream for the shared command path: the aggregate id is the
/// stream's name ([`identity_stream`], [`user_stream`]).
pub struct IdentityStream;

impl Aggregate for IdentityStream {
    type State = IdentityClaim;
    type Command = ClaimCommand;
    type Event = IdentityEvent;
    type Error = ClaimError;
    type Input = ();

    fn stream_id(id: &str) -> String {
        id.to_string()
    }
    fn customer_id(state: &IdentityClaim) -> Option<&str> {
        Some(&state.customer_id)
    }
    fn version(state: &IdentityClaim) -> u64 {
        state.version
    }
    fn not_found() -> ClaimError {
        ClaimError::Unclaimed
    }
    fn decide(
        state: Option<&IdentityClaim>,
        command: &ClaimCommand,
        _: &DecideContext<'_, ()>,
    ) -> Result<Vec<IdentityEvent>, ClaimError> {
        Ok(decide(state, command))
    }
    fn evolve(
        state: Option<IdentityClaim>,
        event: &IdentityEvent,
        _: DateTime<Utc>,
        version: u64,
    ) -> Option<IdentityClaim> {
        evolve(state, event, version)
    }
}

/// Why identities were not joined.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum IdentityError {
    /// The merge or link would join two different known customers.
    #[error("{0}")]
    Refused(String),
    /// The customer's side of a merge failed.
    #[error(transparent)]
    Customer(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The identity stream's claim failed (its store, an unreadable event,
    /// other writers that kept winning).
    #[error("identity claim: {0}")]
    Claim(#[from] AggregateError<ClaimError>),
}

impl Classify for IdentityError {
    fn kind(&self) -> FailureKind {
        match self {
            IdentityError::Refused(_) => FailureKind::Poison,
            IdentityError::Customer(e) => e.kind(),
            IdentityError::Store(e) => e.kind(),
            IdentityError::Claim(e) => e.kind(),
        }
    }
}

impl IdentityError {
    /// Worth retrying later ([`Classify::retryable`]); kept for ingestion's
    /// conversion, which still asks this way.
    pub fn is_retryable(&self) -> bool {
        self.retryable()
    }
}

/// The customer service's clock, for the identity streams' command path (a
/// merge's two sides are stamped by the same clock).
struct CustomersClock(Arc<CustomerService>);

impl Clock for CustomersClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}

/// What a merge did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    Merged,
    /// The profile was merged into this customer before: nothing changed.
    AlreadyMerged,
}

/// Reads and joins identities.
#[derive(Clone)]
pub struct IdentityService {
    store: Arc<dyn EventStore>,
    customers: Arc<CustomerService>,
    claims: Arc<AggregateService<IdentityStream>>,
}

impl IdentityService {
    /// Identities over `store`; user ids are hashed with the identifier
    /// secret of `customers` ([`CustomerService::with_identifiers`]): without
    /// one, user ids can be neither looked up nor linked.
    pub fn new(store: Arc<dyn EventStore>, customers: Arc<CustomerService>) -> Self {
        let clock = Arc::new(CustomersClock(customers.clone()));
        IdentityService {
            claims: Arc::new(AggregateService::new(store.clone(), clock)),
            store,
            customers,
        }
    }

    fn identifiers(&self) -> Result<&IdentifierHasher, StoreError> {
        self.customers
            .identifiers()
            .ok_or_else(|| StoreError::Failed(crate::customer::NO_IDENTIFIER_SECRET.into()))
    }

    async fn owner(&self, stream: &str) -> Result<Option<String>, StoreError> {
        owner(self.store.as_ref(), stream).await
    }

    /// The customer an anonymous profile was merged into.
    pub async fn merged_into(&self, profile_id: &str) -> Result<Option<String>, StoreError> {
        merged_into(self.store.as_ref(), profile_id).await
    }

    /// Who `id` is now (see [`resolve`]).
    pub async fn resolve(&self, id: &str) -> Result<String, StoreError> {
        resolve(self.store.as_ref(), id).await
    }

    /// Whom a user id names: the customer it was linked to (on its keyed
    /// stream, else on the stream of a link made before decision 0046). A
    /// link to the user id's own profile ([`user_profile_id`]) names that
    /// profile until it is merged, then the customer it was merged into.
    pub async fn customer_of_user(&self, user_id: &str) -> Result<Option<String>, StoreError> {
        let linked = match self.owner(&user_stream(self.identifiers()?, user_id)).await? {
            Some(customer) => Some(customer),
            None => self.owner(&unkeyed_user_stream(user_id)).await?,
        };
        match linked {
            Some(id) => Ok(Some(self.resolve(&id).await?)),
            None => Ok(None),
        }
    }

    /// The profile of `user_id` known only by its id ([`user_profile_id`]).
    pub fn user_profile(&self, user_id: &str) -> Result<String, StoreError> {
        Ok(user_profile_id(self.identifiers()?, user_id))
    }

    /// Claims an identity `stream` for the command's customer; `Ok(None)`
    /// when this claim was the first, `Ok(Some(owner))` naming the owner
    /// when the stream had one already (a lost race is loaded and decided again).
    async fn claim(
        &self,
        stream: &str,
        command: ClaimCommand,
        meta: &CommandMeta,
    ) -> Result<Option<String>, IdentityError> {
        let respond = |_: &IdentityClaim, _: &[EventEnvelope]| (200, serde_json::Value::Null);
        match self.claims.execute(stream, &command, &(), meta, None, &respond).await? {
            Executed::Applied { state, events, .. } if events.is_empty() => Ok(Some(state.customer_id)),
            Executed::Applied { .. } | Executed::Replayed { .. } => Ok(None),
        }
    }

    /// Links `user_id` to `customer_id` (once; linking it again to the same
    /// customer is a no-op, to another one is refused). A link made before
    /// decision 0046 still wins: it is carried over to the keyed stream. A
    /// link to the user id's profile counts as a link to the customer the
    /// profile was merged into (merge it first, then link).
    pub async fn link_user(&self, user_id: &str, customer_id: &str, meta: &CommandMeta) -> Result<(), IdentityError> {
        let keyed = user_stream(self.identifiers()?, user_id);
        let linked_to = match self.owner(&unkeyed_user_stream(user_id)).await? {
            Some(earlier) => earlier,
            None => customer_id.to_string(),
        };
        let command = ClaimCommand::LinkUserId {
            customer_id: linked_to.clone(),
        };
        let owner = match self.claim(&keyed, command, meta).await? {
            Some(owner) => self.resolve(&owner).await?,
            None => self.resolve(&linked_to).await?,
        };
        if owner == customer_id {
            Ok(())
        } else {
            Err(IdentityError::Refused(format!(
                "userId already belongs to customer {owner}"
            )))
        }
    }

    /// Merges the anonymous profile into the customer: once, and never into
    /// a second customer.
    pub async fn merge(
        &self,
        profile_id: &str,
        customer_id: &str,
        meta: &CommandMeta,
    ) -> Result<MergeOutcome, IdentityError> {
        if !is_anonymous_profile(profile_id) {
            return Err(IdentityError::Refused(format!(
                "{profile_id} is a known customer: two known customers are never merged"
            )));
        }
        if is_anonymous_profile(customer_id) {
            // Checked before anything is written: a profile merged into
            // another profile would be claimed by no customer.
            return Err(IdentityError::Refused(format!(
                "{customer_id} is a profile, not a customer: a profile is merged only into a customer"
            )));
        }
        let command = ClaimCommand::MergeProfile {
            customer_id: customer_id.to_string(),
        };
        let outcome = match self.claim(&identity_stream(profile_id), command, meta).await? {
            None => MergeOutcome::Merged,
            Some(owner) if owner == customer_id => MergeOutcome::AlreadyMerged,
            Some(owner) => {
                return Err(IdentityError::Refused(format!(
                    "the anonymous profile was merged into customer {owner} already: \
                     it would join two different known customers"
                )))
            }
        };
        // The customer's side (idempotent: finishes an interrupted merge too).
        let respond = |_: &crate::customer::Customer, _: &[EventEnvelope]| (200, serde_json::Value::Null);
        let command = CustomerCommand::RecordMerge(RecordMerge {
            profile_id: profile_id.to_string(),
        });
        self.customers
            .execute(customer_id, &command, meta, None, &respond)
            .await?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
