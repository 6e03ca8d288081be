//! The cost model (`docs/cost.md`): AWS charges per million customer events
//! and per million messages, from the bench's measured item sizes, compute
//! per event and, for the consumers, the DynamoDB units counted by the page
//! phase (`pages`: the real page path, requests planned as the DynamoDB
//! adapter plans them, units by DynamoDB's rounding rules), at us-east-1
//! list prices. Every line states the floor it cannot go below, and why.

use super::BenchReport;
use std::collections::BTreeMap;
use std::fmt::Write;

/// us-east-1 list prices used (USD), as stated in the generated file.
pub const PRICES_DATE: &str = "2026-11-30";
/// DynamoDB on-demand: per million write request units.
pub const DDB_WRU: f64 = 0.625;
/// DynamoDB on-demand: per million read request units.
pub const DDB_RRU: f64 = 0.125;
/// EventBridge: per million custom events published (64 KB chunks).
pub const EVENTBRIDGE_EVENT: f64 = 1.00;
/// Lambda (arm64): per GB-second, and per million requests.
pub const LAMBDA_GB_S_ARM: f64 = 0.000_013_333_4;
pub const LAMBDA_GB_S_X86: f64 = 0.000_016_666_7;
pub const LAMBDA_REQUEST: f64 = 0.20;
/// EventBridge Scheduler: per million invocations.
pub const SCHEDULER_INVOCATION: f64 = 1.00;
/// SQS standard queues: per million requests (each 64 KB chunk of a
/// payload is one request).
pub const SQS_REQUEST: f64 = 0.40;
/// The average batch an event source mapping hands a consumer function:
/// projector and consent (batch size 100, window 1 s) take 10 messages a
/// batch, the fill of a queue receiving about 10 messages a second per
/// poller; campaign and channel (batch size 10) take 5. Quieter traffic
/// gives smaller batches (the table at one message a batch is printed too).
pub fn assumed_fill(target: &str) -> usize {
    match target {
        "projector" | "consent" => 10,
        _ => 5,
    }
}
/// The pollers of one event source mapping when the queue is idle (Lambda
/// starts with five), each long-polling 20 s: 3 empty receives a minute.
pub const IDLE_POLLERS: f64 = 5.0;
pub const EMPTY_RECEIVES_PER_POLLER_MONTH: f64 = 3.0 * 60.0 * 24.0 * 30.0;
/// SES v2 outbound email: per thousand messages.
pub const SES_PER_THOUSAND: f64 = 0.10;
/// Assumed round trip of one DynamoDB call from Lambda (not measurable locally).
pub const DDB_CALL_MS: f64 = 4.0;

/// The configured Lambda memory (MB) and architecture of `Globals.Function`.
pub fn lambda_config(template: &str) -> (u64, bool) {
    let mut memory = 128;
    let mut arm = false;
    let mut in_globals = false;
    for line in template.lines() {
        if !line.starts_with(' ') {
            in_globals = line.starts_with("Globals:");
            continue;
        }
        if in_globals {
            let l = line.trim();
            if let Some(v) = l.strip_prefix("MemorySize:") {
                memory = v.trim().parse().unwrap_or(memory);
            }
            if l.starts_with("Architectures:") {
                arm = l.contains("arm64");
            }
        }
    }
    (memory, arm)
}

#[derive(Debug, Clone)]
pub struct Line {
    pub item: String,
    pub quantity: f64,
    pub unit: String,
    pub usd: f64,
    /// The least this line can cost, and why.
    pub floor: String,
}

#[derive(Debug, Clone)]
pub struct CostModel {
    pub memory_mb: u64,
    pub arm: bool,
    pub per_million_events: Vec<Line>,
    pub per_million_messages: Vec<Line>,
    /// The consumer queues' empty receives, per month, whatever the traffic.
    pub idle_receives_per_month: f64,
    /// The consumers' DynamoDB cost per million events at each page size measured.
    pub by_page_size: Vec<(usize, f64, f64)>,
}

fn line(item: &str, quantity: f64, unit: &str, usd: f64, floor: &str) -> Line {
    Line {
        item: item.into(),
        quantity,
        unit: unit.into(),
        usd,
        floor: floor.into(),
    }
}

/// The page size the table takes for the consumers' DynamoDB units.
pub const TABLE_PAGE_SIZE: usize = 10;

impl CostModel {
    pub fn from_report(report: &BenchReport, template: &str) -> Self {
        let (memory_mb, arm) = lambda_config(template);
        let gb = memory_mb as f64 / 1024.0;
        let gb_s = if arm { LAMBDA_GB_S_ARM } else { LAMBDA_GB_S_X86 };
        let w = &report.workload;
        let m = 1e6;
        let wru_per_item = |bytes: f64| (bytes / 1024.0).ceil().max(1.0);
        // API: the commands behind the events (a receipt per command), from the API phase.
        let (requests, stored): (u64, u64) = report
            .latency
            .iter()
            .fold((0, 0), |(r, e), l| (r + l.requests, e + l.events_stored));
        let commands_per_event = if stored > 0 {
            requests as f64 / stored as f64
        } else {
            1.0
        };
        // Event store: the API phase's appends as the DynamoDB store writes
        // them (counted, decision 0036); the commands' loads as before.
        let appended = report
            .latency
            .iter()
            .fold(super::AppendCost::default(), |a, l| super::AppendCost {
                appends: a.appends + l.appends.appends,
                events: a.events + l.appends.events,
                version_reads: a.version_reads + l.appends.version_reads,
                transactions: a.transactions + l.appends.transactions,
                write_units: a.write_units + l.appends.write_units,
                read_units: a.read_units + l.appends.read_units,
                reservations_and_receipts: a.reservations_and_receipts + l.appends.reservations_and_receipts,
            });
        let per_stored = |x: f64| {
            if appended.events > 0 {
                x / appended.events as f64
            } else {
                0.0
            }
        };
        let store_wru = m * per_stored(appended.write_units);
        // Load the stream (a Query of its events, about one read unit) and,
        // with an idempotency key, the receipt; the expected version's read.
        let store_rru = m * commands_per_event * 2.0 + m * per_stored(appended.read_units);
        // Consumers (projector, consent): counted by the page phase at the assumed fill.
        let measured = |size: usize| -> (f64, f64) {
            report
                .pages
                .iter()
                .filter(|r| r.page_size == size)
                .fold((0.0, 0.0), |(w, r), row| {
                    (w + row.write_units_per_event(), r + row.read_units_per_event())
                })
        };
        let (consumer_wpe, consumer_rpe) = measured(TABLE_PAGE_SIZE);
        let consumer_wru = m * consumer_wpe;
        let consumer_rru = m * consumer_rpe;
        let by_page_size = super::pages::PAGE_SIZES
            .iter()
            .map(|&size| {
                let (w, r) = measured(size);
                (size, w, w * DDB_WRU + r * DDB_RRU)
            })
            .collect();
        // Lambda compute of projector and consent: per batch, the fold's
        // compute of its events and the page's DynamoDB requests.
        let mut compute_s: std::collections::BTreeMap<&str, f64> = Default::default();
        for f in &report.fold {
            *compute_s.entry(f.function.as_str()).or_default() += 1.0 / f.events_per_second.max(1.0);
        }
        let mut lambda_gb_s = 0.0;
        for row in report.pages.iter().filter(|r| r.page_size == TABLE_PAGE_SIZE) {
            let pages = row.pages.max(1) as f64;
            let requests =
                (row.read_models.write_requests + row.read_models.read_requests + row.gap_reads.read_requests) as f64
                    / pages;
            let per_page_events = row.routed as f64 / pages;
            let seconds = compute_s.get(row.group.as_str()).copied().unwrap_or(0.0);
            let billed_ms = (per_page_events * seconds * 1000.0 + requests * DDB_CALL_MS)
                .max(1.0)
                .ceil();
            let invocations = m * pages / row.events.max(1) as f64;
            lambda_gb_s += invocations * billed_ms / 1000.0 * gb;
        }
        // The relay: one invocation per batch of 100 stream records, ~1 PutEvents call per 10 events.
        let relay_invocations = m / 100.0;
        lambda_gb_s += relay_invocations * (10.0 * DDB_CALL_MS + 5.0) / 1000.0 * gb;
        // The API function: one invocation per command.
        let api_invocations = m * commands_per_event;
        lambda_gb_s += api_invocations * (3.0 * DDB_CALL_MS + 2.0) / 1000.0 * gb;
        // The consumer queues: EventBridge sends each routed event (one
        // message, under 64 KB); the poller receives and deletes per batch,
        // 10 messages a request at most.
        let (mut sends, mut polls, mut batches) = (0.0, 0.0, 0.0);
        for q in &report.queues {
            let messages = m * q.messages_per_event;
            let fill = assumed_fill(&q.target).min(q.batch_size).max(1) as f64;
            sends += messages;
            batches += messages / fill;
            polls += 2.0 * (messages / fill) * (fill / 10.0).ceil();
        }
        let invocations = batches + relay_invocations + api_invocations;
        let idle_receives_per_month = report.queues.len() as f64 * IDLE_POLLERS * EMPTY_RECEIVES_PER_POLLER_MONTH;
        let timers: u64 = report.latency.iter().map(|l| l.timers_set).sum();
        let scheduler = m * timers as f64 / stored.max(1) as f64;
        let per_million_events = vec![
            line(
                "DynamoDB writes: event store (counted)",
                store_wru,
                "WRU",
                store_wru / m * DDB_WRU,
                &format!(
                    "1 unit per event ≤ 1 KB: an append of one event alone is a conditional put; \
                     several events, or one with a reservation or receipt, must move together: \
                     a transaction, 2 units per item ({:.0}% of appends; a reservation joins its \
                     stream's first append, a receipt is counted at the most it adds, 3 units)",
                    100.0 * appended.transactions as f64 / appended.appends.max(1) as f64
                ),
            ),
            line(
                "DynamoDB reads: command loads and expected versions",
                store_rru,
                "RRU",
                store_rru / m * DDB_RRU,
                "a command must read its stream (and its receipt, with an idempotency key); \
                 an append after version n reads that event once (the optimistic check)",
            ),
            line(
                "DynamoDB writes: projections (counted)",
                consumer_wru,
                "WRU",
                consumer_wru / m * DDB_WRU,
                "each changed document once at 1 unit per KB; a document another one's change depends on (read) moves in a transaction with its stream's checkpoint item (one per stream for every consumer), at 2",
            ),
            line(
                "DynamoDB reads: projections (counted)",
                consumer_rru,
                "RRU",
                consumer_rru / m * DDB_RRU,
                "one checkpoint item per stream with work and the documents a projection reads, once per page",
            ),
            line(
                "EventBridge events (relay PutEvents)",
                m,
                "events",
                EVENTBRIDGE_EVENT,
                "every stored event is published once",
            ),
            line(
                "SQS SendMessage (rules to consumer queues)",
                sends,
                "requests",
                sends / m * SQS_REQUEST,
                "one message per event a rule routes to a queue",
            ),
            line(
                "SQS ReceiveMessage and DeleteMessageBatch",
                polls,
                "requests",
                polls / m * SQS_REQUEST,
                "one of each per 10 messages (the most one request carries)",
            ),
            line(
                "Lambda requests (api, relay, consumer batches)",
                invocations,
                "requests",
                invocations / m * LAMBDA_REQUEST,
                "one per command, one per relay batch, one per consumer batch",
            ),
            line(
                "Lambda compute",
                lambda_gb_s,
                "GB-s",
                lambda_gb_s * gb_s,
                "the projections' own compute; the DynamoDB round trips are most of it",
            ),
            line(
                "Scheduler invocations (cart timers, waits)",
                scheduler,
                "invocations",
                scheduler / m * SCHEDULER_INVOCATION,
                "one per timer that fires",
            ),
        ];
        // A message: MessageRequested, MessageClaimed, MessageSent stored and published,
        // the channel function's reads (consent, suppression, preferences, caps) and claim.
        let message_events = 3.0;
        let per_message_wru = message_events * wru_per_item(w.mean_event_bytes) + 2.0;
        let per_message_rru = 6.0 + message_events;
        let channel_ms = 6.0 * DDB_CALL_MS + 10.0 + 30.0; // reads, render, the SES call
        let message_gb_s = m * channel_ms / 1000.0 * gb;
        let per_million_messages = vec![
            line(
                "SES sends",
                m,
                "emails",
                m / 1000.0 * SES_PER_THOUSAND,
                "the price of sending",
            ),
            line(
                "DynamoDB writes (3 events, claim, caps)",
                m * per_message_wru,
                "WRU",
                per_message_wru * DDB_WRU,
                "",
            ),
            line(
                "DynamoDB reads (consent, suppression, preferences, caps, 3 appends' versions)",
                m * per_message_rru,
                "RRU",
                per_message_rru * DDB_RRU,
                "",
            ),
            line(
                "EventBridge events",
                m * message_events,
                "events",
                message_events * EVENTBRIDGE_EVENT,
                "",
            ),
            line(
                "Lambda requests (journey, channel, relay)",
                m * 3.0,
                "requests",
                3.0 * LAMBDA_REQUEST,
                "",
            ),
            line(
                "Lambda compute (channel)",
                message_gb_s,
                "GB-s",
                message_gb_s * gb_s,
                "",
            ),
            line(
                "Scheduler invocations (one wait per message)",
                m,
                "invocations",
                SCHEDULER_INVOCATION,
                "",
            ),
        ];
        CostModel {
            memory_mb,
            arm,
            per_million_events,
            per_million_messages,
            idle_receives_per_month,
            by_page_size,
        }
    }

    pub fn total(lines: &[Line]) -> f64 {
        lines.iter().map(|l| l.usd).sum()
    }

    pub fn markdown(&self, report: &BenchReport) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Cost model\n");
        let _ = writeln!(
            out,
            "Generated by `crm-local bench --cost docs/cost.md` (seed {}); do not edit by hand.\n\
             Inputs measured by the bench: the mean stored event ({:.0} bytes as JSON), the\n\
             projections' compute per event (in-memory fold), commands per event and timers\n\
             set (API phase), and, for the projector and consent functions, the DynamoDB\n\
             units **counted** per request (page phase, decision 0031): the workload's\n\
             events in the order they happen, routed by the template's rules, handed to the\n\
             real `ConsumerGroup::handle_page` in pages of {TABLE_PAGE_SIZE}, every write planned\n\
             by the DynamoDB adapter's own planner (`consumer::capacity::plan`) and every\n\
             request's units computed from its items' sizes by DynamoDB's rounding rules\n\
             (1 write unit per KB per item, twice in a transaction; 1 read unit per 4 KB\n\
             strongly consistent, a Query rounding the sum; moto's `ConsumedCapacity` is\n\
             not used). Lambda: {} MB ({}) from `Globals.Function` of template.yaml.\n",
            report.seed,
            report.workload.mean_event_bytes,
            self.memory_mb,
            if self.arm { "arm64" } else { "x86_64" }
        );
        let _ = writeln!(
            out,
            "Prices: AWS list prices for us-east-1 as of {PRICES_DATE}, no free tier: DynamoDB on-demand\n\
             ${DDB_WRU} per million write units and ${DDB_RRU} per million read units (transactions\n\
             count twice); EventBridge ${EVENTBRIDGE_EVENT:.2} per million custom events; SQS\n\
             ${SQS_REQUEST:.2} per million requests (standard queues, each 64 KB chunk a request);\n\
             Lambda ${LAMBDA_GB_S_ARM} per GB-s (arm64; ${LAMBDA_GB_S_X86} x86_64) and\n\
             ${LAMBDA_REQUEST:.2} per million requests; EventBridge Scheduler ${SCHEDULER_INVOCATION:.2}\n\
             per million invocations; SES ${SES_PER_THOUSAND:.2} per thousand emails. Assumed, not\n\
             measured: {DDB_CALL_MS} ms per DynamoDB call inside a function; the batches the\n\
             event source mappings hand the consumers: 10 messages for projector and consent\n\
             (batch size 100, 1 s window: a queue taking about 10 messages a second per\n\
             poller), 5 for campaign and channel (batch size 10); the messages' writes. The\n\
             event store's units are counted from the API phase's appends (every function's),\n\
             reconstructed from the local store, at the DynamoDB store's rules (decision 0036).\n\n\
             The prices were checked on {PRICES_DATE} against published summaries of the AWS\n\
             pricing pages (this machine cannot reach aws.amazon.com). Free tiers (Lambda's 1\n\
             million requests and 400 000 GB-s, SQS's 1 million requests, Scheduler's 14\n\
             million invocations a month) are left out, so the figures are the marginal\n\
             cost of each million. Check the pricing pages before you budget.\n"
        );
        let _ = writeln!(out, "## Per million customer events\n");
        let _ = writeln!(
            out,
            "| item | quantity | unit | USD | floor, and why |\n|---|---:|---|---:|---|"
        );
        for l in &self.per_million_events {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {:.2} | {} |",
                l.item, l.quantity, l.unit, l.usd, l.floor
            );
        }
        let _ = writeln!(
            out,
            "| **total** | | | **{:.2}** | |\n",
            Self::total(&self.per_million_events)
        );
        let _ = writeln!(
            out,
            "Fixed, whatever the traffic: the consumer queues' pollers receive empty while\n\
             idle ({} queues x {IDLE_POLLERS} pollers x 3 long polls of 20 s a minute): {:.0}\n\
             requests, ${:.2} a month.\n",
            report.queues.len(),
            self.idle_receives_per_month,
            self.idle_receives_per_month / 1e6 * SQS_REQUEST
        );
        let _ = writeln!(
            out,
            "Messages per customer event on each queue (routed by the rules): {}.\n",
            report
                .queues
                .iter()
                .map(|q| format!("{} {:.2}", q.target, q.messages_per_event))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            out,
            "The consumers' DynamoDB units by page size (projector and consent, counted):\n\n\
             | events a page | write units per event | USD per million events (writes and reads) |\n|---:|---:|---:|"
        );
        for (size, w, usd) in &self.by_page_size {
            let _ = writeln!(out, "| {size} | {w:.2} | {usd:.2} |");
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "## Per million messages\n");
        let _ = writeln!(out, "| item | quantity | unit | USD |\n|---|---:|---|---:|");
        for l in &self.per_million_messages {
            let _ = writeln!(out, "| {} | {:.0} | {} | {:.2} |", l.item, l.quantity, l.unit, l.usd);
        }
        let _ = writeln!(
            out,
            "| **total** | | | **{:.2}** |\n",
            Self::total(&self.per_million_messages)
        );
        out
    }
}

/// KMS: per million requests ($0.03 per 10 000).
pub const KMS_REQUEST: f64 = 3.00;

/// What `scripts/chaos.py --rate 0 --units-out FILE` measured: customer
/// stories through template.yaml's stack on moto, every AWS call of the
/// functions through `scripts/fault_proxy.py` (DynamoDB capacity units by
/// DynamoDB's rules, KMS, EventBridge, Scheduler and SES calls), the SQS
/// requests of the pump that plays the event source mappings.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Measured {
    pub stories: u64,
    pub seed: u64,
    /// Events stored in the events table.
    pub events: u64,
    pub emails: u64,
    #[serde(default)]
    pub lambda_invocations_by_function: BTreeMap<String, u64>,
    /// Messages (stream records for the relay) each function was handed.
    #[serde(default)]
    pub delivered_by_function: BTreeMap<String, u64>,
    #[serde(default)]
    pub events_by_type: BTreeMap<String, u64>,
    /// Logical table name (EventsTable...) -> what its requests consumed.
    #[serde(default)]
    pub dynamodb_by_table: BTreeMap<String, MeasuredTable>,
    pub per_event: MeasuredPerEvent,
}

/// One table's requests in a measured run.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct MeasuredTable {
    pub operations: BTreeMap<String, MeasuredOperation>,
}

/// One operation's requests on one table in a measured run.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(default)]
pub struct MeasuredOperation {
    pub requests: u64,
    pub write_units: f64,
    pub read_units: f64,
    pub items_written: u64,
    pub bytes_written: u64,
    pub conditional_failures: u64,
}

/// Per stored event (see `Measured`).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(default)]
pub struct MeasuredPerEvent {
    pub event_store_write_units: f64,
    pub event_store_read_units: f64,
    pub read_models_write_units: f64,
    pub read_models_read_units: f64,
    pub keys_write_units: f64,
    pub keys_read_units: f64,
    pub sqs_sends: f64,
    pub sqs_receives: f64,
    pub sqs_deletes: f64,
    pub eventbridge_entries: f64,
    pub scheduler_calls: f64,
    pub scheduler_invocations: f64,
    pub kms_calls: f64,
    pub ses_sends: f64,
    pub lambda_invocations: f64,
}

/// (item, unit, the model's line it stands beside (its item's start),
/// measured quantity per event (None: not measured), price per million).
type ComparedLine = (&'static str, &'static str, Option<&'static str>, Option<f64>, f64);

/// One line of the model beside the measurement, per million events.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub item: String,
    pub unit: String,
    /// The model's quantity (None: the model has no such line).
    pub model: Option<f64>,
    /// The measured quantity (None: not measured; the model's figure is used).
    pub measured: Option<f64>,
    pub model_usd: f64,
    pub measured_usd: f64,
}

impl Measured {
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

impl CostModel {
    /// The model's line whose item starts with `prefix`.
    fn model_line(&self, prefix: &str) -> Option<&Line> {
        self.per_million_events.iter().find(|l| l.item.starts_with(prefix))
    }

    /// The model's lines per million events beside what the moto pipeline
    /// measured, each priced at the same list price. Lambda compute is not
    /// measured there (debug builds on a shared machine): the model's
    /// figure stands in both columns.
    pub fn compare(&self, measured: &Measured) -> Vec<Comparison> {
        let m = 1e6;
        let p = measured.per_event;
        let rows: [ComparedLine; 13] = [
            (
                "DynamoDB writes: events table",
                "WRU",
                Some("DynamoDB writes: event store"),
                Some(p.event_store_write_units),
                DDB_WRU,
            ),
            (
                "DynamoDB reads: events table",
                "RRU",
                Some("DynamoDB reads: command loads"),
                Some(p.event_store_read_units),
                DDB_RRU,
            ),
            (
                "DynamoDB writes: read-models table",
                "WRU",
                Some("DynamoDB writes: projections"),
                Some(p.read_models_write_units),
                DDB_WRU,
            ),
            (
                "DynamoDB reads: read-models table",
                "RRU",
                Some("DynamoDB reads: projections"),
                Some(p.read_models_read_units),
                DDB_RRU,
            ),
            (
                "DynamoDB writes: keys table",
                "WRU",
                None,
                Some(p.keys_write_units),
                DDB_WRU,
            ),
            (
                "DynamoDB reads: keys table",
                "RRU",
                None,
                Some(p.keys_read_units),
                DDB_RRU,
            ),
            (
                "EventBridge events (PutEvents entries)",
                "events",
                Some("EventBridge events"),
                Some(p.eventbridge_entries),
                EVENTBRIDGE_EVENT,
            ),
            (
                "SQS SendMessage",
                "requests",
                Some("SQS SendMessage"),
                Some(p.sqs_sends),
                SQS_REQUEST,
            ),
            (
                "SQS ReceiveMessage and DeleteMessageBatch",
                "requests",
                Some("SQS ReceiveMessage"),
                Some(p.sqs_receives + p.sqs_deletes),
                SQS_REQUEST,
            ),
            (
                "Lambda requests",
                "requests",
                Some("Lambda requests"),
                Some(p.lambda_invocations),
                LAMBDA_REQUEST,
            ),
            ("Lambda compute", "GB-s", Some("Lambda compute"), None, 0.0),
            (
                "Scheduler invocations",
                "invocations",
                Some("Scheduler invocations"),
                Some(p.scheduler_invocations),
                SCHEDULER_INVOCATION,
            ),
            ("KMS requests", "requests", None, Some(p.kms_calls), KMS_REQUEST),
        ];
        rows.iter()
            .map(|&(item, unit, model_item, measured_per_event, price)| {
                let model = model_item.and_then(|prefix| self.model_line(prefix));
                let model_usd = model.map_or(0.0, |l| l.usd);
                let measured_usd = measured_per_event.map_or(model_usd, |q| q * price);
                Comparison {
                    item: item.into(),
                    unit: unit.into(),
                    model: model.map(|l| l.quantity),
                    measured: measured_per_event.map(|q| q * m),
                    model_usd,
                    measured_usd,
                }
            })
            .collect()
    }

    /// The "Measured on the moto pipeline" section of docs/cost.md.
    pub fn measured_markdown(&self, measured: &Measured, source: &str) -> String {
        let rows = self.compare(measured);
        let p = measured.per_event;
        let mut out = String::new();
        let _ = writeln!(out, "## Measured on the moto pipeline\n");
        let _ = writeln!(
            out,
            "Added by `crm-local bench --cost docs/cost.md --measured {source}`, the file written by\n\
             `scripts/chaos.py --stories {} --rate 0 --seed {} --units-out {source}`:\n\
             {} customer stories (register with email consent, verify the email, view a product,\n\
             then order and pay, or put an item in a cart) through template.yaml's stack on moto,\n\
             the functions under `cargo lambda watch`, every AWS call of theirs through\n\
             `scripts/fault_proxy.py` with no fault: {} events stored, {} emails sent.\n\
             The proxy counts each DynamoDB request's capacity units by DynamoDB's rules from\n\
             the request and answer bodies and the items as moto holds them before and after\n\
             (`CapacityMeter`: 1 write unit per KB of the larger of the old and new item, twice in\n\
             a transaction; 1 read unit per 4 KB, half when eventually consistent, a Query's\n\
             items summed before rounding; a failed conditional write counted as applied);\n\
             the SQS requests are the pump's, which plays the event source mappings (the\n\
             receives that got messages and the batch deletes; every message received once is\n\
             a rule's SendMessage); Scheduler invocations are the timers the pump fired.\n\
             Per million stored events, at the prices above:\n",
            measured.stories, measured.seed, measured.stories, measured.events, measured.emails
        );
        let _ = writeln!(
            out,
            "| item | unit | model | measured | model USD | measured USD |\n|---|---|---:|---:|---:|---:|"
        );
        let quantity = |q: Option<f64>, otherwise: &str| q.map_or(otherwise.to_string(), |q| format!("{q:.0}"));
        for r in &rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} | {:.2} |",
                r.item,
                r.unit,
                quantity(r.model, "not in the model"),
                quantity(r.measured, "not measured (the model's)"),
                r.model_usd,
                r.measured_usd
            );
        }
        let model_total: f64 = rows.iter().map(|r| r.model_usd).sum();
        let measured_total: f64 = rows.iter().map(|r| r.measured_usd).sum();
        let _ = writeln!(
            out,
            "| **total** | | | | **{model_total:.2}** | **{measured_total:.2}** |\n"
        );
        let _ = writeln!(
            out,
            "Not in the table: {:.3} emails per stored event ({:.2} USD per million events at SES's price,\n\
             priced per message below); {:.2} Scheduler API calls per event (creating and deleting\n\
             schedules is not billed, only their invocations). Lambda invocations by function: {}.\n",
            p.ses_sends,
            p.ses_sends * 1e6 / 1000.0 * SES_PER_THOUSAND,
            p.scheduler_calls,
            measured
                .lambda_invocations_by_function
                .iter()
                .map(|(f, n)| format!("{f} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !measured.dynamodb_by_table.is_empty() {
            let _ = writeln!(
                out,
                "The DynamoDB requests by table and operation (units for the whole run):\n\n\
                 | table | operation | requests | write units | read units | mean item written (bytes) |\n\
                 |---|---|---:|---:|---:|---:|"
            );
            for (table, t) in &measured.dynamodb_by_table {
                for (op, o) in &t.operations {
                    let mean = if o.items_written > 0 {
                        format!("{:.0}", o.bytes_written as f64 / o.items_written as f64)
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "| {table} | {op} | {} | {:.0} | {:.1} | {mean} |",
                        o.requests, o.write_units, o.read_units
                    );
                }
            }
            let _ = writeln!(out);
        }
        out.push_str(&self.measured_gaps(measured));
        out
    }

    /// Why the measured column differs from the model's.
    fn measured_gaps(&self, measured: &Measured) -> String {
        let p = measured.per_event;
        let events = measured.events.max(1) as f64;
        let messaging: u64 = measured
            .events_by_type
            .iter()
            .filter(|(t, _)| {
                t.starts_with("Journey")
                    || t.starts_with("Message")
                    || (t.starts_with("Email") && !t.starts_with("EmailVerif"))
            })
            .map(|(_, n)| n)
            .sum();
        let batches = measured
            .delivered_by_function
            .iter()
            .filter_map(|(f, &n)| {
                let calls = *measured.lambda_invocations_by_function.get(f)?;
                (calls > 0).then(|| format!("{f} {:.1}", n as f64 / calls as f64))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let failed: u64 = measured
            .dynamodb_by_table
            .values()
            .flat_map(|t| t.operations.values())
            .map(|o| o.conditional_failures)
            .sum();
        let events_queries = measured
            .dynamodb_by_table
            .get("EventsTable")
            .and_then(|t| t.operations.get("Query"))
            .map_or(0, |o| o.requests);
        let mut out = String::new();
        let _ = writeln!(out, "### Why the two columns differ\n");
        let _ = writeln!(
            out,
            "- **Not the same events.** Every chaos customer registers with email consent and\n  \
             verifies, so the run sent {} emails and {:.0}% of its stored events belong to journeys\n  \
             and messages (Journey*, Message*, and SES's feedback: Email* but the verification);\n  \
             the bench's workload is mostly browsing, carts and orders, and the model prices\n  \
             messages per message (below), not per event.\n  \
             The measured column is the per-event cost of this message-heavy mix: it includes the\n  \
             campaign's journey instances and the channel's claims, caps and consent reads (events\n  \
             and read-models tables), which the model's projection lines (projector and consent\n  \
             only) leave out.",
            measured.emails,
            100.0 * messaging as f64 / events
        );
        let _ = writeln!(
            out,
            "- **Events-table reads: the consumers load streams too.** The model counts a command's\n  \
             load (a Query and its receipt) and the expected-version read; the run made {:.1} Queries of\n  \
             the events table per stored event ({events_queries} for {} api requests): the api's loads,\n  \
             and the streams the campaign and channel functions load before they append (journey\n  \
             instances, messages). The proxy cannot tell which function made a request.",
            events_queries as f64 / events,
            measured.lambda_invocations_by_function.get("api").copied().unwrap_or(0)
        );
        let _ = writeln!(
            out,
            "- **Bigger pages.** The pump drains each queue after the stories, so a batch holds up to\n  \
             the mapping's batch size (messages per invocation: {batches}); the model assumes {TABLE_PAGE_SIZE}\n  \
             messages a batch for projector and consent and 5 for campaign and channel, the fill of\n  \
             steady traffic. Bigger pages write each stream's checkpoint and each changed document\n  \
             once for more events (the page-size table above) and need fewer receives, deletes and\n  \
             Lambda requests, so those measured lines are a lower bound for steady traffic."
        );
        let _ = writeln!(
            out,
            "- **KMS is not in the model.** {:.3} calls per event: a GenerateDataKey per new customer\n  \
             and a Decrypt of a customer's key per function process that needs it (the process keeps\n  \
             it). Here a handful of long-lived processes; on AWS every new execution environment\n  \
             decrypts again, so expect more.",
            p.kms_calls
        );
        let _ = writeln!(
            out,
            "- **Scheduler invocations are under-measured.** The run fires only the timers due\n  \
             within it (the channel's settle checks, none when SES's feedback comes first); the\n  \
             journeys' waits are hours away. The model counts every timer set, as each fires once."
        );
        let _ = writeln!(
            out,
            "- **Not measured:** Lambda compute (debug builds on a shared machine; the model's figure\n  \
             stands in both columns) and the idle pollers' empty receives (fixed, above). Failed\n  \
             conditional writes, counted as if applied (an upper bound): {failed} in this run.\n"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> CostModel {
        let l = |item: &str, quantity: f64, usd: f64| line(item, quantity, "x", usd, "");
        CostModel {
            memory_mb: 256,
            arm: true,
            per_million_events: vec![
                l("DynamoDB writes: event store (counted)", 2e6, 1.25),
                l("DynamoDB reads: command loads and expected versions", 1e6, 0.125),
                l("DynamoDB writes: projections (counted)", 4e6, 2.5),
                l("DynamoDB reads: projections (counted)", 2e6, 0.25),
                l("EventBridge events (relay PutEvents)", 1e6, 1.0),
                l("SQS SendMessage (rules to consumer queues)", 2e6, 0.8),
                l("SQS ReceiveMessage and DeleteMessageBatch", 5e5, 0.2),
                l("Lambda requests (api, relay, consumer batches)", 7e5, 0.14),
                l("Lambda compute", 5000.0, 0.07),
                l("Scheduler invocations (cart timers, waits)", 6e4, 0.06),
            ],
            per_million_messages: vec![],
            idle_receives_per_month: 0.0,
            by_page_size: vec![],
        }
    }

    const MEASURED: &str = r#"{"source": "scripts/chaos.py --rate 0", "stories": 4, "seed": 1,
        "events": 100, "emails": 10, "lambda_invocations_by_function": {"api": 20, "relay": 5},
        "delivered_by_function": {"relay": 100}, "events_by_type": {"JourneyStarted": 30, "OrderPlaced": 70},
        "dynamodb_by_table": {"EventsTable": {"write_units": 300, "operations": {"Query": {"requests": 250,
            "write_units": 0, "read_units": 250, "items_written": 0, "bytes_written": 0},
            "PutItem": {"requests": 10, "write_units": 20, "read_units": 0, "items_written": 10,
            "bytes_written": 15000, "conditional_failures": 1}}}},
        "per_event": {"event_store_write_units": 3.0, "event_store_read_units": 2.5,
        "read_models_write_units": 6.0, "read_models_read_units": 4.0, "keys_write_units": 0.02,
        "keys_read_units": 1.0, "sqs_sends": 2.5, "sqs_receives": 0.5, "sqs_deletes": 0.5,
        "eventbridge_entries": 1.0, "scheduler_calls": 0.1, "scheduler_invocations": 0.05,
        "kms_calls": 1.5, "ses_sends": 0.1, "lambda_invocations": 1.2, "write_units": 9.02}}"#;

    #[test]
    fn measured_units_are_priced_beside_the_model_lines() {
        let measured = Measured::from_json(MEASURED).expect("parses");
        let rows = model().compare(&measured);
        let row = |item: &str| rows.iter().find(|r| r.item.starts_with(item)).expect(item).clone();

        let writes = row("DynamoDB writes: events table");
        assert_eq!(writes.model, Some(2e6));
        assert_eq!(writes.measured, Some(3e6));
        assert!((writes.measured_usd - 3.0 * DDB_WRU).abs() < 1e-9);
        assert!((writes.model_usd - 1.25).abs() < 1e-9);

        let keys = row("DynamoDB reads: keys table");
        assert_eq!(keys.model, None);
        assert!((keys.measured_usd - DDB_RRU).abs() < 1e-9);

        let polls = row("SQS ReceiveMessage");
        assert_eq!(polls.measured, Some(1e6));
        assert!((polls.measured_usd - SQS_REQUEST).abs() < 1e-9);

        let kms = row("KMS requests");
        assert!((kms.measured_usd - 1.5 * KMS_REQUEST).abs() < 1e-9);

        // Not measured: the model's compute stands in both columns.
        let compute = row("Lambda compute");
        assert_eq!(compute.measured, None);
        assert!((compute.measured_usd - 0.07).abs() < 1e-9);

        let text = model().measured_markdown(&measured, "target/units.json");
        assert!(text.contains("## Measured on the moto pipeline"), "{text}");
        assert!(
            text.contains("| DynamoDB writes: events table | WRU | 2000000 | 3000000 | 1.25 | 1.88 |"),
            "{text}"
        );
        assert!(text.contains("api 20, relay 5"), "{text}");
        assert!(
            text.contains("| EventsTable | PutItem | 10 | 20 | 0.0 | 1500 |"),
            "{text}"
        );
        assert!(text.contains("30% of its stored events"), "{text}");
        assert!(text.contains("2.5 Queries"), "{text}");
        assert!(text.contains("messages per invocation: relay 20.0"), "{text}");
        assert!(text.contains("1 in this run"), "{text}");
    }

    #[test]
    fn a_measurement_without_its_figures_is_refused() {
        assert!(Measured::from_json(r#"{"stories": 4}"#).is_err());
    }
}
