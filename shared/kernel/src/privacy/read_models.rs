//! Read models hold personal values encrypted (issue 16 item 1, decision
//! 0045): [`SealedReadModels`], the decorator over any [`ReadModelStore`]
//! that encrypts the personal values of a document on write and decrypts
//! them on read, as [`super::EncryptingEventStore`] does for events.
//!
//! * Which values are personal: [`SEALED_DOCUMENTS`], per consumer and sort
//!   key prefix, as paths into the document. A document no entry names is
//!   stored as it is.
//! * The format is the events' one: `enc:v1:` under the customer's data key
//!   ([`encrypt_field`]), the customer id and `<consumer>:<path>` (array
//!   elements by index: `timeline:changes.0.new`) as associated data, so a
//!   value copied to another customer, document kind or field does not
//!   decrypt.
//! * The customer is the document's partition: every sealed document lives
//!   in its customer's partition (a kind of document kept elsewhere would
//!   need its customer id in clear in the body, and an owner rule here).
//! * The read side never creates a key ([`KeyStore::existing_key`]): with
//!   no key (the customer was erased), personal values are written as
//!   [`ERASED`] and read as [`ERASED`], whether they were stored encrypted
//!   or, before the rebuild, plain. Erasure therefore rewrites no view: a
//!   view of an erased customer reads `[erased]`, however long it is.
//! * With a key, a plain value (a document written before sealing, until
//!   `replay` rebuilds it) reads as it is; an encrypted value that does not
//!   decrypt is an error, never silently dropped.
//! * Checkpoints, deletes and documents with no personal value pass
//!   through; a read or write of those looks up no key.

use super::{decrypt_field, encrypt_field, is_encrypted, CryptoError, DataKey, KeyError, KeyStore, ERASED};
use crate::ports::{Commit, CommitError, ReadModelStore, ReadOp, StoreError};
use crate::vocabulary::streams::{CONSENT_LEDGER, CUSTOMER_360, TIMELINE};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// One kind of document that holds personal values.
#[derive(Debug, Clone, Copy)]
pub struct SealedDocument {
    /// The consumer (read-model namespace) it belongs to.
    pub consumer: &'static str,
    /// The start of its sort key.
    pub sort_prefix: &'static str,
    /// Its personal values, as dotted paths; `*` stands for every element
    /// of an array. A value is encrypted whole, whatever its JSON type (an
    /// address object, a date): as its JSON text.
    pub paths: &'static [&'static str],
    /// An object holding one of `paths` that stays plain (the timeline's
    /// status and consent changes); `None`: none does.
    pub keep_plain: Option<fn(&Value) -> bool>,
}

/// A timeline change of the status or of a consent: kept plain, so the
/// audit trail of an erased customer still says what happened to them.
fn status_or_consent_change(object: &Value) -> bool {
    object
        .get("field")
        .and_then(Value::as_str)
        .is_some_and(|f| f == "status" || f.starts_with("consent."))
}

/// Every kind of document that holds personal values: the customer 360, the
/// timeline's entries and the consent ledger (its proofs' IP and user
/// agent). The test `every_personal_value_of_every_projection_is_sealed`
/// projects a customer with every personal field through every projection
/// of the projector, consent and channel groups and fails on any plain
/// personal value left in any document, so a new kind shows up there.
pub const SEALED_DOCUMENTS: &[SealedDocument] = &[
    SealedDocument {
        consumer: CUSTOMER_360,
        sort_prefix: "profile",
        paths: &[
            "email",
            "first_name",
            "last_name",
            "phone",
            "address",
            "date_of_birth",
            "push_devices.*.token",
        ],
        keep_plain: None,
    },
    SealedDocument {
        consumer: TIMELINE,
        sort_prefix: "entry#",
        paths: &["ip", "user_agent", "changes.*.old", "changes.*.new"],
        keep_plain: Some(status_or_consent_change),
    },
    SealedDocument {
        consumer: CONSENT_LEDGER,
        sort_prefix: "current#",
        paths: &["proof.ip", "proof.user_agent"],
        keep_plain: None,
    },
    SealedDocument {
        consumer: CONSENT_LEDGER,
        sort_prefix: "history#",
        paths: &["ip", "user_agent"],
        keep_plain: None,
    },
];

/// What `consumer`'s document at `sort` seals, if anything.
pub fn sealed_document(consumer: &str, sort: &str) -> Option<&'static SealedDocument> {
    SEALED_DOCUMENTS
        .iter()
        .find(|d| d.consumer == consumer && sort.starts_with(d.sort_prefix))
}

/// The present, non-null personal values of `body` as concrete paths
/// (`changes.3.new`), with the objects [`SealedDocument::keep_plain`] keeps
/// left out.
fn personal_values(document: &SealedDocument, body: &Value) -> Vec<String> {
    fn walk(
        value: &Value,
        segments: &[&str],
        at: &mut Vec<String>,
        keep_plain: Option<fn(&Value) -> bool>,
        out: &mut Vec<String>,
    ) {
        let Some((first, rest)) = segments.split_first() else {
            return;
        };
        let children: Vec<(String, &Value)> = match (*first, value) {
            ("*", Value::Array(items)) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
            (key, Value::Object(fields)) => fields.get(key).map(|v| (key.to_string(), v)).into_iter().collect(),
            _ => Vec::new(),
        };
        for (name, child) in children {
            at.push(name);
            if rest.is_empty() {
                let kept = keep_plain.is_some_and(|keep| keep(value));
                if !child.is_null() && !kept {
                    out.push(at.join("."));
                }
            } else {
                walk(child, rest, at, keep_plain, out);
            }
            at.pop();
        }
    }
    let mut out = Vec::new();
    for path in document.paths {
        let segments: Vec<&str> = path.split('.').collect();
        walk(body, &segments, &mut Vec::new(), document.keep_plain, &mut out);
    }
    out
}

/// The value at a concrete dotted path (array elements by index).
fn value_mut<'a>(value: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.').try_fold(value, |v, key| match v {
        Value::Object(fields) => fields.get_mut(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

/// The associated data's field path of one value.
fn field_path(consumer: &str, path: &str) -> String {
    format!("{consumer}:{path}")
}

fn key_error(e: KeyError) -> StoreError {
    match e {
        KeyError::Unavailable(m) => StoreError::Unavailable(m),
        KeyError::Corrupt(m) => StoreError::Failed(m),
    }
}

fn crypto_error(consumer: &str, customer_id: &str, path: &str, e: CryptoError) -> StoreError {
    StoreError::Failed(format!("{consumer} document of {customer_id}, {path}: {e}"))
}

/// Encrypts the personal values of `consumer`'s document `body` of
/// `customer_id` with `key`, or writes them as [`ERASED`] with no key.
/// Values this key already encrypted for this customer and field are left
/// as they are, so sealing twice changes nothing.
pub fn seal_document(
    consumer: &str,
    sort: &str,
    customer_id: &str,
    key: Option<&DataKey>,
    body: &mut Value,
) -> Result<(), StoreError> {
    let Some(document) = sealed_document(consumer, sort) else {
        return Ok(());
    };
    for path in personal_values(document, body) {
        let Some(value) = value_mut(body, &path) else {
            continue;
        };
        let field = field_path(consumer, &path);
        match (key, &*value) {
            (None, _) => *value = Value::String(ERASED.to_string()),
            (Some(key), Value::String(s)) if is_encrypted(s) && decrypt_field(key, customer_id, &field, s).is_ok() => {}
            (Some(key), plain) => {
                let text = encrypt_field(key, customer_id, &field, &plain.to_string())
                    .map_err(|e| crypto_error(consumer, customer_id, &path, e))?;
                *value = Value::String(text);
            }
        }
    }
    Ok(())
}

/// Decrypts the personal values of `consumer`'s document `body` of
/// `customer_id` with `key`; with no key each reads as [`ERASED`].
pub fn open_document(
    consumer: &str,
    sort: &str,
    customer_id: &str,
    key: Option<&DataKey>,
    body: &mut Value,
) -> Result<(), StoreError> {
    let Some(document) = sealed_document(consumer, sort) else {
        return Ok(());
    };
    for path in personal_values(document, body) {
        let Some(value) = value_mut(body, &path) else {
            continue;
        };
        match (key, &*value) {
            (None, _) => *value = Value::String(ERASED.to_string()),
            (Some(key), Value::String(s)) if is_encrypted(s) => {
                let json = decrypt_field(key, customer_id, &field_path(consumer, &path), s)
                    .map_err(|e| crypto_error(consumer, customer_id, &path, e))?;
                *value = serde_json::from_str(&json)
                    .map_err(|e| crypto_error(consumer, customer_id, &path, CryptoError::Invalid(e.to_string())))?;
            }
            // Written before sealing: read as it is until the rebuild.
            (Some(_), _) => {}
        }
    }
    Ok(())
}

/// Whether `consumer`'s document `body` at `sort` has a personal value to
/// seal or open (else no key is looked up).
fn has_personal_values(consumer: &str, sort: &str, body: &Value) -> bool {
    sealed_document(consumer, sort).is_some_and(|d| !personal_values(d, body).is_empty())
}

/// Existing keys looked up once per customer within one read or write.
struct Keys<'a> {
    store: &'a dyn KeyStore,
    found: HashMap<String, Option<DataKey>>,
}

impl<'a> Keys<'a> {
    fn new(store: &'a dyn KeyStore) -> Self {
        Keys {
            store,
            found: HashMap::new(),
        }
    }

    /// The customer's key if it exists (the read side never creates one).
    async fn existing(&mut self, customer_id: &str) -> Result<Option<DataKey>, StoreError> {
        if let Some(key) = self.found.get(customer_id) {
            return Ok(key.clone());
        }
        let key = self.store.existing_key(customer_id).await.map_err(key_error)?;
        self.found.insert(customer_id.to_string(), key.clone());
        Ok(key)
    }

    async fn seal_ops(&mut self, consumer: &str, ops: &mut [ReadOp]) -> Result<(), StoreError> {
        for op in ops {
            if let ReadOp::Put { partition, sort, body } = op {
                if has_personal_values(consumer, sort, body) {
                    let key = self.existing(partition).await?;
                    seal_document(consumer, sort, partition, key.as_ref(), body)?;
                }
            }
        }
        Ok(())
    }

    async fn open(&mut self, consumer: &str, partition: &str, sort: &str, body: &mut Value) -> Result<(), StoreError> {
        if has_personal_values(consumer, sort, body) {
            let key = self.existing(partition).await?;
            open_document(consumer, sort, partition, key.as_ref(), body)?;
        }
        Ok(())
    }
}

/// A [`ReadModelStore`] that keeps the personal values of its documents
/// ([`SEALED_DOCUMENTS`]) encrypted in `inner`.
///
/// It derefs to the store beneath for that adapter's own operations
/// (clearing a consumer before a rebuild, its client for a warm-up); every
/// document read and write through the [`ReadModelStore`] port goes through
/// the seal.
pub struct SealedReadModels<R: ?Sized = dyn ReadModelStore> {
    inner: Arc<R>,
    keys: Arc<dyn KeyStore>,
}

impl<R: ReadModelStore + ?Sized> SealedReadModels<R> {
    pub fn new(inner: Arc<R>, keys: Arc<dyn KeyStore>) -> Self {
        SealedReadModels { inner, keys }
    }

    /// The store underneath (personal values as ciphertext).
    pub fn inner(&self) -> &Arc<R> {
        &self.inner
    }
}

impl<R: ?Sized> std::ops::Deref for SealedReadModels<R> {
    type Target = R;

    fn deref(&self) -> &R {
        &self.inner
    }
}

#[async_trait]
impl<R: ReadModelStore + ?Sized> ReadModelStore for SealedReadModels<R> {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        self.inner.checkpoint(consumer, stream_id).await
    }

    async fn commit(
        &self,
        consumer: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        mut ops: Vec<ReadOp>,
    ) -> Result<(), CommitError> {
        Keys::new(self.keys.as_ref()).seal_ops(consumer, &mut ops).await?;
        self.inner.commit(consumer, stream_id, expected, new, ops).await
    }

    async fn commit_all(&self, mut commits: Vec<Commit>) -> Result<(), CommitError> {
        let mut keys = Keys::new(self.keys.as_ref());
        for c in &mut commits {
            keys.seal_ops(&c.consumer, &mut c.idempotent).await?;
            keys.seal_ops(&c.consumer, &mut c.ops).await?;
        }
        self.inner.commit_all(commits).await
    }

    async fn checkpoints(&self, keys: &[(String, String)]) -> Result<Vec<u64>, StoreError> {
        self.inner.checkpoints(keys).await
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<Value>, StoreError> {
        let Some(mut body) = self.inner.get(consumer, partition, sort).await? else {
            return Ok(None);
        };
        Keys::new(self.keys.as_ref())
            .open(consumer, partition, sort, &mut body)
            .await?;
        Ok(Some(body))
    }

    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        let mut page = self.inner.list(consumer, partition, prefix, after, limit).await?;
        let mut keys = Keys::new(self.keys.as_ref());
        for (sort, body) in &mut page {
            keys.open(consumer, partition, sort, body).await?;
        }
        Ok(page)
    }
}
