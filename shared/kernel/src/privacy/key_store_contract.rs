//! The key-store contract: one suite run against every [`KeyStore`] adapter
//! (in memory here, SQLite in crm-local, DynamoDB with KMS in crm-aws). Use
//! [`key_store_contract!`](crate::key_store_contract) in the adapter's tests.

use super::{decrypt_field, encrypt_field, CryptoError, KeyStore};
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

/// Generates one `#[tokio::test]` per contract case. `$make` names an async
/// fn, in the calling module, returning an `Arc<dyn KeyStore>` (every case
/// uses customer ids of its own, so the store may be shared).
#[macro_export]
macro_rules! key_store_contract {
    ($make:ident) => {
        mod key_store_contract {
            use $crate::privacy::key_store_contract as contract;
            $crate::key_store_contract!(@cases $make;
                creates_on_first_use_and_returns_it_after, existing_key_does_not_create,
                concurrent_first_uses_converge, delete_shreds_and_missing_is_fine, keys_are_per_customer,
                create_key_makes_one_and_never_replaces);
        }
    };
    (@cases $make:ident; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                contract::$case(super::$make().await).await;
            }
        )*
    };
}

fn customer() -> String {
    format!("cus-{}", Uuid::now_v7().simple())
}

pub async fn creates_on_first_use_and_returns_it_after(store: Arc<dyn KeyStore>) {
    let id = customer();
    let first = store.data_key(&id).await.expect("create");
    let again = store.data_key(&id).await.expect("read");
    assert_eq!(first, again, "a second use returns the same key");
    assert_eq!(store.existing_key(&id).await.expect("existing"), Some(first.clone()));
    // It encrypts and decrypts across calls.
    let text = encrypt_field(&first, &id, "email", "ada@example.com").expect("encrypt");
    let key = store.existing_key(&id).await.expect("existing").expect("there");
    assert_eq!(
        decrypt_field(&key, &id, "email", &text).expect("decrypt"),
        "ada@example.com"
    );
}

pub async fn existing_key_does_not_create(store: Arc<dyn KeyStore>) {
    let id = customer();
    assert_eq!(store.existing_key(&id).await.expect("existing"), None);
    assert_eq!(store.existing_key(&id).await.expect("existing"), None);
}

pub async fn concurrent_first_uses_converge(store: Arc<dyn KeyStore>) {
    let id = customer();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move { store.data_key(&id).await })
        })
        .collect();
    let mut keys = Vec::new();
    for task in tasks {
        keys.push(task.await.expect("task").expect("data key"));
    }
    let distinct: HashSet<_> = keys.iter().map(|k| *k.as_bytes()).collect();
    assert_eq!(
        distinct.len(),
        1,
        "eight concurrent first uses gave {} keys",
        distinct.len()
    );
    assert_eq!(store.existing_key(&id).await.expect("existing"), Some(keys[0].clone()));
}

pub async fn delete_shreds_and_missing_is_fine(store: Arc<dyn KeyStore>) {
    let id = customer();
    let key = store.data_key(&id).await.expect("create");
    let text = encrypt_field(&key, &id, "email", "ada@example.com").expect("encrypt");
    store.delete(&id).await.expect("delete");
    assert_eq!(store.existing_key(&id).await.expect("existing"), None);
    store.delete(&id).await.expect("deleting again is fine");
    store
        .delete(&customer())
        .await
        .expect("deleting a key never made is fine");
    // A later first use makes a new key, which does not open the old data.
    let new = store.data_key(&id).await.expect("new key");
    assert_ne!(new, key);
    assert_eq!(decrypt_field(&new, &id, "email", &text), Err(CryptoError::Decrypt));
}

pub async fn keys_are_per_customer(store: Arc<dyn KeyStore>) {
    let (a, b) = (customer(), customer());
    let key_a = store.data_key(&a).await.expect("a");
    let key_b = store.data_key(&b).await.expect("b");
    assert_ne!(key_a, key_b);
    store.delete(&a).await.expect("delete a");
    assert_eq!(store.existing_key(&b).await.expect("b"), Some(key_b));
}

pub async fn create_key_makes_one_and_never_replaces(store: Arc<dyn KeyStore>) {
    let id = customer();
    assert_eq!(store.existing_key(&id).await.expect("existing"), None);
    let created = store.create_key(&id).await.expect("create");
    assert_eq!(store.existing_key(&id).await.expect("existing"), Some(created.clone()));
    assert_eq!(
        store.create_key(&id).await.expect("create again"),
        created,
        "a key that exists is returned, never replaced"
    );
    assert_eq!(store.data_key(&id).await.expect("data key"), created);
    store.delete(&id).await.expect("delete");
    let after = store.create_key(&id).await.expect("a new key after erasure");
    assert_ne!(after, created, "an erased key is never served again");
}
