//! The event store as every AWS caller builds it (the functions and
//! crm-ops): the DynamoDB events table underneath, personal fields encrypted
//! under the customers' data keys, which KMS wraps (decisions 0016, 0017).
//! One assembly, so no caller can forget the encryption or the key store.

use crate::dynamodb::DynamoEventStore;
use crate::keys::DynamoKmsKeyStore;
use crm_core::ports::EventStore;
use crm_core::privacy::{EncryptingEventStore, KeyStore};
use crm_core::retention::RetentionPolicy;
use std::sync::Arc;

/// Where the encrypted event store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStoreTables {
    /// `EVENTS_TABLE`.
    pub events_table: String,
    /// `KEYS_TABLE`: the customers' data keys.
    pub keys_table: String,
    /// `DATA_KEYS_KMS_KEY_ID`: the KMS key that wraps them.
    pub data_keys_kms_key_id: String,
}

/// The event store of one process: `events` reads and appends in clear
/// (encrypting on the way in, decrypting on the way out); `stored` is the
/// same table as it holds the items (ciphertext), for scans and the relay's
/// tools; `keys` decrypts what the bus and the queues carry.
#[derive(Clone)]
pub struct EncryptedEventStore {
    pub events: Arc<dyn EventStore>,
    pub stored: Arc<DynamoEventStore>,
    pub keys: Arc<dyn KeyStore>,
}

impl EncryptedEventStore {
    /// Builds it over `dynamodb` and `kms`. With a `retention` policy,
    /// activity items get their TTL (decision 0021): callers that append
    /// activity (the api, the daily fold) pass one.
    pub fn new(
        dynamodb: aws_sdk_dynamodb::Client,
        kms: aws_sdk_kms::Client,
        tables: EventStoreTables,
        retention: Option<RetentionPolicy>,
    ) -> Self {
        let keys: Arc<dyn KeyStore> = Arc::new(DynamoKmsKeyStore::new(
            dynamodb.clone(),
            kms,
            tables.keys_table,
            tables.data_keys_kms_key_id,
        ));
        let stored = DynamoEventStore::new(dynamodb, tables.events_table);
        let stored = Arc::new(match retention {
            Some(policy) => stored.with_retention(policy),
            None => stored,
        });
        EncryptedEventStore {
            events: Arc::new(EncryptingEventStore::new(stored.clone(), keys.clone())),
            stored,
            keys,
        }
    }
}
