//! Membership of segments defined by rules (issue 20 item 1, decision
//! 0083): incremental on events, and exact at the instant a window slides.
//!
//! The [`RuleSegmentEvaluator`] is the rule-segments function's handler (a
//! consumer of its own queue: events and `SegmentWindow` timers). For an
//! event, it finds the stored definitions (decision 0082) the event can
//! change: an event type a window counts, a fact a definition reads
//! (profile and consents: the customer's own events; metrics: the events
//! the profile metrics fold; another segment's membership), the customer's
//! lifecycle, or a new version of a definition. It gathers the customer's
//! facts ([`super::definition::facts`]), evaluates, and appends the
//! difference to `segments-<customer>` through the membership command path
//! ([`MembershipCommand::Rules`], `ExpectedVersion::Exactly`), so a
//! redelivered event appends nothing. Each evaluation that says when the
//! answer next changes by time alone sets a timer at that instant, named
//! from (segment, version, customer), replacing the one before; a fired
//! timer re-evaluates that customer only, without trusting the timer, and
//! sets the next one. A deactivated or erased customer is in no rule
//! segment and has no window timer (decision 0065). A new version of a
//! definition re-evaluates every active customer against it.

use super::commands::{Desired, MembershipCommand, RuleAnswer};
use super::definition::catalog::{defined_segment, defined_segments, DefinedSegment};
use super::definition::facts::{gather_with, load_customer};
use super::definition::preview::active_customers;
use super::definition::Dependencies;
use super::membership::{MembershipError, SegmentMembership};
use super::rules::{DEACTIVATED, ERASED};
use super::{stream_id, SEGMENT_EVENT_TYPES};
use crate::aggregate::{AggregateError, AggregateService, Executed};
use crate::clock::{Clock, VirtualClock};
use crate::consumer::{handle_each, park_poison, ConsumeError, EventHandler, GroupOutcome, PageOutcome};
use crate::customer::metrics::METRIC_EVENT_TYPES;
use crate::customer::CustomerStatus;
use crate::event::{Actor, CommandMeta, EventEnvelope};
use crate::failure::{Classify, Failure, FailureKind};
use crate::ports::{DeadLetterQueue, EventStore, ReadModelStore, StoreError};
use crate::scheduler::{timer_name, SchedulerError, TimerHandler, TimerKind, TimerPayload};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::sync::Arc;

/// The consumer's name (its dead letters, its bus target).
pub const RULE_SEGMENTS: &str = "rule-segments";

/// The event of a new version of a definition (decision 0082).
const SEGMENT_DEFINED: &str = "SegmentDefined";

/// The customer events after which a customer is in no segment, or may be again.
const LIFECYCLE: &[&str] = &[
    "CustomerDeactivated",
    "CustomerReactivated",
    "CustomerErasureRequested",
    "CustomerErased",
];

/// The consent events (the consents a definition reads).
const CONSENT_EVENTS: &[&str] = &["ConsentGranted", "ConsentRevoked", "ConsentExpired"];

/// Why a customer's rule segments were not brought up to date; nothing
/// half-done is left (each append is atomic, timers are named), and the
/// event or timer comes again.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleSegmentError {
    /// Reading definitions, facts or the customer failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The membership stream could not be changed.
    #[error("segments of {customer_id}: {source}")]
    Membership {
        customer_id: String,
        #[source]
        source: AggregateError<MembershipError>,
    },
    /// The window timer could not be set or cancelled.
    #[error("window timer: {0}")]
    Scheduler(#[from] SchedulerError),
}

impl Classify for RuleSegmentError {
    fn kind(&self) -> FailureKind {
        match self {
            RuleSegmentError::Store(e) => e.kind(),
            RuleSegmentError::Membership { source, .. } => source.kind(),
            RuleSegmentError::Scheduler(e) if e.is_retryable() => FailureKind::Retryable,
            RuleSegmentError::Scheduler(_) => FailureKind::Poison,
        }
    }
}

/// The name of the window timer of `customer_id` in `segment` at `version`.
pub fn window_timer_name(segment: &str, version: u64, customer_id: &str) -> String {
    timer_name(TimerKind::SegmentWindow, &[segment, &version.to_string(), customer_id])
}

/// The reason recorded when a customer joins or leaves by a definition.
pub fn rule_reason(definition: &DefinedSegment, matches: bool) -> String {
    let (id, version) = (&definition.segment.id, definition.version);
    match matches {
        true => format!("matches rule segment {id} v{version}"),
        false => format!("no longer matches rule segment {id} v{version}"),
    }
}

/// Whether `event` (of the customer) can change the answer of a definition
/// depending on `deps`.
pub fn is_relevant(deps: &Dependencies, event: &EventEnvelope) -> bool {
    let t = event.event_type.as_str();
    if LIFECYCLE.contains(&t) || deps.event_types.contains(t) {
        return true;
    }
    let own_stream = event
        .customer_id
        .as_deref()
        .is_some_and(|c| event.stream_id == crate::customer::stream_id(c));
    if (deps.profile || !deps.consents.is_empty()) && own_stream {
        return true;
    }
    if !deps.consents.is_empty() && CONSENT_EVENTS.contains(&t) {
        return true;
    }
    if !deps.metrics.is_empty() && METRIC_EVENT_TYPES.contains(&t) {
        return true;
    }
    SEGMENT_EVENT_TYPES.contains(&t)
        && event
            .data
            .get("segment")
            .and_then(Value::as_str)
            .is_some_and(|s| deps.segments.contains(s))
}

/// Keeps the membership of rule segments up to date; see the module.
pub struct RuleSegmentEvaluator {
    store: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    scheduler: Arc<dyn crate::scheduler::Scheduler>,
    clock: Arc<dyn Clock>,
    dead_letters: Arc<dyn DeadLetterQueue>,
}

impl RuleSegmentEvaluator {
    pub fn new(
        store: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        scheduler: Arc<dyn crate::scheduler::Scheduler>,
        clock: Arc<dyn Clock>,
        dead_letters: Arc<dyn DeadLetterQueue>,
    ) -> Self {
        RuleSegmentEvaluator {
            store,
            docs,
            scheduler,
            clock,
            dead_letters,
        }
    }

    /// Brings `customer_id`'s membership of `definitions` in line with their
    /// facts at `now`, sets (or cancels) each one's window timer, and
    /// returns the membership events appended. `cause` (the event handled)
    /// is counted even if the customer-streams index does not list its
    /// stream yet, and chains causation.
    pub async fn evaluate_customer(
        &self,
        customer_id: &str,
        definitions: &[&DefinedSegment],
        now: DateTime<Utc>,
        cause: Option<&EventEnvelope>,
    ) -> Result<Vec<EventEnvelope>, RuleSegmentError> {
        if definitions.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.store.as_ref();
        let lifecycle = match load_customer(store, customer_id).await? {
            Some(c) if c.is_erased() => Some(ERASED),
            Some(c) if c.status == CustomerStatus::Deactivated => Some(DEACTIVATED),
            // No customer stream: an anonymous profile, which nothing says left.
            _ => None,
        };
        let mut answers = Vec::new();
        for definition in definitions {
            let timer = window_timer_name(&definition.segment.id, definition.version, customer_id);
            if let Some(reason) = lifecycle {
                self.scheduler.cancel(&timer).await?;
                answers.push(RuleAnswer {
                    segment: definition.segment.id.clone(),
                    matches: false,
                    reason: reason.to_string(),
                });
                continue;
            }
            let deps = definition.segment.dependencies();
            let facts = gather_with(store, self.docs.as_ref(), customer_id, &deps, now, cause).await?;
            let evaluation = definition.segment.evaluate(&facts, now);
            match evaluation.next_change {
                Some(due_at) => {
                    self.scheduler
                        .schedule(TimerPayload {
                            name: timer,
                            kind: TimerKind::SegmentWindow,
                            stream_id: stream_id(customer_id),
                            customer_id: Some(customer_id.to_string()),
                            due_at,
                            set_at_version: definition.version,
                            data: json!({ "segment_id": definition.segment.id, "version": definition.version }),
                        })
                        .await?
                }
                None => self.scheduler.cancel(&timer).await?,
            }
            answers.push(RuleAnswer {
                segment: definition.segment.id.clone(),
                matches: evaluation.matches,
                reason: rule_reason(definition, evaluation.matches),
            });
        }
        let meta = match cause {
            Some(cause) => CommandMeta::caused_by(cause, Actor::system("segments")),
            None => CommandMeta::new(Actor::system("segments")),
        };
        let done = AggregateService::<SegmentMembership, _>::borrowing(store, Arc::new(VirtualClock::starting_at(now)))
            .execute(
                customer_id,
                &MembershipCommand::Rules { answers },
                &Desired::new(),
                &meta,
                None,
                &|_, _| (200, Value::Null),
            )
            .await;
        match done {
            Ok(Executed::Applied { events, .. }) => Ok(events),
            Ok(Executed::Replayed { .. }) | Err(AggregateError::Rejected(MembershipError::NoMembership)) => {
                Ok(Vec::new())
            }
            Err(source) => Err(RuleSegmentError::Membership {
                customer_id: customer_id.to_string(),
                source,
            }),
        }
    }

    /// A new version of `definition`: every active customer evaluated
    /// against it (those who no longer match leave, with its new version as
    /// the reason). Returns the membership events appended.
    pub async fn on_defined(
        &self,
        definition: &DefinedSegment,
        now: DateTime<Utc>,
        cause: Option<&EventEnvelope>,
    ) -> Result<usize, RuleSegmentError> {
        let mut appended = 0;
        for customer_id in active_customers(self.store.as_ref()).await? {
            appended += self
                .evaluate_customer(&customer_id, &[definition], now, cause)
                .await?
                .len();
        }
        Ok(appended)
    }

    /// One stored event, against `definitions`: the membership events appended.
    pub async fn on_event(
        &self,
        definitions: &[DefinedSegment],
        event: &EventEnvelope,
        now: DateTime<Utc>,
    ) -> Result<usize, RuleSegmentError> {
        if event.event_type == SEGMENT_DEFINED {
            let Some(id) = event.data.get("segment_id").and_then(Value::as_str) else {
                return Ok(0);
            };
            // The current version, whichever version the event was (a newer one may have followed).
            return match defined_segment(self.store.as_ref(), id).await? {
                Some(definition) => self.on_defined(&definition, now, Some(event)).await,
                None => Ok(0),
            };
        }
        let Some(customer_id) = event.customer_id.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(0);
        };
        let relevant: Vec<&DefinedSegment> = definitions
            .iter()
            .filter(|d| is_relevant(&d.segment.dependencies(), event))
            .collect();
        Ok(self
            .evaluate_customer(customer_id, &relevant, now, Some(event))
            .await?
            .len())
    }

    /// A fired window timer: its customer evaluated again against the
    /// segment's current definition (the timer is not trusted: facts may
    /// have changed since it was set, or the definition).
    pub async fn on_window(&self, payload: &TimerPayload) -> Result<usize, RuleSegmentError> {
        let segment = payload.data.get("segment_id").and_then(Value::as_str);
        let (Some(segment), Some(customer_id)) = (segment, payload.customer_id.as_deref()) else {
            tracing::warn!(timer = %payload.name, "a segment window timer without its segment or customer; ignored");
            return Ok(0);
        };
        let Some(definition) = defined_segment(self.store.as_ref(), segment).await? else {
            return Ok(0);
        };
        let now = self.clock.now();
        Ok(self
            .evaluate_customer(customer_id, &[&definition], now, None)
            .await?
            .len())
    }

    async fn handle_with(
        &self,
        definitions: &Result<Vec<DefinedSegment>, StoreError>,
        event: &EventEnvelope,
    ) -> Result<GroupOutcome, ConsumeError> {
        let mut outcome = GroupOutcome {
            applied: Vec::new(),
            duplicates: Vec::new(),
            parked: Vec::new(),
        };
        let done = match definitions {
            Ok(definitions) => self.on_event(definitions, event, self.clock.now()).await,
            Err(e) => Err(RuleSegmentError::Store(e.clone())),
        };
        match done {
            Ok(_) => outcome.applied.push(RULE_SEGMENTS),
            Err(e) if e.kind() == FailureKind::Poison => {
                park_poison(
                    self.dead_letters.as_ref(),
                    RULE_SEGMENTS,
                    event,
                    e.to_string(),
                    self.clock.now(),
                )
                .await?;
                outcome.parked.push(RULE_SEGMENTS);
            }
            Err(e) => {
                return Err(ConsumeError::failed(
                    RULE_SEGMENTS,
                    Failure::from_error(RULE_SEGMENTS, e),
                ))
            }
        }
        Ok(outcome)
    }
}

#[async_trait]
impl EventHandler for RuleSegmentEvaluator {
    fn name(&self) -> &'static str {
        RULE_SEGMENTS
    }

    fn consumer_names(&self) -> Vec<&'static str> {
        vec![RULE_SEGMENTS]
    }

    async fn handle(&self, event: &EventEnvelope, _now: DateTime<Utc>) -> Result<GroupOutcome, ConsumeError> {
        let definitions = defined_segments(self.store.as_ref()).await;
        self.handle_with(&definitions, event).await
    }

    /// A page is handled against the definitions read once for it.
    async fn handle_page(&self, events: &[EventEnvelope], now: DateTime<Utc>) -> Result<PageOutcome, ConsumeError> {
        let definitions = defined_segments(self.store.as_ref()).await;
        handle_each(
            &PageOf {
                evaluator: self,
                definitions,
            },
            events,
            now,
        )
        .await
    }
}

/// The evaluator over one page, with the definitions read for it.
struct PageOf<'a> {
    evaluator: &'a RuleSegmentEvaluator,
    definitions: Result<Vec<DefinedSegment>, StoreError>,
}

#[async_trait]
impl EventHandler for PageOf<'_> {
    fn name(&self) -> &'static str {
        RULE_SEGMENTS
    }

    fn consumer_names(&self) -> Vec<&'static str> {
        vec![RULE_SEGMENTS]
    }

    async fn handle(&self, event: &EventEnvelope, _now: DateTime<Utc>) -> Result<GroupOutcome, ConsumeError> {
        self.evaluator.handle_with(&self.definitions, event).await
    }

    async fn handle_page(&self, events: &[EventEnvelope], now: DateTime<Utc>) -> Result<PageOutcome, ConsumeError> {
        handle_each(self, events, now).await
    }
}

#[async_trait]
impl TimerHandler for RuleSegmentEvaluator {
    async fn on_timer(&self, payload: &TimerPayload) -> Result<(), SchedulerError> {
        if payload.kind != TimerKind::SegmentWindow {
            return Ok(());
        }
        match self.on_window(payload).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == FailureKind::Poison => Err(SchedulerError::Refused(e.to_string())),
            Err(e) => Err(SchedulerError::Unavailable(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segments::definition::RuleSegment;
    use crate::segments::membership::{decide, Membership};
    use crate::testing::raw_event;
    use std::collections::BTreeMap;

    fn member_of(segments: &[(&str, &str)]) -> Membership {
        Membership {
            customer_id: "c1".into(),
            segments: segments.iter().map(|(s, r)| (s.to_string(), r.to_string())).collect(),
            version: 3,
        }
    }

    fn answer(segment: &str, matches: bool) -> RuleAnswer {
        RuleAnswer {
            segment: segment.into(),
            matches,
            reason: format!("rule {segment}"),
        }
    }

    #[test]
    fn rule_answers_change_only_what_differs_and_the_fixed_reconcile_keeps_rule_memberships() {
        let state = member_of(&[("buyers", "paid"), ("lamp-lookers", "rule"), ("welcomed", "journey")]);
        let command = MembershipCommand::Rules {
            answers: vec![
                answer("lamp-lookers", true),
                answer("vip", true),
                answer("quiet", false),
            ],
        };
        let events = decide(Some(&state), &command, "c1", &Desired::new());
        assert_eq!(
            events,
            [crate::segments::SegmentEvent::CustomerSegmentAdded {
                segment: "vip".into(),
                customer_id: "c1".into(),
                reason: "rule vip".into(),
            }]
        );
        let leave = MembershipCommand::Rules {
            answers: vec![answer("lamp-lookers", false)],
        };
        assert!(matches!(
            decide(Some(&state), &leave, "c1", &Desired::new()).as_slice(),
            [crate::segments::SegmentEvent::CustomerSegmentRemoved { segment, .. }] if segment == "lamp-lookers"
        ));
        // The fixed segments' reconcile (buyers no longer desired) leaves the rule segment alone.
        let reconciled = decide(Some(&state), &MembershipCommand::Reconcile, "c1", &BTreeMap::new());
        let removed: Vec<String> = reconciled
            .iter()
            .filter_map(|e| match e {
                crate::segments::SegmentEvent::CustomerSegmentRemoved { segment, .. } => Some(segment.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(removed, ["buyers"]);
    }

    #[test]
    fn an_event_is_relevant_to_what_the_definition_reads() {
        let views = RuleSegment::from_yaml(
            "id: a\nname: A\nmatch:\n  all:\n    - performed: ProductViewed\n      within_days: 7\n    - in_segment: vip\n",
        )
        .expect("valid");
        let deps = views.dependencies();
        let mut e = raw_event("activity-c1", "ProductViewed", json!({}));
        e.customer_id = Some("c1".into());
        assert!(is_relevant(&deps, &e));
        e.event_type = "PageViewed".into();
        assert!(!is_relevant(&deps, &e));
        e.event_type = "CustomerDeactivated".into();
        assert!(is_relevant(&deps, &e), "the lifecycle always is");
        let mut added = raw_event("segments-c1", "CustomerSegmentAdded", json!({ "segment": "vip" }));
        added.customer_id = Some("c1".into());
        assert!(is_relevant(&deps, &added));
        added.data = json!({ "segment": "buyers" });
        assert!(!is_relevant(&deps, &added));
        let mut profile = raw_event("customer-c1", "CustomerProfileUpdated", json!({}));
        profile.customer_id = Some("c1".into());
        assert!(!is_relevant(&deps, &profile), "it reads no profile");
        let country =
            RuleSegment::from_yaml("id: b\nname: B\nmatch:\n  profile: address.country\n  op: equals\n  value: DE\n")
                .expect("valid");
        assert!(is_relevant(&country.dependencies(), &profile));
    }

    mod over_a_store {
        use super::super::*;
        use crate::ports::{AppendRequest, ExpectedVersion};
        use crate::segments::definition::catalog::SegmentDefinitions;
        use crate::testing::{
            customer_id, raw_event, register_customers, test_time, InMemoryDeadLetters, InMemoryEventStore,
            InMemoryReadModels, InMemoryScheduler,
        };
        use chrono::Duration;
        use std::collections::BTreeSet;

        struct World {
            store: Arc<InMemoryEventStore>,
            scheduler: Arc<InMemoryScheduler>,
            clock: Arc<VirtualClock>,
            evaluator: RuleSegmentEvaluator,
        }

        async fn world() -> World {
            let store = Arc::new(InMemoryEventStore::default());
            register_customers(store.clone(), 1).await;
            let scheduler = Arc::new(InMemoryScheduler::default());
            let clock = Arc::new(VirtualClock::starting_at(test_time()));
            let evaluator = RuleSegmentEvaluator::new(
                store.clone(),
                Arc::new(InMemoryReadModels::default()),
                scheduler.clone(),
                clock.clone(),
                Arc::new(InMemoryDeadLetters::default()),
            );
            let definition = json!({ "id": "lookers", "name": "Lookers", "match": { "all": [
                { "performed": "ProductViewed", "distinct": "product_id", "at_least": 2, "within_days": 7 },
                { "consent": { "purpose": "marketing", "channel": "email" }, "state": "granted" }
            ]}});
            SegmentDefinitions::new(store.clone(), clock.clone())
                .put("lookers", &definition, &BTreeSet::new(), Actor::system("test"))
                .await
                .expect("defined");
            World {
                store,
                scheduler,
                clock,
                evaluator,
            }
        }

        impl World {
            async fn view(&self, product: &str) -> EventEnvelope {
                let c = customer_id(0);
                let stream = crate::customer::activity::activity_stream_id(&c);
                let mut e = raw_event(&stream, "ProductViewed", json!({ "product_id": product }));
                e.customer_id = Some(c);
                e.occurred_at = self.clock.now();
                let appended = self
                    .store
                    .append(AppendRequest {
                        stream_id: stream,
                        expected: ExpectedVersion::Any,
                        events: vec![e],
                        reservations: Vec::new(),
                        receipt: None,
                    })
                    .await
                    .expect("append");
                appended.events[0].clone()
            }

            async fn handle(&self, event: &EventEnvelope) -> usize {
                let definitions = defined_segments(self.store.as_ref()).await.expect("definitions");
                self.evaluator
                    .on_event(&definitions, event, self.clock.now())
                    .await
                    .expect("evaluated")
            }
        }

        #[tokio::test]
        async fn events_join_once_the_timer_is_set_and_a_stale_or_early_timer_appends_nothing() {
            let w = world().await;
            let first = w.view("lamp").await;
            assert_eq!(w.handle(&first).await, 0);
            w.clock.advance(Duration::hours(1));
            let second = w.view("shade").await;
            assert_eq!(w.handle(&second).await, 1, "two products and marketing email consent");
            assert_eq!(w.handle(&second).await, 0, "redelivered: nothing");
            assert_eq!(w.handle(&first).await, 0, "an older one redelivered: nothing");
            let timers = w.scheduler.pending();
            assert_eq!(timers.len(), 1);
            assert_eq!(timers[0].due_at, test_time() + Duration::days(7));
            assert_eq!(timers[0].name, window_timer_name("lookers", 1, &customer_id(0)));

            // Fired early (or stale): evaluated, nothing appended, the timer set again.
            assert_eq!(w.evaluator.on_window(&timers[0]).await.expect("early"), 0);
            assert_eq!(w.scheduler.pending().len(), 1);
            w.clock.advance(Duration::days(7) - Duration::hours(1));
            assert_eq!(
                w.evaluator.on_window(&timers[0]).await.expect("due"),
                1,
                "lamp left the window"
            );
            assert!(w.scheduler.pending().is_empty(), "nothing more changes by time alone");

            // A journey cannot put the customer back into a rule segment.
            let asked =
                crate::segments::apply_request(w.store.as_ref(), &customer_id(0), "lookers", true, w.clock.now(), None)
                    .await
                    .expect("ignored");
            assert!(asked.is_empty());
        }

        #[tokio::test]
        async fn a_definition_reading_another_segment_follows_its_membership_events() {
            let w = world().await;
            let fans = json!({ "id": "fans", "name": "Fans", "match": { "in_segment": "lookers" } });
            SegmentDefinitions::new(w.store.clone(), w.clock.clone())
                .put("fans", &fans, &BTreeSet::new(), Actor::system("test"))
                .await
                .expect("defined");
            w.view("lamp").await;
            let second = w.view("shade").await;
            assert_eq!(w.handle(&second).await, 1, "lookers only: fans reads no view");
            let segments = stream_id(&customer_id(0));
            let joined = w.store.read_stream(&segments, 0, 10).await.expect("read");
            assert_eq!(w.handle(&joined[0]).await, 1, "lookers joined: fans follows");
            let all = w.store.read_stream(&segments, 0, 10).await.expect("read");
            let ids: Vec<&str> = all.iter().filter_map(|e| e.data["segment"].as_str()).collect();
            assert_eq!(ids, ["lookers", "fans"]);
            assert_eq!(w.handle(&all[1]).await, 0, "fans' own event changes nothing");
        }

        #[tokio::test]
        async fn a_scheduler_that_is_down_is_retried_and_nothing_is_appended() {
            let w = world().await;
            w.view("lamp").await;
            let second = w.view("shade").await;
            w.scheduler
                .fail_with(Some(SchedulerError::Unavailable("throttled".into())));
            let definitions = defined_segments(w.store.as_ref()).await.expect("definitions");
            let failed = w.evaluator.on_event(&definitions, &second, w.clock.now()).await;
            assert!(
                matches!(&failed, Err(e) if e.kind() == FailureKind::Retryable),
                "{failed:?}"
            );
            assert!(w
                .store
                .read_stream(&stream_id(&customer_id(0)), 0, 10)
                .await
                .expect("read")
                .is_empty());
            w.scheduler.fail_with(None);
            assert_eq!(w.handle(&second).await, 1);
        }
    }

    #[test]
    fn window_timer_names_differ_by_segment_version_and_customer() {
        let a = window_timer_name("s", 1, "c1");
        assert_eq!(a, window_timer_name("s", 1, "c1"));
        assert_ne!(a, window_timer_name("s", 2, "c1"));
        assert_ne!(a, window_timer_name("s", 1, "c2"));
        assert!(a.starts_with("crm-sw-"));
    }
}
