//! An input (a start, a fired timer, a customer's event, deactivation,
//! erasure, a pause) turned into the instance's events: steps run until a
//! wait or the end, exits and goals act at once, and the lookback's finds
//! are caught up on first.

use super::*;
use crate::consent::{Channel, Purpose};
use crate::journey::definition::{Campaign, Category, Step};
use crate::scheduler::{timer_name, TimerKind};
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// What the instance is asked to handle (the command of
/// [`JourneyAggregate`](super::JourneyAggregate)).
#[derive(Debug, Clone, PartialEq)]
pub enum JourneyInput {
    /// Start from a trigger (already matched, entry rules already checked).
    Start {
        instance_id: String,
        campaign_version: u64,
        customer_id: String,
        dedupe_key: String,
        trigger: TriggerRef,
        trigger_event: Value,
    },
    /// A timer fired (possibly a stale or duplicated one).
    Timer {
        timer_name: String,
    },
    /// An event of the instance's customer, as on the bus.
    Event {
        event_id: Uuid,
        event: Value,
    },
    CustomerDeactivated {
        event_id: Uuid,
    },
    /// The customer was erased: every instance exits.
    CustomerErased {
        event_id: Uuid,
    },
    /// The customer revoked their consent for `purpose` on `channel` (the
    /// `ConsentRevoked` event, as on the bus): an instance whose every send
    /// needs it exits; any other takes it as an event.
    ConsentRevoked {
        event_id: Uuid,
        purpose: Purpose,
        channel: Channel,
        event: Value,
    },
    CampaignPaused,
}

/// What `decide` needs from outside: the time, the customer's time zone and
/// profile, and the segments they are in when the campaign's conditions
/// name one (decision 0086; `None`: not read, in none).
#[derive(Debug, Clone)]
pub struct JourneyContext<'a> {
    pub now: DateTime<Utc>,
    pub timezone: crm_kernel::vocabulary::Zone,
    pub profile: Option<&'a Value>,
    pub segments: Option<&'a std::collections::BTreeSet<String>>,
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
    /// A step asked of an instance whose stream does not exist.
    #[error("no such journey instance")]
    NotFound,
}

/// Decides what an input does to an instance of `campaign` (the version the
/// instance started on).
pub fn decide(
    state: Option<&JourneyInstance>,
    campaign: &Campaign,
    input: &JourneyInput,
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
                trigger_event: trigger_event.clone(),
            };
            let mut events = vec![started.clone()];
            let instance = evolve(None, &started, ctx.now, 1);
            let Some(instance) = instance else {
                return Ok(events);
            };
            if let Some(holdout) = campaign.holdout {
                let bucket =
                    crate::journey::experiment::bucket(customer_id, &campaign.id, crate::journey::experiment::HOLDOUT);
                if holdout.holds_out(bucket) {
                    events.push(JourneyEvent::JourneyHoldoutAssigned {
                        campaign_id: campaign.id.clone(),
                        percent: holdout.percent,
                        bucket,
                    });
                    events.push(JourneyEvent::JourneyExited {
                        reason: ExitReason::Holdout,
                        rule: None,
                        event_id: None,
                    });
                    return Ok(events);
                }
            }
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
        (
            Some(s),
            JourneyInput::ConsentRevoked {
                event_id,
                purpose,
                channel,
                event,
            },
        ) => {
            if campaign.sends_only_under(*purpose, *channel) {
                Ok(vec![JourneyEvent::JourneyExited {
                    reason: ExitReason::ConsentRevoked,
                    rule: None,
                    event_id: Some(*event_id),
                }])
            } else {
                on_event(s, campaign, *event_id, event, ctx)
            }
        }
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

fn rule_matches(
    rule: &crate::journey::definition::EventRule,
    event: &Value,
    trigger: &Value,
    ctx: &JourneyContext<'_>,
) -> bool {
    rule.pattern.matches(event)
        && rule
            .conditions
            .iter()
            .all(|c| c.holds_in(event, ctx.profile, ctx.segments))
        && rule.same_as_trigger(event, trigger)
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
    if let Some(rule) = campaign
        .exit_on
        .iter()
        .find(|r| rule_matches(r, event, &s.trigger_event, ctx))
    {
        return Ok(vec![JourneyEvent::JourneyExited {
            reason: ExitReason::ExitEvent,
            rule: Some(rule.name.clone()),
            event_id: Some(event_id),
        }]);
    }
    if let Some(goal) = campaign
        .goals
        .iter()
        .find(|r| rule_matches(r, event, &s.trigger_event, ctx))
    {
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
    if !(w.pattern.matches(event)
        && w.conditions
            .iter()
            .all(|c| c.holds_in(event, ctx.profile, ctx.segments)))
    {
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
    input: &JourneyInput,
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
        let Some(id) = next.take().filter(|id| id != crate::journey::definition::END) else {
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
                let channels = send.channels();
                let channel = channels.first().copied().unwrap_or(Channel::Email);
                let candidates = match send.channel.fixed() {
                    Some(_) => Vec::new(),
                    None => channels
                        .iter()
                        .map(|c| crate::vocabulary::ChannelOption {
                            channel: *c,
                            template: send.template_for(*c).to_string(),
                        })
                        .collect(),
                };
                events.push(JourneyEvent::MessageRequested {
                    message_id: message_id(&state.id, &id, visit),
                    instance_id: state.id.clone(),
                    campaign_id: campaign.id.clone(),
                    campaign_version: state.campaign_version,
                    step_id: id.clone(),
                    candidates,
                    customer_id: state.customer_id.clone(),
                    channel,
                    template: send.template_for(channel).to_string(),
                    category: send.category,
                    purpose: send.consent_purpose(),
                    kind: (send.category == Category::Marketing).then_some(campaign.kind),
                    discount: send.discount.map(|d| d.offer()),
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
                let holds = b
                    .conditions
                    .iter()
                    .all(|c| c.holds_in(&state.trigger_event, ctx.profile, ctx.segments));
                next = Some(if holds { b.then.clone() } else { b.otherwise.clone() });
            }
            Step::Split(split) => {
                // The variant recorded on an earlier visit, else a new
                // assignment, recorded once (decision 0081).
                let recorded = state
                    .variants
                    .get(&split.experiment)
                    .and_then(|v| split.variants.iter().find(|x| &x.id == v));
                let variant = match recorded {
                    Some(v) => Some(v),
                    None => {
                        let bucket =
                            crate::journey::experiment::bucket(&state.customer_id, &campaign.id, &split.experiment);
                        let chosen = split.variant_for(bucket);
                        if let Some(v) = chosen {
                            let assigned = JourneyEvent::JourneyVariantAssigned {
                                campaign_id: campaign.id.clone(),
                                step_id: id.clone(),
                                experiment: split.experiment.clone(),
                                variant: v.id.clone(),
                                bucket,
                            };
                            state = evolve(Some(state), &assigned, ctx.now, 0).unwrap_or_else(|| start.clone());
                            events.push(assigned);
                        }
                        chosen
                    }
                };
                next = variant.map(|v| v.next.clone());
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
