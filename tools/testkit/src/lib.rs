//! The workspace's test support (a dev-dependency of the function crates
//! and of the workspace tests; nothing ships it):
//! - [`local`]: crm-local's real SQLite adapters (event store, read models,
//!   dead letters, timers, data keys, mail sink), so a function crate's tests
//!   run over them without depending on crm-local;
//! - [`Harness`]: a consumer function's stores in a fresh directory,
//!   customers written through crm-core's [`CustomerService`];
//! - events as EventBridge delivers them to a rule's target and as SQS hands
//!   them to a function ([`bus_event`], [`sqs_batch`], [`invocation`]);
//! - [`LogCapture`]: everything a test process logs, for a scan.
//!
//! It is a crate of its own because crm-local depends on the api, campaign
//! and channel libraries (it hosts their assemblies): no library may depend
//! on crm-local, and only this crate and the workspace tests do (decision
//! 0057).

mod logs;
pub use logs::LogCapture;

/// crm-local's SQLite adapters, as the local runtime runs them.
pub mod local {
    pub use crm_local::adapters::keys::SqliteKeyStore;
    pub use crm_local::adapters::mail::MailSink;
    pub use crm_local::adapters::read_models::SqliteReadModels;
    pub use crm_local::adapters::timers::SqliteScheduler;
    pub use crm_local::runtime::bus::{timer_event, SqliteDeadLetters};
    pub use crm_local::SqliteEventStore;
}

use crm_bus_consumer::{GroupBuilder, Handled, SqsEvent};
use crm_core::bus::BusEntry;
use crm_core::clock::SystemClock;
use crm_core::consumer::ConsumerGroup;
use crm_core::customer::{Customer, CustomerCommand, CustomerService, Executed};
use crm_core::event::{Actor, CommandMeta, EventEnvelope};
use crm_core::ports::{AppendRequest, DeadLetter, EventStore, ExpectedVersion};
use lambda_runtime::{Context, LambdaEvent};
use local::{SqliteDeadLetters, SqliteEventStore, SqliteReadModels};
use serde_json::Value;
use std::sync::Arc;

/// The account and region the sample events carry.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";

/// Stores and a dead-letter queue for one test.
pub struct Harness {
    pub events: Arc<SqliteEventStore>,
    pub docs: Arc<SqliteReadModels>,
    pub dead_letters: Arc<SqliteDeadLetters>,
    service: CustomerService,
    _dir: tempfile::TempDir,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

fn respond(c: &Customer, _: &[EventEnvelope]) -> (u16, Value) {
    (200, serde_json::json!({ "id": c.id }))
}

impl Harness {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let events = Arc::new(SqliteEventStore::open(&dir.path().join("events.db")).expect("event store"));
        let docs = Arc::new(SqliteReadModels::open(&dir.path().join("read-models.db")).expect("read models"));
        let dead_letters =
            Arc::new(SqliteDeadLetters::open(&dir.path().join("dead-letters.db")).expect("dead letters"));
        let service = CustomerService::new(events.clone(), Arc::new(SystemClock))
            .with_identifiers(crm_core::testing::identifiers());
        Harness {
            events,
            docs,
            dead_letters,
            service,
            _dir: dir,
        }
    }

    /// The function's group over these stores.
    pub fn group(&self, build: GroupBuilder) -> ConsumerGroup {
        build(self.events.clone(), self.docs.clone(), self.dead_letters.clone())
    }

    /// Runs a command on a customer; the events it stored.
    pub async fn execute(&self, customer_id: &str, command: CustomerCommand) -> Vec<EventEnvelope> {
        let meta = CommandMeta::new(Actor::api("test"));
        match self
            .service
            .execute(customer_id, &command, &meta, None, &respond)
            .await
            .expect("command applied")
        {
            Executed::Applied { events, .. } => events,
            Executed::Replayed { .. } => panic!("a command without idempotency key was replayed"),
        }
    }

    /// Registers a customer who ticked marketing email: versions 1
    /// `CustomerRegistered`, 2 `ConsentGranted`, 3 `EmailVerificationRequested`.
    pub async fn register(&self, customer_id: &str, email: &str) -> Vec<EventEnvelope> {
        let events = self
            .execute(
                customer_id,
                CustomerCommand::Register(crm_core::testing::registration(
                    email,
                    "Ada",
                    "Lovelace",
                    "Europe/Berlin",
                )),
            )
            .await;
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            types,
            ["CustomerRegistered", "ConsentGranted", "EmailVerificationRequested"]
        );
        events
    }

    /// Stores envelopes as they are (one new stream, versions from 1), for
    /// example the details of the sample events.
    pub async fn seed(&self, envelopes: &[EventEnvelope]) {
        let stream_id = envelopes.first().expect("envelopes").stream_id.clone();
        let appended = self
            .events
            .append(AppendRequest {
                stream_id,
                expected: ExpectedVersion::NoStream,
                events: envelopes.to_vec(),
                reservations: Vec::new(),
                receipt: None,
            })
            .await
            .expect("seeded");
        let versions: Vec<u64> = appended.events.iter().map(|e| e.version).collect();
        let expected: Vec<u64> = envelopes.iter().map(|e| e.version).collect();
        assert_eq!(versions, expected, "seeded envelopes keep their versions");
    }

    /// Every parked letter, oldest first.
    pub async fn letters(&self) -> Vec<DeadLetter> {
        self.dead_letters
            .list()
            .await
            .expect("dead letters")
            .into_iter()
            .map(|stored| stored.letter)
            .collect()
    }
}

/// A sample event of `events/` (e.g. `projector/customer-registered.json`).
pub fn sample_event(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The envelope a bus event carries.
pub fn detail(event: &Value) -> EventEnvelope {
    crm_bus_consumer::handler::decode(event).expect("the detail is an envelope")
}

/// A stored event as EventBridge delivers it to a rule's target.
pub fn bus_event(envelope: &EventEnvelope) -> Value {
    BusEntry::for_event(envelope.clone()).to_event_json(ACCOUNT, REGION)
}

/// One SQS batch of the function's queue: each bus event a message (ids
/// `m0`, `m1`, ...), as the event source mapping hands it over.
pub fn sqs_batch(bus_events: &[Value]) -> SqsEvent {
    let records: Vec<Value> = bus_events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            serde_json::json!({
                "messageId": format!("m{i}"),
                "receiptHandle": format!("receipt-{i}"),
                "body": event.to_string(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:crm-consumer"),
                "awsRegion": REGION,
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).expect("an SQS event")
}

/// One invocation of the function with `payload`.
pub fn invocation(payload: Value) -> LambdaEvent<Value> {
    LambdaEvent::new(payload, Context::default())
}

/// The consumers that applied, found duplicate and parked a delivered
/// event; panics on any other outcome.
pub fn delivered(outcome: &Handled) -> (&Vec<&'static str>, &Vec<&'static str>, &Vec<&'static str>) {
    match outcome {
        Handled::Delivered {
            applied,
            duplicates,
            parked,
            ..
        } => (applied, duplicates, parked),
        other => panic!("expected a delivery, got {other:?}"),
    }
}

/// The consumers that applied a delivered event (see [`delivered`]).
pub fn applied(outcome: &Handled) -> &[&'static str] {
    delivered(outcome).0
}

/// The consumers that had applied a delivered event already (see [`delivered`]).
pub fn duplicates(outcome: &Handled) -> &[&'static str] {
    delivered(outcome).1
}
