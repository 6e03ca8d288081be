//! What the deployed consumers spend on DynamoDB per event (decision 0031):
//! the workload's events in the order they happen, routed to the projector
//! and consent groups by the template's rules, handed to the real
//! `ConsumerGroup::handle_page` in pages of an SQS batch's fill, over read
//! models and an event store that meter every request as the DynamoDB
//! adapters make it: the page's commits cut by `consumer::capacity::plan`
//! (the DynamoDB adapter's own planner), units by DynamoDB's rounding rules
//! from the items' sizes (`consumer::capacity`), gap reads as one strongly
//! consistent Query of the events table each.

use super::workload::Workload;
use super::{BenchError, BenchOptions};
use async_trait::async_trait;
use crm_core::assembly::AssembledGroups;
use crm_core::consumer::capacity::{self, Capacity, CapacityMeter};
use crm_core::consumer::ConsumerGroup;
use crm_core::event::EventEnvelope;
use crm_core::ports::*;
use crm_core::read_model_adapter::single_commit;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// Read models in memory, as `InMemoryReadModels` keeps them but compact:
/// each document's body held as its JSON text under its sort key, in one
/// ordered map per (consumer, partition). The page phase keeps every
/// document of 200 000 events; as `serde_json::Value`s with a key of three
/// strings each they were most of the bench's peak memory (decision 0088).
#[derive(Default)]
pub struct CompactReadModels {
    inner: std::sync::Mutex<CompactInner>,
}

#[derive(Default)]
struct CompactInner {
    checkpoints: HashMap<(String, String), u64>,
    docs: HashMap<(String, String), std::collections::BTreeMap<String, Box<str>>>,
}

impl CompactReadModels {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, CompactInner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Failed("compact read models: poisoned lock".into()))
    }
}

fn parse(text: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Failed(format!("compact read models: {e}")))
}

#[async_trait]
impl ReadModelStore for CompactReadModels {
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
            let docs = inner
                .docs
                .entry((consumer.to_string(), partition.to_string()))
                .or_default();
            let before = docs.remove(sort).map(|text| parse(&text)).transpose()?;
            if let Some(after) = op.apply(before) {
                docs.insert(sort.to_string(), after.to_string().into_boxed_str());
            }
        }
        inner.checkpoints.insert(key, new);
        Ok(())
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let inner = self.lock()?;
        match inner
            .docs
            .get(&(consumer.to_string(), partition.to_string()))
            .and_then(|docs| docs.get(sort))
        {
            Some(text) => parse(text).map(Some),
            None => Ok(None),
        }
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
        let Some(docs) = inner.docs.get(&(consumer.to_string(), partition.to_string())) else {
            return Ok(Vec::new());
        };
        // From the later of the prefix and `after` (in sort order).
        let start = after.filter(|a| *a > prefix).unwrap_or(prefix);
        docs.range(start.to_string()..)
            .filter(|(sort, _)| crm_core::read_model_adapter::listed(sort, prefix, after))
            .take_while(|(sort, _)| sort.starts_with(prefix))
            .take(limit)
            .map(|(sort, text)| Ok((sort.clone(), parse(text)?)))
            .collect()
    }
}

/// In-memory read models metered as the DynamoDB adapter would spend:
/// one checkpoint item per stream holding every consumer's version
/// (decision 0036), its size counted with all the versions it holds.
#[derive(Default)]
pub struct MeteredReadModels {
    inner: CompactReadModels,
    /// Every consumer's version of each stream, as the stream's item holds them.
    versions: std::sync::Mutex<HashMap<String, HashMap<String, u64>>>,
    pub meter: CapacityMeter,
}

impl MeteredReadModels {
    /// The size of `stream`'s checkpoint item with `changed` applied (0: no item).
    fn stream_item_bytes(&self, stream: &str, changed: &[(&str, u64)]) -> usize {
        let versions = self.versions.lock().map(|v| v.get(stream).cloned()).ok().flatten();
        let mut all: HashMap<&str, u64> = versions
            .as_ref()
            .map(|v| v.iter().map(|(c, n)| (c.as_str(), *n)).collect())
            .unwrap_or_default();
        all.extend(changed.iter().copied());
        if all.is_empty() {
            return 0;
        }
        capacity::stream_checkpoint_item_bytes(stream, all)
    }
}

fn doc_bytes(consumer: &str, partition: &str, sort: &str, body: &serde_json::Value) -> usize {
    capacity::doc_item_bytes(
        consumer,
        &ReadOp::Put {
            partition: partition.into(),
            sort: sort.into(),
            body: body.clone(),
        },
    )
}

#[async_trait]
impl ReadModelStore for MeteredReadModels {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        let v = self.inner.checkpoint(consumer, stream_id).await?;
        self.meter.get(&[self.stream_item_bytes(stream_id, &[])]);
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
        self.commit_all(single_commit(consumer, stream_id, expected, new, ops))
            .await
    }

    async fn commit_all(&self, commits: Vec<Commit>) -> Result<(), CommitError> {
        let chunks = capacity::plan(
            commits.clone(),
            capacity::MAX_ITEMS_PER_WRITE,
            capacity::MAX_BYTES_PER_WRITE,
            capacity::doc_item_bytes,
        )?;
        self.inner.commit_all(commits).await?;
        for chunk in &chunks {
            self.meter.chunk(chunk, |stream| {
                let changed: Vec<(&str, u64)> = stream.moves.iter().map(|m| (m.consumer.as_str(), m.new)).collect();
                self.stream_item_bytes(stream.stream_id, &changed)
            });
            let mut versions = self
                .versions
                .lock()
                .map_err(|_| StoreError::Failed("metered read models: poisoned lock".into()))?;
            for moved in &chunk.checkpoints {
                versions
                    .entry(moved.stream_id.clone())
                    .or_default()
                    .insert(moved.consumer.clone(), moved.new);
            }
        }
        Ok(())
    }

    async fn checkpoints(&self, keys: &[(String, String)]) -> Result<Vec<u64>, StoreError> {
        // BatchGetItem of the streams' items: 100 a request, each rounded alone.
        let mut out = Vec::with_capacity(keys.len());
        let mut streams: Vec<&str> = Vec::new();
        for (consumer, stream) in keys {
            out.push(self.inner.checkpoint(consumer, stream).await?);
            if !streams.contains(&stream.as_str()) {
                streams.push(stream);
            }
        }
        for batch in streams.chunks(100) {
            let sizes: Vec<usize> = batch.iter().map(|s| self.stream_item_bytes(s, &[])).collect();
            self.meter.get(&sizes);
        }
        Ok(out)
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let found = self.inner.get(consumer, partition, sort).await?;
        let size = found.as_ref().map_or(0, |b| doc_bytes(consumer, partition, sort, b));
        self.meter.get(&[size]);
        Ok(found)
    }

    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let found = self.inner.list(consumer, partition, prefix, after, limit).await?;
        let sizes: Vec<usize> = found
            .iter()
            .map(|(sort, body)| doc_bytes(consumer, partition, sort, body))
            .collect();
        self.meter.query(&sizes, true);
        Ok(found)
    }
}

/// The workload's events by stream, for the gaps; appends (the segment
/// evaluator's) go to `scratch`. Every stream read is metered as one
/// strongly consistent Query of the events table (items of the events' JSON
/// size). The events are shared with the phase, not copied: each stream
/// is a list of positions in them (decision 0088: a copy per phase and
/// page size was most of the bench's peak memory).
pub struct MeteredEvents {
    events: Arc<[EventEnvelope]>,
    by_stream: HashMap<String, Vec<usize>>,
    scratch: Arc<dyn EventStore>,
    pub meter: CapacityMeter,
}

/// Positions of `events` by stream, in version order.
pub fn by_stream(events: &[EventEnvelope]) -> HashMap<String, Vec<usize>> {
    let mut by_stream: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        by_stream.entry(e.stream_id.clone()).or_default().push(i);
    }
    for list in by_stream.values_mut() {
        list.sort_by_key(|&i| events[i].version);
    }
    by_stream
}

impl MeteredEvents {
    pub fn new(events: Arc<[EventEnvelope]>, scratch: Arc<dyn EventStore>) -> Self {
        let by_stream = by_stream(&events);
        MeteredEvents {
            events,
            by_stream,
            scratch,
            meter: CapacityMeter::default(),
        }
    }
}

#[async_trait]
impl EventStore for MeteredEvents {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        self.scratch.load(stream_id).await
    }

    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        let Some(all) = self.by_stream.get(stream_id) else {
            return self.scratch.read_stream(stream_id, after, limit).await;
        };
        let mut read = Vec::new();
        for &i in all {
            if read.len() == limit {
                break;
            }
            if let Some(e) = Some(&self.events[i]).filter(|e| e.version > after) {
                read.push(e.clone());
            }
        }
        let sizes: Vec<usize> = read
            .iter()
            .map(|e| serde_json::to_string(e).map(|s| s.len()).unwrap_or(0))
            .collect();
        self.meter.query(&sizes, true);
        Ok(read)
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.scratch.append(request).await
    }

    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        self.scratch.receipt(key).await
    }

    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.scratch.reservation_owner(key).await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.scratch.save_snapshot(snapshot).await
    }

    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        self.scratch.read_all(after, limit).await
    }
}

/// The bench's workload holds no poison: a parked event fails the run.
struct NoPoison;

#[async_trait]
impl DeadLetterQueue for NoPoison {
    async fn park(&self, letter: DeadLetter) -> Result<(), StoreError> {
        Err(StoreError::Failed(format!(
            "{} parked an event of the workload: {}",
            letter.consumer, letter.reason
        )))
    }
}

/// What one group spent on DynamoDB over the workload, in pages of `page_size`.
#[derive(Debug, Clone, Serialize)]
pub struct PageCostRow {
    /// `projector` or `consent`.
    pub group: String,
    pub page_size: usize,
    /// Customer events in the workload (all of them, routed or not).
    pub events: u64,
    /// Of those, the ones the group's rule routes to it.
    pub routed: u64,
    pub pages: u64,
    /// The read models: checkpoints, documents and page commits.
    pub read_models: Capacity,
    /// The event store: gap reads.
    pub gap_reads: Capacity,
}

impl PageCostRow {
    pub fn write_units_per_event(&self) -> f64 {
        self.read_models.write_units / self.events.max(1) as f64
    }

    pub fn read_units_per_event(&self) -> f64 {
        (self.read_models.read_units + self.gap_reads.read_units) / self.events.max(1) as f64
    }
}

/// How many messages one consumer queue receives per customer event (the
/// rule routes them), and its event source mapping's batch size.
#[derive(Debug, Clone, Serialize)]
pub struct QueueLoad {
    pub target: String,
    pub messages_per_event: f64,
    pub batch_size: usize,
}

/// The batch sizes of the event source mappings (decision 0029): projector,
/// consent and rule-segments (decision 0088) 100 messages, campaign and
/// channel 10.
pub fn batch_size(target: &str) -> usize {
    match target {
        "projector" | "consent" | "rule-segments" => 100,
        _ => 10,
    }
}

/// The page sizes measured: one event a page (a quiet queue), the fill the
/// cost model takes, and a full batch of the projector and consent queues.
pub const PAGE_SIZES: [usize; 3] = [1, 10, 100];

/// Events in one chunk of the page phase (about; whole customers): the
/// workload is taken a chunk of customers at a time, each chunk generated
/// when it is run, in the order its events happened, by fresh groups over
/// fresh documents, their units summed (holding all the events and every
/// group's documents at once was the bench's peak memory).
pub const PAGE_PHASE_CHUNK: usize = 20_000;

/// Two readings of a meter added up.
fn plus(a: Capacity, b: Capacity) -> Capacity {
    Capacity {
        write_units: a.write_units + b.write_units,
        read_units: a.read_units + b.read_units,
        write_requests: a.write_requests + b.write_requests,
        read_requests: a.read_requests + b.read_requests,
        transactions: a.transactions + b.transactions,
    }
}

/// Runs both groups over the workload's first `options.fold_events`
/// events (whole customers) at each of [`PAGE_SIZES`], a chunk of
/// customers at a time ([`PAGE_PHASE_CHUNK`]).
pub async fn page_phase(options: &BenchOptions) -> Result<(Vec<PageCostRow>, Vec<QueueLoad>), BenchError> {
    let workload = Workload::new(options.seed);
    let rules = crate::runtime::bus::rules_from_template(crate::runtime::bus::BUILT_IN_TEMPLATE)
        .map_err(|e| BenchError::Other(e.to_string()))?;
    let runs: Vec<(usize, &str)> = PAGE_SIZES
        .iter()
        .flat_map(|&size| ["projector", "consent"].map(|name| (size, name)))
        .collect();
    let mut rows: Vec<PageCostRow> = runs
        .iter()
        .map(|&(page_size, name)| PageCostRow {
            group: name.to_string(),
            page_size,
            events: 0,
            routed: 0,
            pages: 0,
            read_models: Capacity::default(),
            gap_reads: Capacity::default(),
        })
        .collect();
    let mut messages: HashMap<String, u64> = HashMap::new();
    let mut count = 0u64;
    let dir = tempfile::tempdir().map_err(super::io("temporary directory"))?;
    for chunk in super::fold::CustomerChunks::new(&workload, options.fold_events, PAGE_PHASE_CHUNK) {
        let mut events = chunk?.to_vec();
        // As they happen: customers overlap in time, so a page holds several
        // customers' events as an SQS batch would.
        events.sort_by(|a, b| (a.occurred_at, &a.stream_id, a.version).cmp(&(b.occurred_at, &b.stream_id, b.version)));
        // Positions in `events`, by target: only the groups run here need
        // them, the other queues only their counts (decision 0088).
        let mut routed: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            let json = crm_core::bus::BusEntry::for_event(e.clone()).to_event_json("000000000000", "local");
            let mut targets: Vec<&str> = rules
                .iter()
                .filter(|r| r.pattern.matches(&json))
                .map(|r| r.target.as_str())
                .collect();
            targets.dedup();
            for t in targets {
                *messages.entry(t.to_string()).or_default() += 1;
                if let Some(name) = ["projector", "consent"].into_iter().find(|name| *name == t) {
                    routed.entry(name).or_default().push(i);
                }
            }
        }
        count += events.len() as u64;
        let events: Arc<[EventEnvelope]> = events.into();
        for (row, &(page_size, name)) in rows.iter_mut().zip(&runs) {
            // Its own scratch store per run: the segment evaluator's appends
            // of one run never meet another's.
            let scratch: Arc<dyn EventStore> = Arc::new(crate::adapters::store::SqliteEventStore::open(
                &dir.path().join(format!("pages-{name}-{page_size}.db")),
            )?);
            let store = Arc::new(MeteredEvents::new(events.clone(), scratch));
            let docs = Arc::new(MeteredReadModels::default());
            let dead = Arc::new(NoPoison);
            let group = match name {
                "projector" => ConsumerGroup::projector_at(
                    store.clone(),
                    docs.clone(),
                    dead,
                    Arc::new(crm_core::clock::SystemClock),
                    crm_core::privacy::IdentifierHasher::new(b"bench"),
                ),
                _ => ConsumerGroup::consent(
                    store.clone(),
                    docs.clone(),
                    dead,
                    crm_core::privacy::IdentifierHasher::new(b"bench"),
                ),
            };
            let mine = routed.get(name).map(Vec::as_slice).unwrap_or_default();
            for positions in mine.chunks(page_size) {
                let page: Vec<EventEnvelope> = positions.iter().map(|&i| events[i].clone()).collect();
                group
                    .handle_page(&page, chrono::Utc::now())
                    .await
                    .map_err(|e| BenchError::Other(format!("{name}: {e}")))?;
                row.pages += 1;
            }
            row.routed += mine.len() as u64;
            row.read_models = plus(row.read_models, docs.meter.capacity());
            row.gap_reads = plus(row.gap_reads, store.meter.capacity());
        }
    }
    for row in &mut rows {
        row.events = count;
    }
    let mut queues: Vec<QueueLoad> = messages
        .iter()
        .map(|(target, &n)| QueueLoad {
            target: target.clone(),
            messages_per_event: n as f64 / count.max(1) as f64,
            batch_size: batch_size(target),
        })
        .collect();
    queues.sort_by(|a, b| a.target.cmp(&b.target));
    Ok((rows, queues))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn fresh_compact() -> Arc<dyn ReadModelStore> {
        Arc::new(CompactReadModels::default())
    }

    // The compact read models keep the read-model contract (decision 0088).
    crm_core::read_model_contract!(fresh_compact);

    #[tokio::test]
    async fn pages_share_the_writes_of_their_events() {
        let options = BenchOptions {
            fold_events: 3_000,
            progress: false,
            ..BenchOptions::default()
        };
        let (rows, queues) = page_phase(&options).await.expect("page phase");
        assert!(
            queues
                .iter()
                .any(|q| q.target == "projector" && q.messages_per_event > 0.5),
            "{queues:?}"
        );
        for r in &rows {
            println!(
                "{:>9} page {:>3}: routed {:>6} pages {:>5} WCU/ev {:.2} RCU/ev {:.2} (gap {:.3}) writes {} tx {} reads {}",
                r.group,
                r.page_size,
                r.routed,
                r.pages,
                r.write_units_per_event(),
                r.read_units_per_event(),
                r.gap_reads.read_units / r.events as f64,
                r.read_models.write_requests,
                r.read_models.transactions,
                r.read_models.read_requests
            );
        }
        let at = |group: &str, size: usize| {
            rows.iter()
                .find(|r| r.group == group && r.page_size == size)
                .expect("row")
        };
        for group in ["projector", "consent"] {
            assert!(at(group, 1).read_models.write_units > 0.0, "{group} wrote");
            assert!(at(group, 1).routed > 0);
            assert!(
                at(group, 100).read_models.write_units <= at(group, 1).read_models.write_units,
                "{group}: a page writes no more than its events one by one"
            );
        }
    }
}
