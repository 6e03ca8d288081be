//! AWS wire tests: the DynamoDB + KMS key store against the moto server in
//! `AWS_ENDPOINT_URL` (scripts/test starts one). Every test gets a KMS key
//! and a `keys` table of its own.

use aws_sdk_dynamodb::types::AttributeValue;
use crm_aws::keys::{create_keys_table, DynamoKmsKeyStore, KMS_KEY_ID, PK, WRAPPED_KEY};
use crm_aws::testing::{dynamodb_client, get_item, kms_client};
use crm_core::privacy::{decrypt_field, encrypt_field, CryptoError, KeyError, KeyStore};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// A new symmetric KMS key with an alias, and a new keys table.
async fn fresh_parts() -> (aws_sdk_dynamodb::Client, aws_sdk_kms::Client, String, String) {
    let dynamodb = dynamodb_client().await;
    let kms = kms_client().await;
    let suffix = Uuid::now_v7().simple().to_string();
    let key = kms
        .create_key()
        .description("crm test data keys")
        .send()
        .await
        .expect("create a KMS key");
    let key_id = key.key_metadata().expect("metadata").key_id().to_string();
    let alias = format!("alias/crm-test-{suffix}");
    kms.create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .expect("create the alias");
    let table = format!("keys-test-{suffix}");
    create_keys_table(&dynamodb, &table)
        .await
        .expect("create the keys table");
    (dynamodb, kms, table, alias)
}

async fn fresh_store() -> Arc<dyn KeyStore> {
    let (dynamodb, kms, table, alias) = fresh_parts().await;
    Arc::new(DynamoKmsKeyStore::new(dynamodb, kms, table, alias))
}

crm_core::key_store_contract!(fresh_store);

/// With no cache, so every call goes to DynamoDB and KMS.
async fn fresh_uncached() -> DynamoKmsKeyStore {
    let (dynamodb, kms, table, alias) = fresh_parts().await;
    DynamoKmsKeyStore::new(dynamodb, kms, table, alias).with_cache_ttl(Duration::ZERO)
}

async fn raw_item(
    store: &DynamoKmsKeyStore,
    customer_id: &str,
) -> Option<std::collections::HashMap<String, AttributeValue>> {
    get_item(
        store.dynamodb(),
        store.table(),
        [(PK, AttributeValue::S(customer_id.into()))],
    )
    .await
}

#[tokio::test]
async fn the_item_holds_the_kms_wrapped_key_only() {
    let store = fresh_uncached().await;
    let key = store.data_key("cus-1").await.expect("create");
    let item = raw_item(&store, "cus-1").await.expect("an item");
    let wrapped = match item.get(WRAPPED_KEY) {
        Some(AttributeValue::B(b)) => b.as_ref().to_vec(),
        other => panic!("wrapped_key is not binary: {other:?}"),
    };
    assert!(
        !wrapped.windows(16).any(|w| w == &key.as_bytes()[..16]),
        "the key is not stored in clear"
    );
    assert!(matches!(item.get(KMS_KEY_ID), Some(AttributeValue::S(id)) if !id.is_empty()));
    // Every read unwraps the same key through KMS.
    assert_eq!(store.existing_key("cus-1").await.expect("read"), Some(key.clone()));
    assert_eq!(store.data_key("cus-1").await.expect("read"), key);
}

#[tokio::test]
async fn a_wrapped_key_moved_to_another_customer_does_not_unwrap() {
    let store = fresh_uncached().await;
    store.data_key("cus-1").await.expect("create");
    let mut item = raw_item(&store, "cus-1").await.expect("an item");
    item.insert(PK.into(), AttributeValue::S("cus-2".into()));
    store
        .dynamodb()
        .put_item()
        .table_name(store.table())
        .set_item(Some(item))
        .send()
        .await
        .expect("copy the item");
    // The encryption context names cus-1: KMS refuses it for cus-2.
    match store.existing_key("cus-2").await {
        Err(KeyError::Corrupt(_)) => {}
        other => panic!("expected a corrupt key, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_racing_on_a_first_use_converge() {
    let (dynamodb, kms, table, alias) = fresh_parts().await;
    let a = DynamoKmsKeyStore::new(dynamodb.clone(), kms.clone(), table.clone(), alias.clone());
    let b = DynamoKmsKeyStore::new(dynamodb, kms, table, alias);
    for i in 0..5 {
        let id = format!("cus-{i}");
        let (ka, kb) = tokio::join!(a.data_key(&id), b.data_key(&id));
        assert_eq!(ka.expect("a"), kb.expect("b"), "{id}");
    }
}

#[tokio::test]
async fn the_cache_serves_an_instance_and_its_own_delete_clears_it() {
    let (dynamodb, kms, table, alias) = fresh_parts().await;
    let cached = DynamoKmsKeyStore::new(dynamodb.clone(), kms.clone(), table.clone(), alias.clone());
    let other = DynamoKmsKeyStore::new(dynamodb, kms, table, alias);
    let key = cached.data_key("cus-1").await.expect("create");
    let text = encrypt_field(&key, "cus-1", "email", "ada@example.com").expect("encrypt");

    // Deleted through another instance (another execution environment): this
    // one still has its cached copy, for at most the cache's lifetime.
    other.delete("cus-1").await.expect("delete elsewhere");
    assert_eq!(other.existing_key("cus-1").await.expect("gone there"), None);
    assert_eq!(cached.existing_key("cus-1").await.expect("cached"), Some(key.clone()));

    // Its own delete clears it at once, and the data stays unreadable.
    cached.delete("cus-1").await.expect("delete here");
    assert_eq!(cached.existing_key("cus-1").await.expect("gone"), None);
    let new = cached.data_key("cus-1").await.expect("a new key");
    assert_eq!(decrypt_field(&new, "cus-1", "email", &text), Err(CryptoError::Decrypt));
}

#[tokio::test]
async fn an_unknown_kms_key_is_an_error_not_a_key() {
    let (dynamodb, kms, table, _) = fresh_parts().await;
    let store = DynamoKmsKeyStore::new(dynamodb, kms, table, "alias/crm-no-such-key");
    assert!(matches!(store.data_key("cus-1").await, Err(KeyError::Unavailable(_))));
    assert_eq!(store.existing_key("cus-1").await.expect("nothing stored"), None);
}
