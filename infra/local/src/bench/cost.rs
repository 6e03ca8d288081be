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
/// projector, consent and rule-segments (batch size 100, window 1 s) take
/// 10 messages a batch, the fill of a queue receiving about 10 messages a
/// second per poller; campaign and channel (batch size 10) take 5. Quieter
/// traffic gives smaller batches (the table at one message a batch is
/// printed too).
pub fn assumed_fill(target: &str) -> usize {
    match target {
        "projector" | "consent" | "rule-segments" => 10,
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
    /// Set by [`CostModel::using`]: the measured run whose units the model uses.
    pub measured_from: Option<String>,
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
                "assumed, not measured: six DynamoDB calls at 4 ms, 10 ms to render, 30 ms for SES",
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
            measured_from: None,
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
             event source mappings hand the consumers: 10 messages for projector, consent and\n\
             rule-segments (batch size 100, 1 s window: a queue taking about 10 messages a second per\n\
             poller), 5 for campaign and channel (batch size 10){}. The\n\
             event store's units are counted from the API phase's appends (every function's),\n\
             reconstructed from the local store, at the DynamoDB store's rules (decision 0036).\n\n\
             The prices were checked on {PRICES_DATE} against published summaries of the AWS\n\
             pricing pages (this machine cannot reach aws.amazon.com). Free tiers (Lambda's 1\n\
             million requests and 400 000 GB-s, SQS's 1 million requests, Scheduler's 14\n\
             million invocations a month) are left out, so the figures are the marginal\n\
             cost of each million. Check the pricing pages before you budget.\n",
            if self.measured_from.is_some() {
                ""
            } else {
                "; the messages' writes"
            }
        );
        if let Some(source) = &self.measured_from {
            let _ = writeln!(
                out,
                "Measured, not counted (decision 0038): the lines marked *(measured)* take the units of\n\
                 {source}, the fault-free run of `scripts/chaos.py` on moto, every AWS request counted for\n\
                 the function that made it (section \"Measured on the moto pipeline\" below): the\n\
                 campaign function's cost of a customer event that starts nothing (the run's marginal\n\
                 phase), KMS (a fixed cost per process since decision 0044), and the whole per-message table.\n"
            );
        }
        let _ = writeln!(out, "## Per million customer events\n");
        cost_table(&mut out, "floor, and why", &self.per_million_events);
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
        cost_table(&mut out, "what, and the floor", &self.per_million_messages);
        out
    }
}

/// The recipients of the broadcast the cost is given for.
pub const BROADCAST_RECIPIENTS: f64 = 1_000_000.0;
/// The channel's DynamoDB reads per message, measured on the moto pipeline
/// (docs/cost.md, "By function": the channel's RRU per message): the
/// broadcast phase counts writes, not reads.
pub const CHANNEL_RRU_PER_MESSAGE: f64 = 3.92;
/// Assumed compute per message beside its DynamoDB calls: rendering the
/// template (10 ms) and the SES call (30 ms), as for a journey's message.
pub const MESSAGE_COMPUTE_MS: f64 = 40.0;
/// SES's feedback events per email on AWS (`Send`, `Delivery`), which the
/// local mail sink does not produce: assumed, priced at the run's mean
/// cost per event.
pub const FEEDBACK_EVENTS_PER_EMAIL: f64 = 2.0;

impl CostModel {
    /// The cost of one broadcast to [`BROADCAST_RECIPIENTS`], from what the
    /// broadcast phase counted per message (decision 0084).
    pub fn broadcast_lines(&self, b: &super::broadcast::BroadcastRow) -> Vec<Line> {
        let n = BROADCAST_RECIPIENTS;
        let per = |x: f64| x / b.messages.max(1) as f64 * n;
        let gb = self.memory_mb as f64 / 1024.0;
        let gb_s_price = if self.arm { LAMBDA_GB_S_ARM } else { LAMBDA_GB_S_X86 };
        let event_wru = per(b.appends.write_units);
        let doc_kb = if b.writes.documents > 0 {
            (b.writes.document_bytes as f64 / b.writes.documents as f64 / 1024.0)
                .ceil()
                .max(1.0)
        } else {
            1.0
        };
        let doc_wru = per(b.writes.documents as f64 * doc_kb + b.writes.checkpoints as f64);
        let events = per(b.events as f64);
        let routed: f64 = b.routed.values().map(|&m| per(m as f64)).sum();
        let batches: f64 = b
            .routed
            .iter()
            .map(|(t, &m)| (per(m as f64) / super::pages::batch_size(t) as f64).ceil())
            .sum();
        let pages = (n / crm_core::broadcast::AUDIENCE_PAGE as f64).ceil();
        let relay = (events / 100.0).ceil();
        let rru = n * CHANNEL_RRU_PER_MESSAGE;
        let writes_per_message = b.store_writes_per_message();
        let gb_s =
            n * gb * (DDB_CALL_MS * (writes_per_message + CHANNEL_RRU_PER_MESSAGE) + MESSAGE_COMPUTE_MS) / 1000.0;
        let types = |keep: fn(&str) -> bool| {
            b.events_by_type
                .iter()
                .filter(|(t, _)| keep(t))
                .map(|(t, c)| {
                    format!(
                        "{t} {:.2} ({} B)",
                        *c as f64 / b.messages.max(1) as f64,
                        b.item_bytes_by_type.get(t).copied().unwrap_or(0)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut lines = vec![
            Line {
                item: "SES sends".into(),
                quantity: n,
                unit: "emails".into(),
                usd: n / 1000.0 * SES_PER_THOUSAND,
                floor: "the price of sending".into(),
            },
            Line {
                item: "DynamoDB writes: event store (counted)".into(),
                quantity: event_wru,
                unit: "WRU".into(),
                usd: event_wru / 1e6 * DDB_WRU,
                floor: format!(
                    "{:.2} units a message: per message {}; the requests of a page are one append of up to 90 events, a transaction at 2 units an item; the claim and the sent are puts at 1. Floor: 1 unit per event ≤ 1 KB",
                    event_wru / n,
                    types(|t| t.starts_with("Message"))
                ),
            },
            Line {
                item: "DynamoDB writes: read models and checkpoints (counted rows)".into(),
                quantity: doc_wru,
                unit: "WRU".into(),
                usd: doc_wru / 1e6 * DDB_WRU,
                floor: format!(
                    "{:.2} documents ({:.0} bytes on average, {doc_kb:.0} unit each) and {:.2} checkpoints a message, every function's, counted by triggers on the local tables; twice this if all moved in transactions; the local checkpoints are one per consumer and stream, DynamoDB's one per stream for a group, so fewer",
                    b.writes.documents as f64 / b.messages.max(1) as f64,
                    b.writes.document_bytes as f64 / b.writes.documents.max(1) as f64,
                    b.writes.checkpoints as f64 / b.messages.max(1) as f64
                ),
            },
            Line {
                item: "DynamoDB reads (assumed, not counted)".into(),
                quantity: rru,
                unit: "RRU".into(),
                usd: rru / 1e6 * DDB_RRU,
                floor: format!(
                    "the channel's {CHANNEL_RRU_PER_MESSAGE} read units per message measured on moto (loads, consent, suppression, preferences, caps); the campaign's reads per page of 90 add little"
                ),
            },
            Line {
                item: "EventBridge PutEvents entries".into(),
                quantity: events,
                unit: "events".into(),
                usd: events / 1e6 * EVENTBRIDGE_EVENT,
                floor: format!(
                    "every stored event published once: {:.2} a message (counted)",
                    events / n
                ),
            },
            Line {
                item: "SQS SendMessage (rules to the queues)".into(),
                quantity: routed,
                unit: "requests".into(),
                usd: routed / 1e6 * SQS_REQUEST,
                floor: format!(
                    "one per routed event, counted by the template's rules: {}",
                    b.routed
                        .iter()
                        .map(|(t, &m)| format!("{t} {:.2}", m as f64 / b.messages.max(1) as f64))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            Line {
                item: "SQS ReceiveMessage and DeleteMessageBatch".into(),
                quantity: 2.0 * batches,
                unit: "requests".into(),
                usd: 2.0 * batches / 1e6 * SQS_REQUEST,
                floor: "one of each per full batch (a broadcast fills them): 10 on the campaign and channel queues, 100 on the projector's and the others'"
                    .into(),
            },
            Line {
                item: "Lambda requests".into(),
                quantity: batches + relay + 1.0,
                unit: "requests".into(),
                usd: (batches + relay + 1.0) / 1e6 * LAMBDA_REQUEST,
                floor: format!(
                    "one per batch above ({pages:.0} fan-out steps of {} recipients ride the campaign queue), one per relay batch of 100 stream records, the POST",
                    crm_core::broadcast::AUDIENCE_PAGE
                ),
            },
            Line {
                item: "Lambda compute".into(),
                quantity: gb_s,
                unit: "GB-s".into(),
                usd: gb_s * gb_s_price,
                floor: format!(
                    "assumed: {DDB_CALL_MS} ms per DynamoDB call ({writes_per_message:.1} counted writes and {CHANNEL_RRU_PER_MESSAGE} reads a message) and {MESSAGE_COMPUTE_MS} ms to render and call SES, at {} MB",
                    self.memory_mb
                ),
            },
            Line {
                item: "Scheduler invocations".into(),
                quantity: pages,
                unit: "invocations".into(),
                usd: pages / 1e6 * SCHEDULER_INVOCATION,
                floor: format!(
                    "at most one timer per fan-out step (the broadcast's one timer, replaced), never one per recipient; the run set {} for {} pages",
                    b.writes.timers_set, b.audience_pages
                ),
            },
        ];
        let without_ses: f64 = lines.iter().skip(1).map(|l| l.usd).sum();
        let feedback = n * FEEDBACK_EVENTS_PER_EMAIL;
        lines.push(Line {
            item: "SES feedback events (assumed, not in the local run)".into(),
            quantity: feedback,
            unit: "events".into(),
            usd: without_ses / events.max(1.0) * feedback,
            floor: format!(
                "{FEEDBACK_EVENTS_PER_EMAIL} a message (`Send`, `Delivery`; opens and clicks more) at this broadcast's mean cost per event"
            ),
        });
        lines
    }

    /// The "A broadcast to 1 million recipients" section of docs/cost.md.
    pub fn broadcast_markdown(&self, b: &super::broadcast::BroadcastRow) -> String {
        let mut out = String::new();
        let lines = self.broadcast_lines(b);
        let _ = writeln!(out, "## A broadcast to 1 million recipients\n");
        let _ = writeln!(
            out,
            "From the bench's broadcast phase (decision 0084): {} customers with marketing email consent \
             in a manual segment, one broadcast `send: now` at {}/s, run on the local runtime until \
             every message was in the mail sink ({} messages, {} audience pages). Counted afterwards \
             from the database and scaled per message to {BROADCAST_RECIPIENTS:.0}: the events appended \
             ({:.2} a message) and their appends as the DynamoDB event store writes them, the \
             read-model and checkpoint rows written (triggers on the local tables), the messages \
             the template's rules route to each queue, the timers set. Prices as above ({PRICES_DATE}).\n",
            b.recipients,
            b.rate_per_second,
            b.messages,
            b.audience_pages,
            b.events_per_message()
        );
        cost_table(&mut out, "what, and the floor", &lines);
        let total = CostModel::total(&lines);
        let _ = writeln!(
            out,
            "{:.2} USD per thousand recipients, {:.2} of it SES. The fixed part of a broadcast (its \
             own events, the audience pages and their snapshot, about {:.0} steps) is in these lines; \
             it is small beside the per-message events. At the highest rate (1 000 a second) the \
             send lasts at least 17 minutes, one step of 90 every 90 ms; the channel queue's \
             `MaximumConcurrency` bounds the SES calls.\n",
            total / BROADCAST_RECIPIENTS * 1000.0,
            BROADCAST_RECIPIENTS / 1000.0 * SES_PER_THOUSAND / BROADCAST_RECIPIENTS * 1000.0,
            (BROADCAST_RECIPIENTS / crm_core::broadcast::AUDIENCE_PAGE as f64).ceil()
        );
        out
    }
}

/// A table of cost lines with its total: `last_column` heads the floor column.
fn cost_table(out: &mut String, last_column: &str, lines: &[Line]) {
    let _ = writeln!(
        out,
        "| item | quantity | unit | USD | {last_column} |\n|---|---:|---|---:|---|"
    );
    for l in lines {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {:.2} | {} |",
            l.item, l.quantity, l.unit, l.usd, l.floor
        );
    }
    let _ = writeln!(out, "| **total** | | | **{:.2}** | |\n", CostModel::total(lines));
}

/// The "By function" and "An event that starts nothing" parts of the
/// measured section: every request counted for the function that made it.
fn by_function_markdown(measured: &Measured) -> String {
    let mut out = String::new();
    if measured.by_function.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "### By function\n\n\
         Every request counted for the function that made it (the functions run with\n\
         `AWS_SDK_UA_APP_ID` = their name, which the SDK sends in its user agent as `app/<name>`;\n\
         `unattributed`: requests without one). The whole run ({} events stored, {} emails), and\n\
         per message the function's queue handed it (stream records for the relay):\n\n\
         | function | invocations | messages | message-side | write units | read units | events-table Queries | KMS | PutEvents entries | Scheduler calls | SES sends | WRU per message | RRU per message |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        measured.events, measured.emails
    );
    for (name, f) in &measured.by_function {
        let (_, message_side) = measured.deliveries(name);
        let queries = f
            .dynamodb
            .get("EventsTable")
            .and_then(|t| t.operations.get("Query"))
            .map_or(0, |o| o.requests);
        let per = |x: f64| {
            if f.messages_received > 0 {
                format!("{:.2}", x / f.messages_received as f64)
            } else {
                String::new()
            }
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {message_side} | {:.0} | {:.0} | {queries} | {} | {} | {} | {} | {} | {} |",
            f.invocations,
            f.messages_received,
            f.write_units,
            f.read_units,
            f.kms_calls,
            f.eventbridge_entries,
            f.scheduler_calls,
            f.ses_sends,
            per(f.write_units),
            per(f.read_units)
        );
    }
    let _ = writeln!(
        out,
        "\n\"message-side\": messages of a message's life (Journey*, Message*, SES's feedback, timers).\n"
    );
    if let Some(phase) = &measured.marginal {
        let _ = writeln!(
            out,
            "### An event that starts nothing\n\n\
             The run's marginal phase: {}: {} events ({}). What each function spent per message its\n\
             queue handed it (the api: per request):\n\n\
             | function | messages | write units | read units | requests by table and operation |\n\
             |---|---:|---:|---:|---|",
            phase.what,
            phase.events,
            phase
                .events_by_type
                .iter()
                .map(|(t, n)| format!("{t} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (name, f) in &phase.by_function {
            let n = if name == "api" {
                f.invocations
            } else {
                f.messages_received
            };
            if n == 0 {
                continue;
            }
            let n_f = n as f64;
            let requests = f
                .dynamodb
                .iter()
                .flat_map(|(table, t)| {
                    t.operations
                        .iter()
                        .filter(|(_, o)| o.requests > 0)
                        .map(move |(op, o)| format!("{:.1} {op} ({table})", o.requests as f64 / n_f))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "| {name} | {n} | {:.2} | {:.2} | {requests} |",
                f.write_units / n_f,
                f.read_units / n_f
            );
        }
        let untouched: Vec<&str> = phase
            .by_function
            .iter()
            .filter(|(name, f)| name.as_str() != "api" && f.messages_received == 0 && f.dynamodb_requests == 0)
            .map(|(name, _)| name.as_str())
            .collect();
        if !untouched.is_empty() {
            let _ = writeln!(
                out,
                "\nNot reached (their rules do not route such an event), so without a line per customer\n\
                 event: {}.",
                untouched.join(", ")
            );
        }
        let _ = writeln!(out);
    }
    out
}

/// KMS: per million requests ($0.03 per 10 000).
pub const KMS_REQUEST: f64 = 3.00;

/// The relay's batch: up to 100 stream records an invocation.
const RELAY_BATCH: f64 = 100.0;

impl Measured {
    /// What `function` spent in the run (nothing if it does not appear).
    pub fn function(&self, function: &str) -> MeasuredFunction {
        self.by_function.get(function).cloned().unwrap_or_default()
    }

    /// The run's stored events of a message's life ([`is_message_event`]).
    pub fn message_events(&self) -> u64 {
        self.events_by_type
            .iter()
            .filter(|(t, _)| is_message_event(t))
            .map(|(_, n)| n)
            .sum()
    }

    /// (customer-side, message-side) messages the function's queue handed
    /// it, by their types ([`is_message_event`]); all customer-side if the
    /// run did not record the types.
    pub fn deliveries(&self, function: &str) -> (u64, u64) {
        match self.delivered_by_type.get(function) {
            Some(types) => types.iter().fold(
                (0, 0),
                |(c, m), (t, n)| {
                    if is_message_event(t) {
                        (c, m + n)
                    } else {
                        (c + n, m)
                    }
                },
            ),
            None => (self.function(function).messages_received, 0),
        }
    }

    /// What one message that starts, advances and exits nothing cost
    /// `function` in the marginal phase, per message its queue handed it
    /// (None: the phase did not reach it).
    pub fn idle_cost(&self, function: &str) -> Option<IdleCost> {
        let f = self.marginal.as_ref()?.by_function.get(function)?;
        if f.messages_received == 0 {
            return None;
        }
        let n = f.messages_received as f64;
        let mut requests = Vec::new();
        for (table, t) in &f.dynamodb {
            for (op, o) in &t.operations {
                if o.requests > 0 {
                    requests.push((table.clone(), op.clone(), o.requests as f64 / n));
                }
            }
        }
        Some(IdleCost {
            messages: f.messages_received,
            write_units: f.write_units / n,
            read_units: f.read_units / n,
            kms_calls: f.kms_calls as f64 / n,
            requests,
        })
    }
}

/// A function's cost per queue message that starts, advances and exits
/// nothing (the marginal phase of a measured run).
#[derive(Debug, Clone, Default)]
pub struct IdleCost {
    /// The messages measured.
    pub messages: u64,
    pub write_units: f64,
    pub read_units: f64,
    pub kms_calls: f64,
    /// (table, operation, requests per message).
    pub requests: Vec<(String, String, f64)>,
}

impl IdleCost {
    fn requests_text(&self) -> String {
        self.requests
            .iter()
            .map(|(table, op, n)| format!("{n:.1} {op} ({table})"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl CostModel {
    /// The model with the measured run's units where the bench's own
    /// counting does not reach (decision 0038): the campaign function's
    /// (and the channel's, if its queue takes customer events) cost of a
    /// customer event that starts nothing, from the run's marginal phase;
    /// KMS per customer; and the whole per-message table, from what the
    /// campaign, channel, projector, consent and relay functions spent per
    /// email sent. The counted lines (event store, projector, consent) stay.
    /// `queues`: the messages each consumer queue receives per customer
    /// event (the bench's routing); `customers_per_event`: new customers per
    /// customer event in the bench's workload.
    pub fn using(
        mut self,
        measured: &Measured,
        queues: &[super::pages::QueueLoad],
        customers_per_event: f64,
        source: &str,
    ) -> Self {
        let m = 1e6;
        let queue = |target: &str| {
            queues
                .iter()
                .find(|q| q.target == target)
                .map_or(0.0, |q| q.messages_per_event)
        };
        // Per customer event.
        let mut added = Vec::new();
        for function in ["campaign", "channel"] {
            let (Some(idle), routed) = (measured.idle_cost(function), queue(function)) else {
                continue;
            };
            let what = format!(
                "{routed:.2} messages per customer event on its queue; each one that starts, advances and \
                 exits nothing ({} measured: {}) made {}",
                idle.messages,
                measured.marginal.as_ref().map_or("", |p| p.what.as_str()),
                idle.requests_text()
            );
            added.push(line(
                &format!("DynamoDB reads: {function}, an event that starts nothing (measured)"),
                m * routed * idle.read_units,
                "RRU",
                routed * idle.read_units * DDB_RRU,
                &format!(
                    "{what}. Floor: one Query of the `campaigns` stream per page, empty unless a \
                     campaign changed (the catalog's change signal; the process keeps the catalog and \
                     reads it whole every 5 minutes, decision 0043); no profile or journey-index read \
                     for an event no campaign triggers, waits for or exits on"
                ),
            ));
            if idle.write_units > 0.0 {
                added.push(line(
                    &format!("DynamoDB writes: {function}, an event that starts nothing (measured)"),
                    m * routed * idle.write_units,
                    "WRU",
                    routed * idle.write_units * DDB_WRU,
                    &format!(
                        "{what}. Floor: 0: nothing is written for an event that changes nothing but the \
                         function's progress item for /health, at most every 30 s"
                    ),
                ));
            }
        }
        let customers = measured.events_by_type.get("CustomerRegistered").copied().unwrap_or(0);
        let customer_side_kms: u64 = measured
            .by_function
            .iter()
            .filter(|(f, _)| f.as_str() != "channel")
            .map(|(_, f)| f.kms_calls)
            .sum();
        if customers > 0 && customers_per_event > 0.0 {
            let per_customer = customer_side_kms as f64 / customers as f64;
            let calls = m * customers_per_event * per_customer;
            added.push(line(
                "KMS requests (measured, spread over the run's customers)",
                calls,
                "requests",
                calls / m * KMS_REQUEST,
                &format!(
                    "{per_customer:.2} calls per customer at {customers_per_event:.3} new customers per \
                     event: the run's calls spread over its customers. Since decision 0044 no KMS call \
                     is made per customer (data keys are wrapped under a branch key); what is left is \
                     one Decrypt of the branch key per function process every 15 minutes and one \
                     GenerateDataKey in the table's life, a fixed cost (about $0.009 a month per \
                     always-warm process), here spread over a short run's customers: an upper bound. \
                     Floor: 0 per event"
                ),
            ));
        }
        let at = self
            .per_million_events
            .iter()
            .position(|l| l.item.starts_with("DynamoDB reads: projections"))
            .map_or(self.per_million_events.len(), |i| i + 1);
        self.per_million_events.splice(at..at, added);

        // Per message: what the functions spent per email sent.
        let emails = measured.emails.max(1) as f64;
        let campaign = measured.function("campaign");
        let channel = measured.function("channel");
        let (campaign_customer_events, _) = measured.deliveries("campaign");
        let idle = measured.idle_cost("campaign").unwrap_or_default();
        let journeys_w = (campaign.write_units - idle.write_units * campaign_customer_events as f64).max(0.0);
        let journeys_r = (campaign.read_units - idle.read_units * campaign_customer_events as f64).max(0.0);
        let own_w = (journeys_w + channel.write_units) / emails;
        let own_r = (journeys_r + channel.read_units) / emails;
        let message_events = measured.message_events() as f64;
        // The projector, consent and relay: their units pro rata of the
        // message events among what they received.
        let (mut shared_w, mut shared_r) = (0.0, 0.0);
        for function in ["projector", "consent", "relay"] {
            let f = measured.function(function);
            let share = if function == "relay" {
                message_events / measured.events.max(1) as f64
            } else {
                let (c, msg) = measured.deliveries(function);
                msg as f64 / (c + msg).max(1) as f64
            };
            shared_w += f.write_units * share / emails;
            shared_r += f.read_units * share / emails;
        }
        // The message's events on the consumer queues, at the model's fill.
        let (mut sends, mut polls, mut batches) = (0.0, 0.0, 0.0);
        for function in measured.delivered_by_type.keys().filter(|f| f.as_str() != "relay") {
            let (_, msg) = measured.deliveries(function);
            let fill = assumed_fill(function).min(super::pages::batch_size(function)).max(1) as f64;
            sends += msg as f64 / emails;
            batches += msg as f64 / fill / emails;
            polls += 2.0 * (msg as f64 / fill) * (fill / 10.0).ceil() / emails;
        }
        let relay_batches = message_events / RELAY_BATCH / emails;
        // Every wait a journey schedules (and every schedule the campaign
        // and channel create) fires at most once.
        let created = [&campaign, &channel]
            .iter()
            .map(|f| {
                f.calls
                    .get("scheduler")
                    .and_then(|ops| ops.get("CreateSchedule"))
                    .copied()
                    .unwrap_or(0)
            })
            .sum::<u64>();
        let waits = measured
            .events_by_type
            .get("JourneyWaitScheduled")
            .copied()
            .unwrap_or(0);
        let schedules = created.max(waits) as f64 / emails;
        let compute = self
            .per_million_messages
            .iter()
            .find(|l| l.item.starts_with("Lambda compute"))
            .cloned();
        let mut lines = vec![
            line(
                "SES sends",
                m,
                "emails",
                m / 1000.0 * SES_PER_THOUSAND,
                "the price of sending",
            ),
            line(
                "DynamoDB writes: campaign and channel (measured)",
                m * own_w,
                "WRU",
                own_w * DDB_WRU,
                "the journey's events and index lines, the message's events (requested, claimed, \
                 sent, SES's feedback), the claim and the caps; the campaign's cost of the customer \
                 events it received left out (per customer event, above). Floor: each event written \
                 once at 1 unit per KB; the journey's start and index move in transactions (2)",
            ),
            line(
                "DynamoDB reads: campaign and channel (measured)",
                m * own_r,
                "RRU",
                own_r * DDB_RRU,
                "the instance's and message's streams loaded before each append, consent, suppression, \
                 preferences, caps, the expected versions. Floor: one load per step and one read per \
                 check",
            ),
            line(
                "DynamoDB writes: projector, consent and relay, pro rata (measured)",
                m * shared_w,
                "WRU",
                shared_w * DDB_WRU,
                "their units times the message's events' share of what they received: the email \
                 index, attribution and campaign stats documents and their checkpoints",
            ),
            line(
                "DynamoDB reads: projector, consent and relay, pro rata (measured)",
                m * shared_r,
                "RRU",
                shared_r * DDB_RRU,
                "as the writes: the checkpoints and documents read once per page",
            ),
            line(
                "KMS requests: channel (measured)",
                m * channel.kms_calls as f64 / emails,
                "requests",
                channel.kms_calls as f64 / emails * KMS_REQUEST,
                "the channel's calls per email: since decision 0044 none per customer, only its \
                 processes' Decrypt of the branch key every 15 minutes (a fixed cost). Floor: 0",
            ),
            line(
                "EventBridge events: the message's events (measured)",
                m * message_events / emails,
                "events",
                message_events / emails * EVENTBRIDGE_EVENT,
                "every stored event of the journey and the message published once",
            ),
            line(
                "SQS requests: the message's events and timers on the queues (measured)",
                m * (sends + polls),
                "requests",
                (sends + polls) * SQS_REQUEST,
                "one SendMessage per delivery, a receive and a delete per batch at the model's fill",
            ),
            line(
                "Lambda requests: consumer batches and relay (measured)",
                m * (batches + relay_batches),
                "requests",
                (batches + relay_batches) * LAMBDA_REQUEST,
                "one per batch at the model's fill, the relay's per 100 records",
            ),
        ];
        if let Some(compute) = compute {
            lines.push(compute);
        }
        lines.push(line(
            "Scheduler invocations: the journeys' waits (measured)",
            m * schedules,
            "invocations",
            schedules * SCHEDULER_INVOCATION,
            &format!(
                "each wait a journey schedules fires at most once (an upper bound: a wait its event \
                 ends is deleted unfired); {waits} waits and {created} schedules created in the run, \
                 whose journeys mostly found their awaited events already stored (the lookback)"
            ),
        ));
        self.per_million_messages = lines;
        self.measured_from = Some(format!(
            "`{source}` ({} stories, {} events, {} emails)",
            measured.stories, measured.events, measured.emails
        ));
        self
    }
}

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
    /// Function (binary name) -> the messages of each type its queue handed it.
    #[serde(default)]
    pub delivered_by_type: BTreeMap<String, BTreeMap<String, u64>>,
    /// Function (binary name; `unattributed`: no app id) -> what its own
    /// requests spent: the proxy reads the caller from the SDK's user agent
    /// (`app/<AWS_SDK_UA_APP_ID>`).
    #[serde(default)]
    pub by_function: BTreeMap<String, MeasuredFunction>,
    /// The run's marginal phase, if it had one.
    #[serde(default)]
    pub marginal: Option<MeasuredMarginal>,
}

/// One table's requests in a measured run.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct MeasuredTable {
    pub write_units: f64,
    pub read_units: f64,
    pub requests: u64,
    pub operations: BTreeMap<String, MeasuredOperation>,
}

/// What one function's requests spent in a measured run (or phase).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct MeasuredFunction {
    pub invocations: u64,
    /// Queue messages (stream records for the relay) it was handed.
    pub messages_received: u64,
    pub write_units: f64,
    pub read_units: f64,
    pub dynamodb_requests: u64,
    /// Logical table -> its units and requests.
    pub dynamodb: BTreeMap<String, MeasuredTable>,
    pub kms_calls: u64,
    pub eventbridge_entries: u64,
    pub scheduler_calls: u64,
    pub ses_sends: u64,
    pub sqs_sends: u64,
    /// service -> operation -> requests that reached moto.
    pub calls: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The marginal phase of `scripts/chaos.py --marginal-views N`: after the
/// stories settled, each customer recorded N events that start, advance and
/// exit nothing (PageViewed); what they cost each function.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct MeasuredMarginal {
    pub what: String,
    /// Events stored during the phase.
    pub events: u64,
    pub events_by_type: BTreeMap<String, u64>,
    pub by_function: BTreeMap<String, MeasuredFunction>,
}

/// An event of a message's life rather than of the customer's: a journey's
/// (Journey*), a message's (Message*), SES's feedback (Email*, but the
/// customer's own email verification) and the timers (journey waits,
/// settle checks) that reach the consumers as `TimerFired`.
pub fn is_message_event(event_type: &str) -> bool {
    event_type.starts_with("Journey")
        || event_type.starts_with("Message")
        || (event_type.starts_with("Email") && !event_type.starts_with("EmailVerif"))
        || event_type == "TimerFired"
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
    /// The model's line comes from the measured run, whose units the rows above already hold.
    pub in_rows_above: bool,
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
            (
                "KMS requests",
                "requests",
                Some("KMS requests"),
                Some(p.kms_calls),
                KMS_REQUEST,
            ),
        ];
        let mut out: Vec<Comparison> = rows
            .iter()
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
                    in_rows_above: false,
                }
            })
            .collect();
        // The model's lines taken from this run's marginal phase: the run's
        // own units are already in its table rows.
        for l in self
            .per_million_events
            .iter()
            .filter(|l| l.item.contains("an event that starts nothing"))
        {
            out.push(Comparison {
                item: l.item.replace(" (measured)", ""),
                unit: l.unit.clone(),
                model: Some(l.quantity),
                measured: None,
                model_usd: l.usd,
                measured_usd: 0.0,
                in_rows_above: true,
            });
        }
        out
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
                quantity(
                    r.measured,
                    if r.in_rows_above {
                        "in the rows above"
                    } else {
                        "not measured (the model's)"
                    }
                ),
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
        out.push_str(&by_function_markdown(measured));
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
             and read-models tables), which the model prices per message (from this run's units by\n  \
             function), not in its counted lines.",
            measured.emails,
            100.0 * messaging as f64 / events
        );
        let queries_by_function = measured
            .by_function
            .iter()
            .filter_map(|(name, f)| {
                let n = f.dynamodb.get("EventsTable")?.operations.get("Query")?.requests;
                (n > 0).then(|| format!("{name} {n}"))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "- **Events-table reads: the consumers load streams too.** The model's event-store line\n  \
             counts a command's load (a Query and its receipt) and the expected-version read; the run\n  \
             made {:.1} Queries of the events table per stored event ({events_queries} for {} api\n  \
             requests; by function: {}). Beyond the api's loads: the campaign function checks the\n  \
             catalog's change signal once per page (decision 0043) and loads each running instance,\n  \
             the channel loads the message's stream before each append. The model now prices the campaign's reads of an event that starts nothing\n  \
             per customer event and the rest per message (both measured).",
            events_queries as f64 / events,
            measured.lambda_invocations_by_function.get("api").copied().unwrap_or(0),
            if queries_by_function.is_empty() {
                "not recorded".to_string()
            } else {
                queries_by_function
            }
        );
        let _ = writeln!(
            out,
            "- **Bigger pages.** The pump drains each queue after the stories, so a batch holds up to\n  \
             the mapping's batch size (messages per invocation: {batches}); the model assumes {TABLE_PAGE_SIZE}\n  \
             messages a batch for projector, consent and rule-segments and 5 for campaign and channel, the fill of\n  \
             steady traffic. Bigger pages write each stream's checkpoint and each changed document\n  \
             once for more events (the page-size table above) and need fewer receives, deletes and\n  \
             Lambda requests, so those measured lines are a lower bound for steady traffic."
        );
        let kms_by_function = measured
            .by_function
            .iter()
            .filter(|(_, f)| f.kms_calls > 0)
            .map(|(name, f)| format!("{name} {}", f.kms_calls))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "- **KMS per process, not per customer.** {:.3} calls per stored event ({}): since decision\n  \
             0044 a customer's data key is wrapped under a branch key, so a new customer costs no KMS\n  \
             call; each function process unwraps the branch key once (again every 15 minutes), and the\n  \
             table's first use makes it once. The model spreads this run's calls over its customers\n  \
             and messages, an upper bound for a fixed cost of about $0.009 a month per warm process.",
            p.kms_calls,
            if kms_by_function.is_empty() {
                "by function: not recorded".to_string()
            } else {
                format!("by function: {kms_by_function}")
            }
        );
        if let Some(phase) = &measured.marginal {
            let per = |function: &str| {
                phase.by_function.get(function).and_then(|f| {
                    let n = if function == "api" {
                        f.invocations
                    } else {
                        f.messages_received
                    };
                    (n > 0).then(|| (f.write_units / n as f64, f.read_units / n as f64))
                })
            };
            let model_per_event = |prefix: &str| self.model_line(prefix).map_or(0.0, |l| l.quantity / 1e6);
            if let (Some((api_w, api_r)), Some((projector_w, projector_r))) = (per("api"), per("projector")) {
                let _ = writeln!(
                    out,
                    "- **Counted and measured, one event that starts nothing.** The api stored each\n  \
                     {} for {api_w:.2} write and {api_r:.2} read units; the counted event-store lines\n  \
                     say {:.2} and {:.2} per customer event: the chaos client sends an Idempotency-Key,\n  \
                     so every append carries its receipt (a transaction, 2 units per item) and reads it\n  \
                     first, which the bench's workload does not. The projector spent {projector_w:.2}\n  \
                     write and {projector_r:.2} read units on it; the counted projection lines say\n  \
                     {:.2} and {:.2}, the mean over every type of customer event (a page view changes\n  \
                     fewer documents than an order) at pages of {TABLE_PAGE_SIZE}. The counted lines stay.",
                    phase.events_by_type.keys().next().map_or("event", String::as_str),
                    model_per_event("DynamoDB writes: event store"),
                    model_per_event("DynamoDB reads: command loads"),
                    model_per_event("DynamoDB writes: projections"),
                    model_per_event("DynamoDB reads: projections"),
                );
            }
        }
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
            measured_from: None,
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

    /// A run with functions: 100 events (30 of messages), 10 emails, 5
    /// customers; a marginal phase of 10 page views.
    const BY_FUNCTION: &str = r#"{"stories": 5, "seed": 1, "events": 100, "emails": 10,
        "events_by_type": {"CustomerRegistered": 5, "OrderPlaced": 65, "JourneyStarted": 20, "MessageSent": 10},
        "per_event": {"kms_calls": 0.2},
        "delivered_by_type": {"campaign": {"OrderPlaced": 65, "CustomerRegistered": 5},
            "channel": {"MessageRequested": 10},
            "projector": {"OrderPlaced": 65, "CustomerRegistered": 5, "JourneyStarted": 20, "MessageSent": 10},
            "relay": {}},
        "by_function": {
            "api": {"invocations": 30, "write_units": 90, "read_units": 60, "kms_calls": 5},
            "campaign": {"invocations": 10, "messages_received": 70, "write_units": 300, "read_units": 1000,
                "kms_calls": 5, "calls": {"scheduler": {"CreateSchedule": 4}},
                "dynamodb": {"EventsTable": {"operations": {"Query": {"requests": 900}}}}},
            "channel": {"invocations": 3, "messages_received": 10, "write_units": 50, "read_units": 80,
                "kms_calls": 5, "calls": {"scheduler": {"CreateSchedule": 6}}},
            "projector": {"invocations": 5, "messages_received": 100, "write_units": 200, "read_units": 100,
                "kms_calls": 5},
            "relay": {"invocations": 2, "messages_received": 100, "eventbridge_entries": 100}},
        "marginal": {"what": "PageViewed", "events": 10, "events_by_type": {"PageViewed": 10},
            "by_function": {
                "api": {"invocations": 10, "write_units": 40, "read_units": 40},
                "campaign": {"messages_received": 10, "read_units": 140,
                    "dynamodb": {"EventsTable": {"operations": {"Query": {"requests": 120, "read_units": 120}}},
                                 "ReadModelsTable": {"operations": {"GetItem": {"requests": 10, "read_units": 10},
                                                                    "Query": {"requests": 10, "read_units": 10}}}}},
                "channel": {"invocations": 0},
                "projector": {"messages_received": 10, "write_units": 17, "read_units": 10}}}}"#;

    fn queues() -> Vec<crate::bench::pages::QueueLoad> {
        ["campaign", "projector", "consent"]
            .iter()
            .map(|&target| crate::bench::pages::QueueLoad {
                target: target.into(),
                messages_per_event: if target == "consent" { 0.1 } else { 1.0 },
                batch_size: crate::bench::pages::batch_size(target),
            })
            .collect()
    }

    #[test]
    fn the_model_uses_the_measured_units_per_customer_event_and_per_message() {
        let measured = Measured::from_json(BY_FUNCTION).expect("parses");
        assert_eq!(measured.message_events(), 30);
        assert_eq!(measured.deliveries("campaign"), (70, 0));
        assert_eq!(measured.deliveries("projector"), (70, 30));
        let mut base = model();
        base.per_million_messages = vec![line("Lambda compute (channel)", 16000.0, "GB-s", 0.21, "")];
        let model = base.using(&measured, &queues(), 0.02, "units.json");
        let events = |item: &str| {
            model
                .per_million_events
                .iter()
                .find(|l| l.item.starts_with(item))
                .unwrap_or_else(|| panic!("no line {item}: {:?}", model.per_million_events))
                .clone()
        };
        // The campaign: 14 read units per page view (12 Queries of the
        // catalog, the profile, the index), 1 message per customer event.
        let idle = events("DynamoDB reads: campaign, an event that starts nothing");
        assert!((idle.quantity - 14e6).abs() < 1e-3, "{idle:?}");
        assert!((idle.usd - 14.0 * DDB_RRU).abs() < 1e-9);
        assert!(idle.floor.contains("12.0 Query (EventsTable)"), "{}", idle.floor);
        // Writing nothing, it has no write line; the channel's queue took no page view.
        assert!(!model
            .per_million_events
            .iter()
            .any(|l| l.item.contains("writes: campaign")));
        assert!(!model.per_million_events.iter().any(|l| l.item.contains("channel")));
        // KMS: api, campaign and projector 15 calls for 5 customers, at 0.02 new customers per event.
        let kms = events("KMS requests");
        assert!((kms.quantity - 0.06e6).abs() < 1e-3, "{kms:?}");
        assert!((kms.usd - 0.06 * KMS_REQUEST).abs() < 1e-9);
        // Inserted after the counted projection lines; the counted lines stay.
        let items: Vec<&str> = model.per_million_events.iter().map(|l| l.item.as_str()).collect();
        let at = items
            .iter()
            .position(|i| i.starts_with("DynamoDB reads: projections"))
            .expect("counted line");
        assert!(items[at + 1].starts_with("DynamoDB reads: campaign"), "{items:?}");
        assert_eq!(items.len(), 12, "{items:?}");

        let message = |item: &str| {
            model
                .per_million_messages
                .iter()
                .find(|l| l.item.starts_with(item))
                .unwrap_or_else(|| panic!("no line {item}: {:?}", model.per_million_messages))
                .clone()
        };
        let near = |l: &Line, quantity: f64, usd: f64| {
            assert!(
                (l.quantity - quantity).abs() < 1e-3 && (l.usd - usd).abs() < 1e-9,
                "{l:?}"
            );
        };
        // (1000 - 14 x 70 + 80) / 10 emails; (300 + 50) / 10.
        near(&message("DynamoDB reads: campaign and channel"), 10e6, 10.0 * DDB_RRU);
        near(&message("DynamoDB writes: campaign and channel"), 35e6, 35.0 * DDB_WRU);
        // The projector: 30 of its 100 messages are the messages' events.
        near(&message("DynamoDB writes: projector"), 6e6, 6.0 * DDB_WRU);
        near(&message("DynamoDB reads: projector"), 3e6, 3.0 * DDB_RRU);
        near(&message("KMS requests: channel"), 0.5e6, 0.5 * KMS_REQUEST);
        near(&message("EventBridge events"), 3e6, 3.0 * EVENTBRIDGE_EVENT);
        // 40 deliveries (channel 10 at 5 a batch, projector 30 at 10): 4 sends, 1 receive-and-delete.
        near(&message("SQS requests"), 5e6, 5.0 * SQS_REQUEST);
        near(&message("Lambda requests"), 0.53e6, 0.53 * LAMBDA_REQUEST);
        near(&message("Scheduler invocations"), 1e6, SCHEDULER_INVOCATION);
        near(&message("Lambda compute (channel)"), 16000.0, 0.21);
        near(&message("SES sends"), 1e6, 100.0);

        let text = model.measured_markdown(&measured, "units.json");
        assert!(
            text.contains("| DynamoDB reads: campaign, an event that starts nothing | RRU | 14000000 | in the rows above | 1.75 | 0.00 |"),
            "{text}"
        );
        assert!(
            text.contains("| campaign | 10 | 70 | 0 | 300 | 1000 | 900 | 5 |"),
            "{text}"
        );
        assert!(text.contains("| campaign | 10 | 0.00 | 14.00 | 12.0 Query (EventsTable), 1.0 GetItem (ReadModelsTable), 1.0 Query (ReadModelsTable) |"), "{text}");
        assert!(text.contains("by function: campaign 900"), "{text}");
        assert!(text.contains("without a line per customer\nevent: channel."), "{text}");
        assert!(
            text.contains("stored each\n  PageViewed for 4.00 write and 4.00 read units"),
            "{text}"
        );
        assert_eq!(
            model.measured_from.as_deref(),
            Some("`units.json` (5 stories, 100 events, 10 emails)")
        );
    }

    #[test]
    fn a_measurement_without_its_figures_is_refused() {
        assert!(Measured::from_json(r#"{"stories": 4}"#).is_err());
    }
}
