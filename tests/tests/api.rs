//! The HTTP API over the real SQLite store: the whole customer lifecycle,
//! idempotency, and every kind of bad input (which must write nothing).

use crm_tests::{registration, TestApi};
use serde_json::{json, Value};

async fn register(api: &TestApi, email: &str) -> String {
    let a = api.call("POST", "/customers", Some(&registration(email))).await;
    assert_eq!(a.status, 201, "{:?}", a.body);
    a.body["id"].as_str().expect("id").to_string()
}

async fn verification_token(api: &TestApi, id: &str) -> String {
    let a = api
        .call("GET", &format!("/customers/{id}/events?limit=500"), None)
        .await;
    let items = a.body["items"].as_array().expect("items").clone();
    items
        .iter()
        .rev()
        .find(|e| e["type"] == "EmailVerificationRequested")
        .and_then(|e| e["data"]["token"].as_str())
        .expect("a verification was requested")
        .to_string()
}

#[tokio::test]
async fn customer_lifecycle_through_the_api() {
    let api = TestApi::new();
    let a = api
        .call("POST", "/customers", Some(&registration("Grace@Navy.MIL")))
        .await;
    assert_eq!(a.status, 201);
    let id = a.body["id"].as_str().expect("id").to_string();
    assert_eq!(a.headers["location"], format!("/customers/{id}").as_str());
    assert_eq!(a.body["email"], "grace@navy.mil");
    assert_eq!(a.body["status"], "pending-verification");
    assert!(
        a.body.get("pending_verification_token").is_none(),
        "token never shown on the customer"
    );
    assert_eq!(a.body["consents"].as_array().map(Vec::len), Some(2));

    let events = api.call("GET", &format!("/customers/{id}/events"), None).await;
    let types: Vec<&str> = events.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "CustomerRegistered",
            "ConsentGranted",
            "ConsentGranted",
            "EmailVerificationRequested"
        ]
    );
    let first = &events.body["items"][0];
    assert_eq!(first["stream_id"], format!("customer-{id}").as_str());
    assert_eq!(first["version"], 1);
    assert_eq!(first["schema_version"], 1);
    assert_eq!(first["customer_id"], id.as_str());
    assert_eq!(first["actor"], "api:local");
    assert!(events.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .all(|e| e["correlation_id"] == first["correlation_id"]));

    let token = verification_token(&api, &id).await;
    let v = api
        .call(
            "POST",
            &format!("/customers/{id}/email/verify"),
            Some(&json!({ "token": token }).to_string()),
        )
        .await;
    assert_eq!((v.status.as_u16(), v.body["status"].clone()), (200, json!("active")));

    let p = api
        .call(
            "PATCH",
            &format!("/customers/{id}"),
            Some(r#"{"last_name":"Murray Hopper","date_of_birth":"1906-12-09"}"#),
        )
        .await;
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["last_name"], "Murray Hopper");
    assert_eq!(p.body["date_of_birth"], "1906-12-09");

    let prefs = json!({"email_frequency":"daily","categories":["new-arrivals"],"timezone":"Europe/Berlin",
        "quiet_hours":{"start":"22:00","end":"07:00"},"sms_for_promotions":true,"push_categories":["orders"]});
    let r = api
        .call("PUT", &format!("/customers/{id}/preferences"), Some(&prefs.to_string()))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["preferences"], prefs);

    let grant = json!({"purpose":"marketing","channel":"sms","method":"preference-centre"}).to_string();
    assert_eq!(
        api.call("POST", &format!("/customers/{id}/consents"), Some(&grant))
            .await
            .status,
        201
    );
    let again = api
        .call("POST", &format!("/customers/{id}/consents"), Some(&grant))
        .await;
    assert_eq!(
        (again.status.as_u16(), again.body["field"].clone()),
        (409, json!("channel"))
    );
    let revoke = api
        .call(
            "DELETE",
            &format!("/customers/{id}/consents/marketing/sms?reason=too-many"),
            None,
        )
        .await;
    assert_eq!(revoke.status, 200);
    assert_eq!(
        api.call("DELETE", &format!("/customers/{id}/consents/marketing/sms"), None)
            .await
            .status,
        409
    );

    let c = api
        .call(
            "PUT",
            &format!("/customers/{id}/email"),
            Some(r#"{"new_email":"amazing.grace@example.org"}"#),
        )
        .await;
    assert_eq!(
        (c.status.as_u16(), c.body["email"].clone()),
        (200, json!("amazing.grace@example.org"))
    );
    assert_eq!(c.body["status"], "pending-verification");
    // The old address is free again; the new one is taken.
    assert_eq!(
        api.call("POST", "/customers", Some(&registration("grace@navy.mil")))
            .await
            .status,
        201
    );
    let taken = api
        .call("POST", "/customers", Some(&registration("AMAZING.grace@example.org")))
        .await;
    assert_eq!(
        (taken.status.as_u16(), taken.body["field"].clone()),
        (409, json!("email"))
    );

    let d = api
        .call(
            "POST",
            &format!("/customers/{id}/deactivate"),
            Some(r#"{"reason":"customer-request","notes":"moving"}"#),
        )
        .await;
    assert_eq!(
        (d.status.as_u16(), d.body["status"].clone()),
        (200, json!("deactivated"))
    );
    assert_eq!(d.body["consents"], json!([]), "deactivation revokes every consent");
    let blocked = api
        .call("POST", &format!("/customers/{id}/consents"), Some(&grant))
        .await;
    assert_eq!(blocked.status, 409);
    let re = api.call("POST", &format!("/customers/{id}/reactivate"), None).await;
    assert_eq!(
        (re.status.as_u16(), re.body["status"].clone()),
        (200, json!("pending-verification"))
    );

    // Reads come from the customer 360 projection, caught up with every command.
    let got = api.call("GET", &format!("/customers/{id}"), None).await;
    assert_eq!(got.status, 200);
    for field in [
        "id",
        "status",
        "email",
        "email_verified",
        "first_name",
        "last_name",
        "address",
        "preferences",
        "consents",
        "version",
    ] {
        assert_eq!(got.body[field], re.body[field], "{field}");
    }
    assert_eq!(got.body["consent_summary"], json!([]));
    assert_eq!(
        got.body["event_counts"]["ConsentRevoked"], 3,
        "one by hand, two at deactivation"
    );
    assert_eq!(got.body["event_counts"]["CustomerRegistered"], 1);

    let found = api
        .call("GET", "/customers?email=AMAZING.grace@example.org", None)
        .await;
    assert_eq!(found.status, 200);
    assert_eq!(found.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(found.body["items"][0]["id"], id.as_str());
    // The old address now belongs to the customer registered with it later.
    let old = api.call("GET", "/customers?email=grace@navy.mil", None).await;
    assert_eq!(old.body["items"].as_array().map(Vec::len), Some(1));
    assert_ne!(old.body["items"][0]["id"], id.as_str());
    let nobody = api.call("GET", "/customers?email=nobody@example.com", None).await;
    assert_eq!(nobody.body["items"], json!([]));

    let timeline = api
        .call("GET", &format!("/customers/{id}/timeline?limit=500"), None)
        .await;
    assert_eq!(timeline.status, 200);
    let entries = timeline.body["items"].as_array().expect("items").clone();
    assert_eq!(
        entries.len() as u64,
        got.body["version"].as_u64().expect("version"),
        "one entry per event"
    );
    let email_change = entries
        .iter()
        .find(|e| e["type"] == "CustomerEmailChanged")
        .expect("email change");
    assert_eq!(
        email_change["changes"][0],
        json!({"field": "email", "old": "grace@navy.mil", "new": "amazing.grace@example.org"})
    );
    assert_eq!(entries[0]["ip"], "198.51.100.4");
    assert_eq!(entries[0]["actor"], "api:local");

    let consents = api.call("GET", &format!("/customers/{id}/consents"), None).await;
    assert_eq!(consents.status, 200);
    let current = consents.body["current"].as_array().expect("current").clone();
    assert_eq!(current.len(), 3, "email and push at registration, sms later");
    assert!(current.iter().all(|c| c["status"] == "revoked" && c["active"] == false));
    let sms = current.iter().find(|c| c["channel"] == "sms").expect("sms");
    assert_eq!(sms["revocation_reason"], "too-many");
    assert_eq!(sms["proof"]["method"], "preference-centre");
    let history = consents.body["history"].as_array().expect("history");
    assert_eq!(history.len(), 6, "3 grants, 3 revocations");

    let health = api.call("GET", "/health", None).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "ok");
    let consumers = health.body["consumers"].as_array().expect("consumers").clone();
    let names: Vec<&str> = consumers.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, ["projector", "consent", "campaign", "rule-segments", "channel"]);
    assert!(consumers.iter().all(|c| c["lag"] == 0 && c["dead_letters"] == 0));
}

#[tokio::test]
async fn events_are_paged() {
    let api = TestApi::new();
    let id = register(&api, "pager@example.com").await;
    let first = api.call("GET", &format!("/customers/{id}/events?limit=3"), None).await;
    assert_eq!(first.body["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(first.body["next_after"], 3);
    let rest = api
        .call("GET", &format!("/customers/{id}/events?after=3&limit=3"), None)
        .await;
    assert_eq!(rest.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest.body["items"][0]["version"], 4);
    assert_eq!(rest.body["next_after"], Value::Null);
}

#[tokio::test]
async fn idempotency_key_applies_once_and_replays_the_first_answer() {
    let api = TestApi::new();
    let body = registration("once@example.com");
    let headers = [("authorization", "Bearer test-token"), ("idempotency-key", "reg-42")];
    let first = api.call_with("POST", "/customers", Some(&body), &headers).await;
    assert_eq!(first.status, 201);
    let count = api.event_count().await;
    let second = api.call_with("POST", "/customers", Some(&body), &headers).await;
    assert_eq!(second.status, 201);
    assert_eq!(second.body, first.body, "same answer");
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(api.event_count().await, count, "applied once");

    let id = first.body["id"].as_str().expect("id");
    let patch = [("authorization", "Bearer test-token"), ("idempotency-key", "rename-1")];
    let path = format!("/customers/{id}");
    let p1 = api
        .call_with("PATCH", &path, Some(r#"{"first_name":"Amazing"}"#), &patch)
        .await;
    let p2 = api
        .call_with("PATCH", &path, Some(r#"{"first_name":"Amazing"}"#), &patch)
        .await;
    assert_eq!((p1.status.as_u16(), p2.status.as_u16()), (200, 200));
    assert_eq!(p1.body, p2.body);
    assert_eq!(api.event_count().await, count + 1);

    let reused = api
        .call_with("PATCH", &path, Some(r#"{"first_name":"Other"}"#), &patch)
        .await;
    assert_eq!(
        (reused.status.as_u16(), reused.body["field"].clone()),
        (422, json!("Idempotency-Key"))
    );
    assert_eq!(api.event_count().await, count + 1);
}

/// method, path, body, expected status, expected `field`.
type BadRequest = (&'static str, String, Option<String>, u16, Option<&'static str>);

/// Each bad request gets its status and a problem naming the field, and
/// writes nothing.
#[tokio::test]
async fn bad_input_is_refused_with_a_problem_and_writes_nothing() {
    let api = TestApi::new();
    let id = register(&api, "existing@example.com").await;
    let unknown = "0190d7a0-0000-7000-8000-000000000000";
    let valid: Value = serde_json::from_str(&registration("new@example.com")).expect("json");
    let with = |field: &str, value: Value| {
        let mut v = valid.clone();
        v[field] = value;
        v.to_string()
    };
    let without = |field: &str| {
        let mut v = valid.clone();
        v.as_object_mut().expect("object").remove(field);
        v.to_string()
    };
    let big = format!(r#"{{"email":"big@example.com","pad":"{}"}}"#, "x".repeat(70 * 1024));
    let cases: Vec<BadRequest> = vec![
        ("POST", "/customers".into(), Some("{not json".into()), 400, None),
        ("POST", "/customers".into(), Some(String::new()), 400, None),
        (
            "POST",
            "/customers".into(),
            Some(r#"{"email":"a@b.co"} x"#.into()),
            400,
            None,
        ),
        (
            "POST",
            "/customers".into(),
            Some(without("first_name")),
            422,
            Some("first_name"),
        ),
        (
            "POST",
            "/customers".into(),
            Some(with("terms_accepted", json!("yes"))),
            422,
            Some("terms_accepted"),
        ),
        (
            "POST",
            "/customers".into(),
            Some(with("terms_accepted", json!(false))),
            422,
            Some("terms_accepted"),
        ),
        (
            "POST",
            "/customers".into(),
            Some(with("email", json!("not-an-email"))),
            422,
            Some("email"),
        ),
        (
            "POST",
            "/customers".into(),
            Some(with("source", json!("carrier-pigeon"))),
            422,
            Some("source"),
        ),
        (
            "POST",
            "/customers".into(),
            Some(with("phone", json!("12345"))),
            422,
            Some("phone"),
        ),
        (
            "POST",
            "/customers".into(),
            Some(with("timezone", json!("Europe/Atlantis"))),
            422,
            Some("timezone"),
        ),
        (
            "POST",
            "/customers".into(),
            Some(with("marketing_consent", json!({"fax": true}))),
            422,
            Some("marketing_consent.fax"),
        ),
        (
            "POST",
            "/customers".into(),
            Some(with("surprise", json!(1))),
            422,
            Some("surprise"),
        ),
        (
            "POST",
            "/customers".into(),
            Some(with("email", json!("EXISTING@example.com"))),
            409,
            Some("email"),
        ),
        ("POST", "/customers".into(), Some(big), 413, None),
        ("GET", format!("/customers/{unknown}"), None, 404, None),
        ("GET", "/customers/not-a-uuid".into(), None, 404, None),
        (
            "PATCH",
            format!("/customers/{unknown}"),
            Some(r#"{"first_name":"X"}"#.into()),
            404,
            None,
        ),
        (
            "PATCH",
            format!("/customers/{id}"),
            Some(r#"{"address":{"line1":"1 Main St","city":"X","postal_code":"1","country":"Germany"}}"#.into()),
            422,
            Some("address.country"),
        ),
        (
            "PATCH",
            format!("/customers/{id}"),
            Some(r#"{"date_of_birth":"yesterday"}"#.into()),
            422,
            Some("date_of_birth"),
        ),
        (
            "PUT",
            format!("/customers/{id}/email"),
            Some(r#"{"new_email":"existing@EXAMPLE.com"}"#.into()),
            422,
            Some("new_email"),
        ),
        (
            "POST",
            format!("/customers/{id}/email/verify"),
            Some(r#"{"token":"guess"}"#.into()),
            422,
            Some("token"),
        ),
        (
            "PUT",
            format!("/customers/{id}/preferences"),
            Some(r#"{"timezone":"UTC","quiet_hours":{"start":"22:00","end":"22:00"}}"#.into()),
            422,
            Some("quiet_hours.end"),
        ),
        (
            "PUT",
            format!("/customers/{id}/preferences"),
            Some(r#"{"email_frequency":"hourly"}"#.into()),
            422,
            Some("email_frequency"),
        ),
        (
            "POST",
            format!("/customers/{id}/consents"),
            Some(r#"{"purpose":"marketing","channel":"email","method":"api"}"#.into()),
            409,
            Some("channel"),
        ),
        (
            "POST",
            format!("/customers/{id}/consents"),
            Some(r#"{"purpose":"spam","channel":"email","method":"api"}"#.into()),
            422,
            Some("purpose"),
        ),
        (
            "DELETE",
            format!("/customers/{id}/consents/spam/email"),
            None,
            422,
            Some("purpose"),
        ),
        (
            "DELETE",
            format!("/customers/{id}/consents/marketing/fax"),
            None,
            422,
            Some("channel"),
        ),
        (
            "DELETE",
            format!("/customers/{id}/consents/analytics/email"),
            None,
            409,
            Some("channel"),
        ),
        (
            "POST",
            format!("/customers/{id}/deactivate"),
            Some(r#"{"reason":"bored"}"#.into()),
            422,
            Some("reason"),
        ),
        (
            "POST",
            format!("/customers/{id}/reactivate"),
            Some(r#"{"why":"because"}"#.into()),
            422,
            Some("why"),
        ),
        ("POST", format!("/customers/{id}/reactivate"), None, 409, None),
        (
            "GET",
            format!("/customers/{id}/events?limit=0"),
            None,
            422,
            Some("limit"),
        ),
        (
            "GET",
            format!("/customers/{id}/events?after=-1"),
            None,
            422,
            Some("after"),
        ),
        ("GET", format!("/customers/{id}/events?page=2"), None, 422, Some("page")),
        ("GET", "/nowhere".into(), None, 404, None),
        ("GET", "/customers".into(), None, 422, Some("email")),
        ("GET", "/customers?email=x&y=1".into(), None, 422, Some("y")),
        ("GET", format!("/customers/{unknown}/timeline"), None, 404, None),
        (
            "GET",
            format!("/customers/{id}/timeline?limit=501"),
            None,
            422,
            Some("limit"),
        ),
        ("GET", format!("/customers/{unknown}/consents"), None, 404, None),
        ("DELETE", "/customers".into(), None, 405, None),
    ];
    let before = api.event_count().await;
    for (method, path, body, status, field) in cases {
        let a = api.call(method, &path, body.as_deref()).await;
        let label = format!("{method} {path} {:.80}", body.clone().unwrap_or_default());
        assert_eq!(a.status.as_u16(), status, "{label}: {:?}", a.body);
        assert_eq!(a.content_type(), "application/problem+json", "{label}");
        assert_eq!(a.body["status"], status, "{label}");
        assert!(a.body["title"].is_string() && a.body["detail"].is_string(), "{label}");
        assert_eq!(a.body["field"].as_str(), field, "{label}: {:?}", a.body);
        assert_eq!(api.event_count().await, before, "{label} wrote nothing");
    }
}

#[tokio::test]
async fn requests_need_the_bearer_token() {
    let api = TestApi::new();
    let body = registration("noauth@example.com");
    let none = api.call_with("POST", "/customers", Some(&body), &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.headers["www-authenticate"], "Bearer");
    let wrong = api
        .call_with("POST", "/customers", Some(&body), &[("authorization", "Bearer nope")])
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.content_type(), "application/problem+json");
    let bad_key = api
        .call_with(
            "POST",
            "/customers",
            Some(&body),
            &[("authorization", "Bearer test-token"), ("idempotency-key", "has space")],
        )
        .await;
    assert_eq!(
        (bad_key.status.as_u16(), bad_key.body["field"].clone()),
        (400, json!("Idempotency-Key"))
    );
    assert_eq!(api.event_count().await, 0);
}

#[tokio::test]
async fn concurrent_commands_on_one_customer_all_apply() {
    let api = std::sync::Arc::new(TestApi::new());
    let id = register(&api, "busy@example.com").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let api = api.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({ "first_name": format!("Name{i}") }).to_string();
            api.call("PATCH", &format!("/customers/{id}"), Some(&body)).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), 200);
    }
    let events = api
        .call("GET", &format!("/customers/{id}/events?limit=500"), None)
        .await;
    let versions: Vec<u64> = events.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["version"].as_u64())
        .collect();
    assert_eq!(
        versions,
        (1..=12).collect::<Vec<u64>>(),
        "4 registration events + 8 renames, gapless"
    );
}

#[tokio::test]
async fn push_devices_register_once_and_bad_ones_are_refused_naming_the_field() {
    let api = TestApi::new();
    let id = register(&api, "pusher@example.com").await;
    let path = format!("/customers/{id}/push-devices");
    let device = r#"{"platform":"fcm","token":"device-token-1"}"#;
    let a = api.call("POST", &path, Some(device)).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(a.body["push_devices"][0]["token"], "device-token-1");
    let before = api.event_count().await;
    assert_eq!(api.call("POST", &path, Some(device)).await.status, 200);
    assert_eq!(api.event_count().await, before, "the same device again appends nothing");

    let bad = api
        .call("POST", &path, Some(r#"{"platform":"blackberry","token":"t"}"#))
        .await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    assert!(bad.body.to_string().contains("platform"), "{:?}", bad.body);
    let unknown = api
        .call("POST", &path, Some(r#"{"platform":"fcm","token":"t","x":1}"#))
        .await;
    assert!(unknown.status == 400 || unknown.status == 422, "{:?}", unknown.body);
    assert_eq!(api.event_count().await, before);
}
