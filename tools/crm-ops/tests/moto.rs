//! `crm-ops` against moto (`AWS_ENDPOINT_URL`; scripts/test starts one):
//! tables, a KMS key and a dead-letter queue created in moto, customers
//! written through the encrypting store (personal fields encrypted at rest,
//! decisions 0016, 0017), then the library's replay, check and dead-letter
//! commands, the full replay-and-diff check (decision 0035) through the real
//! adapters, and the binary's output and exit status. The relay's dead
//! letters and a time range of the table published again onto a moto bus,
//! and a consumer's dead letters sent back to its queue (decision 0030).

use crm_aws::dynamodb::{create_events_table, create_read_models_table};
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_aws::testing::{
    bus_into_queue, create_queue, drain_queue, dynamodb_client, fresh_data_keys, moto_config, moto_endpoint, sqs_client,
};
use crm_core::bus::BusEntry;
use crm_core::customer::views::CUSTOMER_360;
use crm_core::ports::{DeadLetterQueue, EventStore, ReadModelStore, ReadOp};
use crm_core::relay::{ParkedEvent, RELAY_CONSUMER};
use crm_core::testing::{customer_id, dead_letter};
use crm_ops::{CliError, Clients, Settings, Tables};

/// The identifier hash secret the consumer groups of these tests are built
/// with (the projector's indexes are keyed by it, decision 0046).
const IDENTIFIER_SECRET: &str = "crm-ops moto tests: identifier secret";
use std::process::{Command, Output};
use std::sync::Arc;
use uuid::Uuid;

fn email(n: usize) -> String {
    format!("cli{n}@example.com")
}

/// A deployment in moto: events, read-models and keys tables, a KMS key and
/// a dead-letter queue of its own, and the settings naming them.
struct World {
    settings: Settings,
    clients: Clients,
    tables: Tables,
    queue_name: String,
    dead_letters: Arc<SqsDeadLetterQueue>,
}

async fn world() -> World {
    let dynamodb = dynamodb_client().await;
    let sqs = sqs_client().await;
    let unique = Uuid::now_v7().simple().to_string();
    let (events, docs) = (format!("events-cli-{unique}"), format!("read-models-cli-{unique}"));
    create_events_table(&dynamodb, &events).await.expect("events table");
    create_read_models_table(&dynamodb, &docs)
        .await
        .expect("read-models table");
    let data_keys = fresh_data_keys("cli").await;
    let (keys, key_arn) = (data_keys.table, data_keys.key_arn);
    let queue_name = format!("cli-dlq-{unique}");
    let url = sqs
        .create_queue()
        .queue_name(&queue_name)
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .expect("queue url")
        .to_string();
    let settings = Settings {
        events_table: Some(events),
        read_models_table: Some(docs),
        keys_table: Some(keys),
        data_keys_kms_key_id: Some(key_arn),
        dead_letter_queue_url: Some(url.clone()),
        event_bus_name: None,
        relay_dead_letter_queue_url: None,
        identifier_hash_secret: Some(IDENTIFIER_SECRET.into()),
    };
    let clients = Clients::new(&moto_config().await);
    let tables = Tables::new(&clients, &settings).expect("tables");
    World {
        settings,
        tables,
        queue_name,
        dead_letters: Arc::new(SqsDeadLetterQueue::new(clients.sqs.clone(), url)),
        clients,
    }
}

/// Registers customers through the encrypting store, as the api function does.
async fn register(store: Arc<dyn EventStore>, customers: usize) {
    for n in 0..customers {
        let registration = crm_core::testing::registration(&email(n), "Cli", &format!("User{n}"), "UTC");
        crm_core::testing::register(store.clone(), &customer_id(n), registration).await;
    }
}

async fn profile(w: &World, n: usize) -> Option<serde_json::Value> {
    w.tables
        .docs
        .get(CUSTOMER_360, &customer_id(n), "profile")
        .await
        .expect("get")
}

async fn tamper(w: &World, n: usize) {
    let stream = format!("customer-{}", customer_id(n));
    let checkpoint = w
        .tables
        .docs
        .checkpoint(CUSTOMER_360, &stream)
        .await
        .expect("checkpoint");
    let ops = vec![ReadOp::Put {
        partition: customer_id(n),
        sort: "profile".into(),
        body: serde_json::json!({"tampered": true}),
    }];
    w.tables
        .docs
        .commit(CUSTOMER_360, &stream, checkpoint, checkpoint, ops)
        .await
        .expect("tamper");
}

/// The binary, with the world's settings in its environment.
fn crm_ops(w: &World, args: &[&str]) -> Output {
    let s = &w.settings;
    let var = |v: &Option<String>| v.clone().unwrap_or_default();
    Command::new(env!("CARGO_BIN_EXE_crm-ops"))
        .args(args)
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("EVENTS_TABLE", var(&s.events_table))
        .env("READ_MODELS_TABLE", var(&s.read_models_table))
        .env("KEYS_TABLE", var(&s.keys_table))
        .env("DATA_KEYS_KMS_KEY_ID", var(&s.data_keys_kms_key_id))
        .env("DEAD_LETTER_QUEUE_URL", var(&s.dead_letter_queue_url))
        .env("EVENT_BUS_NAME", var(&s.event_bus_name))
        .env("RELAY_DEAD_LETTER_QUEUE_URL", var(&s.relay_dead_letter_queue_url))
        .env("IDENTIFIER_HASH_SECRET", var(&s.identifier_hash_secret))
        .output()
        .expect("run crm-ops")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn replay_rebuilds_the_customer_360_decrypted_and_check_finds_a_tampered_document() {
    let w = world().await;
    register(w.tables.events.clone(), 4).await;

    // At rest the email is ciphertext.
    let stream = format!("customer-{}", customer_id(1));
    let raw = w.tables.stored.read_stream(&stream, 0, 1).await.expect("read")[0].clone();
    assert!(
        raw.data["email"].as_str().is_some_and(|e| e.starts_with("enc:")),
        "{}",
        raw.data
    );

    let groups = crm_ops::consumer_groups(&w.tables, w.dead_letters.clone(), Some(IDENTIFIER_SECRET));
    let replayed = crm_ops::replay(&w.tables, &groups, w.dead_letters.as_ref(), CUSTOMER_360, 3, false)
        .await
        .expect("replay");
    assert_eq!(replayed.consumers, [CUSTOMER_360]);
    assert_eq!(replayed.report.parked, 0, "{replayed:?}");
    assert!(replayed.report.events >= 4 * 3, "{replayed:?}");
    let line = crm_ops::render_replay(&replayed);
    assert!(line.contains("events/s") && line.contains("0 parked"), "{line}");
    // Recorded for the API's GET /operations/replays (decision 0085).
    let recorded = crm_core::ops::progress::recorded(w.tables.docs.as_ref())
        .await
        .expect("replay progress");
    let progress = recorded
        .iter()
        .find(|p| p.name == CUSTOMER_360)
        .expect("the replay is recorded");
    assert_eq!(
        progress.state,
        crm_core::ops::progress::ReplayState::Done,
        "{progress:?}"
    );
    assert_eq!(progress.events, replayed.report.events, "{progress:?}");

    for n in 0..4 {
        let doc = profile(&w, n).await.expect("a customer 360");
        assert_eq!(doc["email"], email(n).as_str(), "decrypted: {doc}");
    }

    // Consistent (the consent ledger, never replayed here, is behind, not different).
    let clean = crm_ops::check(&w.tables, 0).await.expect("check");
    assert_eq!(clean.streams, 4);
    assert_eq!(clean.documents, 4);
    assert!(clean.is_consistent(), "{}", crm_ops::render_check(&clean));

    tamper(&w, 2).await;
    let report = crm_ops::check(&w.tables, 0).await.expect("check");
    assert_eq!(report.differences.len(), 1, "{}", crm_ops::render_check(&report));
    let text = crm_ops::render_check(&report);
    assert!(
        text.contains(&format!("DIFF {CUSTOMER_360} customer-{}", customer_id(2))),
        "{text}"
    );
    assert!(text.ends_with("1 difference(s)"), "{text}");

    // A second replay clears the tampered document first and rebuilds it.
    let again = crm_ops::replay(&w.tables, &groups, w.dead_letters.as_ref(), CUSTOMER_360, 2, false)
        .await
        .expect("replay again");
    assert_eq!(again.cleared, 4 + 4, "four documents and four checkpoints");
    assert_eq!(again.report.parked, 0, "{again:?}");
    assert!(crm_ops::check(&w.tables, 0).await.expect("check").is_consistent());

    // Unknown names are refused, naming what is known.
    match crm_ops::replay(&w.tables, &groups, w.dead_letters.as_ref(), "nope", 1, false).await {
        Err(CliError::UnknownConsumer { known, .. }) => {
            assert!(known.contains(CUSTOMER_360) && known.contains("name-index"), "{known}")
        }
        other => panic!("expected UnknownConsumer, got {other:?}"),
    }
    // Without the identifier secret there is no group: the answer says what to set.
    match crm_ops::replay(&w.tables, &[], w.dead_letters.as_ref(), CUSTOMER_360, 1, false).await {
        Err(CliError::UnknownConsumer { known, .. }) => assert!(known.contains("IDENTIFIER_HASH_SECRET"), "{known}"),
        other => panic!("expected UnknownConsumer, got {other:?}"),
    }
}

#[tokio::test]
async fn the_binary_replays_and_checks_with_exit_status_1_on_a_difference() {
    let w = world().await;
    register(w.tables.events.clone(), 2).await;

    let out = crm_ops(
        &w,
        &["replay", "--consumer", CUSTOMER_360, "--segments", "2", "--quiet"],
    );
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).starts_with(&format!("rebuilt {CUSTOMER_360} from ")),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        profile(&w, 0).await.expect("a customer 360")["email"],
        email(0).as_str()
    );

    let out = crm_ops(&w, &["check", "--sample", "0"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("checked 2 streams, 2 documents: 0 difference(s)"),
        "{}",
        stdout(&out)
    );

    tamper(&w, 1).await;
    let out = crm_ops(&w, &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("DIFF customer-360"), "{}", stdout(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 document(s) differ"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A missing setting is named.
    let out = Command::new(env!("CARGO_BIN_EXE_crm-ops"))
        .args(["check"])
        .env_clear()
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .output()
        .expect("run crm-ops");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("EVENTS_TABLE is not set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn dead_letters_are_listed_without_personal_data_and_redriven_decrypted() {
    let w = world().await;
    register(w.tables.events.clone(), 2).await;

    // (a) A consumer's parked letter: the decrypted envelope, as park_poison writes it.
    let first = |n: usize| format!("customer-{}", customer_id(n));
    let plain = w.tables.events.read_stream(&first(0), 0, 1).await.expect("read")[0].clone();
    w.dead_letters
        .park(dead_letter(
            CUSTOMER_360,
            "store was down",
            serde_json::to_value(&plain).expect("json"),
        ))
        .await
        .expect("park");
    // (b) An event a rule could not deliver: the EventBridge event, its
    // detail the envelope as stored (encrypted).
    let stored = w.tables.stored.read_stream(&first(1), 0, 1).await.expect("read")[0].clone();
    assert!(stored.data["email"].as_str().is_some_and(|e| e.starts_with("enc:")));
    let bus_event = serde_json::json!({
        "version": "0",
        "id": stored.event_id,
        "detail-type": stored.event_type,
        "source": "crm.customer",
        "detail": stored,
    });
    w.clients
        .sqs
        .send_message()
        .queue_url(w.dead_letters.queue_url())
        .message_body(bus_event.to_string())
        .message_attributes(
            "ERROR_MESSAGE",
            aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value("Lambda throttled")
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect("send");
    // (c) Garbage.
    w.dead_letters
        .park(dead_letter(
            CUSTOMER_360,
            "garbage",
            serde_json::json!({"not": "an event"}),
        ))
        .await
        .expect("park");

    // Listed by queue name; the lines name events, never their personal data.
    let letters = crm_ops::dlq_list(&w.clients.sqs, &w.queue_name, 10)
        .await
        .expect("list");
    assert_eq!(letters.len(), 3);
    let text = crm_ops::render_letters(&letters);
    assert!(
        text.contains("Lambda throttled") && text.contains("(no event)"),
        "{text}"
    );
    assert!(text.ends_with("3 message(s)"), "{text}");
    assert!(!text.contains("@example.com") && !text.contains("enc:"), "{text}");
    let out = crm_ops(&w, &["dlq", "list", &w.queue_name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("3 message(s)"), "{}", stdout(&out));

    // An unknown group is refused before anything is received.
    let groups = crm_ops::consumer_groups(&w.tables, w.dead_letters.clone(), Some(IDENTIFIER_SECRET));
    match crm_ops::dlq_redrive(&w.clients.sqs, &w.tables, groups, &w.queue_name, "nope", 10).await {
        Err(CliError::UnknownGroup { known, .. }) => assert!(known.contains("projector"), "{known}"),
        other => panic!("expected UnknownGroup, got {other:?}"),
    }
    assert_eq!(
        crm_ops::dlq_list(&w.clients.sqs, &w.queue_name, 10)
            .await
            .expect("list")
            .len(),
        3
    );

    // Redriven to the projector: both events delivered, decrypted; the garbage stays.
    let groups = crm_ops::consumer_groups(&w.tables, w.dead_letters.clone(), Some(IDENTIFIER_SECRET));
    let report = crm_ops::dlq_redrive(&w.clients.sqs, &w.tables, groups, &w.queue_name, "projector", 10)
        .await
        .expect("redrive");
    assert_eq!(report.redriven.len(), 2, "{report:?}");
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(crm_ops::render_redrive(&report).ends_with("redriven 2, failed 1"));
    for n in 0..2 {
        let doc = profile(&w, n).await.expect("a customer 360");
        assert_eq!(doc["email"], email(n).as_str(), "decrypted: {doc}");
    }
    let left = crm_ops::dlq_list(&w.clients.sqs, &w.queue_name, 10)
        .await
        .expect("list");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].reason, "garbage");

    // The binary: what is left cannot be redriven, exit status 1.
    let out = crm_ops(&w, &["dlq", "redrive", &w.queue_name, "--to", "projector"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("redriven 0, failed 1"), "{}", stdout(&out));
}

/// A customer whose personal values are long and found nowhere else (a scan
/// for a short name proves nothing).
const SEALED: [&str; 6] = [
    "theodora.vantablack-ops40@sealed-dlq.example",
    "Theodoravantablack",
    "Quillfeatherstone",
    "+4917612340040",
    "198.51.100.240",
    "SealedOpsAgent/40.2 (Quillfeatherstone; dead-letter-scan)",
];

/// Every message body of the world's dead-letter queue, as SQS keeps it.
async fn raw_bodies(w: &World) -> Vec<String> {
    crm_aws::ops::receive(&w.clients.sqs, w.dead_letters.queue_url(), 10, 0)
        .await
        .expect("receive")
        .into_iter()
        .map(|l| l.body.to_string())
        .collect()
}

/// How often any of the [`SEALED`] values occurs in `texts`.
fn sealed_plaintext(texts: &[String]) -> Vec<(&'static str, usize)> {
    SEALED
        .iter()
        .map(|p| (*p, texts.iter().map(|t| t.matches(p).count()).sum::<usize>()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

#[tokio::test]
async fn the_functions_park_poison_as_stored_and_crm_ops_shows_it_only_while_the_key_exists() {
    use crm_core::consumer::park_poison;
    let w = world().await;
    let id = customer_id(40);
    let [email, first, last, phone, ip, agent] = SEALED;
    let registration = crm_core::customer::RegisterCustomer {
        phone: Some(phone.into()),
        ip: ip.into(),
        user_agent: agent.into(),
        ..crm_core::testing::registration(email, first, last, "UTC")
    };
    crm_core::testing::register(w.tables.events.clone(), &id, registration).await;
    // The consumer functions' dead-letter queue, as they are wired.
    let s = &w.settings;
    let var = |v: &Option<String>| v.clone().unwrap_or_default();
    let ports = crm_bus_consumer::Ports::new(
        &moto_config().await,
        crm_bus_consumer::Config {
            events_table: var(&s.events_table),
            read_models_table: var(&s.read_models_table),
            dead_letter_queue_url: var(&s.dead_letter_queue_url),
            keys_table: var(&s.keys_table),
            data_keys_kms_key_id: var(&s.data_keys_kms_key_id),
            retention: crm_core::retention::RetentionPolicy::default(),
        },
    );
    // A consumer parks the registration as it saw it (decrypted), and the
    // channel a request whose template data holds the address and names.
    let stream = format!("customer-{id}");
    let plain = w.tables.events.read_stream(&stream, 0, 1).await.expect("read")[0].clone();
    assert_eq!(plain.data["user_agent"], agent, "the consumer sees plain text");
    let dead_letters = ports.dead_letters.clone();
    let poison = |event: crm_core::event::EventEnvelope| {
        let dead_letters = dead_letters.clone();
        async move {
            park_poison(
                dead_letters.as_ref(),
                CUSTOMER_360,
                &event,
                "projection refused",
                chrono::Utc::now(),
            )
            .await
            .expect("parked")
        }
    };
    poison(plain.clone()).await;
    let request = serde_json::json!({
        "message_id": "msg-ops-40", "instance_id": "ins-ops-40", "campaign_id": "welcome", "campaign_version": 1,
        "step_id": "send-welcome", "customer_id": id, "channel": "email", "template": "welcome",
        "category": "marketing", "purpose": "marketing",
        "data": { "email": email, "first_name": first, "last_name": last, "phone": phone }
    });
    ports
        .dead_letters
        .park(dead_letter("channel", "provider refused", request))
        .await
        .expect("parked");

    // The queue holds ciphertext only.
    let bodies = raw_bodies(&w).await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(sealed_plaintext(&bodies), vec![], "{bodies:?}");
    assert!(bodies.iter().all(|b| b.contains("enc:v1:")), "{bodies:?}");

    // Listed with --data: decrypted for display, while the key exists.
    let letters = crm_ops::dlq_list(&w.clients.sqs, &w.queue_name, 10)
        .await
        .expect("list");
    let shown = crm_ops::render_letters_with_data(w.tables.keys.as_ref(), &letters)
        .await
        .expect("render");
    for value in [email, first, last, phone, agent] {
        assert!(shown.contains(value), "{value} not shown: {shown}");
    }
    assert!(shown.ends_with("2 message(s)"), "{shown}");
    let listed = crm_ops::render_letters(&letters);
    assert_eq!(sealed_plaintext(std::slice::from_ref(&listed)), vec![], "{listed}");
    let out = crm_ops(&w, &["dlq", "list", &w.queue_name, "--data"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains(email), "{}", stdout(&out));

    // Redriven to the projector: decrypted as stored events are. The
    // request holds no event to redrive and stays.
    let groups = crm_ops::consumer_groups(
        &w.tables,
        crm_ops::sealed_dead_letters(&w.clients, &w.tables, var(&s.dead_letter_queue_url)),
        Some(IDENTIFIER_SECRET),
    );
    let report = crm_ops::dlq_redrive(&w.clients.sqs, &w.tables, groups, &w.queue_name, "projector", 10)
        .await
        .expect("redrive");
    assert_eq!(report.redriven.len(), 1, "{report:?}");
    let doc = profile(&w, 40).await.expect("a customer 360");
    assert_eq!(doc["email"], email, "decrypted on redrive: {doc}");

    // Erased: the key is gone, the letters read as [erased].
    poison(plain.clone()).await;
    w.tables.keys.delete(&id).await.expect("erase");
    let letters = crm_ops::dlq_list(&w.clients.sqs, &w.queue_name, 10)
        .await
        .expect("list");
    assert_eq!(letters.len(), 2, "{letters:?}");
    let shown = crm_ops::render_letters_with_data(w.tables.keys.as_ref(), &letters)
        .await
        .expect("render");
    assert_eq!(sealed_plaintext(std::slice::from_ref(&shown)), vec![], "{shown}");
    assert_eq!(
        shown.matches("[erased]").count(),
        1 + 6,
        "the request's data, the event's six fields: {shown}"
    );
    assert_eq!(sealed_plaintext(&raw_bodies(&w).await), vec![]);
}

/// A bus of the world's own whose rule delivers every `crm.*` event into a
/// queue (the URL returned), and a relay dead-letter queue; the settings
/// name both.
async fn with_bus(w: &mut World) -> String {
    let (bus, target) = bus_into_queue("cli").await;
    let unique = Uuid::now_v7().simple().to_string();
    let relay_dlq = create_queue(&sqs_client().await, &format!("cli-relay-dlq-{unique}")).await;
    w.settings.event_bus_name = Some(bus);
    w.settings.relay_dead_letter_queue_url = Some(relay_dlq);
    target
}

/// The event ids of the messages on `queue` (deleted as read), waiting up
/// to ten seconds for `expected` of them.
async fn arrived(queue: &str, expected: usize) -> Vec<String> {
    let mut ids: Vec<String> = drain_queue(queue, expected)
        .await
        .iter()
        .map(|body| body["detail"]["event_id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_binary_redrives_to_the_bus_and_to_a_consumer_queue_and_republishes_a_range() {
    let mut w = world().await;
    let target = with_bus(&mut w).await;
    let started = chrono::Utc::now() - chrono::Duration::seconds(1);
    register(w.tables.events.clone(), 2).await;
    let stored = |n: usize| {
        let stream = format!("customer-{}", customer_id(n));
        let store = w.tables.stored.clone();
        async move { store.read_stream(&stream, 0, 100).await.expect("read") }
    };
    let (first, second) = (stored(0).await, stored(1).await);
    let relay_dlq = w.settings.relay_dead_letter_queue_url.clone().expect("relay dlq");
    let relay_letters = SqsDeadLetterQueue::new(w.clients.sqs.clone(), &relay_dlq);

    // The relay parked one event whole and one by its key.
    let whole = ParkedEvent::of("seq-1", &BusEntry::for_event(first[0].clone()));
    let mut by_key = ParkedEvent::of("seq-2", &BusEntry::for_event(second[0].clone()));
    by_key.stored = None;
    for parked in [&whole, &by_key] {
        relay_letters
            .park(dead_letter(
                RELAY_CONSUMER,
                "ThrottlingException",
                serde_json::to_value(parked).expect("json"),
            ))
            .await
            .expect("park");
    }
    let out = crm_ops(&w, &["dlq", "list", &relay_dlq]);
    assert!(
        stdout(&out).contains(&format!("{} v1 (by key)", second[0].stream_id)),
        "{}",
        stdout(&out)
    );
    let out = crm_ops(&w, &["dlq", "redrive", &relay_dlq, "--to", "relay"]);
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("redriven 2, failed 0"), "{}", stdout(&out));
    let mut expected = vec![first[0].event_id.to_string(), second[0].event_id.to_string()];
    expected.sort();
    assert_eq!(arrived(&target, 2).await, expected);

    // A consumer's dead letter goes back to its queue (by name) as the bus event.
    w.dead_letters
        .park(dead_letter(
            "channel",
            "SES unavailable",
            serde_json::to_value(&second[1]).expect("json"),
        ))
        .await
        .expect("park");
    let target_name = target.rsplit('/').next().expect("a queue name").to_string();
    let out = crm_ops(&w, &["dlq", "redrive", &w.queue_name, "--to-queue", &target_name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("redriven 1, failed 0"), "{}", stdout(&out));
    assert_eq!(arrived(&target, 1).await, [second[1].event_id.to_string()]);

    // Republish: every event recorded since the start, counted.
    let all = first.len() + second.len();
    let from = started.to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    let out = crm_ops(
        &w,
        &["republish", "--from", &from, "--to", &to, "--segments", "2", "--quiet"],
    );
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout(&out).contains(&format!(
            "{all} events recorded in the range; published {all}, parked 0, failed 0"
        )),
        "{}",
        stdout(&out)
    );
    let mut expected: Vec<String> = first.iter().chain(&second).map(|e| e.event_id.to_string()).collect();
    expected.sort();
    assert_eq!(arrived(&target, all).await, expected);

    // A range before anything was recorded publishes nothing; a reversed one is refused.
    let out = crm_ops(
        &w,
        &[
            "republish",
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2020-01-02T00:00:00Z",
            "--quiet",
        ],
    );
    assert!(
        stdout(&out).contains("0 events recorded in the range"),
        "{}",
        stdout(&out)
    );
    let out = crm_ops(&w, &["republish", "--from", &to, "--to", &from, "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("before it starts"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn the_full_check_finds_the_event_the_projector_lost_and_the_binary_exits_1_on_it() {
    let mut w = world().await;
    let secret = format!("cli-secret-{}", Uuid::now_v7().simple());
    w.settings.identifier_hash_secret = Some(secret.clone());
    register(w.tables.events.clone(), 3).await;

    // Every event, decrypted, to the functions' groups over the real tables,
    // in one page each; the projector never receives customer 2's newest
    // event (nothing later on the stream fills that gap).
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = w
            .tables
            .events
            .read_all(cursor.as_deref(), 100)
            .await
            .expect("read all");
        all.extend(page.events);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let stream = format!("customer-{}", customer_id(2));
    let lost = all
        .iter()
        .filter(|e| e.stream_id == stream)
        .max_by_key(|e| e.version)
        .expect("customer 2's events")
        .clone();
    assert!(lost.version > 1, "{lost:?}");
    let groups = crm_ops::consumer_groups(&w.tables, w.dead_letters.clone(), Some(&secret));
    assert_eq!(groups.len(), 2);
    for group in &groups {
        let page: Vec<_> = all
            .iter()
            .filter(|e| !(group.name == "projector" && e.event_id == lost.event_id))
            .cloned()
            .collect();
        group.handle_page(&page, chrono::Utc::now()).await.expect("page");
    }

    // Without the secret the consent group cannot be folded: refused.
    assert!(matches!(
        crm_ops::verify(&w.tables, None).await,
        Err(CliError::NoIdentifierSecret)
    ));
    let report = crm_ops::verify(&w.tables, Some(&secret)).await.expect("verify");
    let text = crm_ops::render_verify(&report);
    let figures = |consumer: &str| {
        report
            .consumers
            .iter()
            .find(|c| c.consumer == consumer)
            .map(|c| (c.compared, c.missing, c.different, c.extra))
            .unwrap_or_else(|| panic!("{consumer} not folded: {text}"))
    };
    assert_eq!(figures(CUSTOMER_360), (3, 0, 1, 0), "{text}");
    assert_eq!(
        figures(crm_core::customer::views::TIMELINE).1,
        1,
        "the lost entry: {text}"
    );
    let (compared, missing, different, extra) = figures(crm_core::consent::ledger::CONSENT_LEDGER);
    assert!(compared > 0 && (missing, different, extra) == (0, 0, 0), "{text}");
    let (compared, missing, different, extra) = figures(crm_core::consent::proof::PROOF_LEDGER);
    assert!(compared > 0 && (missing, different, extra) == (0, 0, 0), "{text}");
    // The overview counters lost the event's count in its bucket too: a
    // count document the stream's earlier events wrote as well, so it is
    // different (missing only if the lost event alone fell in a new hour;
    // decision 0088's addendum).
    let (_, counts_missing, counts_different, _) = figures(crm_core::ops::counters::OPS_COUNTERS);
    assert_eq!(counts_missing + counts_different, 1, "{text}");
    // The timeline's entry is missing, the 360 different.
    let (missing, different) = (1 + counts_missing, 1 + counts_different);
    assert_eq!(report.mismatched(), 3, "{text}");
    for m in report.mismatches.iter().filter(|m| !m.counts) {
        let event = m.event.as_ref().expect("the event named");
        assert_eq!(
            (event.stream_id.as_str(), event.version),
            (stream.as_str(), lost.version)
        );
    }
    // Decrypted on both sides: the stored 360 holds the address in clear.
    let stored = report
        .mismatches
        .iter()
        .find(|m| m.consumer == CUSTOMER_360)
        .and_then(|m| m.stored.clone())
        .expect("the stored 360");
    assert_eq!(stored["email"], email(2).as_str());
    assert!(
        text.contains(&format!(
            "DIFFERENT {CUSTOMER_360} {}/profile (last written by {stream} v{}",
            customer_id(2),
            lost.version
        )),
        "{text}"
    );
    assert_eq!(report.lost_events(), 1, "three documents, one event");
    assert!(
        text.ends_with(&format!(
            "{missing} missing, {different} different, 0 extra, 0 order-dependent; 1 event(s) lost"
        )),
        "{text}"
    );

    let out = crm_ops(&w, &["check", "--full"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "3 document(s) not as the events make them ({missing} missing, {different} different, 0 extra)"
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The lost event delivered at last: nothing is missing any more.
    groups[0]
        .handle_page(std::slice::from_ref(&lost), chrono::Utc::now())
        .await
        .expect("the lost event");
    let out = crm_ops(&w, &["check", "--full", "--json"]);
    assert!(
        out.status.success(),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(json["totals"]["mismatched"], 0, "{json}");
    assert_eq!(json["totals"]["order_dependent"], 0, "{json}");
    assert_eq!(json["totals"]["lost_events"], 0, "{json}");
    assert!(
        json["totals"]["compared"].as_u64().is_some_and(|n| n >= 3 * 4),
        "{json}"
    );
    assert_eq!(json["events"].as_u64(), Some(all.len() as u64));

    // A tampered document: exit 1, named.
    tamper(&w, 0).await;
    let out = crm_ops(&w, &["check", "--full"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("DIFFERENT {CUSTOMER_360} {}/profile", customer_id(0))),
        "{}",
        stdout(&out)
    );
}

/// A message as EventBridge Scheduler parks it after its retries: the body
/// is the schedule target's `Input`, the attributes say which schedule and why.
async fn park_as_the_scheduler_does(queue: &str, schedule: &str, input: &str) {
    let attribute = |value: &str| {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .expect("attribute")
    };
    sqs_client()
        .await
        .send_message()
        .queue_url(queue)
        .message_body(input)
        .message_attributes("ERROR_CODE", attribute("AWS.Scheduler.InternalServerError"))
        .message_attributes(
            "ERROR_MESSAGE",
            attribute("Unexpected error occurred while processing the request."),
        )
        .message_attributes("EXECUTION_ID", attribute("d32c5kddcf5bb8c3"))
        .message_attributes("RETRY_ATTEMPTS", attribute("185"))
        .message_attributes(
            "SCHEDULE_ARN",
            attribute(&format!(
                "arn:aws:scheduler:us-east-1:123456789012:schedule/crm-test/{schedule}"
            )),
        )
        .message_attributes(
            "TARGET_ARN",
            attribute("arn:aws:events:us-east-1:123456789012:event-bus/crm"),
        )
        .send()
        .await
        .expect("park a schedule invocation");
}

/// The `Input` of template.yaml's journey sweep schedule.
fn sweep_input() -> String {
    let template = include_str!("../../../template.yaml");
    let sweep = template
        .find("\n  JourneySweepSchedule:")
        .map(|at| &template[at..])
        .expect("template.yaml has the JourneySweepSchedule");
    let line = sweep
        .lines()
        .find_map(|l| l.trim().strip_prefix("Input: "))
        .expect("the sweep has an Input");
    line.trim_matches('\'').to_string()
}

#[tokio::test]
async fn the_timers_the_scheduler_parked_are_put_on_the_bus_as_their_schedules_would_have() {
    use crm_core::scheduler::{TimerKind, TimerPayload, TIMER_FIRED, TIMER_SOURCE};
    let mut w = world().await;
    let target = with_bus(&mut w).await;
    let unique = Uuid::now_v7().simple().to_string();
    let scheduler_dlq = create_queue(&sqs_client().await, &format!("cli-scheduler-dlq-{unique}")).await;

    // A journey's wait, the daily sweep's invocation, and a message that is no timer.
    let wait = TimerPayload {
        name: format!("jw-{unique}"),
        kind: TimerKind::JourneyWait,
        stream_id: format!("journey-{unique}"),
        customer_id: Some(customer_id(1)),
        due_at: chrono::DateTime::parse_from_rfc3339("2026-12-06T05:00:00Z")
            .expect("time")
            .to_utc(),
        set_at_version: 3,
        data: serde_json::json!({"step": "wait-1"}),
    };
    let wait_input = serde_json::to_string(&wait).expect("json");
    park_as_the_scheduler_does(&scheduler_dlq, &wait.name, &wait_input).await;
    let sweep = sweep_input();
    let sweep_timer: TimerPayload = serde_json::from_str(&sweep).expect("the sweep's Input is a timer");
    park_as_the_scheduler_does(&scheduler_dlq, "JourneySweepSchedule-abc", &sweep).await;
    park_as_the_scheduler_does(&scheduler_dlq, "not-ours", r#"{"hello": "world"}"#).await;

    // Listed with the schedule, the error and the timer.
    let letters = crm_ops::dlq_list(&w.clients.sqs, &scheduler_dlq, 10)
        .await
        .expect("list");
    assert_eq!(letters.len(), 3, "{letters:?}");
    let parked_wait = letters
        .iter()
        .find(|l| l.timer.as_ref() == Some(&wait))
        .expect("the wait is read as a timer");
    assert_eq!(parked_wait.consumer, format!("scheduler ({})", wait.name));
    assert_eq!(
        parked_wait.reason,
        "AWS.Scheduler.InternalServerError: Unexpected error occurred while processing the request."
    );
    let out = crm_ops(&w, &["dlq", "list", &scheduler_dlq]);
    assert!(
        stdout(&out).contains(&format!(
            "TimerFired {} (journey-wait) {} due 2026-12-06T05:00:00Z",
            wait.name, wait.stream_id
        )),
        "{}",
        stdout(&out)
    );

    // A bus that does not exist takes nothing: every message stays.
    let report = crm_aws::ops::redrive_timers(
        &w.clients.sqs,
        &scheduler_dlq,
        &crm_aws::eventbridge::EventBridgeBus::new(w.clients.eventbridge.clone(), format!("no-bus-{unique}")),
        10,
    )
    .await
    .expect("redrive");
    assert!(report.redriven.is_empty(), "{report:?}");
    assert_eq!(report.failed.len(), 3, "{report:?}");
    assert_eq!(
        crm_ops::dlq_list(&w.clients.sqs, &scheduler_dlq, 10)
            .await
            .expect("list")
            .len(),
        3,
        "nothing deleted"
    );

    // The binary: the two timers go onto the bus, the stranger stays (exit 1).
    let out = crm_ops(&w, &["dlq", "redrive", &scheduler_dlq, "--to", "scheduler"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("redriven 2, failed 1"), "{}", stdout(&out));
    assert!(stdout(&out).contains("holds no timer"), "{}", stdout(&out));
    let arrived = drain_queue(&target, 2).await;
    assert_eq!(arrived.len(), 2, "{arrived:?}");
    for body in &arrived {
        assert_eq!(body["source"], TIMER_SOURCE, "{body}");
        assert_eq!(body["detail-type"], TIMER_FIRED, "{body}");
    }
    let mut fired: Vec<TimerPayload> = arrived
        .iter()
        .map(|b| serde_json::from_value(b["detail"].clone()).expect("a timer as detail"))
        .collect();
    fired.sort_by(|a, b| a.name.cmp(&b.name));
    let mut expected = vec![sweep_timer, wait.clone()];
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(fired, expected, "each timer as its schedule would have put it");
    let left = crm_ops::dlq_list(&w.clients.sqs, &scheduler_dlq, 10)
        .await
        .expect("list");
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].consumer, "scheduler (not-ours)");
    assert!(left[0].timer.is_none());
}

#[tokio::test]
async fn letters_parked_in_clear_before_are_sealed_in_the_queue() {
    use crm_core::consumer::park_poison;
    let w = world().await;
    let id = customer_id(41);
    let [email, first, last, phone, ip, agent] = SEALED;
    let registration = crm_core::customer::RegisterCustomer {
        phone: Some(phone.into()),
        ip: ip.into(),
        user_agent: agent.into(),
        ..crm_core::testing::registration(email, first, last, "UTC")
    };
    crm_core::testing::register(w.tables.events.clone(), &id, registration).await;
    let plain = w
        .tables
        .events
        .read_stream(&format!("customer-{id}"), 0, 1)
        .await
        .expect("read")[0]
        .clone();
    // Parked in clear, as the queue took it before decision 0040, and one letter of no event.
    park_poison(w.dead_letters.as_ref(), CUSTOMER_360, &plain, "old", chrono::Utc::now())
        .await
        .expect("parked");
    w.dead_letters
        .park(dead_letter(
            CUSTOMER_360,
            "garbage",
            serde_json::json!({"not": "an event"}),
        ))
        .await
        .expect("parked");
    assert_eq!(
        sealed_plaintext(&raw_bodies(&w).await).len(),
        SEALED.len(),
        "the old letter is in clear"
    );

    let out = crm_ops(&w, &["dlq", "seal", &w.queue_name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).contains("sealed 1, failed 0"), "{}", stdout(&out));
    let bodies = raw_bodies(&w).await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(sealed_plaintext(&bodies), vec![], "{bodies:?}");
    let letters = crm_ops::dlq_list(&w.clients.sqs, &w.queue_name, 10)
        .await
        .expect("list");
    let shown = crm_ops::render_letters_with_data(w.tables.keys.as_ref(), &letters)
        .await
        .expect("render");
    assert!(shown.contains(email) && shown.contains(agent), "{shown}");
    assert!(
        letters.iter().any(|l| l.reason == "old"),
        "the reason is kept: {letters:?}"
    );

    let again = crm_ops::dlq_seal(&w.clients, &w.settings, &w.queue_name, 10)
        .await
        .expect("seal again");
    assert!(again.redriven.is_empty() && again.failed.is_empty(), "{again:?}");
    assert_eq!(raw_bodies(&w).await.len(), 2);
}
