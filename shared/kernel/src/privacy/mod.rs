//! Privacy by construction (ARCHITECTURE.md §8, issue 7, decision 0016): the
//! building blocks of crypto-shredding.
//!
//! * [`KeyStore`]: one 256-bit data key per customer, created on first use
//!   and deleted on erasure. Deleting the key makes every stored copy of the
//!   customer's personal data unreadable at once.
//! * [`encrypt_field`] / [`decrypt_field`]: one text field under AES-256-GCM,
//!   written as `enc:v1:<base64url(nonce | ciphertext)>`, with the customer id
//!   and the field's path as associated data.
//! * [`encrypt_paths`] / [`decrypt_paths`]: the personal fields of an event
//!   payload ([`personal_data_paths`] per event type); read without a key
//!   (erased), each becomes [`ERASED`].
//!
//! * [`EncryptingEventStore`]: the decorator over any event store that
//!   encrypts on append and decrypts on read (decision 0017), and
//!   `consumer::DecryptingHandler` for consumers fed by the bus (their dead letters
//!   are sealed back into the stored form by
//!   `consumer::SealedDeadLetters`, decision 0040).
//! * [`IdentifierHasher`]: salted hashes of email addresses and phone
//!   numbers, the keys of the proof ledger and the suppression list
//!   (decision 0019).

mod crypto;
mod identifiers;
pub mod migrate;
mod paths;
pub mod read_models;
pub mod scrub;
mod store;

#[cfg(any(test, feature = "contract"))]
pub mod key_store_contract;
#[cfg(any(test, feature = "testing"))]
pub mod memory;

#[cfg(any(test, feature = "testing"))]
pub use crypto::text_outside_ciphertext;
pub use crypto::{
    decrypt_field, encrypt_field, is_encrypted, random_bytes, text_without_ciphertext, unwrap_key, wrap_key,
    CryptoError, ENCRYPTED_PREFIX,
};
pub use identifiers::{HashedIdentifier, IdentifierHasher, IdentifierKind, LookupKind};
pub use paths::{decrypt_paths, encrypt_paths, erasable, personal_data_paths, ERASED, PERSONAL_DATA};
pub use store::{decrypt_envelope, decrypt_envelopes, encrypt_envelope, EncryptingEventStore};

use async_trait::async_trait;
use zeroize::Zeroize;

/// The length of a data key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// A customer's 256-bit data key. Its bytes are wiped when it is dropped and
/// never printed: `Debug` shows `DataKey(..)`.
#[derive(Clone)]
pub struct DataKey([u8; KEY_LEN]);

impl DataKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Unavailable(format!("no randomness: {e}")))?;
        Ok(DataKey(bytes))
    }

    /// A key from its raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        DataKey(bytes)
    }

    /// A key from a slice, which must be exactly [`KEY_LEN`] bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|_| KeyError::Corrupt(format!("a data key is {KEY_LEN} bytes, not {}", bytes.len())))?;
        Ok(DataKey(array))
    }

    /// The raw bytes (for wrapping and for the cipher; never log them).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// Compared in constant time.
impl PartialEq for DataKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl Eq for DataKey {}

/// A key store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The store, the key service or the randomness source is unreachable or
    /// refused for now (worth retrying).
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    /// A stored key cannot be unwrapped or has the wrong shape (for example,
    /// another master key): retrying will not help.
    #[error("stored data key is unusable: {0}")]
    Corrupt(String),
}

/// The port of the per-customer data keys (ARCHITECTURE.md §8).
///
/// Adapters: `crm_local::adapters::keys::SqliteKeyStore` (a SQLite table, keys wrapped
/// under a master key file) and `crm_aws::keys::DynamoKmsKeyStore` (a DynamoDB
/// table, keys wrapped by KMS).
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The customer's data key, created on first use. Concurrent first uses
    /// converge on one key: the store creates it with a conditional write, and
    /// the loser of the race reads and returns the winner's key.
    async fn data_key(&self, customer_id: &str) -> Result<DataKey, KeyError>;

    /// The customer's data key if there is one; `None` when it was never
    /// created or was deleted (erased).
    async fn existing_key(&self, customer_id: &str) -> Result<Option<DataKey>, KeyError>;

    /// The data key of a customer whose key was just found absent
    /// ([`Self::existing_key`] said `None`): a store may write a new key at
    /// once, without reading again, with the same conditional write as
    /// [`Self::data_key`] (it never replaces a key: the loser of a race
    /// returns the winner's). By default, [`Self::data_key`].
    async fn create_key(&self, customer_id: &str) -> Result<DataKey, KeyError> {
        self.data_key(customer_id).await
    }

    /// Deletes the customer's data key (crypto-shredding). Deleting a key
    /// that does not exist is fine.
    async fn delete(&self, customer_id: &str) -> Result<(), KeyError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_bytes() {
        let key = DataKey::from_bytes([0xab; KEY_LEN]);
        let printed = format!("{key:?} {:?}", Some(key.clone()));
        assert_eq!(printed, "DataKey(..) Some(DataKey(..))");
        assert!(!printed.contains("171") && !printed.to_lowercase().contains("ab, "));
    }

    #[test]
    fn generated_keys_differ_and_compare() {
        let a = DataKey::generate().expect("key");
        let b = DataKey::generate().expect("key");
        assert_ne!(a, b);
        assert_eq!(a, a.clone());
        assert_eq!(DataKey::from_slice(a.as_bytes()).expect("32 bytes"), a);
        assert!(matches!(DataKey::from_slice(&[1, 2, 3]), Err(KeyError::Corrupt(_))));
    }
}
