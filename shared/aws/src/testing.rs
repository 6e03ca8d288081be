//! Test support (feature `testing`, enabled only by dev-dependencies): AWS
//! clients against the moto server whose endpoint is in `AWS_ENDPOINT_URL`
//! (region us-east-1, dummy credentials).
//!
//! Run moto through `scripts/moto_server.py` (same flags as `moto_server`):
//! stock `moto_server` handles requests on many threads with no lock, and a
//! failing TransactWriteItems can then undo another request's acknowledged
//! write.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

/// The region the test clients use.
pub const REGION: &str = "us-east-1";

/// The SDK configuration for the moto endpoint in `AWS_ENDPOINT_URL`; panics,
/// saying how to start one, when it is not set.
pub async fn moto_config() -> SdkConfig {
    let endpoint = match std::env::var("AWS_ENDPOINT_URL") {
        Ok(e) if !e.is_empty() => e,
        _ => panic!(
            "AWS_ENDPOINT_URL is not set: these are AWS wire tests and need a moto server \
             (run scripts/test, or start `.venv/bin/python scripts/moto_server.py -H 127.0.0.1 \
             -p 5055` with moto[server] 5.2 installed, and set AWS_ENDPOINT_URL=http://127.0.0.1:5055)"
        ),
    };
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(crate::lambda::https_client())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .load()
        .await
}

/// A DynamoDB client for the moto endpoint (see [`moto_config`]).
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(&moto_config().await)
}

/// An EventBridge client for the moto endpoint (see [`moto_config`]).
pub async fn eventbridge_client() -> aws_sdk_eventbridge::Client {
    aws_sdk_eventbridge::Client::new(&moto_config().await)
}

/// A KMS client for the moto endpoint (see [`moto_config`]).
pub async fn kms_client() -> aws_sdk_kms::Client {
    aws_sdk_kms::Client::new(&moto_config().await)
}

/// A KMS key of a test's own (with an alias) and a keys table of its own:
/// what the deployed key store ([`crate::keys::DynamoKmsKeyStore`]) needs.
pub struct TestDataKeys {
    pub kms: aws_sdk_kms::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub key_id: String,
    pub key_arn: String,
    /// `alias/crm-<purpose>-<unique>`, naming the key.
    pub alias: String,
    /// `keys-<purpose>-<unique>`.
    pub table: String,
}

impl TestDataKeys {
    /// The key store over these parts (KMS key named by its alias).
    pub fn store(&self) -> crate::keys::DynamoKmsKeyStore {
        crate::keys::DynamoKmsKeyStore::new(
            self.dynamodb.clone(),
            self.kms.clone(),
            self.table.clone(),
            self.alias.clone(),
        )
    }
}

/// Creates a KMS key, its alias and a keys table on moto, named after
/// `purpose` (e.g. `rekey`) and a unique suffix.
pub async fn fresh_data_keys(purpose: &str) -> TestDataKeys {
    let (kms, dynamodb) = (kms_client().await, dynamodb_client().await);
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let key = kms
        .create_key()
        .description(format!("crm {purpose} test data keys"))
        .send()
        .await
        .expect("create a KMS key");
    let metadata = key.key_metadata().expect("the key's metadata");
    let (key_id, key_arn) = (
        metadata.key_id().to_string(),
        metadata.arn().expect("the key's ARN").to_string(),
    );
    let alias = format!("alias/crm-{purpose}-{unique}");
    kms.create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .expect("create the alias");
    let table = format!("keys-{purpose}-{unique}");
    crate::keys::create_keys_table(&dynamodb, &table)
        .await
        .expect("create the keys table");
    TestDataKeys {
        kms,
        dynamodb,
        key_id,
        key_arn,
        alias,
        table,
    }
}

/// An SQS client for the moto endpoint (see [`moto_config`]).
pub async fn sqs_client() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&moto_config().await)
}

/// An EventBridge Scheduler client for the moto endpoint (see [`moto_config`]).
pub async fn scheduler_client() -> aws_sdk_scheduler::Client {
    aws_sdk_scheduler::Client::new(&moto_config().await)
}

/// An SES v2 client for the moto endpoint (see [`moto_config`]).
pub async fn sesv2_client() -> aws_sdk_sesv2::Client {
    aws_sdk_sesv2::Client::new(&moto_config().await)
}

/// An SNS client for the moto endpoint (see [`moto_config`]).
pub async fn sns_client() -> aws_sdk_sns::Client {
    aws_sdk_sns::Client::new(&moto_config().await)
}

/// An event store over a new events table on moto, named `{prefix}-` and a
/// fresh UUID, so every test has a table of its own.
pub async fn fresh_event_store(prefix: &str) -> crate::dynamodb::DynamoEventStore {
    let client = dynamodb_client().await;
    let table = format!("{prefix}-{}", uuid::Uuid::now_v7().simple());
    crate::dynamodb::create_events_table(&client, &table)
        .await
        .expect("create the events table");
    crate::dynamodb::DynamoEventStore::new(client, table)
}

/// A raw item of a table on moto, by its key attributes, read consistently;
/// `None` when there is none.
pub async fn get_item<'a>(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    key: impl IntoIterator<Item = (&'a str, aws_sdk_dynamodb::types::AttributeValue)>,
) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    key.into_iter()
        .fold(client.get_item().table_name(table), |get, (name, value)| {
            get.key(name, value)
        })
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item()
        .cloned()
}

/// The raw item of event `sk` of stream `pk` in the store's table (see
/// [`get_item`]).
pub async fn event_item(
    store: &crate::dynamodb::DynamoEventStore,
    pk: &str,
    sk: u64,
) -> Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let key = [
        ("pk", AttributeValue::S(pk.into())),
        ("sk", AttributeValue::N(sk.to_string())),
    ];
    get_item(store.client(), store.table(), key).await
}

/// The moto endpoint in `AWS_ENDPOINT_URL` (see [`moto_config`]).
pub fn moto_endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(e) if !e.is_empty() => e,
        _ => panic!("AWS_ENDPOINT_URL is not set: these are AWS wire tests and need a moto server (see moto_config)"),
    }
}

/// moto's SES and SNS state (what was sent), `GET
/// {endpoint}/moto-api/data.json?service=ses&service=sns` (scripts/moto_server.py
/// answers only those services; moto's own dump of every DynamoDB item takes
/// seconds on a shared moto), over a plain HTTP/1.1 connection (`Connection:
/// close`, so the body runs to the end). Blocking (std), which is fine for a
/// test's one look.
pub fn moto_data() -> serde_json::Value {
    use std::io::{Read, Write};
    let endpoint = moto_endpoint();
    let authority = endpoint
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("moto endpoint must be plain http://: {endpoint}"))
        .trim_end_matches('/');
    let mut stream =
        std::net::TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect to moto at {authority}: {e}"));
    let request = format!(
        "GET /moto-api/data.json?service=ses&service=sns HTTP/1.1\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send the request to moto");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read moto's answer");
    let text = String::from_utf8(response).expect("moto's answer is UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer from moto");
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "moto-api/data.json: {head}"
    );
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).expect("moto-api/data.json is JSON")
}

/// A chunked HTTP/1.1 body, joined.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// A new SQS queue named `name` on moto: its URL.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
        .queue_url()
        .unwrap_or_else(|| panic!("queue {name} has no url"))
        .to_string()
}

/// A new moto bus whose one rule puts every `crm.*` event into a new SQS
/// queue, as the deployed rules fill the consumer queues (decision 0029):
/// `(bus name, queue URL)`, both named after `prefix` and a fresh id.
pub async fn bus_into_queue(prefix: &str) -> (String, String) {
    let events = eventbridge_client().await;
    let sqs = sqs_client().await;
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let queue = create_queue(&sqs, &format!("{prefix}-target-{unique}")).await;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn).cloned())
        .expect("queue arn");
    let bus = format!("{prefix}-bus-{unique}");
    events
        .create_event_bus()
        .name(&bus)
        .send()
        .await
        .expect("create the bus");
    events
        .put_rule()
        .event_bus_name(&bus)
        .name("all-crm-events")
        .event_pattern(r#"{"source":[{"prefix":"crm."}]}"#)
        .send()
        .await
        .expect("put the rule");
    events
        .put_targets()
        .event_bus_name(&bus)
        .rule("all-crm-events")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(arn)
                .build()
                .expect("target"),
        )
        .send()
        .await
        .expect("put the target");
    (bus, queue)
}

/// Every message body of `queue` as JSON (deleted as read), waiting up to
/// ten seconds for `expected` of them.
pub async fn drain_queue(queue: &str, expected: usize) -> Vec<serde_json::Value> {
    let sqs = sqs_client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut bodies = Vec::new();
    loop {
        let page = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .wait_time_seconds(if bodies.len() >= expected { 0 } else { 1 })
            .send()
            .await
            .expect("receive");
        if page.messages().is_empty() && (bodies.len() >= expected || std::time::Instant::now() > deadline) {
            return bodies;
        }
        for m in page.messages() {
            bodies.push(serde_json::from_str(m.body().unwrap_or_default()).expect("a JSON body"));
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
}

/// The messages of `queue` with every attribute (system and message
/// attributes), deleted as read, as Lambda deletes what it answered;
/// waits up to ten seconds for `expected` of them.
pub async fn take_messages(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    expected: usize,
) -> Vec<aws_sdk_sqs::types::Message> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut out = Vec::new();
    while out.len() < expected && std::time::Instant::now() < deadline {
        let page = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for m in page.messages() {
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
            out.push(m.clone());
        }
    }
    out
}
