//! A page of events delivered to a consumer group at once (issue 9): every
//! consumer projects the page's events in order, event by event as
//! [`ConsumerGroup::handle`] would, but against [`PageDocs`], a view of the
//! read models that also holds what the page wrote so far; the page's
//! commits then go to the store together ([`ReadModelStore::commit_all`]).
//! The checkpoints of the (consumer, stream) pairs the page has work for are
//! read in one call first; a consumer with no event of a type it handles on
//! a stream neither reads nor writes that stream's checkpoint.
//!
//! A gap before an event (versions the bus did not route to the group, events
//! of types the consumer does not handle, or events delivered out of order)
//! is filled from the page's own events when it holds them all, and
//! otherwise read from the store once per stream and page, then staged
//! first, as [`Consumer::deliver`](super::Consumer::deliver) does. After a
//! handled event, the checkpoint also passes over the events right after it
//! that the page holds and the consumer does not handle, so a later gap need
//! not read them again (decision 0031). A put of a document the page knows
//! to hold that very body, or a delete of one it knows absent, is dropped.
//! A consumer whose projection [`reads_committed`](super::Projection::reads_committed)
//! is not staged: before each event it handles, the page commits what it
//! staged so far, and the event goes to it alone as one-event delivery.
//! A poison event writes what the page staged so far and is parked; a page
//! commit the store refuses (another writer) falls back to delivering its
//! events one by one, so the page path never decides differently from the
//! one-event path.

use super::{park_poison, ConsumeError, ConsumerGroup, ProjectionError};
use crate::event::EventEnvelope;
use crate::failure::{Classify, FailureKind};
use crate::ports::{check_commit_size, Commit, CommitError, ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

/// What delivering a page did, counted per (consumer, event).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageOutcome {
    pub applied: u64,
    pub duplicates: u64,
    pub parked: u64,
}

impl PageOutcome {
    pub fn merge(&mut self, other: PageOutcome) {
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.parked += other.parked;
    }
}

type DocKey = (String, String, String);

#[derive(Default)]
struct Overlay {
    /// Documents read or written during the page (`None`: absent or deleted).
    docs: HashMap<DocKey, Option<Value>>,
    /// The same, by (consumer, partition), for `list`.
    by_partition: HashMap<(String, String), BTreeMap<String, Option<Value>>>,
    checkpoints: HashMap<(String, String), u64>,
    /// The events of each stream the page holds or read from the store, by version.
    events: HashMap<String, BTreeMap<u64, EventEnvelope>>,
    /// Documents a projection read during the page (`get`).
    read: std::collections::HashSet<DocKey>,
    /// Ranges a projection listed during the page: (consumer, partition, prefix).
    listed: Vec<(String, String, String)>,
    /// How many reads projections made, to tell a read-free projection.
    reads: u64,
    /// Adds staged on documents the page does not know (never read):
    /// applied to the stored document when a projection reads it.
    pending: HashMap<DocKey, ReadOp>,
}

impl Overlay {
    fn was_read(&self, consumer: &str, op: &ReadOp) -> bool {
        let (partition, sort) = op.key();
        self.read
            .contains(&(consumer.to_string(), partition.to_string(), sort.to_string()))
            || self
                .listed
                .iter()
                .any(|(c, p, prefix)| c == consumer && p == partition && sort.starts_with(prefix.as_str()))
    }
}

impl Overlay {
    fn set(&mut self, consumer: &str, partition: String, sort: String, body: Option<Value>) {
        self.pending
            .remove(&(consumer.to_string(), partition.clone(), sort.clone()));
        self.by_partition
            .entry((consumer.to_string(), partition.clone()))
            .or_default()
            .insert(sort.clone(), body.clone());
        self.docs.insert((consumer.to_string(), partition, sort), body);
    }

    /// Records a staged operation: on a known document, its result; an add
    /// on one the page does not know waits, merged, for a read.
    fn stage_op(&mut self, consumer: &str, op: &ReadOp) {
        let (partition, sort) = op.key();
        let key = (consumer.to_string(), partition.to_string(), sort.to_string());
        if op.is_add() && !self.docs.contains_key(&key) {
            let merged = match self.pending.remove(&key) {
                Some(before) => before.then(op.clone()),
                None => op.clone(),
            };
            self.pending.insert(key, merged);
            return;
        }
        let before = self.docs.get(&key).cloned().flatten();
        self.set(consumer, key.1, key.2, op.apply(before));
    }

    /// A document read from the store, with the adds the page staged on it.
    fn with_pending(&self, key: &DocKey, stored: Option<Value>) -> Option<Value> {
        match self.pending.get(key) {
            Some(add) => add.apply(stored),
            None => stored,
        }
    }
}

/// The read models as a page sees them: the store, overlaid with what the
/// page read (cached) and wrote (not yet committed). The page is the only
/// writer of its consumers while it runs, as the bus and the replay
/// guarantee (one delivery at a time per target).
pub struct PageDocs<'a> {
    base: &'a dyn ReadModelStore,
    overlay: Mutex<Overlay>,
}

impl<'a> PageDocs<'a> {
    pub fn new(base: &'a dyn ReadModelStore) -> Self {
        PageDocs {
            base,
            overlay: Mutex::new(Overlay::default()),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Overlay>, StoreError> {
        self.overlay
            .lock()
            .map_err(|_| StoreError::Failed("page: poisoned lock".into()))
    }

    /// Reads the checkpoints of every (consumer, stream) pair not yet known, in one call.
    pub async fn prefetch(&self, keys: Vec<(String, String)>) -> Result<(), StoreError> {
        let missing: Vec<(String, String)> = {
            let overlay = self.lock()?;
            let mut seen = std::collections::HashSet::new();
            keys.into_iter()
                .filter(|k| !overlay.checkpoints.contains_key(k) && seen.insert(k.clone()))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let versions = self.base.checkpoints(&missing).await?;
        let mut overlay = self.lock()?;
        for (key, version) in missing.into_iter().zip(versions) {
            overlay.checkpoints.insert(key, version);
        }
        Ok(())
    }

    /// Remembers the page's own events, so gaps they cover need no read.
    fn hold(&self, events: &[EventEnvelope]) -> Result<(), StoreError> {
        let mut overlay = self.lock()?;
        for e in events {
            overlay
                .events
                .entry(e.stream_id.clone())
                .or_default()
                .insert(e.version, e.clone());
        }
        Ok(())
    }

    /// The events of `stream` after `after` up to `event`, from what the page
    /// holds when it holds every version between, otherwise read from
    /// `store` (once: the read is remembered for the rest of the page).
    async fn gap(
        &self,
        store: &dyn crate::ports::EventStore,
        after: u64,
        event: &EventEnvelope,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let stream = event.stream_id.as_str();
        let held = |overlay: &Overlay| -> Option<Vec<EventEnvelope>> {
            let known = overlay.events.get(stream)?;
            let run: Vec<EventEnvelope> = known.range(after + 1..=event.version).map(|(_, e)| e.clone()).collect();
            (run.len() as u64 == event.version - after).then_some(run)
        };
        if let Some(run) = held(&*self.lock()?) {
            return Ok(run);
        }
        let read = store
            .read_stream(stream, after, (event.version - after) as usize)
            .await?;
        let mut overlay = self.lock()?;
        let known = overlay.events.entry(stream.to_string()).or_default();
        for e in read {
            if e.version <= event.version {
                known.insert(e.version, e);
            }
        }
        Ok(known.range(after + 1..=event.version).map(|(_, e)| e.clone()).collect())
    }

    /// The newest version of the run of held events of `stream` right after
    /// `version` that `handles` refuses (`version` itself if there is none).
    fn unhandled_run_after(
        &self,
        stream: &str,
        version: u64,
        handles: impl Fn(&str) -> bool,
    ) -> Result<u64, StoreError> {
        let overlay = self.lock()?;
        let mut end = version;
        if let Some(known) = overlay.events.get(stream) {
            for (v, e) in known.range(version + 1..) {
                if *v != end + 1 || handles(&e.event_type) {
                    break;
                }
                end = *v;
            }
        }
        Ok(end)
    }

    /// Drops the operations that change nothing the page knows of: a put of
    /// the body the document already has, a delete of a document known absent.
    fn without_no_ops(&self, consumer: &str, ops: Vec<ReadOp>) -> Result<Vec<ReadOp>, StoreError> {
        let overlay = self.lock()?;
        let known = |partition: &str, sort: &str| {
            overlay
                .docs
                .get(&(consumer.to_string(), partition.to_string(), sort.to_string()))
        };
        Ok(ops
            .into_iter()
            .filter(|op| match op {
                ReadOp::Put { partition, sort, body } => known(partition, sort) != Some(&Some(body.clone())),
                ReadOp::Delete { partition, sort } => known(partition, sort) != Some(&None),
                ReadOp::Add { .. } => true,
            })
            .collect())
    }

    /// How many reads projections made through the page so far.
    fn reads(&self) -> Result<u64, StoreError> {
        Ok(self.lock()?.reads)
    }

    /// Settles which staged operations may be written apart from the
    /// atomic write (decision 0031): an idempotent operation (its
    /// projection read nothing to make it) stays so only if no projection
    /// read its document during the page and no other commit of `commits`
    /// writes it atomically; the others join their commit's `ops`.
    fn settle(&self, commits: &mut [Commit]) -> Result<(), StoreError> {
        let overlay = self.lock()?;
        let key = |consumer: &str, op: &ReadOp| {
            let (partition, sort) = op.key();
            (consumer.to_string(), partition.to_string(), sort.to_string())
        };
        let atomic: std::collections::HashSet<DocKey> = commits
            .iter()
            .flat_map(|c| c.ops.iter().map(|op| key(&c.consumer, op)))
            .collect();
        for c in commits.iter_mut() {
            let (loose, bound): (Vec<ReadOp>, Vec<ReadOp>) =
                std::mem::take(&mut c.idempotent).into_iter().partition(|op| {
                    !op.is_add() && !atomic.contains(&key(&c.consumer, op)) && !overlay.was_read(&c.consumer, op)
                });
            c.idempotent = loose;
            c.ops.splice(0..0, bound);
        }
        Ok(())
    }

    /// Moves a staged checkpoint (over a run of events the consumer does not handle).
    fn stage_checkpoint(&self, consumer: &str, stream: &str, version: u64) -> Result<(), StoreError> {
        self.lock()?
            .checkpoints
            .insert((consumer.to_string(), stream.to_string()), version);
        Ok(())
    }

    /// Records a staged commit: its documents and checkpoint as the rest of the page sees them.
    fn stage(&self, consumer: &str, stream: &str, version: u64, ops: &[ReadOp]) -> Result<(), StoreError> {
        let mut overlay = self.lock()?;
        for op in ops {
            overlay.stage_op(consumer, op);
        }
        overlay
            .checkpoints
            .insert((consumer.to_string(), stream.to_string()), version);
        Ok(())
    }

    /// Forgets every document and checkpoint (after writes that bypassed
    /// the page); the events stay known.
    fn forget(&self) -> Result<(), StoreError> {
        let mut overlay = self.lock()?;
        let events = std::mem::take(&mut overlay.events);
        let read = std::mem::take(&mut overlay.read);
        let listed = std::mem::take(&mut overlay.listed);
        *overlay = Overlay {
            events,
            read,
            listed,
            ..Overlay::default()
        };
        Ok(())
    }
}

#[async_trait]
impl ReadModelStore for PageDocs<'_> {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        let key = (consumer.to_string(), stream_id.to_string());
        if let Some(v) = self.lock()?.checkpoints.get(&key) {
            return Ok(*v);
        }
        let v = self.base.checkpoint(consumer, stream_id).await?;
        self.lock()?.checkpoints.insert(key, v);
        Ok(v)
    }

    async fn commit(&self, _: &str, _: &str, _: u64, _: u64, _: Vec<ReadOp>) -> Result<(), CommitError> {
        // Projections only read; the page commits.
        Err(CommitError::Store(StoreError::Failed(
            "a page's view of the read models is read-only".into(),
        )))
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<Value>, StoreError> {
        let key = (consumer.to_string(), partition.to_string(), sort.to_string());
        {
            let mut overlay = self.lock()?;
            overlay.reads += 1;
            overlay.read.insert(key.clone());
            if let Some(found) = overlay.docs.get(&key) {
                return Ok(found.clone());
            }
        }
        let found = self.base.get(consumer, partition, sort).await?;
        let mut overlay = self.lock()?;
        let found = overlay.with_pending(&key, found);
        overlay.set(consumer, partition.to_string(), sort.to_string(), found.clone());
        Ok(found)
    }

    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        let in_range = |sort: &str| sort.starts_with(prefix) && after.is_none_or(|a| sort > a);
        {
            let mut overlay = self.lock()?;
            overlay.reads += 1;
            overlay
                .listed
                .push((consumer.to_string(), partition.to_string(), prefix.to_string()));
        }
        let (overlaid, pending): (Vec<(String, Option<Value>)>, Vec<(String, ReadOp)>) = {
            let overlay = self.lock()?;
            let overlaid = overlay
                .by_partition
                .get(&(consumer.to_string(), partition.to_string()))
                .map(|docs| {
                    docs.iter()
                        .filter(|(sort, _)| in_range(sort))
                        .map(|(s, v)| (s.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let pending = overlay
                .pending
                .iter()
                .filter(|((c, p, s), _)| c == consumer && p == partition && in_range(s))
                .map(|((_, _, s), op)| (s.clone(), op.clone()))
                .collect();
            (overlaid, pending)
        };
        if overlaid.is_empty() && pending.is_empty() {
            return self.base.list(consumer, partition, prefix, after, limit).await;
        }
        let stored = self
            .base
            .list(consumer, partition, prefix, after, widened(limit, &overlaid))
            .await?;
        let mut merged = overlay(stored, overlaid);
        // An add on a document the store did not return creates it (had it
        // existed, it would sort before what the store returned last, or
        // the store returned fewer than asked).
        for (sort, add) in pending {
            let before = merged.remove(&sort).flatten();
            merged.insert(sort, add.apply(before));
        }
        Ok(live(merged, limit))
    }
}

/// How many documents to ask the store for under an overlay: as many more
/// than `limit` as the overlay knows deleted, so that at least `limit` live
/// documents sort before anything the store did not return.
pub(super) fn widened(limit: usize, overlaid: &[(String, Option<Value>)]) -> usize {
    limit.saturating_add(overlaid.iter().filter(|(_, v)| v.is_none()).count())
}

/// The store's listing with the overlay's documents over it (`None`: deleted).
pub(super) fn overlay(
    stored: Vec<(String, Value)>,
    overlaid: Vec<(String, Option<Value>)>,
) -> BTreeMap<String, Option<Value>> {
    let mut merged: BTreeMap<String, Option<Value>> = stored.into_iter().map(|(s, v)| (s, Some(v))).collect();
    merged.extend(overlaid);
    merged
}

/// The live documents of an overlaid listing, in sort order, at most `limit`.
pub(super) fn live(merged: BTreeMap<String, Option<Value>>, limit: usize) -> Vec<(String, Value)> {
    merged
        .into_iter()
        .filter_map(|(s, v)| v.map(|v| (s, v)))
        .take(limit)
        .collect()
}

/// What staging one event for one consumer found.
enum Staged {
    Duplicate,
    /// Staged in the page: the event, after the gap before it if any.
    Ready(Vec<Commit>),
    /// The consumer cannot use the event (or one of the gap before it):
    /// what came before it is staged.
    Poison {
        staged: Vec<Commit>,
        source: ProjectionError,
    },
}

impl ConsumerGroup {
    /// Delivers `events` (in store order) to every consumer of the group,
    /// with the same effect as [`ConsumerGroup::handle`] on each in turn,
    /// but committing the page's read-model writes together. A retryable
    /// failure is returned (the caller retries the page or its events; the
    /// checkpoints skip what was written).
    pub async fn handle_page(&self, events: &[EventEnvelope], now: DateTime<Utc>) -> Result<PageOutcome, ConsumeError> {
        let docs = self.docs.as_ref();
        let page = PageDocs::new(docs);
        let mut total = PageOutcome::default();
        let mut staged_outcome = PageOutcome::default();
        let mut staged: Vec<Commit> = Vec::new();
        // The first event some of whose commits are staged.
        let mut staged_from = 0;
        let retryable = ConsumeError::retry;
        page.hold(events).map_err(|e| retryable(self.name, e))?;
        // Only the pairs with an event the consumer handles have work.
        page.prefetch(
            events
                .iter()
                .flat_map(|e| {
                    self.consumers
                        .iter()
                        .filter(|c| c.handles(&e.event_type))
                        .map(|c| (c.name().to_string(), e.stream_id.clone()))
                })
                .collect(),
        )
        .await
        .map_err(|e| retryable(self.name, e))?;
        for (i, event) in events.iter().enumerate() {
            if staged.is_empty() {
                staged_from = i;
            }
            for consumer in &self.consumers {
                if !consumer.handles(&event.event_type) {
                    // Nothing to apply, nothing to write: a later handled
                    // event's gap passes over it.
                    staged_outcome.duplicates += 1;
                    continue;
                }
                if consumer.projection.reads_committed() {
                    // Commit what the page staged so far (the documents it
                    // reads among them), then deliver it this event alone.
                    let delivered_one_by_one = self
                        .flush_into(
                            &page,
                            std::mem::take(&mut staged),
                            std::mem::take(&mut staged_outcome),
                            &events[staged_from..=i],
                            &mut total,
                            now,
                        )
                        .await?;
                    staged_from = i;
                    if delivered_one_by_one {
                        // This event went to every consumer already.
                        break;
                    }
                    match consumer.deliver(event).await {
                        Ok(super::Delivery::Applied { .. }) => total.applied += 1,
                        Ok(super::Delivery::Duplicate) => total.duplicates += 1,
                        Err(e) if e.kind() == FailureKind::Poison => {
                            park_poison(self.dead_letters.as_ref(), e.consumer(), event, e.reason(), now).await?;
                            total.parked += 1;
                        }
                        Err(e) => return Err(e),
                    }
                    continue;
                }
                match stage(consumer, event, &page).await? {
                    Staged::Duplicate => staged_outcome.duplicates += 1,
                    Staged::Ready(commits) => {
                        staged.extend(commits);
                        staged_outcome.applied += 1;
                    }
                    Staged::Poison { staged: before, source } => {
                        // Write what is staged (as one-event delivery would
                        // have), then park the event.
                        staged.extend(before);
                        let delivered_one_by_one = self
                            .flush_into(
                                &page,
                                std::mem::take(&mut staged),
                                std::mem::take(&mut staged_outcome),
                                &events[staged_from..=i],
                                &mut total,
                                now,
                            )
                            .await?;
                        staged_from = i;
                        if delivered_one_by_one {
                            // This event went to every consumer already.
                            break;
                        }
                        park_poison(self.dead_letters.as_ref(), consumer.name(), event, source, now).await?;
                        total.parked += 1;
                    }
                }
            }
        }
        self.flush_into(&page, staged, staged_outcome, &events[staged_from..], &mut total, now)
            .await?;
        Ok(total)
    }

    /// [`flush`](Self::flush)es `staged` and adds to `total` what that did
    /// (`staged_outcome` when the commits were written as staged); true when
    /// it fell back to delivering `events` one by one, so the last of them
    /// already went to every consumer.
    async fn flush_into(
        &self,
        page: &PageDocs<'_>,
        staged: Vec<Commit>,
        staged_outcome: PageOutcome,
        events: &[EventEnvelope],
        total: &mut PageOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool, ConsumeError> {
        let flushed = self.flush(page, staged, events, now).await?;
        let delivered_one_by_one = flushed.is_some();
        total.merge(flushed.unwrap_or(staged_outcome));
        Ok(delivered_one_by_one)
    }

    /// Commits `staged`. On a conflict (another writer) or a batch the store
    /// refuses, delivers `events` one by one instead and returns what that
    /// did (`None`: the staged commits were written as staged).
    async fn flush(
        &self,
        page: &PageDocs<'_>,
        mut staged: Vec<Commit>,
        events: &[EventEnvelope],
        now: DateTime<Utc>,
    ) -> Result<Option<PageOutcome>, ConsumeError> {
        if staged.is_empty() {
            return Ok(None);
        }
        page.settle(&mut staged)
            .map_err(|e| ConsumeError::retry(self.name, e))?;
        match self.docs.commit_all(staged).await {
            Ok(()) => {
                crate::crash::point(crate::crash::PAGE_AFTER_COMMIT);
                Ok(None)
            }
            Err(CommitError::Store(e)) => Err(ConsumeError::retry(self.name, e)),
            Err(e) => {
                tracing::debug!(group = self.name, error = %e, "page commit refused; delivering one event at a time");
                page.forget().map_err(|e| ConsumeError::retry(self.name, e))?;
                let mut outcome = PageOutcome::default();
                for event in events {
                    let one = self.handle(event, now).await?;
                    outcome.applied += one.applied.len() as u64;
                    outcome.duplicates += one.duplicates.len() as u64;
                    outcome.parked += one.parked.len() as u64;
                }
                Ok(Some(outcome))
            }
        }
    }
}

/// Projects `event` (of a type `consumer` handles), and the handled events
/// of the gap before it, against the page, and stages the result in the
/// page: one commit per handled event, the last one's checkpoint passing
/// over the unhandled events the page holds right after it.
async fn stage(consumer: &super::Consumer, event: &EventEnvelope, page: &PageDocs<'_>) -> Result<Staged, ConsumeError> {
    let name = consumer.name();
    let stream = event.stream_id.as_str();
    let mut checkpoint = page.checkpoint(name, stream).await.map_err(|e| consumer.retryable(e))?;
    if event.version <= checkpoint {
        return Ok(Staged::Duplicate);
    }
    let pending = page
        .gap(consumer.events.as_ref(), checkpoint, event)
        .await
        .map_err(|e| consumer.retryable(e))?;
    if pending.last().map(|e| e.version) != Some(event.version) {
        return Err(consumer.retryable_reason(format!(
            "gap on {stream}: needed versions {}..={}, the store returned {}",
            checkpoint + 1,
            event.version,
            pending.len()
        )));
    }
    let mut commits = Vec::new();
    for pending in pending.iter().filter(|e| consumer.handles(&e.event_type)) {
        let reads_before = page.reads().map_err(|e| consumer.retryable(e))?;
        let ops = match consumer.projection.project(pending, page).await {
            Ok(ops) => ops,
            Err(source) if source.kind() == FailureKind::Poison => {
                return Ok(Staged::Poison {
                    staged: commits,
                    source,
                })
            }
            Err(source) => return Err(consumer.projection_failed(source)),
        };
        if let Err(e) = check_commit_size(&ops) {
            let source = ProjectionError::Refused(e);
            return Ok(Staged::Poison {
                staged: commits,
                source,
            });
        }
        // A projection that read nothing made its operations from the event
        // alone: they are idempotent (settled at the flush).
        let read_free = page.reads().map_err(|e| consumer.retryable(e))? == reads_before;
        if ops.is_empty() {
            // An event that changes nothing records nothing, not even the
            // checkpoint: a later handled event of the stream projects it
            // again in its gap, which is the same as the bus delivering it
            // then (order per stream holds; its first projection had no
            // effect anyone could see).
            continue;
        }
        let ops = page.without_no_ops(name, ops).map_err(|e| consumer.retryable(e))?;
        page.stage(name, stream, pending.version, &ops)
            .map_err(|e| consumer.retryable(e))?;
        // Adds always move with the checkpoint: a redelivery must not add again.
        let (ops, idempotent) = if read_free {
            ops.into_iter().partition(ReadOp::is_add)
        } else {
            (ops, Vec::new())
        };
        commits.push(Commit {
            consumer: name.to_string(),
            stream_id: stream.to_string(),
            expected: checkpoint,
            new: pending.version,
            ops,
            idempotent,
        });
        checkpoint = pending.version;
    }
    let through = page
        .unhandled_run_after(stream, checkpoint, |t| consumer.handles(t))
        .map_err(|e| consumer.retryable(e))?;
    // Only a commit of this event can carry the checkpoint further.
    if let Some(last) = commits
        .last_mut()
        .filter(|last| last.new == checkpoint && through > checkpoint)
    {
        last.new = through;
        page.stage_checkpoint(name, stream, through)
            .map_err(|e| consumer.retryable(e))?;
    }
    Ok(Staged::Ready(commits))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryReadModels;
    use crate::testing::Rng;
    use serde_json::json;

    #[tokio::test]
    async fn the_page_view_lists_what_the_store_would_hold_after_the_page() {
        let mut rng = Rng(5);
        for round in 0..200 {
            let base = InMemoryReadModels::default();
            let after_ops = InMemoryReadModels::default();
            let initial: Vec<ReadOp> = (0..rng.below(12))
                .map(|i| ReadOp::Put {
                    partition: "p".into(),
                    sort: format!("k{:02}", rng.below(20)),
                    body: json!(i),
                })
                .collect();
            for store in [&base, &after_ops] {
                store.commit("c", "s", 0, 1, initial.clone()).await.expect("initial");
            }
            let page = PageDocs::new(&base);
            let ops: Vec<ReadOp> = (0..rng.below(10))
                .map(|i| {
                    let sort = format!("k{:02}", rng.below(20));
                    let kind = rng.below(4);
                    if kind == 0 {
                        ReadOp::Delete {
                            partition: "p".into(),
                            sort,
                        }
                    } else if kind == 1 {
                        // Adds on documents the page knows and does not know.
                        ReadOp::Add {
                            partition: "p".into(),
                            sort,
                            counts: BTreeMap::from([("n".to_string(), 1 + i as i64)]),
                            set: serde_json::Map::from_iter([("e".to_string(), json!(i))]),
                        }
                    } else {
                        ReadOp::Put {
                            partition: "p".into(),
                            sort,
                            body: json!(100 + i),
                        }
                    }
                })
                .collect();
            // Some reads first, so cached absent and present documents mix in.
            for _ in 0..3 {
                page.get("c", "p", &format!("k{:02}", rng.below(20)))
                    .await
                    .expect("get");
            }
            page.stage("c", "s", 2, &ops).expect("stage");
            after_ops.commit("c", "s", 1, 2, ops).await.expect("commit");
            for _ in 0..5 {
                let prefix = ["", "k", "k0", "k1", "x"][rng.below(5) as usize];
                let after = (rng.below(2) == 0).then(|| format!("k{:02}", rng.below(20)));
                let limit = 1 + rng.below(8) as usize;
                assert_eq!(
                    page.list("c", "p", prefix, after.as_deref(), limit)
                        .await
                        .expect("page list"),
                    after_ops
                        .list("c", "p", prefix, after.as_deref(), limit)
                        .await
                        .expect("list"),
                    "round {round}: prefix {prefix:?}, after {after:?}, limit {limit}"
                );
            }
            for _ in 0..3 {
                let sort = format!("k{:02}", rng.below(20));
                assert_eq!(
                    page.get("c", "p", &sort).await.expect("page get"),
                    after_ops.get("c", "p", &sort).await.expect("get"),
                    "round {round}: {sort}"
                );
            }
        }
    }
}
