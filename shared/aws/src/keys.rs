//! The AWS [`KeyStore`] (decisions 0016 and 0044): one item per customer in
//! the DynamoDB `keys` table (`pk` = customer id) holding the customer's data
//! key wrapped, never in clear.
//!
//! **Branch key (decision 0044).** New data keys are 32 random bytes wrapped
//! *locally* with AES-256-GCM under a **branch key**, an AES-256
//! key-encryption key that KMS made once (`GenerateDataKey`, encryption
//! context `{"purpose": "crm-branch-key", "branch_key_id": <id>}`) and that
//! is stored KMS-wrapped in the same table under `pk = #branch#<id>` (a `#`
//! never starts a customer id: those are UUIDs, and this store refuses ids
//! with the prefix). The item `#branch#active` names the branch key new
//! customers get. The associated data of a wrapped data key binds the
//! customer id and the branch key id, so a wrapped key copied to another
//! customer, or tampered with, does not unwrap. The customer's item holds
//! `wrapped_key` and `branch_key_id`. A process unwraps a branch key with one
//! KMS `Decrypt` and keeps it for [`DEFAULT_BRANCH_KEY_TTL`], so creating and
//! reading customers' keys costs no KMS call per customer: about one
//! `Decrypt` per process per branch-key lifetime, plus one `GenerateDataKey`
//! in the whole table's life (the first writer).
//!
//! **Keys written before 0044** (`wrapped_key` is KMS's `CiphertextBlob` of
//! `GenerateDataKey` under the context `{"customer_id": <id>}`, no
//! `branch_key_id`) still unwrap with KMS `Decrypt` under that context, one
//! call per customer per process as before, until `crm-ops rewrap-keys`
//! ([`DynamoKmsKeyStore::rewrap_all`], decision 0049) re-wraps them under
//! the branch key (same data key, conditional write).
//!
//! **Erasure** deletes the customer's item: the wrapped data key is gone, and
//! the branch key alone unwraps nothing.
//!
//! **The cache.** Unwrapped customer keys are cached in the adapter instance,
//! no longer than [`DEFAULT_CACHE_TTL`] per entry and at most
//! [`DEFAULT_CACHE_CAPACITY`] of them (the oldest goes first), so a warm
//! Lambda environment ingesting many customers keeps a bounded amount of
//! key material: reading a cached key costs no round trip, one not cached a
//! consistent GetItem (and no KMS call: the branch key is kept). A key
//! deleted through this instance is forgotten before and after the delete,
//! so it is never served again here; after a key is deleted elsewhere,
//! another warm environment may still use its cached copy for up to the
//! TTL. Erasure deletes the key and then records `CustomerErased`, which
//! readers (and ingestion, before it appends) check; the bound only limits
//! how long a stale copy lives (decision 0054).
//!
//! **Creating** a key for a customer just found without one
//! ([`KeyStore::create_key`]) is one conditional PutItem, with no second
//! read first: one round trip per new customer (or anonymous profile)
//! instead of two.

use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::types::DataKeySpec;
use crm_core::privacy::{unwrap_key, wrap_key, DataKey, KeyError, KeyStore};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The partition key: the customer id, or `#branch#…` for branch keys.
pub const PK: &str = "pk";
/// The wrapped key (B): a customer's data key (under its branch key, or, if
/// written before decision 0044, by KMS), or a branch key as KMS wrapped it.
pub const WRAPPED_KEY: &str = "wrapped_key";
/// The KMS key that wrapped it, as KMS named it (S): branch key items, and
/// customer items written before decision 0044.
pub const KMS_KEY_ID: &str = "kms_key_id";
/// When the key was made (S, RFC 3339).
pub const CREATED_AT: &str = "created_at";
/// The branch key that wrapped a customer's data key (S); in the
/// [`ACTIVE_BRANCH_KEY_PK`] item, the branch key new customers get; in a
/// branch key's own item, its id.
pub const BRANCH_KEY_ID: &str = "branch_key_id";
/// The start of every branch key item's `pk` (`#branch#<id>`): never a
/// customer id.
pub const BRANCH_KEY_PREFIX: &str = "#branch#";
/// The item naming the active branch key (in [`BRANCH_KEY_ID`]).
pub const ACTIVE_BRANCH_KEY_PK: &str = "#branch#active";
/// The encryption context entry bound to data keys written before decision
/// 0044 (KMS-wrapped per customer).
pub const CONTEXT_CUSTOMER_ID: &str = "customer_id";
/// The encryption context entries bound to a branch key.
pub const CONTEXT_PURPOSE: &str = "purpose";
pub const BRANCH_KEY_PURPOSE: &str = "crm-branch-key";
pub const CONTEXT_BRANCH_KEY_ID: &str = "branch_key_id";

/// How long an unwrapped customer key stays in an instance's cache.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
/// How many unwrapped customer keys an instance keeps at most (about 1.5 MB
/// with their ids): more customers than that within [`DEFAULT_CACHE_TTL`]
/// push the oldest out.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// How long an unwrapped branch key (and which one is active) stays in an
/// instance: after that the instance reads the items and calls KMS
/// `Decrypt` again.
pub const DEFAULT_BRANCH_KEY_TTL: Duration = Duration::from_secs(900);

/// KMS Decrypt errors saying a stored key can never be unwrapped (retrying
/// will not help); every other error is worth retrying.
const CORRUPT_CODES: &[&str] = &["InvalidCiphertextException", "IncorrectKeyException"];

/// Unwrapped branch keys of one instance, by id, and the active one's id.
#[derive(Default)]
struct BranchKeys {
    by_id: HashMap<String, (DataKey, Instant)>,
    active: Option<(String, Instant)>,
}

/// A customer's stored item, as written.
enum StoredKey {
    /// Wrapped locally under a branch key (decision 0044).
    Branch { branch_key_id: String, wrapped: Vec<u8> },
    /// Wrapped by KMS under the customer's context (before decision 0044).
    Kms(Vec<u8>),
}

/// Data keys in DynamoDB, wrapped under a KMS-wrapped branch key, cached per
/// instance.
pub struct DynamoKmsKeyStore {
    dynamodb: aws_sdk_dynamodb::Client,
    kms: aws_sdk_kms::Client,
    table: String,
    kms_key_id: String,
    cache_ttl: Duration,
    cache_capacity: usize,
    cache: Mutex<HashMap<String, (DataKey, Instant)>>,
    branch_key_ttl: Duration,
    /// Held across the branch key's reads and KMS call, so concurrent first
    /// uses in one instance cost one `Decrypt`, not one each.
    branch_keys: futures::lock::Mutex<BranchKeys>,
}

impl DynamoKmsKeyStore {
    /// A store over `table`, wrapping branch keys under `kms_key_id` (a key
    /// id, key ARN, alias name or alias ARN), with [`DEFAULT_CACHE_TTL`] and
    /// [`DEFAULT_BRANCH_KEY_TTL`].
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        kms: aws_sdk_kms::Client,
        table: impl Into<String>,
        kms_key_id: impl Into<String>,
    ) -> Self {
        DynamoKmsKeyStore {
            dynamodb,
            kms,
            table: table.into(),
            kms_key_id: kms_key_id.into(),
            cache_ttl: DEFAULT_CACHE_TTL,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cache: Mutex::new(HashMap::new()),
            branch_key_ttl: DEFAULT_BRANCH_KEY_TTL,
            branch_keys: futures::lock::Mutex::new(BranchKeys::default()),
        }
    }

    /// The same store with another customer-key cache lifetime
    /// (`Duration::ZERO`: every read goes to DynamoDB; the branch key is
    /// still kept for its own lifetime).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The same store keeping at most `capacity` customer keys (0: none).
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache_capacity = capacity;
        self
    }

    /// The same store keeping unwrapped branch keys for `ttl`
    /// (`Duration::ZERO`: every use reads the branch key and calls KMS).
    pub fn with_branch_key_ttl(mut self, ttl: Duration) -> Self {
        self.branch_key_ttl = ttl;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamodb
    }

    fn cached(&self, customer_id: &str) -> Option<DataKey> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(customer_id) {
            Some((key, at)) if at.elapsed() < self.cache_ttl => Some(key.clone()),
            Some(_) => {
                cache.remove(customer_id);
                None
            }
            None => None,
        }
    }

    /// Caches `key`, within the TTL and the capacity: when full, expired
    /// entries go first, then the oldest.
    fn remember(&self, customer_id: &str, key: &DataKey) {
        if self.cache_ttl.is_zero() || self.cache_capacity == 0 {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= self.cache_capacity && !cache.contains_key(customer_id) {
                cache.retain(|_, (_, at)| at.elapsed() < self.cache_ttl);
                while cache.len() >= self.cache_capacity {
                    let Some(oldest) = cache.iter().min_by_key(|(_, (_, at))| *at).map(|(id, _)| id.clone()) else {
                        break;
                    };
                    cache.remove(&oldest);
                }
            }
            cache.insert(customer_id.to_string(), (key.clone(), Instant::now()));
        }
    }

    fn forget(&self, customer_id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(customer_id);
        }
    }

    /// One item's attributes (consistent read), or `None`.
    async fn item(&self, pk: &str) -> Result<Option<HashMap<String, AttributeValue>>, KeyError> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(pk.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", &e))?;
        Ok(out.item)
    }

    /// The stored wrapped key of a customer.
    async fn stored(&self, customer_id: &str) -> Result<Option<StoredKey>, KeyError> {
        let Some(item) = self.item(customer_id).await? else {
            return Ok(None);
        };
        let wrapped = binary(&item, WRAPPED_KEY, customer_id)?;
        match item.get(BRANCH_KEY_ID) {
            None => Ok(Some(StoredKey::Kms(wrapped))),
            Some(AttributeValue::S(id)) => Ok(Some(StoredKey::Branch {
                branch_key_id: branch_key_id(id)?.to_string(),
                wrapped,
            })),
            Some(_) => Err(KeyError::Corrupt(format!(
                "the key item of {customer_id} has a {BRANCH_KEY_ID} that is not a string"
            ))),
        }
    }

    /// Unwraps a key written before decision 0044 with KMS `Decrypt` under
    /// the customer's context.
    async fn unwrap_with_kms(&self, customer_id: &str, wrapped: Vec<u8>) -> Result<DataKey, KeyError> {
        let out = self
            .kms
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context(CONTEXT_CUSTOMER_ID, customer_id)
            .send()
            .await
            .map_err(|e| decrypt_error(&format!("the data key of {customer_id}"), e))?;
        let plaintext = out
            .plaintext()
            .ok_or_else(|| KeyError::Corrupt("KMS Decrypt returned no plaintext".into()))?;
        DataKey::from_slice(plaintext.as_ref())
    }

    /// Reads and unwraps the stored key, caching it.
    async fn load(&self, customer_id: &str) -> Result<Option<DataKey>, KeyError> {
        let key = match self.stored(customer_id).await? {
            None => return Ok(None),
            Some(StoredKey::Kms(wrapped)) => self.unwrap_with_kms(customer_id, wrapped).await?,
            Some(StoredKey::Branch { branch_key_id, wrapped }) => {
                let branch_key = self.branch_key(&branch_key_id).await?;
                unwrap_key(&branch_key, &binding(customer_id, &branch_key_id), &wrapped).map_err(|_| {
                    KeyError::Corrupt(format!(
                        "the data key of {customer_id} does not unwrap under branch key {branch_key_id} \
                         (tampered, or moved from another customer)"
                    ))
                })?
            }
        };
        self.remember(customer_id, &key);
        Ok(Some(key))
    }

    /// Makes the customer's key, wraps it under the active branch key and
    /// stores it if the customer has none (a conditional PutItem: it never
    /// replaces a key); when another writer stored one first, that key.
    async fn put_new_key(&self, customer_id: &str) -> Result<DataKey, KeyError> {
        let (branch_key_id, branch_key) = self.active_branch_key().await?;
        let key = DataKey::generate()?;
        let wrapped = wrap_key(&branch_key, &binding(customer_id, &branch_key_id), &key)?;
        let put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(customer_id.to_string()))
            .item(WRAPPED_KEY, AttributeValue::B(Blob::new(wrapped)))
            .item(BRANCH_KEY_ID, AttributeValue::S(branch_key_id))
            .item(CREATED_AT, AttributeValue::S(chrono::Utc::now().to_rfc3339()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match put {
            Ok(_) => {
                self.remember(customer_id, &key);
                Ok(key)
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                // Another writer created it first: theirs is the key.
                self.load(customer_id).await?.ok_or_else(|| {
                    KeyError::Unavailable(format!(
                        "the data key of {customer_id} was created concurrently and deleted before it was read"
                    ))
                })
            }
            Err(e) => Err(unavailable("PutItem", &e)),
        }
    }

    /// The branch key `id`, from the instance or unwrapped from its item.
    async fn branch_key(&self, id: &str) -> Result<DataKey, KeyError> {
        let mut keys = self.branch_keys.lock().await;
        if let Some((key, at)) = keys.by_id.get(id) {
            if at.elapsed() < self.branch_key_ttl {
                return Ok(key.clone());
            }
        }
        let key = self.unwrap_branch_key(id).await?;
        self.keep_branch_key(&mut keys, id, &key);
        Ok(key)
    }

    fn keep_branch_key(&self, keys: &mut BranchKeys, id: &str, key: &DataKey) {
        keys.by_id.retain(|_, (_, at)| at.elapsed() < self.branch_key_ttl);
        if !self.branch_key_ttl.is_zero() {
            keys.by_id.insert(id.to_string(), (key.clone(), Instant::now()));
        }
    }

    /// Reads the branch key item `id` and unwraps it with KMS `Decrypt`.
    async fn unwrap_branch_key(&self, id: &str) -> Result<DataKey, KeyError> {
        let pk = format!("{BRANCH_KEY_PREFIX}{id}");
        let item = self
            .item(&pk)
            .await?
            .ok_or_else(|| KeyError::Corrupt(format!("branch key {id} is not stored")))?;
        let wrapped = binary(&item, WRAPPED_KEY, &pk)?;
        let out = self
            .kms
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context(CONTEXT_PURPOSE, BRANCH_KEY_PURPOSE)
            .encryption_context(CONTEXT_BRANCH_KEY_ID, id)
            .send()
            .await
            .map_err(|e| decrypt_error(&format!("branch key {id}"), e))?;
        let plaintext = out
            .plaintext()
            .ok_or_else(|| KeyError::Corrupt("KMS Decrypt returned no plaintext".into()))?;
        tracing::debug!(branch_key_id = id, "branch key unwrapped with KMS");
        DataKey::from_slice(plaintext.as_ref())
    }

    /// The active branch key (id and key): kept by the instance, else named
    /// by the `#branch#active` item, else made now (race-safe: the first
    /// conditional put of `#branch#active` wins, the others use its key).
    async fn active_branch_key(&self) -> Result<(String, DataKey), KeyError> {
        let mut keys = self.branch_keys.lock().await;
        if let Some((id, at)) = &keys.active {
            if at.elapsed() < self.branch_key_ttl {
                if let Some((key, at)) = keys.by_id.get(id) {
                    if at.elapsed() < self.branch_key_ttl {
                        return Ok((id.clone(), key.clone()));
                    }
                }
            }
        }
        let (id, key) = match self.active_branch_key_id().await? {
            Some(id) => {
                let key = self.unwrap_branch_key(&id).await?;
                (id, key)
            }
            None => self.create_branch_key().await?,
        };
        self.keep_branch_key(&mut keys, &id, &key);
        keys.active = (!self.branch_key_ttl.is_zero()).then(|| (id.clone(), Instant::now()));
        Ok((id, key))
    }

    /// The id the `#branch#active` item names, if there is one.
    async fn active_branch_key_id(&self) -> Result<Option<String>, KeyError> {
        let Some(item) = self.item(ACTIVE_BRANCH_KEY_PK).await? else {
            return Ok(None);
        };
        match item.get(BRANCH_KEY_ID) {
            Some(AttributeValue::S(id)) => Ok(Some(branch_key_id(id)?.to_string())),
            _ => Err(KeyError::Corrupt(format!(
                "{ACTIVE_BRANCH_KEY_PK} has no string {BRANCH_KEY_ID}"
            ))),
        }
    }

    /// Makes a branch key with KMS `GenerateDataKey`, stores it wrapped under
    /// `#branch#<id>`, then makes it active if no other is. The loser of a
    /// race deletes its own (no data key was wrapped under it) and returns
    /// the winner's.
    async fn create_branch_key(&self) -> Result<(String, DataKey), KeyError> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let generated = self
            .kms
            .generate_data_key()
            .key_id(&self.kms_key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_PURPOSE, BRANCH_KEY_PURPOSE)
            .encryption_context(CONTEXT_BRANCH_KEY_ID, &id)
            .send()
            .await
            .map_err(|e| unavailable("KMS GenerateDataKey", &e))?;
        let (Some(plaintext), Some(wrapped)) = (generated.plaintext(), generated.ciphertext_blob()) else {
            return Err(KeyError::Unavailable(
                "KMS GenerateDataKey returned no plaintext or ciphertext".into(),
            ));
        };
        let key = DataKey::from_slice(plaintext.as_ref())?;
        let pk = format!("{BRANCH_KEY_PREFIX}{id}");
        let now = chrono::Utc::now().to_rfc3339();
        self.dynamodb
            .put_item()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(pk.clone()))
            .item(BRANCH_KEY_ID, AttributeValue::S(id.clone()))
            .item(WRAPPED_KEY, AttributeValue::B(Blob::new(wrapped.as_ref().to_vec())))
            .item(
                KMS_KEY_ID,
                AttributeValue::S(generated.key_id().unwrap_or(&self.kms_key_id).to_string()),
            )
            .item(CREATED_AT, AttributeValue::S(now.clone()))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
            .map_err(|e| unavailable("PutItem (branch key)", &e))?;
        let activate = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(ACTIVE_BRANCH_KEY_PK.to_string()))
            .item(BRANCH_KEY_ID, AttributeValue::S(id.clone()))
            .item(CREATED_AT, AttributeValue::S(now))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await;
        match activate {
            Ok(_) => {
                tracing::info!(branch_key_id = %id, "branch key created and active");
                Ok((id, key))
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                // Another instance made one first: nothing was wrapped under
                // ours, so it goes, and theirs is the key.
                if let Err(e) = self
                    .dynamodb
                    .delete_item()
                    .table_name(&self.table)
                    .key(PK, AttributeValue::S(pk))
                    .send()
                    .await
                {
                    tracing::warn!(branch_key_id = %id, error = %DisplayErrorContext(&e), "an unused branch key was left behind");
                }
                let winner = self.active_branch_key_id().await?.ok_or_else(|| {
                    KeyError::Unavailable(format!("{ACTIVE_BRANCH_KEY_PK} was written concurrently and is gone"))
                })?;
                let key = self.unwrap_branch_key(&winner).await?;
                Ok((winner, key))
            }
            Err(e) => Err(unavailable("PutItem (active branch key)", &e)),
        }
    }
}

/// A customer's data key as KMS wrapped it before decision 0044, as listed
/// by [`DynamoKmsKeyStore::kms_wrapped_keys`]: what [`DynamoKmsKeyStore::rewrap`]
/// re-wraps, and the condition of its write (the item still holds exactly
/// this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsWrappedKey {
    pub customer_id: String,
    wrapped: Vec<u8>,
}

/// One page of the keys table, sorted for a re-wrap.
#[derive(Debug, Clone, Default)]
pub struct KeyPage {
    /// Items read.
    pub scanned: usize,
    /// Branch key items (`#branch#…`): not customers' keys.
    pub branch_items: usize,
    /// Customers' keys already wrapped under a branch key.
    pub under_branch_key: usize,
    /// Customers' keys KMS wrapped (before decision 0044).
    pub kms_wrapped: Vec<KmsWrappedKey>,
    /// Items that are none of those: pk and why.
    pub unreadable: Vec<(String, String)>,
    /// Where the next page starts (`None`: this was the last).
    pub next: Option<HashMap<String, AttributeValue>>,
}

/// What re-wrapping one key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrapped {
    /// Now wrapped under the active branch key.
    Rewrapped,
    /// The item was deleted since it was listed (the customer erased): not
    /// written, so it stays deleted.
    Erased,
    /// The item changed since it was listed (re-wrapped by another run):
    /// not written.
    Changed,
}

/// What [`DynamoKmsKeyStore::rewrap_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Items read.
    pub scanned: usize,
    /// Branch key items (not customers' keys): left alone.
    pub branch_items: usize,
    /// Customers' keys already under a branch key: left alone.
    pub already: usize,
    /// KMS-wrapped keys now wrapped under the branch key.
    pub rewrapped: usize,
    /// KMS-wrapped keys deleted (erased) between the scan and the write: left deleted.
    pub erased: usize,
    /// KMS-wrapped keys changed between the scan and the write: left as they are.
    pub changed: usize,
    /// Keys that could not be re-wrapped, and items that hold no key: pk and why.
    pub failed: Vec<(String, String)>,
}

impl DynamoKmsKeyStore {
    /// One page of the keys table (a consistent Scan from `start`), each
    /// item sorted: a branch key item, a customer's key already under a
    /// branch key, or one KMS wrapped before decision 0044.
    pub async fn kms_wrapped_keys(&self, start: Option<HashMap<String, AttributeValue>>) -> Result<KeyPage, KeyError> {
        let out = self
            .dynamodb
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| unavailable("Scan", &e))?;
        let mut page = KeyPage {
            scanned: out.items().len(),
            next: out.last_evaluated_key().cloned().filter(|k| !k.is_empty()),
            ..KeyPage::default()
        };
        for item in out.items() {
            let Some(AttributeValue::S(pk)) = item.get(PK) else {
                page.unreadable.push((format!("{item:?}"), format!("no string {PK}")));
                continue;
            };
            if pk.starts_with(BRANCH_KEY_PREFIX) {
                page.branch_items += 1;
            } else if item.contains_key(BRANCH_KEY_ID) {
                page.under_branch_key += 1;
            } else {
                match binary(item, WRAPPED_KEY, pk) {
                    Ok(wrapped) => page.kms_wrapped.push(KmsWrappedKey {
                        customer_id: pk.clone(),
                        wrapped,
                    }),
                    Err(e) => page.unreadable.push((pk.clone(), e.to_string())),
                }
            }
        }
        Ok(page)
    }

    /// Re-wraps a key KMS wrapped before decision 0044 under the active
    /// branch key: one KMS `Decrypt` (under the customer's context), a local
    /// wrap, then an UpdateItem on the condition that the item still holds
    /// the KMS-wrapped key listed and no branch key id. The data key itself
    /// is the same, so everything encrypted under it still decrypts. An
    /// item deleted meanwhile (an erasure) fails the condition and is never
    /// written again: an erased key does not come back.
    pub async fn rewrap(&self, key: &KmsWrappedKey) -> Result<Rewrapped, KeyError> {
        let customer_id = customer_pk(&key.customer_id)?;
        let data_key = self.unwrap_with_kms(customer_id, key.wrapped.clone()).await?;
        let (branch_key_id, branch_key) = self.active_branch_key().await?;
        let wrapped = wrap_key(&branch_key, &binding(customer_id, &branch_key_id), &data_key)?;
        let updated = self
            .dynamodb
            .update_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(customer_id.to_string()))
            .update_expression("SET #wrapped = :wrapped, #branch = :branch REMOVE #kms")
            .condition_expression("#wrapped = :listed AND attribute_not_exists(#branch)")
            .expression_attribute_names("#wrapped", WRAPPED_KEY)
            .expression_attribute_names("#branch", BRANCH_KEY_ID)
            .expression_attribute_names("#kms", KMS_KEY_ID)
            .expression_attribute_values(":wrapped", AttributeValue::B(Blob::new(wrapped)))
            .expression_attribute_values(":branch", AttributeValue::S(branch_key_id.clone()))
            .expression_attribute_values(":listed", AttributeValue::B(Blob::new(key.wrapped.clone())))
            .send()
            .await;
        match updated {
            Ok(_) => {
                tracing::debug!(customer_id, branch_key_id, "data key re-wrapped under the branch key");
                Ok(Rewrapped::Rewrapped)
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                self.forget(customer_id);
                match self.item(customer_id).await? {
                    None => Ok(Rewrapped::Erased),
                    Some(_) => Ok(Rewrapped::Changed),
                }
            }
            Err(e) => Err(unavailable("UpdateItem", &e)),
        }
    }

    /// Re-wraps every key of the table KMS wrapped before decision 0044
    /// under the active branch key ([`Self::rewrap`]), page by page; leaves
    /// branch key items and keys already under a branch key alone, so a
    /// second run re-wraps nothing. A key that fails is recorded and the
    /// others go on; a page that cannot be read stops it.
    pub async fn rewrap_all(&self) -> Result<RewrapReport, KeyError> {
        let mut report = RewrapReport::default();
        let mut start = None;
        loop {
            let page = self.kms_wrapped_keys(start).await?;
            report.scanned += page.scanned;
            report.branch_items += page.branch_items;
            report.already += page.under_branch_key;
            report.failed.extend(page.unreadable);
            for key in &page.kms_wrapped {
                match self.rewrap(key).await {
                    Ok(Rewrapped::Rewrapped) => report.rewrapped += 1,
                    Ok(Rewrapped::Erased) => report.erased += 1,
                    Ok(Rewrapped::Changed) => report.changed += 1,
                    Err(e) => {
                        tracing::warn!(customer_id = %key.customer_id, error = %e, "data key not re-wrapped");
                        report.failed.push((key.customer_id.clone(), e.to_string()));
                    }
                }
            }
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        tracing::info!(?report, table = %self.table, "data keys re-wrapped");
        Ok(report)
    }
}

/// What a customer's wrapped data key is bound to (the associated data of
/// [`wrap_key`]): the branch key id (32 hex digits, checked by
/// [`branch_key_id`], so it holds no `#`) and the customer id.
fn binding(customer_id: &str, branch_key_id: &str) -> String {
    format!("{BRANCH_KEY_PREFIX}{branch_key_id}#{customer_id}")
}

/// A branch key id as this store writes them (a UUID's 32 hex digits).
fn branch_key_id(id: &str) -> Result<&str, KeyError> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(KeyError::Corrupt(format!("{id:?} is not a branch key id")))
    }
}

/// Refuses a customer id that would name a branch key item.
fn customer_pk(customer_id: &str) -> Result<&str, KeyError> {
    if customer_id.starts_with(BRANCH_KEY_PREFIX) {
        Err(KeyError::Corrupt(format!(
            "{customer_id:?} is not a customer id (the {BRANCH_KEY_PREFIX} prefix is reserved)"
        )))
    } else {
        Ok(customer_id)
    }
}

fn binary(item: &HashMap<String, AttributeValue>, name: &str, pk: &str) -> Result<Vec<u8>, KeyError> {
    match item.get(name) {
        Some(AttributeValue::B(blob)) => Ok(blob.as_ref().to_vec()),
        _ => Err(KeyError::Corrupt(format!("the key item {pk} has no binary {name}"))),
    }
}

fn unavailable<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    operation: &str,
    e: &SdkError<E, R>,
) -> KeyError {
    KeyError::Unavailable(format!("{operation}: {}", DisplayErrorContext(e)))
}

fn decrypt_error<R: std::fmt::Debug>(what: &str, e: SdkError<DecryptError, R>) -> KeyError {
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default();
    if CORRUPT_CODES.contains(&code) {
        KeyError::Corrupt(format!("{what} does not unwrap: {}", DisplayErrorContext(&e)))
    } else {
        unavailable("KMS Decrypt", &e)
    }
}

#[async_trait::async_trait]
impl KeyStore for DynamoKmsKeyStore {
    async fn data_key(&self, customer_id: &str) -> Result<DataKey, KeyError> {
        let customer_id = customer_pk(customer_id)?;
        if let Some(key) = self.cached(customer_id) {
            return Ok(key);
        }
        if let Some(key) = self.load(customer_id).await? {
            return Ok(key);
        }
        self.put_new_key(customer_id).await
    }

    /// One conditional PutItem (no read first); the key another writer
    /// stored meanwhile if the condition fails.
    async fn create_key(&self, customer_id: &str) -> Result<DataKey, KeyError> {
        let customer_id = customer_pk(customer_id)?;
        if let Some(key) = self.cached(customer_id) {
            return Ok(key);
        }
        self.put_new_key(customer_id).await
    }

    async fn existing_key(&self, customer_id: &str) -> Result<Option<DataKey>, KeyError> {
        let customer_id = customer_pk(customer_id)?;
        if let Some(key) = self.cached(customer_id) {
            return Ok(Some(key));
        }
        self.load(customer_id).await
    }

    async fn delete(&self, customer_id: &str) -> Result<(), KeyError> {
        let customer_id = customer_pk(customer_id)?;
        self.forget(customer_id);
        self.dynamodb
            .delete_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(customer_id.to_string()))
            .send()
            .await
            .map_err(|e| unavailable("DeleteItem", &e))?;
        // A concurrent load may have cached it again meanwhile.
        self.forget(customer_id);
        Ok(())
    }
}

/// Creates the `keys` table as the SAM template declares it (`pk` (S) HASH,
/// on-demand billing) and waits until it is ACTIVE: for tests against moto.
pub async fn create_keys_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), String> {
    let build = |e: aws_sdk_dynamodb::error::BuildError| e.to_string();
    client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(PK)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(PK)
                .key_type(KeyType::Hash)
                .build()
                .map_err(build)?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| format!("creating {table}: {}", DisplayErrorContext(&e)))?;
    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(Duration::from_secs(120))
        .await
        .map_err(|e| format!("waiting for {table}: {}", DisplayErrorContext(&e)))?;
    Ok(())
}
