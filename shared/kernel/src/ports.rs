//! Ports: the small traits adapters implement (SQLite locally, DynamoDB on AWS).

use crate::event::EventEnvelope;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the writer believes the stream's current version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append wherever the stream ends.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be exactly at this version.
    Exactly(u64),
}

/// A uniqueness claim stored in the same atomic write as the events, for
/// example `email#<sha256>` owned by `customer-<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationChange {
    /// Take `key` for `owner`; fails if someone else holds it.
    Claim { key: String, owner: String },
    /// Give `key` back; only its owner can.
    Release { key: String, owner: String },
}

impl ReservationChange {
    pub fn key(&self) -> &str {
        match self {
            ReservationChange::Claim { key, .. } | ReservationChange::Release { key, .. } => key,
        }
    }
}

/// The answer to a command, kept so that a retried command is answered, not
/// applied twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandReceipt {
    /// Scoped idempotency key (who sent it and which key they used).
    pub key: String,
    /// Fingerprint of the request, to refuse a key reused for another request.
    pub request_hash: String,
    /// HTTP-independent answer: a status and a JSON body.
    pub status: u16,
    pub body: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// One atomic write: events, reservations and a receipt, all or nothing.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub stream_id: String,
    pub expected: ExpectedVersion,
    /// Envelopes whose `version` the store assigns.
    pub events: Vec<EventEnvelope>,
    pub reservations: Vec<ReservationChange>,
    pub receipt: Option<CommandReceipt>,
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The stored envelopes, with their versions.
    pub events: Vec<EventEnvelope>,
    /// The stream's version after the write.
    pub version: u64,
}

/// A saved fold of a stream up to `version`, to bound loading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub stream_id: String,
    pub version: u64,
    /// Which shape `state` has; a loader ignores snapshots of another shape.
    pub state_schema: u32,
    pub state: serde_json::Value,
}

/// A stream as loaded: the newest snapshot (if any) and the events after it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadedStream {
    pub snapshot: Option<Snapshot>,
    pub events: Vec<EventEnvelope>,
    /// The stream's current version (0 when it does not exist).
    pub version: u64,
}

/// One page of every stored event, for replay.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventPage {
    pub events: Vec<EventEnvelope>,
    /// Opaque cursor for the next page; `None` at the end.
    pub next: Option<String>,
}

/// Why an append did not happen. Nothing was written in every case.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum AppendError {
    #[error("concurrency conflict on {stream_id}: expected {expected:?}, stream is at {actual:?}")]
    Conflict {
        stream_id: String,
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
    #[error("reservation {key} is held by another owner")]
    ReservationTaken { key: String },
    #[error("command {} was already applied", .0.key)]
    DuplicateCommand(Box<CommandReceipt>),
    #[error("write too large: {0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store could not be read or written.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Worth retrying: throttling, timeouts, a busy database.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Not worth retrying: corrupt data, bad configuration.
    #[error("event store failure: {0}")]
    Failed(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The event store (ARCHITECTURE.md §5). Its whole concurrency contract is
/// [`ExpectedVersion`] and [`AppendError::Conflict`].
#[async_trait]
pub trait EventStore: Send + Sync {
    /// The newest snapshot of a stream and every event after it.
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError>;

    /// Events of one stream with a version greater than `after`, at most `limit`.
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError>;

    /// Appends atomically, or writes nothing and says why.
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError>;

    /// A command receipt by its key.
    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError>;

    /// The receipts of `keys`, in the order asked (`None` where there is
    /// none). Adapters read them together (DynamoDB: BatchGetItem, 100 keys
    /// a request; SQLite: one SELECT); this default reads them one by one.
    async fn receipts(&self, keys: &[String]) -> Result<Vec<Option<CommandReceipt>>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            found.push(self.receipt(key).await?);
        }
        Ok(found)
    }

    /// Appends `request` and, in the same atomic write, the receipts of
    /// several commands (at most [`MAX_RECEIPTS_PER_APPEND`]): the events of
    /// several messages taken together, each with its receipt (decision
    /// 0056). All or nothing: a receipt already there refuses the whole
    /// write with [`AppendError::DuplicateCommand`] (naming one of them).
    /// This default appends `request` alone when `receipts` is empty and
    /// otherwise refuses with [`AppendError::TooLarge`] before writing
    /// anything (a store or wrapper that does not take several receipts):
    /// the caller then appends one command at a time.
    async fn append_with_receipts(
        &self,
        request: AppendRequest,
        receipts: Vec<CommandReceipt>,
    ) -> Result<Appended, AppendError> {
        if receipts.is_empty() {
            return self.append(request).await;
        }
        Err(AppendError::TooLarge(format!(
            "{} receipts in one append: this store takes one",
            receipts.len()
        )))
    }

    /// The owner of a reservation, if it is held.
    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Stores a snapshot (replacing an older one of the same stream).
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError>;

    /// Every event of every stream, page by page; `after` is a cursor from
    /// the previous page. Within a stream, versions come in order.
    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError>;
}

/// Appends `events` to `stream_id` whatever its version: an index stream
/// that only grows (the ids of campaigns, templates and segment
/// definitions), where the order between writers does not matter.
pub async fn append_unordered<E: crate::event::DomainEvent>(
    store: &dyn EventStore,
    stream_id: &str,
    events: &[E],
    meta: &crate::event::CommandMeta,
    now: DateTime<Utc>,
) -> Result<Appended, AppendError> {
    let events =
        crate::event::envelopes(stream_id, None, events, meta, now).map_err(|e| StoreError::Failed(e.to_string()))?;
    store
        .append(AppendRequest {
            stream_id: stream_id.to_string(),
            expected: ExpectedVersion::Any,
            events,
            reservations: Vec::new(),
            receipt: None,
        })
        .await
}

/// Retention's store operation beyond the append-only [`EventStore`]
/// (`crate::retention`): finding streams and deleting expired events. A
/// separate port so that nothing else can delete.
#[async_trait]
pub trait EventExpiry: Send + Sync {
    /// Ids of the streams whose id starts with `prefix`, in order, after
    /// `after` (exclusive), at most `limit`.
    async fn streams(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError>;

    /// Deletes the events `versions` of `stream_id`; versions already gone
    /// are skipped. Never deletes the stream's newest event (it holds the
    /// stream's version: an append after it must not reuse a version), which
    /// is refused with `StoreError::Failed`. Returns how many were deleted.
    async fn delete_events(&self, stream_id: &str, versions: &[u64]) -> Result<u64, StoreError>;

    /// Deletes a whole stream (its events and snapshot). Returns how many
    /// events were deleted.
    async fn delete_stream(&self, stream_id: &str) -> Result<u64, StoreError>;
}

/// The most events one atomic write may hold (DynamoDB's transaction limit,
/// less room for reservations and a receipt).
pub const MAX_EVENTS_PER_APPEND: usize = 90;

/// Refuses, before any write, an append of more than
/// [`MAX_EVENTS_PER_APPEND`] events (every adapter checks this first).
pub fn check_append_size(request: &AppendRequest) -> Result<(), AppendError> {
    if request.events.len() > MAX_EVENTS_PER_APPEND {
        return Err(AppendError::TooLarge(format!(
            "{} events in one append (at most {MAX_EVENTS_PER_APPEND})",
            request.events.len()
        )));
    }
    Ok(())
}

/// The most receipts one [`EventStore::append_with_receipts`] may carry
/// besides the request's own: with as many events, a DynamoDB transaction
/// (100 items) still has room for a reservation or two.
pub const MAX_RECEIPTS_PER_APPEND: usize = 45;

/// Refuses, before any write, an append of more than
/// [`MAX_RECEIPTS_PER_APPEND`] extra receipts, or with one key twice (the
/// request's own receipt included).
pub fn check_receipts(request: &AppendRequest, receipts: &[CommandReceipt]) -> Result<(), AppendError> {
    check_append_size(request)?;
    if receipts.len() > MAX_RECEIPTS_PER_APPEND {
        return Err(AppendError::TooLarge(format!(
            "{} receipts in one append (at most {MAX_RECEIPTS_PER_APPEND})",
            receipts.len()
        )));
    }
    let mut keys = std::collections::HashSet::new();
    for key in request.receipt.iter().chain(receipts).map(|r| r.key.as_str()) {
        if !keys.insert(key) {
            return Err(StoreError::Failed(format!("receipt {key} is written twice in one append")).into());
        }
    }
    Ok(())
}

/// What the bus said about one entry of a `put`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    Published,
    /// This entry was refused (throttled, internal error, ...); the others may have gone.
    Failed {
        code: String,
        message: String,
    },
}

/// The bus could not be reached at all.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    #[error("event bus refused the request: {0}")]
    Refused(String),
}

/// An event bus (EventBridge on AWS, the in-process bus locally).
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publishes up to [`crate::bus::MAX_ENTRIES_PER_PUT`] entries; one outcome per
    /// entry, in order.
    async fn put(&self, entries: &[crate::bus::BusEntry]) -> Result<Vec<PublishOutcome>, BusError>;
}

/// Something that could not be processed, parked with its reason so nothing is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Who gave up on it: `relay`, `projector`, `consent`, ...
    pub consumer: String,
    pub reason: String,
    /// The event or payload, as received.
    pub payload: serde_json::Value,
    pub failed_at: DateTime<Utc>,
    pub attempts: u32,
}

/// Where dead letters go (an SQS queue on AWS, a SQLite table locally).
#[async_trait]
pub trait DeadLetterQueue: Send + Sync {
    async fn park(&self, letter: DeadLetter) -> Result<(), StoreError>;
}

/// A parked letter with the id its queue knows it by (locally the row id,
/// on AWS the SQS message id).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParkedLetter {
    pub id: String,
    pub letter: DeadLetter,
}

/// One page of parked letters; `next` is the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParkedPage {
    pub items: Vec<ParkedLetter>,
    pub next: Option<String>,
}

/// What redriving one letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redriven {
    /// Handed back to its consumer (locally: handled, then removed; on
    /// AWS: moved back to the consumer's source queue).
    Done,
    /// No letter of that id.
    NotFound,
    /// It failed again or cannot be redriven; it stays parked. Why.
    Failed(String),
}

/// The operator's side of the dead letters (decision 0085): list, read and
/// redrive what [`DeadLetterQueue::park`] put away. The local bus
/// implements it over its SQLite table, crm-aws over the SQS dead-letter
/// queues. The letters are as parked (ciphertext, decision 0040).
#[async_trait]
pub trait DeadLetterAdmin: Send + Sync {
    /// Up to `limit` letters after the cursor `after`, oldest first where the queue knows an order.
    async fn list(&self, after: Option<&str>, limit: usize) -> Result<ParkedPage, StoreError>;
    /// Could `cursor` be a [`ParkedPage::next`] of this queue? A cursor that
    /// cannot is the caller's mistake (422), not the store's.
    fn is_cursor(&self, cursor: &str) -> bool {
        !cursor.is_empty()
    }
    /// The letter `id`, if it is parked.
    async fn get(&self, id: &str) -> Result<Option<ParkedLetter>, StoreError>;
    /// Delivers letter `id` again to the consumer that parked it.
    async fn redrive(&self, id: &str) -> Result<Redriven, StoreError>;
    /// How many letters are parked (on AWS, SQS's approximate count).
    async fn depth(&self) -> Result<u64, StoreError>;
}

/// One change to a read model: documents live under (partition, sort) within
/// a consumer's own namespace.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadOp {
    Put {
        partition: String,
        sort: String,
        body: serde_json::Value,
    },
    Delete {
        partition: String,
        sort: String,
    },
    /// Adds each of `counts` to the document's top-level integer field of
    /// that name (absent or not an integer: 0), creating the document when
    /// absent, then sets the top-level fields of `set` as given (decision
    /// 0088: the overview's counters). Not idempotent: it always moves in
    /// its commit's atomic write, with the checkpoint (never in
    /// [`Commit::idempotent`]), so a redelivered event whose checkpoint
    /// already moved adds nothing. A field is either counted or set, not both.
    Add {
        partition: String,
        sort: String,
        counts: BTreeMap<String, i64>,
        set: serde_json::Map<String, serde_json::Value>,
    },
}

impl ReadOp {
    /// The document it changes: (partition, sort).
    pub fn key(&self) -> (&str, &str) {
        match self {
            ReadOp::Put { partition, sort, .. }
            | ReadOp::Delete { partition, sort }
            | ReadOp::Add { partition, sort, .. } => (partition, sort),
        }
    }

    /// Whether it is an [`ReadOp::Add`].
    pub fn is_add(&self) -> bool {
        matches!(self, ReadOp::Add { .. })
    }

    /// `self` then `next` on the same document, as one operation (a put or
    /// delete replaces; an add on a known body becomes a put of the sum; two
    /// adds become one). Every adapter writing a document once per atomic
    /// write merges its operations this way.
    pub fn then(self, next: ReadOp) -> ReadOp {
        match (self, next) {
            (
                ReadOp::Add {
                    partition,
                    sort,
                    mut counts,
                    mut set,
                },
                ReadOp::Add {
                    counts: more,
                    set: also,
                    ..
                },
            ) => {
                for (field, n) in more {
                    let total = counts.entry(field).or_insert(0);
                    *total = total.saturating_add(n);
                }
                set.extend(also);
                ReadOp::Add {
                    partition,
                    sort,
                    counts,
                    set,
                }
            }
            (
                ReadOp::Put { body, .. },
                ReadOp::Add {
                    partition,
                    sort,
                    counts,
                    set,
                },
            ) => ReadOp::Put {
                body: added(Some(body), &counts, &set),
                partition,
                sort,
            },
            (
                ReadOp::Delete { .. },
                ReadOp::Add {
                    partition,
                    sort,
                    counts,
                    set,
                },
            ) => ReadOp::Put {
                body: added(None, &counts, &set),
                partition,
                sort,
            },
            (_, replacing) => replacing,
        }
    }

    /// The document it leaves where `before` stood (`None`: absent).
    pub fn apply(&self, before: Option<serde_json::Value>) -> Option<serde_json::Value> {
        match self {
            ReadOp::Put { body, .. } => Some(body.clone()),
            ReadOp::Delete { .. } => None,
            ReadOp::Add { counts, set, .. } => Some(added(before, counts, set)),
        }
    }
}

/// The document an [`ReadOp::Add`] of `counts` and `set` leaves on `before`
/// (absent, or not an object: an empty object).
pub fn added(
    before: Option<serde_json::Value>,
    counts: &BTreeMap<String, i64>,
    set: &serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let mut doc = match before {
        Some(serde_json::Value::Object(doc)) => doc,
        _ => serde_json::Map::new(),
    };
    for (field, n) in counts {
        let was = doc.get(field).and_then(serde_json::Value::as_i64).unwrap_or(0);
        doc.insert(field.clone(), serde_json::Value::from(was.saturating_add(*n)));
    }
    for (field, value) in set {
        doc.insert(field.clone(), value.clone());
    }
    serde_json::Value::Object(doc)
}

/// Why a read-model commit did not happen. Nothing was written.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CommitError {
    /// The consumer's checkpoint for the stream moved: another delivery won.
    #[error("checkpoint of {consumer} on {stream_id} is no longer {expected}")]
    Conflict {
        consumer: String,
        stream_id: String,
        expected: u64,
    },
    #[error("commit too large: {0}")]
    TooLarge(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The most operations one read-model commit may carry (DynamoDB's
/// transaction limit less the checkpoint item).
pub const MAX_OPS_PER_COMMIT: usize = 99;

/// Refuses, before any write, a read-model commit of more than
/// [`MAX_OPS_PER_COMMIT`] operations (every adapter checks this first).
pub fn check_commit_size(ops: &[ReadOp]) -> Result<(), CommitError> {
    if ops.len() > MAX_OPS_PER_COMMIT {
        return Err(CommitError::TooLarge(format!(
            "{} operations in one commit (at most {MAX_OPS_PER_COMMIT})",
            ops.len()
        )));
    }
    Ok(())
}

/// One read-model commit: `ops` of `consumer`, moving its checkpoint of
/// `stream_id` from `expected` to `new` (see [`ReadModelStore::commit_all`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Commit {
    pub consumer: String,
    pub stream_id: String,
    pub expected: u64,
    pub new: u64,
    /// Operations that move atomically with the checkpoint.
    pub ops: Vec<ReadOp>,
    /// Operations that depend on the events alone (the projection read
    /// nothing to make them) on documents nothing in the page read: writing
    /// them again changes nothing, so an adapter may write them before and
    /// apart from the atomic write of `ops` and the checkpoint (decision
    /// 0031), never letting an older version of the stream overwrite a
    /// newer one. They touch no document `ops` of the same page touches.
    /// Never an [`ReadOp::Add`] (adapters write one found here atomically).
    pub idempotent: Vec<ReadOp>,
}

impl Commit {
    /// Every operation, the idempotent ones first (they touch other documents).
    pub fn all_ops(&self) -> impl Iterator<Item = &ReadOp> {
        self.idempotent.iter().chain(self.ops.iter())
    }
}

/// Read models (projections): documents plus a checkpoint per
/// (consumer, stream), the checkpoint always written in the same atomic write
/// as the documents (ARCHITECTURE.md §6).
#[async_trait]
pub trait ReadModelStore: Send + Sync {
    /// The last version of `stream_id` that `consumer` applied (0: none).
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError>;

    /// Applies `ops` and moves the checkpoint from `expected` to `new`, atomically;
    /// `CommitError::Conflict` if the checkpoint is not `expected`.
    async fn commit(
        &self,
        consumer: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        ops: Vec<ReadOp>,
    ) -> Result<(), CommitError>;

    /// Several commits in order, each atomic with its checkpoint as in
    /// [`ReadModelStore::commit`] (consecutive commits of one stream chain:
    /// the second expects what the first set). Adapters that can apply them
    /// all in one write do (SQLite: one transaction); the others apply them
    /// one by one, so after an error the commits before the failing one may
    /// stand. Either way the caller redelivers what is not applied, which the
    /// checkpoints make safe.
    async fn commit_all(&self, commits: Vec<Commit>) -> Result<(), CommitError> {
        for c in commits {
            let ops = c.all_ops().cloned().collect();
            self.commit(&c.consumer, &c.stream_id, c.expected, c.new, ops).await?;
        }
        Ok(())
    }

    /// The checkpoints of several (consumer, stream) pairs, in the order asked.
    async fn checkpoints(&self, keys: &[(String, String)]) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for (consumer, stream) in keys {
            out.push(self.checkpoint(consumer, stream).await?);
        }
        Ok(out)
    }

    /// One document, strongly consistent.
    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<serde_json::Value>, StoreError>;

    /// Documents of one partition whose sort key starts with `prefix`, in sort
    /// order, after `after` (exclusive), at most `limit`.
    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError>;
}

/// How far behind one consumer is, and how much it gave up on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerStatus {
    pub name: String,
    /// Events the consumer has not yet handled (locally: stored events not
    /// yet handed to it; on AWS: the messages in its queue, in flight too).
    pub lag: u64,
    /// Dead letters waiting for inspection or redrive.
    pub dead_letters: u64,
    /// How long, in seconds, the oldest event not yet handled has waited,
    /// when known (locally: the oldest event not yet handed to it; on AWS:
    /// from the consumer's [`ConsumerProgress`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<u64>,
}

impl ConsumerStatus {
    /// A consumer further behind than this makes the system degraded (seed 000).
    pub const DEGRADED_AFTER_SECONDS: u64 = 60;

    /// Whether this consumer makes the system degraded (seed 000's
    /// thresholds): anything in its dead-letter queue, or a lag over
    /// [`Self::DEGRADED_AFTER_SECONDS`].
    pub fn is_degraded(&self) -> bool {
        self.dead_letters > 0 || self.lag_seconds.is_some_and(|s| s > Self::DEGRADED_AFTER_SECONDS)
    }
}

/// A consumer's own word on how far behind it is: after a batch, how old
/// the oldest message of that batch was when it was handled. Written by the
/// consumer functions on AWS (at most every [`ConsumerProgress::EVERY`], and
/// whenever it falls behind or catches up), read by `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerProgress {
    pub consumer: String,
    /// When the batch was handled.
    pub at: DateTime<Utc>,
    /// How long its oldest message had waited (SQS `SentTimestamp`; for the
    /// relay, the stream record's creation time: its iterator age).
    pub oldest_age_seconds: u64,
}

impl ConsumerProgress {
    /// A busy consumer reports at most this often (per function instance).
    pub const EVERY: chrono::Duration = chrono::Duration::seconds(30);

    /// Whether the batch it describes was late (seed 000's threshold).
    pub fn is_behind(&self) -> bool {
        self.oldest_age_seconds > ConsumerStatus::DEGRADED_AFTER_SECONDS
    }

    /// The lag `/health` reports at `now` for a consumer with `waiting`
    /// messages: the oldest age of its last batch while that report is
    /// recent (within [`Self::EVERY`] plus the threshold); past that, if
    /// messages wait, the time since it last reported minus [`Self::EVERY`]
    /// (it is not taking them). After a long idle spell this overstates the
    /// lag until the consumer's next batch, a few seconds later.
    pub fn lag_at(&self, now: DateTime<Utc>, waiting: u64) -> u64 {
        if waiting == 0 {
            return 0;
        }
        let every = Self::EVERY.num_seconds().unsigned_abs();
        let silent = u64::try_from((now - self.at).num_seconds()).unwrap_or(0);
        if silent <= every + ConsumerStatus::DEGRADED_AFTER_SECONDS {
            self.oldest_age_seconds
        } else {
            self.oldest_age_seconds.max(silent - every)
        }
    }
}

/// Where consumers leave their [`ConsumerProgress`].
#[async_trait]
pub trait ProgressLog: Send + Sync {
    async fn record(&self, progress: &ConsumerProgress) -> Result<(), StoreError>;
    async fn latest(&self, consumer: &str) -> Result<Option<ConsumerProgress>, StoreError>;
}

/// Writes a consumer's progress after its batches, at most every
/// [`ConsumerProgress::EVERY`] per function instance, and at once when it
/// falls behind or catches up. Best effort: a failed write is logged.
pub struct ProgressReporter {
    log: std::sync::Arc<dyn ProgressLog>,
    consumer: String,
    last: std::sync::Mutex<Option<(DateTime<Utc>, bool)>>,
}

impl ProgressReporter {
    pub fn new(log: std::sync::Arc<dyn ProgressLog>, consumer: impl Into<String>) -> Self {
        ProgressReporter {
            log,
            consumer: consumer.into(),
            last: std::sync::Mutex::new(None),
        }
    }

    /// A batch whose oldest message was sent at `oldest` was handled at
    /// `now`. Whether a progress record was written.
    pub async fn batch_handled(&self, oldest: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        let progress = ConsumerProgress {
            consumer: self.consumer.clone(),
            at: now,
            oldest_age_seconds: oldest.map_or(0, |sent| u64::try_from((now - sent).num_seconds()).unwrap_or(0)),
        };
        let behind = progress.is_behind();
        let due = match self.last.lock() {
            Ok(last) => match *last {
                None => true,
                Some((at, was_behind)) => now - at >= ConsumerProgress::EVERY || was_behind != behind,
            },
            Err(_) => true,
        };
        if !due {
            return false;
        }
        match self.log.record(&progress).await {
            Ok(()) => {
                if let Ok(mut last) = self.last.lock() {
                    *last = Some((now, behind));
                }
                true
            }
            Err(e) => {
                tracing::warn!(consumer = %self.consumer, error = %e, "progress not recorded");
                false
            }
        }
    }
}

/// Reports the consumers' health (the local bus; on AWS, the consumer queues
/// and the dead-letter queues).
#[async_trait]
pub trait ConsumerHealth: Send + Sync {
    async fn consumers(&self) -> Result<Vec<ConsumerStatus>, StoreError>;
}

#[cfg(test)]
mod progress_tests {
    use super::*;
    use crate::memory::InMemoryProgressLog;
    use chrono::{Duration, TimeZone};
    use std::sync::Arc;

    fn t(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 6, 0, 0, 0).single().expect("time") + Duration::seconds(seconds)
    }

    #[tokio::test]
    async fn progress_is_written_every_30_s_and_when_the_consumer_falls_behind_or_catches_up() {
        let log = Arc::new(InMemoryProgressLog::default());
        let reporter = ProgressReporter::new(log.clone(), "projector");
        assert!(reporter.batch_handled(Some(t(-2)), t(0)).await, "the first batch");
        assert!(
            !reporter.batch_handled(Some(t(5)), t(10)).await,
            "10 s later, still on time"
        );
        assert!(reporter.batch_handled(Some(t(-60)), t(20)).await, "80 s late: behind");
        assert!(!reporter.batch_handled(Some(t(-50)), t(25)).await, "still behind");
        assert!(reporter.batch_handled(Some(t(29)), t(30)).await, "caught up");
        assert!(reporter.batch_handled(None, t(61)).await, "31 s since the last record");
        let written = log.records();
        let ages: Vec<u64> = written.iter().map(|p| p.oldest_age_seconds).collect();
        assert_eq!(ages, vec![2, 80, 1, 0]);
        assert_eq!(written[1].at, t(20));
    }

    #[test]
    fn the_lag_is_the_last_batch_s_while_fresh_then_the_silence() {
        let p = ConsumerProgress {
            consumer: "campaign".into(),
            at: t(0),
            oldest_age_seconds: 3,
        };
        assert_eq!(p.lag_at(t(500), 0), 0, "nothing waits");
        assert_eq!(p.lag_at(t(20), 7), 3);
        assert_eq!(p.lag_at(t(90), 7), 3, "within 30 s + 60 s of the report");
        assert_eq!(p.lag_at(t(200), 7), 170, "silent while messages wait");
        let status = |lag_seconds| ConsumerStatus {
            name: "campaign".into(),
            lag: 7,
            dead_letters: 0,
            lag_seconds,
        };
        assert!(!status(Some(60)).is_degraded());
        assert!(status(Some(61)).is_degraded());
        assert!(!status(None).is_degraded());
    }
}
