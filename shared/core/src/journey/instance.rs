//! A journey instance: one customer's way through one campaign version, as a
//! pure state machine over its own stream (`journey-<id>`). `decide` turns an
//! input (start, a fired timer, a customer's event, deactivation, pause) into
//! events; `evolve` folds them. Exits act the moment their event arrives, even
//! in the middle of a wait: the pending timer is then cancelled
//! ([`timer_to_cancel`]).

use super::definition::{Campaign, Category, Reentry, Step};
use crate::consent::{Channel, Purpose};
use crate::event::DomainEvent;
use crate::scheduler::{timer_name, TimerKind, TimerPayload};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// The most steps one decision may run through without waiting: a guard
/// against definitions that loop (the loader refuses wait-free cycles too).
pub const MAX_STEPS_PER_DECISION: usize = 100;

/// The stream of journey instance `id`.
pub use crate::vocabulary::streams::journey_stream_id as stream_id;

fn digest(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for p in parts {
        hash.update(p.as_bytes());
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

/// The instance a trigger starts, by the campaign's re-entry policy. The same
/// trigger (or, for `once`, the same customer) always gives the same id, so a
/// duplicated or reordered trigger can never start a second instance: the
/// second start finds the stream already there.
pub fn instance_id(campaign: &Campaign, customer_id: &str, dedupe_value: &str, event_time: DateTime<Utc>) -> String {
    let id = match campaign.entry.reentry {
        Reentry::Once => digest(&[&campaign.id, customer_id]),
        Reentry::EveryTime => digest(&[&campaign.id, customer_id, dedupe_value]),
        Reentry::OncePerWindow { window } => {
            let bucket = event_time.timestamp().div_euclid(window.as_seconds().max(1));
            digest(&[&campaign.id, customer_id, &bucket.to_string()])
        }
    };
    id[..32].to_string()
}

/// A message's id: the same instance, step and visit always give the same id,
/// so a redelivered decision can never request a second message.
pub fn message_id(instance_id: &str, step_id: &str, visit: u32) -> String {
    format!("msg-{}", &digest(&[instance_id, step_id, &visit.to_string()])[..32])
}

/// The next moment the local wall clock in `tz` shows `time`, strictly after
/// `now`. On the day clocks spring forward past `time`, the first instant
/// after the gap is used; on the day they fall back, the first of the two.
pub fn next_local_time(now: DateTime<Utc>, tz: chrono_tz::Tz, time: chrono::NaiveTime) -> DateTime<Utc> {
    let mut date = now.with_timezone(&tz).date_naive();
    for _ in 0..4 {
        let naive = date.and_time(time);
        let candidate = match tz.from_local_datetime(&naive) {
            chrono::LocalResult::Single(t) => Some(t),
            chrono::LocalResult::Ambiguous(first, _) => Some(first),
            // In a spring-forward gap: an hour later is past it.
            chrono::LocalResult::None => tz.from_local_datetime(&(naive + chrono::Duration::hours(1))).earliest(),
        };
        if let Some(c) = candidate.map(|c| c.with_timezone(&Utc)).filter(|c| *c > now) {
            return c;
        }
        date = date.succ_opt().unwrap_or(date);
    }
    now + chrono::Duration::days(1)
}

/// Why an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ExitReason {
    Goal,
    ExitEvent,
    Completed,
    ExitStep,
    CustomerDeactivated,
    CampaignPaused,
    /// The customer was erased (GDPR Art. 17).
    CustomerErased,
}

/// What triggered an instance: enough to explain it later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TriggerRef {
    pub event_id: Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub version: u64,
    pub occurred_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum JourneyEvent {
    JourneyStarted {
        instance_id: String,
        campaign_id: String,
        campaign_version: u64,
        customer_id: String,
        dedupe_key: String,
        trigger: TriggerRef,
        /// The triggering bus event: what conditions and messages read.
        trigger_event: Value,
    },
    JourneyStepEntered {
        step_id: String,
        step_type: String,
        visit: u32,
    },
    JourneyWaitScheduled {
        step_id: String,
        timer_name: String,
        due_at: DateTime<Utc>,
        /// A `wait_until`: an event can end the wait before the timer.
        waiting_for_event: bool,
    },
    TimerFired {
        timer_name: String,
        step_id: String,
        due_at: DateTime<Utc>,
    },
    JourneyWaitEnded {
        step_id: String,
        #[serde(default)]
        event_id: Option<Uuid>,
        timed_out: bool,
    },
    MessageRequested {
        message_id: String,
        instance_id: String,
        campaign_id: String,
        campaign_version: u64,
        step_id: String,
        customer_id: String,
        channel: Channel,
        template: String,
        category: Category,
        #[serde(default)]
        purpose: Option<Purpose>,
        data: Value,
    },
    SegmentMembershipRequested {
        step_id: String,
        segment: String,
        action: super::definition::SegmentAction,
    },
    JourneyEventEmitted {
        step_id: String,
        event_type: String,
        data: Value,
    },
    JourneyExited {
        reason: ExitReason,
        #[serde(default)]
        rule: Option<String>,
        #[serde(default)]
        event_id: Option<Uuid>,
    },
}

impl DomainEvent for JourneyEvent {
    fn schema_version(_event_type: &str) -> u32 {
        1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceStatus {
    Running,
    Waiting,
    Exited,
}

/// A pending wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWait {
    pub step_id: String,
    pub timer_name: String,
    pub due_at: DateTime<Utc>,
    pub waiting_for_event: bool,
    /// The stream version of the `JourneyWaitScheduled` that set the timer
    /// (the timer's `set_at_version`, so a re-armed timer is the same timer).
    #[serde(default)]
    pub set_at_version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JourneyInstance {
    pub id: String,
    pub campaign_id: String,
    pub campaign_version: u64,
    pub customer_id: String,
    pub status: InstanceStatus,
    pub current_step: Option<String>,
    pub waiting: Option<PendingWait>,
    pub visits: BTreeMap<String, u32>,
    pub trigger: TriggerRef,
    pub trigger_event: Value,
    pub exit_reason: Option<ExitReason>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
    /// The customer events this instance has acted on (its trigger, the
    /// events that ended its waits, the one that exited it): handed again
    /// (a redelivery, or an event the lookback took before it arrived),
    /// they change nothing.
    #[serde(default)]
    pub used_events: BTreeSet<Uuid>,
}

/// What the instance is asked to handle.
#[derive(Debug, Clone)]
pub enum JourneyInput<'a> {
    /// Start from a trigger (already matched, entry rules already checked).
    Start {
        instance_id: String,
        campaign_version: u64,
        customer_id: String,
        dedupe_key: String,
        trigger: TriggerRef,
        trigger_event: &'a Value,
    },
    /// A timer fired (possibly a stale or duplicated one).
    Timer {
        timer_name: &'a str,
    },
    /// An event of the instance's customer, as on the bus.
    Event {
        event_id: Uuid,
        event: &'a Value,
    },
    CustomerDeactivated {
        event_id: Uuid,
    },
    /// The customer was erased: every instance exits.
    CustomerErased {
        event_id: Uuid,
    },
    CampaignPaused,
}

/// What `decide` needs from outside: the time, the customer's time zone and profile.
#[derive(Debug, Clone)]
pub struct JourneyContext<'a> {
    pub now: DateTime<Utc>,
    pub timezone: chrono_tz::Tz,
    pub profile: Option<&'a Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JourneyError {
    #[error("journey instance {0} has not started")]
    NotStarted(String),
    #[error("journey instance already started")]
    AlreadyStarted,
    #[error("campaign {campaign} has no step {step}")]
    UnknownStep { campaign: String, step: String },
    #[error("campaign {0} ran {MAX_STEPS_PER_DECISION} steps without waiting")]
    Runaway(String),
}

/// Decides what an input does to an instance of `campaign` (the version the
/// instance started on).
pub fn decide(
    state: Option<&JourneyInstance>,
    campaign: &Campaign,
    input: &JourneyInput<'_>,
    ctx: &JourneyContext<'_>,
) -> Result<Vec<JourneyEvent>, JourneyError> {
    match (state, input) {
        (
            None,
            JourneyInput::Start {
                instance_id,
                campaign_version,
                customer_id,
                dedupe_key,
                trigger,
                trigger_event,
            },
        ) => {
            let started = JourneyEvent::JourneyStarted {
                instance_id: instance_id.clone(),
                campaign_id: campaign.id.clone(),
                campaign_version: *campaign_version,
                customer_id: customer_id.clone(),
                dedupe_key: dedupe_key.clone(),
                trigger: trigger.clone(),
                trigger_event: (*trigger_event).clone(),
            };
            let mut events = vec![started.clone()];
            let instance = evolve(None, &started, ctx.now, 1);
            let Some(instance) = instance else {
                return Ok(events);
            };
            let first = campaign.steps.first().map(|s| s.id().to_string());
            events.extend(run(&instance, campaign, first, ctx)?);
            Ok(events)
        }
        (Some(_), JourneyInput::Start { .. }) => Err(JourneyError::AlreadyStarted),
        (None, _) => Err(JourneyError::NotStarted(campaign.id.clone())),
        (Some(s), _) if s.status == InstanceStatus::Exited => Ok(Vec::new()),
        (Some(s), JourneyInput::Timer { timer_name }) => on_timer(s, campaign, timer_name, ctx),
        (Some(s), JourneyInput::Event { event_id, event }) => on_event(s, campaign, *event_id, event, ctx),
        (Some(_), JourneyInput::CustomerDeactivated { event_id }) => Ok(vec![JourneyEvent::JourneyExited {
            reason: ExitReason::CustomerDeactivated,
            rule: None,
            event_id: Some(*event_id),
        }]),
        (Some(_), JourneyInput::CustomerErased { event_id }) => Ok(vec![JourneyEvent::JourneyExited {
            reason: ExitReason::CustomerErased,
            rule: None,
            event_id: Some(*event_id),
        }]),
        (Some(_), JourneyInput::CampaignPaused) => Ok(vec![JourneyEvent::JourneyExited {
            reason: ExitReason::CampaignPaused,
            rule: None,
            event_id: None,
        }]),
    }
}

fn on_timer(
    s: &JourneyInstance,
    campaign: &Campaign,
    fired: &str,
    ctx: &JourneyContext<'_>,
) -> Result<Vec<JourneyEvent>, JourneyError> {
    // A timer of a wait that already ended (or a redelivery) does nothing.
    let Some(wait) = s.waiting.as_ref().filter(|w| w.timer_name == fired) else {
        return Ok(Vec::new());
    };
    let mut events = vec![JourneyEvent::TimerFired {
        timer_name: wait.timer_name.clone(),
        step_id: wait.step_id.clone(),
        due_at: wait.due_at,
    }];
    let step = step(campaign, &wait.step_id)?;
    let next = match step {
        Step::WaitUntil(w) => {
            events.push(JourneyEvent::JourneyWaitEnded {
                step_id: wait.step_id.clone(),
                event_id: None,
                timed_out: true,
            });
            Some(w.on_timeout.clone())
        }
        _ => campaign.next_after(&wait.step_id).map(|s| s.id().to_string()),
    };
    events.extend(continue_with(s, &events, campaign, next, ctx)?);
    Ok(events)
}

fn rule_matches(rule: &super::definition::EventRule, event: &Value, ctx: &JourneyContext<'_>) -> bool {
    rule.pattern.matches(event) && rule.conditions.iter().all(|c| c.holds(event, ctx.profile))
}

fn on_event(
    s: &JourneyInstance,
    campaign: &Campaign,
    event_id: Uuid,
    event: &Value,
    ctx: &JourneyContext<'_>,
) -> Result<Vec<JourneyEvent>, JourneyError> {
    // The trigger, or an event acted on before (redelivered, or taken by
    // the lookback before it arrived): nothing to do.
    if event_id == s.trigger.event_id || s.used_events.contains(&event_id) {
        return Ok(Vec::new());
    }
    if let Some(rule) = campaign.exit_on.iter().find(|r| rule_matches(r, event, ctx)) {
        return Ok(vec![JourneyEvent::JourneyExited {
            reason: ExitReason::ExitEvent,
            rule: Some(rule.name.clone()),
            event_id: Some(event_id),
        }]);
    }
    if let Some(goal) = campaign.goals.iter().find(|r| rule_matches(r, event, ctx)) {
        return Ok(vec![JourneyEvent::JourneyExited {
            reason: ExitReason::Goal,
            rule: Some(goal.name.clone()),
            event_id: Some(event_id),
        }]);
    }
    let Some(wait) = s.waiting.as_ref().filter(|w| w.waiting_for_event) else {
        return Ok(Vec::new());
    };
    let Step::WaitUntil(w) = step(campaign, &wait.step_id)? else {
        return Ok(Vec::new());
    };
    if !(w.pattern.matches(event) && w.conditions.iter().all(|c| c.holds(event, ctx.profile))) {
        return Ok(Vec::new());
    }
    let mut events = vec![JourneyEvent::JourneyWaitEnded {
        step_id: wait.step_id.clone(),
        event_id: Some(event_id),
        timed_out: false,
    }];
    let next = campaign.next_after(&wait.step_id).map(|s| s.id().to_string());
    events.extend(continue_with(s, &events, campaign, next, ctx)?);
    Ok(events)
}

/// A customer event recorded after an instance's trigger, as the engine's
/// lookback found it in the store, for [`decide_with_lookback`].
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    pub event_id: Uuid,
    /// The event as on the bus.
    pub event: &'a Value,
    /// Recorded before the input being decided (a fired timer comes after
    /// every recorded event; a start before all of them).
    pub before_input: bool,
}

/// Whether the campaign has anything the lookback could find: exit rules,
/// goals or `wait_until` steps. Without them a decision never needs it.
pub fn looks_back(campaign: &Campaign) -> bool {
    !campaign.exit_on.is_empty()
        || !campaign.goals.is_empty()
        || campaign.steps.iter().any(|s| matches!(s, Step::WaitUntil(_)))
}

/// [`decide`], with the instance caught up on `recorded` (the customer's
/// events recorded after its trigger, in the order they were recorded) as if
/// each had been handed to it: those recorded before the input first, then
/// the input, then every one again on the state the input left. An exit or
/// goal event ends the instance; an event its `wait_until` waits for ends
/// the wait and the journey runs on; others pass. An event the instance
/// already acted on ([`JourneyInstance::used_events`]) is passed over, so a
/// later delivery of an event the lookback took changes nothing. After the
/// input, a `wait_until` the instance has just entered is therefore ended by
/// a matching event recorded since the trigger that it has not acted on,
/// whether that event reached the engine before or after the wait began.
pub fn decide_with_lookback(
    state: Option<&JourneyInstance>,
    campaign: &Campaign,
    input: &JourneyInput<'_>,
    ctx: &JourneyContext<'_>,
    recorded: &[Recorded<'_>],
) -> Result<Vec<JourneyEvent>, JourneyError> {
    let mut events = Vec::new();
    let mut current = state.cloned();
    if let Some(s) = state {
        events.extend(catch_up(s, campaign, recorded.iter().filter(|r| r.before_input), ctx)?);
        current = fold_onto(current, &events, ctx.now);
    }
    let decided = decide(current.as_ref(), campaign, input, ctx)?;
    current = fold_onto(current, &decided, ctx.now);
    events.extend(decided);
    if let Some(s) = &current {
        events.extend(catch_up(s, campaign, recorded.iter(), ctx)?);
    }
    Ok(events)
}

/// Hands `recorded` to the instance in turn, each as [`decide`] would an
/// event, until it exits.
fn catch_up<'r, 'v: 'r>(
    s: &JourneyInstance,
    campaign: &Campaign,
    recorded: impl Iterator<Item = &'r Recorded<'v>>,
    ctx: &JourneyContext<'_>,
) -> Result<Vec<JourneyEvent>, JourneyError> {
    let mut state = Some(s.clone());
    let mut events = Vec::new();
    for r in recorded {
        let Some(current) = state.as_ref().filter(|c| c.status != InstanceStatus::Exited) else {
            break;
        };
        let taken = on_event(current, campaign, r.event_id, r.event, ctx)?;
        state = fold_onto(state, &taken, ctx.now);
        events.extend(taken);
    }
    Ok(events)
}

/// `state` after `events`, numbered on from its version.
fn fold_onto(state: Option<JourneyInstance>, events: &[JourneyEvent], at: DateTime<Utc>) -> Option<JourneyInstance> {
    events.iter().fold(state, |s, e| {
        let version = s.as_ref().map_or(1, |s| s.version + 1);
        evolve(s, e, at, version)
    })
}

/// Runs on from `next` with the state after `so_far`.
fn continue_with(
    s: &JourneyInstance,
    so_far: &[JourneyEvent],
    campaign: &Campaign,
    next: Option<String>,
    ctx: &JourneyContext<'_>,
) -> Result<Vec<JourneyEvent>, JourneyError> {
    let mut state = Some(s.clone());
    for (i, e) in so_far.iter().enumerate() {
        state = evolve(state, e, ctx.now, s.version + 1 + i as u64);
    }
    match state {
        Some(state) => run(&state, campaign, next, ctx),
        None => Ok(Vec::new()),
    }
}

fn step<'c>(campaign: &'c Campaign, id: &str) -> Result<&'c Step, JourneyError> {
    campaign.step(id).ok_or_else(|| JourneyError::UnknownStep {
        campaign: campaign.id.clone(),
        step: id.to_string(),
    })
}

/// Runs steps from `next` until the instance waits or ends.
fn run(
    start: &JourneyInstance,
    campaign: &Campaign,
    mut next: Option<String>,
    ctx: &JourneyContext<'_>,
) -> Result<Vec<JourneyEvent>, JourneyError> {
    let mut events = Vec::new();
    let mut state = start.clone();
    for _ in 0..MAX_STEPS_PER_DECISION {
        let Some(id) = next.take().filter(|id| id != super::definition::END) else {
            events.push(JourneyEvent::JourneyExited {
                reason: ExitReason::Completed,
                rule: None,
                event_id: None,
            });
            return Ok(events);
        };
        let current = step(campaign, &id)?;
        let visit = state.visits.get(&id).copied().unwrap_or(0) + 1;
        let entered = JourneyEvent::JourneyStepEntered {
            step_id: id.clone(),
            step_type: current.type_name().to_string(),
            visit,
        };
        state = evolve(Some(state), &entered, ctx.now, 0).unwrap_or_else(|| start.clone());
        events.push(entered);
        let follow = || campaign.next_after(&id).map(|s| s.id().to_string());
        match current {
            Step::Send(send) => {
                events.push(JourneyEvent::MessageRequested {
                    message_id: message_id(&state.id, &id, visit),
                    instance_id: state.id.clone(),
                    campaign_id: campaign.id.clone(),
                    campaign_version: state.campaign_version,
                    step_id: id.clone(),
                    customer_id: state.customer_id.clone(),
                    channel: send.channel,
                    template: send.template.clone(),
                    category: send.category,
                    purpose: send.purpose.or(match send.category {
                        Category::Marketing => Some(Purpose::Marketing),
                        Category::Transactional => None,
                    }),
                    data: state
                        .trigger_event
                        .get("detail")
                        .and_then(|d| d.get("data"))
                        .cloned()
                        .unwrap_or(Value::Null),
                });
                next = follow();
            }
            Step::UpdateSegment(u) => {
                events.push(JourneyEvent::SegmentMembershipRequested {
                    step_id: id.clone(),
                    segment: u.segment.clone(),
                    action: u.action,
                });
                next = follow();
            }
            Step::Emit(e) => {
                events.push(JourneyEvent::JourneyEventEmitted {
                    step_id: id.clone(),
                    event_type: e.event_type.clone(),
                    data: e.data.clone(),
                });
                next = follow();
            }
            Step::Branch(b) => {
                let holds = b.conditions.iter().all(|c| c.holds(&state.trigger_event, ctx.profile));
                next = Some(if holds { b.then.clone() } else { b.otherwise.clone() });
            }
            Step::Exit(_) => {
                events.push(JourneyEvent::JourneyExited {
                    reason: ExitReason::ExitStep,
                    rule: None,
                    event_id: None,
                });
                return Ok(events);
            }
            Step::Wait(w) => {
                let due_at = match (w.duration, w.until_local_time) {
                    (Some(d), _) => ctx.now + d.to_chrono(),
                    (None, Some(t)) => next_local_time(ctx.now, ctx.timezone, t.time()),
                    (None, None) => ctx.now,
                };
                events.push(JourneyEvent::JourneyWaitScheduled {
                    step_id: id.clone(),
                    timer_name: timer_name(TimerKind::JourneyWait, &[&state.id, &id, &visit.to_string()]),
                    due_at,
                    waiting_for_event: false,
                });
                return Ok(events);
            }
            Step::WaitUntil(w) => {
                events.push(JourneyEvent::JourneyWaitScheduled {
                    step_id: id.clone(),
                    timer_name: timer_name(TimerKind::JourneyWait, &[&state.id, &id, &visit.to_string()]),
                    due_at: ctx.now + w.timeout.to_chrono(),
                    waiting_for_event: true,
                });
                return Ok(events);
            }
        }
    }
    Err(JourneyError::Runaway(campaign.id.clone()))
}

/// Folds one event into the instance.
pub fn evolve(
    state: Option<JourneyInstance>,
    event: &JourneyEvent,
    at: DateTime<Utc>,
    version: u64,
) -> Option<JourneyInstance> {
    if let JourneyEvent::JourneyStarted {
        instance_id,
        campaign_id,
        campaign_version,
        customer_id,
        trigger,
        trigger_event,
        ..
    } = event
    {
        return Some(JourneyInstance {
            id: instance_id.clone(),
            campaign_id: campaign_id.clone(),
            campaign_version: *campaign_version,
            customer_id: customer_id.clone(),
            status: InstanceStatus::Running,
            current_step: None,
            waiting: None,
            visits: BTreeMap::new(),
            trigger: trigger.clone(),
            trigger_event: trigger_event.clone(),
            exit_reason: None,
            started_at: at,
            updated_at: at,
            version,
            used_events: BTreeSet::from([trigger.event_id]),
        });
    }
    let mut s = state?;
    s.updated_at = at;
    if version > 0 {
        s.version = version;
    }
    match event {
        JourneyEvent::JourneyStarted { .. } => {}
        JourneyEvent::JourneyStepEntered { step_id, visit, .. } => {
            s.current_step = Some(step_id.clone());
            s.visits.insert(step_id.clone(), *visit);
            s.status = InstanceStatus::Running;
        }
        JourneyEvent::JourneyWaitScheduled {
            step_id,
            timer_name,
            due_at,
            waiting_for_event,
        } => {
            s.status = InstanceStatus::Waiting;
            s.waiting = Some(PendingWait {
                step_id: step_id.clone(),
                timer_name: timer_name.clone(),
                due_at: *due_at,
                waiting_for_event: *waiting_for_event,
                set_at_version: s.version,
            });
        }
        JourneyEvent::TimerFired { .. } | JourneyEvent::JourneyWaitEnded { .. } => {
            if let JourneyEvent::JourneyWaitEnded { event_id: Some(id), .. } = event {
                s.used_events.insert(*id);
            }
            s.waiting = None;
            s.status = InstanceStatus::Running;
        }
        JourneyEvent::MessageRequested { .. }
        | JourneyEvent::SegmentMembershipRequested { .. }
        | JourneyEvent::JourneyEventEmitted { .. } => {}
        JourneyEvent::JourneyExited { reason, event_id, .. } => {
            if let Some(id) = event_id {
                s.used_events.insert(*id);
            }
            s.status = InstanceStatus::Exited;
            s.exit_reason = Some(*reason);
            s.waiting = None;
        }
    }
    Some(s)
}

/// The timer a decision makes obsolete: the pending wait's, when the decision
/// ends the wait (exit, event, or the timer itself firing).
pub fn timer_to_cancel(before: Option<&JourneyInstance>, events: &[JourneyEvent]) -> Option<String> {
    let wait = before?.waiting.as_ref()?;
    let ends = events.iter().any(|e| {
        matches!(
            e,
            JourneyEvent::JourneyExited { .. }
                | JourneyEvent::JourneyWaitEnded { .. }
                | JourneyEvent::TimerFired { .. }
        )
    });
    ends.then(|| wait.timer_name.clone())
}

/// The timers a decision asks for, given the stream version of each event
/// and `instance`, the state after them: a wait the same decision already
/// ended (the lookback found its event, or an exit) needs no timer.
pub fn timers_to_schedule(instance: &JourneyInstance, events: &[(JourneyEvent, u64)]) -> Vec<TimerPayload> {
    events
        .iter()
        .filter_map(|(e, version)| match e {
            JourneyEvent::JourneyWaitScheduled {
                step_id,
                timer_name,
                due_at,
                ..
            } if instance.waiting.as_ref().is_some_and(|w| w.timer_name == *timer_name) => {
                Some(wait_timer(instance, step_id, timer_name, *due_at, *version))
            }
            _ => None,
        })
        .collect()
}

/// The timer of the instance's pending wait, exactly as it was set (same
/// name, due time and `set_at_version`), if the instance is waiting.
pub fn pending_timer(instance: &JourneyInstance) -> Option<TimerPayload> {
    let w = instance.waiting.as_ref()?;
    Some(wait_timer(
        instance,
        &w.step_id,
        &w.timer_name,
        w.due_at,
        w.set_at_version,
    ))
}

fn wait_timer(
    instance: &JourneyInstance,
    step_id: &str,
    name: &str,
    due_at: DateTime<Utc>,
    set_at_version: u64,
) -> TimerPayload {
    TimerPayload {
        name: name.to_string(),
        kind: TimerKind::JourneyWait,
        stream_id: stream_id(&instance.id),
        customer_id: Some(instance.customer_id.clone()),
        due_at,
        set_at_version,
        data: serde_json::json!({ "step_id": step_id }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;
    use serde_json::json;

    fn campaign(name: &str) -> Campaign {
        let path = format!("{}/../../campaigns/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        Campaign::from_yaml(&text).unwrap_or_else(|e| panic!("{path}: {e:?}"))
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn bus_event(event_type: &str, source: &str, data: Value) -> (Uuid, Value) {
        let id = Uuid::now_v7();
        (
            id,
            json!({ "source": source, "detail-type": event_type, "detail": { "event_id": id, "type": event_type, "data": data } }),
        )
    }

    fn ctx(now: DateTime<Utc>) -> JourneyContext<'static> {
        JourneyContext {
            now,
            timezone: chrono_tz::Europe::Berlin,
            profile: None,
        }
    }

    /// Given the events so far, fold them; versions count from 1.
    fn fold(events: &[JourneyEvent], now: DateTime<Utc>) -> Option<JourneyInstance> {
        events
            .iter()
            .enumerate()
            .fold(None, |s, (i, e)| evolve(s, e, now, i as u64 + 1))
    }

    fn started(c: &Campaign, now: DateTime<Utc>) -> (Vec<JourneyEvent>, Value) {
        let (id, trigger) = bus_event(
            "CartAbandoned",
            "crm.commerce",
            json!({ "cart_id": "cart-1", "total_value_minor": 7500, "currency": "EUR" }),
        );
        let input = JourneyInput::Start {
            instance_id: instance_id(c, "cust-1", "cart-1", now),
            campaign_version: 3,
            customer_id: "cust-1".into(),
            dedupe_key: "cart-1".into(),
            trigger: TriggerRef {
                event_id: id,
                event_type: "CartAbandoned".into(),
                stream_id: "cart-cart-1".into(),
                version: 4,
                occurred_at: now,
            },
            trigger_event: &trigger,
        };
        (decide(None, c, &input, &ctx(now)).expect("start"), trigger)
    }

    fn types(events: &[JourneyEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let (t, _) = e.to_parts().unwrap_or_default();
                t
            })
            .collect()
    }

    #[test]
    fn abandoned_cart_waits_then_reminds_and_an_order_mid_wait_exits_it() {
        let c = campaign("abandoned-cart");
        let t0 = at("2026-11-23T12:00:00Z");
        let (mut history, _) = started(&c, t0);
        assert_eq!(
            types(&history),
            ["JourneyStarted", "JourneyStepEntered", "JourneyWaitScheduled"]
        );
        let first_wait = fold(&history, t0).and_then(|s| s.waiting).expect("waiting");
        assert_eq!(first_wait.due_at, t0 + chrono::Duration::hours(1));

        // The hour passes: the timer fires, the reminder is requested, the 24 h wait starts.
        let t1 = first_wait.due_at;
        let state = fold(&history, t1).expect("state");
        let fired = decide(
            Some(&state),
            &c,
            &JourneyInput::Timer {
                timer_name: &first_wait.timer_name,
            },
            &ctx(t1),
        )
        .expect("timer");
        assert_eq!(
            types(&fired),
            [
                "TimerFired",
                "JourneyStepEntered",
                "MessageRequested",
                "JourneyStepEntered",
                "JourneyWaitScheduled"
            ]
        );
        match &fired[2] {
            JourneyEvent::MessageRequested {
                template,
                campaign_version,
                data,
                message_id: id,
                ..
            } => {
                assert_eq!(template, "abandoned-cart-reminder");
                assert_eq!(*campaign_version, 3, "the instance keeps its campaign version");
                assert_eq!(data["cart_id"], "cart-1");
                assert_eq!(id, &message_id(&state.id, "reminder", 1));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            timer_to_cancel(Some(&state), &fired),
            Some(first_wait.timer_name.clone())
        );
        // The same timer again (redelivery) does nothing.
        history.extend(fired);
        let state = fold(&history, t1).expect("state");
        let again = decide(
            Some(&state),
            &c,
            &JourneyInput::Timer {
                timer_name: &first_wait.timer_name,
            },
            &ctx(t1),
        );
        assert_eq!(again, Ok(Vec::new()));
        let second_wait = state.waiting.clone().expect("waiting 24h");
        assert_eq!(second_wait.due_at, t1 + chrono::Duration::hours(24));

        // An order in the middle of the 24 h wait ends the instance at once.
        let (order_id, order) = bus_event("OrderPlaced", "crm.commerce", json!({ "order_id": "o-1" }));
        let t2 = t1 + chrono::Duration::hours(3);
        let exited = decide(
            Some(&state),
            &c,
            &JourneyInput::Event {
                event_id: order_id,
                event: &order,
            },
            &ctx(t2),
        )
        .expect("event");
        assert_eq!(
            exited,
            vec![JourneyEvent::JourneyExited {
                reason: ExitReason::ExitEvent,
                rule: Some("order-placed".into()),
                event_id: Some(order_id)
            }]
        );
        assert_eq!(
            timer_to_cancel(Some(&state), &exited),
            Some(second_wait.timer_name.clone()),
            "its schedule is deleted"
        );
        history.extend(exited);
        let state = fold(&history, t2).expect("state");
        // The 24 h timer, if it still fires, finds nothing to do: no final offer.
        let late = decide(
            Some(&state),
            &c,
            &JourneyInput::Timer {
                timer_name: &second_wait.timer_name,
            },
            &ctx(t2),
        );
        assert_eq!(late, Ok(Vec::new()));
    }

    #[test]
    fn unrelated_events_and_the_trigger_itself_change_nothing() {
        let c = campaign("abandoned-cart");
        let t0 = at("2026-11-23T12:00:00Z");
        let (history, trigger) = started(&c, t0);
        let state = fold(&history, t0).expect("state");
        let (id, viewed) = bus_event("ProductViewed", "crm.customer", json!({}));
        assert_eq!(
            decide(
                Some(&state),
                &c,
                &JourneyInput::Event {
                    event_id: id,
                    event: &viewed
                },
                &ctx(t0)
            ),
            Ok(Vec::new())
        );
        let trigger_id = state.trigger.event_id;
        assert_eq!(
            decide(
                Some(&state),
                &c,
                &JourneyInput::Event {
                    event_id: trigger_id,
                    event: &trigger
                },
                &ctx(t0)
            ),
            Ok(Vec::new())
        );
        assert!(matches!(
            decide(
                Some(&state),
                &c,
                &JourneyInput::CustomerDeactivated { event_id: id },
                &ctx(t0)
            )
            .as_deref(),
            Ok([JourneyEvent::JourneyExited {
                reason: ExitReason::CustomerDeactivated,
                ..
            }])
        ));
    }

    #[test]
    fn the_same_trigger_always_names_the_same_instance() {
        let c = campaign("abandoned-cart");
        let t = at("2026-11-23T12:00:00Z");
        assert_eq!(
            instance_id(&c, "cust-1", "cart-1", t),
            instance_id(&c, "cust-1", "cart-1", t + chrono::Duration::hours(5))
        );
        assert_ne!(
            instance_id(&c, "cust-1", "cart-1", t),
            instance_id(&c, "cust-1", "cart-2", t)
        );
        let once = campaign("welcome");
        assert_eq!(
            instance_id(&once, "cust-1", "a", t),
            instance_id(&once, "cust-1", "b", t),
            "once per customer"
        );
        assert_ne!(
            instance_id(&once, "cust-1", "a", t),
            instance_id(&once, "cust-2", "a", t)
        );
    }

    #[test]
    fn until_ten_local_lands_at_ten_across_dst_changes() {
        let ten = NaiveTime::from_hms_opt(10, 0, 0).unwrap_or_default();
        // Berlin springs forward on 2026-03-29: 10:00 CEST is 08:00 UTC.
        let before = at("2026-03-28T20:00:00Z");
        assert_eq!(
            next_local_time(before, chrono_tz::Europe::Berlin, ten),
            at("2026-03-29T08:00:00Z")
        );
        // The day before it was still CET: 10:00 is 09:00 UTC.
        assert_eq!(
            next_local_time(at("2026-03-27T20:00:00Z"), chrono_tz::Europe::Berlin, ten),
            at("2026-03-28T09:00:00Z")
        );
        // New York falls back on 2026-11-01: 10:00 EST is 15:00 UTC.
        assert_eq!(
            next_local_time(at("2026-10-31T20:00:00Z"), chrono_tz::America::New_York, ten),
            at("2026-11-01T15:00:00Z")
        );
        // Already past 10:00 local: tomorrow.
        assert_eq!(
            next_local_time(at("2026-11-23T10:30:00Z"), chrono_tz::Europe::London, ten),
            at("2026-11-24T10:00:00Z")
        );
        // A time inside the spring-forward gap (02:30 does not exist in Berlin on 2026-03-29).
        let gap = NaiveTime::from_hms_opt(2, 30, 0).unwrap_or_default();
        assert_eq!(
            next_local_time(at("2026-03-28T23:00:00Z"), chrono_tz::Europe::Berlin, gap),
            at("2026-03-29T01:30:00Z")
        );
    }

    #[test]
    fn decisions_are_deterministic() {
        let c = campaign("abandoned-cart");
        let t0 = at("2026-11-23T12:00:00Z");
        let (history, _) = started(&c, t0);
        let state = fold(&history, t0).expect("state");
        let wait = state.waiting.clone().expect("wait");
        let a = decide(
            Some(&state),
            &c,
            &JourneyInput::Timer {
                timer_name: &wait.timer_name,
            },
            &ctx(wait.due_at),
        );
        let b = decide(
            Some(&state),
            &c,
            &JourneyInput::Timer {
                timer_name: &wait.timer_name,
            },
            &ctx(wait.due_at),
        );
        assert_eq!(a, b, "same message ids and timer names");
        let timers = timers_to_schedule(&state, &[(history[2].clone(), 3)]);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers[0].set_at_version, 3);
        assert_eq!(timers[0].stream_id, stream_id(&state.id));
        assert_eq!(
            pending_timer(&state).as_ref(),
            timers.first(),
            "the pending wait's timer is the one that was set"
        );
    }
}
