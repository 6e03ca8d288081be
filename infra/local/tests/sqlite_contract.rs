//! The event-store contract suite against the SQLite adapter (a real file).

use crm_core::ports::EventStore;
use crm_local::SqliteEventStore;
use std::sync::Arc;

async fn fresh_store() -> Arc<dyn EventStore> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.keep().join("events.db");
    Arc::new(SqliteEventStore::open(&path).expect("open sqlite store"))
}

crm_core::event_store_contract!(fresh_store);

#[tokio::test]
async fn reopening_the_file_keeps_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("nested/dir/events.db");
    let store = SqliteEventStore::open(&path).expect("open");
    let e = crm_core::store_contract::event("customer-1", 1);
    store
        .append(crm_core::ports::AppendRequest {
            stream_id: "customer-1".into(),
            expected: crm_core::ports::ExpectedVersion::NoStream,
            events: vec![e.clone()],
            reservations: vec![],
            receipt: None,
        })
        .await
        .expect("append");
    drop(store);
    let reopened = SqliteEventStore::open(&path).expect("reopen");
    let loaded = reopened.load("customer-1").await.expect("load");
    assert_eq!(loaded.version, 1);
    assert_eq!(loaded.events[0].event_id, e.event_id);
}
