//! `crm-ops migrate-timers` and `crm-ops rewrap-keys` (decision 0049)
//! against moto (`AWS_ENDPOINT_URL`; scripts/test starts one), through the
//! binary: schedules set as the channel set them before decision 0041, and
//! data keys stored as KMS wrapped them before decision 0044, with
//! distinctive personal values; after the migration, what the real SDK reads
//! back holds none of them and still works, and a second run changes nothing.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_scheduler::types::{FlexibleTimeWindow, FlexibleTimeWindowMode, Target};
use chrono::{DateTime, Duration, SubsecRound, Utc};
use crm_aws::keys::{DynamoKmsKeyStore, BRANCH_KEY_ID, CONTEXT_CUSTOMER_ID, KMS_KEY_ID, PK, WRAPPED_KEY};
use crm_aws::scheduler::EventBridgeScheduler;
use crm_aws::testing::{dynamodb_client, fresh_data_keys, get_item, moto_endpoint, scheduler_client};
use crm_core::messaging::delivery::MessageTimer;
use crm_core::messaging::events::RequestRef;
use crm_core::privacy::{decrypt_field, encrypt_field, DataKey, KeyStore};
use crm_core::scheduler::{timer_name, Scheduler, TimerKind, TimerPayload};
use std::process::{Command, Output};
use uuid::Uuid;

const BUS_ARN: &str = "arn:aws:events:us-east-1:123456789012:event-bus/crm-migrate-test";
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/crm-migrate-test-scheduler";
const DLQ_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:crm-migrate-test-scheduler-dlq";
const EMAIL: &str = "deferred.welcome.q7k2w9@example.com";
const IP: &str = "198.51.100.213";

/// `crm-ops <args>` against moto, with `env` set.
fn crm_ops(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crm-ops"));
    command
        .args(args)
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run crm-ops")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn succeeded(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

/// The scheduler adapter over a new schedule group.
async fn fresh_group() -> EventBridgeScheduler {
    let client = scheduler_client().await;
    let group = format!("crm-migrate-{}", Uuid::now_v7().simple());
    client
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .expect("create the schedule group");
    EventBridgeScheduler::new(client, group, BUS_ARN, ROLE_ARN, Some(DLQ_ARN.to_string()))
}

/// A deferral timer as the channel set them before decision 0041: its data
/// is the message request, whose `data` is the trigger event (a
/// registration, with the customer's email and IP).
fn deferral_with_request(message_id: &str, instance_id: &str, due_at: DateTime<Utc>) -> TimerPayload {
    TimerPayload {
        name: timer_name(TimerKind::MessageDeferral, &[message_id]),
        kind: TimerKind::MessageDeferral,
        stream_id: format!("message-{message_id}"),
        customer_id: Some("cus-migrate-1".into()),
        due_at: due_at.trunc_subsecs(0),
        set_at_version: 2,
        data: serde_json::json!({
            "message_id": message_id,
            "instance_id": instance_id,
            "campaign_id": "welcome",
            "campaign_version": 1,
            "step_id": "send-welcome",
            "customer_id": "cus-migrate-1",
            "channel": "email",
            "template": "welcome",
            "category": "transactional",
            "data": {
                "email": EMAIL,
                "first_name": "Deferredwelcomefirstname",
                "ip": IP,
                "user_agent": "Mozilla/5.0 (MigrateTimersAgent 9.9)"
            }
        }),
    }
}

/// The raw schedule's Input, and the schedule as GetSchedule answers it.
async fn raw(
    scheduler: &EventBridgeScheduler,
    name: &str,
) -> aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput {
    scheduler
        .client
        .get_schedule()
        .name(name)
        .group_name(&scheduler.group)
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {name}: {e:?}"))
}

fn input(schedule: &aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput) -> String {
    schedule.target().and_then(|t| t.input()).expect("an Input").to_string()
}

#[tokio::test]
async fn migrate_timers_rewrites_deferrals_holding_their_request_and_nothing_else() {
    let scheduler = fresh_group().await;
    let due = Utc::now() + Duration::hours(9);
    let old = deferral_with_request("msg-migrate-1", "inst-migrate-1", due);
    scheduler.schedule(old.clone()).await.expect("a v1 deferral");
    // A deferral set after decision 0041: already a reference.
    let current = TimerPayload {
        name: timer_name(TimerKind::MessageDeferral, &["msg-migrate-2"]),
        data: serde_json::json!({"deferral": {"message_id": "msg-migrate-2", "stream_id": "journey-inst-2", "version": 4}}),
        ..old.clone()
    };
    scheduler.schedule(current.clone()).await.expect("a v2 deferral");
    // Another kind of timer.
    let cart = TimerPayload {
        name: timer_name(TimerKind::CartInactivity, &["cart-migrate-1"]),
        kind: TimerKind::CartInactivity,
        stream_id: "cart-migrate-1".into(),
        data: serde_json::json!({"minutes": 30}),
        ..old.clone()
    };
    scheduler.schedule(cart.clone()).await.expect("a cart timer");
    // A schedule that holds no timer (the journey sweep's kind).
    scheduler
        .client
        .create_schedule()
        .name("crm-sweep")
        .group_name(&scheduler.group)
        .schedule_expression("rate(10 minutes)")
        .flexible_time_window(
            FlexibleTimeWindow::builder()
                .mode(FlexibleTimeWindowMode::Off)
                .build()
                .expect("window"),
        )
        .target(
            Target::builder()
                .arn(BUS_ARN)
                .role_arn(ROLE_ARN)
                .input(r#"{"sweep":true}"#)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("the sweep schedule");
    let before = raw(&scheduler, &old.name).await;
    assert!(input(&before).contains(EMAIL), "the copy is there before");
    let cart_before = input(&raw(&scheduler, &cart.name).await);

    let env = [("SCHEDULE_GROUP", scheduler.group.as_str())];
    let out = succeeded(&crm_ops(&["migrate-timers"], &env));
    assert!(
        out.contains("listed 4 schedules: rewritten 1, already references 1, other 2, due (left) 0, gone 0, failed 0"),
        "{out}"
    );

    let after = raw(&scheduler, &old.name).await;
    let text = input(&after);
    for value in [EMAIL, IP, "Deferredwelcomefirstname", "MigrateTimersAgent"] {
        assert!(!text.contains(value), "{value} left in {text}");
    }
    let timer: TimerPayload = serde_json::from_str(&text).expect("a timer");
    assert_eq!(
        MessageTimer::of(&timer),
        Some(MessageTimer::Deferral(RequestRef {
            message_id: "msg-migrate-1".into(),
            stream_id: crm_core::journey::instance::stream_id("inst-migrate-1"),
            version: None,
        }))
    );
    assert_eq!(
        TimerPayload {
            data: old.data.clone(),
            ..timer
        },
        old,
        "same name, due time, stream and version"
    );
    // The same schedule: its expression and target but the Input.
    assert_eq!(after.schedule_expression(), before.schedule_expression());
    assert_eq!(
        after.schedule_expression_timezone(),
        before.schedule_expression_timezone()
    );
    assert_eq!(after.action_after_completion(), before.action_after_completion());
    let (t_before, t_after) = (before.target().expect("target"), after.target().expect("target"));
    assert_eq!(t_after.arn(), t_before.arn());
    assert_eq!(t_after.role_arn(), t_before.role_arn());
    assert_eq!(t_after.dead_letter_config(), t_before.dead_letter_config());
    assert_eq!(t_after.retry_policy(), t_before.retry_policy());
    // The others are as they were.
    assert_eq!(scheduler.get(&current.name).await.expect("get"), Some(current));
    assert_eq!(input(&raw(&scheduler, &cart.name).await), cart_before);
    assert_eq!(input(&raw(&scheduler, "crm-sweep").await), r#"{"sweep":true}"#);

    // Again: nothing to do.
    let again = succeeded(&crm_ops(&["migrate-timers", "--group", &scheduler.group], &[]));
    assert!(
        again.contains("listed 4 schedules: rewritten 0, already references 2, other 2"),
        "{again}"
    );
    assert_eq!(input(&raw(&scheduler, &old.name).await), text);
}

#[tokio::test]
async fn migrate_timers_leaves_a_deferral_already_due_to_fire_from_its_copy() {
    let scheduler = fresh_group().await;
    let due = deferral_with_request("msg-due-1", "inst-due-1", Utc::now() - Duration::minutes(1));
    scheduler.schedule(due.clone()).await.expect("a v1 deferral, due");
    let env = [("SCHEDULE_GROUP", scheduler.group.as_str())];
    let out = succeeded(&crm_ops(&["migrate-timers"], &env));
    assert!(out.contains("rewritten 0") && out.contains("due (left) 1"), "{out}");
    assert_eq!(scheduler.get(&due.name).await.expect("get"), Some(due));
}

/// A KMS key (its alias) and a keys table of their own.
async fn key_parts() -> (aws_sdk_kms::Client, String, String) {
    let keys = fresh_data_keys("rewrap").await;
    (keys.kms, keys.alias, keys.table)
}

/// A customer's key stored as KMS wrapped it before decision 0044.
async fn kms_wrapped_key(kms: &aws_sdk_kms::Client, alias: &str, table: &str, customer: &str) -> DataKey {
    let generated = kms
        .generate_data_key()
        .key_id(alias)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context(CONTEXT_CUSTOMER_ID, customer)
        .send()
        .await
        .expect("generate");
    dynamodb_client()
        .await
        .put_item()
        .table_name(table)
        .item(PK, AttributeValue::S(customer.into()))
        .item(
            WRAPPED_KEY,
            AttributeValue::B(Blob::new(generated.ciphertext_blob().expect("blob").as_ref().to_vec())),
        )
        .item(KMS_KEY_ID, AttributeValue::S(generated.key_id().expect("id").into()))
        .send()
        .await
        .expect("put");
    DataKey::from_slice(generated.plaintext().expect("plaintext").as_ref()).expect("32 bytes")
}

#[tokio::test]
async fn rewrap_keys_rewraps_kms_wrapped_keys_once_and_what_they_encrypted_still_decrypts() {
    let (kms, alias, table) = key_parts().await;
    let customers: Vec<String> = (0..2).map(|_| Uuid::new_v4().to_string()).collect();
    let mut sealed = Vec::new();
    for id in &customers {
        let key = kms_wrapped_key(&kms, &alias, &table, id).await;
        sealed.push(encrypt_field(&key, id, "email", EMAIL).expect("encrypt"));
    }
    let env = [("KEYS_TABLE", table.as_str()), ("DATA_KEYS_KMS_KEY_ID", alias.as_str())];
    let out = succeeded(&crm_ops(&["rewrap-keys"], &env));
    assert!(
        out.contains("rewrapped 2, already under a branch key 0, branch key items 0, erased meanwhile 0"),
        "{out}"
    );
    let dynamodb = dynamodb_client().await;
    for id in &customers {
        let item = get_item(&dynamodb, &table, [(PK, AttributeValue::S(id.clone()))])
            .await
            .expect("the item");
        assert!(item.contains_key(BRANCH_KEY_ID), "{id}: {item:?}");
        assert!(!item.contains_key(KMS_KEY_ID), "{id}: {item:?}");
    }
    let store = DynamoKmsKeyStore::new(dynamodb, kms, table.clone(), alias.clone());
    for (id, text) in customers.iter().zip(&sealed) {
        let key = store.existing_key(id).await.expect("read").expect("a key");
        assert_eq!(decrypt_field(&key, id, "email", text).expect("decrypts"), EMAIL);
    }

    let again = succeeded(&crm_ops(&["rewrap-keys"], &env));
    assert!(
        again.contains("rewrapped 0, already under a branch key 2, branch key items 2"),
        "{again}"
    );
}
