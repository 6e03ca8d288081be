//! The re-key migration of decision 0046: email reservations written
//! before it are keyed by the unkeyed SHA-256 of the address
//! (`email#<sha256>`, which anyone holding a list of addresses can reverse).
//! [`rekey_email_reservations`] moves each customer's reservation to the
//! keyed hash ([`super::email_reservation_key`]), in one atomic write per
//! customer: claim the keyed key, release the unkeyed one. It is
//! idempotent: a customer already moved is counted and left alone.
//!
//! The email index is not moved here: its partitions are rebuilt by a
//! replay of the projector (`crm-local replay`, `crm-ops replay`), which
//! projects every email under its keyed hash.

use super::validate::{email_reservation_key, unkeyed_email_reservation_key};
use super::{stream_id, CommandError, CustomerService};
use crate::ports::{AppendError, AppendRequest, ExpectedVersion, ReservationChange, StoreError};
use std::collections::BTreeSet;

/// What a re-key found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RekeyReport {
    /// Customer streams looked at.
    pub customers: u64,
    /// Reservations moved from the unkeyed to the keyed key.
    pub rekeyed: u64,
    /// Customers whose reservation was keyed already.
    pub already_keyed: u64,
    /// Customers holding no reservation (erased or erasure requested).
    pub without_reservation: u64,
}

/// Why the re-key stopped (what it moved before stays moved; run it again).
#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error("the customer service has no identifier secret: {}", super::NO_IDENTIFIER_SECRET)]
    NoSecret,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Customer(#[from] CommandError),
    #[error("customer {customer_id}: {reason}")]
    Append { customer_id: String, reason: String },
}

/// The ids of every customer with a stream, from a pass over every event.
async fn customer_ids(customers: &CustomerService) -> Result<BTreeSet<String>, StoreError> {
    let mut ids = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = customers.store().read_all(after.as_deref(), 500).await?;
        ids.extend(
            page.events
                .iter()
                .filter_map(|e| e.stream_id.strip_prefix("customer-"))
                .map(str::to_string),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(ids),
        }
    }
}

/// Moves every customer's email reservation to its keyed key. `customers`
/// must load customers decrypted (its store decrypts events) and carry the
/// identifier secret ([`CustomerService::with_identifiers`]).
pub async fn rekey_email_reservations(customers: &CustomerService) -> Result<RekeyReport, RekeyError> {
    let identifiers = customers.identifiers().ok_or(RekeyError::NoSecret)?.clone();
    let store = customers.store().clone();
    let mut report = RekeyReport::default();
    for customer_id in customer_ids(customers).await? {
        report.customers += 1;
        let Some(customer) = customers.load(&customer_id).await? else {
            continue;
        };
        if customer.erasure_requested || customer.email == crate::privacy::ERASED {
            report.without_reservation += 1;
            continue;
        }
        let owner = stream_id(&customer_id);
        let keyed = email_reservation_key(&identifiers, &customer.email);
        let unkeyed = unkeyed_email_reservation_key(&customer.email);
        let holds_keyed = store.reservation_owner(&keyed).await?.as_deref() == Some(owner.as_str());
        let holds_unkeyed = store.reservation_owner(&unkeyed).await?.as_deref() == Some(owner.as_str());
        let mut changes = Vec::new();
        if !holds_keyed {
            changes.push(ReservationChange::Claim {
                key: keyed,
                owner: owner.clone(),
            });
        }
        if holds_unkeyed {
            changes.push(ReservationChange::Release {
                key: unkeyed,
                owner: owner.clone(),
            });
        }
        if !holds_unkeyed && holds_keyed {
            report.already_keyed += 1;
            continue;
        }
        if !holds_unkeyed && !holds_keyed {
            tracing::warn!(customer_id = %customer_id, "customer held no email reservation: claiming the keyed one");
        }
        let request = AppendRequest {
            stream_id: owner,
            expected: ExpectedVersion::Any,
            events: Vec::new(),
            reservations: changes,
            receipt: None,
        };
        store.append(request).await.map_err(|e| match e {
            AppendError::Store(e) => RekeyError::Store(e),
            other => RekeyError::Append {
                customer_id: customer_id.clone(),
                reason: other.to_string(),
            },
        })?;
        report.rekeyed += 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customer::{CustomerCommand, RequestErasure};
    use crate::event::{Actor, CommandMeta};
    use crate::ports::EventStore;
    use crate::testing::{customer_id, identifiers, register, registration, InMemoryEventStore};
    use std::sync::Arc;

    /// Puts `email`'s reservation back where it was before decision 0046.
    async fn unkey(store: &InMemoryEventStore, id: &str, email: &str) {
        let owner = stream_id(id);
        store
            .append(AppendRequest {
                stream_id: owner.clone(),
                expected: ExpectedVersion::Any,
                events: Vec::new(),
                reservations: vec![
                    ReservationChange::Claim {
                        key: unkeyed_email_reservation_key(email),
                        owner: owner.clone(),
                    },
                    ReservationChange::Release {
                        key: email_reservation_key(&identifiers(), email),
                        owner,
                    },
                ],
                receipt: None,
            })
            .await
            .expect("unkeyed");
    }

    #[tokio::test]
    async fn unkeyed_reservations_move_to_the_keyed_key_once() {
        let store = Arc::new(InMemoryEventStore::default());
        let (ada, bob, eve) = (customer_id(1), customer_id(2), customer_id(3));
        for (id, email) in [
            (&ada, "ada@example.com"),
            (&bob, "bob@example.com"),
            (&eve, "eve@example.com"),
        ] {
            register(store.clone(), id, registration(email, "A", "B", "UTC")).await;
        }
        unkey(&store, &ada, "ada@example.com").await;
        unkey(&store, &eve, "eve@example.com").await;
        let customers =
            CustomerService::new(store.clone(), Arc::new(crate::clock::SystemClock)).with_identifiers(identifiers());
        // Eve asked to be erased: her reservation is given back, none to move.
        let respond = |_: &crate::customer::Customer, _: &[crate::event::EventEnvelope]| (202, serde_json::Value::Null);
        customers
            .execute(
                &eve,
                &CustomerCommand::RequestErasure(RequestErasure::default()),
                &CommandMeta::new(Actor::system("test")),
                None,
                &respond,
            )
            .await
            .expect("erasure requested");

        let report = rekey_email_reservations(&customers).await.expect("rekey");
        assert_eq!(
            report,
            RekeyReport {
                customers: 3,
                rekeyed: 1,
                already_keyed: 1,
                without_reservation: 1
            }
        );
        let owner = |key: String| {
            let store = store.clone();
            async move { store.reservation_owner(&key).await.expect("owner") }
        };
        assert_eq!(
            owner(email_reservation_key(&identifiers(), "ada@example.com")).await,
            Some(stream_id(&ada))
        );
        assert_eq!(owner(unkeyed_email_reservation_key("ada@example.com")).await, None);
        assert_eq!(
            rekey_email_reservations(&customers).await.expect("again").rekeyed,
            0,
            "a second run moves nothing"
        );
        // The moved reservation still keeps the address unique.
        let taken = customers
            .execute(
                &customer_id(9),
                &CustomerCommand::Register(registration("ADA@example.com", "X", "Y", "UTC")),
                &CommandMeta::new(Actor::system("test")),
                None,
                &respond,
            )
            .await;
        assert!(matches!(taken, Err(CommandError::EmailTaken { .. })), "{taken:?}");
    }

    #[tokio::test]
    async fn without_a_secret_nothing_is_moved() {
        let store = Arc::new(InMemoryEventStore::default());
        let customers = CustomerService::new(store, Arc::new(crate::clock::SystemClock));
        assert!(matches!(
            rekey_email_reservations(&customers).await,
            Err(RekeyError::NoSecret)
        ));
    }
}
