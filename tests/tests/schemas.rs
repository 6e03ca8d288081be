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
