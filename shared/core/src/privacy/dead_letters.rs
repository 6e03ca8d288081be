//! Dead letters as stored (ARCHITECTURE.md §8): a consumer parks the event it
//! could not use as it saw it, personal fields decrypted. Before a letter
//! leaves the process, [`EncryptingDeadLetters`] encrypts those fields again
//! under the customer's data key, exactly as the event store holds them, so
//! a dead-letter queue never keeps personal data in clear and erasure shreds
//! its copies too. Redrive decrypts them as the consumers do.

use super::{encrypt_envelope, KeyStore};
use crate::event::EventEnvelope;
use crate::ports::{DeadLetter, DeadLetterQueue, StoreError};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// A [`DeadLetterQueue`] that seals every letter's payload before `inner`
/// keeps it ([`seal_payload`]).
pub struct EncryptingDeadLetters {
    inner: Arc<dyn DeadLetterQueue>,
    keys: Arc<dyn KeyStore>,
}

impl EncryptingDeadLetters {
    pub fn new(inner: Arc<dyn DeadLetterQueue>, keys: Arc<dyn KeyStore>) -> Self {
        EncryptingDeadLetters { inner, keys }
    }
}

#[async_trait]
impl DeadLetterQueue for EncryptingDeadLetters {
    async fn park(&self, mut letter: DeadLetter) -> Result<(), StoreError> {
        seal_payload(self.keys.as_ref(), &mut letter.payload).await?;
        self.inner.park(letter).await
    }
}

/// Encrypts the personal fields of a letter's payload when it is an event
/// envelope, or a bus event whose `detail` is one. Fields already encrypted
/// stay as they are; any other payload is left alone (it carries no
/// decrypted event). A payload that cannot be sealed is an error: parking
/// it in clear is not an option, and the caller retries.
pub async fn seal_payload(keys: &dyn KeyStore, payload: &mut Value) -> Result<(), StoreError> {
    let slot = if payload.get("detail").is_some_and(Value::is_object) {
        match payload.get_mut("detail") {
            Some(detail) => detail,
            None => return Ok(()),
        }
    } else {
        payload
    };
    let Ok(mut envelope) = EventEnvelope::deserialize(&*slot) else {
        return Ok(());
    };
    encrypt_envelope(keys, &mut envelope).await?;
    *slot = serde_json::to_value(&envelope)
        .map_err(|e| StoreError::Failed(format!("sealed dead letter cannot be serialised: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::memory::InMemoryKeyStore;
    use crate::privacy::{decrypt_envelope, is_encrypted};
    use chrono::Utc;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Kept(Mutex<Vec<DeadLetter>>);

    #[async_trait]
    impl DeadLetterQueue for Kept {
        async fn park(&self, letter: DeadLetter) -> Result<(), StoreError> {
            self.0
                .lock()
                .map_err(|e| StoreError::Failed(e.to_string()))?
                .push(letter);
            Ok(())
        }
    }

    fn letter(payload: Value) -> DeadLetter {
        DeadLetter {
            consumer: "customer-360".into(),
            reason: "poison".into(),
            payload,
            failed_at: Utc::now(),
            attempts: 1,
        }
    }

    fn registered() -> EventEnvelope {
        crate::testing::registered_event(
            "0190a000-0000-7000-8000-00000000d001",
            serde_json::json!({"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"}),
        )
    }

    #[tokio::test]
    async fn envelopes_and_bus_events_are_parked_encrypted_and_decrypt_back() {
        let keys: Arc<dyn KeyStore> = Arc::new(InMemoryKeyStore::new());
        let kept = Arc::new(Kept::default());
        let queue = EncryptingDeadLetters::new(kept.clone(), keys.clone());
        let event = registered();
        queue
            .park(letter(serde_json::to_value(&event).expect("json")))
            .await
            .expect("parked");
        queue
            .park(letter(serde_json::json!({"source": "crm.customer", "detail": event})))
            .await
            .expect("parked");
        queue
            .park(letter(serde_json::json!({"not": "an event", "email": "x@example.com"})))
            .await
            .expect("parked");
        let letters = kept.0.lock().expect("lock").clone();
        let text = serde_json::to_string(&letters[..2]).expect("json");
        assert!(!text.contains("ada@example.com"), "{text}");
        let email = &letters[0].payload["data"]["email"];
        assert!(email.as_str().is_some_and(is_encrypted), "{email}");
        for parked in [&letters[0].payload, &letters[1].payload["detail"]] {
            let mut back = EventEnvelope::deserialize(parked).expect("an envelope");
            decrypt_envelope(keys.as_ref(), &mut back).await.expect("decrypts");
            assert_eq!(back, event);
        }
        // What is not an event is parked as it came.
        assert_eq!(letters[2].payload["email"], "x@example.com");
    }

    #[tokio::test]
    async fn sealing_twice_changes_nothing() {
        let keys = InMemoryKeyStore::new();
        let mut payload = serde_json::to_value(registered()).expect("json");
        seal_payload(&keys, &mut payload).await.expect("sealed");
        let once = payload.clone();
        seal_payload(&keys, &mut payload).await.expect("sealed again");
        assert_eq!(payload, once);
    }
}
