//! The broadcast service: scheduling and the controls (the API), and the
//! step the campaign function runs (decision 0084).
//!
//! A step does one bounded piece of work and records it on the broadcast's
//! stream, decided on the state it read: the start, one snapshot page (at
//! most [`AUDIENCE_PAGE`] (90) members read from the segment members index), or
//! one page of message requests. Its event goes on the bus back to the
//! campaign function, which runs the next step, or sets the broadcast's
//! timer when the next step is not due yet (the rate, a later local time).
//! Two chains that meet (a redelivered event, a timer and an event) decide
//! on the same version: one append wins, the other stops.

use super::model::{
    audience_stream, message_id, send_stream, ArmResult, Broadcast, BroadcastCommand, BroadcastDefinition,
    BroadcastEvent, BroadcastRejected, BroadcastState, Phase, Recipient, SendTime, SubjectTest, MAX_RATE_PER_SECOND,
    SUBJECT_EXPERIMENT,
};
use crate::aggregate::{AggregateError, AggregateService, Executed};
use crate::clock::Clock;
use crate::consent::Purpose;
use crate::customer::CustomerService;
use crate::event::{envelopes, Actor, CommandMeta, DomainEvent, EventCodecError, EventEnvelope};
use crate::failure::{Classify, FailureKind};
use crate::insights::campaign_stats::{
    campaign_stats, suppressed_by_reason, wilson, DEFAULT_CONVERSION_WINDOW_DAYS, Z95,
};
use crate::messaging::templates::{TemplateError, TemplateService};
use crate::ports::{AppendError, AppendRequest, EventStore, ExpectedVersion, ReadModelStore, StoreError};
use crate::scheduler::{timer_name, Scheduler, SchedulerError, TimerKind, TimerPayload};
use crate::vocabulary::{Category, MarketingKind, MessageRequest};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

/// Members read per snapshot step, and so recipients per audience page at
/// most, and message requests per append (one append holds at most
/// [`crate::ports::MAX_EVENTS_PER_APPEND`]: a DynamoDB transaction takes 100 items).
pub const AUDIENCE_PAGE: usize = crate::ports::MAX_EVENTS_PER_APPEND;

/// Audience pages one fan-out step looks through for recipients of its
/// due time before it records where it got to.
pub const SCAN_PAGES: u64 = 20;

const ACTOR: &str = "campaign";

/// Why a broadcast command or step did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// A field of the request is refused (422, naming the field).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Rejected(BroadcastRejected),
    #[error("the broadcast kept changing; gave up after {0} attempts")]
    Contended(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] EventCodecError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("reading {what}: {message}")]
    Read { what: &'static str, message: String },
}

impl BroadcastError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        BroadcastError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<AggregateError<BroadcastRejected>> for BroadcastError {
    fn from(e: AggregateError<BroadcastRejected>) -> Self {
        match e {
            AggregateError::Rejected(r) => BroadcastError::Rejected(r),
            AggregateError::Contended { attempts } => BroadcastError::Contended(attempts),
            AggregateError::Store(s) => BroadcastError::Store(s),
            AggregateError::Codec(c) => BroadcastError::Codec(c),
            other => BroadcastError::Store(StoreError::Failed(other.to_string())),
        }
    }
}

impl Classify for BroadcastError {
    fn kind(&self) -> FailureKind {
        match self {
            BroadcastError::Invalid { .. } | BroadcastError::Rejected(_) | BroadcastError::Codec(_) => {
                FailureKind::Poison
            }
            BroadcastError::Contended(_) => FailureKind::Conflict,
            BroadcastError::Store(e) => e.kind(),
            BroadcastError::Scheduler(e) if e.is_retryable() => FailureKind::Retryable,
            BroadcastError::Scheduler(_) => FailureKind::Poison,
            BroadcastError::Read { .. } => FailureKind::Retryable,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub enum StepOutcome {
    /// Nothing to do: unknown, paused, finished, or cancelled.
    Nothing,
    /// Not due yet: the broadcast's timer is set for then.
    Waiting(DateTime<Utc>),
    Started,
    /// A snapshot step (recipients added).
    Snapshotted(u64),
    /// A fan-out step (messages requested).
    Requested(u64),
    /// A subject test's winner chosen (the variant's id).
    WinnerChosen(String),
    /// Another chain recorded a step first: this one stops.
    Superseded,
}

/// A broadcast as `GET /broadcasts/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BroadcastView {
    pub id: String,
    pub status: &'static str,
    pub definition: BroadcastDefinition,
    pub scheduled_at: DateTime<Utc>,
    pub starts_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub progress: Value,
    pub stats: Value,
}

pub struct BroadcastService {
    events: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    clock: Arc<dyn Clock>,
    broadcasts: AggregateService<Broadcast>,
    customers: CustomerService,
    scheduler: Option<Arc<dyn Scheduler>>,
}

impl BroadcastService {
    pub fn new(events: Arc<dyn EventStore>, docs: Arc<dyn ReadModelStore>, clock: Arc<dyn Clock>) -> Self {
        BroadcastService {
            broadcasts: AggregateService::new(events.clone(), clock.clone()),
            customers: CustomerService::new(events.clone(), clock.clone()),
            events,
            docs,
            clock,
            scheduler: None,
        }
    }

    /// Where the broadcast's timer is set (the campaign function's scheduler).
    pub fn with_scheduler(mut self, scheduler: Arc<dyn Scheduler>) -> Self {
        self.scheduler = Some(scheduler);
        self
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The broadcast's state, if it exists.
    pub async fn load(&self, id: &str) -> Result<Option<BroadcastState>, BroadcastError> {
        Ok(self.broadcasts.load(id).await?)
    }

    /// Checks `definition` against the templates and segments: the field
    /// that is wrong, or nothing.
    pub async fn check(&self, definition: &BroadcastDefinition) -> Result<(), BroadcastError> {
        let now = self.now();
        if crate::journey::templates::is_transactional(&definition.template) {
            // A broadcast is marketing: a transactional template has no unsubscribe link.
            return Err(BroadcastError::invalid(
                "template",
                format!(
                    "template {} is transactional; a broadcast is marketing and needs a marketing template",
                    definition.template
                ),
            ));
        }
        let templates = TemplateService::new(self.events.clone(), self.clock.clone());
        match templates.get(&definition.template, None).await {
            Ok(t) if t.parts.channel != definition.channel => {
                return Err(BroadcastError::invalid(
                    "template",
                    format!(
                        "template {} is written for {}, not {}",
                        definition.template, t.parts.channel, definition.channel
                    ),
                ))
            }
            Ok(_) => {}
            Err(TemplateError::NotFound) => {
                return Err(BroadcastError::invalid(
                    "template",
                    format!("no template {}", definition.template),
                ))
            }
            Err(TemplateError::Store(e)) => return Err(e.into()),
            Err(e) => return Err(BroadcastError::invalid("template", e.to_string())),
        }
        if definition.audience.segments.is_empty() {
            return Err(BroadcastError::invalid("audience.segments", "at least one segment"));
        }
        // Fixed segments, those with members, and those defined by rules
        // (which may have no member yet, decision 0082).
        let mut known: BTreeSet<String> = crate::segments::all_segments(self.docs.as_ref())
            .await?
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        known.extend(crate::segments::definition::catalog::defined_ids(self.events.as_ref()).await?);
        for (list, names) in [
            ("audience.segments", &definition.audience.segments),
            ("audience.exclude", &definition.audience.exclude),
        ] {
            if names.len() > 20 {
                return Err(BroadcastError::invalid(list, "at most 20 segments"));
            }
            for (i, name) in names.iter().enumerate() {
                if !known.contains(name) {
                    return Err(BroadcastError::invalid(
                        format!("{list}[{i}]"),
                        format!("no segment {name}"),
                    ));
                }
            }
        }
        if !(1..=MAX_RATE_PER_SECOND).contains(&definition.rate_per_second) {
            return Err(BroadcastError::invalid(
                "rate_per_second",
                format!("1 to {MAX_RATE_PER_SECOND} messages per second"),
            ));
        }
        if let Some(test) = &definition.subject_test {
            check_subject_test(definition, test)?;
        }
        match &definition.send {
            SendTime::Now => {}
            SendTime::At { at } if *at < now - Duration::minutes(1) => {
                return Err(BroadcastError::invalid("send.at", "the time has passed"));
            }
            SendTime::At { .. } => {}
            SendTime::Local { time, .. } if SendTime::local_time(time).is_none() => {
                return Err(BroadcastError::invalid("send.time", "a local time HH:MM"));
            }
            SendTime::Local { date, time } => {
                // Passed even in the zone furthest behind UTC (UTC-12).
                let t = SendTime::local_time(time).unwrap_or_default();
                let last = date.and_time(t).and_utc() + Duration::hours(12);
                if last < now {
                    return Err(BroadcastError::invalid(
                        "send.date",
                        "that local time has passed everywhere",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Schedules broadcast `id` (checked first). The same definition again
    /// is a retry (nothing new); another is refused.
    pub async fn schedule(
        &self,
        id: &str,
        definition: BroadcastDefinition,
        actor: Actor,
    ) -> Result<BroadcastState, BroadcastError> {
        if !super::model::valid_id(id) {
            return Err(BroadcastError::invalid("id", "1 to 64 of a-z, 0-9, _ and -"));
        }
        self.check(&definition).await?;
        self.command(id, BroadcastCommand::Schedule(definition), actor).await
    }

    pub async fn pause(&self, id: &str, actor: Actor) -> Result<BroadcastState, BroadcastError> {
        self.command(id, BroadcastCommand::Pause, actor).await
    }

    pub async fn resume(&self, id: &str, actor: Actor) -> Result<BroadcastState, BroadcastError> {
        self.command(id, BroadcastCommand::Resume, actor).await
    }

    pub async fn cancel(&self, id: &str, actor: Actor) -> Result<BroadcastState, BroadcastError> {
        let state = self.command(id, BroadcastCommand::Cancel, actor).await?;
        // The pending step goes (a step that still runs finds it cancelled).
        if let Some(scheduler) = &self.scheduler {
            scheduler.cancel(&timer_name(TimerKind::BroadcastStep, &[id])).await?;
        }
        Ok(state)
    }

    async fn command(
        &self,
        id: &str,
        command: BroadcastCommand,
        actor: Actor,
    ) -> Result<BroadcastState, BroadcastError> {
        let respond = |_: &BroadcastState, _: &[EventEnvelope]| (200, Value::Null);
        let meta = CommandMeta::new(actor);
        match self
            .broadcasts
            .execute(id, &command, &(), &meta, None, &respond)
            .await?
        {
            Executed::Applied { state, .. } => Ok(*state),
            Executed::Replayed { .. } => self
                .load(id)
                .await?
                .ok_or(BroadcastError::Rejected(BroadcastRejected::NotFound)),
        }
    }

    /// One step of broadcast `id`: whatever is due now, or the timer for
    /// when it is. Safe to run any number of times, concurrently.
    pub async fn step(&self, id: &str) -> Result<StepOutcome, BroadcastError> {
        let Some(state) = self.load(id).await? else {
            return Ok(StepOutcome::Nothing);
        };
        let now = self.now();
        let Some(due) = state.next_step_at() else {
            return Ok(StepOutcome::Nothing);
        };
        if due > now {
            self.set_timer(&state, due).await?;
            return Ok(StepOutcome::Waiting(due));
        }
        match state.phase {
            Phase::Scheduled => Ok(match self.record(&state, BroadcastCommand::Start).await? {
                true => StepOutcome::Started,
                false => StepOutcome::Superseded,
            }),
            Phase::Snapshotting => self.snapshot_page(&state).await,
            Phase::Sending if state.needs_winner() => self.choose_winner(&state).await,
            Phase::Sending => self.send_page(&state).await,
            Phase::Completed | Phase::Cancelled => Ok(StepOutcome::Nothing),
        }
    }

    /// Appends what `command` decides on `state` (the version read): false
    /// when another writer moved the stream first (nothing written).
    async fn record(&self, state: &BroadcastState, command: BroadcastCommand) -> Result<bool, BroadcastError> {
        let respond = |_: &BroadcastState, _: &[EventEnvelope]| (200, Value::Null);
        let meta = CommandMeta::new(Actor::system(ACTOR));
        let done = self
            .broadcasts
            .try_once(&state.id, Some(state.clone()), &command, &(), &meta, None, &respond)
            .await?;
        Ok(done.is_some())
    }

    async fn set_timer(&self, state: &BroadcastState, due: DateTime<Utc>) -> Result<(), BroadcastError> {
        let Some(scheduler) = &self.scheduler else {
            return Ok(());
        };
        let timer = TimerPayload {
            name: timer_name(TimerKind::BroadcastStep, &[&state.id]),
            kind: TimerKind::BroadcastStep,
            stream_id: super::model::stream_id(&state.id),
            customer_id: None,
            due_at: due,
            set_at_version: state.version,
            data: json!({ "broadcast_id": state.id }),
        };
        scheduler.schedule(timer).await?;
        Ok(())
    }

    /// One snapshot step: a page of the current segment's members, minus
    /// those of an earlier segment (taken already) and of the exclusions,
    /// each with the time their message is due, written as audience page
    /// `pages` (once: a re-run finds it and takes it as written).
    async fn snapshot_page(&self, state: &BroadcastState) -> Result<StepOutcome, BroadcastError> {
        let audience = &state.definition.audience;
        let Some(segment) = audience.segments.get(state.segment) else {
            let command = BroadcastCommand::RecordAudience {
                segment: state.segment,
                after: None,
                page_written: false,
                added: 0,
                due: Vec::new(),
                done: true,
            };
            self.record(state, command).await?;
            return Ok(StepOutcome::Snapshotted(0));
        };
        let docs = self.docs.as_ref();
        let members = crate::segments::members(docs, segment, state.after.as_deref(), AUDIENCE_PAGE).await?;
        let start = state.definition.send.start_at(state.scheduled_at);
        let mut recipients = Vec::new();
        'members: for m in &members {
            for other in audience.segments[..state.segment].iter().chain(&audience.exclude) {
                if crate::segments::is_member(docs, other, &m.customer_id).await? {
                    continue 'members;
                }
            }
            let due_at = match &state.definition.send {
                SendTime::Local { .. } => {
                    let zone = self
                        .customers
                        .load(&m.customer_id)
                        .await
                        .map_err(|e| BroadcastError::Read {
                            what: "a recipient's time zone",
                            message: e.to_string(),
                        })?
                        .map(|c| c.preferences.timezone)
                        .unwrap_or_else(|| "UTC".into());
                    state.definition.send.due_for(start, &zone)
                }
                _ => start,
            };
            recipients.push(Recipient {
                customer_id: m.customer_id.clone(),
                due_at,
            });
        }
        if !recipients.is_empty() {
            recipients = self.write_page(state, recipients).await?;
        }
        let full = members.len() == AUDIENCE_PAGE;
        let (segment, after) = match members.last() {
            Some(last) if full => (state.segment, Some(last.customer_id.clone())),
            _ => (state.segment + 1, None),
        };
        let added = recipients.len() as u64;
        let command = BroadcastCommand::RecordAudience {
            segment,
            after,
            page_written: !recipients.is_empty(),
            added,
            due: recipients
                .iter()
                .map(|r| r.due_at)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            done: segment >= audience.segments.len(),
        };
        Ok(match self.record(state, command).await? {
            true => StepOutcome::Snapshotted(added),
            false => StepOutcome::Superseded,
        })
    }

    /// Writes audience page `state.pages` once; the recipients it holds
    /// (a page written by an earlier run of this step is kept as it is).
    async fn write_page(
        &self,
        state: &BroadcastState,
        recipients: Vec<Recipient>,
    ) -> Result<Vec<Recipient>, BroadcastError> {
        let stream = audience_stream(&state.id, state.pages);
        let event = BroadcastEvent::BroadcastAudiencePage {
            broadcast_id: state.id.clone(),
            page: state.pages,
            recipients: recipients.clone(),
        };
        let meta = CommandMeta::new(Actor::system(ACTOR));
        let stored = envelopes(&stream, None, &[event], &meta, self.now())?;
        match self.append_once(&stream, stored).await? {
            true => Ok(recipients),
            false => self.page(&state.id, state.pages).await,
        }
    }

    /// Appends `events` to a stream that must not exist yet: false when it
    /// does (written by an earlier run).
    async fn append_once(&self, stream: &str, mut events: Vec<EventEnvelope>) -> Result<bool, BroadcastError> {
        for (i, e) in events.iter_mut().enumerate() {
            e.version = i as u64 + 1;
        }
        let request = AppendRequest {
            stream_id: stream.to_string(),
            expected: ExpectedVersion::NoStream,
            events,
            reservations: Vec::new(),
            receipt: None,
        };
        match self.events.append(request).await {
            Ok(_) => Ok(true),
            Err(AppendError::Conflict { .. }) => Ok(false),
            Err(AppendError::Store(e)) => Err(e.into()),
            Err(e) => Err(StoreError::Failed(e.to_string()).into()),
        }
    }

    /// The recipients of audience page `page` (none when it was never written).
    pub async fn page(&self, id: &str, page: u64) -> Result<Vec<Recipient>, BroadcastError> {
        let events = self.events.read_stream(&audience_stream(id, page), 0, 10).await?;
        for e in &events {
            if let BroadcastEvent::BroadcastAudiencePage { recipients, .. } = BroadcastEvent::from_envelope(e)? {
                return Ok(recipients);
            }
        }
        Ok(Vec::new())
    }

    /// One fan-out step: the next audience page with recipients due at the
    /// current bucket's time (looking through at most [`SCAN_PAGES`]), one
    /// `MessageRequested` each, written once on its own stream.
    async fn send_page(&self, state: &BroadcastState) -> Result<StepOutcome, BroadcastError> {
        let Some(due) = state.bucket_due() else {
            return Ok(StepOutcome::Nothing);
        };
        // With a subject test, the test share's buckets and then the rest's.
        let round = state.test_round(state.bucket);
        let test = state.definition.subject_test.as_ref();
        let in_round = |r: &Recipient| match (round, test) {
            (Some(test_share), Some(test)) => test.in_test(&state.id, &r.customer_id) == test_share,
            _ => true,
        };
        let mut page = state.page;
        let mut requested = 0;
        for scanned in 1..=SCAN_PAGES {
            let mine: Vec<Recipient> = self
                .page(&state.id, page)
                .await?
                .into_iter()
                .filter(|r| r.due_at == due && in_round(r))
                .collect();
            if !mine.is_empty() {
                requested = self.request(state, page, &mine).await?;
                break;
            }
            if page + 1 >= state.pages || scanned == SCAN_PAGES {
                break;
            }
            page += 1;
        }
        Ok(
            match self
                .record(state, BroadcastCommand::RecordPage { requested, page })
                .await?
            {
                true => StepOutcome::Requested(requested),
                false => StepOutcome::Superseded,
            },
        )
    }

    /// Chooses the subject test's winner from the arms' figures so far.
    async fn choose_winner(&self, state: &BroadcastState) -> Result<StepOutcome, BroadcastError> {
        let Some(test) = &state.definition.subject_test else {
            return Ok(StepOutcome::Nothing);
        };
        let arms = self
            .arm_figures(&state.id, test)
            .await?
            .into_iter()
            .map(|(arm, _)| arm)
            .collect::<Vec<_>>();
        let Some(winner) = test.winner(&arms).map(|v| v.id.clone()) else {
            return Ok(StepOutcome::Nothing);
        };
        Ok(
            match self.record(state, BroadcastCommand::ChooseWinner { arms }).await? {
                true => StepOutcome::WinnerChosen(winner),
                false => StepOutcome::Superseded,
            },
        )
    }

    /// The message requests of `recipients` (of `page`, the state's bucket),
    /// appended once on their stream: how many it holds.
    async fn request(
        &self,
        state: &BroadcastState,
        page: u64,
        recipients: &[Recipient],
    ) -> Result<u64, BroadcastError> {
        let stream = send_stream(&state.id, state.bucket, page);
        let now = self.now();
        let correlation = Uuid::now_v7();
        let mut events = Vec::new();
        for r in recipients {
            let request = request_of(state, &r.customer_id)?;
            let data = serde_json::to_value(&request).map_err(|e| EventCodecError(e.to_string()))?;
            events.push(EventEnvelope {
                event_id: Uuid::now_v7(),
                stream_id: stream.clone(),
                version: 0,
                event_type: "MessageRequested".into(),
                schema_version: 1,
                customer_id: Some(r.customer_id.clone()),
                occurred_at: now,
                recorded_at: now,
                causation_id: None,
                correlation_id: correlation,
                actor: format!("broadcast:{}", state.id),
                data,
            });
        }
        let count = events.len() as u64;
        if self.append_once(&stream, events).await? {
            return Ok(count);
        }
        // Written by an earlier run of this step: nothing new is requested.
        let written = self.events.read_stream(&stream, 0, AUDIENCE_PAGE * 2).await?;
        Ok(written.iter().filter(|e| e.event_type == "MessageRequested").count() as u64)
    }

    /// The broadcast as the API shows it: state, progress and stats.
    pub async fn view(&self, id: &str) -> Result<Option<BroadcastView>, BroadcastError> {
        let Some(s) = self.load(id).await? else {
            return Ok(None);
        };
        let campaign = super::model::stream_id(id);
        let docs = self.docs.as_ref();
        let stats = campaign_stats(docs, &campaign, DEFAULT_CONVERSION_WINDOW_DAYS).await?;
        let by_reason = suppressed_by_reason(docs, &campaign).await?;
        let outcomes = super::stats::outcomes(docs, id).await?;
        let status = s.status();
        let progress = json!({
            "audience_size": s.size,
            "audience_pages": s.pages,
            "requested": s.requested,
            "due_times": s.due.iter().collect::<Vec<_>>(),
            "bucket": s.bucket,
            "page": s.page,
            "next_step_at": s.next_step_at(),
        });
        let mut statistics = json!({
            "campaign_id": campaign,
            "audience_size": s.size,
            "requested": stats.messages.requested,
            "sent": stats.messages.sent,
            "suppressed": stats.messages.suppressed,
            "suppressed_by_reason": by_reason,
            "conversion_window_days": stats.conversion_window_days,
            "conversions": stats.conversions,
            "revenue_minor": stats.revenue_minor,
        });
        for (k, v) in outcomes {
            statistics[k] = json!(v);
        }
        if let Some(test) = &s.definition.subject_test {
            statistics["subject_test"] = self.subject_test_stats(&s, test).await?;
        }
        Ok(Some(BroadcastView {
            id: s.id.clone(),
            status,
            starts_at: s.definition.send.start_at(s.scheduled_at),
            definition: s.definition.clone(),
            scheduled_at: s.scheduled_at,
            started_at: s.started_at,
            finished_at: s.finished_at,
            progress,
            stats: statistics,
        }))
    }
}

impl BroadcastService {
    /// Each variant's figures by the test's metric, with all its counts
    /// (sent, then each outcome), in the variants' order.
    async fn arm_figures(
        &self,
        id: &str,
        test: &SubjectTest,
    ) -> Result<Vec<(ArmResult, Vec<(&'static str, u64)>)>, BroadcastError> {
        let mut arms = Vec::new();
        for v in &test.variants {
            let counts = super::stats::arm_outcomes(self.docs.as_ref(), id, &v.id).await?;
            let of = |name: &str| counts.iter().find(|(n, _)| *n == name).map_or(0, |(_, c)| *c);
            let figures = ArmResult {
                variant: v.id.clone(),
                sent: of("sent"),
                count: of(test.metric.as_str()),
            };
            arms.push((figures, counts));
        }
        Ok(arms)
    }

    /// A subject test's arms as `GET /broadcasts/{id}` shows them: each
    /// variant's sent messages and outcomes, the metric's rate with its
    /// 95 % Wilson interval (decision 0081), the winner once chosen.
    async fn subject_test_stats(&self, s: &BroadcastState, test: &SubjectTest) -> Result<Value, BroadcastError> {
        let mut arms = Vec::new();
        for ((figures, counts), variant) in self.arm_figures(&s.id, test).await?.into_iter().zip(&test.variants) {
            let mut arm = json!({
                "variant": variant.id,
                "subject": variant.subject,
                "rate": figures.rate(),
                "interval": wilson(figures.count.min(figures.sent), figures.sent, Z95),
            });
            for (name, count) in counts {
                arm[name] = json!(count);
            }
            arms.push(arm);
        }
        Ok(json!({
            "experiment": SUBJECT_EXPERIMENT,
            "metric": test.metric,
            "test_percent": test.test_percent,
            "decide_after_minutes": test.decide_after_minutes,
            "decide_at": s.decide_at,
            "winner": s.winner,
            "arms": arms,
        }))
    }
}

/// The message request of broadcast `state` to `customer_id` in the
/// fan-out's current bucket: marketing, promotional, the broadcast's stream
/// id as its campaign id. With a subject test (decision 0087), a test
/// recipient's request carries their variant's subject and names the
/// variant in `data.variant`; the rest's carries the winner's subject and
/// names it in `data.winner` (with the version of `BroadcastWinnerChosen`).
pub fn request_of(state: &BroadcastState, customer_id: &str) -> Result<MessageRequest, BroadcastError> {
    let mut data = json!({ "broadcast_id": state.id });
    let mut subject = None;
    if let Some(test) = &state.definition.subject_test {
        let variant = match state.test_round(state.bucket) {
            Some(true) => {
                let v = test.variant_for(&state.id, customer_id);
                if let Some(v) = v {
                    data["variant"] = json!(v.id);
                }
                v
            }
            _ => {
                let v = state.winner.as_deref().and_then(|w| test.variant(w));
                if let (Some(v), Some(version)) = (v, state.winner_version) {
                    data["winner"] = json!({ "variant": v.id, "version": version });
                }
                v
            }
        };
        let variant = variant.ok_or_else(|| BroadcastError::Read {
            what: "the subject test's variant",
            message: format!("broadcast {} has no variant for this step", state.id),
        })?;
        subject = Some(variant.subject.clone());
    }
    Ok(MessageRequest {
        message_id: message_id(&state.id, customer_id),
        instance_id: state.id.clone(),
        campaign_id: super::model::stream_id(&state.id),
        campaign_version: 1,
        step_id: "broadcast".into(),
        customer_id: customer_id.to_string(),
        channel: state.definition.channel,
        template: state.definition.template.clone(),
        category: Category::Marketing,
        purpose: Some(Purpose::Marketing),
        kind: Some(MarketingKind::Promotional),
        discount: None,
        data,
        candidates: Vec::new(),
        subject,
    })
}

/// The subject test's fields, naming the first that is wrong.
fn check_subject_test(definition: &BroadcastDefinition, test: &SubjectTest) -> Result<(), BroadcastError> {
    if definition.channel == crate::consent::Channel::Sms {
        return Err(BroadcastError::invalid(
            "subject_test",
            "an SMS has no subject: a subject test needs email or push",
        ));
    }
    if matches!(definition.send, SendTime::Local { .. }) {
        return Err(BroadcastError::invalid(
            "subject_test",
            "a subject test needs a send now or at a UTC time: the winner goes to everyone else at once",
        ));
    }
    if !(2..=5).contains(&test.variants.len()) {
        return Err(BroadcastError::invalid("subject_test.variants", "2 to 5 variants"));
    }
    let mut seen = BTreeSet::new();
    for (i, v) in test.variants.iter().enumerate() {
        let slug = v.id.len() <= 32
            && v.id.starts_with(|c: char| c.is_ascii_lowercase())
            && v.id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !slug {
            return Err(BroadcastError::invalid(
                format!("subject_test.variants[{i}].id"),
                "1 to 32 of a-z, 0-9, _ and -, starting with a letter",
            ));
        }
        if !seen.insert(v.id.as_str()) {
            return Err(BroadcastError::invalid(
                format!("subject_test.variants[{i}].id"),
                format!("variant {} is named twice", v.id),
            ));
        }
        let field = format!("subject_test.variants[{i}].subject");
        if v.subject.trim().is_empty() || v.subject.chars().count() > 200 || v.subject.contains(['\r', '\n']) {
            return Err(BroadcastError::invalid(field, "1 to 200 characters on one line"));
        }
        crate::messaging::render::subject_override(&definition.template, &v.subject)
            .map_err(|e| BroadcastError::invalid(field, e.to_string()))?;
    }
    if !(1..=50).contains(&test.test_percent) {
        return Err(BroadcastError::invalid("subject_test.test_percent", "1 to 50 per cent"));
    }
    if !(1..=10_080).contains(&test.decide_after_minutes) {
        return Err(BroadcastError::invalid(
            "subject_test.decide_after_minutes",
            "1 to 10 080 minutes (a week)",
        ));
    }
    Ok(())
}
