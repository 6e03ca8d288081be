//! AWS round trips of `POST /v1/batch` (issue 17 item 5): the api router
//! assembled as the Lambda `main` assembles it (the encrypted event store,
//! the sealed read models, the scheduler, [`crm_api::build`]) over SDK
//! clients of moto (`AWS_ENDPOINT_URL`) whose every request is counted by
//! an interceptor, by service and operation. moto serves one request at a
//! time, so its timings say nothing about AWS: this test counts, never
//! times. BENCHMARKS.md turns the counts into an estimate from DynamoDB's
//! and KMS's typical latencies.
//!
//! The batches are what a shop's backend flushes (segment-analytics-python
//! and -node send up to 500 messages a batch): 50 shoppers, each with two
//! anonymous page views, an identify (user id, anonymous id, email, names),
//! two more pages, three product views and two products added to a cart;
//! interleaved as time orders them. The second batch is the same shoppers
//! coming back (known customers, existing carts).
//!
//! Then one shopper's 500 messages in one batch (decision 0056): a backend
//! catching up on one busy visitor, whose messages cannot be taken side by
//! side; first message by message (a batch each, the cost of each message
//! as before decision 0056), then another such shopper's in one batch.

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use crm_api::{build, router, ApiPorts, ApiSettings, Auth, IngestSources};
use crm_aws::dynamodb::{create_events_table, create_read_models_table, DynamoReadModels};
use crm_aws::keys::create_keys_table;
use crm_aws::scheduler::EventBridgeScheduler;
use crm_aws::stores::{EncryptedEventStore, EventStoreTables};
use crm_core::clock::SystemClock;
use crm_core::ingest::Source;
use crm_core::messaging::unsubscribe::TokenSigner;
use crm_core::privacy::IdentifierHasher;
use crm_core::retention::RetentionPolicy;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const WRITE_KEY: &str = "wk_shop_round_trips_0123456789";
const SHOPPERS: usize = 50;
/// Messages per shopper in one batch (10 × 50 = 500, the most a batch holds).
const PER_SHOPPER: usize = 10;

/// The most AWS round trips (DynamoDB, KMS, Scheduler requests) the
/// ingestion of one message of these batches may cost on average (9.61 on
/// the first visit before `KeyStore::create_key`, 9.41 after; decision 0054).
const MAX_ROUND_TRIPS_PER_MESSAGE: f64 = 9.5;

/// The most round trips one shopper's batch of 500 may cost per message
/// (decision 0056; about 7 taken message by message).
const MAX_ONE_SHOPPER_ROUND_TRIPS_PER_MESSAGE: f64 = 1.0;

/// The most time one shopper's batch of 500 may take at typical latencies,
/// its requests one after the other: well within the api's 10 s timeout.
const MAX_ONE_SHOPPER_SECONDS: f64 = 5.0;

/// Requests by `service:operation`: X-Amz-Target for DynamoDB and KMS (JSON
/// protocols), method and first path segment for EventBridge Scheduler
/// (REST).
#[derive(Debug, Default, Clone)]
struct RoundTrips(Arc<Mutex<BTreeMap<String, usize>>>);

#[derive(Debug)]
struct Counter {
    service: &'static str,
    counts: RoundTrips,
}

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "RoundTrips"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request();
        let operation = match request.headers().get("x-amz-target") {
            Some(target) => target.rsplit('.').next().unwrap_or(target).to_string(),
            None => {
                let path = request.uri().split("://").nth(1).unwrap_or(request.uri());
                let first = path.split('/').nth(1).unwrap_or_default();
                format!("{} /{}", request.method(), first.split('?').next().unwrap_or_default())
            }
        };
        // DynamoDB: which of the tables (the first one a request names).
        let table = request
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .and_then(|body| first_table(&body))
            .map(|name| format!("({})", name.split("-trips-").next().unwrap_or_default()))
            .unwrap_or_default();
        let mut counts = self.counts.0.lock().map_err(|_| "the counts are poisoned")?;
        *counts
            .entry(format!("{}:{operation}{table}", self.service))
            .or_default() += 1;
        Ok(())
    }
}

/// The first `TableName` in a DynamoDB request body (TransactWriteItems
/// names it in each item).
fn first_table(body: &Value) -> Option<String> {
    match body {
        Value::Object(fields) => fields
            .get("TableName")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| fields.values().find_map(first_table)),
        Value::Array(items) => items.iter().find_map(first_table),
        _ => None,
    }
}

impl RoundTrips {
    fn counter(&self, service: &'static str) -> Counter {
        Counter {
            service,
            counts: self.clone(),
        }
    }

    fn snapshot(&self) -> BTreeMap<String, usize> {
        self.0.lock().expect("counts").clone()
    }
}

/// What was counted between two snapshots.
fn since(before: &BTreeMap<String, usize>, after: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A typical latency of one request from a Lambda function to the service
/// in the same region, in milliseconds: the assumptions of the estimate
/// (BENCHMARKS.md, "Segment batches on AWS", says why these).
fn typical_ms(operation: &str) -> f64 {
    match operation.split('(').next().unwrap_or(operation) {
        "dynamodb:GetItem" => 5.0,
        // Up to 100 consistent reads in parallel on DynamoDB's side.
        "dynamodb:BatchGetItem" => 10.0,
        "dynamodb:Query" => 6.0,
        "dynamodb:PutItem" | "dynamodb:DeleteItem" | "dynamodb:UpdateItem" => 7.0,
        "dynamodb:TransactWriteItems" => 15.0,
        kms if kms.starts_with("kms:") => 8.0,
        scheduler if scheduler.starts_with("scheduler:") => 25.0,
        _ => 10.0,
    }
}

/// The time `counts` would take one after the other at [`typical_ms`], in seconds.
fn estimate(counts: &BTreeMap<String, usize>) -> f64 {
    counts.iter().map(|(op, n)| typical_ms(op) * *n as f64).sum::<f64>() / 1000.0
}

/// Prints the counts and the time they would take one after the other at
/// [`typical_ms`]; returns the round trips per message.
fn print_counts(title: &str, counts: &BTreeMap<String, usize>, messages: usize) -> f64 {
    let total: usize = counts.values().sum();
    let per_message = total as f64 / messages as f64;
    let seconds = estimate(counts);
    println!(
        "{title}: {total} round trips for {messages} messages ({per_message:.2} per message), \
         about {seconds:.1} s at typical latencies"
    );
    for (operation, n) in counts {
        println!(
            "  {operation:<32} {n:>6}  ({:.2} per message)",
            *n as f64 / messages as f64
        );
    }
    per_message
}

/// The api's router over counted clients of moto, and the counts.
async fn counted_api(unique: &str) -> (axum::Router, RoundTrips) {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| !e.is_empty()),
        "AWS_ENDPOINT_URL is not set: this wire test needs a moto server (see crm_aws::testing::moto_config)"
    );
    // As the Lambda main loads it: the endpoint, region and credentials from the environment.
    let config = crm_aws::lambda::load_aws_config().await;
    let setup_dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let setup_kms = aws_sdk_kms::Client::new(&config);
    let setup_scheduler = aws_sdk_scheduler::Client::new(&config);
    let (events_table, keys_table, read_models_table) = (
        format!("events-trips-{unique}"),
        format!("keys-trips-{unique}"),
        format!("read-models-trips-{unique}"),
    );
    create_events_table(&setup_dynamodb, &events_table)
        .await
        .expect("the events table");
    create_keys_table(&setup_dynamodb, &keys_table)
        .await
        .expect("the keys table");
    create_read_models_table(&setup_dynamodb, &read_models_table)
        .await
        .expect("the read models table");
    let kms_key = setup_kms.create_key().send().await.expect("a KMS key");
    let kms_key_id = kms_key.key_metadata().expect("key metadata").key_id().to_string();
    let group = format!("crm-trips-{unique}");
    setup_scheduler
        .create_schedule_group()
        .name(&group)
        .send()
        .await
        .expect("the schedule group");

    let trips = RoundTrips::default();
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&config)
            .interceptor(trips.counter("dynamodb"))
            .build(),
    );
    let kms = aws_sdk_kms::Client::from_conf(
        aws_sdk_kms::config::Builder::from(&config)
            .interceptor(trips.counter("kms"))
            .build(),
    );
    let scheduler = aws_sdk_scheduler::Client::from_conf(
        aws_sdk_scheduler::config::Builder::from(&config)
            .interceptor(trips.counter("scheduler"))
            .build(),
    );
    let EncryptedEventStore { events, keys, .. } = EncryptedEventStore::new(
        dynamodb.clone(),
        kms,
        EventStoreTables {
            events_table,
            keys_table,
            data_keys_kms_key_id: kms_key_id,
        },
        Some(RetentionPolicy::default()),
    );
    let state = build(
        ApiPorts {
            events,
            read_models: Arc::new(DynamoReadModels::new(dynamodb, read_models_table)),
            clock: Arc::new(SystemClock),
            scheduler: Arc::new(EventBridgeScheduler::new(
                scheduler,
                group,
                "arn:aws:events:us-east-1:123456789012:event-bus/crm-trips",
                "arn:aws:iam::123456789012:role/crm-trips-scheduler",
                None,
            )),
            keys,
            health: None,
        },
        ApiSettings {
            auth: Auth::Gateway,
            unsubscribe: TokenSigner::new(b"round-trips-unsubscribe-secret-0123456789"),
            public_base_url: "https://crm.shop.example".into(),
            identifiers: IdentifierHasher::new(b"round-trips-identifier-secret-0123456789"),
            ingest_sources: IngestSources::new(vec![(Source::server("shop"), WRITE_KEY.to_string())]),
        },
    );
    (router(state), trips)
}

/// Shopper `n`'s `i`-th message of a visit (`visit` 0 or 1).
fn message(unique: &str, visit: usize, n: usize, i: usize) -> Value {
    let user_id = format!("shopper-{n}-{unique}");
    let anonymous_id = format!("anon-{n}-{unique}-{visit}");
    let message_id = format!("{unique}-{visit}-{n}-{i}");
    let timestamp = chrono::Utc::now().to_rfc3339();
    let context = json!({ "ip": "203.0.113.9", "userAgent": "Mozilla/5.0", "sessionId": format!("s-{n}-{visit}") });
    let product = format!("sku-{}", (n + i) % 17);
    let page = |who: Value, path: &str| {
        let mut m = json!({ "type": "page", "messageId": message_id, "timestamp": timestamp,
            "name": "Shop", "properties": { "url": format!("https://shop.example{path}"), "title": "Shop" },
            "context": context });
        m.as_object_mut()
            .expect("object")
            .extend(who.as_object().expect("object").clone());
        m
    };
    let known = json!({ "userId": user_id, "anonymousId": anonymous_id });
    let anonymous = json!({ "anonymousId": anonymous_id });
    match (visit, i) {
        // A first visit: anonymous until identify.
        (0, 0) => page(anonymous, "/"),
        (0, 1) => page(anonymous, "/lamps"),
        (_, 2) => json!({ "type": "identify", "messageId": message_id, "timestamp": timestamp,
            "userId": user_id, "anonymousId": anonymous_id, "context": context,
            "traits": { "email": format!("shopper-{n}-{unique}@example.com"), "firstName": "Ada", "lastName": format!("Shopper{n}") } }),
        (1, 0) | (1, 1) | (_, 3) | (_, 4) => page(known, &format!("/lamps/{product}")),
        (_, 5..=7) => json!({ "type": "track", "event": "Product Viewed", "messageId": message_id,
            "timestamp": timestamp, "userId": user_id, "anonymousId": anonymous_id, "context": context,
            "properties": { "product_id": product, "name": "Desk lamp", "category": "lamps", "price": 40.5 } }),
        _ => json!({ "type": "track", "event": "Product Added", "messageId": message_id,
            "timestamp": timestamp, "userId": user_id, "anonymousId": anonymous_id, "context": context,
            "properties": { "cart_id": format!("cart-{n}-{unique}"), "product_id": product, "name": "Desk lamp",
                "price": 40.5, "quantity": 1, "currency": "eur" } }),
    }
}

/// One batch of every shopper's visit, interleaved in time order.
fn batch(unique: &str, visit: usize) -> Value {
    let messages: Vec<Value> = (0..PER_SHOPPER)
        .flat_map(|i| (0..SHOPPERS).map(move |n| (n, i)))
        .map(|(n, i)| message(unique, visit, n, i))
        .collect();
    json!({ "batch": messages })
}

/// The batch of every shopper's `i`-th message of a visit, and what it is.
fn batch_of_kind(unique: &str, visit: usize, i: usize) -> (Value, String) {
    let messages: Vec<Value> = (0..SHOPPERS).map(|n| message(unique, visit, n, i)).collect();
    let first = &messages[0];
    let kind = match first["type"].as_str() {
        Some("track") => format!("track {}", first["event"].as_str().unwrap_or_default()),
        other => other.unwrap_or_default().to_string(),
    };
    (json!({ "batch": messages }), kind)
}

async fn send(api: &axum::Router, body: &Value) -> Value {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"));
    let request = Request::post("/v1/batch")
        .header("content-type", "application/json")
        .header("authorization", format!("Basic {basic}"))
        .body(Body::from(body.to_string()))
        .expect("a request");
    let response = api.clone().oneshot(request).await.expect("an answer");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body");
    let mut answer: Value = serde_json::from_slice(&bytes).expect("JSON");
    let results = answer.as_object_mut().and_then(|a| a.remove("results"));
    // The first result refused or to send again, if any (the 500 are too many to print).
    let first_refused = results.as_ref().and_then(Value::as_array).and_then(|r| {
        r.iter()
            .find(|r| r["status"] == "rejected" || r["status"] == "retry")
            .cloned()
    });
    assert_eq!(status, StatusCode::OK, "{answer} {first_refused:?}");
    answer["first_refused"] = first_refused.unwrap_or(Value::Null);
    answer
}

fn assert_taken(answer: &Value, messages: usize) {
    assert_eq!(
        (
            answer["accepted"].as_u64(),
            answer["rejected"].as_u64(),
            answer["retry"].as_u64()
        ),
        (Some(messages as u64), Some(0), Some(0)),
        "every message taken: {answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_500_messages_costs_a_bounded_number_of_round_trips() {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let (api, trips) = counted_api(&unique).await;
    let messages = SHOPPERS * PER_SHOPPER;

    // The first visit: 500 messages in one batch, 50 new customers.
    let before = trips.snapshot();
    let answer = send(&api, &batch(&unique, 0)).await;
    assert_taken(&answer, messages);
    let counted = since(&before, &trips.snapshot());
    let first = print_counts("first visit, one batch (new customers)", &counted, messages);
    // 100 new profiles (50 anonymous, 50 customers): one GetItem each finds
    // no key, one conditional PutItem makes it (no second read), and the
    // branch key is read once; KMS makes the branch key once.
    let profiles = 2 * SHOPPERS;
    let of = |operation: &str| counted.get(operation).copied().unwrap_or(0);
    assert_eq!(
        (of("dynamodb:GetItem(keys)"), of("dynamodb:PutItem(keys)")),
        (profiles + 1, profiles + 2),
        "{counted:?}"
    );
    assert!(of("kms:GenerateDataKey") + of("kms:Decrypt") <= 1, "{counted:?}");

    // The return visit, by kind of message: 10 batches of 50.
    let visit_start = trips.snapshot();
    for i in 0..PER_SHOPPER {
        let (body, kind) = batch_of_kind(&unique, 1, i);
        let before = trips.snapshot();
        let answer = send(&api, &body).await;
        assert_taken(&answer, SHOPPERS);
        print_counts(
            &format!("  return visit, message {i}: {kind}"),
            &since(&before, &trips.snapshot()),
            SHOPPERS,
        );
    }
    let returning = print_counts(
        "return visit, all 10 kinds (known customers)",
        &since(&visit_start, &trips.snapshot()),
        messages,
    );

    // The return visit again in one batch (a client's retry): every message
    // but the identifies (idempotent by construction, they keep no receipt)
    // is a duplicate.
    let before = trips.snapshot();
    let answer = send(&api, &batch(&unique, 1)).await;
    assert_eq!(
        (answer["duplicates"].as_u64(), answer["accepted"].as_u64()),
        (Some((messages - SHOPPERS) as u64), Some(SHOPPERS as u64)),
        "{answer}"
    );
    print_counts(
        "return visit sent again, one batch (a retry)",
        &since(&before, &trips.snapshot()),
        messages,
    );

    let worst = first.max(returning);
    assert!(
        worst <= MAX_ROUND_TRIPS_PER_MESSAGE,
        "{worst:.2} round trips per message; at most {MAX_ROUND_TRIPS_PER_MESSAGE}"
    );
}

/// The `i`-th of one shopper's 500 messages: three anonymous pages, then an
/// identify (user id, anonymous id, email, names), and as known: pages and
/// product views in turn, a product added to the cart every 25 messages,
/// the identify again every 100 (a backend sends it with each session).
fn one_shopper_message(shopper: &str, i: usize) -> Value {
    let user_id = format!("solo-{shopper}");
    let anonymous_id = format!("solo-anon-{shopper}");
    let message_id = format!("{shopper}-{i}");
    let timestamp = chrono::Utc::now().to_rfc3339();
    let context =
        json!({ "ip": "203.0.113.9", "userAgent": "Mozilla/5.0", "sessionId": format!("s-{shopper}-{}", i / 100) });
    let product = format!("sku-{}", i % 17);
    if i < 3 {
        return json!({ "type": "page", "messageId": message_id, "timestamp": timestamp, "anonymousId": anonymous_id,
            "name": "Shop", "properties": { "url": format!("https://shop.example/{i}"), "title": "Shop" },
            "context": context });
    }
    if i == 3 || i % 100 == 50 {
        return json!({ "type": "identify", "messageId": message_id, "timestamp": timestamp,
            "userId": user_id, "anonymousId": anonymous_id, "context": context,
            "traits": { "email": format!("solo-{shopper}@example.com"), "firstName": "Ada", "lastName": "Solo" } });
    }
    if i % 25 == 10 {
        return json!({ "type": "track", "event": "Product Added", "messageId": message_id,
            "timestamp": timestamp, "userId": user_id, "anonymousId": anonymous_id, "context": context,
            "properties": { "cart_id": format!("cart-solo-{shopper}"), "product_id": product, "name": "Desk lamp",
                "price": 40.5, "quantity": 1, "currency": "eur" } });
    }
    if i % 2 == 0 {
        return json!({ "type": "page", "messageId": message_id, "timestamp": timestamp,
            "userId": user_id, "anonymousId": anonymous_id, "name": "Shop", "context": context,
            "properties": { "url": format!("https://shop.example/lamps/{product}"), "title": "Shop" } });
    }
    json!({ "type": "track", "event": "Product Viewed", "messageId": message_id,
        "timestamp": timestamp, "userId": user_id, "anonymousId": anonymous_id, "context": context,
        "properties": { "product_id": product, "name": "Desk lamp", "category": "lamps", "price": 40.5 } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shopper_s_batch_of_500_fits_the_api_s_timeout() {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let (api, trips) = counted_api(&unique).await;
    let messages = 500;

    // One shopper's 500 messages, a batch each: what each cost before
    // decision 0056 (a BatchGetItem of one receipt instead of its GetItem).
    let alone = format!("{unique}-alone");
    let before = trips.snapshot();
    for i in 0..messages {
        let answer = send(&api, &json!({ "batch": [one_shopper_message(&alone, i)] })).await;
        assert_taken(&answer, 1);
    }
    let one_by_one = since(&before, &trips.snapshot());
    print_counts("one shopper, message by message", &one_by_one, messages);

    // Another such shopper's 500 in one batch.
    let together = format!("{unique}-together");
    let batch = json!({ "batch": (0..messages).map(|i| one_shopper_message(&together, i)).collect::<Vec<_>>() });
    let before = trips.snapshot();
    let answer = send(&api, &batch).await;
    assert_taken(&answer, messages);
    let counted = since(&before, &trips.snapshot());
    let per_message = print_counts("one shopper, one batch of 500", &counted, messages);
    let seconds = estimate(&counted);

    // The same batch again (a client's retry): all but the identifies are
    // duplicates.
    let before = trips.snapshot();
    let answer = send(&api, &batch).await;
    let identifies = (0..messages).filter(|&i| i == 3 || i % 100 == 50).count();
    assert_eq!(
        (answer["duplicates"].as_u64(), answer["accepted"].as_u64()),
        (Some((messages - identifies) as u64), Some(identifies as u64)),
        "{answer}"
    );
    print_counts(
        "one shopper, the batch sent again (a retry)",
        &since(&before, &trips.snapshot()),
        messages,
    );

    assert!(
        per_message <= MAX_ONE_SHOPPER_ROUND_TRIPS_PER_MESSAGE,
        "{per_message:.2} round trips per message; at most {MAX_ONE_SHOPPER_ROUND_TRIPS_PER_MESSAGE}"
    );
    assert!(
        seconds <= MAX_ONE_SHOPPER_SECONDS,
        "about {seconds:.1} s at typical latencies; at most {MAX_ONE_SHOPPER_SECONDS}"
    );
}
