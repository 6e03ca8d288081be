//! AWS wire tests: the EventBridge Scheduler adapter against the endpoint in
//! `AWS_ENDPOINT_URL` (a moto server, started through
//! `scripts/moto_server.py`). Every test gets a schedule group of its own.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use crm_aws::scheduler::{at_expression, EventBridgeScheduler};
use crm_aws::testing::scheduler_client;
use crm_core::scheduler::{timer_name, Scheduler, TimerKind, TimerPayload};
use uuid::Uuid;

const BUS_ARN: &str = "arn:aws:events:us-east-1:123456789012:event-bus/crm-test";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/crm-test-scheduler";
const DLQ_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:crm-test-scheduler-dlq";

/// An adapter over a new schedule group (moto wants the group to exist).
async fn fresh_scheduler() -> EventBridgeScheduler {
    let client = scheduler_client().await;
    let group = format!("crm-test-{}", Uuid::now_v7().simple());
    client
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .expect("create the schedule group");
    EventBridgeScheduler::new(client, group, BUS_ARN, ROLE_ARN, Some(DLQ_ARN.to_string()))
}

fn timer(stream: &str, due_at: DateTime<Utc>, version: u64) -> TimerPayload {
    TimerPayload {
        name: timer_name(TimerKind::CartInactivity, &[stream]),
        kind: TimerKind::CartInactivity,
        stream_id: stream.to_string(),
        customer_id: Some("cus-1".into()),
        // Schedules are to the second.
        due_at: due_at.trunc_subsecs(0),
        set_at_version: version,
        data: serde_json::json!({ "minutes": 30 }),
    }
}

#[tokio::test]
async fn schedules_round_trip_and_replace() {
    let scheduler = fresh_scheduler().await;
    let due = Utc::now() + Duration::minutes(30);
    let first = timer("cart-1", due, 3);
    scheduler.schedule(first.clone()).await.expect("create");
    assert_eq!(scheduler.get(&first.name).await.expect("get"), Some(first.clone()));

    let raw = scheduler
        .client
        .get_schedule()
        .name(&first.name)
        .group_name(&scheduler.group)
        .send()
        .await
        .expect("raw get");
    assert_eq!(raw.schedule_expression(), Some(at_expression(first.due_at).as_str()));
    let target = raw.target().expect("target");
    assert_eq!(target.arn(), BUS_ARN);
    assert_eq!(target.role_arn(), ROLE_ARN);
    assert_eq!(target.dead_letter_config().and_then(|d| d.arn()), Some(DLQ_ARN));

    // Same name again: replaced, not refused.
    let second = timer("cart-1", due + Duration::minutes(15), 5);
    scheduler.schedule(second.clone()).await.expect("replace");
    let got = scheduler.get(&second.name).await.expect("get").expect("still there");
    assert_eq!(got, second);
    assert_ne!(got.due_at, first.due_at);
    // And again: repeating is safe.
    scheduler.schedule(second.clone()).await.expect("repeat");
    assert_eq!(scheduler.get(&second.name).await.expect("get"), Some(second));
}

#[tokio::test]
async fn cancel_deletes_and_missing_is_fine() {
    let scheduler = fresh_scheduler().await;
    let t = timer("cart-2", Utc::now() + Duration::hours(1), 1);
    scheduler.schedule(t.clone()).await.expect("create");
    scheduler.cancel(&t.name).await.expect("delete");
    assert_eq!(scheduler.get(&t.name).await.expect("get"), None);
    scheduler.cancel(&t.name).await.expect("delete again");
    scheduler.cancel("crm-ci-never-set").await.expect("delete missing");
    assert_eq!(scheduler.get("crm-ci-never-set").await.expect("get missing"), None);
}

#[tokio::test]
async fn a_timer_scheduled_here_is_replaced_and_one_gone_elsewhere_is_created_again() {
    let scheduler = fresh_scheduler().await;
    // Another instance over the same group (it never scheduled the timer).
    let other = EventBridgeScheduler::new(
        scheduler.client.clone(),
        scheduler.group.clone(),
        BUS_ARN,
        ROLE_ARN,
        Some(DLQ_ARN.to_string()),
    );
    let due = Utc::now() + Duration::minutes(30);
    let first = timer("cart-7", due, 1);
    scheduler.schedule(first.clone()).await.expect("create");
    // Rescheduled here: replaced (UpdateSchedule first).
    let later = timer("cart-7", due + Duration::minutes(5), 2);
    scheduler.schedule(later.clone()).await.expect("replace");
    assert_eq!(scheduler.get(&later.name).await.expect("get"), Some(later.clone()));
    // Rescheduled by the other instance: it exists, so it is replaced there too.
    let third = timer("cart-7", due + Duration::minutes(9), 3);
    other.schedule(third.clone()).await.expect("replace elsewhere");
    assert_eq!(scheduler.get(&third.name).await.expect("get"), Some(third.clone()));
    // Gone elsewhere (fired or cancelled): scheduling here creates it again.
    other.cancel(&third.name).await.expect("cancel elsewhere");
    let fourth = timer("cart-7", due + Duration::minutes(12), 4);
    scheduler.schedule(fourth.clone()).await.expect("created again");
    assert_eq!(scheduler.get(&fourth.name).await.expect("get"), Some(fourth));
}
