//! The broadcast phase (issue 20, decision 0084): `recipients` customers
//! with marketing email consent in a manual segment, one broadcast `send:
//! now` at the highest rate allowed, on the local runtime with the bus and
//! timers running as under `serve`, timed from the `POST /broadcasts` until
//! its last message is in the mail sink. Everything the send wrote is
//! counted afterwards from the database: the events appended (by type, and
//! as the DynamoDB event store would write them), the read-model documents
//! and checkpoints written (SQLite triggers on those tables, installed for
//! the bench), the timers set and fired, and the messages each bus target's
//! queue would receive (the template's rules over the stored events).
//! Figures are printed, never asserted.

use super::{append_cost, count, io, side_connection, wait_caught_up, AppendCost, BenchError, BenchOptions};
use crate::runtime::bus::BUILT_IN_TEMPLATE;
use crate::runtime::{ClockChoice, LocalRuntime, RuntimeOptions};
use crm_core::ports::EventStore;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The highest `rate_per_second` a broadcast accepts (decision 0084).
pub const MAX_RATE: u32 = 1_000;
/// The manual segment the recipients are put in.
const SEGMENT: &str = "bench-broadcast";
/// The broadcast's id (its message ids start `bc-bench-`).
const ID: &str = "bench";
/// No new message in the sink for this long: the run stops and reports
/// what arrived (a printed figure, never a hang).
const STALL: Duration = Duration::from_secs(60);

/// Row writes counted by triggers on the runtime's tables while the send ran.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TableWrites {
    /// Read-model documents inserted, replaced or updated (every function's).
    pub documents: u64,
    /// Their bodies' bytes, as stored.
    pub document_bytes: u64,
    pub documents_deleted: u64,
    /// Consumer checkpoints written (one per consumer and stream here; one
    /// item per stream for a whole group on DynamoDB).
    pub checkpoints: u64,
    /// Timers set (inserted or replaced) and removed (fired or deleted).
    pub timers_set: u64,
    pub timers_removed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BroadcastRow {
    pub recipients: u64,
    pub rate_per_second: u32,
    pub status: String,
    pub audience_size: u64,
    pub audience_pages: u64,
    /// The broadcast's messages in the mail sink.
    pub messages: u64,
    /// From the POST until the last of them was in the sink.
    pub seconds: f64,
    pub messages_per_second: f64,
    /// Until every bus target had caught up (the projections of the sends).
    pub seconds_until_settled: f64,
    /// Events appended from the POST until settled, by type.
    pub events_by_type: BTreeMap<String, u64>,
    pub events: u64,
    /// Those appends as the DynamoDB event store writes them.
    pub appends: AppendCost,
    /// The mean event item (bytes, as the DynamoDB store writes it) by type.
    pub item_bytes_by_type: BTreeMap<String, u64>,
    pub writes: TableWrites,
    /// Messages each bus target's queue receives (the template's rules).
    pub routed: BTreeMap<String, u64>,
    pub dead_letters: u64,
}

impl BroadcastRow {
    fn per_message(&self, n: f64) -> f64 {
        n / self.messages.max(1) as f64
    }
    pub fn events_per_message(&self) -> f64 {
        self.per_message(self.events as f64)
    }
    /// Event-store appends (DynamoDB requests) and read-model and checkpoint
    /// row writes, per message.
    pub fn store_writes_per_message(&self) -> f64 {
        self.per_message((self.appends.appends + self.writes.documents + self.writes.checkpoints) as f64)
    }
    pub fn event_write_units_per_message(&self) -> f64 {
        self.per_message(self.appends.write_units)
    }
}

const TRIGGERS: &str = "
CREATE TABLE IF NOT EXISTS bench_writes (what TEXT PRIMARY KEY, n INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO bench_writes VALUES ('documents', 0, 0), ('documents_deleted', 0, 0),
    ('checkpoints', 0, 0), ('timers_set', 0, 0), ('timers_removed', 0, 0);
CREATE TRIGGER IF NOT EXISTS bench_doc_insert AFTER INSERT ON read_models BEGIN
    UPDATE bench_writes SET n = n + 1, bytes = bytes + length(NEW.body) WHERE what = 'documents'; END;
CREATE TRIGGER IF NOT EXISTS bench_doc_update AFTER UPDATE ON read_models BEGIN
    UPDATE bench_writes SET n = n + 1, bytes = bytes + length(NEW.body) WHERE what = 'documents'; END;
CREATE TRIGGER IF NOT EXISTS bench_doc_delete AFTER DELETE ON read_models BEGIN
    UPDATE bench_writes SET n = n + 1 WHERE what = 'documents_deleted'; END;
CREATE TRIGGER IF NOT EXISTS bench_checkpoint_insert AFTER INSERT ON checkpoints BEGIN
    UPDATE bench_writes SET n = n + 1 WHERE what = 'checkpoints'; END;
CREATE TRIGGER IF NOT EXISTS bench_checkpoint_update AFTER UPDATE ON checkpoints BEGIN
    UPDATE bench_writes SET n = n + 1 WHERE what = 'checkpoints'; END;
CREATE TRIGGER IF NOT EXISTS bench_timer_insert AFTER INSERT ON timers BEGIN
    UPDATE bench_writes SET n = n + 1 WHERE what = 'timers_set'; END;
CREATE TRIGGER IF NOT EXISTS bench_timer_update AFTER UPDATE ON timers BEGIN
    UPDATE bench_writes SET n = n + 1 WHERE what = 'timers_set'; END;
CREATE TRIGGER IF NOT EXISTS bench_timer_delete AFTER DELETE ON timers BEGIN
    UPDATE bench_writes SET n = n + 1 WHERE what = 'timers_removed'; END;
";

fn writes(conn: &rusqlite::Connection) -> Result<TableWrites, BenchError> {
    let mut w = TableWrites::default();
    let sql = "SELECT what, n, bytes FROM bench_writes";
    let mut statement = conn
        .prepare(sql)
        .map_err(|e| BenchError::Other(format!("{sql}: {e}")))?;
    let rows = statement
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .map_err(|e| BenchError::Other(format!("{sql}: {e}")))?;
    for row in rows {
        let (what, n, bytes) = row.map_err(|e| BenchError::Other(e.to_string()))?;
        let n = n.max(0) as u64;
        match what.as_str() {
            "documents" => (w.documents, w.document_bytes) = (n, bytes.max(0) as u64),
            "documents_deleted" => w.documents_deleted = n,
            "checkpoints" => w.checkpoints = n,
            "timers_set" => w.timers_set = n,
            "timers_removed" => w.timers_removed = n,
            _ => {}
        }
    }
    Ok(w)
}

impl TableWrites {
    fn since(self, before: TableWrites) -> TableWrites {
        TableWrites {
            documents: self.documents - before.documents,
            document_bytes: self.document_bytes - before.document_bytes,
            documents_deleted: self.documents_deleted - before.documents_deleted,
            checkpoints: self.checkpoints - before.checkpoints,
            timers_set: self.timers_set - before.timers_set,
            timers_removed: self.timers_removed - before.timers_removed,
        }
    }
}

fn api_failed(method: &str, path: &str, message: impl std::fmt::Display) -> BenchError {
    BenchError::Api {
        method: method.into(),
        path: path.into(),
        message: message.to_string(),
    }
}

/// The phase: a runtime of its own on a free loopback port.
pub async fn broadcast_phase(options: &BenchOptions) -> Result<BroadcastRow, BenchError> {
    let recipients = options.broadcast_recipients.max(1);
    let dir = tempfile::tempdir().map_err(io("temporary directory"))?;
    let db = crate::adapters::data_dir::database_path(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding 127.0.0.1:0"))?;
    let addr = listener.local_addr().map_err(io("local address"))?;
    let runtime = LocalRuntime::open_with(
        &db,
        BUILT_IN_TEMPLATE,
        RuntimeOptions {
            clock: ClockChoice::System,
            public_base_url: format!("http://{addr}"),
        },
    )?;
    let side = side_connection(&db)?;
    side.execute_batch(TRIGGERS)
        .map_err(|e| BenchError::Other(format!("bench triggers: {e}")))?;
    let token = "bench-token".to_string();
    let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        runtime.app(token.clone()),
    )));
    let bus = runtime.spawn_bus();
    let targets = runtime.bus.targets().len();
    let result = run_broadcast(
        &runtime,
        &db,
        &side,
        addr,
        &token,
        targets,
        recipients,
        options.progress,
    )
    .await;
    bus.abort();
    server.abort();
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_broadcast(
    runtime: &LocalRuntime,
    db: &std::path::Path,
    side: &rusqlite::Connection,
    addr: std::net::SocketAddr,
    token: &str,
    targets: usize,
    recipients: u64,
    progress: bool,
) -> Result<BroadcastRow, BenchError> {
    // The audience: registered over the API (four connections), then put
    // in the manual segment as `segments::apply_request` does for the API.
    let bar = super::progress_bar(progress, recipients, "broadcast audience");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (next, token) = (next.clone(), token.to_string());
        workers.push(tokio::spawn(async move {
            let mut client = super::http::Client::connect(addr, &token).await?;
            let mut ids = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= recipients {
                    return Ok::<_, BenchError>(ids);
                }
                let body = serde_json::json!({
                    "email": format!("bench-{n}@example.com"),
                    "first_name": "Ada",
                    "last_name": "Lovelace",
                    "source": "web",
                    "marketing_consent": { "email": true, "sms": false, "push": false },
                    "terms_accepted": true,
                    "ip": "198.51.100.4",
                    "user_agent": "crm-local bench",
                    "timezone": "UTC",
                    "locale": "en-US"
                });
                let (status, answer) = client.call("POST", "/customers", Some(body.to_string())).await?;
                if status != 201 {
                    return Err(api_failed("POST", "/customers", format!("{status}: {answer}")));
                }
                let id = serde_json::from_str::<serde_json::Value>(&answer)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_string))
                    .ok_or_else(|| api_failed("POST", "/customers", format!("no id in {answer}")))?;
                ids.push(id);
            }
        }));
    }
    let mut ids = Vec::new();
    for worker in workers {
        ids.extend(
            worker
                .await
                .map_err(|e| BenchError::Other(format!("broadcast audience: {e}")))??,
        );
    }
    let store = runtime.command_store();
    for id in &ids {
        crm_core::segments::apply_request(store.as_ref(), id, SEGMENT, true, runtime.clock.now(), None)
            .await
            .map_err(|e| BenchError::Other(format!("adding {id} to {SEGMENT}: {e}")))?;
        bar.inc(1);
    }
    wait_caught_up(db, targets).await?;
    bar.finish_and_clear();

    // The send.
    let before_events = count(side, "SELECT COALESCE(MAX(position), 0) FROM events")?;
    let before_receipts = count(side, "SELECT COUNT(*) FROM receipts")?;
    let before_writes = writes(side)?;
    let before_dead = runtime.bus.dead_letters().count().await?;
    let sent_sql = format!("SELECT COUNT(*) FROM mail_sink WHERE message_id LIKE 'bc-{ID}-%'");
    let bar = super::progress_bar(progress, recipients, "broadcast messages");
    let mut client = super::http::Client::connect(addr, token).await?;
    let body = serde_json::json!({
        "id": ID,
        "template": "welcome",
        "channel": "email",
        "audience": { "segments": [SEGMENT] },
        "send": { "type": "now" },
        "rate_per_second": MAX_RATE
    });
    let started = Instant::now();
    let (status, answer) = client.call("POST", "/broadcasts", Some(body.to_string())).await?;
    if status != 201 {
        return Err(api_failed("POST", "/broadcasts", format!("{status}: {answer}")));
    }
    let (mut messages, mut last_change, mut last_at) = (0u64, Instant::now(), started.elapsed());
    while messages < recipients && last_change.elapsed() < STALL {
        let now = count(side, &sent_sql)?;
        if now != messages {
            (messages, last_change, last_at) = (now, Instant::now(), started.elapsed());
            bar.set_position(messages);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bar.finish_and_clear();
    let seconds = last_at.as_secs_f64();
    wait_caught_up(db, targets).await?;
    let seconds_until_settled = started.elapsed().as_secs_f64();

    // What it wrote.
    let path = format!("/broadcasts/{ID}");
    let (status, answer) = client.call("GET", &path, None).await?;
    let view: serde_json::Value = serde_json::from_str(&answer).map_err(|e| api_failed("GET", &path, e))?;
    if status != 200 {
        return Err(api_failed("GET", &path, format!("{status}: {answer}")));
    }
    let mut events_by_type = BTreeMap::new();
    let mut routed: BTreeMap<String, u64> = BTreeMap::new();
    let rules =
        crate::runtime::bus::rules_from_template(BUILT_IN_TEMPLATE).map_err(|e| BenchError::Other(e.to_string()))?;
    let mut after = Some(before_events.to_string());
    loop {
        let page = runtime.stored_events.read_all(after.as_deref(), 1_000).await?;
        for e in &page.events {
            *events_by_type.entry(e.event_type.clone()).or_insert(0u64) += 1;
            let json = crm_core::bus::BusEntry::for_event(e.clone()).to_event_json("000000000000", "local");
            let mut hit: Vec<&str> = rules
                .iter()
                .filter(|r| r.pattern.matches(&json))
                .map(|r| r.target.as_str())
                .collect();
            hit.dedup();
            for t in hit {
                *routed.entry(t.to_string()).or_insert(0) += 1;
            }
        }
        match page.next {
            Some(next) if !page.events.is_empty() => after = Some(next),
            _ => break,
        }
    }
    let appends = append_cost(
        side,
        before_events,
        count(side, "SELECT COUNT(*) FROM receipts")?.saturating_sub(before_receipts),
    )?;
    let sql = format!(
        "SELECT type, CAST(AVG({}) AS INTEGER) FROM events WHERE position > ?1 GROUP BY type",
        super::ITEM_BYTES
    );
    let mut item_bytes_by_type = BTreeMap::new();
    {
        let mut statement = side
            .prepare(&sql)
            .map_err(|e| BenchError::Other(format!("{sql}: {e}")))?;
        let rows = statement
            .query_map([before_events as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(|e| BenchError::Other(format!("{sql}: {e}")))?;
        for row in rows {
            let (t, bytes) = row.map_err(|e| BenchError::Other(e.to_string()))?;
            item_bytes_by_type.insert(t, bytes.max(0) as u64);
        }
    }
    let number = |k: &str| view["progress"][k].as_u64().unwrap_or(0);
    Ok(BroadcastRow {
        recipients,
        rate_per_second: MAX_RATE,
        status: view["status"].as_str().unwrap_or("unknown").to_string(),
        audience_size: number("audience_size"),
        audience_pages: number("audience_pages"),
        messages,
        seconds,
        messages_per_second: super::per_second(messages, seconds),
        seconds_until_settled,
        events: events_by_type.values().sum(),
        events_by_type,
        appends,
        item_bytes_by_type,
        writes: writes(side)?.since(before_writes),
        routed,
        dead_letters: runtime.bus.dead_letters().count().await?.saturating_sub(before_dead),
    })
}
