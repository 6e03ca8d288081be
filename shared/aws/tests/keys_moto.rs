//! AWS wire tests: the DynamoDB + KMS key store against the moto server in
//! `AWS_ENDPOINT_URL` (scripts/test starts one). Every test gets a KMS key
//! and a `keys` table of its own. KMS calls are counted on the wire by an
//! interceptor on the SDK client (decision 0044: one call per process, not
//! one per customer).

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kms::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_kms::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kms::error::BoxError;
use aws_sdk_kms::types::DataKeySpec;
use crm_aws::keys::{
    DynamoKmsKeyStore, Rewrapped, ACTIVE_BRANCH_KEY_PK, BRANCH_KEY_ID, BRANCH_KEY_PREFIX, CONTEXT_CUSTOMER_ID,
    CREATED_AT, KMS_KEY_ID, PK, WRAPPED_KEY,
};
use crm_aws::testing::{fresh_data_keys, get_item, moto_config};
use crm_core::privacy::{decrypt_field, encrypt_field, CryptoError, DataKey, KeyError, KeyStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// A new symmetric KMS key with an alias, and a new keys table.
async fn fresh_parts() -> (aws_sdk_dynamodb::Client, aws_sdk_kms::Client, String, String) {
    let keys = fresh_data_keys("test").await;
    (keys.dynamodb, keys.kms, keys.table, keys.alias)
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
async fn the_item_holds_the_key_wrapped_under_the_active_branch_key() {
    let store = fresh_uncached().await;
    let key = store.data_key("cus-1").await.expect("create");
    let item = raw_item(&store, "cus-1").await.expect("an item");
    let wrapped = binary(&item, WRAPPED_KEY);
    assert!(
        !wrapped.windows(16).any(|w| w == &key.as_bytes()[..16]),
        "the key is not stored in clear"
    );
    // Wrapped locally (nonce | 32 bytes | tag), naming the active branch key.
    assert_eq!(wrapped.len(), 12 + 32 + 16);
    assert_eq!(item.get(KMS_KEY_ID), None, "not wrapped by KMS");
    let active = string(
        &raw_item(&store, ACTIVE_BRANCH_KEY_PK).await.expect("active"),
        BRANCH_KEY_ID,
    );
    assert_eq!(string(&item, BRANCH_KEY_ID), active);
    // The branch key item holds the branch key as KMS wrapped it.
    let branch = raw_item(&store, &format!("{BRANCH_KEY_PREFIX}{active}"))
        .await
        .expect("the branch key item");
    assert!(matches!(branch.get(KMS_KEY_ID), Some(AttributeValue::S(id)) if !id.is_empty()));
    assert!(!binary(&branch, WRAPPED_KEY).is_empty());
    // Every read unwraps the same key.
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

/// KMS requests sent on the wire, by operation (`x-amz-target`), every
/// attempt counted as KMS bills it.
#[derive(Debug, Default, Clone)]
struct KmsCalls(Arc<Mutex<BTreeMap<String, usize>>>);

impl Intercept for KmsCalls {
    fn name(&self) -> &'static str {
        "KmsCalls"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context.request().headers().get("x-amz-target").unwrap_or("unknown");
        let operation = target.rsplit('.').next().unwrap_or(target).to_string();
        *self.0.lock().expect("counts").entry(operation).or_default() += 1;
        Ok(())
    }
}

impl KmsCalls {
    fn of(&self, operation: &str) -> usize {
        self.0.lock().expect("counts").get(operation).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.0.lock().expect("counts").values().sum()
    }
}

/// A KMS client for moto whose requests are counted.
async fn counted_kms() -> (aws_sdk_kms::Client, KmsCalls) {
    let calls = KmsCalls::default();
    let config = aws_sdk_kms::config::Builder::from(&moto_config().await)
        .interceptor(calls.clone())
        .build();
    (aws_sdk_kms::Client::from_conf(config), calls)
}

/// A store as another process would build it: its own caches, its own
/// (counted) KMS client, the same table and KMS key.
async fn process(dynamodb: &aws_sdk_dynamodb::Client, table: &str, alias: &str) -> (DynamoKmsKeyStore, KmsCalls) {
    let (kms, calls) = counted_kms().await;
    (DynamoKmsKeyStore::new(dynamodb.clone(), kms, table, alias), calls)
}

fn binary(item: &HashMap<String, AttributeValue>, name: &str) -> Vec<u8> {
    match item.get(name) {
        Some(AttributeValue::B(b)) => b.as_ref().to_vec(),
        other => panic!("{name} is not binary: {other:?}"),
    }
}

fn string(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(s)) => s.clone(),
        other => panic!("{name} is not a string: {other:?}"),
    }
}

async fn put_raw(store: &DynamoKmsKeyStore, item: HashMap<String, AttributeValue>) {
    store
        .dynamodb()
        .put_item()
        .table_name(store.table())
        .set_item(Some(item))
        .send()
        .await
        .expect("put the item");
}

/// Every item's `pk`.
async fn all_pks(store: &DynamoKmsKeyStore) -> Vec<String> {
    let out = store
        .dynamodb()
        .scan()
        .table_name(store.table())
        .consistent_read(true)
        .send()
        .await
        .expect("scan");
    out.items().iter().map(|item| string(item, PK)).collect()
}

#[tokio::test]
async fn new_customers_cost_one_kms_call_per_process_not_one_each() {
    const N: usize = 25;
    let (dynamodb, _, table, alias) = fresh_parts().await;
    let customers: Vec<String> = (0..N).map(|_| Uuid::new_v4().to_string()).collect();

    // The first process: its first new customer makes the branch key.
    let (writer, writer_calls) = process(&dynamodb, &table, &alias).await;
    let mut keys = Vec::new();
    for id in &customers {
        keys.push(writer.data_key(id).await.expect("create"));
    }
    assert_eq!(writer_calls.of("GenerateDataKey"), 1, "{writer_calls:?}");
    assert_eq!(writer_calls.total(), 1, "{writer_calls:?}");

    // Another process reads them all: one Decrypt, of the branch key.
    let (reader, reader_calls) = process(&dynamodb, &table, &alias).await;
    for (id, key) in customers.iter().zip(&keys) {
        assert_eq!(reader.existing_key(id).await.expect("read").as_ref(), Some(key), "{id}");
        assert_eq!(&reader.data_key(id).await.expect("read"), key, "{id}");
    }
    assert_eq!(reader_calls.of("Decrypt"), 1, "{reader_calls:?}");
    assert_eq!(reader_calls.total(), 1, "{reader_calls:?}");

    // A third process writing more customers uses the active branch key: one
    // Decrypt, no GenerateDataKey.
    let (later, later_calls) = process(&dynamodb, &table, &alias).await;
    for _ in 0..5 {
        later.data_key(&Uuid::new_v4().to_string()).await.expect("create");
    }
    assert_eq!(later_calls.of("Decrypt"), 1, "{later_calls:?}");
    assert_eq!(later_calls.total(), 1, "{later_calls:?}");
}

#[tokio::test]
async fn a_branch_key_is_unwrapped_again_after_its_lifetime() {
    let (dynamodb, _, table, alias) = fresh_parts().await;
    let (writer, _) = process(&dynamodb, &table, &alias).await;
    let ids: Vec<String> = (0..3).map(|_| Uuid::new_v4().to_string()).collect();
    for id in &ids {
        writer.data_key(id).await.expect("create");
    }
    let (kms, calls) = counted_kms().await;
    let reader = DynamoKmsKeyStore::new(dynamodb, kms, table, alias)
        .with_cache_ttl(Duration::ZERO)
        .with_branch_key_ttl(Duration::from_millis(300));
    for id in &ids {
        assert!(reader.existing_key(id).await.expect("read").is_some());
    }
    assert_eq!(calls.of("Decrypt"), 1, "{calls:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    for id in &ids {
        assert!(reader.existing_key(id).await.expect("read").is_some());
    }
    assert_eq!(calls.of("Decrypt"), 2, "{calls:?}");
}

/// Stores a key for `customer` as the store wrote them before decision
/// 0044 (KMS `GenerateDataKey` under the customer's context, no branch key
/// id): the data key.
async fn put_kms_wrapped(store: &DynamoKmsKeyStore, kms: &aws_sdk_kms::Client, alias: &str, customer: &str) -> DataKey {
    let generated = kms
        .generate_data_key()
        .key_id(alias)
        .key_spec(DataKeySpec::Aes256)
        .encryption_context(CONTEXT_CUSTOMER_ID, customer)
        .send()
        .await
        .expect("generate");
    put_raw(
        store,
        HashMap::from([
            (PK.to_string(), AttributeValue::S(customer.to_string())),
            (
                WRAPPED_KEY.to_string(),
                AttributeValue::B(Blob::new(generated.ciphertext_blob().expect("blob").as_ref().to_vec())),
            ),
            (
                KMS_KEY_ID.to_string(),
                AttributeValue::S(generated.key_id().expect("key id").to_string()),
            ),
            (CREATED_AT.to_string(), AttributeValue::S("2026-11-01T00:00:00Z".into())),
        ]),
    )
    .await;
    DataKey::from_slice(generated.plaintext().expect("plaintext").as_ref()).expect("32 bytes")
}

#[tokio::test]
async fn a_key_wrapped_by_kms_before_branch_keys_still_unwraps() {
    let (dynamodb, kms, table, alias) = fresh_parts().await;
    let customer = Uuid::new_v4().to_string();
    let (store, calls) = process(&dynamodb, &table, &alias).await;
    let legacy = put_kms_wrapped(&store, &kms, &alias, &customer).await;

    assert_eq!(store.existing_key(&customer).await.expect("read"), Some(legacy.clone()));
    assert_eq!(store.data_key(&customer).await.expect("no new key"), legacy);
    // One Decrypt under the customer's context; no branch key was needed.
    assert_eq!(calls.of("Decrypt"), 1, "{calls:?}");
    assert_eq!(calls.total(), 1, "{calls:?}");
    assert_eq!(raw_item(&store, ACTIVE_BRANCH_KEY_PK).await, None);
    // The item was not rewritten.
    let item = raw_item(&store, &customer).await.expect("the item");
    assert_eq!(item.get(BRANCH_KEY_ID), None);

    // Erasing it still shreds it.
    store.delete(&customer).await.expect("delete");
    let (fresh, _) = process(&dynamodb, &table, &alias).await;
    assert_eq!(fresh.existing_key(&customer).await.expect("gone"), None);
}

#[tokio::test]
async fn a_tampered_wrapped_key_does_not_unwrap() {
    let store = fresh_uncached().await;
    store.data_key("cus-1").await.expect("create");
    let mut item = raw_item(&store, "cus-1").await.expect("an item");
    let mut wrapped = binary(&item, WRAPPED_KEY);
    let last = wrapped.len() - 20;
    wrapped[last] ^= 0x01;
    item.insert(WRAPPED_KEY.into(), AttributeValue::B(Blob::new(wrapped)));
    put_raw(&store, item).await;
    match store.existing_key("cus-1").await {
        Err(KeyError::Corrupt(_)) => {}
        other => panic!("expected a corrupt key, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrapped_key_naming_another_branch_key_does_not_unwrap() {
    let store = fresh_uncached().await;
    store.data_key("cus-1").await.expect("create");
    let mut item = raw_item(&store, "cus-1").await.expect("an item");
    // Another branch key id (a copy of the active branch key's item under
    // another id does not unwrap with KMS either: its context names the id).
    let active = string(&item, BRANCH_KEY_ID);
    let other = Uuid::now_v7().simple().to_string();
    let mut branch = raw_item(&store, &format!("{BRANCH_KEY_PREFIX}{active}"))
        .await
        .expect("branch");
    branch.insert(PK.into(), AttributeValue::S(format!("{BRANCH_KEY_PREFIX}{other}")));
    branch.insert(BRANCH_KEY_ID.into(), AttributeValue::S(other.clone()));
    put_raw(&store, branch).await;
    item.insert(BRANCH_KEY_ID.into(), AttributeValue::S(other));
    put_raw(&store, item).await;
    match store.existing_key("cus-1").await {
        Err(KeyError::Corrupt(_)) => {}
        other => panic!("expected a corrupt key, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_uses_make_one_branch_key() {
    let (dynamodb, _, table, alias) = fresh_parts().await;
    let mut processes = Vec::new();
    for _ in 0..6 {
        processes.push(process(&dynamodb, &table, &alias).await);
    }
    let customers: Vec<String> = (0..processes.len()).map(|_| Uuid::new_v4().to_string()).collect();
    let keys = futures::future::join_all(
        processes
            .iter()
            .zip(&customers)
            .map(|((store, _), id)| store.data_key(id)),
    )
    .await;
    let generated: usize = processes.iter().map(|(_, calls)| calls.of("GenerateDataKey")).sum();
    let (store, _) = &processes[0];

    // One active branch key, and every customer's key is wrapped under it.
    let active = string(
        &raw_item(store, ACTIVE_BRANCH_KEY_PK).await.expect("active"),
        BRANCH_KEY_ID,
    );
    for id in &customers {
        let item = raw_item(store, id).await.expect("the customer's item");
        assert_eq!(string(&item, BRANCH_KEY_ID), active, "{id}");
    }
    // The losers deleted theirs: one branch key item left.
    let branch_items: Vec<String> = all_pks(store)
        .await
        .into_iter()
        .filter(|pk| pk.starts_with(BRANCH_KEY_PREFIX) && pk != ACTIVE_BRANCH_KEY_PK)
        .collect();
    assert_eq!(
        branch_items,
        vec![format!("{BRANCH_KEY_PREFIX}{active}")],
        "{generated} branch keys were generated"
    );
    // Another process reads every key back.
    let (reader, _) = process(&dynamodb, &table, &alias).await;
    for (id, key) in customers.iter().zip(keys) {
        assert_eq!(
            reader.existing_key(id).await.expect("read"),
            Some(key.expect("created")),
            "{id}"
        );
    }
}

#[tokio::test]
async fn branch_key_items_are_no_customer_ids() {
    let store = fresh_uncached().await;
    store.data_key("cus-1").await.expect("create");
    for id in [ACTIVE_BRANCH_KEY_PK, "#branch#0123"] {
        assert!(matches!(store.data_key(id).await, Err(KeyError::Corrupt(_))), "{id}");
        assert!(
            matches!(store.existing_key(id).await, Err(KeyError::Corrupt(_))),
            "{id}"
        );
        assert!(matches!(store.delete(id).await, Err(KeyError::Corrupt(_))), "{id}");
    }
    assert!(raw_item(&store, ACTIVE_BRANCH_KEY_PK).await.is_some(), "not deleted");
    assert!(store.existing_key("cus-1").await.expect("read").is_some());
}

#[tokio::test]
async fn kms_wrapped_keys_are_rewrapped_under_the_branch_key_once_and_still_decrypt() {
    let (dynamodb, kms, table, alias) = fresh_parts().await;
    let (store, _) = process(&dynamodb, &table, &alias).await;
    let legacy: Vec<String> = (0..3).map(|_| Uuid::new_v4().to_string()).collect();
    let mut keys = Vec::new();
    for id in &legacy {
        keys.push(put_kms_wrapped(&store, &kms, &alias, id).await);
    }
    // Encrypted before the re-wrap, under the KMS-wrapped key.
    let sealed = encrypt_field(&keys[0], &legacy[0], "email", "rewrap.before@example.com").expect("encrypt");
    let current = Uuid::new_v4().to_string();
    let current_key = store.data_key(&current).await.expect("a branch-wrapped key");

    let report = store.rewrap_all().await.expect("rewrap");
    assert_eq!(
        (
            report.rewrapped,
            report.already,
            report.branch_items,
            report.erased,
            report.changed
        ),
        (3, 1, 2, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.scanned, 6, "{report:?}");
    assert!(report.failed.is_empty(), "{report:?}");
    let active = string(
        &raw_item(&store, ACTIVE_BRANCH_KEY_PK).await.expect("active"),
        BRANCH_KEY_ID,
    );
    for id in &legacy {
        let item = raw_item(&store, id).await.expect("still there");
        assert_eq!(string(&item, BRANCH_KEY_ID), active, "{id}");
        assert_eq!(item.get(KMS_KEY_ID), None, "{id}: no longer KMS-wrapped");
        assert_eq!(binary(&item, WRAPPED_KEY).len(), 12 + 32 + 16, "{id}");
        assert!(item.contains_key(CREATED_AT), "{id}: kept");
    }

    // Another process reads the same keys with one Decrypt (the branch
    // key's), not one per customer, and what was encrypted before decrypts.
    let (reader, calls) = process(&dynamodb, &table, &alias).await;
    for (id, key) in legacy.iter().zip(&keys) {
        assert_eq!(reader.existing_key(id).await.expect("read").as_ref(), Some(key), "{id}");
    }
    assert_eq!(reader.existing_key(&current).await.expect("read"), Some(current_key));
    assert_eq!(calls.of("Decrypt"), 1, "{calls:?}");
    let key = reader.data_key(&legacy[0]).await.expect("read");
    assert_eq!(
        decrypt_field(&key, &legacy[0], "email", &sealed).expect("decrypts"),
        "rewrap.before@example.com"
    );

    // Again: nothing left to re-wrap.
    let again = store.rewrap_all().await.expect("rewrap again");
    assert_eq!(
        (again.rewrapped, again.already, again.branch_items),
        (0, 4, 2),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_key_erased_between_the_scan_and_the_write_is_not_recreated() {
    let (dynamodb, kms, table, alias) = fresh_parts().await;
    let (store, _) = process(&dynamodb, &table, &alias).await;
    let (erased, kept) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    put_kms_wrapped(&store, &kms, &alias, &erased).await;
    let kept_key = put_kms_wrapped(&store, &kms, &alias, &kept).await;

    let page = store.kms_wrapped_keys(None).await.expect("scan");
    assert_eq!(page.kms_wrapped.len(), 2, "{page:?}");
    assert!(page.next.is_none());
    // The customer is erased after the scan, before the write.
    store.delete(&erased).await.expect("erase");
    for key in &page.kms_wrapped {
        let expected = if key.customer_id == erased {
            Rewrapped::Erased
        } else {
            Rewrapped::Rewrapped
        };
        assert_eq!(
            store.rewrap(key).await.expect("rewrap"),
            expected,
            "{}",
            key.customer_id
        );
    }
    assert_eq!(raw_item(&store, &erased).await, None, "an erased key never comes back");
    let (fresh, _) = process(&dynamodb, &table, &alias).await;
    assert_eq!(fresh.existing_key(&erased).await.expect("read"), None);
    assert_eq!(fresh.existing_key(&kept).await.expect("read"), Some(kept_key));

    // The listed form again, after it was re-wrapped: the condition refuses
    // it, and the item stays under the branch key.
    let listed = page.kms_wrapped.iter().find(|k| k.customer_id == kept).expect("listed");
    assert_eq!(store.rewrap(listed).await.expect("again"), Rewrapped::Changed);
    assert!(raw_item(&store, &kept).await.expect("kept").contains_key(BRANCH_KEY_ID));
}

/// A DynamoDB client for moto whose requests are counted (by operation).
async fn counted_dynamodb() -> (aws_sdk_dynamodb::Client, KmsCalls) {
    let calls = KmsCalls::default();
    let config = aws_sdk_dynamodb::config::Builder::from(&moto_config().await)
        .interceptor(calls.clone())
        .build();
    (aws_sdk_dynamodb::Client::from_conf(config), calls)
}

#[tokio::test]
async fn creating_the_key_of_a_customer_found_without_one_is_one_put_and_no_read() {
    let (_, kms, table, alias) = fresh_parts().await;
    let (dynamodb, calls) = counted_dynamodb().await;
    let store = DynamoKmsKeyStore::new(dynamodb.clone(), kms.clone(), &table, &alias);
    // The branch key is made and kept by the first customer.
    store.data_key(&Uuid::new_v4().to_string()).await.expect("first");
    let id = Uuid::new_v4().to_string();
    let before = (calls.of("GetItem"), calls.of("PutItem"));
    let created = store.create_key(&id).await.expect("create");
    assert_eq!(
        (calls.of("GetItem") - before.0, calls.of("PutItem") - before.1),
        (0, 1),
        "one conditional PutItem, no GetItem: {calls:?}"
    );
    // Another instance racing on the same customer gets the stored key, not its own.
    let other = DynamoKmsKeyStore::new(dynamodb, kms, &table, &alias);
    assert_eq!(other.create_key(&id).await.expect("the stored key"), created);
    assert_eq!(store.existing_key(&id).await.expect("existing"), Some(created));
}

#[tokio::test]
async fn the_cache_keeps_at_most_its_capacity_and_the_oldest_goes_first() {
    let (_, kms, table, alias) = fresh_parts().await;
    let (dynamodb, calls) = counted_dynamodb().await;
    let store = DynamoKmsKeyStore::new(dynamodb, kms, &table, &alias).with_cache_capacity(2);
    let ids: Vec<String> = (0..3).map(|_| Uuid::new_v4().to_string()).collect();
    let mut keys = Vec::new();
    for id in &ids {
        keys.push(store.data_key(id).await.expect("create"));
    }
    let reads = calls.of("GetItem");
    for i in [2, 1] {
        assert_eq!(
            store.existing_key(&ids[i]).await.expect("cached"),
            Some(keys[i].clone())
        );
    }
    assert_eq!(calls.of("GetItem"), reads, "the two newest are cached: {calls:?}");
    assert_eq!(store.existing_key(&ids[0]).await.expect("read"), Some(keys[0].clone()));
    assert_eq!(calls.of("GetItem"), reads + 1, "the oldest was pushed out: {calls:?}");
    // An erased key is not served from the cache, however recently it was used.
    store.delete(&ids[0]).await.expect("erase");
    assert_eq!(store.existing_key(&ids[0]).await.expect("read"), None);
}
