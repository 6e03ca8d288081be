//! Operations (issue 9): replaying a consumer from the event store, the
//! consistency check that folds a sample of streams and compares the result
//! with the stored projections, and the full replay-and-diff check
//! ([`verify`], decision 0035) that folds every event through every
//! projection. The local runtime (`crm-local replay`, `crm-local check`) and
//! the AWS tooling (`crm-ops`) use these.

use crate::consumer::{park_poison, ConsumeError, Consumer, ConsumerGroup, Delivery, Projection, ProjectionError};
use crate::event::EventEnvelope;
use crate::memory::InMemoryReadModels;
use crate::ports::{DeadLetterQueue, EventExpiry, EventStore, ReadModelStore, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub mod counters;
pub mod dead_letters;
pub mod progress;
#[cfg(test)]
mod tests;
mod verify;

pub use verify::{
    verify, verify_with, ConsumerFigures, DocumentMismatch, EventRef, GroupsOver, ListedDocuments, Mismatch, NotFolded,
    RefusedEvent, StoredDocuments, VerifyReport, NOT_FOLDED,
};

/// Events read per page while replaying.
pub const REPLAY_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Consume(#[from] ConsumeError),
    #[error("{0}")]
    Invalid(String),
}

/// What one replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Events handed to the consumer.
    pub events: u64,
    /// Events whose delivery applied something (the others were duplicates).
    pub applied: u64,
    /// Events the consumer could not use, parked in the dead-letter queue.
    pub parked: u64,
}

impl ReplayReport {
    pub fn merge(&mut self, other: &ReplayReport) {
        self.events += other.events;
        self.applied += other.applied;
        self.parked += other.parked;
    }
}

/// Feeds `events` (in store order) to `consumer`; a poison event is parked in
/// `dead_letters` with its reason, a retryable failure stops the replay (run
/// it again: the checkpoints skip what was applied).
pub async fn feed(
    consumer: &Consumer,
    events: &[EventEnvelope],
    dead_letters: &dyn DeadLetterQueue,
    now: DateTime<Utc>,
) -> Result<ReplayReport, OpsError> {
    let mut report = ReplayReport::default();
    for event in events {
        report.events += 1;
        match consumer.deliver(event).await {
            Ok(Delivery::Applied { .. }) => report.applied += 1,
            Ok(Delivery::Duplicate) => {}
            Err(ConsumeError::Poison { consumer: name, source }) => {
                park_poison(dead_letters, name, event, source.to_string(), now).await?;
                report.parked += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(report)
}

/// Replays every stored event, page by page in store order, into `group`
/// (whose documents and checkpoints the caller cleared first; usually one
/// projection, [`ConsumerGroup::only`]), committing each page's writes
/// together ([`ConsumerGroup::handle_page`]); poison events are parked in
/// the group's dead-letter queue. `progress` is told the running count of
/// events after each page.
pub async fn replay(
    group: &ConsumerGroup,
    events: &dyn EventStore,
    now: DateTime<Utc>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<ReplayReport, OpsError> {
    replay_recorded(group, events, now, None, progress).await
}

/// [`replay`], recording its progress in the read models as it goes
/// ([`progress::ProgressRecorder`], decision 0085): running after each
/// page with the store position reached, then done or failed.
pub async fn replay_recorded(
    group: &ConsumerGroup,
    events: &dyn EventStore,
    now: DateTime<Utc>,
    mut recorder: Option<progress::ProgressRecorder<'_>>,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<ReplayReport, OpsError> {
    let mut report = ReplayReport::default();
    let mut cursor: Option<String> = None;
    let outcome = loop {
        let page = match events.read_all(cursor.as_deref(), REPLAY_PAGE).await {
            Ok(page) => page,
            Err(e) => break Err(OpsError::from(e)),
        };
        let outcome = match group.handle_page(&page.events, now).await {
            Ok(outcome) => outcome,
            Err(e) => break Err(OpsError::from(e)),
        };
        report.events += page.events.len() as u64;
        report.applied += outcome.applied;
        report.parked += outcome.parked;
        progress(report.events);
        if let Some(r) = recorder.as_mut() {
            r.page(&report, page.next.as_deref(), Utc::now()).await;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break Ok(report),
        }
    };
    if let Some(r) = recorder {
        r.finish(outcome.as_ref().map_err(ToString::to_string), Utc::now())
            .await;
    }
    outcome
}

/// The projections the consistency check folds: those built from a
/// customer's own stream alone (the customer 360 and the consent ledger).
pub fn checked_projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(crate::customer::views::CustomerProfileProjection),
        Arc::new(crate::consent::ledger::ConsentLedgerProjection),
    ]
}

/// The streams the check folds: customer streams.
pub const CHECKED_STREAM_PREFIX: &str = "customer-";

/// Up to `n` customer streams, spread over the store: every
/// `total / n`-th of them (in id order), so repeated checks see the same sample.
pub async fn sample_streams(store: &dyn EventExpiry, n: usize) -> Result<Vec<String>, StoreError> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.streams(CHECKED_STREAM_PREFIX, after.as_deref(), 1000).await?;
        let Some(last) = page.last().cloned() else { break };
        all.extend(page);
        after = Some(last);
    }
    if n == 0 || all.len() <= n {
        return Ok(all);
    }
    let step = all.len() / n;
    Ok(all.into_iter().step_by(step.max(1)).take(n).collect())
}

/// One document that differs between the fold and the stored read model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub consumer: String,
    pub stream_id: String,
    pub partition: String,
    pub sort: String,
    /// What folding the stream gives (`None`: the document should not exist).
    pub expected: Option<serde_json::Value>,
    /// What is stored (`None`: missing).
    pub stored: Option<serde_json::Value>,
}

/// What a consistency check found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckReport {
    pub streams: usize,
    pub documents: usize,
    pub differences: Vec<Difference>,
    /// (consumer, stream) pairs whose checkpoint is below the stream's newest
    /// event the consumer handles and whose documents are not those of the
    /// whole stream: the consumer has not applied an event yet, or lost it
    /// (the sampled check cannot tell; [`verify`] can). Their differences are
    /// not reported. A pair whose documents already are those of the whole
    /// stream is not behind (its newest events changed nothing, so they
    /// recorded no checkpoint: decision 0031).
    pub behind: Vec<(String, String)>,
}

impl CheckReport {
    pub fn is_consistent(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Folds each of `streams` (read from `events`, as the consumers see them)
/// through each projection into memory and compares every document it
/// produces, and every stored document in the partitions it touches, with
/// `stored`; a (consumer, stream) pair that differs while its checkpoint is
/// below the newest event it handles is reported `behind` instead (see
/// [`CheckReport::behind`]).
pub async fn check(
    events: &dyn EventStore,
    stored: &dyn ReadModelStore,
    projections: &[Arc<dyn Projection>],
    streams: &[String],
) -> Result<CheckReport, OpsError> {
    let mut report = CheckReport {
        streams: streams.len(),
        ..CheckReport::default()
    };
    for stream in streams {
        let history = read_whole_stream(events, stream).await?;
        for projection in projections {
            let consumer = projection.name();
            // The bus routes a consumer only the event types it asks for, so
            // its checkpoint need only reach the newest of those.
            let Some(needed) = history
                .iter()
                .rev()
                .find(|e| projection.handles(&e.event_type))
                .map(|e| e.version)
            else {
                continue;
            };
            let behind = stored.checkpoint(consumer, stream).await? < needed;
            let memory = InMemoryReadModels::default();
            let mut checkpoint = 0;
            for event in &history {
                let ops = if projection.handles(&event.event_type) {
                    projection.project(event, &memory).await.map_err(|e| match e {
                        ProjectionError::Store(e) => OpsError::Store(e),
                        other => OpsError::Invalid(format!("{consumer} cannot fold {}: {other}", event.event_id)),
                    })?
                } else {
                    Vec::new()
                };
                memory
                    .commit(consumer, stream, checkpoint, event.version, ops)
                    .await
                    .map_err(|e| OpsError::Invalid(e.to_string()))?;
                checkpoint = event.version;
            }
            let folded: BTreeMap<(String, String), serde_json::Value> = memory
                .dump()
                .into_iter()
                .map(|((_, partition, sort), body)| ((partition, sort), body))
                .collect();
            let mut partitions: Vec<&String> = folded.keys().map(|(p, _)| p).collect();
            partitions.dedup();
            // Every stored document of those partitions, to find extra ones.
            let mut seen = BTreeMap::new();
            for partition in partitions {
                let mut after: Option<String> = None;
                loop {
                    let page = stored.list(consumer, partition, "", after.as_deref(), 500).await?;
                    let Some((last, _)) = page.last().cloned() else { break };
                    for (sort, body) in page {
                        seen.insert((partition.clone(), sort), body);
                    }
                    after = Some(last);
                }
            }
            let mut differences = Vec::new();
            for ((partition, sort), expected) in &folded {
                let found = match seen.remove(&(partition.clone(), sort.clone())) {
                    Some(body) => Some(body),
                    None => stored.get(consumer, partition, sort).await?,
                };
                if found.as_ref() != Some(expected) {
                    differences.push(Difference {
                        consumer: consumer.to_string(),
                        stream_id: stream.clone(),
                        partition: partition.clone(),
                        sort: sort.clone(),
                        expected: Some(expected.clone()),
                        stored: found,
                    });
                }
            }
            for ((partition, sort), body) in seen {
                differences.push(Difference {
                    consumer: consumer.to_string(),
                    stream_id: stream.clone(),
                    partition,
                    sort,
                    expected: None,
                    stored: Some(body),
                });
            }
            if behind && !differences.is_empty() {
                report.behind.push((consumer.to_string(), stream.clone()));
            } else {
                report.documents += folded.len();
                report.differences.extend(differences);
            }
        }
    }
    Ok(report)
}

async fn read_whole_stream(events: &dyn EventStore, stream: &str) -> Result<Vec<EventEnvelope>, StoreError> {
    let mut all: Vec<EventEnvelope> = Vec::new();
    loop {
        let after = all.last().map(|e| e.version).unwrap_or(0);
        let page = events.read_stream(stream, after, 1000).await?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}
