//! `crm-ops`, the operator's command line on AWS (issue 9, decisions 0025,
//! 0030, 0035): rebuild one projection (or a consumer group) from the events
//! table with a parallel scan, check a sample of customer streams against the
//! stored projections, or check every stored document of every projection
//! against a fold of every event (replay and diff), list and redrive the SQS dead-letter queues (into a
//! consumer group in process, back onto the bus through the relay, back
//! into a consumer's source queue, or the timers EventBridge Scheduler
//! parked back onto the bus as their schedules would have put them), and
//! publish a time range of the events table again.
//!
//! The configuration is the functions' own (`EVENTS_TABLE`,
//! `READ_MODELS_TABLE`, `KEYS_TABLE`, `DATA_KEYS_KMS_KEY_ID`,
//! `DEAD_LETTER_QUEUE_URL`, `IDENTIFIER_HASH_SECRET`, and the relay's
//! `EVENT_BUS_NAME` and `RELAY_DEAD_LETTER_QUEUE_URL`), from the environment
//! or flags; the AWS SDK reads the region, the credentials and
//! `AWS_ENDPOINT_URL` itself. Personal fields are read through the
//! customers' data keys, as the deployed consumers read them (decisions
//! 0016, 0017). The logic is `crm_core::ops` and `crm_aws::ops`; this crate
//! wires them and prints.

pub mod cli;
pub mod migrate;
pub mod rekey;

pub use cli::{execute, Cli, Command, DlqCommand};

use crm_aws::dynamodb::{DynamoEventStore, DynamoReadModels};
use crm_aws::eventbridge::EventBridgeBus;
use crm_aws::ops::{QueuedLetter, RedriveReport, ReplaySource, RepublishReport};
use crm_aws::sqs::SqsDeadLetterQueue;
use crm_aws::stores::{EncryptedEventStore, EventStoreTables};
use crm_core::assembly::AssembledGroups;
use crm_core::consumer::{open_letter, Consumer, ConsumerGroup, DecryptingHandler, EventHandler, SealedDeadLetters};
use crm_core::ops::{CheckReport, Mismatch, ReplayReport, VerifyReport};
use crm_core::ports::{DeadLetter, DeadLetterQueue, EventStore, ReadModelStore, StoreError};
use crm_core::privacy::read_models::SealedReadModels;
use crm_core::privacy::{IdentifierHasher, KeyStore};
use crm_core::relay::Relay;
use crm_core::scheduler::TIMER_FIRED;
use indicatif::{ProgressBar, ProgressStyle};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{env} is not set (environment variable {env}, or --{flag})")]
    Missing { env: &'static str, flag: &'static str },
    #[error("no consumer or consumer group named {name:?}; known: {known}")]
    UnknownConsumer { name: String, known: String },
    #[error("{name} decides (it appends events) and keeps no read model: a replay would decide again from old read models (decision 0093); nothing to rebuild")]
    Decides { name: String },
    #[error("no consumer group named {name:?}; known: {known}")]
    UnknownGroup { name: String, known: String },
    #[error("{operation} {queue}: {message}")]
    Sqs {
        operation: &'static str,
        queue: String,
        message: String,
    },
    #[error(transparent)]
    Aws(#[from] crm_aws::ops::OpsError),
    #[error("consistency check: {0}")]
    Check(#[from] crm_core::ops::OpsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} document(s) differ from the event store")]
    Inconsistent(usize),
    #[error(
        "IDENTIFIER_HASH_SECRET is not set (environment only): the full check folds the consent group, whose proof \
         ledger hashes identifiers with it"
    )]
    NoIdentifierSecret,
    #[error(
        "{mismatched} document(s) not as the events make them ({missing} missing, {different} different, {extra} \
         extra); {order_dependent} order-dependent document(s) not compared"
    )]
    Unverified {
        mismatched: u64,
        missing: u64,
        different: u64,
        extra: u64,
        order_dependent: usize,
    },
    #[error("{0} message(s) not redriven")]
    NotRedriven(usize),
    #[error("{0} event(s) neither published nor parked")]
    NotRepublished(u64),
    #[error("the range ends ({to}) before it starts ({from})")]
    EmptyRange { from: String, to: String },
    #[error(transparent)]
    Scheduler(#[from] crm_core::scheduler::SchedulerError),
    #[error(transparent)]
    Keys(#[from] crm_core::privacy::KeyError),
    #[error("{0} item(s) not migrated")]
    NotMigrated(usize),
}

/// Where the tables and queues are: the functions' environment variables
/// (template.yaml), or the flags of the same names.
#[derive(Clone, Default, clap::Args)]
pub struct Settings {
    /// The events table.
    #[arg(long, env = "EVENTS_TABLE", global = true)]
    pub events_table: Option<String>,
    /// The read-models table (documents and checkpoints).
    #[arg(long, env = "READ_MODELS_TABLE", global = true)]
    pub read_models_table: Option<String>,
    /// The customers' data keys (decision 0016).
    #[arg(long, env = "KEYS_TABLE", global = true)]
    pub keys_table: Option<String>,
    /// The KMS key that wraps the data keys (id, ARN or alias).
    #[arg(long, env = "DATA_KEYS_KMS_KEY_ID", global = true)]
    pub data_keys_kms_key_id: Option<String>,
    /// Where a replay parks events a consumer cannot use (URL or queue name):
    /// the dead-letter queue of the consumer's function.
    #[arg(long, env = "DEAD_LETTER_QUEUE_URL", global = true)]
    pub dead_letter_queue_url: Option<String>,
    /// The bus the relay publishes to (name or ARN): where `dlq redrive --to
    /// relay`, `dlq redrive --to scheduler` and `republish` publish.
    #[arg(long, env = "EVENT_BUS_NAME", global = true)]
    pub event_bus_name: Option<String>,
    /// The relay's dead-letter queue (URL or name): where `republish` parks
    /// what the bus will not take.
    #[arg(long, env = "RELAY_DEAD_LETTER_QUEUE_URL", global = true)]
    pub relay_dead_letter_queue_url: Option<String>,
    /// The proof ledger's identifier hash secret (the consent group needs
    /// it); from the environment only, never a flag.
    #[arg(skip = std::env::var("IDENTIFIER_HASH_SECRET").ok().filter(|v| !v.trim().is_empty()))]
    pub identifier_hash_secret: Option<String>,
}

fn required<'a>(value: &'a Option<String>, env: &'static str, flag: &'static str) -> Result<&'a str, CliError> {
    value
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .ok_or(CliError::Missing { env, flag })
}

impl Settings {
    pub fn events_table(&self) -> Result<&str, CliError> {
        required(&self.events_table, "EVENTS_TABLE", "events-table")
    }

    pub fn read_models_table(&self) -> Result<&str, CliError> {
        required(&self.read_models_table, "READ_MODELS_TABLE", "read-models-table")
    }

    pub fn keys_table(&self) -> Result<&str, CliError> {
        required(&self.keys_table, "KEYS_TABLE", "keys-table")
    }

    pub fn data_keys_kms_key_id(&self) -> Result<&str, CliError> {
        required(
            &self.data_keys_kms_key_id,
            "DATA_KEYS_KMS_KEY_ID",
            "data-keys-kms-key-id",
        )
    }

    pub fn dead_letter_queue(&self) -> Result<&str, CliError> {
        required(
            &self.dead_letter_queue_url,
            "DEAD_LETTER_QUEUE_URL",
            "dead-letter-queue-url",
        )
    }

    pub fn event_bus_name(&self) -> Result<&str, CliError> {
        required(&self.event_bus_name, "EVENT_BUS_NAME", "event-bus-name")
    }

    pub fn relay_dead_letter_queue(&self) -> Result<&str, CliError> {
        required(
            &self.relay_dead_letter_queue_url,
            "RELAY_DEAD_LETTER_QUEUE_URL",
            "relay-dead-letter-queue-url",
        )
    }
}

/// The AWS clients, built once from the SDK configuration.
#[derive(Clone)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub eventbridge: aws_sdk_eventbridge::Client,
    pub kms: aws_sdk_kms::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Clients {
    pub fn new(aws: &aws_config::SdkConfig) -> Self {
        Clients {
            dynamodb: aws_sdk_dynamodb::Client::new(aws),
            eventbridge: aws_sdk_eventbridge::Client::new(aws),
            kms: aws_sdk_kms::Client::new(aws),
            scheduler: aws_sdk_scheduler::Client::new(aws),
            sqs: aws_sdk_sqs::Client::new(aws),
        }
    }

    /// The relay as the function runs it ([`crm_relay::relay`]: its retry
    /// policy, real pauses) over the bus `bus_name`, parking in the queue
    /// `dead_letter_queue_url`.
    pub fn relay(&self, bus_name: &str, dead_letter_queue_url: &str) -> Relay {
        crm_relay::relay(
            Arc::new(EventBridgeBus::new(self.eventbridge.clone(), bus_name)),
            Arc::new(SqsDeadLetterQueue::new(self.sqs.clone(), dead_letter_queue_url)),
        )
    }
}

/// The tables, as the consumer functions see them (`crm_bus_consumer::Ports`):
/// `events` decrypts on read and encrypts on append, `stored` is the table
/// underneath (ciphertext; scanned by the replay, listed by the check);
/// `docs` seals the read models' personal values under the same keys
/// (decision 0045: a replay rebuilds them encrypted).
pub struct Tables {
    pub stored: Arc<DynamoEventStore>,
    pub events: Arc<dyn EventStore>,
    pub keys: Arc<dyn KeyStore>,
    pub docs: Arc<SealedReadModels<DynamoReadModels>>,
}

impl Tables {
    pub fn new(clients: &Clients, settings: &Settings) -> Result<Self, CliError> {
        let EncryptedEventStore { events, stored, keys } = EncryptedEventStore::new(
            clients.dynamodb.clone(),
            clients.kms.clone(),
            EventStoreTables {
                events_table: settings.events_table()?.to_string(),
                keys_table: settings.keys_table()?.to_string(),
                data_keys_kms_key_id: settings.data_keys_kms_key_id()?.to_string(),
            },
            None,
        );
        let docs = DynamoReadModels::new(clients.dynamodb.clone(), settings.read_models_table()?);
        Ok(Tables {
            events,
            stored,
            docs: Arc::new(SealedReadModels::new(Arc::new(docs), keys.clone())),
            keys,
        })
    }
}

/// The consumer groups of the functions when `IDENTIFIER_HASH_SECRET` is
/// set: the projector's (its email and name indexes are keyed by hashes
/// made with it, decision 0046) and the consent function's (its proof
/// ledger hashes identifiers with it, decision 0019). Without it: none.
pub fn consumer_groups(
    tables: &Tables,
    dead_letters: Arc<dyn DeadLetterQueue>,
    identifier_hash_secret: Option<&str>,
) -> Vec<ConsumerGroup> {
    groups_over(
        tables.events.clone(),
        tables.docs.clone(),
        dead_letters,
        identifier_hash_secret,
    )
}

/// The consumer groups of the functions (`ConsumerGroup::projector`, and
/// `ConsumerGroup::consent` with `identifier_hash_secret`) over any events,
/// documents and dead-letter queue: the tables for a replay or a redrive,
/// the full check's in-memory copies for its fold.
pub fn groups_over(
    events: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    dead_letters: Arc<dyn DeadLetterQueue>,
    identifier_hash_secret: Option<&str>,
) -> Vec<ConsumerGroup> {
    let Some(secret) = identifier_hash_secret else {
        return Vec::new();
    };
    let identifiers = IdentifierHasher::new(secret.as_bytes());
    vec![
        ConsumerGroup::projector(events.clone(), docs.clone(), dead_letters.clone(), identifiers.clone()),
        ConsumerGroup::consent(events, docs, dead_letters, identifiers),
    ]
}

fn known_names(groups: &[ConsumerGroup], with_consumers: bool) -> String {
    let mut names: Vec<String> = Vec::new();
    for group in groups {
        names.push(group.name.to_string());
        if with_consumers {
            names.extend(group.consumer_names().into_iter().map(str::to_string));
        }
    }
    if !groups.iter().any(|g| g.name == "consent") {
        names.push("(projector, consent and their consumers: set IDENTIFIER_HASH_SECRET)".into());
    }
    names.join(", ")
}

/// The consumers `name` stands for: one consumer (`customer-360`), or every
/// consumer of a group (`projector`, `consent`), in the group's order.
pub fn select<'a>(groups: &'a [ConsumerGroup], name: &str) -> Result<Vec<&'a Consumer>, CliError> {
    // A group's consumers that keep read models: those that decide keep
    // their checkpoints and are not run again (decision 0093).
    if let Some(group) = groups.iter().find(|g| g.name == name) {
        return Ok(group
            .rebuildable_names()
            .into_iter()
            .filter_map(|n| group.consumer(n))
            .collect());
    }
    let consumer = groups
        .iter()
        .find_map(|g| g.consumer(name))
        .ok_or_else(|| CliError::UnknownConsumer {
            name: name.to_string(),
            known: known_names(groups, true),
        })?;
    if consumer.decides() {
        return Err(CliError::Decides { name: name.to_string() });
    }
    Ok(vec![consumer])
}

/// The URL of `queue`: a URL as it is, else a queue name looked up with
/// GetQueueUrl.
pub async fn queue_url(sqs: &aws_sdk_sqs::Client, queue: &str) -> Result<String, CliError> {
    if queue.starts_with("https://") || queue.starts_with("http://") {
        return Ok(queue.to_string());
    }
    let out = sqs
        .get_queue_url()
        .queue_name(queue)
        .send()
        .await
        .map_err(|e| CliError::Sqs {
            operation: "GetQueueUrl",
            queue: queue.to_string(),
            message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
        })?;
    out.queue_url().map(str::to_string).ok_or_else(|| CliError::Sqs {
        operation: "GetQueueUrl",
        queue: queue.to_string(),
        message: "no URL in the answer".into(),
    })
}

/// What `replay` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// The consumers rebuilt, in order.
    pub consumers: Vec<String>,
    /// Documents and checkpoints deleted before replaying.
    pub cleared: usize,
    pub report: ReplayReport,
    pub seconds: f64,
}

impl Replayed {
    pub fn events_per_second(&self) -> f64 {
        self.report.events as f64 / self.seconds.max(1e-9)
    }
}

fn spinner(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg} {pos} events ({per_sec})") {
        bar.set_style(style);
    }
    bar
}

/// Rebuilds `name` (a consumer, or every consumer of a group): deletes each
/// consumer's documents and checkpoints
/// ([`DynamoReadModels::clear_consumer`], whatever the checkpoint layout),
/// then replays the events table into
/// it with a parallel scan of `segments` segments, every event decrypted
/// first ([`crm_aws::ops::parallel_replay`]). Events a consumer cannot use
/// are parked in `dead_letters`. `progress`: a spinner on stderr.
pub async fn replay(
    tables: &Tables,
    groups: &[ConsumerGroup],
    dead_letters: &dyn DeadLetterQueue,
    name: &str,
    segments: u32,
    progress: bool,
) -> Result<Replayed, CliError> {
    let consumers = select(groups, name)?;
    let started = Instant::now();
    let bar = spinner(progress);
    let source = ReplaySource {
        client: tables.stored.client(),
        table: tables.stored.table(),
        keys: tables.keys.as_ref(),
    };
    let mut replayed = Replayed {
        consumers: Vec::new(),
        cleared: 0,
        report: ReplayReport::default(),
        seconds: 0.0,
    };
    for consumer in consumers {
        bar.set_message(consumer.name());
        bar.set_position(0);
        let cleared = tables.docs.clear_consumer(consumer.name()).await?;
        tracing::info!(consumer = consumer.name(), cleared, "read models cleared");
        // Recorded for the API's `GET /operations/replays` (decision 0085): running, then done or failed.
        let recorder = crm_core::ops::progress::ProgressRecorder::start(
            tables.docs.as_ref(),
            consumer.name(),
            None,
            chrono::Utc::now(),
        )
        .await;
        let outcome = crm_aws::ops::parallel_replay(source, segments, consumer, dead_letters, &|n| bar.inc(n)).await;
        recorder
            .finish(outcome.as_ref().map_err(ToString::to_string), chrono::Utc::now())
            .await;
        let report = outcome?;
        tracing::info!(
            consumer = consumer.name(),
            events = report.events,
            parked = report.parked,
            "replayed"
        );
        replayed.consumers.push(consumer.name().to_string());
        replayed.cleared += cleared;
        replayed.report.merge(&report);
    }
    bar.finish_and_clear();
    replayed.seconds = started.elapsed().as_secs_f64();
    Ok(replayed)
}

/// The summary line of a replay.
pub fn render_replay(replayed: &Replayed) -> String {
    format!(
        "rebuilt {} from {} events in {:.2} s ({:.0} events/s); {} applied, {} parked as dead letters; {} old items cleared",
        replayed.consumers.join(", "),
        replayed.report.events,
        replayed.seconds,
        replayed.events_per_second(),
        replayed.report.applied,
        replayed.report.parked,
        replayed.cleared,
    )
}

/// Folds up to `sample` customer streams (0: all), decrypted, and compares
/// them with the stored customer 360 and consent ledger.
pub async fn check(tables: &Tables, sample: usize) -> Result<CheckReport, CliError> {
    let streams = crm_core::ops::sample_streams(tables.stored.as_ref(), sample).await?;
    Ok(crm_core::ops::check(
        tables.events.as_ref(),
        tables.docs.as_ref(),
        &crm_core::ops::checked_projections(),
        &streams,
    )
    .await?)
}

/// A check's report as `crm-local check` prints it: each difference, each
/// consumer behind, the totals.
pub fn render_check(report: &CheckReport) -> String {
    let show = |v: &Option<serde_json::Value>| v.as_ref().map_or_else(|| "(none)".into(), |v| v.to_string());
    let mut out = String::new();
    for d in &report.differences {
        let _ = writeln!(
            out,
            "DIFF {} {} {}/{}\n  expected: {}\n  stored:   {}",
            d.consumer,
            d.stream_id,
            d.partition,
            d.sort,
            show(&d.expected),
            show(&d.stored),
        );
    }
    for (consumer, stream) in &report.behind {
        let _ = writeln!(out, "BEHIND {consumer} {stream} (checkpoint and documents short of the stream: lag or a lost event; not compared)");
    }
    let _ = write!(
        out,
        "checked {} streams, {} documents: {} difference(s)",
        report.streams,
        report.documents,
        report.differences.len()
    );
    out
}

/// The full check (decision 0035, [`crm_core::ops::verify`]): every event
/// of the events table, decrypted, folded through every projection of the
/// projector and consent groups (the segment evaluator aside: it writes no
/// documents) in memory, and every folded document compared with the
/// read-models table. Needs `IDENTIFIER_HASH_SECRET` (the proof ledger).
pub async fn verify(tables: &Tables, identifier_hash_secret: Option<&str>) -> Result<VerifyReport, CliError> {
    let secret = identifier_hash_secret
        .filter(|s| !s.trim().is_empty())
        .ok_or(CliError::NoIdentifierSecret)?
        .to_string();
    let groups = move |events: Arc<dyn EventStore>, docs: Arc<dyn ReadModelStore>, dead: Arc<dyn DeadLetterQueue>| {
        groups_over(events, docs, dead, Some(&secret))
    };
    Ok(crm_core::ops::verify(tables.events.as_ref(), tables.docs.clone(), &groups).await?)
}

/// The error a full check that found anything is (exit status 1).
pub fn unverified(report: &VerifyReport) -> Option<CliError> {
    (!report.is_consistent()).then(|| CliError::Unverified {
        mismatched: report.mismatched(),
        missing: report.missing(),
        different: report.different(),
        extra: report.extra(),
        order_dependent: report.order_dependent.len(),
    })
}

/// A body in one line, cut after `max` characters.
fn short(body: &Option<serde_json::Value>, max: usize) -> String {
    let Some(body) = body else {
        return "(none)".into();
    };
    let text = body.to_string();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}... ({} characters)", &text[..cut], text.chars().count()),
        None => text,
    }
}

/// A full check's report: one line per document not as the events make it
/// (with the folded event that last wrote it, and both bodies, cut), per
/// order-dependent document, per consumer not folded and per event a
/// projection refused; then a table per consumer (documents compared,
/// missing, different, extra) and the totals.
pub fn render_verify(report: &VerifyReport) -> String {
    let mut out = String::new();
    for m in &report.mismatches {
        let kind = match m.kind {
            Mismatch::Missing => "MISSING",
            Mismatch::Different => "DIFFERENT",
            Mismatch::Extra => "EXTRA",
        };
        let event = m.event.as_ref().map_or_else(
            || "no folded event wrote it".to_string(),
            |e| {
                format!(
                    "last written by {} v{} {} ({})",
                    e.stream_id, e.version, e.event_type, e.event_id
                )
            },
        );
        let _ = writeln!(
            out,
            "{kind} {} {}/{} ({event})\n  expected: {}\n  stored:   {}",
            m.consumer,
            m.partition,
            m.sort,
            short(&m.expected, 300),
            short(&m.stored, 300),
        );
    }
    for (consumer, partition, sort) in &report.order_dependent {
        let _ = writeln!(
            out,
            "ORDER-DEPENDENT {consumer} {partition}/{sort} (two orders of the streams fold it differently; not compared)"
        );
    }
    for n in &report.not_folded {
        let _ = writeln!(out, "NOT FOLDED {}: {}", n.consumer, n.reason);
    }
    for r in &report.refused {
        let event = r.event.as_ref().map_or_else(
            || "(unreadable event)".to_string(),
            |e| format!("{} v{} {}", e.stream_id, e.version, e.event_type),
        );
        let _ = writeln!(out, "REFUSED {} {event}: {}", r.consumer, r.reason);
    }
    let width = report
        .consumers
        .iter()
        .map(|c| c.consumer.len())
        .max()
        .unwrap_or(0)
        .max("consumer".len());
    let _ = writeln!(
        out,
        "{:<width$}  {:>9}  {:>8}  {:>9}  {:>6}",
        "consumer", "compared", "missing", "different", "extra"
    );
    for c in &report.consumers {
        let _ = writeln!(
            out,
            "{:<width$}  {:>9}  {:>8}  {:>9}  {:>6}",
            c.consumer, c.compared, c.missing, c.different, c.extra
        );
    }
    let _ = write!(
        out,
        "verified {} events of {} streams: {} documents of {} consumers compared; {} missing, {} different, {} extra, \
         {} order-dependent; {} event(s) lost",
        report.events,
        report.streams,
        report.compared(),
        report.consumers.len(),
        report.missing(),
        report.different(),
        report.extra(),
        report.order_dependent.len(),
        report.lost_events(),
    );
    out
}

/// A full check's report as JSON: the report's fields and `totals`
/// (compared, missing, different, extra, order_dependent, mismatched: the
/// three summed, lost_events: [`VerifyReport::lost_events`]).
pub fn verify_json(report: &VerifyReport) -> Result<String, CliError> {
    let mut value = serde_json::to_value(report).map_err(|e| StoreError::Failed(e.to_string()))?;
    value["totals"] = serde_json::json!({
        "compared": report.compared(),
        "missing": report.missing(),
        "different": report.different(),
        "extra": report.extra(),
        "order_dependent": report.order_dependent.len(),
        "mismatched": report.mismatched(),
        "lost_events": report.lost_events(),
    });
    serde_json::to_string_pretty(&value).map_err(|e| StoreError::Failed(e.to_string()).into())
}

/// Up to `max` messages of a dead-letter queue (URL or name), looked at
/// without hiding them from others (visibility 0).
pub async fn dlq_list(sqs: &aws_sdk_sqs::Client, queue: &str, max: usize) -> Result<Vec<QueuedLetter>, CliError> {
    let url = queue_url(sqs, queue).await?;
    Ok(crm_aws::ops::receive(sqs, &url, max, 0).await?)
}

/// One line per message: id, consumer, the event (type, stream, version, id;
/// never its personal data; or the key of an event the relay parked by its
/// key alone; or the timer a schedule could not put on the bus: its name,
/// kind, stream and due time) and the reason.
pub fn render_letters(letters: &[QueuedLetter]) -> String {
    let mut out = String::new();
    for l in letters {
        let event = match (&l.event, &l.key, &l.timer) {
            (Some(e), _, _) => format!("{} {} v{} ({})", e.event_type, e.stream_id, e.version, e.event_id),
            (None, Some(key), _) => format!("{} v{} (by key)", key.pk, key.sk),
            (None, None, Some(t)) => format!(
                "{TIMER_FIRED} {} ({}) {} due {}",
                t.name,
                serde_json::to_value(t.kind)
                    .ok()
                    .and_then(|k| k.as_str().map(str::to_string))
                    .unwrap_or_default(),
                t.stream_id,
                t.due_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            (None, None, None) => "(no event)".to_string(),
        };
        let _ = writeln!(out, "{}  {}  {}  {}", l.message_id, l.consumer, event, l.reason);
    }
    let _ = write!(out, "{} message(s)", letters.len());
    out
}

/// The dead-letter queue at `queue_url` as the consumers park into it:
/// sealed ([`SealedDeadLetters`]), so what a replay or a redrive parks
/// holds its personal fields encrypted under the customers' keys, as
/// stored, never decrypted (decision 0040).
pub fn sealed_dead_letters(clients: &Clients, tables: &Tables, queue_url: String) -> Arc<dyn DeadLetterQueue> {
    Arc::new(SealedDeadLetters::new(
        Arc::new(SqsDeadLetterQueue::new(clients.sqs.clone(), queue_url)),
        tables.keys.clone(),
    ))
}

/// A letter's personal data as an operator may read it (`dlq list
/// --data`): the event's `data` (or, for a letter that holds no event, its
/// payload), decrypted with the customer's key while it exists,
/// `[erased]` once it is gone ([`open_letter`]); `None` when the message
/// holds neither. For display only: the message stays as stored.
pub async fn letter_data(keys: &dyn KeyStore, letter: &QueuedLetter) -> Result<Option<serde_json::Value>, CliError> {
    if let Some(event) = &letter.event {
        let envelope = serde_json::to_value(event).map_err(|e| StoreError::Failed(e.to_string()))?;
        let opened = open_letter(keys, &envelope).await?;
        return Ok(opened.get("data").cloned());
    }
    match serde_json::from_value::<DeadLetter>(letter.body.clone()) {
        Ok(parked) => Ok(Some(open_letter(keys, &parked.payload).await?)),
        Err(_) => Ok(None),
    }
}

/// [`render_letters`], each line followed by the letter's data as
/// [`letter_data`] reads it (`  data: <json>`).
pub async fn render_letters_with_data(keys: &dyn KeyStore, letters: &[QueuedLetter]) -> Result<String, CliError> {
    let listed = render_letters(letters);
    let mut lines = listed.lines();
    let mut out = String::new();
    for letter in letters {
        if let Some(line) = lines.next() {
            let _ = writeln!(out, "{line}");
        }
        if let Some(data) = letter_data(keys, letter).await? {
            let _ = writeln!(out, "  data: {data}");
        }
    }
    for rest in lines {
        let _ = write!(out, "{rest}");
    }
    Ok(out)
}

/// Hands each event of the dead-letter queue `queue` (URL or name) again to
/// the consumer group `target` (`projector`, `consent`), decrypted first
/// (a rule's dead-letter queue holds events as stored); see
/// [`crm_aws::ops::redrive`].
pub async fn dlq_redrive(
    sqs: &aws_sdk_sqs::Client,
    tables: &Tables,
    groups: Vec<ConsumerGroup>,
    queue: &str,
    target: &str,
    max: usize,
) -> Result<RedriveReport, CliError> {
    let known = known_names(&groups, false);
    let group = groups
        .into_iter()
        .find(|g| g.name == target)
        .ok_or_else(|| CliError::UnknownGroup {
            name: target.to_string(),
            known,
        })?;
    let handler = DecryptingHandler::new(Arc::new(group) as Arc<dyn EventHandler>, tables.keys.clone());
    let url = queue_url(sqs, queue).await?;
    Ok(crm_aws::ops::redrive(sqs, &url, &handler, max).await?)
}

/// Publishes the events parked in the relay's dead-letter queue `queue` (URL
/// or name) again onto the bus `EVENT_BUS_NAME`, through the relay; letters
/// that carry only the event's key are re-read from `EVENTS_TABLE` (see
/// [`crm_aws::ops::redrive_to_bus`]). An event the bus still refuses is
/// parked again in the same queue.
pub async fn dlq_redrive_to_bus(
    clients: &Clients,
    settings: &Settings,
    queue: &str,
    max: usize,
) -> Result<RedriveReport, CliError> {
    let url = queue_url(&clients.sqs, queue).await?;
    let stored = DynamoEventStore::new(clients.dynamodb.clone(), settings.events_table()?);
    let relay = clients.relay(settings.event_bus_name()?, &url);
    Ok(crm_aws::ops::redrive_to_bus(&clients.sqs, &url, &stored, &relay, max).await?)
}

/// Puts the timers parked in EventBridge Scheduler's dead-letter queue
/// `queue` (URL or name) on the bus `EVENT_BUS_NAME` as their schedules
/// would have (a `TimerFired` from `crm.scheduler`, the parked `Input` as
/// its detail), deleting each message once the bus took it (see
/// [`crm_aws::ops::redrive_timers`]).
pub async fn dlq_redrive_timers(
    clients: &Clients,
    settings: &Settings,
    queue: &str,
    max: usize,
) -> Result<RedriveReport, CliError> {
    let url = queue_url(&clients.sqs, queue).await?;
    let bus = EventBridgeBus::new(clients.eventbridge.clone(), settings.event_bus_name()?);
    Ok(crm_aws::ops::redrive_timers(&clients.sqs, &url, &bus, max).await?)
}

/// Seals the letters of the dead-letter queue `queue` (URL or name) parked
/// in clear before decision 0040 (see [`crm_aws::ops::reseal`]); needs the
/// key store's settings.
pub async fn dlq_seal(
    clients: &Clients,
    settings: &Settings,
    queue: &str,
    max: usize,
) -> Result<RedriveReport, CliError> {
    let tables = Tables::new(clients, settings)?;
    let url = queue_url(&clients.sqs, queue).await?;
    Ok(crm_aws::ops::reseal(&clients.sqs, &url, tables.keys.clone(), max).await?)
}

/// Sends the events of a consumer's dead-letter queue `queue` back to the
/// consumer's source queue `target` (URLs or names) as the EventBridge event
/// JSON its rule delivers (see [`crm_aws::ops::redrive_to_queue`]).
pub async fn dlq_redrive_to_queue(
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    target: &str,
    max: usize,
) -> Result<RedriveReport, CliError> {
    let url = queue_url(sqs, queue).await?;
    let target = queue_url(sqs, target).await?;
    Ok(crm_aws::ops::redrive_to_queue(sqs, &url, &target, max).await?)
}

/// What `republish` did.
#[derive(Debug, Clone, PartialEq)]
pub struct Republished {
    pub report: RepublishReport,
    pub seconds: f64,
}

/// Publishes again every event of `EVENTS_TABLE` recorded in `[from, to]`
/// onto `EVENT_BUS_NAME`, through the relay (what the bus will not take is
/// parked in `RELAY_DEAD_LETTER_QUEUE_URL`), with a parallel scan of
/// `segments` segments (see [`crm_aws::ops::republish`]). `progress`: a
/// spinner on stderr.
pub async fn republish(
    clients: &Clients,
    settings: &Settings,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    segments: u32,
    progress: bool,
) -> Result<Republished, CliError> {
    if to < from {
        return Err(CliError::EmptyRange {
            from: from.to_rfc3339(),
            to: to.to_rfc3339(),
        });
    }
    let table = settings.events_table()?;
    let parked_in = queue_url(&clients.sqs, settings.relay_dead_letter_queue()?).await?;
    let relay = clients.relay(settings.event_bus_name()?, &parked_in);
    let started = Instant::now();
    let bar = spinner(progress);
    bar.set_message("republishing");
    let report = crm_aws::ops::republish(&clients.dynamodb, table, from, to, segments, &relay, &|n| bar.inc(n)).await?;
    bar.finish_and_clear();
    tracing::info!(?report, "republished");
    Ok(Republished {
        report,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The summary line of a republish.
pub fn render_republish(republished: &Republished) -> String {
    let r = &republished.report;
    format!(
        "scanned {} items in {:.2} s: {} events recorded in the range; published {}, parked {}, failed {}",
        r.scanned, republished.seconds, r.matched, r.published, r.parked, r.failed
    )
}

/// What a redrive did, one line per message that failed, then the totals.
pub fn render_redrive(report: &RedriveReport) -> String {
    let mut out = String::new();
    for (id, why) in &report.failed {
        let _ = writeln!(out, "FAILED {id}: {why}");
    }
    let _ = write!(
        out,
        "redriven {}, failed {}",
        report.redriven.len(),
        report.failed.len()
    );
    out
}

/// Logs to stderr (`RUST_LOG`, default `warn`), so stdout holds the reports.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_core::memory::InMemoryReadModels;
    use crm_core::testing::{InMemoryDeadLetters, InMemoryEventStore};

    fn projector() -> ConsumerGroup {
        ConsumerGroup::projector(
            Arc::new(InMemoryEventStore::default()),
            Arc::new(InMemoryReadModels::default()),
            Arc::new(InMemoryDeadLetters::default()),
            IdentifierHasher::new(b"test"),
        )
    }

    #[test]
    fn a_replay_selects_the_consumers_that_keep_read_models_and_refuses_those_that_decide() {
        let groups = [projector()];
        let names = |picked: Vec<&Consumer>| picked.into_iter().map(Consumer::name).collect::<Vec<_>>();
        let whole = names(select(&groups, "projector").expect("the group"));
        assert!(whole.contains(&crm_core::customer::views::CUSTOMER_360), "{whole:?}");
        for deciding in ["segment-evaluator", "affinity-detector"] {
            assert!(!whole.contains(&deciding), "{deciding} is not replayed: {whole:?}");
            assert!(
                matches!(select(&groups, deciding), Err(CliError::Decides { .. })),
                "{deciding} alone is refused"
            );
        }
        assert_eq!(whole.len(), groups[0].consumer_names().len() - 2);
    }
}
