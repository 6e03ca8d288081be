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
use crm_core::scheduler::{Scheduler, SchedulerError, TimerPayload, TIMER_FIRED, TIMER_SOURCE};

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
        }
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
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => {
                // It exists: rescheduling replaces.
                self.client
                    .update_schedule()
                    .name(&timer.name)
                    .group_name(&self.group)
                    .schedule_expression(&expression)
                    .schedule_expression_timezone("UTC")
                    .flexible_time_window(Self::window()?)
                    .action_after_completion(ActionAfterCompletion::Delete)
                    .state(ScheduleState::Enabled)
                    .target(target)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| error("UpdateSchedule", e))
            }
            Err(e) => Err(error("CreateSchedule", e)),
        }
    }

    async fn cancel(&self, name: &str) -> Result<(), SchedulerError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_expressions_are_utc_to_the_second() {
        let due = DateTime::parse_from_rfc3339("2026-03-29T02:30:05.750+02:00")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        assert_eq!(at_expression(due), "at(2026-03-29T00:30:05)");
    }
}
