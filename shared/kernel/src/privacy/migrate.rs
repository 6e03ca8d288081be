//! The one-off migration of data stored before encryption at rest (decision
//! 0017 left it open; decision 0020): every stored event whose personal
//! fields ([`personal_data_paths`]) are still plain is rewritten with those
//! fields encrypted under its customer's data key (created if missing), or
//! set to [`ERASED`] when the customer was erased. Fields already encrypted,
//! `null` or already `[erased]` are left alone, so running it again changes
//! nothing.
//!
//! The event log is append-only for everything else; this is the one place
//! that rewrites a stored event, through the adapter's
//! [`StoredEventRewriter`] (locally an `UPDATE` of the SQLite row).

use super::store::{is_sealed_receipt_body, seal_receipt_body};
use super::{encrypt_paths, is_encrypted, personal_data_paths, CryptoError, KeyError, KeyStore, ERASED};
use crate::event::EventEnvelope;
use crate::ports::{EventStore, StoreError};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;

/// Why a migration stopped (what it rewrote before stays rewritten; running
/// it again goes on from there).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MigrationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("encrypting {what}: {source}")]
    Crypto { what: String, source: CryptoError },
}

/// The adapter's side: rewrite one stored event's payload in place.
#[async_trait]
pub trait StoredEventRewriter: Send + Sync {
    async fn rewrite_data(&self, event: &EventEnvelope, data: &Value) -> Result<(), StoreError>;
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Events read.
    pub scanned: usize,
    /// Events whose plain personal fields were encrypted.
    pub encrypted: usize,
    /// Events of erased customers whose plain personal fields became `[erased]`.
    pub erased: usize,
    /// Events with plain personal fields but no customer to encrypt them for (left as they are).
    pub without_customer: usize,
    /// Data keys created for customers who had none.
    pub keys_created: usize,
}

/// The customer whose key covers `event`'s personal fields.
fn event_customer(event: &EventEnvelope) -> Option<String> {
    event
        .customer_id
        .clone()
        .or_else(|| event.stream_id.strip_prefix("customer-").map(str::to_string))
        .filter(|c| !c.is_empty())
}

/// The personal paths of `event` that still hold a plain value (present, not
/// `null`, not encrypted, not the erased marker).
pub fn plaintext_paths(event: &EventEnvelope) -> Vec<&'static str> {
    personal_data_paths(&event.event_type)
        .iter()
        .copied()
        .filter(|path| {
            let field = path.split('.').try_fold(&event.data, |v, key| v.as_object()?.get(key));
            match field {
                None | Some(Value::Null) => false,
                Some(Value::String(s)) => !is_encrypted(s) && s != ERASED,
                Some(_) => true,
            }
        })
        .collect()
}

/// Whether `customer_id`'s stream records an erasure request (read from the
/// store as stored: event types are never encrypted).
pub async fn erasure_requested(store: &dyn EventStore, customer_id: &str) -> Result<bool, StoreError> {
    let stream = crate::vocabulary::streams::customer_stream_id(customer_id);
    let mut after = 0;
    loop {
        let page = store.read_stream(&stream, after, 500).await?;
        if page.iter().any(|e| e.event_type == "CustomerErasureRequested") {
            return Ok(true);
        }
        match page.last() {
            Some(last) if page.len() == 500 => after = last.version,
            _ => return Ok(false),
        }
    }
}

/// Per customer, within one run: erased or not, and the key.
struct Customers<'a> {
    keys: &'a dyn KeyStore,
    stored: &'a dyn EventStore,
    known: HashMap<String, Option<super::DataKey>>,
    keys_created: usize,
}

impl Customers<'_> {
    /// The key to encrypt with, or `None` for an erased customer (whose
    /// plain fields become the marker, and who must get no new key).
    async fn key(&mut self, customer_id: &str) -> Result<Option<super::DataKey>, MigrationError> {
        if let Some(key) = self.known.get(customer_id) {
            return Ok(key.clone());
        }
        let key = match self.keys.existing_key(customer_id).await? {
            Some(key) => Some(key),
            None if erasure_requested(self.stored, customer_id).await? => None,
            None => {
                self.keys_created += 1;
                Some(self.keys.data_key(customer_id).await?)
            }
        };
        self.known.insert(customer_id.to_string(), key.clone());
        Ok(key)
    }
}

/// What [`migrate_event`] did to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Encrypted,
    Erased,
    WithoutCustomer,
}

async fn migrate_event(customers: &mut Customers<'_>, event: &mut EventEnvelope) -> Result<Outcome, MigrationError> {
    let plain = plaintext_paths(event);
    if plain.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    let Some(customer_id) = event_customer(event) else {
        return Ok(Outcome::WithoutCustomer);
    };
    match customers.key(&customer_id).await? {
        Some(key) => {
            encrypt_paths(&mut event.data, &key, &customer_id, &plain).map_err(|source| MigrationError::Crypto {
                what: format!("{} v{} ({})", event.stream_id, event.version, event.event_type),
                source,
            })?;
            Ok(Outcome::Encrypted)
        }
        None => {
            for path in plain {
                let field = path
                    .split('.')
                    .try_fold(&mut event.data, |v, key| v.as_object_mut()?.get_mut(key));
                if let Some(field) = field {
                    *field = Value::String(ERASED.to_string());
                }
            }
            Ok(Outcome::Erased)
        }
    }
}

impl MigrationReport {
    async fn apply(
        &mut self,
        customers: &mut Customers<'_>,
        rewriter: &dyn StoredEventRewriter,
        mut event: EventEnvelope,
    ) -> Result<(), MigrationError> {
        self.scanned += 1;
        match migrate_event(customers, &mut event).await? {
            Outcome::Unchanged => {}
            Outcome::WithoutCustomer => self.without_customer += 1,
            Outcome::Encrypted => {
                rewriter.rewrite_data(&event, &event.data).await?;
                self.encrypted += 1;
            }
            Outcome::Erased => {
                rewriter.rewrite_data(&event, &event.data).await?;
                self.erased += 1;
            }
        }
        Ok(())
    }
}

/// Rewrites every event of `stored` (the store as stored, not the
/// decrypting decorator) whose personal fields are plain, page by page.
pub async fn migrate_events(
    stored: &dyn EventStore,
    rewriter: &dyn StoredEventRewriter,
    keys: &dyn KeyStore,
) -> Result<MigrationReport, MigrationError> {
    let mut report = MigrationReport::default();
    let mut customers = Customers {
        keys,
        stored,
        known: HashMap::new(),
        keys_created: 0,
    };
    let mut cursor: Option<String> = None;
    loop {
        let page = stored.read_all(cursor.as_deref(), 500).await?;
        for event in page.events {
            report.apply(&mut customers, rewriter, event).await?;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    report.keys_created = customers.keys_created;
    Ok(report)
}

/// [`migrate_events`] for the events of `streams` only: after an erasure,
/// the erased customer's streams, so that events stored before encryption
/// read `[erased]` too instead of staying plain.
pub async fn migrate_streams(
    stored: &dyn EventStore,
    rewriter: &dyn StoredEventRewriter,
    keys: &dyn KeyStore,
    streams: &[String],
) -> Result<MigrationReport, MigrationError> {
    let mut report = MigrationReport::default();
    let mut customers = Customers {
        keys,
        stored,
        known: HashMap::new(),
        keys_created: 0,
    };
    for stream in streams {
        let mut after = 0;
        loop {
            let page = stored.read_stream(stream, after, 500).await?;
            let last = page.last().map(|e| e.version);
            let full = page.len() == 500;
            for event in page {
                report.apply(&mut customers, rewriter, event).await?;
            }
            match last {
                Some(last) if full => after = last,
                _ => break,
            }
        }
    }
    report.keys_created = customers.keys_created;
    Ok(report)
}

/// A plain command receipt body (stored before encryption) sealed like the
/// store seals new ones, under the key of the customer it answers about
/// (`customer_id`, else `id` when that names a customer stream), or the
/// marker when that customer was erased. `None`: nothing to do (already
/// sealed, or no customer to seal it for).
pub async fn seal_plain_receipt(
    stored: &dyn EventStore,
    keys: &dyn KeyStore,
    body: &Value,
) -> Result<Option<Value>, MigrationError> {
    let Some(customer_id) = plain_receipt_customer(stored, body).await? else {
        return Ok(None);
    };
    let mut customers = Customers {
        keys,
        stored,
        known: HashMap::new(),
        keys_created: 0,
    };
    match customers.key(&customer_id).await? {
        Some(key) => seal_receipt_body(&key, &customer_id, body)
            .map(Some)
            .map_err(|source| MigrationError::Crypto {
                what: "a receipt".into(),
                source,
            }),
        None => Ok(Some(Value::String(ERASED.to_string()))),
    }
}

/// The customer a plain (unsealed) receipt body answers about:
/// `customer_id`, else `id` when it names a customer stream; `None` for a
/// sealed body or one about no customer.
pub async fn plain_receipt_customer(stored: &dyn EventStore, body: &Value) -> Result<Option<String>, StoreError> {
    if is_sealed_receipt_body(body) {
        return Ok(None);
    }
    if let Some(owner) = body.get("customer_id").and_then(Value::as_str) {
        return Ok(Some(owner.to_string()));
    }
    if let Some(id) = body.get("id").and_then(Value::as_str) {
        if !stored
            .read_stream(&crate::vocabulary::streams::customer_stream_id(id), 0, 1)
            .await?
            .is_empty()
        {
            return Ok(Some(id.to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{AppendRequest, ExpectedVersion};
    use crate::privacy::memory::InMemoryKeyStore;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    /// Rewrites into a copy of the events, keyed by event id.
    #[derive(Default)]
    struct Rewrites(Mutex<HashMap<uuid::Uuid, Value>>);

    #[async_trait]
    impl StoredEventRewriter for Rewrites {
        async fn rewrite_data(&self, event: &EventEnvelope, data: &Value) -> Result<(), StoreError> {
            self.0
                .lock()
                .map_err(|_| StoreError::Failed("poisoned".into()))?
                .insert(event.event_id, data.clone());
            Ok(())
        }
    }

    fn registered(customer: &str, email: &str) -> EventEnvelope {
        crate::testing::registered_event(
            customer,
            json!({ "email": email, "first_name": "Ada", "last_name": null, "ip": "[erased]" }),
        )
    }

    #[tokio::test]
    async fn plain_fields_are_encrypted_once_and_erased_customers_get_the_marker() {
        let inner: Arc<dyn EventStore> = Arc::new(crate::testing::InMemoryEventStore::default());
        for (customer, email) in [("c-1", "ada@example.com"), ("c-2", "bob@example.com")] {
            inner
                .append(AppendRequest {
                    stream_id: format!("customer-{customer}"),
                    expected: ExpectedVersion::Any,
                    events: vec![registered(customer, email)],
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await
                .expect("plain append");
        }
        let mut requested = registered("c-2", "");
        requested.event_type = "CustomerErasureRequested".into();
        requested.data = json!({});
        inner
            .append(AppendRequest {
                stream_id: "customer-c-2".into(),
                expected: ExpectedVersion::Any,
                events: vec![requested],
                reservations: Vec::new(),
                receipt: None,
            })
            .await
            .expect("append");
        let first = inner.read_stream("customer-c-1", 0, 10).await.expect("read");
        assert_eq!(plaintext_paths(&first[0]), vec!["email", "first_name"]);

        let keys = InMemoryKeyStore::new();
        let rewrites = Rewrites::default();
        let report = migrate_events(inner.as_ref(), &rewrites, &keys).await.expect("migrate");
        assert_eq!(report.scanned, 3);
        assert_eq!((report.encrypted, report.erased, report.keys_created), (1, 1, 1));
        assert!(
            keys.existing_key("c-2").await.expect("key").is_none(),
            "no key for the erased"
        );
        let rewritten = rewrites.0.lock().expect("lock").clone();
        let ada = &rewritten[&first[0].event_id];
        assert!(ada["email"].as_str().is_some_and(is_encrypted), "{ada}");
        assert_eq!(ada["ip"], ERASED, "the marker is left alone");
        let mut migrated = first[0].clone();
        migrated.data = ada.clone();
        assert!(plaintext_paths(&migrated).is_empty(), "nothing left to migrate");
        let bob = inner.read_stream("customer-c-2", 0, 1).await.expect("read");
        assert_eq!(rewritten[&bob[0].event_id]["email"], ERASED);

        // Read through the decorator, the rewritten event gives the original value.
        let keys = Arc::new(keys);
        let decrypted = {
            let mut e = migrated.clone();
            crate::privacy::decrypt_envelope(keys.as_ref(), &mut e)
                .await
                .expect("decrypt");
            e
        };
        assert_eq!(decrypted.data["email"], "ada@example.com");
    }
}
