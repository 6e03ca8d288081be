//! The log's entries, their redaction, and what ingestion records.

use super::*;
use crate::ingest::{Accepted, IngestError, Ingestion, Source};
use crate::privacy::{IdentifierKind, LookupKind};
use serde_json::json;

fn hasher() -> IdentifierHasher {
    IdentifierHasher::new(b"refusals-test-secret")
}

#[test]
fn personal_values_are_hashed_or_removed_and_the_rest_kept() {
    let h = hasher();
    let raw = json!({
        "type": "identify", "messageId": "m-1", "writeKey": "wk_secret_0123456789",
        "userId": " ada@example.com ", "anonymousId": "device-1", "previousId": 42,
        "traits": { "email": "Ada@Example.com", "first_name": "Ada", "phone": "+49 30 1234 5678",
            "address": { "city": "Berlin" }, "plan": "gold" },
        "context": { "ip": "203.0.113.9", "device": { "id": "dev-42", "type": "ios" }, "userAgent": "Mozilla/5.0", "locale": "de-DE",
            "traits": { "email": "ada@example.com", "name": "Ada L" },
            "page": { "url": "https://shop.example/?e=ada@example.com" } },
        "properties": { "total": "x", "email": "ada@example.com", "note": "call +49 30 1234 5678",
            "shipping_address": { "street": "Main 1" }, "contact": "ada@example.com",
            "products": [{ "sku": "SKU-1", "name": "Mug" }] },
    });
    let out = redact_message(&raw, Some(&h));
    let text = out.to_string();
    for secret in [
        "ada@",
        "Ada",
        "30 1234",
        "203.0.113",
        "Mozilla",
        "Berlin",
        "Main 1",
        "wk_secret",
        "device-1",
        "dev-42",
    ] {
        assert!(!text.contains(secret), "{secret} left in {text}");
    }
    let email = format!("{HASH_PREFIX}{}", h.email("ada@example.com"));
    assert_eq!(
        out["userId"],
        json!(format!(
            "{HASH_PREFIX}{}",
            h.lookup(LookupKind::UserId, "ada@example.com")
        ))
    );
    assert_eq!(
        out["previousId"],
        json!(format!("{HASH_PREFIX}{}", h.lookup(LookupKind::UserId, "42")))
    );
    assert_eq!(out["traits"]["email"], json!(email), "the proof ledger's email hash");
    assert_eq!(
        out["traits"]["phone"],
        json!(format!(
            "{HASH_PREFIX}{}",
            h.hash(IdentifierKind::Phone, "+493012345678")
        ))
    );
    assert_eq!(out["traits"]["first_name"], json!(REMOVED));
    assert_eq!(out["traits"]["plan"], json!(REMOVED), "every other trait value goes");
    assert_eq!(out["context"]["ip"], json!(REMOVED));
    assert_eq!(out["context"]["userAgent"], json!(REMOVED));
    assert_eq!(out["context"]["locale"], json!("de-DE"));
    assert_eq!(out["context"]["device"], json!({ "id": REMOVED, "type": "ios" }));
    assert_eq!(out["context"]["traits"]["email"], json!(email));
    assert_eq!(out["context"]["page"]["url"], json!("https://shop.example/?e=[email]"));
    assert_eq!(
        out["properties"]["total"],
        json!("x"),
        "what was refused stays readable"
    );
    assert_eq!(out["properties"]["email"], json!(email));
    assert_eq!(out["properties"]["contact"], json!(email), "a value that is an address");
    assert_eq!(out["properties"]["note"], json!("call [phone]"));
    assert_eq!(out["properties"]["shipping_address"], json!(REMOVED));
    assert_eq!(
        out["properties"]["products"],
        json!([{ "sku": "SKU-1", "name": "Mug" }])
    );
    assert_eq!(out["writeKey"], json!(REMOVED), "a write key is a secret");
    assert_eq!(out["type"], json!("identify"));
    assert_eq!(out["messageId"], json!("m-1"));
}

#[test]
fn without_a_hasher_identifiers_are_removed_and_odd_messages_kept_out() {
    let out = redact_message(
        &json!({ "userId": "u-1", "traits": { "email": "ada@example.com" } }),
        None,
    );
    assert_eq!(out, json!({ "userId": REMOVED, "traits": { "email": REMOVED } }));
    assert_eq!(redact_message(&json!("ada@example.com"), Some(&hasher())), Value::Null);
    let huge = json!({ "properties": { "blob": "x".repeat(super::super::MAX_MESSAGE_BYTES) } });
    assert_eq!(redact_message(&huge, Some(&hasher())), Value::Null);
}

#[test]
fn a_refusal_names_what_was_sent_without_personal_data() {
    let now = Utc::now();
    let raw = json!({ "messageId": "m-9", "event": "Order Completed", "userId": "u-1",
        "properties": { "revenue": "ada@example.com" } });
    let r = Refusal::new(
        "shop",
        &raw,
        Some(Kind::Track),
        &Rejection::new("properties.revenue", "\"ada@example.com\" is not a number"),
        Some(&hasher()),
        now,
    );
    assert_eq!(r.kind.as_deref(), Some("track"), "the route's call");
    assert_eq!(r.event.as_deref(), Some("Order Completed"));
    assert_eq!(r.message_id.as_deref(), Some("m-9"));
    assert_eq!(r.reason, "\"[email]\" is not a number");
    assert_eq!(r.expires_at - r.refused_at, Duration::days(7));
    assert!(is_cursor(&r.cursor()), "{}", r.cursor());
    assert!(!is_cursor("a b"));
    assert!(!r.message.to_string().contains("ada@"));
}

fn ingestion() -> Ingestion {
    use crate::clock::VirtualClock;
    use crate::commerce::{CartService, OrderService};
    use crate::customer::CustomerService;
    use crate::testing::{test_time, InMemoryEventStore, InMemoryScheduler};
    let store = Arc::new(InMemoryEventStore::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let scheduler = Arc::new(InMemoryScheduler::default());
    let customers =
        Arc::new(CustomerService::new(store.clone(), clock.clone()).with_identifiers(crate::testing::identifiers()));
    Ingestion::new(
        store.clone(),
        customers,
        Arc::new(CartService::new(store.clone(), clock.clone(), scheduler.clone())),
        Arc::new(OrderService::new(store, clock, scheduler)),
        super::super::IngestSettings::default(),
    )
}

/// A log that cannot be written.
struct Broken;

#[async_trait]
impl RefusalLog for Broken {
    async fn record(&self, _: &Refusal) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("throttled".into()))
    }

    async fn list(&self, _: &str, _: Option<&str>, _: usize, _: DateTime<Utc>) -> Result<RefusalPage, StoreError> {
        Err(StoreError::Unavailable("throttled".into()))
    }
}

#[tokio::test]
async fn take_records_what_it_refuses_and_counts_it_and_nothing_else() {
    use crate::metrics::RecordedMetrics;
    let log = Arc::new(InMemoryRefusals::default());
    let buffer = RecordedMetrics::default();
    let metrics = Arc::new(buffer.clone());
    let ingestion = ingestion().with_refusals(RefusedMessages::new(log.clone()).with_metrics(metrics));
    let shop = Source::server("shop");
    let now = crate::testing::test_time();

    let bad_price = json!({ "type": "track", "messageId": "m-1", "anonymousId": "a-1",
        "event": "Product Viewed", "properties": { "product_id": "sku-mug", "price": "ada@example.com" } });
    let refused = ingestion.take(&shop, &bad_price, None, now).await;
    let Err(IngestError::Rejected(rejection)) = refused else {
        panic!("refused: {refused:?}")
    };
    let no_type = json!({ "messageId": "m-2", "userId": "u-2" });
    assert!(matches!(
        ingestion.take_in_batch(&shop, &no_type, now, Some(now)).await,
        Err(IngestError::Rejected(_))
    ));
    let fine = json!({ "messageId": "m-3", "anonymousId": "a-1", "name": "Home",
        "properties": { "url": "https://shop.example/" } });
    assert_eq!(
        ingestion.take(&shop, &fine, Some(Kind::Page), now).await,
        Ok(Accepted::Stored { late: false })
    );

    let page = log.list("shop", None, MAX_PAGE, now).await.expect("listed");
    assert_eq!(page.refusals.len(), 2, "{:?}", page.refusals);
    let first = page
        .refusals
        .iter()
        .find(|r| r.message_id.as_deref() == Some("m-1"))
        .expect("m-1");
    assert_eq!(first.field, rejection.field);
    assert_eq!(first.event.as_deref(), Some("Product Viewed"));
    assert_eq!(first.kind.as_deref(), Some("track"));
    assert!(!first.message.to_string().contains("ada@"), "{}", first.message);
    assert!(first.message["anonymousId"]
        .as_str()
        .is_some_and(|a| a.starts_with(HASH_PREFIX)));
    let second = page
        .refusals
        .iter()
        .find(|r| r.message_id.as_deref() == Some("m-2"))
        .expect("m-2");
    assert_eq!(second.field, "type");
    let counted: Vec<Value> = buffer
        .documents()
        .into_iter()
        .filter(|d| d[MESSAGES_REFUSED] == json!(1.0) && d["Source"] == "shop")
        .collect();
    assert_eq!(counted.len(), 2, "{:?}", buffer.documents());

    // A log that cannot be written changes nothing of the answer.
    let broken = ingestion_with(Arc::new(Broken));
    assert!(matches!(
        broken.take(&shop, &bad_price, None, now).await,
        Err(IngestError::Rejected(r)) if r == rejection
    ));
}

fn ingestion_with(log: Arc<dyn RefusalLog>) -> Ingestion {
    ingestion().with_refusals(RefusedMessages::new(log))
}

#[tokio::test]
async fn the_in_memory_log_passes_the_contract() {
    contract::check(Arc::new(InMemoryRefusals::default())).await;
}
