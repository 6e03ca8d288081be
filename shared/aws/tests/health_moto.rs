//! The consumers' health on AWS (issue 15) against moto: queue and
//! dead-letter depths from SQS, lags from the consumers' progress records
//! in the read-models table.

use chrono::{Duration, Utc};
use crm_aws::dynamodb::create_read_models_table;
use crm_aws::health::{DynamoProgressLog, QueueHealth, WatchedQueue};
use crm_aws::testing::{create_queue as queue, dynamodb_client, sqs_client};
use crm_core::ports::{ConsumerHealth, ConsumerProgress, ProgressLog, ProgressReporter};
use std::sync::Arc;

#[tokio::test]
async fn depths_come_from_the_queues_and_a_dead_letter_degrades() {
    let sqs = sqs_client().await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let projector = queue(&sqs, &format!("health-projector-{run}")).await;
    let projector_dlq = queue(&sqs, &format!("health-projector-dlq-{run}")).await;
    let consent = queue(&sqs, &format!("health-consent-{run}")).await;
    let consent_dlq = queue(&sqs, &format!("health-consent-dlq-{run}")).await;
    let relay_dlq = queue(&sqs, &format!("health-relay-dlq-{run}")).await;
    for _ in 0..3 {
        sqs.send_message()
            .queue_url(&projector)
            .message_body("{}")
            .send()
            .await
            .expect("sent");
    }
    sqs.send_message()
        .queue_url(&consent_dlq)
        .message_body("{}")
        .send()
        .await
        .expect("sent");
    let queues = WatchedQueue::parse_all(&format!(
        "projector={projector}|{projector_dlq},consent={consent}|{consent_dlq},relay=|{relay_dlq}"
    ))
    .expect("queues");
    let health = QueueHealth::new(sqs.clone(), queues);
    let statuses = health.consumers().await.expect("health");
    let by_name = |name: &str| statuses.iter().find(|s| s.name == name).expect(name).clone();
    let p = by_name("projector");
    assert_eq!((p.lag, p.dead_letters), (3, 0), "{statuses:?}");
    assert!(!p.is_degraded(), "a queue with messages is working, not degraded");
    let c = by_name("consent");
    assert_eq!((c.lag, c.dead_letters), (0, 1), "{statuses:?}");
    assert!(c.is_degraded(), "a dead letter is degraded");
    let r = by_name("relay");
    assert_eq!((r.lag, r.dead_letters), (0, 0), "{statuses:?}");
    assert!(!r.is_degraded());

    // Within a minute the answer is reused: no new reads.
    sqs.send_message()
        .queue_url(&projector)
        .message_body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(health.consumers().await.expect("health"), statuses);
}

#[tokio::test]
async fn lags_come_from_the_consumers_progress_and_a_silent_consumer_with_waiting_messages_degrades() {
    let sqs = sqs_client().await;
    let dynamodb = dynamodb_client().await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("health-rm-{run}");
    create_read_models_table(&dynamodb, &table).await.expect("table");
    let log = Arc::new(DynamoProgressLog::new(dynamodb.clone(), &table));
    assert_eq!(log.latest("campaign").await.expect("read"), None);

    // The campaign consumer handled a batch 200 s ago and has been silent
    // since, while a message waits; the channel handled one just now whose
    // oldest message had waited 3 s; the relay's last batch was 75 s old.
    let now = Utc::now();
    let campaign = ProgressReporter::new(log.clone(), "campaign");
    assert!(
        campaign
            .batch_handled(Some(now - Duration::seconds(201)), now - Duration::seconds(200))
            .await
    );
    let channel = ProgressReporter::new(log.clone(), "channel");
    assert!(channel.batch_handled(Some(now - Duration::seconds(3)), now).await);
    log.record(&ConsumerProgress {
        consumer: "relay".into(),
        at: now,
        oldest_age_seconds: 75,
    })
    .await
    .expect("recorded");
    let read = log.latest("channel").await.expect("read").expect("written");
    assert_eq!((read.consumer.as_str(), read.oldest_age_seconds), ("channel", 3));

    let campaign_q = queue(&sqs, &format!("health-campaign-{run}")).await;
    let channel_q = queue(&sqs, &format!("health-channel-{run}")).await;
    let dlqs: Vec<String> = dead_letter_queues(&sqs, &run).await;
    for url in [&campaign_q, &channel_q] {
        sqs.send_message()
            .queue_url(url)
            .message_body("{}")
            .send()
            .await
            .expect("sent");
    }
    let queues = WatchedQueue::parse_all(&format!(
        "campaign={campaign_q}|{},channel={channel_q}|{},relay=|{}",
        dlqs[0], dlqs[1], dlqs[2]
    ))
    .expect("queues");
    let health = QueueHealth::new(sqs.clone(), queues).with_progress(log);
    let statuses = health.consumers().await.expect("health");
    let by_name = |name: &str| statuses.iter().find(|s| s.name == name).expect(name).clone();
    let campaign = by_name("campaign");
    assert!(campaign.lag_seconds.is_some_and(|s| s >= 170), "{statuses:?}");
    assert!(campaign.is_degraded(), "silent for 200 s while a message waits");
    let channel = by_name("channel");
    assert_eq!(channel.lag_seconds, Some(3), "{statuses:?}");
    assert!(!channel.is_degraded());
    let relay = by_name("relay");
    assert_eq!(relay.lag_seconds, Some(75), "{statuses:?}");
    assert!(relay.is_degraded(), "an iterator age over 60 s");
}

async fn dead_letter_queues(sqs: &aws_sdk_sqs::Client, run: &str) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["campaign", "channel", "relay"] {
        out.push(queue(sqs, &format!("health-{name}-dlq-{run}")).await);
    }
    out
}
