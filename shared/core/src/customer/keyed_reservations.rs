//! The event store the customer service appends through (decision 0046).
//!
//! The customer aggregate stays pure: it names the reservation that keeps an
//! email unique by its logical name ([`super::validate::email_reservation_name`],
//! the address itself). This store turns every such name into the stored
//! key, the address's keyed hash ([`super::validate::email_reservation_key`],
//! HMAC under the identifier secret), before the append reaches the real
//! store, so no address is ever written as a key. Without an identifier
//! secret it refuses the append (nothing is written); every other operation
//! passes through unchanged.
//!
//! Until the re-key migration ([`super::rekey`]) has moved a reservation
//! made before decision 0046, it is still held under its unkeyed key
//! (`email#<sha256>`): a claim of that address by another customer is
//! refused, a release by its owner gives the unkeyed key back, and a lookup
//! finds its owner there. After the migration these reads find nothing.

use super::validate::{email_reservation_key, unkeyed_email_reservation_key, EMAIL_RESERVATION_NAME_PREFIX};
use crate::ports::{
    AppendError, AppendRequest, Appended, CommandReceipt, EventPage, EventStore, LoadedStream, ReservationChange,
    Snapshot, StoreError,
};
use crate::privacy::IdentifierHasher;
use async_trait::async_trait;
use std::sync::Arc;

/// Why a customer service without an identifier secret cannot reserve an email.
pub const NO_IDENTIFIER_SECRET: &str =
    "the customer service has no identifier secret: an email reservation cannot be keyed (decision 0046)";

/// An [`EventStore`] that keys email reservations with the identifier secret.
pub(crate) struct KeyedReservations {
    inner: Arc<dyn EventStore>,
    identifiers: Option<IdentifierHasher>,
}

impl KeyedReservations {
    pub(crate) fn new(inner: Arc<dyn EventStore>, identifiers: Option<IdentifierHasher>) -> Self {
        KeyedReservations { inner, identifiers }
    }

    pub(crate) fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    /// The stored key of a reservation named `name`: an email's keyed hash,
    /// any other name as it is.
    fn stored_key(&self, name: &str) -> Result<String, StoreError> {
        match name.strip_prefix(EMAIL_RESERVATION_NAME_PREFIX) {
            None => Ok(name.to_string()),
            Some(email) => self
                .identifiers
                .as_ref()
                .map(|h| email_reservation_key(h, email))
                .ok_or_else(|| StoreError::Failed(NO_IDENTIFIER_SECRET.into())),
        }
    }

    /// The change as stored: an email's claim under its keyed key (refused
    /// while another owner holds the unkeyed one), its release under the key
    /// the owner holds (the unkeyed one until the migration moved it).
    async fn stored(&self, change: ReservationChange) -> Result<ReservationChange, AppendError> {
        let name = change.key().to_string();
        let key = self.stored_key(&name)?;
        let Some(email) = name.strip_prefix(EMAIL_RESERVATION_NAME_PREFIX) else {
            return Ok(change);
        };
        let unkeyed = unkeyed_email_reservation_key(email);
        let unkeyed_holder = self.inner.reservation_owner(&unkeyed).await?;
        Ok(match change {
            ReservationChange::Claim { owner, .. } => {
                if unkeyed_holder.is_some_and(|holder| holder != owner) {
                    return Err(AppendError::ReservationTaken { key });
                }
                ReservationChange::Claim { key, owner }
            }
            ReservationChange::Release { owner, .. } => ReservationChange::Release {
                key: if unkeyed_holder.as_deref() == Some(owner.as_str()) {
                    unkeyed
                } else {
                    key
                },
                owner,
            },
        })
    }
}

#[async_trait]
impl EventStore for KeyedReservations {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        self.inner.load(stream_id).await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<crate::event::EventEnvelope>, StoreError> {
        self.inner.read_stream(stream_id, after, limit).await
    }

    async fn append(&self, mut request: AppendRequest) -> Result<Appended, AppendError> {
        let mut stored = Vec::with_capacity(request.reservations.len());
        for change in std::mem::take(&mut request.reservations) {
            stored.push(self.stored(change).await?);
        }
        request.reservations = stored;
        self.inner.append(request).await
    }

    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        self.inner.receipt(key).await
    }

    /// The owner of a reservation by its name; an email's under its keyed
    /// key, else under its unkeyed key (made before decision 0046).
    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        if let Some(owner) = self.inner.reservation_owner(&self.stored_key(key)?).await? {
            return Ok(Some(owner));
        }
        match key.strip_prefix(EMAIL_RESERVATION_NAME_PREFIX) {
            Some(email) => {
                self.inner
                    .reservation_owner(&unkeyed_email_reservation_key(email))
                    .await
            }
            None => Ok(None),
        }
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        self.inner.read_all(after, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customer::validate::{email_reservation_name, unkeyed_email_reservation_key};
    use crate::ports::ExpectedVersion;
    use crate::testing::InMemoryEventStore;

    fn claim(name: &str) -> AppendRequest {
        AppendRequest {
            stream_id: "customer-c1".into(),
            expected: ExpectedVersion::Any,
            events: Vec::new(),
            reservations: vec![ReservationChange::Claim {
                key: name.into(),
                owner: "customer-c1".into(),
            }],
            receipt: None,
        }
    }

    #[tokio::test]
    async fn an_email_is_reserved_under_its_keyed_hash_never_its_text() {
        let raw = Arc::new(InMemoryEventStore::default());
        let hasher = IdentifierHasher::new(b"keyed reservations");
        let keyed = KeyedReservations::new(raw.clone(), Some(hasher.clone()));
        keyed
            .append(claim(&email_reservation_name("ada@example.com")))
            .await
            .expect("claim");
        let key = email_reservation_key(&hasher, "ada@example.com");
        assert_eq!(
            raw.reservation_owner(&key).await.expect("owner").as_deref(),
            Some("customer-c1")
        );
        for not_stored in [
            email_reservation_name("ada@example.com"),
            unkeyed_email_reservation_key("ada@example.com"),
        ] {
            assert_eq!(raw.reservation_owner(&not_stored).await.expect("owner"), None);
        }
        // Looked up by its name, through the same store.
        assert_eq!(
            keyed
                .reservation_owner(&email_reservation_name("ada@example.com"))
                .await
                .expect("owner")
                .as_deref(),
            Some("customer-c1")
        );
    }

    #[tokio::test]
    async fn a_reservation_made_before_keyed_hashes_still_holds_and_is_given_back() {
        let raw = Arc::new(InMemoryEventStore::default());
        let keyed = KeyedReservations::new(raw.clone(), Some(IdentifierHasher::new(b"window")));
        raw.append(claim(&unkeyed_email_reservation_key("ada@example.com")))
            .await
            .expect("an old reservation");
        let name = email_reservation_name("ada@example.com");
        assert_eq!(
            keyed.reservation_owner(&name).await.expect("owner").as_deref(),
            Some("customer-c1")
        );
        let mut other = claim(&name);
        other.stream_id = "customer-c2".into();
        other.reservations = vec![ReservationChange::Claim {
            key: name.clone(),
            owner: "customer-c2".into(),
        }];
        assert!(matches!(
            keyed.append(other).await,
            Err(AppendError::ReservationTaken { .. })
        ));
        let mut release = claim(&name);
        release.reservations = vec![ReservationChange::Release {
            key: name.clone(),
            owner: "customer-c1".into(),
        }];
        keyed.append(release).await.expect("given back");
        assert_eq!(
            raw.reservation_owner(&unkeyed_email_reservation_key("ada@example.com"))
                .await
                .expect("owner"),
            None
        );
    }

    #[tokio::test]
    async fn without_a_secret_nothing_is_reserved() {
        let raw = Arc::new(InMemoryEventStore::default());
        let keyed = KeyedReservations::new(raw.clone(), None);
        let refused = keyed.append(claim(&email_reservation_name("ada@example.com"))).await;
        assert!(matches!(refused, Err(AppendError::Store(StoreError::Failed(ref m))) if m == NO_IDENTIFIER_SECRET));
        assert_eq!(
            raw.reservation_owner(&email_reservation_name("ada@example.com"))
                .await
                .expect("owner"),
            None
        );
        // Other reservations pass as they are.
        keyed.append(claim("order-number#7")).await.expect("claim");
        assert_eq!(
            raw.reservation_owner("order-number#7").await.expect("owner").as_deref(),
            Some("customer-c1")
        );
    }
}
