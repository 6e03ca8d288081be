//! Rebuilding projections from the whole store (issue 22, decision 0094).
//!
//! A rebuild clears its consumers, then hands them every stored event in
//! store order. Two things make that faster than live delivery, and both
//! hold only for a rebuild:
//! - Nothing is missing before an event: every earlier event of its stream
//!   was handed already, so [`ConsumerGroup::replay`] never reads a gap
//!   from the store; it projects each event a consumer handles and commits
//!   it with the checkpoint, as one-event delivery would.
//! - The consumers start empty and nobody else writes them while they are
//!   rebuilt: their documents can live in memory, in [`ReplayDocs`], and go
//!   to the store in large writes ([`ReplayDocs::flush`]), each document
//!   once per flush however many events changed it. A document or
//!   checkpoint the replay never wrote is absent without asking the store.
//!
//! Consumers that decide ([`Projection::decides`](super::Projection::decides))
//! are not rebuilt (decision 0093).

use super::page::{live, overlay, widened};
use super::{park_poison, ConsumeError, ConsumerGroup, PageOutcome};
use crate::event::EventEnvelope;
use crate::failure::{Classify, FailureKind};
use crate::ports::{check_commit_size, Commit, CommitError, ReadModelStore, ReadOp, StoreError, MAX_OPS_PER_COMMIT};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

type DocKey = (String, String, String);
type CheckpointKey = (String, String);

#[derive(Default)]
struct Cache {
    /// Documents read or written since the last flush (`None`: absent).
    docs: HashMap<DocKey, Option<Value>>,
    /// Their sort keys by (consumer, partition), for `list`.
    by_partition: HashMap<(String, String), BTreeSet<String>>,
    /// Documents written since the last flush.
    dirty: BTreeSet<DocKey>,
    /// Checkpoints known since the last flush, and what the store holds for them.
    checkpoints: HashMap<CheckpointKey, u64>,
    stored: HashMap<CheckpointKey, u64>,
    /// Per consumer, a stream whose checkpoint it moved (to carry documents in a flush).
    last_stream: HashMap<String, String>,
    /// What earlier flushes wrote: anything else the store does not hold.
    flushed_docs: Written,
    flushed_partitions: Written,
    flushed_checkpoints: Written,
}

/// Keys earlier flushes wrote, kept as 64-bit fingerprints rather than the
/// keys themselves: a key whose fingerprint is absent was never written, so
/// the store is not asked; one whose fingerprint is present (written, or a
/// collision, about one in 2^64 per pair) is asked, which is only slower.
/// The keys were most of a rebuild's memory: every (consumer, stream)
/// checkpoint and document of the whole store, in every lane (issue 22).
#[derive(Default)]
struct Written(HashSet<u64>);

impl Written {
    fn fingerprint(parts: &[&str]) -> u64 {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same key, the same fingerprint.
        let mut hasher = std::hash::DefaultHasher::new();
        parts.hash(&mut hasher);
        hasher.finish()
    }

    fn insert(&mut self, parts: &[&str]) {
        self.0.insert(Self::fingerprint(parts));
    }

    fn contains(&self, parts: &[&str]) -> bool {
        self.0.contains(&Self::fingerprint(parts))
    }
}

impl Cache {
    fn set(&mut self, key: DocKey, body: Option<Value>, dirty: bool) {
        self.by_partition
            .entry((key.0.clone(), key.1.clone()))
            .or_default()
            .insert(key.2.clone());
        if dirty {
            self.dirty.insert(key.clone());
        }
        self.docs.insert(key, body);
    }
}

/// The read models of consumers being rebuilt, held in memory and written
/// to `base` in large commits ([`ReplayDocs::flush`]). The consumers it
/// owns must start cleared in `base`, and nothing else may write them
/// until the replay ends. Reads of any other consumer go to `base`.
pub struct ReplayDocs {
    base: Arc<dyn ReadModelStore>,
    owned: HashSet<String>,
    cache: Mutex<Cache>,
}

/// What a flush wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    pub documents: u64,
    pub checkpoints: u64,
}

impl ReplayDocs {
    /// The documents of `consumers` (cleared in `base`), rebuilt in memory.
    pub fn new(base: Arc<dyn ReadModelStore>, consumers: &[&str]) -> Self {
        ReplayDocs {
            base,
            owned: consumers.iter().map(|c| c.to_string()).collect(),
            cache: Mutex::new(Cache::default()),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Cache>, StoreError> {
        self.cache
            .lock()
            .map_err(|_| StoreError::Failed("replay: poisoned lock".into()))
    }

    fn owns(&self, consumer: &str) -> bool {
        self.owned.contains(consumer)
    }

    /// Documents written since the last flush.
    pub fn unflushed(&self) -> usize {
        self.lock().map(|c| c.dirty.len()).unwrap_or(0)
    }

    /// Writes every document and checkpoint changed since the last flush to
    /// the store in one [`ReadModelStore::commit_all`] (one transaction in
    /// SQLite), each document once as it now stands, then forgets them (the
    /// store has them): memory holds one flush's worth at most. A flush
    /// that fails leaves the cache empty: the rebuild must start again.
    pub async fn flush(&self) -> Result<Flushed, CommitError> {
        let (commits, flushed) = {
            let mut cache = self.lock()?;
            let cache = &mut *cache;
            // Moved out, not copied: a flush that fails fails the rebuild.
            let mut docs = std::mem::take(&mut cache.docs);
            let mut ops_of: BTreeMap<&str, Vec<ReadOp>> = BTreeMap::new();
            for key in &cache.dirty {
                let (consumer, partition, sort) = key;
                let op = match docs.remove(key).flatten() {
                    Some(body) => ReadOp::Put {
                        partition: partition.clone(),
                        sort: sort.clone(),
                        body,
                    },
                    None => ReadOp::Delete {
                        partition: partition.clone(),
                        sort: sort.clone(),
                    },
                };
                ops_of.entry(consumer.as_str()).or_default().push(op);
            }
            let mut commits = Vec::new();
            let mut moved: Vec<&CheckpointKey> = cache
                .checkpoints
                .iter()
                .filter(|(key, version)| cache.stored.get(*key) != Some(version))
                .map(|(key, _)| key)
                .collect();
            moved.sort();
            for key in &moved {
                commits.push(Commit {
                    consumer: key.0.clone(),
                    stream_id: key.1.clone(),
                    expected: cache.stored.get(*key).copied().unwrap_or(0),
                    new: cache.checkpoints[*key],
                    ..Commit::default()
                });
            }
            // Documents ride on a checkpoint of their consumer that the
            // flush already moved, chunked as one commit may hold.
            for (consumer, ops) in ops_of {
                let stream = cache.last_stream.get(consumer).cloned().unwrap_or_default();
                let key = (consumer.to_string(), stream);
                let version = cache.checkpoints.get(&key).copied().unwrap_or(0);
                for chunk in ops.chunks(MAX_OPS_PER_COMMIT) {
                    commits.push(Commit {
                        consumer: key.0.clone(),
                        stream_id: key.1.clone(),
                        expected: version,
                        new: version,
                        ops: chunk.to_vec(),
                        idempotent: Vec::new(),
                    });
                }
            }
            let flushed = Flushed {
                documents: cache.dirty.len() as u64,
                checkpoints: moved.len() as u64,
            };
            (commits, flushed)
        };
        if !commits.is_empty() {
            self.base.commit_all(commits).await?;
        }
        let mut cache = self.lock()?;
        let cache = &mut *cache;
        for (consumer, partition, sort) in std::mem::take(&mut cache.dirty) {
            cache.flushed_partitions.insert(&[&consumer, &partition]);
            cache.flushed_docs.insert(&[&consumer, &partition, &sort]);
        }
        for (consumer, stream) in cache.checkpoints.keys() {
            cache.flushed_checkpoints.insert(&[consumer, stream]);
        }
        cache.docs.clear();
        cache.by_partition.clear();
        cache.checkpoints.clear();
        cache.stored.clear();
        Ok(flushed)
    }

    /// The cached document, else the store's if an earlier flush wrote it, else absent.
    async fn doc(&self, key: &DocKey) -> Result<Option<Value>, StoreError> {
        let in_store = {
            let cache = self.lock()?;
            if let Some(found) = cache.docs.get(key) {
                return Ok(found.clone());
            }
            cache.flushed_docs.contains(&[&key.0, &key.1, &key.2])
        };
        let found = if in_store {
            self.base.get(&key.0, &key.1, &key.2).await?
        } else {
            None
        };
        self.lock()?.set(key.clone(), found.clone(), false);
        Ok(found)
    }
}

#[async_trait]
impl ReadModelStore for ReplayDocs {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        if !self.owns(consumer) {
            return self.base.checkpoint(consumer, stream_id).await;
        }
        let key = (consumer.to_string(), stream_id.to_string());
        let in_store = {
            let cache = self.lock()?;
            if let Some(v) = cache.checkpoints.get(&key) {
                return Ok(*v);
            }
            cache.flushed_checkpoints.contains(&[consumer, stream_id])
        };
        let v = if in_store {
            self.base.checkpoint(consumer, stream_id).await?
        } else {
            0
        };
        let mut cache = self.lock()?;
        cache.stored.insert(key.clone(), v);
        cache.checkpoints.insert(key, v);
        Ok(v)
    }

    async fn commit(
        &self,
        consumer: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        ops: Vec<ReadOp>,
    ) -> Result<(), CommitError> {
        if !self.owns(consumer) {
            return Err(CommitError::Store(StoreError::Failed(format!(
                "replay: {consumer} is not being rebuilt here"
            ))));
        }
        check_commit_size(&ops)?;
        if self.checkpoint(consumer, stream_id).await? != expected {
            return Err(CommitError::Conflict {
                consumer: consumer.to_string(),
                stream_id: stream_id.to_string(),
                expected,
            });
        }
        for op in ops {
            let (partition, sort) = op.key();
            let key = (consumer.to_string(), partition.to_string(), sort.to_string());
            // Only an add builds on what is there.
            let before = if op.is_add() { self.doc(&key).await? } else { None };
            let after = op.apply(before);
            self.lock()?.set(key, after, true);
        }
        let mut cache = self.lock()?;
        cache
            .checkpoints
            .insert((consumer.to_string(), stream_id.to_string()), new);
        cache.last_stream.insert(consumer.to_string(), stream_id.to_string());
        Ok(())
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<Value>, StoreError> {
        if !self.owns(consumer) {
            return self.base.get(consumer, partition, sort).await;
        }
        self.doc(&(consumer.to_string(), partition.to_string(), sort.to_string()))
            .await
    }

    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        if !self.owns(consumer) {
            return self.base.list(consumer, partition, prefix, after, limit).await;
        }
        let in_range = |sort: &str| sort.starts_with(prefix) && after.is_none_or(|a| sort > a);
        let part = (consumer.to_string(), partition.to_string());
        let (overlaid, in_store): (Vec<(String, Option<Value>)>, bool) = {
            let cache = self.lock()?;
            let overlaid = cache
                .by_partition
                .get(&part)
                .map(|sorts| {
                    sorts
                        .iter()
                        .filter(|s| in_range(s))
                        .filter_map(|s| {
                            let key = (part.0.clone(), part.1.clone(), s.clone());
                            cache.docs.get(&key).map(|v| (s.clone(), v.clone()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            (overlaid, cache.flushed_partitions.contains(&[&part.0, &part.1]))
        };
        let stored = if in_store {
            self.base
                .list(consumer, partition, prefix, after, widened(limit, &overlaid))
                .await?
        } else {
            Vec::new()
        };
        Ok(live(overlay(stored, overlaid), limit))
    }
}

impl ConsumerGroup {
    /// This group's consumers named in `names` (in the group's order), over
    /// `docs`: a share of a rebuild ([`ReplayDocs`]).
    pub fn part_over(&self, names: &[&str], docs: Arc<dyn ReadModelStore>) -> ConsumerGroup {
        ConsumerGroup {
            name: self.name,
            consumers: self
                .consumers
                .iter()
                .filter(|c| names.contains(&c.name()))
                .map(|c| super::Consumer {
                    docs: docs.clone(),
                    ..c.clone()
                })
                .collect(),
            docs,
            dead_letters: self.dead_letters.clone(),
        }
    }

    /// Hands `events` to every consumer of the group that keeps a read
    /// model, in a rebuild: the events are the store's, in store order,
    /// from its start (each call the next ones), and the consumers were
    /// cleared first, so the events before each one on its stream were
    /// handed already and no gap is read. Each event a consumer handles is
    /// projected and committed with its checkpoint (an event at or below the
    /// checkpoint is a duplicate). An event a consumer cannot use is parked,
    /// and so is every later one of that stream for that consumer, as live
    /// delivery would (the stream is stuck behind it until redriven); a
    /// retryable failure is returned.
    pub async fn replay(
        &self,
        events: &[EventEnvelope],
        stuck: &mut HashSet<(&'static str, String)>,
        now: DateTime<Utc>,
    ) -> Result<PageOutcome, ConsumeError> {
        let mut outcome = PageOutcome::default();
        for event in events {
            for consumer in self.consumers.iter().filter(|c| !c.decides()) {
                if !consumer.handles(&event.event_type) {
                    continue;
                }
                let name = consumer.name();
                let stream = event.stream_id.as_str();
                if stuck.contains(&(name, event.stream_id.clone())) {
                    let reason = format!("{stream}: an earlier event of the stream was parked for {name}");
                    park_poison(self.dead_letters.as_ref(), name, event, reason, now).await?;
                    outcome.parked += 1;
                    continue;
                }
                let docs = consumer.docs.as_ref();
                let checkpoint = docs.checkpoint(name, stream).await.map_err(|e| consumer.retryable(e))?;
                if event.version <= checkpoint {
                    outcome.duplicates += 1;
                    continue;
                }
                let refused = match consumer.projection.project(event, docs).await {
                    Ok(ops) => match docs.commit(name, stream, checkpoint, event.version, ops).await {
                        Ok(()) => None,
                        Err(e) => match consumer.commit_failed(e) {
                            ConsumeError::Poison { source, .. } => Some(source.to_string()),
                            other => return Err(other),
                        },
                    },
                    Err(source) if source.kind() == FailureKind::Poison => Some(source.to_string()),
                    Err(source) => return Err(consumer.projection_failed(source)),
                };
                match refused {
                    None => outcome.applied += 1,
                    Some(reason) => {
                        park_poison(self.dead_letters.as_ref(), name, event, reason, now).await?;
                        stuck.insert((name, event.stream_id.clone()));
                        outcome.parked += 1;
                    }
                }
            }
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests;
