//! `crm-local replay` and `crm-local check` over a real SQLite file: one
//! projection rebuilt leaves its group's others alone and gives the same
//! documents; the check finds nothing on a consistent store and reports a
//! tampered customer 360.

use crm_core::consent::ledger::CONSENT_LEDGER;
use crm_core::customer::views::{CUSTOMER_360, TIMELINE};
use crm_core::ports::{ReadModelStore, ReadOp};
use crm_core::testing::{customer_id, register_customers};
use crm_local::runtime::bus::BUILT_IN_TEMPLATE;
use crm_local::runtime::LocalRuntime;

async fn runtime_with_customers(dir: &std::path::Path, customers: usize) -> LocalRuntime {
    let runtime = LocalRuntime::open(&dir.join("crm.db"), BUILT_IN_TEMPLATE).expect("open runtime");
    register_customers(runtime.command_store(), customers).await;
    runtime.bus.settle().await.expect("settle");
    runtime
}

async fn documents(runtime: &LocalRuntime, consumer: &str, customers: usize) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for n in 0..customers {
        out.extend(
            runtime
                .docs
                .list(consumer, &customer_id(n), "", None, 1000)
                .await
                .expect("list"),
        );
    }
    out
}

#[tokio::test]
async fn replaying_one_projection_rebuilds_it_and_leaves_the_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = runtime_with_customers(dir.path(), 5).await;
    let before_360 = documents(&runtime, CUSTOMER_360, 5).await;
    let before_timeline = documents(&runtime, TIMELINE, 5).await;
    assert_eq!(before_360.len(), 5);

    // A damaged 360 document, which the rebuild must put right.
    let stream = format!("customer-{}", customer_id(0));
    let checkpoint = runtime
        .docs
        .checkpoint(CUSTOMER_360, &stream)
        .await
        .expect("checkpoint");
    let damage = vec![ReadOp::Put {
        partition: customer_id(0),
        sort: "profile".into(),
        body: serde_json::json!({"damaged": true}),
    }];
    runtime
        .docs
        .commit(CUSTOMER_360, &stream, checkpoint, checkpoint, damage)
        .await
        .expect("damage");

    let replayed = crm_local::cli::ops::replay(&runtime, CUSTOMER_360, true)
        .await
        .expect("replay");
    assert_eq!(replayed.consumers, vec![CUSTOMER_360.to_string()]);
    assert!(replayed.report.events >= 5 * 3, "{:?}", replayed.report);
    assert_eq!(replayed.report.parked, 0);
    assert_eq!(documents(&runtime, CUSTOMER_360, 5).await, before_360);
    assert_eq!(documents(&runtime, TIMELINE, 5).await, before_timeline);

    // An unknown name is refused.
    assert!(crm_local::cli::ops::replay(&runtime, "no-such-projection", true)
        .await
        .is_err());
    // A whole target rebuilds through the bus.
    let target = crm_local::cli::ops::replay(&runtime, "consent", true)
        .await
        .expect("replay consent");
    assert!(target.consumers.contains(&CONSENT_LEDGER.to_string()));
    assert!(!documents(&runtime, CONSENT_LEDGER, 5).await.is_empty());
}

#[tokio::test]
async fn the_check_reports_a_tampered_customer_360_and_nothing_else() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = runtime_with_customers(dir.path(), 4).await;
    let clean = crm_local::cli::ops::check(&runtime, 0).await.expect("check");
    assert_eq!(clean.streams, 4);
    assert!(clean.documents >= 8, "{clean:?}");
    assert!(clean.is_consistent(), "{:?}", clean.differences);
    assert!(crm_local::cli::ops::print_check(&clean).is_ok());

    let stream = format!("customer-{}", customer_id(2));
    let mut profile = runtime
        .docs
        .get(CUSTOMER_360, &customer_id(2), "profile")
        .await
        .expect("get")
        .expect("a 360");
    profile["last_name"] = serde_json::json!("Tampered");
    let checkpoint = runtime
        .docs
        .checkpoint(CUSTOMER_360, &stream)
        .await
        .expect("checkpoint");
    let tamper = vec![ReadOp::Put {
        partition: customer_id(2),
        sort: "profile".into(),
        body: profile,
    }];
    runtime
        .docs
        .commit(CUSTOMER_360, &stream, checkpoint, checkpoint, tamper)
        .await
        .expect("tamper");

    let report = crm_local::cli::ops::check(&runtime, 0).await.expect("check");
    assert_eq!(report.differences.len(), 1, "{:?}", report.differences);
    let d = &report.differences[0];
    assert_eq!(
        (d.consumer.as_str(), d.stream_id.as_str()),
        (CUSTOMER_360, stream.as_str())
    );
    assert!(crm_local::cli::ops::print_check(&report).is_err());
}
