//! `crm_core::ports::EventBus` over EventBridge `PutEvents` (ARCHITECTURE.md
//! §4: `source` = `crm.<context>`, `detail-type` = the event type, `detail` =
//! the envelope, `time` = when it occurred).

use async_trait::async_trait;
use aws_sdk_eventbridge::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_eventbridge::primitives::DateTime;
use aws_sdk_eventbridge::types::{PutEventsRequestEntry, PutEventsResultEntry};
use aws_sdk_eventbridge::Client;
use crm_core::bus::{BusEntry, MAX_ENTRIES_PER_PUT};
use crm_core::ports::{BusError, EventBus, PublishOutcome};

/// Service error codes worth sending again, across the AWS services used here.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "RequestThrottled",
    "RequestLimitExceeded",
    "InternalException",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "KMS.ThrottlingException",
];

/// Whether an SDK error is worth retrying: timeouts, connection failures,
/// unreadable responses, 5xx and throttling. (`SdkError` is the same type in
/// every AWS SDK crate, so the SQS adapter uses this too.)
pub(crate) fn is_transient<E>(err: &SdkError<E>) -> bool
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => !d.is_user(),
        SdkError::ServiceError(s) => {
            s.raw().status().is_server_error() || s.err().code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
        _ => false,
    }
}

/// The bus: one custom EventBridge event bus.
#[derive(Debug, Clone)]
pub struct EventBridgeBus {
    client: Client,
    bus_name: String,
}

impl EventBridgeBus {
    /// Publishes to the bus `bus_name` (a name or an ARN).
    pub fn new(client: Client, bus_name: impl Into<String>) -> Self {
        EventBridgeBus {
            client,
            bus_name: bus_name.into(),
        }
    }

    pub fn bus_name(&self) -> &str {
        &self.bus_name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn request_entry(&self, entry: &BusEntry) -> Result<PutEventsRequestEntry, BusError> {
        let detail = serde_json::to_string(&entry.detail)
            .map_err(|e| BusError::Refused(format!("event {} cannot be serialised: {e}", entry.detail.event_id)))?;
        let at = entry.detail.occurred_at;
        Ok(PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus_name)
            .source(&entry.source)
            .detail_type(&entry.detail_type)
            .detail(detail)
            .time(DateTime::from_secs_and_nanos(
                at.timestamp(),
                at.timestamp_subsec_nanos(),
            ))
            .build())
    }
}

/// The outcome of one entry from its result entry (in request order).
fn outcome(result: Option<&PutEventsResultEntry>) -> PublishOutcome {
    match result {
        None => PublishOutcome::Failed {
            code: "MissingResult".into(),
            message: "PutEvents returned fewer results than entries".into(),
        },
        Some(r) => match (r.error_code(), r.event_id()) {
            (Some(code), _) => PublishOutcome::Failed {
                code: code.to_string(),
                message: r.error_message().unwrap_or_default().to_string(),
            },
            (None, Some(_)) => PublishOutcome::Published,
            (None, None) => PublishOutcome::Failed {
                code: "NoEventId".into(),
                message: "PutEvents returned neither an event id nor an error".into(),
            },
        },
    }
}

#[async_trait]
impl EventBus for EventBridgeBus {
    async fn put(&self, entries: &[BusEntry]) -> Result<Vec<PublishOutcome>, BusError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        if entries.len() > MAX_ENTRIES_PER_PUT {
            return Err(BusError::Refused(format!(
                "{} entries in one PutEvents (at most {MAX_ENTRIES_PER_PUT})",
                entries.len()
            )));
        }
        let request = entries
            .iter()
            .map(|e| self.request_entry(e))
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .put_events()
            .set_entries(Some(request))
            .send()
            .await
            .map_err(|e| {
                let message = format!("PutEvents to {}: {}", self.bus_name, DisplayErrorContext(&e));
                if is_transient(&e) {
                    BusError::Unavailable(message)
                } else {
                    BusError::Refused(message)
                }
            })?;
        let results = output.entries();
        let outcomes: Vec<PublishOutcome> = (0..entries.len()).map(|i| outcome(results.get(i))).collect();
        let failed = outcomes
            .iter()
            .filter(|o| matches!(o, PublishOutcome::Failed { .. }))
            .count();
        let reported = usize::try_from(output.failed_entry_count()).unwrap_or(0);
        if reported != failed {
            tracing::warn!(
                bus = %self.bus_name,
                reported,
                failed,
                "PutEvents' FailedEntryCount disagrees with its result entries"
            );
        }
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_entries_map_to_outcomes() {
        let ok = PutEventsResultEntry::builder().event_id("e-1").build();
        assert_eq!(outcome(Some(&ok)), PublishOutcome::Published);

        let throttled = PutEventsResultEntry::builder()
            .error_code("ThrottlingException")
            .error_message("Rate exceeded")
            .build();
        assert_eq!(
            outcome(Some(&throttled)),
            PublishOutcome::Failed {
                code: "ThrottlingException".into(),
                message: "Rate exceeded".into()
            }
        );

        assert!(matches!(
            outcome(None),
            PublishOutcome::Failed { code, .. } if code == "MissingResult"
        ));
        let empty = PutEventsResultEntry::builder().build();
        assert!(matches!(
            outcome(Some(&empty)),
            PublishOutcome::Failed { code, .. } if code == "NoEventId"
        ));
    }
}
