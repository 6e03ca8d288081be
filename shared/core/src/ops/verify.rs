//! The full replay-and-diff check (decision 0035): every event of the store
//! folded through every projection of the consumer groups into memory, and
//! every folded document compared with the stored one through the
//! [`ReadModelStore`] port. No checkpoint is read: whether a consumer is
//! "behind" on a stream says nothing since decision 0031 (an event that
//! changes nothing records nothing), so a document is either as the events
//! make it, or missing, different, or extra.
//!
//! Cross-stream order. On AWS the consumers apply events in queue order, not
//! in recorded order; the fold applies them in recorded order. Every
//! projection's documents are meant not to depend on the order of events of
//! different streams (each document is written by the events of one
//! stream, or holds the same body whoever writes it: `crate::insights`
//! states the rule); the one consumer that reads another consumer's
//! documents, the segment evaluator, writes no documents (see
//! [`NOT_FOLDED`]). The check does not take this on trust: it folds twice,
//! in recorded order and stream by stream in reverse, and a document the two
//! folds disagree on is reported as order-dependent and not compared (the
//! check fails, since nothing can be said about it).
//!
//! The stored documents come from a [`StoredDocuments`]: [`verify`] lists,
//! through the port, each partition the fold wrote or deleted in
//! ([`ListedDocuments`]), so a stored document in a partition no folded
//! event ever touched is not seen (the port lists a partition, not a
//! consumer); a source that scans the whole table ([`verify_with`]) returns
//! those too. Documents made by events that retention has since deleted
//! (decision 0021) show as extra.

use super::{OpsError, REPLAY_PAGE};
use crate::consumer::{Consumer, ConsumerGroup};
use crate::event::EventEnvelope;
use crate::memory::{DocKey, InMemoryReadModels};
use crate::ports::{
    AppendError, AppendRequest, Appended, CommandReceipt, CommitError, DeadLetter, DeadLetterQueue, EventPage,
    EventStore, LoadedStream, ReadModelStore, ReadOp, Snapshot, StoreError,
};
use async_trait::async_trait;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Builds the consumer groups the functions run (projector, consent) over
/// the given events, documents and dead-letter queue: the check calls it
/// with its in-memory copies.
pub type GroupsOver =
    dyn Fn(Arc<dyn EventStore>, Arc<dyn ReadModelStore>, Arc<dyn DeadLetterQueue>) -> Vec<ConsumerGroup> + Send + Sync;

/// Consumers the check does not fold, and why.
pub const NOT_FOLDED: &[(&str, &str)] = &[
    (
        crate::segments::SEGMENT_EVALUATOR,
        "writes no documents: it appends membership events to the segments-* streams from the profile metrics and \
         the clock; those events are in the store and folded through segment-members",
    ),
    (
        crate::segments::AFFINITY_DETECTOR,
        "writes no documents: it appends ProductAffinityDetected to the recommendations-* streams from the profile \
         metrics and the co-purchases (decision 0075); those events are in the store",
    ),
];

/// Stored documents listed per request.
const LIST_PAGE: usize = 500;
/// Partitions listed at once.
const CONCURRENT_LISTS: usize = 16;

/// How a stored document differs from the folded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mismatch {
    /// The fold makes it, nothing is stored: the consumer lost an event (or
    /// has not yet received it).
    Missing,
    /// Stored with another body.
    Different,
    /// Stored, but the fold does not make it (or deletes it).
    Extra,
}

/// The event whose projection last wrote (or deleted) a document in the
/// fold: for a missing or different document, the event the consumer most
/// likely lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventRef {
    pub stream_id: String,
    pub version: u64,
    pub event_type: String,
    pub event_id: String,
}

/// One document that is not as the events make it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocumentMismatch {
    pub consumer: String,
    pub partition: String,
    pub sort: String,
    pub kind: Mismatch,
    /// The folded event that last wrote or deleted it (`None`: no folded
    /// event touched it, or it is a count).
    pub event: Option<EventRef>,
    /// A document of counts ([`ReadOp::Add`], decision 0088): many events
    /// add to it, so it names none.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub counts: bool,
    /// What folding the events gives (`None`: no such document).
    pub expected: Option<Value>,
    /// What is stored (`None`: missing).
    pub stored: Option<Value>,
}

/// One consumer's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConsumerFigures {
    /// The consumer group (function) that runs it.
    pub group: String,
    pub consumer: String,
    /// Documents the fold makes and compared (order-dependent ones left out).
    pub compared: u64,
    pub missing: u64,
    pub different: u64,
    pub extra: u64,
    /// Documents the two fold orders disagree on: not compared.
    pub order_dependent: u64,
    /// Events the projection refuses (parked by the fold as by the consumer).
    pub parked: u64,
}

/// A consumer left out of the fold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotFolded {
    pub consumer: String,
    pub reason: String,
}

/// An event a projection refused in the fold (the deployed consumer parks
/// it in its dead-letter queue too).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RefusedEvent {
    pub consumer: String,
    pub event: Option<EventRef>,
    pub reason: String,
}

/// What the full check found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Events read and folded.
    pub events: u64,
    pub streams: usize,
    /// Per consumer, in group order.
    pub consumers: Vec<ConsumerFigures>,
    pub mismatches: Vec<DocumentMismatch>,
    /// Documents whose folded body depends on the order of events of
    /// different streams: (consumer, partition, sort).
    pub order_dependent: Vec<(String, String, String)>,
    pub not_folded: Vec<NotFolded>,
    pub refused: Vec<RefusedEvent>,
}

impl VerifyReport {
    fn total(&self, figure: impl Fn(&ConsumerFigures) -> u64) -> u64 {
        self.consumers.iter().map(figure).sum()
    }

    pub fn compared(&self) -> u64 {
        self.total(|c| c.compared)
    }

    pub fn missing(&self) -> u64 {
        self.total(|c| c.missing)
    }

    pub fn different(&self) -> u64 {
        self.total(|c| c.different)
    }

    pub fn extra(&self) -> u64 {
        self.total(|c| c.extra)
    }

    /// Documents not as the events make them: missing, different or extra.
    pub fn mismatched(&self) -> u64 {
        self.missing() + self.different() + self.extra()
    }

    /// How many events some consumer lost, at least: the distinct events the
    /// mismatches name (the event whose projection last wrote or deleted the
    /// document in the fold), and each mismatch that names none. The
    /// documents of one lost event count once, in however many consumers;
    /// an earlier lost event whose documents a later one rewrote whole
    /// cannot be seen.
    pub fn lost_events(&self) -> u64 {
        let named: BTreeSet<(&str, u64)> = self
            .mismatches
            .iter()
            .filter_map(|m| m.event.as_ref().map(|e| (e.stream_id.as_str(), e.version)))
            .collect();
        let unnamed = self
            .mismatches
            .iter()
            .filter(|m| m.event.is_none() && !m.counts)
            .count();
        // A count that differs says an event is lost, not which.
        let counted = self.mismatches.iter().any(|m| m.counts);
        match named.len() + unnamed {
            0 if counted => 1,
            n => n as u64,
        }
    }

    /// Every stored document of every folded consumer is as the events make
    /// it, and none could not be compared.
    pub fn is_consistent(&self) -> bool {
        self.mismatches.is_empty() && self.order_dependent.is_empty()
    }
}

/// Reads every event of `events` (as the consumers see them: decrypted),
/// folds them through every consumer of the groups `groups` builds (except
/// [`NOT_FOLDED`]) into memory, in recorded order and again stream by
/// stream in reverse, and compares each folded document, and every stored
/// document of each partition the fold wrote or deleted in, with `stored`.
/// Checkpoints are neither read nor compared.
pub async fn verify(
    events: &dyn EventStore,
    stored: Arc<dyn ReadModelStore>,
    groups: &GroupsOver,
) -> Result<VerifyReport, OpsError> {
    verify_with(events, stored.as_ref(), &ListedDocuments(stored.clone()), groups).await
}

/// [`verify`], the stored documents read from `documents` (a document
/// `documents` does not return is looked up once more in `stored` by key).
pub async fn verify_with(
    events: &dyn EventStore,
    stored: &dyn ReadModelStore,
    documents: &dyn StoredDocuments,
    groups: &GroupsOver,
) -> Result<VerifyReport, OpsError> {
    let all = read_all_events(events).await?;
    let copy = Arc::new(EventCopy::new(&all));
    tracing::info!(events = all.len(), streams = copy.streams.len(), "events read");

    // Recorded order (the store's order among events recorded at the same
    // time), and stream by stream, the streams in reverse.
    let mut recorded = all;
    recorded.sort_by_key(|e| e.recorded_at);
    let reversed: Vec<EventEnvelope> = copy.streams.values().rev().flatten().cloned().collect();
    let first = fold(&recorded, copy.clone(), groups).await?;
    let second = fold(&reversed, copy.clone(), groups).await?;

    let mut report = VerifyReport {
        events: recorded.len() as u64,
        streams: copy.streams.len(),
        ..VerifyReport::default()
    };
    report.not_folded = first.not_folded.clone();
    report.refused = first
        .refused
        .iter()
        .map(|(consumer, payload, reason)| RefusedEvent {
            consumer: consumer.clone(),
            event: serde_json::from_value::<EventEnvelope>(payload.clone())
                .ok()
                .map(|e| event_ref(&e)),
            reason: reason.clone(),
        })
        .collect();

    let order_dependent: BTreeSet<DocKey> = first
        .docs
        .keys()
        .chain(second.docs.keys())
        .filter(|k| first.docs.get(*k) != second.docs.get(*k))
        .cloned()
        .collect();

    // Every partition either fold wrote or deleted in, per consumer.
    let partitions: BTreeSet<(String, String)> = first
        .writers
        .keys()
        .chain(second.writers.keys())
        .map(|(c, p, _)| (c.clone(), p.clone()))
        .collect();
    let listed = documents.documents(&partitions).await?;

    for (group, consumer) in &first.consumers {
        let mut figures = ConsumerFigures {
            group: group.clone(),
            consumer: consumer.name().to_string(),
            parked: first.refused.iter().filter(|(c, _, _)| c == consumer.name()).count() as u64,
            ..ConsumerFigures::default()
        };
        let name = consumer.name();
        let expected = first.docs.range(lower(name)..).take_while(|((c, _, _), _)| c == name);
        let found = listed.range(lower(name)..).take_while(|((c, _, _), _)| c == name);
        let keys: BTreeSet<&DocKey> = expected.map(|(k, _)| k).chain(found.map(|(k, _)| k)).collect();
        for key in keys {
            if order_dependent.contains(key) {
                figures.order_dependent += 1;
                continue;
            }
            let want = first.docs.get(key);
            let mut have = listed.get(key).cloned();
            if want.is_some() && have.is_none() {
                // Listed without it: look once more, by key.
                have = stored.get(&key.0, &key.1, &key.2).await?;
            }
            if want.is_some() {
                figures.compared += 1;
            }
            let kind = match (want, &have) {
                (Some(w), Some(h)) if w == h => continue,
                (Some(_), Some(_)) => Mismatch::Different,
                (Some(_), None) => Mismatch::Missing,
                (None, Some(_)) => Mismatch::Extra,
                (None, None) => continue,
            };
            match kind {
                Mismatch::Missing => figures.missing += 1,
                Mismatch::Different => figures.different += 1,
                Mismatch::Extra => figures.extra += 1,
            }
            report.mismatches.push(DocumentMismatch {
                consumer: key.0.clone(),
                partition: key.1.clone(),
                sort: key.2.clone(),
                kind,
                event: first
                    .writers
                    .get(key)
                    .filter(|(stream, _)| !stream.is_empty())
                    .and_then(|(stream, upto)| copy.writer(consumer, stream, *upto)),
                counts: first.writers.get(key).is_some_and(|(stream, _)| stream.is_empty()),
                expected: want.cloned(),
                stored: have,
            });
        }
        report.consumers.push(figures);
    }
    report.order_dependent = order_dependent.into_iter().collect();
    Ok(report)
}

/// The first possible key of `consumer`'s documents.
fn lower(consumer: &str) -> DocKey {
    (consumer.to_string(), String::new(), String::new())
}

fn event_ref(e: &EventEnvelope) -> EventRef {
    EventRef {
        stream_id: e.stream_id.clone(),
        version: e.version,
        event_type: e.event_type.clone(),
        event_id: e.event_id.to_string(),
    }
}

async fn read_all_events(events: &dyn EventStore) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = events.read_all(cursor.as_deref(), REPLAY_PAGE).await?;
        all.extend(page.events);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}

/// What one fold made.
struct Fold {
    /// (group, consumer) in the groups' order.
    consumers: Vec<(String, Consumer)>,
    docs: BTreeMap<DocKey, Value>,
    /// Per document the fold wrote or deleted: the stream and the checkpoint
    /// that write moved to (an empty stream: a document of counts, which
    /// many streams add to).
    writers: BTreeMap<DocKey, (String, u64)>,
    /// (consumer, event as parked, reason).
    refused: Vec<(String, Value, String)>,
    not_folded: Vec<NotFolded>,
}

/// Feeds `events` in their order, in pages, to each consumer of the groups
/// alone (as `crm-ops replay` rebuilds one), over in-memory documents.
async fn fold(events: &[EventEnvelope], copy: Arc<EventCopy>, groups: &GroupsOver) -> Result<Fold, OpsError> {
    let docs = Arc::new(FoldDocs::default());
    let refused = Arc::new(Refused::default());
    let now = Utc::now();
    let mut out = Fold {
        consumers: Vec::new(),
        docs: BTreeMap::new(),
        writers: BTreeMap::new(),
        refused: Vec::new(),
        not_folded: Vec::new(),
    };
    for group in groups(copy, docs.clone(), refused.clone()) {
        for name in group.consumer_names() {
            if let Some((_, why)) = NOT_FOLDED.iter().find(|(n, _)| *n == name) {
                out.not_folded.push(NotFolded {
                    consumer: name.to_string(),
                    reason: why.to_string(),
                });
                continue;
            }
            let (Some(one), Some(consumer)) = (group.only(name), group.consumer(name)) else {
                continue;
            };
            for page in events.chunks(REPLAY_PAGE) {
                one.handle_page(page, now).await?;
            }
            out.consumers.push((group.name.to_string(), consumer.clone()));
        }
    }
    out.docs = docs.docs.dump();
    out.writers = docs.writers.lock().map(|w| w.clone()).unwrap_or_default();
    out.refused = refused.letters.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(out)
}

/// Where the full check reads the stored documents.
#[async_trait]
pub trait StoredDocuments: Send + Sync {
    /// Every stored document of each (consumer, partition) of `partitions`.
    /// It may return more (other partitions of the same consumers, say from
    /// a scan of the table): those are compared too, so an extra document in
    /// a partition no folded event touched is found as well.
    async fn documents(&self, partitions: &BTreeSet<(String, String)>) -> Result<BTreeMap<DocKey, Value>, StoreError>;
}

/// The stored documents through the [`ReadModelStore`] port: each partition
/// listed page by page, a few partitions at a time (one request each; on
/// DynamoDB one `Query` per partition, so a scan of the table is cheaper
/// for a whole table).
pub struct ListedDocuments(pub Arc<dyn ReadModelStore>);

#[async_trait]
impl StoredDocuments for ListedDocuments {
    async fn documents(&self, partitions: &BTreeSet<(String, String)>) -> Result<BTreeMap<DocKey, Value>, StoreError> {
        use futures::stream::{self, StreamExt};
        let mut found = BTreeMap::new();
        let mut listed = stream::iter(partitions.iter().cloned())
            .map(|(consumer, partition)| async move {
                let docs = list_partition(self.0.as_ref(), &consumer, &partition).await?;
                Ok::<_, StoreError>((consumer, partition, docs))
            })
            .buffer_unordered(CONCURRENT_LISTS);
        while let Some(done) = listed.next().await {
            let (consumer, partition, docs) = done?;
            for (sort, body) in docs {
                found.insert((consumer.clone(), partition.clone(), sort), body);
            }
        }
        Ok(found)
    }
}

async fn list_partition(
    stored: &dyn ReadModelStore,
    consumer: &str,
    partition: &str,
) -> Result<Vec<(String, Value)>, StoreError> {
    let mut out: Vec<(String, Value)> = Vec::new();
    loop {
        let after = out.last().map(|(sort, _)| sort.clone());
        let page = stored
            .list(consumer, partition, "", after.as_deref(), LIST_PAGE)
            .await?;
        let full = page.len() == LIST_PAGE;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// The events as the check read them, in memory and read-only: the fold's
/// consumers fill their gaps from it, never from the store again.
struct EventCopy {
    /// Per stream, by version (one event per version).
    streams: BTreeMap<String, Vec<EventEnvelope>>,
}

impl EventCopy {
    fn new(events: &[EventEnvelope]) -> Self {
        let mut by_stream: BTreeMap<String, BTreeMap<u64, EventEnvelope>> = BTreeMap::new();
        for e in events {
            by_stream
                .entry(e.stream_id.clone())
                .or_default()
                .insert(e.version, e.clone());
        }
        EventCopy {
            streams: by_stream
                .into_iter()
                .map(|(s, v)| (s, v.into_values().collect()))
                .collect(),
        }
    }

    /// The newest event of `stream` at or before `upto` that `consumer` handles.
    fn writer(&self, consumer: &Consumer, stream: &str, upto: u64) -> Option<EventRef> {
        self.streams
            .get(stream)?
            .iter()
            .rev()
            .filter(|e| e.version <= upto)
            .find(|e| consumer.handles(&e.event_type))
            .map(event_ref)
    }
}

fn read_only() -> StoreError {
    StoreError::Failed("the check's copy of the events is read-only".into())
}

#[async_trait]
impl EventStore for EventCopy {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        let events = self.streams.get(stream_id).cloned().unwrap_or_default();
        Ok(LoadedStream {
            snapshot: None,
            version: events.last().map_or(0, |e| e.version),
            events,
        })
    }

    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        Ok(self
            .streams
            .get(stream_id)
            .map(|s| s.iter().filter(|e| e.version > after).take(limit).cloned().collect())
            .unwrap_or_default())
    }

    async fn append(&self, _request: AppendRequest) -> Result<Appended, AppendError> {
        Err(AppendError::Store(read_only()))
    }

    async fn receipt(&self, _key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        Ok(None)
    }

    async fn reservation_owner(&self, _key: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    async fn save_snapshot(&self, _snapshot: Snapshot) -> Result<(), StoreError> {
        Err(read_only())
    }

    /// Stream by stream; the cursor is the count of events already given.
    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        let skip: usize = match after {
            Some(cursor) => cursor
                .parse()
                .map_err(|_| StoreError::Failed(format!("not a cursor of this copy: {cursor:?}")))?,
            None => 0,
        };
        let events: Vec<EventEnvelope> = self
            .streams
            .values()
            .flatten()
            .skip(skip)
            .take(limit)
            .cloned()
            .collect();
        let given = skip + events.len();
        let more = self.streams.values().map(Vec::len).sum::<usize>() > given;
        Ok(EventPage {
            next: more.then(|| given.to_string()),
            events,
        })
    }
}

/// The fold's documents: in memory, remembering per document the stream
/// and checkpoint of the commit that last wrote or deleted it.
#[derive(Default)]
struct FoldDocs {
    docs: InMemoryReadModels,
    writers: Mutex<BTreeMap<DocKey, (String, u64)>>,
}

#[async_trait]
impl ReadModelStore for FoldDocs {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        self.docs.checkpoint(consumer, stream_id).await
    }

    async fn commit(
        &self,
        consumer: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        ops: Vec<ReadOp>,
    ) -> Result<(), CommitError> {
        let keys: Vec<(DocKey, bool)> = ops
            .iter()
            .map(|op| {
                let (partition, sort) = op.key();
                (
                    (consumer.to_string(), partition.to_string(), sort.to_string()),
                    op.is_add(),
                )
            })
            .collect();
        self.docs.commit(consumer, stream_id, expected, new, ops).await?;
        let mut writers = self.writers.lock().map_err(|_| StoreError::Failed("poisoned".into()))?;
        for (key, counted) in keys {
            let writer = if counted { String::new() } else { stream_id.to_string() };
            writers.insert(key, (writer, new));
        }
        Ok(())
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<Value>, StoreError> {
        self.docs.get(consumer, partition, sort).await
    }

    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Value)>, StoreError> {
        self.docs.list(consumer, partition, prefix, after, limit).await
    }
}

/// The fold's dead-letter queue: keeps what the projections refuse.
#[derive(Default)]
struct Refused {
    letters: Mutex<Vec<(String, Value, String)>>,
}

#[async_trait]
impl DeadLetterQueue for Refused {
    async fn park(&self, letter: DeadLetter) -> Result<(), StoreError> {
        self.letters
            .lock()
            .map_err(|_| StoreError::Failed("poisoned".into()))?
            .push((letter.consumer, letter.payload, letter.reason));
        Ok(())
    }
}
