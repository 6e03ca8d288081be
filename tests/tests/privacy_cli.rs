//! `crm-local privacy export|erase` (decision 0020) over the data directory
//! the API runs on: the export is the API's export, and the erasure is the
//! API's erasure, seen through the API afterwards.

use crm_local::cli::privacy::{run, PrivacyAction, PrivacyError};
use crm_tests::TestApi;
use serde_json::{json, Value};

const EMAIL: &str = "cli.privacy@shop.example";

/// The export without the moments it was made at (the metrics' as-of is "now").
fn timeless(mut export: Value) -> Value {
    if let Some(map) = export.as_object_mut() {
        map.remove("exported_at");
    }
    if let Some(metrics) = export.get_mut("metrics").and_then(Value::as_object_mut) {
        metrics.remove("as_of");
    }
    export
}

fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).expect("the export file");
    serde_json::from_str(&text).expect("the export file is JSON")
}

#[tokio::test]
async fn the_cli_exports_what_the_api_exports_and_erases_as_delete_does() {
    let api = TestApi::new();
    let id = api.register(EMAIL).await;
    let view = json!({ "type": "ProductViewed", "product_id": "lamp", "name": "Desk lamp", "category": "lighting" });
    let browsed = api
        .call("POST", &format!("/customers/{id}/activity"), Some(&view.to_string()))
        .await;
    assert_eq!(browsed.status, 201, "{:?}", browsed.body);
    api.cart_with_lamps(&id, 1, 2500).await;
    let db = api.db_path();
    let data_dir = db.parent().expect("data dir").to_path_buf();

    let out = data_dir.join("export.json");
    run(
        &data_dir,
        PrivacyAction::Export {
            customer: id.clone(),
            out: Some(out.clone()),
        },
    )
    .await
    .expect("export");
    let from_cli = read_json(&out);
    let from_api = api.call("GET", &format!("/customers/{id}/export"), None).await;
    assert_eq!(from_api.status, 200);
    let (cli, api_export) = (timeless(from_cli.clone()), timeless(from_api.body));
    for (key, value) in cli.as_object().expect("an object") {
        assert_eq!(Some(value), api_export.get(key), "{key} differs");
    }
    assert_eq!(cli, api_export);
    assert!(from_cli["event_count"].as_u64().is_some_and(|n| n > 0));
    assert!(from_cli.to_string().contains(EMAIL), "decrypted");

    run(&data_dir, PrivacyAction::Erase { customer: id.clone() })
        .await
        .expect("erase");
    // What the API sees afterwards: the customer erased, no key, old events shredded.
    let customer = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(customer.status, 200, "{:?}", customer.body);
    assert_eq!(customer.body["status"], "erased");
    assert!(api.runtime.keys.existing_key(&id).await.expect("keys").is_none());
    let stream = api
        .store
        .read_stream(&format!("customer-{id}"), 0, usize::MAX)
        .await
        .expect("read");
    let registered = stream
        .iter()
        .find(|e| e.event_type == "CustomerRegistered")
        .expect("registered");
    assert_eq!(registered.data["email"], "[erased]");
    let again = api.call("DELETE", &format!("/customers/{id}"), None).await;
    assert_eq!(again.status, 202, "the API sees the erasure done: {:?}", again.body);

    // The export of what remains.
    run(
        &data_dir,
        PrivacyAction::Export {
            customer: id.clone(),
            out: Some(out.clone()),
        },
    )
    .await
    .expect("export after erasure");
    let erased = read_json(&out);
    assert_eq!(erased["status"], "erased");
    assert!(!erased.to_string().contains(EMAIL));
    assert!(!data_dir.join("export.partial").exists());

    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = run(
        &data_dir,
        PrivacyAction::Export {
            customer: unknown,
            out: Some(data_dir.join("unknown.json")),
        },
    )
    .await;
    assert!(matches!(missing, Err(PrivacyError::NotFound(_))), "{missing:?}");
    assert!(
        !data_dir.join("unknown.json").exists(),
        "no file for an unknown customer"
    );
}
