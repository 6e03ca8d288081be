//! The proof ledger (decision 0019): when consent was granted or revoked,
//! by which method, and when an erasure happened, keyed by the salted hash
//! of the identifier (email, phone) rather than by the customer. It holds no
//! personal data, outlives erasure, and so proves an opt-out afterwards; the
//! channel function reads it to honour one: an address whose customer was
//! erased gets no marketing until someone consents on it again.
//!
//! Documents:
//! * `customer#<id>` / `state`: the customer's current identifier hashes and
//!   their consent history (no IP, no user agent), while the customer
//!   exists; deleted on `CustomerErased`.
//! * `<kind>#<hash>` / `consent#<time>#<event id>`: a consent change made
//!   while the identifier belonged to a customer.
//! * `<kind>#<hash>` / `erasure#<time>#<event id>`: an erasure, with the
//!   erased customer's whole consent history. Rebuilt from the events alone
//!   even after the data key is gone: `CustomerErasureRequested` carries the
//!   hashes.

use super::{Channel, ConsentMethod, Purpose};
use crate::consumer::{Projection, ProjectionError};
use crate::customer::CustomerEvent;
use crate::event::{DomainEvent, EventEnvelope};
use crate::ports::{ReadModelStore, ReadOp, StoreError};
use crate::privacy::{HashedIdentifier, IdentifierHasher, IdentifierKind, ERASED};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const PROOF_LEDGER: &str = "proof-ledger";

const STATE: &str = "state";
const CONSENT_PREFIX: &str = "consent#";
const ERASURE_PREFIX: &str = "erasure#";

/// One consent change, as the proof ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentChangeProof {
    pub event_id: uuid::Uuid,
    pub granted: bool,
    pub purpose: Purpose,
    pub channel: Channel,
    #[serde(default)]
    pub method: Option<ConsentMethod>,
    #[serde(default)]
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
}

/// An erasure of a customer who had this identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureProof {
    pub requested_at: DateTime<Utc>,
    #[serde(default)]
    pub erased_at: Option<DateTime<Utc>>,
    /// Every consent change of the erased customer, oldest first.
    pub consents: Vec<ConsentChangeProof>,
}

/// The ledger's state of one living customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CustomerState {
    identifiers: Vec<HashedIdentifier>,
    consents: Vec<ConsentChangeProof>,
    /// Set by `CustomerErasureRequested`: the identifiers and the sort key
    /// of the erasure documents, completed by `CustomerErased`.
    #[serde(default)]
    erasing: Option<(Vec<HashedIdentifier>, String)>,
}

/// Everything the ledger holds about one identifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifierProof {
    pub consents: Vec<ConsentChangeProof>,
    pub erasures: Vec<ErasureProof>,
}

impl IdentifierProof {
    /// When marketing on `channel` to this identifier stopped for good: the
    /// latest erasure, unless consent on that channel was granted on this
    /// identifier after it. A bulk import is not the person consenting
    /// again: it does not count.
    pub fn erased_without_consent(&self, channel: Channel) -> Option<DateTime<Utc>> {
        let erased = self.erasures.iter().map(|e| e.requested_at).max()?;
        let consented_since = self
            .consents
            .iter()
            .any(|c| c.granted && c.channel == channel && c.at > erased && c.method != Some(ConsentMethod::Import));
        (!consented_since).then_some(erased)
    }
}

fn partition(identifier: &HashedIdentifier) -> String {
    format!("{}#{}", identifier.kind, identifier.hash)
}

fn customer_partition(customer: &str) -> String {
    format!("customer#{customer}")
}

fn sort_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn invalid(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Invalid(e.to_string())
}

fn put(partition: String, sort: String, body: &impl Serialize) -> Result<ReadOp, ProjectionError> {
    Ok(ReadOp::Put {
        partition,
        sort,
        body: serde_json::to_value(body).map_err(invalid)?,
    })
}

/// What the ledger holds about `identifier` (empty when nothing).
pub async fn identifier_proof(
    docs: &dyn ReadModelStore,
    identifier: &HashedIdentifier,
) -> Result<IdentifierProof, StoreError> {
    let mut proof = IdentifierProof::default();
    let mut after: Option<String> = None;
    loop {
        let page = docs
            .list(PROOF_LEDGER, &partition(identifier), "", after.as_deref(), 500)
            .await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let full = page.len() == 500;
        for (sort, body) in page {
            let bad = |e: serde_json::Error| StoreError::Failed(format!("proof ledger {sort}: {e}"));
            if sort.starts_with(CONSENT_PREFIX) {
                proof.consents.push(serde_json::from_value(body).map_err(bad)?);
            } else if sort.starts_with(ERASURE_PREFIX) {
                proof.erasures.push(serde_json::from_value(body).map_err(bad)?);
            }
        }
        if !full {
            break;
        }
    }
    // The erased customers' histories hold the changes made under the
    // identifier too (the only copy after a rebuild): one list, by time.
    let mut seen: std::collections::HashSet<uuid::Uuid> = proof.consents.iter().map(|c| c.event_id).collect();
    for erasure in &proof.erasures {
        for c in &erasure.consents {
            if seen.insert(c.event_id) {
                proof.consents.push(c.clone());
            }
        }
    }
    proof.consents.sort_by_key(|c| (c.at, c.event_id));
    Ok(proof)
}

/// The proof ledger's projection (in the consent function).
pub struct ProofLedgerProjection {
    hasher: IdentifierHasher,
}

impl ProofLedgerProjection {
    pub fn new(hasher: IdentifierHasher) -> Self {
        ProofLedgerProjection { hasher }
    }

    fn identifier(&self, kind: IdentifierKind, value: &str) -> Option<HashedIdentifier> {
        // Read after erasure (a rebuild), a value is the marker: unknown.
        (!value.trim().is_empty() && value != ERASED).then(|| HashedIdentifier {
            kind,
            hash: self.hasher.hash(kind, value),
        })
    }
}

fn set_identifier(state: &mut CustomerState, kind: IdentifierKind, identifier: Option<HashedIdentifier>) {
    state.identifiers.retain(|i| i.kind != kind);
    state.identifiers.extend(identifier);
}

#[async_trait]
impl Projection for ProofLedgerProjection {
    fn name(&self) -> &'static str {
        PROOF_LEDGER
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "CustomerRegistered"
                | "CustomerEmailChanged"
                | "CustomerPhoneChanged"
                | "ConsentGranted"
                | "ConsentRevoked"
                | "CustomerErasureRequested"
                | "CustomerErased"
        )
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let customer = event
            .customer_id
            .as_deref()
            .ok_or_else(|| invalid(format!("{} has no customer_id", event.event_id)))?;
        let home = customer_partition(customer);
        let mut state: CustomerState = match docs.get(PROOF_LEDGER, &home, STATE).await? {
            Some(body) => serde_json::from_value(body).map_err(invalid)?,
            None => CustomerState::default(),
        };
        let mut ops = Vec::new();
        match CustomerEvent::from_envelope(event)? {
            CustomerEvent::CustomerRegistered { email, phone, .. } => {
                let email = self.identifier(IdentifierKind::Email, &email);
                let phone = phone.and_then(|p| self.identifier(IdentifierKind::Phone, &p));
                set_identifier(&mut state, IdentifierKind::Email, email);
                set_identifier(&mut state, IdentifierKind::Phone, phone);
            }
            CustomerEvent::CustomerEmailChanged { new_email, .. } => {
                // After erasure the new address is unknown: keep what was known.
                if let Some(email) = self.identifier(IdentifierKind::Email, &new_email) {
                    set_identifier(&mut state, IdentifierKind::Email, Some(email));
                }
            }
            CustomerEvent::CustomerPhoneChanged { new_phone, .. } => match new_phone {
                None => set_identifier(&mut state, IdentifierKind::Phone, None),
                Some(p) => {
                    if let Some(phone) = self.identifier(IdentifierKind::Phone, &p) {
                        set_identifier(&mut state, IdentifierKind::Phone, Some(phone));
                    }
                }
            },
            CustomerEvent::ConsentGranted {
                purpose,
                channel,
                method,
                ..
            } => {
                let change = ConsentChangeProof {
                    event_id: event.event_id,
                    granted: true,
                    purpose,
                    channel,
                    method: Some(method),
                    reason: None,
                    at: event.occurred_at,
                };
                ops.extend(record_change(&state, &change)?);
                state.consents.push(change);
            }
            CustomerEvent::ConsentRevoked {
                purpose,
                channel,
                reason,
                method,
            } => {
                let change = ConsentChangeProof {
                    event_id: event.event_id,
                    granted: false,
                    purpose,
                    channel,
                    method,
                    reason: Some(reason),
                    at: event.occurred_at,
                };
                ops.extend(record_change(&state, &change)?);
                state.consents.push(change);
            }
            CustomerEvent::CustomerErasureRequested { identifiers } => {
                // The hashes in the event are the ones known when the key
                // still existed (events from before they were recorded: ours).
                let identifiers = if identifiers.is_empty() {
                    state.identifiers.clone()
                } else {
                    identifiers
                };
                let sort = format!("{ERASURE_PREFIX}{}#{}", sort_time(event.occurred_at), event.event_id);
                state.identifiers = identifiers.clone();
                state.erasing = Some((identifiers, sort));
                // The erasure's own revocations follow in the same append:
                // the documents are written with the history on CustomerErased.
                ops.extend(erasure_docs(&state, event.occurred_at, None)?);
            }
            CustomerEvent::CustomerErased {} => {
                let requested_at = state
                    .erasing
                    .as_ref()
                    .and_then(|(_, sort)| sort.strip_prefix(ERASURE_PREFIX))
                    .and_then(|rest| rest.split('#').next())
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc))
                    .unwrap_or(event.occurred_at);
                ops.extend(erasure_docs(&state, requested_at, Some(event.occurred_at))?);
                ops.push(ReadOp::Delete {
                    partition: home,
                    sort: STATE.into(),
                });
                return Ok(ops);
            }
            _ => return Ok(Vec::new()),
        }
        ops.push(put(home, STATE.into(), &state)?);
        Ok(ops)
    }
}

/// A consent change under each of the customer's identifiers.
fn record_change(state: &CustomerState, change: &ConsentChangeProof) -> Result<Vec<ReadOp>, ProjectionError> {
    state
        .identifiers
        .iter()
        .map(|identifier| {
            put(
                partition(identifier),
                format!("{CONSENT_PREFIX}{}#{}", sort_time(change.at), change.event_id),
                change,
            )
        })
        .collect()
}

/// The erasure document under each identifier being erased.
fn erasure_docs(
    state: &CustomerState,
    requested_at: DateTime<Utc>,
    erased_at: Option<DateTime<Utc>>,
) -> Result<Vec<ReadOp>, ProjectionError> {
    let Some((identifiers, sort)) = &state.erasing else {
        return Ok(Vec::new());
    };
    let proof = ErasureProof {
        requested_at,
        erased_at,
        consents: state.consents.clone(),
    };
    identifiers
        .iter()
        .map(|identifier| put(partition(identifier), sort.clone(), &proof))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::VirtualClock;
    use crate::consumer::Consumer;
    use crate::customer::{Customer, CustomerCommand, CustomerService, GrantConsent, RequestErasure};
    use crate::event::{Actor, CommandMeta};
    use crate::ports::EventStore;
    use crate::testing::{registration, test_time, InMemoryEventStore, InMemoryReadModels};
    use std::sync::Arc;

    const EMAIL: &str = "ada@example.com";

    struct World {
        events: Arc<InMemoryEventStore>,
        clock: Arc<VirtualClock>,
        customers: CustomerService,
        hasher: IdentifierHasher,
    }

    impl World {
        fn new() -> Self {
            let events = Arc::new(InMemoryEventStore::default());
            let clock = Arc::new(VirtualClock::starting_at(test_time()));
            World {
                customers: CustomerService::new(events.clone(), clock.clone())
                    .with_identifiers(IdentifierHasher::new(b"proof tests")),
                events,
                clock,
                hasher: IdentifierHasher::new(b"proof tests"),
            }
        }

        async fn run(&self, id: &str, command: CustomerCommand) {
            let respond = |c: &Customer, _: &[EventEnvelope]| (200, serde_json::json!({ "id": c.id }));
            self.customers
                .execute(id, &command, &CommandMeta::new(Actor::api("t")), None, &respond)
                .await
                .expect("command");
            self.clock.advance(chrono::Duration::days(1));
        }

        async fn erase(&self, id: &str) {
            let c = self.customers.load(id).await.expect("load").expect("customer");
            let identifiers = self.hasher.identifiers_of(&c.email, c.phone.as_deref());
            self.run(id, CustomerCommand::RequestErasure(RequestErasure { identifiers }))
                .await;
            self.run(id, CustomerCommand::CompleteErasure).await;
        }

        /// Every stored event of `ids`, in order, optionally as read after
        /// the key is gone (personal fields `[erased]`).
        async fn stream(&self, id: &str, erased: bool) -> Vec<EventEnvelope> {
            let mut events = self
                .events
                .read_stream(&crate::customer::stream_id(id), 0, 1000)
                .await
                .expect("read");
            if erased {
                for e in &mut events {
                    for field in ["email", "new_email", "phone", "new_phone"] {
                        if e.data.get(field).is_some_and(|v| v.is_string()) {
                            e.data[field] = ERASED.into();
                        }
                    }
                }
            }
            events
        }

        async fn project(&self, docs: &Arc<InMemoryReadModels>, events: &[EventEnvelope]) {
            let consumer = Consumer::new(
                Arc::new(ProofLedgerProjection::new(self.hasher.clone())),
                self.events.clone(),
                docs.clone(),
            );
            for e in events {
                consumer.deliver(e).await.expect("deliver");
            }
        }

        fn email(&self, address: &str) -> HashedIdentifier {
            HashedIdentifier {
                kind: IdentifierKind::Email,
                hash: self.hasher.email(address),
            }
        }
    }

    #[tokio::test]
    async fn an_erasure_keeps_the_consent_history_under_the_hash_and_suppresses_until_consent() {
        let w = World::new();
        w.run("a", CustomerCommand::Register(registration(EMAIL, "Ada", "L", "UTC")))
            .await;
        w.erase("a").await;
        let docs = Arc::new(InMemoryReadModels::default());
        w.project(&docs, &w.stream("a", false).await).await;

        let proof = identifier_proof(docs.as_ref(), &w.email(EMAIL)).await.expect("proof");
        assert_eq!(proof.erasures.len(), 1);
        let erasure = &proof.erasures[0];
        assert!(erasure.erased_at.is_some_and(|at| at > erasure.requested_at));
        let changes: Vec<(bool, Option<&str>)> = proof
            .consents
            .iter()
            .map(|c| (c.granted, c.reason.as_deref()))
            .collect();
        assert_eq!(changes, [(true, None), (false, Some("customer-erased"))]);
        assert_eq!(proof.erased_without_consent(Channel::Email), Some(erasure.requested_at));
        // Nothing is left under the customer, and nothing names them.
        assert_eq!(docs.get(PROOF_LEDGER, "customer#a", STATE).await.expect("get"), None);
        let stored = serde_json::to_string(
            &docs
                .list(PROOF_LEDGER, &partition(&w.email(EMAIL)), "", None, 100)
                .await
                .expect("list"),
        )
        .expect("json");
        assert!(!stored.contains(EMAIL) && !stored.contains("\"a\""), "{stored}");

        // Rebuilt from the events as they read after erasure: the same proof.
        let rebuilt = Arc::new(InMemoryReadModels::default());
        w.project(&rebuilt, &w.stream("a", true).await).await;
        assert_eq!(
            identifier_proof(rebuilt.as_ref(), &w.email(EMAIL))
                .await
                .expect("proof"),
            proof
        );

        // Someone registers the address again and consents: marketing may go.
        w.run("b", CustomerCommand::Register(registration(EMAIL, "Bea", "L", "UTC")))
            .await;
        w.project(&docs, &w.stream("b", false).await).await;
        let proof = identifier_proof(docs.as_ref(), &w.email(EMAIL)).await.expect("proof");
        assert_eq!(proof.erased_without_consent(Channel::Email), None);
        assert_eq!(
            proof.erased_without_consent(Channel::Sms),
            Some(proof.erasures[0].requested_at)
        );
    }

    #[tokio::test]
    async fn consent_given_under_another_address_does_not_lift_the_suppression() {
        let w = World::new();
        w.run("a", CustomerCommand::Register(registration(EMAIL, "Ada", "L", "UTC")))
            .await;
        w.erase("a").await;
        // Another customer, who consented under their own address, moves to the erased one.
        w.run(
            "c",
            CustomerCommand::Register(registration("cy@example.com", "Cy", "L", "UTC")),
        )
        .await;
        w.run(
            "c",
            CustomerCommand::ChangeEmail(crate::customer::ChangeEmail {
                new_email: EMAIL.into(),
            }),
        )
        .await;
        let docs = Arc::new(InMemoryReadModels::default());
        w.project(&docs, &w.stream("a", false).await).await;
        w.project(&docs, &w.stream("c", false).await).await;
        let proof = identifier_proof(docs.as_ref(), &w.email(EMAIL)).await.expect("proof");
        assert!(proof.erased_without_consent(Channel::Email).is_some());

        // Until they consent on it (their consent is active: withdrawn first, then given anew).
        w.run(
            "c",
            CustomerCommand::RevokeConsent(crate::customer::RevokeConsent {
                purpose: Purpose::Marketing,
                channel: Channel::Email,
                reason: "re-confirming".into(),
                method: None,
            }),
        )
        .await;
        w.run(
            "c",
            CustomerCommand::GrantConsent(GrantConsent {
                purpose: Purpose::Marketing,
                channel: Channel::Email,
                method: ConsentMethod::PreferenceCentre,
                ip: None,
                user_agent: None,
            }),
        )
        .await;
        let consumer = Consumer::new(
            Arc::new(ProofLedgerProjection::new(w.hasher.clone())),
            w.events.clone(),
            docs.clone(),
        );
        for e in w.stream("c", false).await {
            consumer.deliver(&e).await.expect("deliver");
        }
        let proof = identifier_proof(docs.as_ref(), &w.email(EMAIL)).await.expect("proof");
        assert_eq!(proof.erased_without_consent(Channel::Email), None);
    }
}
