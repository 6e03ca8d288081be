//! The cost model (`docs/cost.md`): AWS charges per million customer events
//! and per million messages, from the bench's measured item sizes, reads and
//! writes per event and compute per event, at us-east-1 list prices.

use super::BenchReport;
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
}

#[derive(Debug, Clone)]
pub struct CostModel {
    pub memory_mb: u64,
    pub arm: bool,
    pub per_million_events: Vec<Line>,
    pub per_million_messages: Vec<Line>,
}

fn line(item: &str, quantity: f64, unit: &str, usd: f64) -> Line {
    Line {
        item: item.into(),
        quantity,
        unit: unit.into(),
        usd,
    }
}

impl CostModel {
    pub fn from_report(report: &BenchReport, template: &str) -> Self {
        let (memory_mb, arm) = lambda_config(template);
        let gb = memory_mb as f64 / 1024.0;
        let gb_s = if arm { LAMBDA_GB_S_ARM } else { LAMBDA_GB_S_X86 };
        let w = &report.workload;
        let m = 1e6;
        let wru_per_item = |bytes: f64| (bytes / 1024.0).ceil().max(1.0);
        let rru_per_item = |bytes: f64| (bytes / 4096.0).ceil().max(1.0);
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
        // Event store: every event a transactional write (2 units per KB), a receipt per command.
        let store_wru = m * 2.0 * wru_per_item(w.mean_event_bytes) + m * commands_per_event * 2.0;
        let store_rru = m * commands_per_event * 2.0; // load the stream + the receipt check
                                                      // Consumers: per event, a checkpoint read and a transaction (documents + checkpoint) per consumer.
        let mut consumer_wru = 0.0;
        let mut consumer_rru = 0.0;
        let mut compute_s: std::collections::BTreeMap<&str, f64> = Default::default();
        let mut calls: std::collections::BTreeMap<&str, f64> = Default::default();
        for f in &report.fold {
            consumer_wru += m * 2.0 * (f.commits_per_event + f.puts_per_event * wru_per_item(f.bytes_per_put));
            consumer_rru += m * (1.0 + f.reads_per_event * rru_per_item(f.bytes_per_put));
            *compute_s.entry(f.function.as_str()).or_default() += 1.0 / f.events_per_second.max(1.0);
            *calls.entry(f.function.as_str()).or_default() += 2.0 + f.reads_per_event;
        }
        let mut lambda_gb_s = 0.0;
        for (function, seconds) in &compute_s {
            let billed_ms = (seconds * 1000.0 + calls[function] * DDB_CALL_MS).max(1.0).ceil();
            lambda_gb_s += m * billed_ms / 1000.0 * gb;
        }
        // The relay: one invocation per batch of 100 stream records, ~1 PutEvents call per 10 events.
        let relay_invocations = m / 100.0;
        lambda_gb_s += relay_invocations * (10.0 * DDB_CALL_MS + 5.0) / 1000.0 * gb;
        // The API function: one invocation per command.
        let api_invocations = m * commands_per_event;
        lambda_gb_s += api_invocations * (3.0 * DDB_CALL_MS + 2.0) / 1000.0 * gb;
        let invocations = m * w.targets_per_event + relay_invocations + api_invocations;
        let timers: u64 = report.latency.iter().map(|l| l.timers_set).sum();
        let scheduler = m * timers as f64 / stored.max(1) as f64;
        let per_million_events = vec![
            line(
                "DynamoDB writes: event store and receipts",
                store_wru,
                "WRU",
                store_wru / m * DDB_WRU,
            ),
            line(
                "DynamoDB reads: command loads",
                store_rru,
                "RRU",
                store_rru / m * DDB_RRU,
            ),
            line(
                "DynamoDB writes: projections",
                consumer_wru,
                "WRU",
                consumer_wru / m * DDB_WRU,
            ),
            line(
                "DynamoDB reads: projections",
                consumer_rru,
                "RRU",
                consumer_rru / m * DDB_RRU,
            ),
            line("EventBridge events (relay PutEvents)", m, "events", EVENTBRIDGE_EVENT),
            line(
                "Lambda requests (api, relay, rule targets)",
                invocations,
                "requests",
                invocations / m * LAMBDA_REQUEST,
            ),
            line("Lambda compute", lambda_gb_s, "GB-s", lambda_gb_s * gb_s),
            line(
                "Scheduler invocations (cart timers, waits)",
                scheduler,
                "invocations",
                scheduler / m * SCHEDULER_INVOCATION,
            ),
        ];
        // A message: MessageRequested, MessageClaimed, MessageSent stored and published,
        // the channel function's reads (consent, suppression, preferences, caps) and claim.
        let message_events = 3.0;
        let per_message_wru = message_events * 2.0 * wru_per_item(w.mean_event_bytes) + 2.0;
        let per_message_rru = 6.0;
        let channel_ms = 6.0 * DDB_CALL_MS + 10.0 + 30.0; // reads, render, the SES call
        let message_gb_s = m * channel_ms / 1000.0 * gb;
        let per_million_messages = vec![
            line("SES sends", m, "emails", m / 1000.0 * SES_PER_THOUSAND),
            line(
                "DynamoDB writes (3 events, claim, caps)",
                m * per_message_wru,
                "WRU",
                per_message_wru * DDB_WRU,
            ),
            line(
                "DynamoDB reads (consent, suppression, preferences, caps)",
                m * per_message_rru,
                "RRU",
                per_message_rru * DDB_RRU,
            ),
            line(
                "EventBridge events",
                m * message_events,
                "events",
                message_events * EVENTBRIDGE_EVENT,
            ),
            line(
                "Lambda requests (journey, channel, relay)",
                m * 3.0,
                "requests",
                3.0 * LAMBDA_REQUEST,
            ),
            line("Lambda compute (channel)", message_gb_s, "GB-s", message_gb_s * gb_s),
            line(
                "Scheduler invocations (one wait per message)",
                m,
                "invocations",
                SCHEDULER_INVOCATION,
            ),
        ];
        CostModel {
            memory_mb,
            arm,
            per_million_events,
            per_million_messages,
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
             reads, writes and document sizes per event of every projection (in-memory fold),\n\
             their compute per event, the bus targets per event ({:.2}), commands per event\n\
             and timers set (API phase). Lambda: {} MB ({}) from `Globals.Function` of\n\
             template.yaml.\n",
            report.seed,
            report.workload.mean_event_bytes,
            report.workload.targets_per_event,
            self.memory_mb,
            if self.arm { "arm64" } else { "x86_64" }
        );
        let _ = writeln!(
            out,
            "Prices: AWS list prices for us-east-1 as of {PRICES_DATE}, no free tier: DynamoDB on-demand\n\
             ${DDB_WRU} per million write units and ${DDB_RRU} per million read units (transactions\n\
             count twice); EventBridge ${EVENTBRIDGE_EVENT:.2} per million custom events; Lambda\n\
             ${LAMBDA_GB_S_ARM} per GB-s (arm64; ${LAMBDA_GB_S_X86} x86_64) and ${LAMBDA_REQUEST:.2} per\n\
             million requests; EventBridge Scheduler ${SCHEDULER_INVOCATION:.2} per million invocations;\n\
             SES ${SES_PER_THOUSAND:.2} per thousand emails. Assumed, not measured: {DDB_CALL_MS} ms per\n\
             DynamoDB call inside a function, 1 KB write / 4 KB read units rounded up per item.\n\n\
             The prices were checked on {PRICES_DATE} against published summaries of the AWS\n\
             pricing pages (this machine cannot reach aws.amazon.com): DynamoDB on-demand as cut\n\
             in November 2024, Lambda duration and requests, EventBridge custom events and\n\
             Scheduler, SES outbound. Free tiers (Lambda's 1 million requests and 400 000 GB-s,\n\
             Scheduler's 14 million invocations a month) are left out, so the figures are the\n\
             marginal cost of each million. Check the pricing pages before you budget.\n"
        );
        for (title, lines) in [
            ("Per million customer events", &self.per_million_events),
            ("Per million messages", &self.per_million_messages),
        ] {
            let _ = writeln!(out, "## {title}\n");
            let _ = writeln!(out, "| item | quantity | unit | USD |\n|---|---:|---|---:|");
            for l in lines.iter() {
                let _ = writeln!(out, "| {} | {:.0} | {} | {:.2} |", l.item, l.quantity, l.unit, l.usd);
            }
            let _ = writeln!(out, "| **total** | | | **{:.2}** |\n", Self::total(lines));
        }
        out
    }
}
