//! Decrypting what the bus hands a consumer (decision 0017): the bus carries
//! events as stored, their personal fields encrypted, so a consumer fed by
//! it sees them through [`DecryptingHandler`].

use super::{ConsumeError, EventHandler, GroupOutcome, PageOutcome};
use crate::event::EventEnvelope;
use crate::ports::StoreError;
use crate::privacy::{decrypt_envelope, KeyStore};
use async_trait::async_trait;
use std::sync::Arc;

/// An [`EventHandler`] that decrypts each envelope before `inner` sees it:
/// for consumers fed by the bus, which carries events as stored.
pub struct DecryptingHandler {
    inner: Arc<dyn EventHandler>,
    keys: Arc<dyn KeyStore>,
}

impl DecryptingHandler {
    pub fn new(inner: Arc<dyn EventHandler>, keys: Arc<dyn KeyStore>) -> Self {
        DecryptingHandler { inner, keys }
    }
}

#[async_trait]
impl EventHandler for DecryptingHandler {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn consumer_names(&self) -> Vec<&'static str> {
        self.inner.consumer_names()
    }

    async fn handle(
        &self,
        event: &EventEnvelope,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<GroupOutcome, ConsumeError> {
        let mut plain = event.clone();
        decrypt_envelope(self.keys.as_ref(), &mut plain)
            .await
            .map_err(|e| not_decrypted(self.inner.name(), event, e))?;
        self.inner.handle(&plain, now).await
    }

    async fn handle_for(
        &self,
        consumer: &str,
        event: &EventEnvelope,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<GroupOutcome, ConsumeError> {
        let mut plain = event.clone();
        decrypt_envelope(self.keys.as_ref(), &mut plain)
            .await
            .map_err(|e| not_decrypted(self.inner.name(), event, e))?;
        self.inner.handle_for(consumer, &plain, now).await
    }

    async fn handle_page(
        &self,
        events: &[EventEnvelope],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<PageOutcome, ConsumeError> {
        let mut plain = events.to_vec();
        for event in &mut plain {
            decrypt_envelope(self.keys.as_ref(), event)
                .await
                .map_err(|e| not_decrypted(self.inner.name(), event, e))?;
        }
        self.inner.handle_page(&plain, now).await
    }
}

/// An envelope that did not decrypt: retryable (a key that cannot be had now
/// may be had later; the queue's redrive policy parks what never decrypts).
#[derive(Debug, thiserror::Error)]
#[error("decrypting {stream_id} v{version}: {source}")]
pub struct NotDecrypted {
    pub stream_id: String,
    pub version: u64,
    pub source: StoreError,
}

fn not_decrypted(consumer: &'static str, event: &EventEnvelope, source: StoreError) -> ConsumeError {
    ConsumeError::retry(
        consumer,
        NotDecrypted {
            stream_id: event.stream_id.clone(),
            version: event.version,
            source,
        },
    )
}
