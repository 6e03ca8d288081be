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
    let mut out = Vec::new();
    let mut customer = 0;
    while (out.len() as u64) < n {
        out.extend(
            workload
                .events(customer)
                .map_err(|e| BenchError::Other(e.to_string()))?,
        );
        customer += 1;
    }
    Ok((out, customer))
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

/// The event store a fold pass reads its gaps from: the events, and a
/// fresh scratch store for the segment evaluator's appends (a pass of its
/// own, so one pass's appends never meet another's).
fn pass_store(events: &Arc<[EventEnvelope]>) -> Result<(tempfile::TempDir, Arc<dyn EventStore>), BenchError> {
    let dir = tempfile::tempdir().map_err(super::io("temporary directory"))?;
    let scratch: Arc<dyn EventStore> = Arc::new(crate::adapters::store::SqliteEventStore::open(
        &dir.path().join("fold.db"),
    )?);
    Ok((dir, Arc::new(super::pages::MeteredEvents::new(events.clone(), scratch))))
}

/// The consumers of projections `which` (indexes into [`projections`]),
/// each over its own counting in-memory documents.
fn consumers(store: &Arc<dyn EventStore>, which: &[usize]) -> Vec<Consumer> {
    projections(store.clone(), crm_core::privacy::IdentifierHasher::new(b"bench"))
        .into_iter()
        .enumerate()
        .filter(|(i, _)| which.contains(i))
        .map(|(_, (_, projection))| {
            let docs: Arc<dyn ReadModelStore> = Arc::new(CountingDocs::default());
            Consumer::new(projection, store.clone(), docs)
        })
        .collect()
}

/// Events in one chunk of the fold of all projections (about; whole
/// customers). Every projection's documents held at once for 200 000
/// events were over 1 GiB: the fold of all takes the events a chunk of
/// customers at a time, each chunk with fresh consumers and documents.
pub const FOLD_ALL_CHUNK: usize = 10_000;

/// The events cut into chunks of whole customers, each of at least `size`
/// events (the last one may be smaller): a customer's events are
/// contiguous in the workload, so a chunk ends where the customer changes.
pub fn customer_chunks(events: &[EventEnvelope], size: usize) -> Vec<std::ops::Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for i in 1..events.len() {
        if i - start >= size.max(1) && events[i].customer_id != events[i - 1].customer_id {
            chunks.push(start..i);
            start = i;
        }
    }
    if start < events.len() {
        chunks.push(start..events.len());
    }
    chunks
}

/// Delivers every event to each consumer of projections `which` in turn,
/// a chunk at a time with fresh consumers (their documents dropped between
/// chunks, untimed); the seconds the deliveries took.
async fn deliver_all(
    events: &[EventEnvelope],
    chunks: &[std::ops::Range<usize>],
    store: &Arc<dyn EventStore>,
    which: &[usize],
) -> Result<f64, BenchError> {
    let mut seconds = 0.0;
    for chunk in chunks {
        let consumers = consumers(store, which);
        let started = Instant::now();
        for e in &events[chunk.clone()] {
            for consumer in &consumers {
                consumer
                    .deliver(e)
                    .await
                    .map_err(|e| BenchError::Other(format!("fold {}: {e}", consumer.name())))?;
            }
        }
        seconds += started.elapsed().as_secs_f64();
    }
    Ok(seconds)
}

/// [`FoldAll`] of `events`, the two-core groups balanced on `rows` (the
/// per-projection fold, in [`projections`]' order).
async fn fold_all(events: &Arc<[EventEnvelope]>, rows: &[FoldRow]) -> Result<FoldAll, BenchError> {
    let n = events.len() as u64;
    let chunks = Arc::new(customer_chunks(events, FOLD_ALL_CHUNK));
    // The projections that keep read models: the two that decide (the
    // segment evaluator, the affinity detector) are not replayed (decision
    // 0093), so the fold a replay is measured against leaves them out too.
    let all: Vec<usize> = {
        let (_dir, store) = pass_store(events)?;
        projections(store, crm_core::privacy::IdentifierHasher::new(b"bench"))
            .iter()
            .enumerate()
            .filter(|(_, (_, projection))| !projection.decides())
            .map(|(i, _)| i)
            .collect()
    };
    let one_core_seconds = {
        let (_dir, store) = pass_store(events)?;
        deliver_all(events, &chunks, &store, &all).await?
    };
    let costs: Vec<f64> = all.iter().map(|&i| rows[i].seconds).collect();
    let groups = split_in_two(&costs).map(|group| group.into_iter().map(|g| all[g]).collect::<Vec<usize>>());
    let (_dir, store) = pass_store(events)?;
    // Both threads start together, each timing its own deliveries.
    let start = Arc::new(std::sync::Barrier::new(groups.len()));
    let mut threads = Vec::new();
    for group in &groups {
        let (group, events, chunks, store, start) = (
            group.clone(),
            events.clone(),
            chunks.clone(),
            store.clone(),
            start.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("bench-fold".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(super::io("a fold thread's runtime"));
                start.wait();
                runtime.and_then(|r| r.block_on(deliver_all(&events, &chunks, &store, &group)))
            })
            .map_err(super::io("a fold thread"))?;
        threads.push(thread);
    }
    let group_seconds = tokio::task::spawn_blocking(move || {
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
        events: n,
        projections: all.len(),
        chunks: chunks.len(),
        one_core_seconds,
        one_core_events_per_second: per_second(n, one_core_seconds),
        two_cores_seconds,
        two_cores_events_per_second: per_second(n, two_cores_seconds),
        groups: groups
            .iter()
            .map(|g| g.iter().map(|&i| rows[i].projection.clone()).collect())
            .collect(),
        group_seconds,
    })
}

pub async fn fold_phase(options: &BenchOptions) -> Result<(Vec<FoldRow>, WorkloadStats, FoldAll), BenchError> {
    let workload = Workload::new(options.seed);
    let (events, customers) = events(&workload, options.fold_events)?;
    // The workload's events, for the gaps before handled events (unhandled
    // ones move no checkpoint); the segment evaluator's appends go to a
    // scratch store.
    let dir = tempfile::tempdir().map_err(super::io("temporary directory"))?;
    let scratch: Arc<dyn crm_core::ports::EventStore> = Arc::new(crate::adapters::store::SqliteEventStore::open(
        &dir.path().join("fold.db"),
    )?);
    let events: Arc<[EventEnvelope]> = events.into();
    let store: Arc<dyn crm_core::ports::EventStore> =
        Arc::new(super::pages::MeteredEvents::new(events.clone(), scratch));
    let rules = crate::runtime::bus::rules_from_template(crate::runtime::bus::BUILT_IN_TEMPLATE)
        .map_err(|e| BenchError::Other(e.to_string()))?;
    let mut deliveries = 0u64;
    let mut bytes = 0u64;
    let mut by_type = BTreeMap::new();
    for e in events.iter() {
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
    let n = events.len() as u64;
    let stats = WorkloadStats {
        events: n,
        customers,
        mean_event_bytes: bytes as f64 / n.max(1) as f64,
        targets_per_event: deliveries as f64 / n.max(1) as f64,
        by_type,
    };
    let bar = super::progress_bar(options.progress, 17 * n, "folding in memory");
    let mut rows = Vec::new();
    for (function, projection) in projections(store.clone(), crm_core::privacy::IdentifierHasher::new(b"bench")) {
        let docs = Arc::new(CountingDocs::default());
        let consumer = Consumer::new(projection, store.clone(), docs.clone());
        let started = Instant::now();
        for e in events.iter() {
            consumer
                .deliver(e)
                .await
                .map_err(|e| BenchError::Other(format!("fold {}: {e}", consumer.name())))?;
            bar.inc(1);
        }
        let seconds = started.elapsed().as_secs_f64();
        let per = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 / n.max(1) as f64;
        let puts = docs.puts.load(Ordering::Relaxed);
        rows.push(FoldRow {
            projection: consumer.name().to_string(),
            function: function.to_string(),
            events: n,
            seconds,
            events_per_second: per_second(n, seconds),
            commits_per_event: per(&docs.commits),
            puts_per_event: per(&docs.puts) + per(&docs.deletes),
            reads_per_event: per(&docs.gets) + per(&docs.lists),
            bytes_per_put: docs.put_bytes.load(Ordering::Relaxed) as f64 / puts.max(1) as f64,
        });
    }
    bar.finish_and_clear();
    let together = fold_all(&events, &rows).await?;
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
    fn chunks_are_whole_customers_of_at_least_the_size_and_cover_every_event() {
        let workload = crate::bench::workload::Workload::new(5);
        let (events, customers) = super::events(&workload, 2_000).expect("events");
        let chunks = super::customer_chunks(&events, 300);
        assert_eq!(chunks.first().map(|c| c.start), Some(0));
        assert_eq!(chunks.last().map(|c| c.end), Some(events.len()));
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "no gap, no overlap");
            assert!(pair[0].len() >= 300);
            // A customer never spans two chunks.
            assert_ne!(events[pair[0].end - 1].customer_id, events[pair[1].start].customer_id);
        }
        let mut seen: Vec<_> = chunks.iter().map(|c| events[c.start].customer_id.clone()).collect();
        seen.dedup();
        assert_eq!(seen.len(), chunks.len());
        assert!(chunks.len() > 1 && (chunks.len() as u64) < customers);
        assert_eq!(super::customer_chunks(&events, usize::MAX), vec![0..events.len()]);
        assert!(super::customer_chunks(&[], 10).is_empty());
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
