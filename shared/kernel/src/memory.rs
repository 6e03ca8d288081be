//! Read models in memory: what a fold needs when nothing is stored (the
//! consistency check, the bench's fold, domain tests).

use crate::ports::*;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

pub type DocKey = (String, String, String);

#[derive(Default)]
struct ReadInner {
    checkpoints: HashMap<(String, String), u64>,
    docs: BTreeMap<DocKey, serde_json::Value>,
}

/// A read-model store in a `Mutex`: for domain tests, the consistency
/// check's fold (`ops::check`) and the bench's fold; never for data that
/// must outlive the process.
#[derive(Default)]
pub struct InMemoryReadModels {
    inner: Mutex<ReadInner>,
}

impl InMemoryReadModels {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ReadInner>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Failed("poisoned".into()))
    }

    /// Every document, for comparing whole read models in tests.
    pub fn dump(&self) -> BTreeMap<DocKey, serde_json::Value> {
        self.inner.lock().map(|i| i.docs.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl ReadModelStore for InMemoryReadModels {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        Ok(*self
            .lock()?
            .checkpoints
            .get(&(consumer.to_string(), stream_id.to_string()))
            .unwrap_or(&0))
    }

    async fn commit(
        &self,
        consumer: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        ops: Vec<ReadOp>,
    ) -> Result<(), CommitError> {
        check_commit_size(&ops)?;
        let mut inner = self.lock()?;
        let key = (consumer.to_string(), stream_id.to_string());
        if *inner.checkpoints.get(&key).unwrap_or(&0) != expected {
            return Err(CommitError::Conflict {
                consumer: consumer.into(),
                stream_id: stream_id.into(),
                expected,
            });
        }
        for op in ops {
            let (partition, sort) = op.key();
            let key = (consumer.to_string(), partition.to_string(), sort.to_string());
            let before = inner.docs.remove(&key);
            if let Some(after) = op.apply(before) {
                inner.docs.insert(key, after);
            }
        }
        inner.checkpoints.insert(key, new);
        Ok(())
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .lock()?
            .docs
            .get(&(consumer.to_string(), partition.to_string(), sort.to_string()))
            .cloned())
    }

    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let inner = self.lock()?;
        // The documents are in key order: start at the partition's first
        // candidate instead of walking every document.
        let from = (
            consumer.to_string(),
            partition.to_string(),
            after.unwrap_or(prefix).to_string(),
        );
        Ok(inner
            .docs
            .range(from..)
            .take_while(|((c, p, _), _)| c == consumer && p == partition)
            .filter(|((_, _, s), _)| crate::read_model_adapter::listed(s, prefix, after))
            .take(limit)
            .map(|((_, _, s), v)| (s.clone(), v.clone()))
            .collect())
    }
}

/// [`ProgressLog`] in memory: every record kept, in order.
#[derive(Default)]
pub struct InMemoryProgressLog {
    records: Mutex<Vec<ConsumerProgress>>,
}

impl InMemoryProgressLog {
    /// Every progress record written, oldest first.
    pub fn records(&self) -> Vec<ConsumerProgress> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl ProgressLog for InMemoryProgressLog {
    async fn record(&self, progress: &ConsumerProgress) -> Result<(), StoreError> {
        self.records
            .lock()
            .map_err(|_| StoreError::Failed("progress log poisoned".into()))?
            .push(progress.clone());
        Ok(())
    }

    async fn latest(&self, consumer: &str) -> Result<Option<ConsumerProgress>, StoreError> {
        Ok(self.records().into_iter().rev().find(|p| p.consumer == consumer))
    }
}

/// The read-model contract over the in-memory store (`--features contract`).
#[cfg(all(test, feature = "contract"))]
mod tests {
    use super::InMemoryReadModels;
    use crate::ports::ReadModelStore;
    use std::sync::Arc;

    async fn fresh_memory() -> Arc<dyn ReadModelStore> {
        Arc::new(InMemoryReadModels::default())
    }

    crate::read_model_contract!(fresh_memory);
}
