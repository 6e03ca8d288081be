//! Rule segments stored as events, with versions (issue 20 item 1,
//! decision 0082), as templates and campaigns are (decision 0077).
//!
//! A segment defined through the API (`PUT /segments/{id}`) has a stream
//! `segment-definition-<id>` of `SegmentDefined {segment_id, version,
//! definition}` events, one per version. The stream holds nothing else, so
//! a definition's version is the stream version of its `SegmentDefined`
//! (1, 2, 3, ...); the event carries it too, for readers on the bus. The
//! `definition` is the document as the loader returns it, serialized back
//! (the same document whether it came as JSON or YAML, in a fixed key
//! order). The ids with a stream are listed in the `segment-definitions`
//! stream (`SegmentRegistered {segment_id}`, appended before an id's first
//! version, read deduplicated). Definitions are never deleted.
//!
//! [`SegmentDefinitions::put`] validates with [`RuleSegment::from_value`],
//! refuses an id that is a computed segment or a manual segment in use, an
//! `in_segment` naming no known segment, and a cycle through `in_segment`
//! across every stored definition; the same definition put again appends
//! nothing. [`defined_segments`] and [`defined_segment`] read them back.

use super::condition::Condition;
use super::{RuleError, RuleSegment};
use crate::aggregate::{Aggregate, AggregateError, AggregateService, DecideContext, Executed};
use crate::clock::Clock;
use crate::event::{Actor, CommandMeta, DomainEvent, EventEnvelope};
use crate::failure::{Classify, Failure, FailureKind};
use crate::ports::{append_unordered, AppendError, EventStore, StoreError};
use crate::segments::is_computed;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The stream listing every segment id defined through the API.
pub const INDEX_STREAM: &str = "segment-definitions";

/// The stream of the definition of rule segment `segment_id`.
pub fn stream_id(segment_id: &str) -> String {
    format!("segment-definition-{segment_id}")
}

/// The events of a definition's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum SegmentDefinitionEvent {
    /// Version `version` (the stream version of this event) of the rule
    /// segment `segment_id`: its document `{id, name, description?,
    /// match}` (decision 0080), as the loader reads it.
    SegmentDefined {
        segment_id: String,
        version: u64,
        definition: Value,
    },
}

impl DomainEvent for SegmentDefinitionEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// The events of the index stream ([`INDEX_STREAM`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum SegmentIndexEvent {
    /// The rule segment `segment_id` has (or is about to have) a stream of
    /// its own, `segment-definition-<id>`.
    SegmentRegistered { segment_id: String },
}

impl DomainEvent for SegmentIndexEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

/// Every event type of a definition stream and of the index.
pub const SEGMENT_DEFINITION_EVENT_TYPES: &[&str] = &["SegmentDefined", "SegmentRegistered"];

/// A rule segment at its current version.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinedSegment {
    pub segment: RuleSegment,
    pub version: u64,
    /// When this version was stored.
    pub defined_at: DateTime<Utc>,
}

/// A definition's stream as its events fold it: the current version.
#[derive(Debug, Clone, PartialEq)]
pub struct DefinitionState {
    /// The current document, as stored.
    pub definition: Value,
    /// The stream's version, which is the current version.
    pub version: u64,
    pub defined_at: DateTime<Utc>,
}

impl DefinitionState {
    /// The current document, read through the loader.
    pub fn segment(&self, id: &str) -> Result<DefinedSegment, StoreError> {
        let segment = RuleSegment::from_value(&self.definition).map_err(|errors| {
            StoreError::Failed(format!(
                "{}: the stored definition no longer loads: {}",
                stream_id(id),
                errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            ))
        })?;
        Ok(DefinedSegment {
            segment,
            version: self.version,
            defined_at: self.defined_at,
        })
    }
}

/// What is asked of a definition.
#[derive(Debug, Clone, PartialEq)]
pub enum DefinitionCommand {
    /// A new version (nothing if it is the current one).
    Define(RuleSegment),
}

/// Why a definition was not stored; nothing was written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DefinitionError {
    /// The document is refused: every problem with its path (422).
    #[error("invalid segment definition: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<RuleError>),
    /// The id is taken by a segment of another kind (409): a computed
    /// segment, or a manual one in use.
    #[error("{path}: {message}")]
    Clash { path: String, message: String },
    /// The definition would close a cycle through `in_segment` (409):
    /// `path` is its leaf that starts it, `cycle` the segments around it,
    /// the first repeated last (`a`, `b`, `a`).
    #[error("{path}: in_segment closes a cycle: {}", .cycle.join(" -> "))]
    Cycle { path: String, cycle: Vec<String> },
    /// Another writer changed the definition between its read and this
    /// append (the caller retries the request).
    #[error("the segment definition was changed concurrently; retry")]
    ChangedConcurrently,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Failed(Failure),
}

impl Classify for DefinitionError {
    fn kind(&self) -> FailureKind {
        match self {
            DefinitionError::Invalid(_) | DefinitionError::Clash { .. } | DefinitionError::Cycle { .. } => {
                FailureKind::Poison
            }
            DefinitionError::ChangedConcurrently => FailureKind::Conflict,
            DefinitionError::Store(e) => e.kind(),
            DefinitionError::Failed(f) => f.kind(),
        }
    }
}

impl From<AggregateError<DefinitionError>> for DefinitionError {
    fn from(e: AggregateError<DefinitionError>) -> Self {
        match e {
            AggregateError::Rejected(e) => e,
            AggregateError::Store(e) => DefinitionError::Store(e),
            AggregateError::Contended { .. } => DefinitionError::ChangedConcurrently,
            AggregateError::TooLarge(reason) => DefinitionError::Invalid(vec![RuleError {
                path: "match".into(),
                message: reason,
            }]),
            other => DefinitionError::Failed(Failure::from_error("segment definition", other)),
        }
    }
}

/// The definition aggregate: stream `segment-definition-<id>`.
pub struct DefinitionAggregate;

impl Aggregate for DefinitionAggregate {
    type State = DefinitionState;
    type Command = DefinitionCommand;
    type Event = SegmentDefinitionEvent;
    type Error = DefinitionError;
    type Input = ();

    fn stream_id(id: &str) -> String {
        stream_id(id)
    }

    fn customer_id(_: &DefinitionState) -> Option<&str> {
        None
    }

    fn version(state: &DefinitionState) -> u64 {
        state.version
    }

    fn not_found() -> DefinitionError {
        DefinitionError::Invalid(vec![RuleError {
            path: "id".into(),
            message: "no such segment".into(),
        }])
    }

    /// The current definition put again decides nothing.
    fn decide(
        state: Option<&DefinitionState>,
        command: &DefinitionCommand,
        ctx: &DecideContext<'_, ()>,
    ) -> Result<Vec<SegmentDefinitionEvent>, DefinitionError> {
        let DefinitionCommand::Define(segment) = command;
        if segment.id != ctx.id {
            return Err(DefinitionError::Invalid(vec![id_mismatch(ctx.id, &segment.id)]));
        }
        if let Some(state) = state {
            if RuleSegment::from_value(&state.definition).is_ok_and(|current| current == *segment) {
                return Ok(Vec::new());
            }
        }
        let definition = serde_json::to_value(segment)
            .map_err(|e| DefinitionError::Failed(Failure::poison("segment definition", e)))?;
        Ok(vec![SegmentDefinitionEvent::SegmentDefined {
            segment_id: ctx.id.to_string(),
            version: state.map_or(0, |s| s.version) + 1,
            definition,
        }])
    }

    fn evolve(
        _state: Option<DefinitionState>,
        event: &SegmentDefinitionEvent,
        at: DateTime<Utc>,
        version: u64,
    ) -> Option<DefinitionState> {
        let SegmentDefinitionEvent::SegmentDefined { definition, .. } = event;
        Some(DefinitionState {
            definition: definition.clone(),
            version,
            defined_at: at,
        })
    }
}

fn id_mismatch(path_id: &str, body_id: &str) -> RuleError {
    RuleError {
        path: "id".into(),
        message: format!("\"{body_id}\" is not the segment of the path, \"{path_id}\""),
    }
}

/// Every `in_segment` leaf of `condition`, as `(path, segment id)`, in
/// document order (`match.all[1].in_segment`).
pub fn in_segment_refs(condition: &Condition) -> Vec<(String, String)> {
    fn walk(c: &Condition, path: &str, out: &mut Vec<(String, String)>) {
        match c {
            Condition::All { all } => all
                .iter()
                .enumerate()
                .for_each(|(i, c)| walk(c, &format!("{path}.all[{i}]"), out)),
            Condition::Any { any } => any
                .iter()
                .enumerate()
                .for_each(|(i, c)| walk(c, &format!("{path}.any[{i}]"), out)),
            Condition::Not { not } => walk(not, &format!("{path}.not"), out),
            Condition::InSegment { in_segment } => out.push((format!("{path}.in_segment"), in_segment.clone())),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(condition, "match", &mut out);
    out
}

/// The cycle `segment` would close through `in_segment`, given the other
/// definitions (`graph`: id → the ids its `in_segment` leaves name): the
/// path of the leaf that starts it and the ids around it (`a`, `b`, `a`).
pub fn find_cycle(segment: &RuleSegment, graph: &BTreeMap<String, BTreeSet<String>>) -> Option<(String, Vec<String>)> {
    // A path from `from` back to `target` through the graph, depth first;
    // `seen` keeps the walk linear in the number of definitions.
    fn path_to(
        from: &str,
        target: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if from == target {
            return Some(vec![from.to_string()]);
        }
        if !seen.insert(from.to_string()) {
            return None;
        }
        for next in graph.get(from).into_iter().flatten() {
            if let Some(mut rest) = path_to(next, target, graph, seen) {
                rest.insert(0, from.to_string());
                return Some(rest);
            }
        }
        None
    }
    let mut seen = BTreeSet::new();
    for (path, target) in in_segment_refs(&segment.matches) {
        if let Some(rest) = path_to(&target, &segment.id, graph, &mut seen) {
            let mut cycle = vec![segment.id.clone()];
            cycle.extend(rest);
            return Some((path, cycle));
        }
    }
    None
}

/// The state of a definition stream, folded (`None`: no version yet).
async fn load(store: &dyn EventStore, id: &str) -> Result<Option<DefinitionState>, StoreError> {
    let stream = stream_id(id);
    let events = store.read_stream(&stream, 0, usize::MAX).await?;
    let mut state = None;
    for envelope in &events {
        let event = SegmentDefinitionEvent::from_envelope(envelope)
            .map_err(|e| StoreError::Failed(format!("{stream}: {e}")))?;
        state = DefinitionAggregate::evolve(state, &event, envelope.occurred_at, envelope.version);
    }
    Ok(state)
}

/// Every segment id defined through the API (a registration whose first
/// version was never appended included), sorted and deduplicated.
pub async fn defined_ids(store: &dyn EventStore) -> Result<BTreeSet<String>, StoreError> {
    let index = store.read_stream(INDEX_STREAM, 0, usize::MAX).await?;
    index
        .iter()
        .map(|e| {
            SegmentIndexEvent::from_envelope(e)
                .map(|SegmentIndexEvent::SegmentRegistered { segment_id }| segment_id)
                .map_err(|err| StoreError::Failed(format!("{INDEX_STREAM}: {err}")))
        })
        .collect()
}

/// Every rule segment at its current version, in id order. A stored
/// definition the loader no longer accepts is a failure, not skipped.
pub async fn defined_segments(store: &dyn EventStore) -> Result<Vec<DefinedSegment>, StoreError> {
    let mut out = Vec::new();
    for id in defined_ids(store).await? {
        if let Some(state) = load(store, &id).await? {
            out.push(state.segment(&id)?);
        }
    }
    Ok(out)
}

/// The rule segment `id` at its current version (`None`: not defined).
pub async fn defined_segment(store: &dyn EventStore, id: &str) -> Result<Option<DefinedSegment>, StoreError> {
    if !super::load::is_slug(id) {
        return Ok(None);
    }
    match load(store, id).await? {
        Some(state) => state.segment(id).map(Some),
        None => Ok(None),
    }
}

/// Writes rule segment definitions.
pub struct SegmentDefinitions {
    events: Arc<dyn EventStore>,
    definitions: AggregateService<DefinitionAggregate>,
    clock: Arc<dyn Clock>,
}

impl SegmentDefinitions {
    pub fn new(events: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        SegmentDefinitions {
            definitions: AggregateService::new(events.clone(), clock.clone()),
            events,
            clock,
        }
    }

    /// Checks `document` as a definition of `id` without storing it: what
    /// [`Self::put`] refuses, this refuses (a draft to preview, say).
    /// `manual` are the manual segments in use (the caller knows them: the
    /// members index, the campaigns' `update_segment` steps): an
    /// `in_segment` may name one, and a new definition may not take one's id.
    pub async fn check(
        &self,
        id: &str,
        document: &Value,
        manual: &BTreeSet<String>,
    ) -> Result<RuleSegment, DefinitionError> {
        let segment = RuleSegment::from_value(document).map_err(DefinitionError::Invalid)?;
        if segment.id != id {
            return Err(DefinitionError::Invalid(vec![id_mismatch(id, &segment.id)]));
        }
        if is_computed(id) {
            return Err(DefinitionError::Clash {
                path: "id".into(),
                message: format!(
                    "\"{id}\" is a computed segment (RFM, buyers, high value or affinity): choose another id"
                ),
            });
        }
        let others = defined_segments(self.events.as_ref()).await?;
        let exists = others.iter().any(|d| d.segment.id == id);
        if !exists && manual.contains(id) {
            return Err(DefinitionError::Clash {
                path: "id".into(),
                message: format!(
                    "\"{id}\" is a manual segment in use (campaigns add and remove its members): choose another id"
                ),
            });
        }
        let unknown: Vec<RuleError> = in_segment_refs(&segment.matches)
            .into_iter()
            .filter(|(_, target)| {
                !(is_computed(target) || manual.contains(target) || others.iter().any(|d| d.segment.id == *target))
            })
            .map(|(path, target)| RuleError {
                path,
                message: format!("no segment \"{target}\": name a computed, manual or defined segment"),
            })
            .collect();
        if !unknown.is_empty() {
            return Err(DefinitionError::Invalid(unknown));
        }
        let graph: BTreeMap<String, BTreeSet<String>> = others
            .iter()
            .filter(|d| d.segment.id != id)
            .map(|d| {
                let targets = in_segment_refs(&d.segment.matches)
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect();
                (d.segment.id.clone(), targets)
            })
            .collect();
        if let Some((path, cycle)) = find_cycle(&segment, &graph) {
            return Err(DefinitionError::Cycle { path, cycle });
        }
        Ok(segment)
    }

    /// Checks `document` ([`Self::check`]) and stores it as a new version
    /// of `id`, registering a new id first. Returns the segment at its
    /// current version and whether a version was written (the current
    /// definition put again writes nothing).
    pub async fn put(
        &self,
        id: &str,
        document: &Value,
        manual: &BTreeSet<String>,
        actor: Actor,
    ) -> Result<(DefinedSegment, bool), DefinitionError> {
        let segment = self.check(id, document, manual).await?;
        let meta = CommandMeta::new(actor);
        let command = DefinitionCommand::Define(segment);
        let (state, _) = self.definitions.load_stream(id).await?;
        if state.is_none() {
            // First write: the id is registered before its first version
            // (reading deduplicates, and a registration with no version names nothing).
            self.register(id, &meta, self.clock.now()).await?;
        }
        let no_answer = |_: &DefinitionState, _: &[EventEnvelope]| (200, Value::Null);
        let (state, written) = match self
            .definitions
            .try_once(id, state, &command, &(), &meta, None, &no_answer)
            .await?
        {
            Some(Executed::Applied { state, events, .. }) => (state, !events.is_empty()),
            None => return Err(DefinitionError::ChangedConcurrently),
            // Only a command with an idempotency key is answered from a receipt.
            Some(Executed::Replayed { .. }) => {
                return Err(DefinitionError::Store(StoreError::Failed(
                    "answered from a receipt it never asked for".into(),
                )))
            }
        };
        // The state as appended (its `defined_at` is the write's instant);
        // unchanged, it is the stored one.
        Ok((state.segment(id)?, written))
    }

    /// Appends a `SegmentRegistered` of `id` to the index stream.
    async fn register(&self, id: &str, meta: &CommandMeta, now: DateTime<Utc>) -> Result<(), DefinitionError> {
        let register = [SegmentIndexEvent::SegmentRegistered {
            segment_id: id.to_string(),
        }];
        match append_unordered(self.events.as_ref(), INDEX_STREAM, &register, meta, now).await {
            Ok(_) => Ok(()),
            Err(AppendError::Store(e)) => Err(DefinitionError::Store(e)),
            Err(AppendError::Conflict { .. }) => Err(DefinitionError::ChangedConcurrently),
            Err(other) => Err(DefinitionError::Failed(Failure::from_error(INDEX_STREAM, other))),
        }
    }
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
