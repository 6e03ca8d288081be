//! Encryption at rest (issue 7, decision 0017): the [`EncryptingEventStore`]
//! decorator over any [`EventStore`], and [`decrypt_envelope`] for the
//! consumers that get events from the bus rather than from the store
//! (`consumer::DecryptingHandler`).
//!
//! * `append` encrypts every event's personal fields
//!   ([`personal_data_paths`]) under the data key of the envelope's customer,
//!   and the body of the command receipt as a whole, before the inner store
//!   sees them; what it returns is plaintext again.
//! * `load`, `read_stream`, `read_all`, `receipt` decrypt.
//! * Snapshots of customer streams (`customer-<id>`) are stored as one
//!   encrypted field; with the key gone the snapshot is ignored and the
//!   stream folded from its (erased) events.
//!
//! Events stored before encryption stay plain and read as they are while the
//! customer has no key; once a customer has a key, a plain field is left as it
//! is and an encrypted field that does not decrypt is an error.

use super::{decrypt_field, decrypt_paths, encrypt_field, encrypt_paths, is_encrypted, personal_data_paths};
use super::{CryptoError, DataKey, KeyError, KeyStore, ERASED};
use crate::event::EventEnvelope;
use crate::ports::*;
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// The event that marks a customer as being erased (see `for_writing`).
const ERASURE_REQUESTED: &str = "CustomerErasureRequested";

/// The field path (associated data) of an encrypted snapshot state.
const SNAPSHOT_FIELD: &str = "$snapshot.state";
/// The field path (associated data) of an encrypted receipt body.
const RECEIPT_FIELD: &str = "$receipt.body";
/// The key of the object an encrypted receipt body is stored as.
const ENCRYPTED_BODY: &str = "$encrypted_body";

fn key_error(e: KeyError) -> StoreError {
    match e {
        KeyError::Unavailable(m) => StoreError::Unavailable(m),
        KeyError::Corrupt(m) => StoreError::Failed(m),
    }
}

fn crypto_error(context: &str, e: CryptoError) -> StoreError {
    StoreError::Failed(format!("{context}: {e}"))
}

/// The customer whose key covers a snapshot or receipt of `stream_id`
/// (customer streams only).
fn stream_customer(stream_id: &str) -> Option<&str> {
    stream_id.strip_prefix("customer-").filter(|id| !id.is_empty())
}

/// The customer whose key encrypts `event`'s personal fields.
fn event_customer(event: &EventEnvelope) -> Option<&str> {
    event
        .customer_id
        .as_deref()
        .or_else(|| stream_customer(&event.stream_id))
}

fn has_encrypted_field(data: &Value, paths: &[&str]) -> bool {
    paths.iter().any(|path| {
        path.split('.')
            .try_fold(data, |v, key| v.as_object()?.get(key))
            .and_then(Value::as_str)
            .is_some_and(is_encrypted)
    })
}

/// Encrypts `event`'s personal fields in place with `key` (the key of
/// [`event_customer`]).
fn encrypt_with(event: &mut EventEnvelope, key: &DataKey, customer_id: &str) -> Result<(), StoreError> {
    let paths = personal_data_paths(&event.event_type);
    encrypt_paths(&mut event.data, key, customer_id, paths).map_err(|e| crypto_error(&event.event_type, e))
}

/// Decrypts `event`'s personal fields in place. Without a key (erased, or a
/// customer whose events were all stored before encryption), encrypted
/// fields read as [`ERASED`] and an event with no encrypted field is left
/// as it was stored.
fn decrypt_with(event: &mut EventEnvelope, key: Option<&DataKey>, customer_id: &str) -> Result<(), StoreError> {
    let paths = personal_data_paths(&event.event_type);
    if key.is_none() && !has_encrypted_field(&event.data, paths) {
        return Ok(());
    }
    decrypt_paths(&mut event.data, key, customer_id, paths).map_err(|e| {
        crypto_error(
            &format!("{} v{} ({})", event.stream_id, event.version, event.event_type),
            e,
        )
    })
}

/// Keys looked up once per customer within one read or write.
struct KeyCache<'a> {
    keys: &'a dyn KeyStore,
    found: HashMap<String, Option<DataKey>>,
    /// Where to learn whether a customer without a key was erased (writes
    /// through [`EncryptingEventStore`]); `None`: never asked.
    events: Option<&'a dyn EventStore>,
}

impl<'a> KeyCache<'a> {
    fn new(keys: &'a dyn KeyStore) -> Self {
        KeyCache {
            keys,
            found: HashMap::new(),
            events: None,
        }
    }

    fn with_events(keys: &'a dyn KeyStore, events: &'a dyn EventStore) -> Self {
        KeyCache {
            keys,
            found: HashMap::new(),
            events: Some(events),
        }
    }

    /// The key to write with: the existing one, none when the customer was
    /// erased (their stream holds `CustomerErasureRequested` and the key is
    /// gone: a new key would turn their old events from erased into
    /// unreadable), else a new one.
    async fn for_writing(&mut self, customer_id: &str) -> Result<Option<DataKey>, StoreError> {
        if let Some(key) = self.existing(customer_id).await? {
            return Ok(Some(key));
        }
        if let Some(events) = self.events {
            let stream = events
                .read_stream(&format!("customer-{customer_id}"), 0, usize::MAX)
                .await?;
            if stream.iter().any(|e| e.event_type == ERASURE_REQUESTED) {
                return Ok(None);
            }
        }
        self.create(customer_id).await.map(Some)
    }

    /// The existing key (reading never creates one).
    async fn existing(&mut self, customer_id: &str) -> Result<Option<DataKey>, StoreError> {
        if let Some(key) = self.found.get(customer_id) {
            return Ok(key.clone());
        }
        let key = self.keys.existing_key(customer_id).await.map_err(key_error)?;
        self.found.insert(customer_id.to_string(), key.clone());
        Ok(key)
    }

    /// The key of a customer [`Self::existing`] found without one, created
    /// now (writing).
    async fn create(&mut self, customer_id: &str) -> Result<DataKey, StoreError> {
        if let Some(Some(key)) = self.found.get(customer_id) {
            return Ok(key.clone());
        }
        // Only called after `existing` found none: no second read.
        let key = self.keys.create_key(customer_id).await.map_err(key_error)?;
        self.found.insert(customer_id.to_string(), Some(key.clone()));
        Ok(key)
    }

    async fn decrypt(&mut self, event: &mut EventEnvelope) -> Result<(), StoreError> {
        if personal_data_paths(&event.event_type).is_empty() {
            return Ok(());
        }
        let Some(customer_id) = event_customer(event).map(str::to_string) else {
            return Ok(());
        };
        let key = self.existing(&customer_id).await?;
        decrypt_with(event, key.as_ref(), &customer_id)
    }

    async fn encrypt(&mut self, event: &mut EventEnvelope) -> Result<(), StoreError> {
        if personal_data_paths(&event.event_type).is_empty() {
            return Ok(());
        }
        let Some(customer_id) = event_customer(event).map(str::to_string) else {
            return Err(StoreError::Failed(format!(
                "{} on {} carries personal data but no customer id to encrypt it for",
                event.event_type, event.stream_id
            )));
        };
        match self.for_writing(&customer_id).await? {
            Some(key) => encrypt_with(event, &key, &customer_id),
            // Erased: the personal fields are stored as the marker.
            None => {
                let paths = personal_data_paths(&event.event_type);
                decrypt_paths(&mut event.data, None, &customer_id, paths)
                    .map_err(|e| crypto_error(&event.event_type, e))
            }
        }
    }

    async fn decrypt_receipt(&mut self, receipt: &mut CommandReceipt) -> Result<(), StoreError> {
        let Some(sealed) = receipt.body.get(ENCRYPTED_BODY) else {
            return Ok(());
        };
        let (Some(customer_id), Some(text)) = (
            sealed.get("customer_id").and_then(Value::as_str),
            sealed.get("ciphertext").and_then(Value::as_str),
        ) else {
            return Err(StoreError::Failed(format!(
                "receipt {} has a malformed encrypted body",
                receipt.key
            )));
        };
        let customer_id = customer_id.to_string();
        receipt.body = match self.existing(&customer_id).await? {
            None => Value::String(ERASED.to_string()),
            Some(key) => {
                let json = decrypt_field(&key, &customer_id, RECEIPT_FIELD, text)
                    .map_err(|e| crypto_error(&format!("receipt {}", receipt.key), e))?;
                serde_json::from_str(&json).map_err(|e| StoreError::Failed(format!("receipt {}: {e}", receipt.key)))?
            }
        };
        Ok(())
    }
}

/// A command receipt's body as the store keeps it: encrypted as a whole
/// under the customer's key (`{"$encrypted_body": {customer_id, ciphertext}}`).
pub fn seal_receipt_body(key: &DataKey, customer_id: &str, body: &Value) -> Result<Value, CryptoError> {
    let text = encrypt_field(key, customer_id, RECEIPT_FIELD, &body.to_string())?;
    Ok(serde_json::json!({ ENCRYPTED_BODY: { "customer_id": customer_id, "ciphertext": text } }))
}

/// Whether a stored receipt body is sealed ([`seal_receipt_body`]) or the erased marker.
pub fn is_sealed_receipt_body(body: &Value) -> bool {
    body.get(ENCRYPTED_BODY).is_some() || body.as_str() == Some(ERASED)
}

/// Decrypts one envelope's personal fields (for consumers fed by the bus,
/// which carries what the store holds).
pub async fn decrypt_envelope(keys: &dyn KeyStore, event: &mut EventEnvelope) -> Result<(), StoreError> {
    KeyCache::new(keys).decrypt(event).await
}

/// Decrypts the personal fields of several envelopes, each customer's key
/// looked up once (a page of stored events read for a rebuild).
pub async fn decrypt_envelopes(keys: &dyn KeyStore, events: &mut [EventEnvelope]) -> Result<(), StoreError> {
    let mut cache = KeyCache::new(keys);
    for event in events {
        cache.decrypt(event).await?;
    }
    Ok(())
}

/// Encrypts one envelope's personal fields as [`EncryptingEventStore`]
/// stores them (creating the customer's key on first use).
pub async fn encrypt_envelope(keys: &dyn KeyStore, event: &mut EventEnvelope) -> Result<(), StoreError> {
    KeyCache::new(keys).encrypt(event).await
}

/// An [`EventStore`] that keeps personal data encrypted in `inner`.
pub struct EncryptingEventStore {
    inner: Arc<dyn EventStore>,
    keys: Arc<dyn KeyStore>,
}

impl EncryptingEventStore {
    pub fn new(inner: Arc<dyn EventStore>, keys: Arc<dyn KeyStore>) -> Self {
        EncryptingEventStore { inner, keys }
    }

    /// The store underneath (ciphertext).
    pub fn inner(&self) -> &Arc<dyn EventStore> {
        &self.inner
    }

    async fn decrypt_all(&self, events: &mut [EventEnvelope]) -> Result<(), StoreError> {
        let mut cache = KeyCache::new(self.keys.as_ref());
        for event in events {
            cache.decrypt(event).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl EventStore for EncryptingEventStore {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        let mut loaded = self.inner.load(stream_id).await?;
        let mut cache = KeyCache::new(self.keys.as_ref());
        if let Some(snapshot) = loaded.snapshot.take() {
            match (&snapshot.state, stream_customer(stream_id)) {
                (Value::String(text), Some(customer_id)) if is_encrypted(text) => {
                    match cache.existing(customer_id).await? {
                        Some(key) => {
                            let json = decrypt_field(&key, customer_id, SNAPSHOT_FIELD, text)
                                .map_err(|e| crypto_error(&format!("snapshot of {stream_id}"), e))?;
                            let state = serde_json::from_str(&json)
                                .map_err(|e| StoreError::Failed(format!("snapshot of {stream_id}: {e}")))?;
                            loaded.snapshot = Some(Snapshot { state, ..snapshot });
                        }
                        // Erased: the snapshot is unreadable; fold every event instead.
                        None => {
                            loaded.events = self.inner.read_stream(stream_id, 0, usize::MAX).await?;
                        }
                    }
                }
                _ => loaded.snapshot = Some(snapshot),
            }
        }
        for event in &mut loaded.events {
            cache.decrypt(event).await?;
        }
        Ok(loaded)
    }

    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut events = self.inner.read_stream(stream_id, after, limit).await?;
        self.decrypt_all(&mut events).await?;
        Ok(events)
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.append_with_receipts(request, Vec::new()).await
    }

    async fn append_with_receipts(
        &self,
        mut request: AppendRequest,
        mut receipts: Vec<CommandReceipt>,
    ) -> Result<Appended, AppendError> {
        crate::ports::check_receipts(&request, &receipts)?;
        let mut cache = KeyCache::with_events(self.keys.as_ref(), self.inner.as_ref());
        let plain: Vec<Value> = request.events.iter().map(|e| e.data.clone()).collect();
        for event in &mut request.events {
            cache.encrypt(event).await?;
        }
        let owner = request
            .events
            .iter()
            .find_map(|e| e.customer_id.clone())
            .or_else(|| stream_customer(&request.stream_id).map(str::to_string));
        for receipt in request.receipt.iter_mut().chain(receipts.iter_mut()) {
            if let Some(customer_id) = &owner {
                receipt.body = match cache.for_writing(customer_id).await? {
                    Some(key) => seal_receipt_body(&key, customer_id, &receipt.body)
                        .map_err(|e| crypto_error(&format!("receipt {}", receipt.key), e))?,
                    None => Value::String(ERASED.to_string()),
                };
            }
        }
        match self.inner.append_with_receipts(request, receipts).await {
            Ok(mut appended) => {
                if appended.events.len() == plain.len() {
                    for (event, data) in appended.events.iter_mut().zip(plain) {
                        event.data = data;
                    }
                } else {
                    for event in &mut appended.events {
                        cache.decrypt(event).await?;
                    }
                }
                Ok(appended)
            }
            Err(AppendError::DuplicateCommand(mut receipt)) => {
                cache.decrypt_receipt(&mut receipt).await?;
                Err(AppendError::DuplicateCommand(receipt))
            }
            Err(other) => Err(other),
        }
    }

    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        let Some(mut receipt) = self.inner.receipt(key).await? else {
            return Ok(None);
        };
        KeyCache::new(self.keys.as_ref()).decrypt_receipt(&mut receipt).await?;
        Ok(Some(receipt))
    }

    async fn receipts(&self, keys: &[String]) -> Result<Vec<Option<CommandReceipt>>, StoreError> {
        let mut found = self.inner.receipts(keys).await?;
        let mut cache = KeyCache::new(self.keys.as_ref());
        for receipt in found.iter_mut().flatten() {
            cache.decrypt_receipt(receipt).await?;
        }
        Ok(found)
    }

    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.reservation_owner(key).await
    }

    async fn save_snapshot(&self, mut snapshot: Snapshot) -> Result<(), StoreError> {
        if let Some(customer_id) = stream_customer(&snapshot.stream_id).map(str::to_string) {
            // Never creates a key: a new key after erasure would make the
            // old events unreadable instead of erased. Without a key, the
            // stream's events hold no readable personal data (erased, or
            // none was ever encrypted), so neither does a state folded from them.
            if let Some(key) = self.keys.existing_key(&customer_id).await.map_err(key_error)? {
                let text = encrypt_field(&key, &customer_id, SNAPSHOT_FIELD, &snapshot.state.to_string())
                    .map_err(|e| crypto_error(&format!("snapshot of {}", snapshot.stream_id), e))?;
                snapshot.state = Value::String(text);
            }
        }
        self.inner.save_snapshot(snapshot).await
    }

    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        let mut page = self.inner.read_all(after, limit).await?;
        self.decrypt_all(&mut page.events).await?;
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::memory::InMemoryKeyStore;
    use chrono::Utc;
    use serde_json::json;
    use uuid::Uuid;

    #[cfg(feature = "contract")]
    async fn make() -> Arc<dyn EventStore> {
        Arc::new(EncryptingEventStore::new(
            Arc::new(crate::testing::InMemoryEventStore::default()),
            Arc::new(InMemoryKeyStore::new()),
        ))
    }

    #[cfg(feature = "contract")]
    crate::event_store_contract!(make);

    fn registered(customer: &str) -> EventEnvelope {
        crate::testing::registered_event(
            customer,
            json!({ "email": "ada@example.com", "first_name": "Ada", "last_name": null, "locale": "en" }),
        )
    }

    fn append_one(event: EventEnvelope) -> AppendRequest {
        AppendRequest {
            stream_id: event.stream_id.clone(),
            expected: ExpectedVersion::Any,
            events: vec![event],
            reservations: Vec::new(),
            receipt: Some(CommandReceipt {
                key: format!("k-{}", Uuid::now_v7()),
                request_hash: "h".into(),
                status: 201,
                body: json!({ "email": "ada@example.com" }),
                recorded_at: Utc::now(),
            }),
        }
    }

    #[tokio::test]
    async fn stored_ciphertext_reads_as_plaintext_and_erased_after_the_key_goes() {
        let inner: Arc<dyn EventStore> = Arc::new(crate::testing::InMemoryEventStore::default());
        let keys = Arc::new(InMemoryKeyStore::new());
        let store = EncryptingEventStore::new(inner.clone(), keys.clone());
        let request = append_one(registered("c-9"));
        let receipt_key = request.receipt.as_ref().map(|r| r.key.clone()).unwrap_or_default();
        let appended = store.append(request).await.expect("append");
        assert_eq!(appended.events[0].data["email"], "ada@example.com");

        let raw = inner.read_stream("customer-c-9", 0, 10).await.expect("raw");
        let raw_json = serde_json::to_value(&raw).expect("json");
        let text = crate::privacy::crypto::text_outside_ciphertext(&raw_json);
        assert!(!text.contains("ada@example.com") && !text.contains("Ada"), "{text}");
        assert_eq!(raw[0].data["locale"], "en");
        assert_eq!(raw[0].data["last_name"], Value::Null);
        let raw_receipt = inner.receipt(&receipt_key).await.expect("receipt").expect("stored");
        assert!(!raw_receipt.body.to_string().contains("ada@"));

        let read = store.read_stream("customer-c-9", 0, 10).await.expect("read");
        assert_eq!(read[0].data["email"], "ada@example.com");
        assert_eq!(read[0].data["first_name"], "Ada");
        let receipt = store.receipt(&receipt_key).await.expect("receipt").expect("stored");
        assert_eq!(receipt.body, json!({ "email": "ada@example.com" }));

        // A bus consumer decrypts what the relay published (the stored form).
        let mut from_bus = raw[0].clone();
        decrypt_envelope(keys.as_ref(), &mut from_bus).await.expect("decrypt");
        assert_eq!(from_bus.data, read[0].data);

        keys.delete("c-9").await.expect("shred");
        let erased = store.load("customer-c-9").await.expect("load");
        assert_eq!(erased.events[0].data["email"], ERASED);
        assert_eq!(erased.events[0].data["locale"], "en");
    }

    #[tokio::test]
    async fn customer_snapshots_are_encrypted_and_ignored_once_erased() {
        let inner: Arc<dyn EventStore> = Arc::new(crate::testing::InMemoryEventStore::default());
        let keys = Arc::new(InMemoryKeyStore::new());
        let store = EncryptingEventStore::new(inner.clone(), keys.clone());
        store.append(append_one(registered("c-7"))).await.expect("append");
        let snapshot = Snapshot {
            stream_id: "customer-c-7".into(),
            version: 1,
            state_schema: 1,
            state: json!({ "email": "ada@example.com" }),
        };
        store.save_snapshot(snapshot.clone()).await.expect("save");
        let raw = inner.load("customer-c-7").await.expect("raw");
        assert!(!raw.snapshot.expect("raw snapshot").state.to_string().contains("ada@"));
        assert_eq!(
            store.load("customer-c-7").await.expect("load").snapshot,
            Some(snapshot.clone())
        );

        keys.delete("c-7").await.expect("shred");
        let loaded = store.load("customer-c-7").await.expect("load");
        assert_eq!(loaded.snapshot, None);
        // A snapshot after erasure creates no new key.
        store.save_snapshot(snapshot).await.expect("save after erasure");
        assert_eq!(keys.existing_key("c-7").await.expect("key"), None);
        assert_eq!(loaded.events.len(), 1);
        assert_eq!(loaded.events[0].data["email"], ERASED);
    }

    #[tokio::test]
    async fn writes_for_an_erased_customer_store_the_marker_and_create_no_key() {
        let inner: Arc<dyn EventStore> = Arc::new(crate::testing::InMemoryEventStore::default());
        let keys = Arc::new(InMemoryKeyStore::new());
        let store = EncryptingEventStore::new(inner.clone(), keys.clone());
        store.append(append_one(registered("c-5"))).await.expect("append");
        let mut requested = registered("c-5");
        requested.event_type = ERASURE_REQUESTED.into();
        requested.data = json!({});
        store.append(append_one(requested)).await.expect("request erasure");
        keys.delete("c-5").await.expect("shred");

        // A late event with personal data (a journey's trigger, say) after erasure.
        let late = registered("c-5");
        store.append(append_one(late)).await.expect("late append");
        assert_eq!(keys.existing_key("c-5").await.expect("key"), None, "no new key");
        let raw = inner.read_stream("customer-c-5", 0, 10).await.expect("raw");
        assert_eq!(raw[2].data["email"], ERASED);
        let read = store.read_stream("customer-c-5", 0, 10).await.expect("read");
        assert_eq!(read.len(), 3);
        assert!(read
            .iter()
            .filter(|e| e.event_type == "CustomerRegistered")
            .all(|e| e.data["email"] == ERASED));
    }

    #[tokio::test]
    async fn events_stored_before_encryption_read_as_stored() {
        let inner: Arc<dyn EventStore> = Arc::new(crate::testing::InMemoryEventStore::default());
        let store = EncryptingEventStore::new(inner.clone(), Arc::new(InMemoryKeyStore::new()));
        let mut request = append_one(registered("c-old"));
        request.receipt = None;
        inner.append(request).await.expect("plain append");
        let read = store.read_stream("customer-c-old", 0, 10).await.expect("read");
        assert_eq!(read[0].data["email"], "ada@example.com");
    }
}
