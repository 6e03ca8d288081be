//! The refused-messages log on the read-models table (decision 0053),
//! through the real SDK against moto: the shared contract, and the item as
//! DynamoDB keeps it (its TTL attribute, its partition).

use crm_aws::dynamodb::create_read_models_table;
use crm_aws::refusals::{DynamoRefusals, KIND_REFUSAL, PARTITION_PREFIX};
use crm_aws::testing::dynamodb_client;
use crm_core::ingest::refusals::{contract, Refusal, RefusalLog};
use crm_core::ingest::Rejection;
use serde_json::json;
use std::sync::Arc;

async fn fresh(prefix: &str) -> (aws_sdk_dynamodb::Client, String) {
    let client = dynamodb_client().await;
    let table = format!("{prefix}-{}", uuid::Uuid::new_v4().simple());
    create_read_models_table(&client, &table).await.expect("table");
    (client, table)
}

#[tokio::test]
async fn the_dynamodb_log_passes_the_contract() {
    let (client, table) = fresh("refusals-contract").await;
    contract::check(Arc::new(DynamoRefusals::new(client, table))).await;
}

#[tokio::test]
async fn an_item_carries_its_ttl_and_lives_in_the_source_s_partition() {
    let (client, table) = fresh("refusals-item").await;
    let log = DynamoRefusals::new(client.clone(), &table);
    let now = chrono::Utc::now();
    let refusal = Refusal::new(
        "shop",
        &json!({ "type": "track", "messageId": "m-1", "userId": "ada@example.com" }),
        None,
        &Rejection::new("event", "is required"),
        None,
        now,
    );
    log.record(&refusal).await.expect("recorded");
    let item = client
        .get_item()
        .table_name(&table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("{PARTITION_PREFIX}shop")),
        )
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(refusal.cursor()))
        .send()
        .await
        .expect("get")
        .item
        .expect("the item");
    assert_eq!(
        item.get("expires_at").and_then(|v| v.as_n().ok()).map(String::as_str),
        Some((now + chrono::Duration::days(7)).timestamp().to_string().as_str())
    );
    assert_eq!(
        item.get("kind").and_then(|v| v.as_s().ok()).map(String::as_str),
        Some(KIND_REFUSAL)
    );
    let body = item.get("body").and_then(|v| v.as_s().ok()).expect("body");
    assert!(!body.contains("ada@"), "no address stored: {body}");
    let listed = log.list("shop", None, 10, now).await.expect("listed");
    assert_eq!(listed.refusals, vec![refusal]);
}
