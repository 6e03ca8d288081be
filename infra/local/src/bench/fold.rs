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
use crm_core::ports::{CommitError, ReadModelStore, ReadOp, StoreError};
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

/// Every projection the projector and consent functions host, in their order.
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
        ("projector", Arc::new(ProfileMetricsProjection)),
        (
            "projector",
            Arc::new(SegmentEvaluator::new(events, Arc::new(crm_core::clock::SystemClock))),
        ),
        ("projector", Arc::new(SegmentMembersProjection)),
        (
            "projector",
            Arc::new(crm_core::customer::streams::CustomerStreamsProjection),
        ),
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

pub async fn fold_phase(options: &BenchOptions) -> Result<(Vec<FoldRow>, WorkloadStats), BenchError> {
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
    let bar = super::progress_bar(options.progress, 12 * n, "folding in memory");
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
    Ok((rows, stats))
}
