//! The consumers' health on AWS (issue 15) against moto: queue and
//! dead-letter depths from SQS.

use crm_aws::health::{QueueHealth, WatchedQueue};
use crm_aws::testing::sqs_client;
use crm_core::ports::ConsumerHealth;

async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url")
}

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
