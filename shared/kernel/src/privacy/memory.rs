//! An in-memory [`KeyStore`] for domain tests (adapters are tested against
//! real SQLite and DynamoDB with KMS on moto).

use super::{DataKey, KeyError, KeyStore};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;

/// Keys in a map behind a lock: the lock makes create-if-absent one step.
#[derive(Default)]
pub struct InMemoryKeyStore {
    keys: Mutex<HashMap<String, DataKey>>,
}

impl InMemoryKeyStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn keys(&self) -> Result<std::sync::MutexGuard<'_, HashMap<String, DataKey>>, KeyError> {
        self.keys
            .lock()
            .map_err(|_| KeyError::Unavailable("key map mutex poisoned".into()))
    }
}

#[async_trait]
impl KeyStore for InMemoryKeyStore {
    async fn data_key(&self, customer_id: &str) -> Result<DataKey, KeyError> {
        let mut keys = self.keys()?;
        if let Some(key) = keys.get(customer_id) {
            return Ok(key.clone());
        }
        let key = DataKey::generate()?;
        keys.insert(customer_id.to_string(), key.clone());
        Ok(key)
    }

    async fn existing_key(&self, customer_id: &str) -> Result<Option<DataKey>, KeyError> {
        Ok(self.keys()?.get(customer_id).cloned())
    }

    async fn delete(&self, customer_id: &str) -> Result<(), KeyError> {
        self.keys()?.remove(customer_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    async fn fresh_store() -> Arc<dyn KeyStore> {
        Arc::new(InMemoryKeyStore::new())
    }

    crate::key_store_contract!(fresh_store);
}
