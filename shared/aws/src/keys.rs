//! The AWS [`KeyStore`] (decision 0016): one item per customer in the
//! DynamoDB `keys` table (`pk` = customer id) holding the customer's data key
//! as KMS wrapped it (`CiphertextBlob` of `GenerateDataKey`, key spec
//! AES_256, encryption context `{"customer_id": <id>}`), unwrapped with KMS
//! `Decrypt` under the same context.
//!
//! **The cache.** Unwrapped keys are cached in the adapter instance, so a
//! Lambda function that builds one store at start-up (outside the handler)
//! calls KMS once per customer per *execution environment*, not once per
//! event. The cache lives as long as that environment (minutes to hours) and
//! no longer than [`DEFAULT_CACHE_TTL`] per entry: after a key is deleted
//! elsewhere, another warm environment may still use its cached copy for up
//! to that long. Erasure deletes the key and then records `CustomerErased`,
//! which readers check; the bound only limits how long a stale copy lives.

use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::types::DataKeySpec;
use crm_core::privacy::{DataKey, KeyError, KeyStore};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The partition key: the customer id.
pub const PK: &str = "pk";
/// The data key as KMS wrapped it (B).
pub const WRAPPED_KEY: &str = "wrapped_key";
/// The KMS key that wrapped it, as KMS named it (S).
pub const KMS_KEY_ID: &str = "kms_key_id";
/// When the key was made (S, RFC 3339).
pub const CREATED_AT: &str = "created_at";
/// The name of the encryption context entry bound to every data key.
pub const CONTEXT_CUSTOMER_ID: &str = "customer_id";

/// How long an unwrapped key stays in an instance's cache.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);

/// KMS Decrypt errors saying a stored key can never be unwrapped (retrying
/// will not help); every other error is worth retrying.
const CORRUPT_CODES: &[&str] = &["InvalidCiphertextException", "IncorrectKeyException"];

/// Data keys in DynamoDB, wrapped by KMS, cached per instance.
pub struct DynamoKmsKeyStore {
    dynamodb: aws_sdk_dynamodb::Client,
    kms: aws_sdk_kms::Client,
    table: String,
    kms_key_id: String,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, (DataKey, Instant)>>,
}

impl DynamoKmsKeyStore {
    /// A store over `table`, wrapping new keys under `kms_key_id` (a key id,
    /// key ARN, alias name or alias ARN), with [`DEFAULT_CACHE_TTL`].
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
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The same store with another cache lifetime (`Duration::ZERO`: no cache).
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
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

    fn remember(&self, customer_id: &str, key: &DataKey) {
        if self.cache_ttl.is_zero() {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(customer_id.to_string(), (key.clone(), Instant::now()));
        }
    }

    fn forget(&self, customer_id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(customer_id);
        }
    }

    /// The stored wrapped key of a customer (consistent read).
    async fn stored(&self, customer_id: &str) -> Result<Option<Vec<u8>>, KeyError> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key(PK, AttributeValue::S(customer_id.to_string()))
            .projection_expression("#w")
            .expression_attribute_names("#w", WRAPPED_KEY)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem", &e))?;
        let Some(item) = out.item() else {
            return Ok(None);
        };
        match item.get(WRAPPED_KEY) {
            Some(AttributeValue::B(blob)) => Ok(Some(blob.as_ref().to_vec())),
            _ => Err(KeyError::Corrupt(format!(
                "the key item of {customer_id} has no binary {WRAPPED_KEY}"
            ))),
        }
    }

    /// Unwraps a stored key with KMS `Decrypt` under the customer's context.
    async fn unwrap(&self, customer_id: &str, wrapped: Vec<u8>) -> Result<DataKey, KeyError> {
        let out = self
            .kms
            .decrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_context(CONTEXT_CUSTOMER_ID, customer_id)
            .send()
            .await
            .map_err(|e| decrypt_error(customer_id, e))?;
        let plaintext = out
            .plaintext()
            .ok_or_else(|| KeyError::Corrupt("KMS Decrypt returned no plaintext".into()))?;
        DataKey::from_slice(plaintext.as_ref())
    }

    /// Reads and unwraps the stored key, caching it.
    async fn load(&self, customer_id: &str) -> Result<Option<DataKey>, KeyError> {
        let Some(wrapped) = self.stored(customer_id).await? else {
            return Ok(None);
        };
        let key = self.unwrap(customer_id, wrapped).await?;
        self.remember(customer_id, &key);
        Ok(Some(key))
    }
}

fn unavailable<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    operation: &str,
    e: &SdkError<E, R>,
) -> KeyError {
    KeyError::Unavailable(format!("{operation}: {}", DisplayErrorContext(e)))
}

fn decrypt_error<R: std::fmt::Debug>(customer_id: &str, e: SdkError<DecryptError, R>) -> KeyError {
    let code = e.as_service_error().and_then(|s| s.code()).unwrap_or_default();
    if CORRUPT_CODES.contains(&code) {
        KeyError::Corrupt(format!(
            "the data key of {customer_id} does not unwrap: {}",
            DisplayErrorContext(&e)
        ))
    } else {
        unavailable("KMS Decrypt", &e)
    }
}

#[async_trait::async_trait]
impl KeyStore for DynamoKmsKeyStore {
    async fn data_key(&self, customer_id: &str) -> Result<DataKey, KeyError> {
        if let Some(key) = self.cached(customer_id) {
            return Ok(key);
        }
        if let Some(key) = self.load(customer_id).await? {
            return Ok(key);
        }
        let generated = self
            .kms
            .generate_data_key()
            .key_id(&self.kms_key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_CUSTOMER_ID, customer_id)
            .send()
            .await
            .map_err(|e| unavailable("KMS GenerateDataKey", &e))?;
        let (Some(plaintext), Some(wrapped)) = (generated.plaintext(), generated.ciphertext_blob()) else {
            return Err(KeyError::Unavailable(
                "KMS GenerateDataKey returned no plaintext or ciphertext".into(),
            ));
        };
        let key = DataKey::from_slice(plaintext.as_ref())?;
        let put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item(PK, AttributeValue::S(customer_id.to_string()))
            .item(WRAPPED_KEY, AttributeValue::B(Blob::new(wrapped.as_ref().to_vec())))
            .item(
                KMS_KEY_ID,
                AttributeValue::S(generated.key_id().unwrap_or(&self.kms_key_id).to_string()),
            )
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

    async fn existing_key(&self, customer_id: &str) -> Result<Option<DataKey>, KeyError> {
        if let Some(key) = self.cached(customer_id) {
            return Ok(Some(key));
        }
        self.load(customer_id).await
    }

    async fn delete(&self, customer_id: &str) -> Result<(), KeyError> {
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
