//! Rebuilding projections from the event store (decisions 0093, 0094):
//! every stored event is read and decrypted once, in chunks, and handed to
//! every consumer being rebuilt; the consumers are split into lanes, one
//! per core, each lane folding into its own [`ReplayDocs`] on its own task
//! and writing what the chunk changed in one transaction at its end.

use super::{LocalRuntime, RuntimeError};
use crm_core::consumer::{ConsumerGroup, ReplayDocs};
use crm_core::event::EventEnvelope;
use crm_core::ops::progress::ProgressRecorder;
use crm_core::ops::ReplayReport;
use crm_core::ports::{ReadModelStore, StoreError};
use std::collections::HashSet;
use std::sync::Arc;

/// Events per chunk: read and decrypted, then folded by every lane, whose
/// documents are written at its end (one transaction per lane). Memory
/// holds one chunk's events and documents.
pub const REBUILD_CHUNK: usize = 10_000;

/// Events read from the store per call.
const READ_PAGE: usize = 2_000;

/// A lane: some consumers of some groups, over one in-memory store.
struct Lane {
    docs: Arc<ReplayDocs>,
    parts: Vec<ConsumerGroup>,
    stuck: HashSet<(&'static str, String)>,
}

impl Lane {
    /// Folds `events` into the lane's consumers, then writes what changed.
    async fn run(mut self, events: Arc<Vec<EventEnvelope>>) -> (Self, Result<ReplayReport, RuntimeError>) {
        let now = chrono::Utc::now();
        let mut report = ReplayReport::default();
        for part in &self.parts {
            match part.replay(&events, &mut self.stuck, now).await {
                Ok(outcome) => {
                    report.applied += outcome.applied;
                    report.parked += outcome.parked;
                }
                Err(e) => return (self, Err(RuntimeError::Config(e.to_string()))),
            }
        }
        let flushed = self.docs.flush().await.map_err(|e| match e {
            crm_core::ports::CommitError::Store(e) => RuntimeError::Store(e),
            other => RuntimeError::Config(other.to_string()),
        });
        (self, flushed.map(|_| report))
    }
}

/// The consumers `names` of `groups`, dealt into `lanes` lanes in turn.
fn lanes(runtime: &LocalRuntime, groups: &[ConsumerGroup], names: &[&'static str], lanes: usize) -> Vec<Lane> {
    let lanes = lanes.clamp(1, names.len().max(1));
    (0..lanes)
        .map(|lane| {
            let mine: Vec<&str> = names.iter().skip(lane).step_by(lanes).copied().collect();
            let base: Arc<dyn ReadModelStore> = runtime.docs.clone();
            let docs = Arc::new(ReplayDocs::new(base, &mine));
            let parts = groups
                .iter()
                .filter(|g| g.consumer_names().iter().any(|n| mine.contains(n)))
                .map(|g| g.part_over(&mine, docs.clone()))
                .collect();
            Lane {
                docs,
                parts,
                stuck: HashSet::new(),
            }
        })
        .collect()
}

/// How many lanes a rebuild runs: one per core.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl LocalRuntime {
    /// Rebuilds the projections of the bus targets `targets` (`projector`,
    /// `consent`) together: lets the bus settle first (so consumers that
    /// decide have acted on every event), forgets the documents and
    /// checkpoints of the targets' consumers that keep read models (not of
    /// those that decide: decision 0093), then hands them every stored event
    /// once, a chunk at a time ([`REBUILD_CHUNK`]), on one lane per core.
    /// After each chunk the targets' bus cursors move to its last event, so
    /// a rebuild cut short goes on through the bus. Returns the consumers
    /// rebuilt.
    pub async fn rebuild_targets(&self, targets: &[&str]) -> Result<Vec<&'static str>, RuntimeError> {
        let all = self.consumer_groups();
        let mut groups = Vec::new();
        for target in targets {
            let group = all
                .iter()
                .find(|g| g.name == *target)
                .ok_or_else(|| RuntimeError::Config(format!("no bus target named {target}")))?;
            groups.push(group.clone());
        }
        let names: Vec<&'static str> = groups.iter().flat_map(ConsumerGroup::rebuildable_names).collect();
        self.bus.settle().await?;
        for consumer in &names {
            self.docs.clear(consumer).await?;
        }
        let total = u64::try_from(self.stored_events.head_position().await?).unwrap_or(0);
        // Recorded for `GET /operations/replays` (decision 0085), per target.
        let mut recorders = Vec::new();
        for target in targets {
            recorders.push(ProgressRecorder::start(self.docs.as_ref(), target, Some(total), self.clock.now()).await);
        }
        let lanes = lanes(self, &groups, &names, cores());
        let outcome = self
            .fold_store(lanes, &mut recorders, &mut |position| {
                let targets: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
                let bus = self.bus.clone();
                async move {
                    for target in targets {
                        bus.rewind(&target, position).await?;
                    }
                    Ok(())
                }
            })
            .await;
        for recorder in recorders {
            recorder
                .finish(outcome.as_ref().map_err(ToString::to_string), self.clock.now())
                .await;
        }
        outcome?;
        // The documents replaced (plain if stored before decision 0045) leave no copy in the WAL.
        self.docs.truncate_wal().await?;
        Ok(names)
    }

    /// Rebuilds one projection (`customer-360`, `consent-ledger`, ...) the
    /// same way, without disturbing the others of its group: forgets its
    /// documents and checkpoints only, then hands it every stored event
    /// ([`LocalRuntime::rebuild_targets`]' fold, one lane); `progress` is
    /// told the running count. A consumer that decides is refused (decision
    /// 0093).
    pub async fn rebuild_consumer(
        &self,
        name: &str,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<ReplayReport, RuntimeError> {
        let groups = self.consumer_groups();
        let (group, name) = groups
            .iter()
            .find_map(|g| g.consumer(name).map(|c| (g, c.name())))
            .ok_or_else(|| RuntimeError::Config(format!("no projection named {name}")))?;
        if !group.rebuildable_names().contains(&name) {
            return Err(RuntimeError::Config(format!(
                "{name} decides (it appends events) and keeps no read model: a replay would decide again \
                 from old read models (decision 0093); nothing to rebuild"
            )));
        }
        self.docs.clear(name).await?;
        let total = u64::try_from(self.stored_events.head_position().await?).ok();
        let mut recorders = vec![ProgressRecorder::start(self.docs.as_ref(), name, total, self.clock.now()).await];
        let lanes = lanes(self, std::slice::from_ref(group), &[name], 1);
        let outcome = self
            .fold_store(lanes, &mut recorders, &mut |position| {
                progress(u64::try_from(position).unwrap_or(0));
                async { Ok::<(), StoreError>(()) }
            })
            .await;
        let recorder = recorders.pop();
        if let Some(recorder) = recorder {
            recorder
                .finish(outcome.as_ref().map_err(ToString::to_string), self.clock.now())
                .await;
        }
        let report = outcome?;
        self.docs.truncate_wal().await?;
        Ok(report)
    }

    /// Reads every stored event from the start, decrypted, a chunk at a
    /// time, and runs `lanes` over each chunk at once (each on a task of its
    /// own); after each chunk, `done` is told the position of its last
    /// event and the recorders the progress.
    async fn fold_store<F, Fut>(
        &self,
        mut lanes: Vec<Lane>,
        recorders: &mut [ProgressRecorder<'_>],
        done: &mut F,
    ) -> Result<ReplayReport, RuntimeError>
    where
        F: FnMut(i64) -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let mut report = ReplayReport::default();
        let mut position = 0i64;
        loop {
            let mut chunk = Vec::new();
            while chunk.len() < REBUILD_CHUNK {
                let page = self.stored_events.read_after(position, READ_PAGE).await?;
                let Some((last, _)) = page.last() else { break };
                position = *last;
                let mut events: Vec<EventEnvelope> = page.into_iter().map(|(_, event)| event).collect();
                crm_core::privacy::decrypt_envelopes(self.keys.as_ref(), &mut events).await?;
                chunk.extend(events);
            }
            if chunk.is_empty() {
                return Ok(report);
            }
            report.events += chunk.len() as u64;
            let chunk = Arc::new(chunk);
            let running: Vec<_> = lanes
                .drain(..)
                .map(|lane| tokio::spawn(lane.run(chunk.clone())))
                .collect();
            let mut failed = None;
            for run in running {
                let (lane, outcome) = run
                    .await
                    .map_err(|e| RuntimeError::Config(format!("a rebuild lane stopped: {e}")))?;
                lanes.push(lane);
                match outcome {
                    Ok(lane_report) => {
                        report.applied += lane_report.applied;
                        report.parked += lane_report.parked;
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
            done(position).await?;
            let next = position.to_string();
            for recorder in recorders.iter_mut() {
                recorder.page(&report, Some(&next), self.clock.now()).await;
            }
        }
    }
}
