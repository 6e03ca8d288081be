//! In-memory fold throughput: each projection of the projector and consent
//! functions over an in-memory read model, fed the workload's events in
//! order through the real `Consumer` (checkpoints, commits). The counts of
//! reads and writes per event and the sizes of the documents feed the cost model.

use super::workload::Workload;
use super::{per_second, BenchError, BenchOptions};
use async_trait::async_trait;
use crm_core::consumer::{Consumer, Projection};
use crm_core::event::EventEnvelope;
use crm_core::memory::InMemoryReadModels;
use crm_core::ports::{CommitError, EventStore, ReadModelStore, ReadOp, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// An in-memory read model that counts what it is asked.
#[derive(Default)]
pub struct CountingDocs {
    docs: InMemoryReadModels,
    pub checkpoint_reads: AtomicU64,
    pub commits: AtomicU64,
    pub puts: AtomicU64,
    pub deletes: AtomicU64,
    pub put_bytes: AtomicU64,
    pub gets: AtomicU64,
    pub lists: AtomicU64,
}

#[async_trait]
impl ReadModelStore for CountingDocs {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        self.checkpoint_reads.fetch_add(1, Ordering::Relaxed);
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
        let (mut puts, mut deletes, mut bytes) = (0, 0, 0);
        for op in &ops {
            match op {
                ReadOp::Put { body, .. } => {
                    puts += 1;
                    bytes += body.to_string().len() as u64;
                }
                ReadOp::Add { counts, set, .. } => {
                    puts += 1;
                    bytes += (serde_json::to_string(counts).map_or(0, |t| t.len())
                        + serde_json::Value::Object(set.clone()).to_string().len()) as u64;
                }
                ReadOp::Delete { .. } => deletes += 1,
            }
        }
        self.docs.commit(consumer, stream_id, expected, new, ops).await?;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.puts.fetch_add(puts, Ordering::Relaxed);
        self.deletes.fetch_add(deletes, Ordering::Relaxed);
        self.put_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.docs.get(consumer, partition, sort).await
    }

    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.docs.list(consumer, partition, prefix, after, limit).await
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FoldRow {
    /// `function/consumer`.
    pub projection: String,
    pub function: String,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub commits_per_event: f64,
    pub puts_per_event: f64,
    /// Document gets and lists per event (checkpoint reads not counted).
    pub reads_per_event: f64,
    pub bytes_per_put: f64,
}

/// What the workload's events look like: for the cost model.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadStats {
    pub events: u64,
    pub customers: u64,
    /// Mean size of a stored event (its envelope as JSON), in bytes.
    pub mean_event_bytes: f64,
    /// Bus targets (functions) each event is delivered to, on average.
    pub targets_per_event: f64,
    pub by_type: BTreeMap<String, u64>,
}

/// Every projection the projector and consent functions host, in their
/// order (`ConsumerGroup::projector_at` and `ConsumerGroup::consent`; a test
/// keeps the two lists the same).
fn projections(
    events: Arc<dyn crm_core::ports::EventStore>,
    identifiers: crm_core::privacy::IdentifierHasher,
) -> Vec<(&'static str, Arc<dyn Projection>)> {
    use crm_core::customer::metrics::ProfileMetricsProjection;
    use crm_core::customer::views::{CustomerProfileProjection, EmailIndexProjection, TimelineProjection};
    use crm_core::segments::{SegmentEvaluator, SegmentMembersProjection};
    vec![
        ("projector", Arc::new(CustomerProfileProjection)),
        ("projector", Arc::new(TimelineProjection)),
        ("projector", Arc::new(EmailIndexProjection::new(identifiers.clone()))),
        (
            "projector",
            Arc::new(crm_core::customer::name_index::NameIndexProjection::new(
                identifiers.clone(),
            )),
        ),
        ("projector", Arc::new(crm_core::insights::funnel::FunnelProjection)),
        (
            "projector",
            Arc::new(crm_core::insights::attribution::AttributionProjection),
        ),
        (
            "projector",
            Arc::new(crm_core::insights::campaign_stats::CampaignStatsProjection),
        ),
        (
            "projector",
            Arc::new(crm_core::broadcast::stats::BroadcastStatsProjection),
        ),
        ("projector", Arc::new(ProfileMetricsProjection)),
        (
            "projector",
            Arc::new(SegmentEvaluator::new(
                events.clone(),
                Arc::new(crm_core::clock::SystemClock),
            )),
        ),
        ("projector", Arc::new(crm_core::segments::CoPurchaseProjection)),
        (
            "projector",
            Arc::new(crm_core::segments::AffinityDetector::new(
                events,
                Arc::new(crm_core::clock::SystemClock),
            )),
        ),
        ("projector", Arc::new(SegmentMembersProjection)),
        (
            "projector",
            Arc::new(crm_core::customer::streams::CustomerStreamsProjection),
        ),
        ("projector", Arc::new(crm_core::ops::counters::OpsCountersProjection)),
        ("consent", Arc::new(crm_core::consent::ledger::ConsentLedgerProjection)),
        (
            "consent",
            Arc::new(crm_core::consent::proof::ProofLedgerProjection::new(identifiers)),
        ),
    ]
}

/// The workload's first `n` events (whole customers), in order.
pub fn events(workload: &Workload, n: u64) -> Result<(Vec<EventEnvelope>, u64), BenchError> {
    let mut all = CustomerChunks::new(workload, n, usize::MAX);
    let events = all.next_chunk()?;
    Ok((events, all.customers()))
}

/// The in-memory fold of every projection together (issue 22 item 3):
/// each event delivered to every projection of [`projections`], each its
/// own `Consumer` over its own counting in-memory documents; on one core
/// (one task delivering each event to every consumer in turn) and on two
/// (the projections split in two groups of about equal cost, measured by
/// the per-projection rows, each group on its own thread with its own
/// current-thread runtime, both at once). The events go a chunk of
/// customers at a time ([`FOLD_ALL_CHUNK`]), to bound the documents held.
#[derive(Debug, Clone, Serialize)]
pub struct FoldAll {
    pub events: u64,
    pub projections: usize,
    /// Chunks of whole customers the events were folded in, each with
    /// fresh consumers and documents ([`FOLD_ALL_CHUNK`]).
    pub chunks: usize,
    /// The deliveries' time (not the chunks' setup and teardown).
    pub one_core_seconds: f64,
    pub one_core_events_per_second: f64,
    /// The slower group's deliveries' time (both started together).
    pub two_cores_seconds: f64,
    pub two_cores_events_per_second: f64,
    /// The two groups (projection names) and each one's own seconds.
    pub groups: Vec<Vec<String>>,
    pub group_seconds: Vec<f64>,
}

/// Splits items of the given costs in two groups of about equal total:
/// the costliest first, each into the group with the smaller total so far
/// (ties to the first). Indexes into `costs`, in ascending order in each group.
pub fn split_in_two(costs: &[f64]) -> [Vec<usize>; 2] {
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    let mut groups: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
    let mut totals = [0.0f64; 2];
    for i in order {
        let g = usize::from(totals[1] < totals[0]);
        totals[g] += costs[i].max(0.0);
        groups[g].push(i);
    }
    for g in &mut groups {
        g.sort_unstable();
    }
    groups
}

/// A fresh scratch store for the segment evaluator's appends (a pass of
/// its own, so one pass's appends never meet another's).
fn scratch_store() -> Result<(tempfile::TempDir, Arc<dyn EventStore>), BenchError> {
    let dir = tempfile::tempdir().map_err(super::io("temporary directory"))?;
    let scratch: Arc<dyn EventStore> = Arc::new(crate::adapters::store::SqliteEventStore::open(
        &dir.path().join("fold.db"),
    )?);
    Ok((dir, scratch))
}

/// The event store a chunk's fold reads its gaps from: the chunk's events
/// (whole customers, so every gap is in them), appends to `scratch`.
fn chunk_store(chunk: &Arc<[EventEnvelope]>, scratch: &Arc<dyn EventStore>) -> Arc<dyn EventStore> {
    Arc::new(super::pages::MeteredEvents::new(chunk.clone(), scratch.clone()))
}

/// The consumers of projections `which` (indexes into [`projections`]),
/// each over its own counting in-memory documents.
fn consumers(store: &Arc<dyn EventStore>, which: &[usize]) -> Vec<(Consumer, Arc<CountingDocs>)> {
    projections(store.clone(), crm_core::privacy::IdentifierHasher::new(b"bench"))
        .into_iter()
        .enumerate()
        .filter(|(i, _)| which.contains(i))
        .map(|(_, (_, projection))| {
            let docs = Arc::new(CountingDocs::default());
            (Consumer::new(projection, store.clone(), docs.clone()), docs)
        })
        .collect()
}

/// Events in one chunk of a fold (about; whole customers). Every
/// projection's documents held at once for 200 000 events were over 1 GiB,
/// and the events themselves most of the bench's peak memory: a fold takes
/// the workload a chunk of customers at a time, each chunk generated when
/// it is folded and folded by fresh consumers over fresh documents.
pub const FOLD_ALL_CHUNK: usize = 10_000;

/// The workload's first `n` events (whole customers, as [`events`]) cut
/// into chunks of whole customers of at least `size` events each (the last
/// one may be smaller), each generated only when it is asked for.
pub struct CustomerChunks<'a> {
    workload: &'a Workload,
    n: u64,
    size: usize,
    /// Events handed out so far, and the next customer.
    done: u64,
    customer: u64,
}

impl<'a> CustomerChunks<'a> {
    pub fn new(workload: &'a Workload, n: u64, size: usize) -> Self {
        CustomerChunks {
            workload,
            n,
            size: size.max(1),
            done: 0,
            customer: 0,
        }
    }

    /// Customers whose events were handed out so far.
    pub fn customers(&self) -> u64 {
        self.customer
    }

    /// The next chunk's events (none when all `n` were handed out).
    fn next_chunk(&mut self) -> Result<Vec<EventEnvelope>, BenchError> {
        let mut chunk = Vec::new();
        while self.done + (chunk.len() as u64) < self.n && chunk.len() < self.size {
            chunk.extend(
                self.workload
                    .events(self.customer)
                    .map_err(|e| BenchError::Other(e.to_string()))?,
            );
            self.customer += 1;
        }
        self.done += chunk.len() as u64;
        Ok(chunk)
    }
}

impl Iterator for CustomerChunks<'_> {
    type Item = Result<Arc<[EventEnvelope]>, BenchError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_chunk() {
            Ok(chunk) if chunk.is_empty() => None,
            Ok(chunk) => Some(Ok(chunk.into())),
            Err(e) => Some(Err(e)),
        }
    }
}

/// Delivers `chunk` to each consumer of projections `which` in turn, fresh
/// consumers over fresh documents (made and dropped untimed); the seconds
/// the deliveries took.
async fn deliver_chunk(
    chunk: &Arc<[EventEnvelope]>,
    scratch: &Arc<dyn EventStore>,
    which: &[usize],
) -> Result<f64, BenchError> {
    let consumers = consumers(&chunk_store(chunk, scratch), which);
    let started = Instant::now();
    for e in chunk.iter() {
        for (consumer, _) in &consumers {
            consumer
                .deliver(e)
                .await
                .map_err(|e| BenchError::Other(format!("fold {}: {e}", consumer.name())))?;
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// [`FoldAll`] of the workload's first `n` events, the two-core groups
/// balanced on `rows` (the per-projection fold, in [`projections`]' order).
async fn fold_all(workload: &Workload, n: u64, rows: &[FoldRow]) -> Result<FoldAll, BenchError> {
    // The projections that keep read models: the two that decide (the
    // segment evaluator, the affinity detector) are not replayed (decision
    // 0093), so the fold a replay is measured against leaves them out too.
    let all: Vec<usize> = {
        let (_dir, store) = scratch_store()?;
        projections(store, crm_core::privacy::IdentifierHasher::new(b"bench"))
            .iter()
            .enumerate()
            .filter(|(_, (_, projection))| !projection.decides())
            .map(|(i, _)| i)
            .collect()
    };
    let (mut events, mut chunks, mut one_core_seconds) = (0u64, 0usize, 0.0);
    {
        let (_dir, scratch) = scratch_store()?;
        for chunk in CustomerChunks::new(workload, n, FOLD_ALL_CHUNK) {
            let chunk = chunk?;
            events += chunk.len() as u64;
            chunks += 1;
            one_core_seconds += deliver_chunk(&chunk, &scratch, &all).await?;
        }
    }
    let costs: Vec<f64> = all.iter().map(|&i| rows[i].seconds).collect();
    let groups = split_in_two(&costs).map(|group| group.into_iter().map(|g| all[g]).collect::<Vec<usize>>());
    // Each chunk goes to both threads, which start on it together and each
    // time its own deliveries; the next chunk is generated meanwhile.
    let (_dir, scratch) = scratch_store()?;
    let start = Arc::new(std::sync::Barrier::new(groups.len()));
    let (mut feeds, mut threads) = (Vec::new(), Vec::new());
    for group in &groups {
        let (group, scratch, start) = (group.clone(), scratch.clone(), start.clone());
        let (feed, chunks) = std::sync::mpsc::sync_channel::<Arc<[EventEnvelope]>>(1);
        let thread = std::thread::Builder::new()
            .name("bench-fold".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(super::io("a fold thread's runtime"))?;
                let mut seconds = 0.0;
                for chunk in chunks {
                    start.wait();
                    seconds += runtime.block_on(deliver_chunk(&chunk, &scratch, &group))?;
                }
                Ok::<f64, BenchError>(seconds)
            })
            .map_err(super::io("a fold thread"))?;
        feeds.push(feed);
        threads.push(thread);
    }
    let workload = workload.clone();
    let group_seconds = tokio::task::spawn_blocking(move || {
        for chunk in CustomerChunks::new(&workload, n, FOLD_ALL_CHUNK) {
            let chunk = chunk?;
            // A thread that stopped (its error is read at the join) takes no more.
            if feeds.iter().any(|feed| feed.send(chunk.clone()).is_err()) {
                break;
            }
        }
        drop(feeds);
        let mut seconds = Vec::new();
        for thread in threads {
            match thread.join() {
                Ok(result) => seconds.push(result?),
                Err(_) => return Err(BenchError::Other("a fold thread panicked".into())),
            }
        }
        Ok(seconds)
    })
    .await
    .map_err(|e| BenchError::Other(format!("the two-core fold: {e}")))??;
    // Both ran at once: done when the slower one was.
    let two_cores_seconds = group_seconds.iter().copied().fold(0.0, f64::max);
    Ok(FoldAll {
        events,
        projections: all.len(),
        chunks,
        one_core_seconds,
        one_core_events_per_second: per_second(events, one_core_seconds),
        two_cores_seconds,
        two_cores_events_per_second: per_second(events, two_cores_seconds),
        groups: groups
            .iter()
            .map(|g| g.iter().map(|&i| rows[i].projection.clone()).collect())
            .collect(),
        group_seconds,
    })
}

/// What one projection's fold counted, summed over the chunks.
#[derive(Default)]
struct FoldTotals {
    name: String,
    function: String,
    seconds: f64,
    commits: u64,
    puts: u64,
    deletes: u64,
    reads: u64,
    put_bytes: u64,
}

pub async fn fold_phase(options: &BenchOptions) -> Result<(Vec<FoldRow>, WorkloadStats, FoldAll), BenchError> {
    let workload = Workload::new(options.seed);
    let rules = crate::runtime::bus::rules_from_template(crate::runtime::bus::BUILT_IN_TEMPLATE)
        .map_err(|e| BenchError::Other(e.to_string()))?;
    let (mut deliveries, mut bytes, mut n) = (0u64, 0u64, 0u64);
    let mut by_type = BTreeMap::new();
    // The segment evaluator's appends go to a scratch store, shared by the
    // projections' passes (only the evaluator appends).
    let (_dir, scratch) = scratch_store()?;
    let every: Vec<usize> =
        (0..projections(scratch.clone(), crm_core::privacy::IdentifierHasher::new(b"bench")).len()).collect();
    let mut totals: Vec<FoldTotals> = Vec::new();
    let bar = super::progress_bar(options.progress, options.fold_events, "folding in memory");
    let mut chunks = CustomerChunks::new(&workload, options.fold_events, FOLD_ALL_CHUNK);
    for chunk in chunks.by_ref() {
        let chunk = chunk?;
        for e in chunk.iter() {
            let json = crm_core::bus::BusEntry::for_event(e.clone()).to_event_json("000000000000", "local");
            let mut targets: Vec<&str> = rules
                .iter()
                .filter(|r| r.pattern.matches(&json))
                .map(|r| r.target.as_str())
                .collect();
            targets.dedup();
            deliveries += targets.len() as u64;
            bytes += serde_json::to_string(e).map(|s| s.len() as u64).unwrap_or(0);
            *by_type.entry(e.event_type.clone()).or_insert(0) += 1;
        }
        n += chunk.len() as u64;
        let store = chunk_store(&chunk, &scratch);
        for (i, ((consumer, docs), function)) in consumers(&store, &every)
            .into_iter()
            .zip(
                projections(store.clone(), crm_core::privacy::IdentifierHasher::new(b"bench"))
                    .into_iter()
                    .map(|(f, _)| f),
            )
            .enumerate()
        {
            let started = Instant::now();
            for e in chunk.iter() {
                consumer
                    .deliver(e)
                    .await
                    .map_err(|e| BenchError::Other(format!("fold {}: {e}", consumer.name())))?;
            }
            if totals.len() <= i {
                totals.push(FoldTotals {
                    name: consumer.name().to_string(),
                    function: function.to_string(),
                    ..FoldTotals::default()
                });
            }
            let t = &mut totals[i];
            t.seconds += started.elapsed().as_secs_f64();
            let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
            t.commits += load(&docs.commits);
            t.puts += load(&docs.puts);
            t.deletes += load(&docs.deletes);
            t.reads += load(&docs.gets) + load(&docs.lists);
            t.put_bytes += load(&docs.put_bytes);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let stats = WorkloadStats {
        events: n,
        customers: chunks.customers(),
        mean_event_bytes: bytes as f64 / n.max(1) as f64,
        targets_per_event: deliveries as f64 / n.max(1) as f64,
        by_type,
    };
    let per = |count: u64| count as f64 / n.max(1) as f64;
    let rows: Vec<FoldRow> = totals
        .into_iter()
        .map(|t| FoldRow {
            projection: t.name,
            function: t.function,
            events: n,
            seconds: t.seconds,
            events_per_second: per_second(n, t.seconds),
            commits_per_event: per(t.commits),
            puts_per_event: per(t.puts) + per(t.deletes),
            reads_per_event: per(t.reads),
            bytes_per_put: t.put_bytes as f64 / t.puts.max(1) as f64,
        })
        .collect();
    let together = fold_all(&workload, options.fold_events, &rows).await?;
    Ok((rows, stats, together))
}

#[cfg(test)]
mod tests {
    use super::split_in_two;

    #[test]
    fn the_fold_has_every_projection_the_functions_host_in_their_order() {
        use crm_core::assembly::AssembledGroups;
        use crm_core::consumer::ConsumerGroup;
        let store: std::sync::Arc<dyn crm_core::ports::EventStore> =
            std::sync::Arc::new(crm_core::testing::InMemoryEventStore::default());
        let docs = std::sync::Arc::new(crm_core::memory::InMemoryReadModels::default());
        let dead = std::sync::Arc::new(crm_core::testing::InMemoryDeadLetters::default());
        let identifiers = crm_core::privacy::IdentifierHasher::new(b"bench");
        let mut hosted: Vec<(&str, &str)> = Vec::new();
        for group in [
            ConsumerGroup::projector(store.clone(), docs.clone(), dead.clone(), identifiers.clone()),
            ConsumerGroup::consent(store.clone(), docs, dead, identifiers.clone()),
        ] {
            hosted.extend(group.consumer_names().into_iter().map(|c| (group.name, c)));
        }
        let folded: Vec<(&str, &str)> = super::projections(store, identifiers)
            .iter()
            .map(|(function, p)| (*function, p.name()))
            .collect();
        assert_eq!(folded, hosted);
    }

    #[test]
    fn chunks_are_whole_customers_of_at_least_the_size_and_are_the_workloads_events() {
        let workload = crate::bench::workload::Workload::new(5);
        let (events, customers) = super::events(&workload, 2_000).expect("events");
        let mut generated = super::CustomerChunks::new(&workload, 2_000, 300);
        let chunks: Vec<_> = generated.by_ref().collect::<Result<_, _>>().expect("chunks");
        assert_eq!(generated.customers(), customers);
        let joined: Vec<_> = chunks.iter().flat_map(|c| c.iter().cloned()).collect();
        assert_eq!(joined, events, "the same events in the same order");
        for pair in chunks.windows(2) {
            assert!(pair[0].len() >= 300);
            // A customer never spans two chunks.
            assert_ne!(
                pair[0].last().map(|e| &e.customer_id),
                pair[1].first().map(|e| &e.customer_id)
            );
        }
        assert!(chunks.len() > 1 && (chunks.len() as u64) < customers);
        let one = super::CustomerChunks::new(&workload, 2_000, usize::MAX).count();
        assert_eq!(one, 1);
        assert_eq!(super::CustomerChunks::new(&workload, 0, 10).count(), 0);
    }

    #[test]
    fn the_two_groups_are_of_about_equal_cost_and_hold_every_projection_once() {
        let costs = [5.0, 1.0, 4.0, 3.0, 3.0, 0.5];
        let [a, b] = split_in_two(&costs);
        let total = |g: &[usize]| g.iter().map(|&i| costs[i]).sum::<f64>();
        let mut all: Vec<usize> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..costs.len()).collect::<Vec<_>>());
        // Longest first: 5 | 4, 3 -> a, 3 -> b ... totals 8.5 and 8.
        assert!((total(&a) - total(&b)).abs() <= 1.0, "{a:?} {b:?}");
        assert_eq!(split_in_two(&[]), [Vec::<usize>::new(), Vec::new()]);
        assert_eq!(split_in_two(&[2.0]), [vec![0], vec![]]);
        // One projection costlier than all others together stays alone.
        assert_eq!(split_in_two(&[10.0, 1.0, 2.0]), [vec![0], vec![1, 2]]);
    }
}
