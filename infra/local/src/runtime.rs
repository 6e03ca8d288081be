//! The local runtime assembled: the SQLite event store (which wakes the bus
//! on every append), the read models, the dead letters and the bus with the
//! template's rules, all in one database file.

use crate::bus::{rules_from_template, LocalBus, RuleError, SqliteDeadLetters, Target};
use crate::read_models::SqliteReadModels;
use crate::store::SqliteEventStore;
use async_trait::async_trait;
use crm_api::{router, AppState, Auth};
use crm_core::clock::SystemClock;
use crm_core::consumer::ConsumerGroup;
use crm_core::event::EventEnvelope;
use crm_core::ports::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("template rules: {0}")]
    Rules(#[from] RuleError),
}

/// The event store as the API uses it locally: every append wakes the bus.
pub struct WakingEventStore {
    inner: Arc<SqliteEventStore>,
    wake: Arc<Notify>,
}

#[async_trait]
impl EventStore for WakingEventStore {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        self.inner.load(stream_id).await
    }
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner.read_stream(stream_id, after, limit).await
    }
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let appended = self.inner.append(request).await?;
        self.wake.notify_one();
        Ok(appended)
    }
    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        self.inner.receipt(key).await
    }
    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.reservation_owner(key).await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        self.inner.read_all(after, limit).await
    }
}

pub struct LocalRuntime {
    pub events: Arc<SqliteEventStore>,
    pub docs: Arc<SqliteReadModels>,
    pub bus: Arc<LocalBus>,
    wake: Arc<Notify>,
}

impl LocalRuntime {
    /// Opens the runtime over the database file `db`, with the rules of `template`.
    pub fn open(db: &Path, template: &str) -> Result<Self, RuntimeError> {
        let events = Arc::new(SqliteEventStore::open(db)?);
        let docs = Arc::new(SqliteReadModels::open(db)?);
        let dead_letters: Arc<dyn DeadLetterQueue> = Arc::new(SqliteDeadLetters::open(db)?);
        let mut targets = Vec::new();
        for rule in rules_from_template(template)? {
            let (store, read): (Arc<dyn EventStore>, Arc<dyn ReadModelStore>) = (events.clone(), docs.clone());
            let group = match rule.target.as_str() {
                "projector" => ConsumerGroup::projector(store, read, dead_letters.clone()),
                "consent" => ConsumerGroup::consent(store, read, dead_letters.clone()),
                other => {
                    tracing::warn!(
                        target = other,
                        "the template routes events to a function the local runtime does not host yet"
                    );
                    continue;
                }
            };
            targets.push(Target { rule, group });
        }
        let bus = Arc::new(LocalBus::new(events.clone(), db, targets)?);
        Ok(LocalRuntime {
            events,
            docs,
            bus,
            wake: Arc::new(Notify::new()),
        })
    }

    /// The event store for command handlers: appends wake the bus.
    pub fn command_store(&self) -> Arc<dyn EventStore> {
        Arc::new(WakingEventStore {
            inner: self.events.clone(),
            wake: self.wake.clone(),
        })
    }

    /// The API over this runtime.
    pub fn app(&self, token: String) -> axum::Router {
        let state = AppState::new(
            self.command_store(),
            self.docs.clone(),
            Arc::new(SystemClock),
            Auth::BearerToken(token),
        )
        .with_health(self.bus.clone());
        router(state)
    }

    /// Starts delivering in the background (woken by appends, polling as a fallback).
    pub fn spawn_bus(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.bus.clone().run(self.wake.clone(), Duration::from_millis(500)))
    }
}
