//! The membership command path: [`reconcile`] (after a customer's commerce
//! or lifecycle event, and daily for every buyer: [`reevaluate_buyers`]) and
//! [`apply_request`] (a journey's `update_segment` step), both through the
//! shared [`AggregateService`] over [`SegmentMembership`]; the
//! [`SegmentEvaluator`] that runs them in the projector; and
//! [`is_member_now`], the strongly consistent membership check.
//!
//! Membership follows the customer's lifecycle (decision 0065): a
//! deactivated or erased customer is in no segment. Their reconcile is a
//! [`MembershipCommand::LeaveAll`] (manual segments included), and a
//! journey's request to join one is ignored; a reactivated customer's
//! reconcile brings the computed segments back.

use super::commands::{Desired, MembershipCommand};
use super::membership::{MembershipError, SegmentMembership};
use super::projections::members;
use super::rules::{evaluate, is_computed, DEACTIVATED, ERASED};
use super::SEGMENT_EVALUATOR;
use crate::aggregate::{AggregateError, AggregateService, Executed};
use crate::clock::{Clock, SystemClock, VirtualClock};
use crate::consumer::{Projection, ProjectionError};
use crate::customer::metrics::profile_metrics;
use crate::customer::{CustomerAggregate, CustomerStatus};
use crate::event::{Actor, CommandMeta, EventEnvelope};
use crate::failure::{Classify, Failure, FailureKind};
use crate::ports::{EventStore, ReadModelStore, ReadOp, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Why a re-evaluation or a request did not finish; nothing half-done is
/// left (each append is atomic, and a retry finds what is still to do).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SegmentError {
    /// Reading the customer's metrics or the members index failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The customer's membership stream could not be changed (its store,
    /// an unreadable event, or other writers that kept winning).
    #[error("segments of {customer_id}: {source}")]
    Membership {
        customer_id: String,
        #[source]
        source: AggregateError<MembershipError>,
    },
}

impl Classify for SegmentError {
    fn kind(&self) -> FailureKind {
        match self {
            SegmentError::Store(e) => e.kind(),
            SegmentError::Membership { source, .. } => source.kind(),
        }
    }
}

/// Who appends membership changes.
fn actor() -> Actor {
    Actor::system("segments")
}

/// The command path over `store`, deciding at `now` (a clock stopped there).
fn memberships(store: &dyn EventStore, now: DateTime<Utc>) -> AggregateService<SegmentMembership, &dyn EventStore> {
    AggregateService::borrowing(store, Arc::new(VirtualClock::starting_at(now)))
}

/// The metadata of a membership command: caused by `cause` when an event led
/// here, else a chain of its own.
fn meta(cause: Option<&EventEnvelope>) -> CommandMeta {
    match cause {
        Some(cause) => CommandMeta::caused_by(cause, actor()),
        None => CommandMeta::new(actor()),
    }
}

/// The events a membership command appended (none when nothing changed).
fn appended(
    customer_id: &str,
    done: Result<Executed<super::Membership>, AggregateError<MembershipError>>,
) -> Result<Vec<EventEnvelope>, SegmentError> {
    match done {
        Ok(Executed::Applied { events, .. }) => Ok(events),
        Ok(Executed::Replayed { .. }) | Err(AggregateError::Rejected(MembershipError::NoMembership)) => Ok(Vec::new()),
        Err(source) => Err(SegmentError::Membership {
            customer_id: customer_id.to_string(),
            source,
        }),
    }
}

/// No answer is kept: membership commands carry no idempotency key.
fn no_answer(_: &super::Membership, _: &[EventEnvelope]) -> (u16, Value) {
    (200, Value::Null)
}

/// Where a customer stands, as their customer stream says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// Active, pending verification, or with no customer stream at all (an
    /// anonymous profile's orders: nothing says it left).
    Active,
    Deactivated,
    /// Erased, or being erased.
    Erased,
}

/// The lifecycle of `customer_id`: one read of their customer stream
/// (strongly consistent; the profile view may lag behind).
async fn lifecycle(store: &dyn EventStore, customer_id: &str) -> Result<Lifecycle, StoreError> {
    let loaded = AggregateService::<CustomerAggregate, _>::borrowing(store, Arc::new(SystemClock))
        .load(customer_id)
        .await;
    match loaded {
        Ok(Some(c)) if c.is_erased() => Ok(Lifecycle::Erased),
        Ok(Some(c)) if c.status == CustomerStatus::Deactivated => Ok(Lifecycle::Deactivated),
        Ok(_) => Ok(Lifecycle::Active),
        Err(AggregateError::Store(e)) => Err(e),
        Err(e) => Err(StoreError::Failed(format!("customer {customer_id} unreadable: {e}"))),
    }
}

/// Brings the customer's `segments-<id>` stream in line with their metrics
/// and lifecycle at `now`; returns the events appended (none when it already
/// was). An active customer's computed segments follow their metrics (read
/// again before each attempt); a deactivated or erased one leaves every
/// segment, manual ones included, with a fixed reason ([`DEACTIVATED`],
/// [`ERASED`]) and nothing else of theirs. `cause` is the event that led
/// here, for causation and correlation.
///
/// After a change it looks again, until a look changes nothing (at most
/// eight looks): the stream's expected version guards the
/// membership, not the metrics or the lifecycle it was decided from, which
/// another writer may have moved on in between; its own look found nothing
/// to change, so without this the stale change would stand (decision 0092,
/// addendum).
pub async fn reconcile(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    customer_id: &str,
    now: DateTime<Utc>,
    cause: Option<&EventEnvelope>,
) -> Result<Vec<EventEnvelope>, SegmentError> {
    let mut appended = Vec::new();
    for _ in 0..RECONCILE_ROUNDS {
        let round = reconcile_once(store, docs, customer_id, now, cause).await?;
        if round.is_empty() {
            return Ok(appended);
        }
        appended.extend(round);
    }
    Err(SegmentError::Membership {
        customer_id: customer_id.to_string(),
        source: AggregateError::Contended {
            attempts: RECONCILE_ROUNDS,
        },
    })
}

/// How many times [`reconcile`] looks at most before it gives up (a
/// retryable conflict: the event comes again).
const RECONCILE_ROUNDS: u32 = 8;

/// One look of [`reconcile`]: the events it appended.
async fn reconcile_once(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    customer_id: &str,
    now: DateTime<Utc>,
    cause: Option<&EventEnvelope>,
) -> Result<Vec<EventEnvelope>, SegmentError> {
    let command = match lifecycle(store, customer_id).await? {
        Lifecycle::Active => MembershipCommand::Reconcile,
        Lifecycle::Deactivated => MembershipCommand::LeaveAll { reason: DEACTIVATED },
        Lifecycle::Erased => MembershipCommand::LeaveAll { reason: ERASED },
    };
    let active = command == MembershipCommand::Reconcile;
    let desired = || async move {
        if active {
            profile_metrics(docs, customer_id, now).await.map(|m| evaluate(&m))
        } else {
            Ok(Desired::new())
        }
    };
    let done = memberships(store, now)
        .execute_reading(customer_id, &command, desired, &meta(cause), &no_answer)
        .await;
    appended(customer_id, done)
}

/// A journey's `update_segment` step (`SegmentMembershipRequested`): adds
/// the customer to a manual segment or removes them, if that changes
/// anything. Computed segments are not writable: such a request is ignored.
pub async fn apply_request(
    store: &dyn EventStore,
    customer_id: &str,
    segment: &str,
    add: bool,
    now: DateTime<Utc>,
    cause: Option<&EventEnvelope>,
) -> Result<Vec<EventEnvelope>, SegmentError> {
    if is_computed(segment) {
        tracing::info!(
            segment,
            customer_id,
            "a computed segment is not writable by campaigns; request ignored"
        );
        return Ok(Vec::new());
    }
    // Nor is a segment defined by rules: its definition decides (decision 0083).
    if super::definition::catalog::defined_segment(store, segment)
        .await?
        .is_some()
    {
        tracing::info!(
            segment,
            customer_id,
            "a segment defined by rules is not writable by campaigns; request ignored"
        );
        return Ok(Vec::new());
    }
    if add && lifecycle(store, customer_id).await? != Lifecycle::Active {
        tracing::info!(
            segment,
            customer_id,
            "the customer is deactivated or erased and joins no segment; request ignored"
        );
        return Ok(Vec::new());
    }
    let reason = match cause {
        Some(c) => format!("requested by {}", c.actor),
        None => "requested".to_string(),
    };
    let command = MembershipCommand::Request {
        segment: segment.to_string(),
        join: add,
        reason,
    };
    let done = memberships(store, now)
        .execute(customer_id, &command, &Desired::new(), &meta(cause), None, &no_answer)
        .await;
    appended(customer_id, done)
}

/// Re-evaluates every buyer at `now` (recency moves with the clock): the
/// daily re-evaluation. Returns how many events it appended.
pub async fn reevaluate_buyers(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    now: DateTime<Utc>,
) -> Result<usize, SegmentError> {
    let mut appended = 0;
    let mut after: Option<String> = None;
    loop {
        let page = members(docs, "buyers", after.as_deref(), 500).await?;
        for m in &page {
            appended += reconcile(store, docs, &m.customer_id, now, None).await?.len();
        }
        if page.len() < 500 {
            return Ok(appended);
        }
        after = page.last().map(|m| m.customer_id.clone());
    }
}

/// Is `customer_id` in `segment`, as their segments stream says? Strongly
/// consistent (the index may lag behind): what the journey engine's
/// `entry.segment` checks, one stream read.
pub async fn is_member_now(store: &dyn EventStore, segment: &str, customer_id: &str) -> Result<bool, StoreError> {
    Ok(segments_now(store, customer_id).await?.contains(segment))
}

/// Every segment `customer_id` is in, as their segments stream says: the
/// same one stream read as [`is_member_now`], for journeys' conditions that
/// name segments (decision 0086).
pub async fn segments_now(store: &dyn EventStore, customer_id: &str) -> Result<BTreeSet<String>, StoreError> {
    let loaded = AggregateService::<SegmentMembership, _>::borrowing(store, Arc::new(SystemClock))
        .load(customer_id)
        .await;
    match loaded {
        Ok(membership) => Ok(membership.map(|m| m.segments.into_keys().collect()).unwrap_or_default()),
        Err(AggregateError::Store(e)) => Err(e),
        Err(e) => Err(StoreError::Failed(e.to_string())),
    }
}

/// Re-evaluates a customer's segments after each of their commerce events
/// and lifecycle events (deactivation, reactivation, erasure), in the
/// projector, after the profile metrics.
pub struct SegmentEvaluator {
    store: Arc<dyn EventStore>,
    clock: Arc<dyn Clock>,
}

impl SegmentEvaluator {
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        SegmentEvaluator { store, clock }
    }
}

#[async_trait]
impl Projection for SegmentEvaluator {
    fn name(&self) -> &'static str {
        SEGMENT_EVALUATOR
    }

    fn handles(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "OrderPlaced"
                | "PaymentSucceeded"
                | "OrderDelivered"
                | "RefundRequested"
                | "OrderAmended"
                | "SegmentMembershipRequested"
                | "CustomerDeactivated"
                | "CustomerReactivated"
                | "CustomerErasureRequested"
                | "CustomerErased"
        )
    }

    /// It appends membership events at once from the profile metrics: it
    /// must read them committed, as of the event, not as a page staged them
    /// (decision 0092, addendum).
    fn reads_committed(&self) -> bool {
        true
    }

    /// It appends membership events and keeps no documents: a rebuild
    /// passes over it (decision 0093).
    fn decides(&self) -> bool {
        true
    }

    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let customer = event.customer_id.as_deref().ok_or_else(|| {
            ProjectionError::Invalid(format!("{} {} has no customer_id", event.event_type, event.event_id))
        })?;
        let done = if event.event_type == "SegmentMembershipRequested" {
            let segment = event.data.get("segment").and_then(Value::as_str);
            let action = event.data.get("action").and_then(Value::as_str);
            let (Some(segment), Some(action @ ("add" | "remove"))) = (segment, action) else {
                return Err(ProjectionError::Invalid(format!(
                    "SegmentMembershipRequested {} needs a segment and an action (add, remove)",
                    event.event_id
                )));
            };
            apply_request(
                self.store.as_ref(),
                customer,
                segment,
                action == "add",
                self.clock.now(),
                Some(event),
            )
            .await
        } else {
            reconcile(self.store.as_ref(), docs, customer, self.clock.now(), Some(event)).await
        };
        match done {
            Ok(_) => Ok(Vec::new()),
            Err(
                SegmentError::Store(e)
                | SegmentError::Membership {
                    source: AggregateError::Store(e),
                    ..
                },
            ) => Err(ProjectionError::Store(e)),
            // An unreadable stream is poison; other writers that kept winning, a conflict.
            Err(e) => Err(ProjectionError::Failed(Failure::from_error(SEGMENT_EVALUATOR, e))),
        }
    }
}
