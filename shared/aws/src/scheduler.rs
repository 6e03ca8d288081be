//! `crm_core::scheduler::Scheduler` over EventBridge Scheduler (ARCHITECTURE.md
//! §7): one-time `at(...)` schedules in UTC, flexible window off, deleted after
//! completion, whose target is the bus; the bus receives a `TimerFired` event
//! from `crm.scheduler` whose `detail` is the [`TimerPayload`].

use crate::eventbridge::is_transient;
use async_trait::async_trait;
use aws_sdk_scheduler::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, DeadLetterConfig, EventBridgeParameters, FlexibleTimeWindow, FlexibleTimeWindowMode,
    RetryPolicy, ScheduleState, Target,
};
use aws_sdk_scheduler::Client;
use chrono::{DateTime, Utc};
use crm_core::messaging::delivery::MessageTimer;
use crm_core::scheduler::{Scheduler, SchedulerError, TimerPayload, TIMER_FIRED, TIMER_SOURCE};
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

/// How long EventBridge Scheduler keeps retrying a delivery to the bus.
const MAX_EVENT_AGE_SECONDS: i32 = 24 * 60 * 60;
const MAX_RETRY_ATTEMPTS: i32 = 185;

/// Timers as schedules in one schedule group.
#[derive(Debug, Clone)]
pub struct EventBridgeScheduler {
    pub client: Client,
    /// The schedule group (`crm-<stack>`).
    pub group: String,
    /// The bus ARN: the schedules' target.
    pub target_arn: String,
    /// The role EventBridge Scheduler assumes to put events on the bus.
    pub role_arn: String,
    /// Where undeliverable timers go (an SQS queue ARN).
    pub dead_letter_arn: Option<String>,
    /// The timers this instance scheduled last: rescheduling one of them
    /// (a cart's timer, at each product added) tries `UpdateSchedule`
    /// first, one call instead of a refused create and an update.
    recent: Arc<Mutex<RecentTimers>>,
}

/// How many timer names an instance remembers.
const RECENT_TIMERS: usize = 10_000;

/// Names of timers scheduled here, oldest first out.
#[derive(Debug, Default)]
struct RecentTimers {
    names: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentTimers {
    fn remember(&mut self, name: &str) {
        if self.names.insert(name.to_string()) {
            self.order.push_back(name.to_string());
            while self.order.len() > RECENT_TIMERS {
                if let Some(oldest) = self.order.pop_front() {
                    self.names.remove(&oldest);
                }
            }
        }
    }

    fn forget(&mut self, name: &str) {
        if self.names.remove(name) {
            self.order.retain(|n| n != name);
        }
    }
}

/// The schedule expression of a one-time timer: `at(yyyy-mm-ddThh:mm:ss)`, UTC.
pub fn at_expression(due_at: DateTime<Utc>) -> String {
    format!("at({})", due_at.format("%Y-%m-%dT%H:%M:%S"))
}

fn error<E>(what: &str, err: SdkError<E>) -> SchedulerError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = format!("{what}: {}", DisplayErrorContext(&err));
    if is_transient(&err) {
        SchedulerError::Unavailable(message)
    } else {
        SchedulerError::Refused(message)
    }
}

impl EventBridgeScheduler {
    pub fn new(
        client: Client,
        group: impl Into<String>,
        target_arn: impl Into<String>,
        role_arn: impl Into<String>,
        dead_letter_arn: Option<String>,
    ) -> Self {
        EventBridgeScheduler {
            client,
            group: group.into(),
            target_arn: target_arn.into(),
            role_arn: role_arn.into(),
            dead_letter_arn,
            recent: Arc::default(),
        }
    }

    /// Whether this instance scheduled `name` recently.
    fn scheduled_here(&self, name: &str) -> bool {
        self.recent.lock().is_ok_and(|r| r.names.contains(name))
    }

    fn remember(&self, name: &str) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.remember(name);
        }
    }

    fn forget(&self, name: &str) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.forget(name);
        }
    }

    /// Replaces the schedule of an existing timer.
    async fn update(
        &self,
        timer: &TimerPayload,
        expression: &str,
        target: Target,
    ) -> Result<(), SdkError<aws_sdk_scheduler::operation::update_schedule::UpdateScheduleError>> {
        self.client
            .update_schedule()
            .name(&timer.name)
            .group_name(&self.group)
            .schedule_expression(expression)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(Self::window().map_err(SdkError::construction_failure)?)
            .action_after_completion(ActionAfterCompletion::Delete)
            .state(ScheduleState::Enabled)
            .target(target)
            .send()
            .await
            .map(|_| ())
    }

    fn target(&self, timer: &TimerPayload) -> Result<Target, SchedulerError> {
        let input = serde_json::to_string(timer)
            .map_err(|e| SchedulerError::Refused(format!("timer {} cannot be serialised: {e}", timer.name)))?;
        let parameters = EventBridgeParameters::builder()
            .detail_type(TIMER_FIRED)
            .source(TIMER_SOURCE)
            .build()
            .map_err(|e| SchedulerError::Refused(e.to_string()))?;
        let mut target = Target::builder()
            .arn(&self.target_arn)
            .role_arn(&self.role_arn)
            .event_bridge_parameters(parameters)
            .input(input)
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_event_age_in_seconds(MAX_EVENT_AGE_SECONDS)
                    .maximum_retry_attempts(MAX_RETRY_ATTEMPTS)
                    .build(),
            );
        if let Some(arn) = &self.dead_letter_arn {
            target = target.dead_letter_config(DeadLetterConfig::builder().arn(arn).build());
        }
        target.build().map_err(|e| SchedulerError::Refused(e.to_string()))
    }

    fn window() -> Result<FlexibleTimeWindow, SchedulerError> {
        FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| SchedulerError::Refused(e.to_string()))
    }
}

#[async_trait]
impl Scheduler for EventBridgeScheduler {
    async fn schedule(&self, timer: TimerPayload) -> Result<(), SchedulerError> {
        let target = self.target(&timer)?;
        let expression = at_expression(timer.due_at);
        if self.scheduled_here(&timer.name) {
            match self.update(&timer, &expression, target.clone()).await {
                Ok(()) => return Ok(()),
                // Fired, or cancelled elsewhere: created below.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    self.forget(&timer.name);
                }
                Err(e) => return Err(error("UpdateSchedule", e)),
            }
        }
        let created = self
            .client
            .create_schedule()
            .name(&timer.name)
            .group_name(&self.group)
            .schedule_expression(&expression)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(Self::window()?)
            .action_after_completion(ActionAfterCompletion::Delete)
            .state(ScheduleState::Enabled)
            .target(target.clone())
            .send()
            .await;
        match created {
            Ok(_) => {
                self.remember(&timer.name);
                Ok(())
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => {
                // It exists: rescheduling replaces.
                self.update(&timer, &expression, target)
                    .await
                    .map_err(|e| error("UpdateSchedule", e))?;
                self.remember(&timer.name);
                Ok(())
            }
            Err(e) => Err(error("CreateSchedule", e)),
        }
    }

    async fn cancel(&self, name: &str) -> Result<(), SchedulerError> {
        self.forget(name);
        match self
            .client
            .delete_schedule()
            .name(name)
            .group_name(&self.group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(error("DeleteSchedule", e)),
        }
    }

    async fn get(&self, name: &str) -> Result<Option<TimerPayload>, SchedulerError> {
        let schedule = match self
            .client
            .get_schedule()
            .name(name)
            .group_name(&self.group)
            .send()
            .await
        {
            Ok(s) => s,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(error("GetSchedule", e)),
        };
        let input = schedule
            .target()
            .and_then(|t| t.input())
            .ok_or_else(|| SchedulerError::Refused(format!("schedule {name} has no target input")))?;
        serde_json::from_str(input)
            .map(Some)
            .map_err(|e| SchedulerError::Refused(format!("schedule {name} does not hold a timer: {e}")))
    }
}

/// What [`migrate_request_copies`] did to the timers of a schedule group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerMigration {
    /// Schedules listed in the group.
    pub listed: usize,
    /// Deferral timers set before decision 0041 whose data was the message
    /// request, now holding a reference to it (same name, same fire time).
    pub rewritten: usize,
    /// Message timers that already hold a reference (migrated before, or
    /// set after decision 0041).
    pub referencing: usize,
    /// Every other schedule: timers of other kinds, and schedules that hold
    /// no timer (the journey sweep). Left as they are.
    pub other: usize,
    /// Deferral timers with a copy whose time has come: being delivered (or
    /// retried) from their copy, deleted once done. Left as they are.
    pub due: usize,
    /// Schedules deleted between the listing and the rewrite (fired, or
    /// cancelled).
    pub gone: usize,
    /// Schedules that could not be read or rewritten: name and why.
    pub failed: Vec<(String, String)>,
}

/// The timer a deferral timer set before decision 0041 becomes
/// (`MessageTimer::without_request_copy`).
pub fn without_request_copy(timer: &TimerPayload) -> Option<TimerPayload> {
    MessageTimer::without_request_copy(timer)
}

/// The names of every schedule in `group` (ListSchedules, page by page).
pub async fn schedule_names(client: &Client, group: &str) -> Result<Vec<String>, SchedulerError> {
    let mut names = Vec::new();
    let mut pages = client.list_schedules().group_name(group).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| error("ListSchedules", e))?;
        names.extend(page.schedules().iter().filter_map(|s| s.name().map(str::to_string)));
    }
    Ok(names)
}

/// What happened to one schedule of a migration.
enum Migrated {
    Rewritten,
    Referencing,
    Other,
    Due,
    Gone,
}

/// Rewrites, in the schedule group `group`, every deferral timer set before
/// decision 0041 (its data the message request, with the trigger event's
/// personal data in clear) into the reference form
/// ([`without_request_copy`]): ListSchedules, then GetSchedule each, then
/// UpdateSchedule of the same schedule with everything as it was (expression,
/// time zone, window, state, action after completion, target, retry and
/// dead-letter settings) but the target's `Input`. The schedule keeps its
/// name and fire time, and is never absent (no delete and create). Every
/// other schedule is left alone, and so is a deferral timer whose time is
/// at or before `now` (being delivered from its copy, then deleted).
/// Running it again rewrites nothing. A schedule that fails is recorded in
/// [`TimerMigration::failed`], and the others go on.
pub async fn migrate_request_copies(
    client: &Client,
    group: &str,
    now: DateTime<Utc>,
) -> Result<TimerMigration, SchedulerError> {
    let names = schedule_names(client, group).await?;
    let mut report = TimerMigration {
        listed: names.len(),
        ..TimerMigration::default()
    };
    for name in names {
        match migrate_schedule(client, group, &name, now).await {
            Ok(Migrated::Rewritten) => report.rewritten += 1,
            Ok(Migrated::Referencing) => report.referencing += 1,
            Ok(Migrated::Other) => report.other += 1,
            Ok(Migrated::Due) => report.due += 1,
            Ok(Migrated::Gone) => report.gone += 1,
            Err(e) => {
                tracing::warn!(schedule = %name, error = %e, "timer not migrated");
                report.failed.push((name, e.to_string()));
            }
        }
    }
    tracing::info!(?report, group, "timers migrated");
    Ok(report)
}

async fn migrate_schedule(
    client: &Client,
    group: &str,
    name: &str,
    now: DateTime<Utc>,
) -> Result<Migrated, SchedulerError> {
    let schedule = match client.get_schedule().name(name).group_name(group).send().await {
        Ok(s) => s,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            return Ok(Migrated::Gone)
        }
        Err(e) => return Err(error("GetSchedule", e)),
    };
    let Some(mut target) = schedule.target.clone() else {
        return Ok(Migrated::Other);
    };
    let Some(timer) = target
        .input
        .as_deref()
        .and_then(|input| serde_json::from_str::<TimerPayload>(input).ok())
    else {
        return Ok(Migrated::Other);
    };
    let Some(migrated) = without_request_copy(&timer) else {
        return Ok(match MessageTimer::of(&timer) {
            Some(_) => Migrated::Referencing,
            None => Migrated::Other,
        });
    };
    if timer.due_at <= now {
        return Ok(Migrated::Due);
    }
    target.input = Some(
        serde_json::to_string(&migrated)
            .map_err(|e| SchedulerError::Refused(format!("timer {name} cannot be serialised: {e}")))?,
    );
    let updated = client
        .update_schedule()
        .name(name)
        .group_name(group)
        .set_schedule_expression(schedule.schedule_expression)
        .set_schedule_expression_timezone(schedule.schedule_expression_timezone)
        .set_start_date(schedule.start_date)
        .set_end_date(schedule.end_date)
        .set_description(schedule.description)
        .set_state(schedule.state)
        .set_kms_key_arn(schedule.kms_key_arn)
        .set_flexible_time_window(schedule.flexible_time_window)
        .set_action_after_completion(schedule.action_after_completion)
        .target(target)
        .send()
        .await;
    match updated {
        Ok(_) => {
            tracing::info!(schedule = %name, "deferral timer now references its request");
            Ok(Migrated::Rewritten)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            Ok(Migrated::Gone)
        }
        Err(e) => Err(error("UpdateSchedule", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_core::messaging::events::RequestRef;

    #[test]
    fn at_expressions_are_utc_to_the_second() {
        let due = DateTime::parse_from_rfc3339("2026-03-29T02:30:05.750+02:00")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(at_expression(due), "at(2026-03-29T00:30:05)");
    }

    fn deferral(data: serde_json::Value) -> TimerPayload {
        TimerPayload {
            name: "crm-md-1".into(),
            kind: crm_core::scheduler::TimerKind::MessageDeferral,
            stream_id: "message-msg-1".into(),
            customer_id: Some("cus-1".into()),
            due_at: Utc::now(),
            set_at_version: 3,
            data,
        }
    }

    fn request_copy() -> serde_json::Value {
        serde_json::json!({
            "message_id": "msg-1",
            "instance_id": "i-1",
            "campaign_id": "welcome",
            "campaign_version": 1,
            "step_id": "send",
            "customer_id": "cus-1",
            "channel": "email",
            "template": "welcome",
            "category": "transactional",
            "data": {"email": "ada.copy@example.com", "first_name": "Ada"}
        })
    }

    #[test]
    fn a_deferral_with_its_request_becomes_a_reference_and_nothing_else_changes() {
        let old = deferral(request_copy());
        assert!(matches!(
            MessageTimer::of(&old),
            Some(MessageTimer::DeferralWithRequest(_))
        ));
        let new = without_request_copy(&old).expect("rewritten");
        assert_eq!(
            MessageTimer::of(&new),
            Some(MessageTimer::Deferral(RequestRef {
                message_id: "msg-1".into(),
                stream_id: crm_core::journey::instance::stream_id("i-1"),
                version: None,
            }))
        );
        assert!(!new.data.to_string().contains("ada.copy"), "{}", new.data);
        assert_eq!(
            TimerPayload {
                data: old.data.clone(),
                ..new.clone()
            },
            old,
            "only the data changes"
        );
        // Already a reference: nothing to do, so a second run changes nothing.
        assert_eq!(without_request_copy(&new), None);
    }

    #[test]
    fn other_timers_are_not_rewritten() {
        let settle = deferral(serde_json::json!({"settle": {"message_id": "msg-1", "instance_id": "i-1"}}));
        assert_eq!(without_request_copy(&settle), None);
        let wait = TimerPayload {
            kind: crm_core::scheduler::TimerKind::JourneyWait,
            ..deferral(request_copy())
        };
        assert_eq!(without_request_copy(&wait), None);
        assert_eq!(without_request_copy(&deferral(serde_json::json!({"step": "x"}))), None);
    }
}
