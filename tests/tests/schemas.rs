//! Custom event schemas over the API (decision 0022): `PUT` registers
//! versions, `GET` answers the latest, an invalid schema is 422 naming the
//! offending part of it.

use crm_tests::TestApi;

#[tokio::test]
async fn custom_event_schemas_register_versions_and_name_what_is_invalid() {
    let api = TestApi::new();
    let url = "/schemas/custom/Video%20Played";
    let missing = api.call("GET", url, None).await;
    assert_eq!(missing.status, 404, "{:?}", missing.body);

    for (body, field) in [
        (r#"{"type":"nope"}"#, "type"),
        (
            r#"{"properties":{"price":{"minimum":"zero"}}}"#,
            "properties.price.minimum",
        ),
        (r#"[1]"#, "body"),
        (r#"{"$ref":"https://example.com/remote.json"}"#, "body"),
    ] {
        let refused = api.call("PUT", url, Some(body)).await;
        assert_eq!(refused.status, 422, "{body}: {:?}", refused.body);
        assert_eq!(refused.body["field"], field, "{body}: {:?}", refused.body);
    }
    let bad_name = api
        .call("PUT", "/schemas/custom/a%2Fb", Some(r#"{"type":"object"}"#))
        .await;
    assert_eq!(bad_name.status, 422);
    assert_eq!(bad_name.body["field"], "name");
    let broken = api.call("PUT", url, Some("{")).await;
    assert_eq!(broken.status, 400);
    assert_eq!(api.call("GET", url, None).await.status, 404, "nothing was written");

    let schema = r#"{"type":"object","required":["video_id"],"properties":{"video_id":{"type":"string"}}}"#;
    let first = api.call("PUT", url, Some(schema)).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["version"], 1);
    assert_eq!(first.body["name"], "Video Played");
    let again = api.call("PUT", url, Some(schema)).await;
    assert_eq!(again.body["version"], 1, "the same schema is no new version");
    let second = api.call("PUT", url, Some(r#"{"type":"object"}"#)).await;
    assert_eq!(second.body["version"], 2);
    let got = api.call("GET", url, None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["version"], 2);
    assert_eq!(got.body["schema"], serde_json::json!({ "type": "object" }));

    // Stored as events on the name's stream, each version an event.
    let stored = api
        .store
        .read_stream("schema-custom-Video Played", 0, 10)
        .await
        .expect("stream");
    assert_eq!(
        stored
            .iter()
            .map(|e| (e.event_type.as_str(), e.version))
            .collect::<Vec<_>>(),
        vec![("CustomEventSchemaRegistered", 1), ("CustomEventSchemaRegistered", 2)]
    );
}

/// The committed schema of one event type and version (`schemas/events/`).
fn committed_schema(event_type: &str, version: u32) -> Option<serde_json::Value> {
    let path = format!(
        "{}/../schemas/events/{event_type}/v{version}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// A story through the whole local runtime (API, bus, projections, journeys,
/// channel, timers, erasure), then every event the SQLite store holds, as
/// stored (personal fields encrypted or erased), checked against the
/// committed schema of its type and version.
#[tokio::test]
async fn every_stored_event_matches_its_committed_schema() {
    let api = TestApi::at(chrono::Utc::now());
    let id = api.register("schemas@example.com").await;
    let events = api.call("GET", &format!("/customers/{id}/events"), None).await;
    let token = events.body["items"]
        .as_array()
        .and_then(|items| items.iter().find(|e| e["type"] == "EmailVerificationRequested"))
        .and_then(|e| e["data"]["token"].as_str())
        .expect("a verification token")
        .to_string();
    let address = r#"{"line1":"1 Main St","city":"Berlin","postal_code":"10115","country":"DE"}"#;
    for (method, path, body) in [
        (
            "POST",
            format!("/customers/{id}/email/verify"),
            format!(r#"{{"token":"{token}"}}"#),
        ),
        (
            "PATCH",
            format!("/customers/{id}"),
            format!(r#"{{"last_name":"King","date_of_birth":"1985-12-10","address":{address}}}"#),
        ),
        (
            "POST",
            format!("/customers/{id}/consents"),
            r#"{"purpose":"marketing","channel":"sms","method":"preference-centre"}"#.to_string(),
        ),
        (
            "POST",
            format!("/customers/{id}/activity"),
            r#"{"type":"ProductViewed","product_id":"lamp","name":"Desk lamp","category":"lighting"}"#.to_string(),
        ),
        (
            "POST",
            format!("/customers/{id}/activity"),
            r#"{"type":"CustomerLoggedIn","session_id":"s-1"}"#.to_string(),
        ),
        (
            "PUT",
            "/schemas/custom/VideoPlayed".to_string(),
            r#"{"type":"object"}"#.to_string(),
        ),
    ] {
        let answer = api.call(method, &path, Some(&body)).await;
        assert!(answer.status.is_success(), "{method} {path}: {:?}", answer.body);
    }
    // An order from a cart, paid, shipped, delivered, partly refunded; a second
    // cart left alone to be abandoned (its journey requests and sends a reminder).
    let cart = api.cart_with_lamps(&id, 2, 4000).await;
    let order = api
        .call(
            "POST",
            "/orders",
            Some(&format!(
                r#"{{"customer_id":"{id}","cart_id":"{cart}","tax_minor":0,"shipping_minor":0,"total_minor":8000,"shipping_address":{address}}}"#
            )),
        )
        .await;
    assert_eq!(order.status, 201, "{:?}", order.body);
    let order_id = order.body["id"].as_str().expect("order id").to_string();
    for (step, body) in [
        (
            "payments",
            r#"{"payment_id":"p1","status":"succeeded","method":"credit-card","amount_minor":8000,"currency":"EUR","transaction_id":"t1"}"#,
        ),
        ("ship", r#"{"carrier":"DHL","tracking_number":"T1"}"#),
        ("deliver", "{}"),
        (
            "refunds",
            r#"{"refund_type":"partial","amount_minor":1000,"reason":"quality-issue","return":{"reason":"cracked"}}"#,
        ),
    ] {
        let answer = api
            .call("POST", &format!("/orders/{order_id}/{step}"), Some(body))
            .await;
        assert!(answer.status.is_success(), "{step}: {:?}", answer.body);
    }
    api.cart_with_lamps(&id, 1, 9000).await;
    api.advance_minutes(60 * 26).await;
    // A second customer, erased.
    let gone = api.register("gone@example.com").await;
    let erased = api.call("DELETE", &format!("/customers/{gone}"), None).await;
    assert!(erased.status.is_success(), "{:?}", erased.body);
    api.advance_minutes(5).await;

    // The consent ledger proves each grant with its GDPR context: the SMS
    // grant came after the German address, the registration's before any.
    let consents = api.call("GET", &format!("/customers/{id}/consents"), None).await;
    assert_eq!(consents.status, 200, "{:?}", consents.body);
    let proof_of = |channel: &str| {
        consents.body["current"]
            .as_array()
            .and_then(|c| c.iter().find(|r| r["channel"] == channel))
            .map(|r| r["proof"]["gdpr"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        proof_of("sms"),
        serde_json::json!({ "legal_basis": "consent", "jurisdiction": "DE", "explicit": true })
    );
    assert_eq!(
        proof_of("email"),
        serde_json::json!({ "legal_basis": "consent", "jurisdiction": null, "explicit": true })
    );

    let stored = api.all_events().await;
    let types: std::collections::BTreeSet<&str> = stored.iter().map(|e| e.event_type.as_str()).collect();
    for t in [
        "CustomerRegistered",
        "ConsentGranted",
        "EmailVerified",
        "CustomerAddressChanged",
        "ProductViewed",
        "OrderPlaced",
        "RefundRequested",
        "CartAbandoned",
        "JourneyStarted",
        "MessageRequested",
        "CustomerErased",
        "CustomEventSchemaRegistered",
    ] {
        assert!(types.contains(t), "the story stores {t}: {types:?}");
    }
    let mut problems = Vec::new();
    for e in &stored {
        let Some(schema) = committed_schema(&e.event_type, e.schema_version) else {
            problems.push(format!(
                "{} v{}: no schemas/events file (UPDATE_SCHEMAS=1 cargo test -p crm-core schemas)",
                e.event_type, e.schema_version
            ));
            continue;
        };
        let validator = jsonschema::validator_for(&schema).expect("a committed schema compiles");
        let value = serde_json::to_value(e).expect("an envelope serialises");
        for err in validator.iter_errors(&value) {
            problems.push(format!(
                "{} v{} at {}: {}",
                e.event_type,
                e.schema_version,
                err.instance_path().as_str(),
                err.masked()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
