//! [`DeadLetterAdmin`] over the SQS dead-letter queues (decision 0085): the
//! API's `/dead-letters` routes on AWS. The queues are those `GET /health`
//! watches (`HEALTH_QUEUES`: each consumer's queue and its dead-letter
//! queue). SQS has no order and no random access, so
//!
//! - a listing is a look (visibility 0, [`receive`]) at up to `limit`
//!   messages of each dead-letter queue, with no next page;
//! - a letter is found by its SQS message id among up to
//!   [`SEARCHED`] messages of each queue;
//! - a redrive takes the message (hidden while it works), sends its event to
//!   the consumer's own queue as the rule delivers it ([`consumer_message`],
//!   what `crm-ops dlq redrive --to queue` does), then deletes it; the other
//!   messages it looked at are visible again at once. A letter a consumer
//!   of the group parked goes back for that consumer alone (the message
//!   attribute [`crate::ops::REDRIVE_CONSUMER_ATTRIBUTE`]; the function
//!   hands it to `EventHandler::handle_for`), so a failed redrive leaves
//!   one letter, not one more per consumer that refused the event; what the
//!   queue's redrive policy moved goes to the whole group. The relay's and the
//!   scheduler's letters (no source queue) go onto the bus given by
//!   [`SqsDeadLetters::with_bus`], as `crm-ops dlq redrive --to relay` and
//!   `--to scheduler` put them ([`put_relay_letter`]: the event the relay
//!   could not put; [`put_timer_letter`]: the timer the schedule could not
//!   deliver); the message is deleted once the bus took it, left (visible
//!   again) with the reason when not. Without a bus they are refused.

use crate::eventbridge::EventBridgeBus;
use crate::health::WatchedQueue;
use crate::ops::{
    consumer_message, delete, put_relay_letter, put_timer_letter, receive, release, send_to_consumer_queue, OpsError,
    QueuedLetter, SCHEDULER_CONSUMER,
};
use async_trait::async_trait;
use aws_sdk_sqs::error::DisplayErrorContext;
use chrono::{DateTime, Utc};
use crm_core::ports::{DeadLetter, DeadLetterAdmin, EventStore, ParkedLetter, ParkedPage, Redriven, StoreError};
use crm_core::relay::RELAY_CONSUMER;
use std::sync::Arc;

/// The most messages of one queue looked through for one letter.
pub const SEARCHED: usize = 100;

/// How long a redrive hides the messages it looks through.
const TAKE_SECONDS: i32 = 30;

/// The dead-letter queues of the watched consumers.
#[derive(Clone)]
pub struct SqsDeadLetters {
    sqs: aws_sdk_sqs::Client,
    queues: Vec<WatchedQueue>,
    bus: Option<BusRedrive>,
}

/// Where the relay's and the scheduler's letters go back to.
#[derive(Clone)]
struct BusRedrive {
    bus: EventBridgeBus,
    /// The events table as stored, for the relay's letters that carry only
    /// the event's key.
    stored: Arc<dyn EventStore>,
}

impl std::fmt::Debug for SqsDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsDeadLetters")
            .field("queues", &self.queues)
            .field("bus", &self.bus.as_ref().map(|b| b.bus.bus_name()))
            .finish_non_exhaustive()
    }
}

fn store(e: OpsError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl SqsDeadLetters {
    pub fn new(sqs: aws_sdk_sqs::Client, queues: Vec<WatchedQueue>) -> Self {
        SqsDeadLetters {
            sqs,
            queues: queues.into_iter().filter(|q| !q.dead_letter_url.is_empty()).collect(),
            bus: None,
        }
    }

    /// Redrives the relay's letters (the queue named [`RELAY_CONSUMER`])
    /// and the scheduler's ([`SCHEDULER_CONSUMER`]) onto `bus`; `stored`
    /// is the events table as stored (not decrypting: the bus carries the
    /// envelopes encrypted), read for a letter that holds only the key.
    pub fn with_bus(mut self, bus: EventBridgeBus, stored: Arc<dyn EventStore>) -> Self {
        self.bus = Some(BusRedrive { bus, stored });
        self
    }

    /// Puts a letter of a queue with no source queue on the bus: `None`
    /// when there is no bus, or the queue is neither the relay's nor the
    /// scheduler's.
    async fn put_on_bus(&self, queue: &WatchedQueue, letter: &QueuedLetter) -> Option<Result<(), String>> {
        let to = self.bus.as_ref()?;
        match queue.name.as_str() {
            RELAY_CONSUMER => Some(put_relay_letter(letter, to.stored.as_ref(), &to.bus).await),
            SCHEDULER_CONSUMER => Some(put_timer_letter(letter, &to.bus).await),
            _ => None,
        }
    }

    async fn find(&self, id: &str, visibility: i32) -> Result<Option<(&WatchedQueue, QueuedLetter)>, StoreError> {
        for queue in &self.queues {
            let seen = receive(&self.sqs, &queue.dead_letter_url, SEARCHED, visibility)
                .await
                .map_err(store)?;
            let mut found = None;
            for letter in seen {
                if found.is_none() && letter.message_id == id {
                    found = Some(letter);
                } else if visibility > 0 {
                    release(&self.sqs, &queue.dead_letter_url, &letter).await;
                }
            }
            if let Some(letter) = found {
                return Ok(Some((queue, letter)));
            }
        }
        Ok(None)
    }
}

/// A message of `queue`'s dead-letter queue as a parked letter: the letter
/// it holds (parked by a handler), or the event the redrive policy moved.
fn parked(queue: &WatchedQueue, m: &QueuedLetter) -> ParkedLetter {
    let letter = match serde_json::from_value::<DeadLetter>(m.body.clone()) {
        Ok(l) => l,
        Err(_) => DeadLetter {
            consumer: queue.name.clone(),
            reason: m.reason.clone(),
            payload: m.body.clone(),
            failed_at: m
                .body
                .get("time")
                .and_then(serde_json::Value::as_str)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(DateTime::<Utc>::UNIX_EPOCH),
            attempts: 0,
        },
    };
    ParkedLetter {
        id: m.message_id.clone(),
        letter: DeadLetter {
            consumer: if m.consumer == "-" {
                queue.name.clone()
            } else {
                m.consumer.clone()
            },
            reason: m.reason.clone(),
            ..letter
        },
    }
}

#[async_trait]
impl DeadLetterAdmin for SqsDeadLetters {
    async fn list(&self, _after: Option<&str>, limit: usize) -> Result<ParkedPage, StoreError> {
        let mut items = Vec::new();
        for queue in &self.queues {
            if items.len() >= limit {
                break;
            }
            let seen = receive(&self.sqs, &queue.dead_letter_url, limit - items.len(), 0)
                .await
                .map_err(store)?;
            items.extend(seen.iter().map(|m| parked(queue, m)));
        }
        Ok(ParkedPage { items, next: None })
    }

    async fn get(&self, id: &str) -> Result<Option<ParkedLetter>, StoreError> {
        Ok(self.find(id, 0).await?.map(|(queue, m)| parked(queue, &m)))
    }

    async fn redrive(&self, id: &str) -> Result<Redriven, StoreError> {
        let Some((queue, letter)) = self.find(id, TAKE_SECONDS).await? else {
            return Ok(Redriven::NotFound);
        };
        let dlq = &queue.dead_letter_url;
        if queue.queue_url.is_empty() {
            // The relay's and the scheduler's: back onto the bus, deleted
            // only once the bus took it.
            return match self.put_on_bus(queue, &letter).await {
                Some(Ok(())) => {
                    delete(&self.sqs, dlq, &letter).await.map_err(store)?;
                    Ok(Redriven::Done)
                }
                Some(Err(why)) => {
                    release(&self.sqs, dlq, &letter).await;
                    Ok(Redriven::Failed(why))
                }
                None => {
                    release(&self.sqs, dlq, &letter).await;
                    Ok(Redriven::Failed(format!(
                        "{} has no queue to send it back to: use crm-ops dlq redrive",
                        queue.name
                    )))
                }
            };
        }
        let (account, region) = crate::ops::account_and_region(&queue.queue_url);
        let region = region
            .or_else(|| self.sqs.config().region().map(|r| r.to_string()))
            .unwrap_or_else(|| "us-east-1".into());
        let body = match consumer_message(&letter, account.as_deref().unwrap_or("000000000000"), &region) {
            Ok(body) => body,
            Err(why) => {
                release(&self.sqs, dlq, &letter).await;
                return Ok(Redriven::Failed(why));
            }
        };
        // For the consumer that parked it alone; a letter under the
        // function's name (the redrive policy's) for the whole group.
        let consumer = letter.redrive_for.as_deref().filter(|c| *c != queue.name);
        if let Err(why) = send_to_consumer_queue(&self.sqs, &queue.queue_url, body, consumer).await {
            release(&self.sqs, dlq, &letter).await;
            return Err(StoreError::Unavailable(why));
        }
        delete(&self.sqs, dlq, &letter).await.map_err(store)?;
        Ok(Redriven::Done)
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for queue in &self.queues {
            let out = self
                .sqs
                .get_queue_attributes()
                .queue_url(&queue.dead_letter_url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
                .send()
                .await
                .map_err(|e| StoreError::Unavailable(format!("GetQueueAttributes: {}", DisplayErrorContext(&e))))?;
            total += out
                .attributes()
                .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }
}
