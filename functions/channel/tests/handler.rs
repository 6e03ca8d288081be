//! The channel handler, called as Lambda calls it, over the local runtime's
//! SQLite stores and mail sink: the sample events in `events/channel/`.

use chrono::{DateTime, Utc};
use crm_aws::emf::{EmfWriter, SharedBuffer};
use crm_channel::handler::handle;
use crm_core::clock::{Clock, VirtualClock};
use crm_core::consent::{Channel, Purpose};
use crm_core::consumer::{open_letter, seal_letter, SealedDeadLetters};
use crm_core::customer::*;
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::messaging::delivery::{DeliverySettings, MessageDelivery, Providers};
use crm_core::messaging::unsubscribe::TokenSigner;
use crm_core::ports::{DeadLetterQueue, EventStore};
use crm_core::privacy::{is_encrypted, KeyStore, ERASED};
use crm_testkit::local::{MailSink, SqliteDeadLetters, SqliteEventStore, SqliteReadModels, SqliteScheduler};
use crm_testkit::LogCapture;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use std::sync::Arc;

const CUSTOMER: &str = "0193a6f3-1a2b-7c3d-8e4f-5a6b7c8d9e0f";
const MESSAGE: &str = "msg-5f1c0a9e7b2d4c6a8e0f1a2b3c4d5e6f";

fn sample(name: &str) -> Value {
    let path = format!("{}/../../events/channel/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct World {
    _dir: tempfile::TempDir,
    /// Encrypting, over SQLite (decision 0017), as the functions run.
    events: Arc<dyn EventStore>,
    keys: Arc<crm_testkit::local::SqliteKeyStore>,
    sink: Arc<MailSink>,
    dead_letters: Arc<SqliteDeadLetters>,
    /// The queue the handler parks in: `dead_letters`, sealing what it
    /// keeps, as every runtime wires it (decisions 0040, 0048).
    parked: Arc<dyn DeadLetterQueue>,
    /// The SQLite database, read raw (as stored) by the tests.
    db: std::path::PathBuf,
    clock: Arc<VirtualClock>,
    delivery: MessageDelivery,
    /// The EMF lines the delivery wrote (stdout in Lambda).
    metrics: SharedBuffer,
}

/// The counts of one metric per channel the handler emitted, as (channel, reason).
fn emitted(w: &World, metric: &str) -> Vec<(String, String)> {
    w.metrics
        .documents()
        .into_iter()
        .filter(|d| d.get(metric) == Some(&json!(1.0)))
        .map(|d| {
            let field = |name: &str| d[name].as_str().unwrap_or_default().to_string();
            (field("Channel"), field("Reason"))
        })
        .collect()
}

async fn world() -> World {
    world_for("grace.hopper@example.com").await
}

/// A sample of `events/channel/` about the customer at `email` rather than
/// the sample's recipient.
fn sample_for(name: &str, email: &str) -> Value {
    let text = sample(name).to_string().replace("grace.hopper@example.com", email);
    serde_json::from_str(&text).expect("json")
}

/// The world of a customer registered with `email`.
async fn world_for(email: &str) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("crm.db");
    let start: DateTime<Utc> = "2026-11-23T14:00:01Z".parse().expect("time");
    let clock = Arc::new(VirtualClock::starting_at(start));
    let keys = Arc::new(crm_testkit::local::SqliteKeyStore::open_data_dir(dir.path()).expect("keys"));
    let events: Arc<dyn EventStore> = Arc::new(crm_core::privacy::EncryptingEventStore::new(
        Arc::new(SqliteEventStore::open(&db).expect("events")),
        keys.clone(),
    ));
    let docs = Arc::new(SqliteReadModels::open(&db).expect("docs"));
    let scheduler = Arc::new(SqliteScheduler::open(&db).expect("timers"));
    let sink = Arc::new(MailSink::open(&db, clock.clone()).expect("sink"));
    let dead_letters = Arc::new(SqliteDeadLetters::open(&db).expect("dead letters"));
    let parked: Arc<dyn DeadLetterQueue> = Arc::new(SealedDeadLetters::new(dead_letters.clone(), keys.clone()));
    let metrics = SharedBuffer::default();
    let delivery = MessageDelivery::new(
        events.clone(),
        docs,
        scheduler,
        clock.clone(),
        Providers {
            email: sink.clone(),
            sms: sink.clone(),
            push: sink.clone(),
        },
        Arc::new(TokenSigner::new(b"channel test")),
        crm_core::privacy::IdentifierHasher::new(b"channel test identifiers"),
        parked.clone(),
        DeliverySettings::default(),
    )
    .with_metrics(Arc::new(EmfWriter::new("Crm", Box::new(metrics.clone()))));
    let respond = |c: &Customer, _: &[EventEnvelope]| (201, json!({ "id": c.id }));
    let register = CustomerCommand::Register(crm_core::testing::registration(
        email,
        "Ada",
        "Lovelace",
        "Europe/London",
    ));
    delivery
        .customers()
        .execute(CUSTOMER, &register, &CommandMeta::new(Actor::api("t")), None, &respond)
        .await
        .expect("register");
    World {
        _dir: dir,
        events,
        keys,
        sink,
        dead_letters,
        parked,
        db,
        clock,
        delivery,
        metrics,
    }
}

async fn invoke(w: &World, payload: Value) -> Value {
    handle(
        LambdaEvent::new(payload, Context::default()),
        &w.delivery,
        w.keys.as_ref(),
        w.parked.as_ref(),
    )
    .await
    .unwrap_or_else(|e| panic!("handler failed: {e}"))
}

async fn types(w: &World, stream: &str) -> Vec<String> {
    w.events
        .read_stream(stream, 0, 100)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

#[tokio::test]
async fn a_request_delivered_three_times_is_sent_once_with_one_click_unsubscribe() {
    let w = world().await;
    for _ in 0..3 {
        invoke(&w, sample("message-requested.json")).await;
    }
    let mail = w.sink.list().await.expect("sink");
    assert_eq!(mail.len(), 1, "{mail:?}");
    let email = mail[0].email().expect("an email");
    assert_eq!(mail[0].recipient, "grace.hopper@example.com");
    assert_eq!(
        email.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(email.header("List-Unsubscribe").is_some_and(|v| v.contains("/u/")));
    assert!(email.html.contains("Desk lamp"), "{}", email.html);
    assert!(email.text.contains("Ada"), "{}", email.text);
    assert_eq!(
        types(&w, &format!("message-{MESSAGE}")).await,
        vec!["MessageClaimed", "MessageSent"]
    );
    // One send counted, however often the request came.
    assert_eq!(emitted(&w, "MessagesSent"), vec![("email".to_string(), String::new())]);
}

#[tokio::test]
async fn a_permanent_bounce_suppresses_the_address_and_invalidates_the_email() {
    let w = world().await;
    invoke(&w, sample("message-requested.json")).await;
    let answer = invoke(&w, sample("ses-bounce-permanent.json")).await;
    assert_eq!(answer["outcome"], "recorded", "{answer}");
    let again = invoke(&w, sample("ses-bounce-permanent.json")).await;
    assert_eq!(again["outcome"], "duplicate", "{again}");
    let customer = w
        .delivery
        .customers()
        .load(CUSTOMER)
        .await
        .expect("load")
        .expect("customer");
    assert!(customer.email_invalidated);
    // The next message to the address, even a transactional one, is suppressed.
    let mut next = sample("message-requested.json");
    next["detail"]["event_id"] = json!("0193a6f3-7a00-7c3d-8e4f-5a6b7c8d0011");
    next["detail"]["data"]["message_id"] = json!("msg-next");
    next["detail"]["data"]["template"] = json!("order-confirmation");
    next["detail"]["data"]["category"] = json!("transactional");
    next["detail"]["data"]["purpose"] = Value::Null;
    invoke(&w, next).await;
    assert_eq!(types(&w, "message-msg-next").await, vec!["MessageSuppressed"]);
    assert_eq!(w.sink.list().await.expect("sink").len(), 1);
    assert_eq!(emitted(&w, "MessagesSent").len(), 1);
    assert_eq!(
        emitted(&w, "MessagesSuppressed"),
        vec![("email".to_string(), "suppressed".to_string())]
    );
}

#[tokio::test]
async fn a_complaint_revokes_marketing_email_consent() {
    let w = world().await;
    invoke(&w, sample("message-requested.json")).await;
    let answer = invoke(&w, sample("ses-complaint.json")).await;
    assert_eq!(answer["outcome"], "recorded", "{answer}");
    let customer = w
        .delivery
        .customers()
        .load(CUSTOMER)
        .await
        .expect("load")
        .expect("customer");
    assert!(customer.consent(Purpose::Marketing, Channel::Email).is_none());
}

#[tokio::test]
async fn delivery_open_and_click_feedback_land_on_the_message_stream() {
    let w = world().await;
    invoke(&w, sample("message-requested.json")).await;
    for name in ["ses-delivery.json", "ses-open.json", "ses-click.json"] {
        let answer = invoke(&w, sample(name)).await;
        assert_eq!(answer["outcome"], "recorded", "{name}: {answer}");
    }
    assert_eq!(
        types(&w, &format!("message-{MESSAGE}")).await,
        vec![
            "MessageClaimed",
            "MessageSent",
            "EmailDelivered",
            "EmailOpened",
            "EmailClicked"
        ]
    );
}

#[tokio::test]
async fn a_deferral_timer_hands_the_request_back_and_it_is_sent() {
    let w = world().await;
    w.clock.advance(chrono::Duration::hours(17));
    assert!(w.clock.now() > "2026-11-24T07:00:00Z".parse::<DateTime<Utc>>().expect("time"));
    let answer = invoke(&w, sample("timer-fired-deferral.json")).await;
    assert_eq!(answer["outcome"], "timer", "{answer}");
    assert_eq!(w.sink.list().await.expect("sink").len(), 1);
}

#[tokio::test]
async fn an_unreadable_ses_event_is_parked_with_its_reason() {
    let w = world().await;
    let mut event = sample("ses-delivery.json");
    event["detail"]["mail"]["tags"] = json!({});
    let answer = invoke(&w, event).await;
    assert_eq!(answer["outcome"], "parked", "{answer}");
    let letters = w.dead_letters.list().await.expect("letters");
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].letter.reason.contains("tag"),
        "{:?}",
        letters[0].letter.reason
    );
}

#[tokio::test]
async fn an_sqs_batch_of_requests_feedback_and_a_duplicate_sends_once_and_records_the_feedback() {
    use crm_testkit::sqs_batch;
    let w = world().await;
    // A request twice in one batch (EventBridge delivers at least once), then
    // SES's delivery of the message in the next batch.
    let batch = sqs_batch(&[
        sample("message-requested.json"),
        sample("message-requested.json"),
        json!({"source": "aws.ses", "detail-type": "Email Delivered", "detail": "not feedback"}),
    ]);
    let report = crm_channel::handler::handle_batch(batch, &w.delivery, w.keys.as_ref(), w.parked.as_ref()).await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.events, 2);
    assert_eq!(w.sink.list().await.expect("sink").len(), 1);
    // Unreadable SES feedback is parked with its reason, not retried.
    assert_eq!(
        report.others,
        vec![json!({"outcome": "parked", "reason": report.others[0]["reason"]})]
    );
    assert_eq!(w.dead_letters.list().await.expect("letters").len(), 1);

    let report = crm_channel::handler::handle_batch(
        sqs_batch(&[sample("ses-delivery.json")]),
        &w.delivery,
        w.keys.as_ref(),
        w.parked.as_ref(),
    )
    .await;
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(report.others.len(), 1);
    assert_eq!(report.others[0]["outcome"], "recorded", "{report:?}");
    assert_eq!(
        types(&w, &format!("message-{MESSAGE}")).await,
        vec!["MessageClaimed", "MessageSent", "EmailDelivered"]
    );
}

#[tokio::test]
async fn ses_send_and_reject_samples_are_recorded_on_the_message() {
    let w = world().await;
    invoke(&w, sample("message-requested.json")).await;
    // The send's answer arrived, so SES's Send adds nothing (decision 0032).
    let answer = invoke(&w, sample("ses-send.json")).await;
    assert_eq!(answer["outcome"], "duplicate", "{answer}");
    assert_eq!(answer["type"], "MessageAccepted", "{answer}");
    let answer = invoke(&w, sample("ses-reject.json")).await;
    assert_eq!(answer["outcome"], "recorded", "{answer}");
    assert_eq!(answer["type"], "MessageContentRejected", "{answer}");
    assert_eq!(
        types(&w, &format!("message-{MESSAGE}")).await,
        vec!["MessageClaimed", "MessageSent", "MessageContentRejected"]
    );
    assert_eq!(w.sink.list().await.expect("sink").len(), 1);
}

/// A recipient address no ciphertext, hash or id can contain by chance.
const DISTINCT: &str = "wilhelmina.quattlebaum-bounce0048@provider-text.example.org";

/// The bounce sample to and about [`DISTINCT`], its receiving server
/// quoting the address as servers do.
fn quoting_bounce() -> Value {
    let mut bounce = sample_for("ses-bounce-permanent.json", DISTINCT);
    bounce["detail"]["bounce"]["bouncedRecipients"][0]["diagnosticCode"] = json!(format!(
        "smtp; 550 5.1.1 <{DISTINCT}>: Recipient address rejected: User unknown in virtual mailbox table"
    ));
    bounce
}

/// Every event of `stream` as the store keeps it (no decryption).
async fn stored_text(w: &World, stream: &str) -> String {
    let raw = SqliteEventStore::open(&w.db).expect("raw store");
    let events = raw.read_stream(stream, 0, 100).await.expect("read");
    serde_json::to_string(&events).expect("json")
}

/// Decision 0048: the receiving server's answer quotes the address; it is
/// kept encrypted on the message stream (and in the invalidation that quotes
/// it), sealed or scrubbed in the dead-letter queue, scrubbed in the logs,
/// and reads `[erased]` once the customer's key is gone.
#[tokio::test]
async fn a_bounce_that_quotes_the_address_keeps_it_nowhere_in_clear() {
    let logs = LogCapture::default();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(logs.clone())
            .finish(),
    );
    let w = world_for(DISTINCT).await;
    let message_stream = format!("message-{MESSAGE}");
    invoke(&w, sample("message-requested.json")).await;
    let answer = invoke(&w, quoting_bounce()).await;
    assert_eq!(answer["outcome"], "recorded", "{answer}");

    // Read back through the store: the diagnostic as the server wrote it.
    let read = w.events.read_stream(&message_stream, 0, 100).await.expect("read");
    let bounced = read.iter().find(|e| e.event_type == "EmailBounced").expect("bounced");
    assert!(
        bounced.data["diagnostic"]
            .as_str()
            .is_some_and(|d| d.contains(DISTINCT)),
        "{}",
        bounced.data
    );
    // As stored: encrypted, on the message stream and on the customer's.
    let stored = stored_text(&w, &message_stream).await;
    assert!(stored.contains("EmailBounced"), "{stored}");
    assert_eq!(stored.matches(DISTINCT).count(), 0, "{stored}");
    let raw = SqliteEventStore::open(&w.db).expect("raw store");
    let raw_bounce = raw.read_stream(&message_stream, 0, 100).await.expect("read");
    let raw_bounce = raw_bounce
        .iter()
        .find(|e| e.event_type == "EmailBounced")
        .expect("stored");
    assert!(raw_bounce.data["diagnostic"].as_str().is_some_and(is_encrypted));
    let customer = stored_text(&w, &format!("customer-{CUSTOMER}")).await;
    assert!(customer.contains("CustomerEmailInvalidated"), "{customer}");
    assert_eq!(customer.matches(DISTINCT).count(), 0, "{customer}");

    // Unreadable feedback quoting the address in the error: for the
    // customer (sealed under their key), and for no one (scrubbed).
    let mut malformed = quoting_bounce();
    malformed["id"] = json!("4e2f7c1a-9b3d-4a5e-8f60-1b2c3d4e0048");
    malformed["detail"]["mail"]["destination"] = json!(DISTINCT);
    let answer = invoke(&w, malformed.clone()).await;
    assert_eq!(answer["outcome"], "parked", "{answer}");
    let mut untagged = malformed.clone();
    untagged["detail"]["mail"]["tags"] = json!({});
    let answer = invoke(&w, untagged).await;
    assert_eq!(answer["outcome"], "parked", "{answer}");
    assert_eq!(answer.to_string().matches(DISTINCT).count(), 0, "{answer}");

    let letters = w.dead_letters.list().await.expect("letters");
    assert_eq!(letters.len(), 2);
    let queue_text = serde_json::to_string(&letters.iter().map(|l| &l.letter).collect::<Vec<_>>()).expect("json");
    assert_eq!(queue_text.matches(DISTINCT).count(), 0, "{queue_text}");
    assert!(
        letters[0].letter.reason.contains("[email]"),
        "the reason quoted the address: {}",
        letters[0].letter.reason
    );
    assert!(crm_core::consumer::dead_letters::is_sealed_feedback(
        &letters[0].letter.payload
    ));
    assert_eq!(letters[1].letter.payload["detail"]["mail"]["destination"], "[email]");
    // An operator opens the sealed one while the key exists.
    let opened = open_letter(w.keys.as_ref(), &letters[0].letter.payload)
        .await
        .expect("opened");
    assert_eq!(opened, malformed);

    // The logs: the handler logged the parking, never the address.
    let logged = logs.text();
    assert!(logged.contains("SES event parked"), "{logged}");
    assert!(logged.contains("[email]"), "{logged}");
    assert_eq!(logged.matches(DISTINCT).count(), 0, "{logged}");

    // Erased: the key is gone, the diagnostic reads as the marker, the
    // sealed letter as erased.
    w.keys.delete(CUSTOMER).await.expect("erase the key");
    let read = w.events.read_stream(&message_stream, 0, 100).await.expect("read");
    let bounced = read.iter().find(|e| e.event_type == "EmailBounced").expect("bounced");
    assert_eq!(bounced.data["diagnostic"], ERASED);
    let opened = open_letter(w.keys.as_ref(), &letters[0].letter.payload)
        .await
        .expect("opened");
    assert_eq!(opened["detail"], ERASED);
}

/// A letter parked sealed and sent back (a redrive) is opened and recorded.
#[tokio::test]
async fn sealed_feedback_sent_back_is_opened_and_recorded() {
    let w = world_for(DISTINCT).await;
    invoke(&w, sample("message-requested.json")).await;
    let mut sealed = quoting_bounce();
    seal_letter(w.keys.as_ref(), &mut sealed).await.expect("sealed");
    assert!(crm_core::consumer::dead_letters::is_sealed_feedback(&sealed));
    assert_eq!(sealed.to_string().matches(DISTINCT).count(), 0);
    let answer = invoke(&w, sealed.clone()).await;
    assert_eq!(answer["outcome"], "recorded", "{answer}");
    assert_eq!(answer["type"], "EmailBounced", "{answer}");
    // Once the key is gone it cannot be read: parked again as it came
    // (sealed under a key that no longer exists), and shown erased.
    w.keys.delete(CUSTOMER).await.expect("erase the key");
    let answer = invoke(&w, sealed.clone()).await;
    assert_eq!(answer["outcome"], "parked", "{answer}");
    let letters = w.dead_letters.list().await.expect("letters");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].letter.payload, sealed);
    let shown = open_letter(w.keys.as_ref(), &letters[0].letter.payload)
        .await
        .expect("opened");
    assert_eq!(shown["detail"], ERASED);
}
