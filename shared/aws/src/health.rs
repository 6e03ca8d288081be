//! `crm_core::ports::ConsumerHealth` on AWS (issue 15): for each consumer,
//! the depth of its SQS queue (messages waiting and in flight) and of its
//! dead-letter queue; for the relay, its dead-letter queue. Depths come from
//! one `GetQueueAttributes` per queue, and an answer is kept for
//! [`QueueHealth::CACHE_FOR`] within the function instance, so a polled
//! `/health` costs a few SQS requests a minute.
//!
//! The age of a queue's oldest message and the relay's iterator age exist
//! only as CloudWatch metrics, which the CloudWatch alarms of template.yaml
//! watch (decision 0029 says why `/health` does not read them). Instead each
//! consumer function leaves its own [`ConsumerProgress`] in the read-models
//! table ([`DynamoProgressLog`]: item `progress` / consumer name, a few
//! writes a minute at most), and the lag `/health` reports comes from it
//! ([`ConsumerProgress::lag_at`]).

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use chrono::{DateTime, Duration, Utc};
use crm_core::ports::{ConsumerHealth, ConsumerProgress, ConsumerStatus, ProgressLog, StoreError};
use std::sync::{Arc, Mutex};

/// [`ProgressLog`] on the read-models table: one item per consumer,
/// partition `progress`, sort key the consumer's name.
pub struct DynamoProgressLog {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoProgressLog {
    pub const PARTITION: &'static str = "progress";

    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoProgressLog {
            client,
            table: table.into(),
        }
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

#[async_trait]
impl ProgressLog for DynamoProgressLog {
    async fn record(&self, progress: &ConsumerProgress) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(Self::PARTITION.into()))
            .item("sk", AttributeValue::S(progress.consumer.clone()))
            .item("at", AttributeValue::S(progress.at.to_rfc3339()))
            .item(
                "oldest_age_seconds",
                AttributeValue::N(progress.oldest_age_seconds.to_string()),
            )
            .send()
            .await
            .map_err(|e| unavailable("PutItem progress", aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
        Ok(())
    }

    async fn latest(&self, consumer: &str) -> Result<Option<ConsumerProgress>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(Self::PARTITION.into()))
            .key("sk", AttributeValue::S(consumer.to_string()))
            .send()
            .await
            .map_err(|e| unavailable("GetItem progress", aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
        let Some(item) = out.item else { return Ok(None) };
        let at = item
            .get("at")
            .and_then(|v| v.as_s().ok())
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|v| v.with_timezone(&Utc));
        let age = item
            .get("oldest_age_seconds")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match (at, age) {
            (Some(at), Some(oldest_age_seconds)) => Ok(Some(ConsumerProgress {
                consumer: consumer.to_string(),
                at,
                oldest_age_seconds,
            })),
            _ => Err(StoreError::Failed(format!(
                "progress item of {consumer} is not readable"
            ))),
        }
    }
}

/// A consumer's queue and dead-letter queue (URLs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedQueue {
    pub name: String,
    /// Empty for the relay, which reads the events table's stream.
    pub queue_url: String,
    pub dead_letter_url: String,
}

/// Why a `HEALTH_QUEUES` setting cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("HEALTH_QUEUES entry {0:?} is not name=queue-url|dead-letter-url")]
pub struct HealthConfigError(pub String);

impl WatchedQueue {
    /// `name=queue-url|dead-letter-url,...` (the relay's queue URL empty).
    pub fn parse_all(text: &str) -> Result<Vec<WatchedQueue>, HealthConfigError> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let bad = || HealthConfigError(entry.to_string());
                let (name, urls) = entry.split_once('=').ok_or_else(bad)?;
                let (queue_url, dead_letter_url) = urls.split_once('|').ok_or_else(bad)?;
                if name.trim().is_empty() || dead_letter_url.trim().is_empty() {
                    return Err(bad());
                }
                Ok(WatchedQueue {
                    name: name.trim().to_string(),
                    queue_url: queue_url.trim().to_string(),
                    dead_letter_url: dead_letter_url.trim().to_string(),
                })
            })
            .collect()
    }
}

/// The health of the consumer queues and the relay.
pub struct QueueHealth {
    sqs: aws_sdk_sqs::Client,
    queues: Vec<WatchedQueue>,
    progress: Option<Arc<dyn ProgressLog>>,
    cached: Mutex<Option<(DateTime<Utc>, Vec<ConsumerStatus>)>>,
}

impl QueueHealth {
    /// How long an answer is reused.
    pub const CACHE_FOR: Duration = Duration::seconds(60);

    pub fn new(sqs: aws_sdk_sqs::Client, queues: Vec<WatchedQueue>) -> Self {
        QueueHealth {
            sqs,
            queues,
            progress: None,
            cached: Mutex::new(None),
        }
    }

    /// Lags from the consumers' [`ConsumerProgress`] in `progress`.
    pub fn with_progress(mut self, progress: Arc<dyn ProgressLog>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Messages in `url`: visible and in flight.
    async fn depth(&self, url: &str) -> Result<u64, StoreError> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "GetQueueAttributes {url}: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(&e)
                ))
            })?;
        let attributes = out.attributes.unwrap_or_default();
        let count = |name: QueueAttributeName| attributes.get(&name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
    }

    async fn measure(&self, now: DateTime<Utc>) -> Result<Vec<ConsumerStatus>, StoreError> {
        let mut out = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            let relay = queue.queue_url.is_empty();
            let lag = if relay { 0 } else { self.depth(&queue.queue_url).await? };
            let lag_seconds = match &self.progress {
                None => None,
                Some(log) => log.latest(&queue.name).await?.map(|p| {
                    // The relay's stream has no depth to ask for: its last
                    // iterator age stands while it is recent.
                    let waiting = if relay { 1 } else { lag };
                    p.lag_at(now, waiting)
                }),
            };
            out.push(ConsumerStatus {
                name: queue.name.clone(),
                lag,
                dead_letters: self.depth(&queue.dead_letter_url).await?,
                lag_seconds,
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl ConsumerHealth for QueueHealth {
    async fn consumers(&self) -> Result<Vec<ConsumerStatus>, StoreError> {
        let now = Utc::now();
        if let Ok(cached) = self.cached.lock() {
            if let Some((at, statuses)) = cached.as_ref() {
                if now - *at < Self::CACHE_FOR {
                    return Ok(statuses.clone());
                }
            }
        }
        let statuses = self.measure(now).await?;
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some((now, statuses.clone()));
        }
        Ok(statuses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_queues_are_name_queue_and_dead_letter_urls() {
        let parsed = WatchedQueue::parse_all(
            "projector=https://sqs/1/crm-p|https://sqs/1/crm-p-dlq, relay=|https://sqs/1/crm-r-dlq,",
        )
        .expect("parsed");
        assert_eq!(
            parsed,
            vec![
                WatchedQueue {
                    name: "projector".into(),
                    queue_url: "https://sqs/1/crm-p".into(),
                    dead_letter_url: "https://sqs/1/crm-p-dlq".into(),
                },
                WatchedQueue {
                    name: "relay".into(),
                    queue_url: String::new(),
                    dead_letter_url: "https://sqs/1/crm-r-dlq".into(),
                },
            ]
        );
        assert_eq!(WatchedQueue::parse_all("").expect("none"), vec![]);
        for bad in ["projector", "projector=https://q", "=a|b", "p=a|"] {
            assert!(WatchedQueue::parse_all(bad).is_err(), "{bad}");
        }
    }
}
