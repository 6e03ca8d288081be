//! Replay progress (decision 0085): what a running or the last replay or
//! rebuild of each projection (or bus target) reached, kept in the read
//! models (namespace `replay-progress`, one document per name) so that the
//! API's `GET /operations/replays` can show it while the replay runs in
//! another process (`crm-local replay`, `crm-ops replay`).

use crate::ports::{ReadModelStore, ReadOp, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The read models' namespace of the progress documents.
pub const REPLAY_PROGRESS: &str = "replay-progress";

const PARTITION: &str = "replays";

/// Where a replay stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayState {
    Running,
    Done,
    Failed,
}

/// One replay or rebuild, as far as it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayProgress {
    /// The projection (`customer-360`) or bus target (`projector`) replayed.
    pub name: String,
    pub state: ReplayState,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Events handed to it so far.
    pub events: u64,
    /// The events to replay, when known when it started (the store's head).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    pub applied: u64,
    pub parked: u64,
    /// The store position (the cursor of `read_all`) of the last page handed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
    /// Why it stopped, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ReplayProgress {
    /// A replay of `name` starting at `now`.
    pub fn started(name: &str, total: Option<u64>, now: DateTime<Utc>) -> Self {
        ReplayProgress {
            name: name.to_string(),
            state: ReplayState::Running,
            started_at: now,
            updated_at: now,
            events: 0,
            total,
            applied: 0,
            parked: 0,
            position: None,
            error: None,
        }
    }
}

/// Records `progress` (replacing what was recorded for its name). The
/// document moves with a checkpoint of its own (one per name), as every
/// read-model write does; two writers of one name take turns.
pub async fn record(docs: &dyn ReadModelStore, progress: &ReplayProgress) -> Result<(), StoreError> {
    let body = serde_json::to_value(progress).map_err(|e| StoreError::Failed(e.to_string()))?;
    for _ in 0..5 {
        let at = docs.checkpoint(REPLAY_PROGRESS, &progress.name).await?;
        let op = ReadOp::Put {
            partition: PARTITION.into(),
            sort: progress.name.clone(),
            body: body.clone(),
        };
        match docs.commit(REPLAY_PROGRESS, &progress.name, at, at + 1, vec![op]).await {
            Ok(()) => return Ok(()),
            Err(crate::ports::CommitError::Conflict { .. }) => continue,
            Err(crate::ports::CommitError::Store(e)) => return Err(e),
            Err(e) => return Err(StoreError::Failed(e.to_string())),
        }
    }
    Err(StoreError::Unavailable(format!(
        "replay progress of {} kept moving",
        progress.name
    )))
}

/// Every recorded replay, by name.
pub async fn recorded(docs: &dyn ReadModelStore) -> Result<Vec<ReplayProgress>, StoreError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = docs.list(REPLAY_PROGRESS, PARTITION, "", after.as_deref(), 100).await?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        let full = page.len() == 100;
        out.extend(
            page.into_iter()
                .filter_map(|(_, body)| serde_json::from_value(body).ok()),
        );
        if !full {
            break;
        }
    }
    Ok(out)
}

/// Records a replay's progress as it goes; best effort: a failed write is
/// logged and the replay goes on.
pub struct ProgressRecorder<'a> {
    docs: &'a dyn ReadModelStore,
    progress: ReplayProgress,
}

impl<'a> ProgressRecorder<'a> {
    /// Starts recording a replay of `name` (written at once, as running).
    pub async fn start(docs: &'a dyn ReadModelStore, name: &str, total: Option<u64>, now: DateTime<Utc>) -> Self {
        let recorder = ProgressRecorder {
            docs,
            progress: ReplayProgress::started(name, total, now),
        };
        recorder.write().await;
        recorder
    }

    async fn write(&self) {
        if let Err(e) = record(self.docs, &self.progress).await {
            tracing::warn!(name = %self.progress.name, error = %e, "replay progress not recorded");
        }
    }

    /// After a page: the running counts and the store position reached.
    pub async fn page(&mut self, report: &super::ReplayReport, position: Option<&str>, now: DateTime<Utc>) {
        self.progress.events = report.events;
        self.progress.applied = report.applied;
        self.progress.parked = report.parked;
        if let Some(p) = position {
            self.progress.position = Some(p.to_string());
        }
        self.progress.updated_at = now;
        self.write().await;
    }

    /// The end: done, or failed with why.
    pub async fn finish(mut self, outcome: Result<&super::ReplayReport, String>, now: DateTime<Utc>) {
        match outcome {
            Ok(report) => {
                self.progress.state = ReplayState::Done;
                self.progress.events = report.events;
                self.progress.applied = report.applied;
                self.progress.parked = report.parked;
            }
            Err(why) => {
                self.progress.state = ReplayState::Failed;
                self.progress.error = Some(why);
            }
        }
        self.progress.updated_at = now;
        self.write().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::InMemoryReadModels;

    #[tokio::test]
    async fn progress_is_recorded_as_it_goes_and_replaced_per_name() {
        let docs = InMemoryReadModels::default();
        let now = Utc::now();
        let mut r = ProgressRecorder::start(&docs, "customer-360", Some(10), now).await;
        let running = recorded(&docs).await.expect("read");
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].state, ReplayState::Running);
        let report = super::super::ReplayReport {
            events: 4,
            applied: 3,
            parked: 1,
        };
        r.page(&report, Some("4"), now).await;
        assert_eq!(recorded(&docs).await.expect("read")[0].events, 4);
        r.finish(Ok(&report), now).await;
        let done = recorded(&docs).await.expect("read");
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].state, ReplayState::Done);
        assert_eq!(done[0].position.as_deref(), Some("4"));
        assert_eq!((done[0].applied, done[0].parked, done[0].total), (3, 1, Some(10)));
    }
}
