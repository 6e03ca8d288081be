//! `crm-local bench`: API latency at several concurrency levels and
//! end-to-end ingest against an in-process `serve` on 127.0.0.1, replay of
//! every projection from a large store, in-memory fold throughput of each
//! projection, a broadcast's end-to-end throughput into the mail sink, peak
//! memory, and the cost model (`docs/cost.md`). Beside each pipeline figure
//! its limit, measured in the same run (issue 22 item 3, decision 0091):
//! the command rate alone (bus paused), the raw batched append, the fold of
//! all projections together on one core and on two, and with `--peer` the
//! Python `eventsourcing` peer. Figures are printed, never asserted.

pub mod broadcast;
pub mod cost;
pub mod fold;
mod http;
pub mod pages;
pub mod peer;
pub mod workload;

use crate::runtime::bus::BUILT_IN_TEMPLATE;
use crate::runtime::{ClockChoice, LocalRuntime, RuntimeError, RuntimeOptions};
use crm_core::ports::StoreError;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{Ids, RouteGroup, Workload};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{0}")]
    Io(String),
    #[error("API call {method} {path} failed: {message}")]
    Api {
        method: String,
        path: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

fn io(context: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> BenchError {
    move |e| BenchError::Io(format!("{context}: {e}"))
}

/// What to run, and how big.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub seed: u64,
    /// Customers run through the API at each concurrency level.
    pub customers: u64,
    /// Concurrency levels (client connections) of the API phase.
    pub concurrency: Vec<usize>,
    /// Events in the replay store (at least; whole customers).
    pub events: u64,
    /// Events folded in memory per projection.
    pub fold_events: u64,
    /// Recipients of the broadcast phase (customers in a manual segment).
    pub broadcast_recipients: u64,
    /// Show progress bars.
    pub progress: bool,
    /// The peer's section (`--peer`): `None` to leave it out.
    pub peer: Option<peer::PeerOptions>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            seed: 42,
            customers: 200,
            concurrency: vec![1, 4, 16, 64],
            events: 100_000,
            fold_events: 200_000,
            broadcast_recipients: 2_000,
            progress: true,
            peer: None,
        }
    }
}

/// One level's API calls against a runtime with its bus running (as
/// `serve` runs it): the commands' latency (`requests`, `p50_ms`, `p99_ms`,
/// `max_ms` and `requests_per_second` are the commands', as before reads
/// and ingestion calls joined the workload), every route group's, and
/// end-to-end ingest.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyRow {
    pub concurrency: usize,
    pub customers: u64,
    /// Commands.
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Commands over `api_seconds`.
    pub requests_per_second: f64,
    /// From the first call to the last answer (every route group's calls).
    pub api_seconds: f64,
    /// Commands, reads and ingestion calls, each apart.
    pub route_groups: Vec<RouteGroupRow>,
    /// Events stored while the level ran (the API's and every consumer's).
    pub events_stored: u64,
    /// From the first call until every bus target had caught up.
    pub seconds_until_settled: f64,
    /// `events_stored / seconds_until_settled`: end-to-end ingest.
    pub ingest_events_per_second: f64,
    /// `customers / seconds_until_settled`: end-to-end ingest in customers.
    pub ingest_customers_per_second: f64,
    /// The event store's group commits from the first call until settled
    /// (the API's and every consumer's appends; decision 0090).
    pub group_commits: GroupCommitRow,
    /// Times a connection found the file's write lock taken by another and
    /// waited (`adapters::db::lock_waits`; decision 0095).
    pub lock_waits: u64,
    /// Share of the wall time the SQLite connections were busy.
    pub sqlite_busy_share: f64,
    pub messages_sent: u64,
    pub timers_set: u64,
    /// What the level's appends would cost the DynamoDB event store.
    pub appends: AppendCost,
}

/// One route group's calls in a level ([`RouteGroup`]).
#[derive(Debug, Clone, Serialize)]
pub struct RouteGroupRow {
    /// `commands`, `reads` or `ingestion`.
    pub group: String,
    pub requests: u64,
    /// Answered with the status the call also accepts besides 2xx (the
    /// customer 360's 503 while the projector catches up); in `requests`.
    pub also_accepted: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The SQLite event store's group commits in a span (decision 0090).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GroupCommitRow {
    pub groups: u64,
    pub appends: u64,
    pub appends_per_group: f64,
}

/// One level's calls against a runtime whose bus is never spawned: the
/// command rate alone, consumers paused (issue 22 item 3).
#[derive(Debug, Clone, Serialize)]
pub struct CommandRateRow {
    pub concurrency: usize,
    pub customers: u64,
    /// Every route group's calls.
    pub requests: u64,
    /// From the first call to the last answer.
    pub seconds: f64,
    pub requests_per_second: f64,
    /// Events the calls appended (no consumer appends anything).
    pub events_appended: u64,
    pub events_per_second: f64,
    pub customers_per_second: f64,
    pub route_groups: Vec<RouteGroupRow>,
    pub group_commits: GroupCommitRow,
    /// Times a connection found the file's write lock taken by another and
    /// waited (`adapters::db::lock_waits`; decision 0095).
    pub lock_waits: u64,
}

/// Each pipeline figure as a share of its limit, measured in the same run
/// (issue 22 item 3, decision 0091).
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    /// The raw batched append of the workload's events (encrypted) into a
    /// fresh store: the replay phase's store generation.
    pub raw_append_events_per_second: f64,
    /// One row per concurrency level.
    pub levels: Vec<LevelLimits>,
    /// The replay's every-projection events/s ÷ the fold of all
    /// projections together on two cores.
    pub replay_over_fold_two_cores: f64,
    /// The replay's read of every stored event (as stored, pages of 1 000)
    /// ÷ the peer's read; with `--peer` only.
    pub replay_read_over_peer_read: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LevelLimits {
    pub concurrency: usize,
    /// Customers/s until settled (bus running) ÷ customers/s of the API
    /// calls alone (bus paused): how near the consumers keep up.
    pub ingest_over_command_rate: f64,
    /// Ingest events/s ÷ the raw batched append's events/s.
    pub ingest_over_raw_append: f64,
    /// Ingest events/s ÷ the peer's appended events/s; with `--peer` only.
    pub ingest_over_peer_append: Option<f64>,
}

/// `a / b`, 0 when `b` is not positive (a limit that was not measured).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 && a.is_finite() {
        a / b
    } else {
        0.0
    }
}

/// The limits' ratios of a run's figures.
pub fn limits(
    latency: &[LatencyRow],
    command_rate: &[CommandRateRow],
    replay: &ReplayReport,
    fold_all: &fold::FoldAll,
    peer: Option<&peer::PeerReport>,
) -> Limits {
    let levels = latency
        .iter()
        .map(|row| {
            let paused = command_rate.iter().find(|c| c.concurrency == row.concurrency);
            LevelLimits {
                concurrency: row.concurrency,
                ingest_over_command_rate: ratio(
                    row.ingest_customers_per_second,
                    paused.map_or(0.0, |c| c.customers_per_second),
                ),
                ingest_over_raw_append: ratio(row.ingest_events_per_second, replay.generate_events_per_second),
                ingest_over_peer_append: peer.map(|p| ratio(row.ingest_events_per_second, p.events_per_second)),
            }
        })
        .collect();
    Limits {
        raw_append_events_per_second: replay.generate_events_per_second,
        levels,
        replay_over_fold_two_cores: ratio(replay.events_per_second, fold_all.two_cores_events_per_second),
        replay_read_over_peer_read: peer.map(|p| ratio(replay.read_events_per_second, p.read_events_per_second)),
    }
}

/// The appends of a run as the DynamoDB event store writes them (decision
/// 0036), reconstructed from the SQLite store: consecutive events of one
/// stream recorded at the same instant by one command are one append;
/// units by `crm_core::consumer::capacity::append_units` from the items'
/// sizes (the DynamoDB item's attribute names and values).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct AppendCost {
    pub appends: u64,
    pub events: u64,
    /// Appends after a version (one read of that event first).
    pub version_reads: u64,
    pub transactions: u64,
    pub write_units: f64,
    pub read_units: f64,
    /// Reservations claimed (each joins the first append of the stream that
    /// owns it) and receipts recorded (each counted at the most it can add
    /// to an append: +3 units, a single put becoming a transaction of two).
    pub reservations_and_receipts: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayTarget {
    pub target: String,
    pub consumers: Vec<String>,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub customers: u64,
    pub events: u64,
    pub generate_seconds: f64,
    pub generate_events_per_second: f64,
    pub targets: Vec<ReplayTarget>,
    /// Each projection rebuilt alone (`crm-local replay --consumer`): all
    /// stored events, page by page, no bus.
    pub projections: Vec<ReplayTarget>,
    /// Every target's events over the summed time.
    pub events_per_second: f64,
    /// Every stored event read back as stored (no decryption), pages of
    /// 1 000: the read the peer's figure is beside.
    pub read_seconds: f64,
    pub read_events_per_second: f64,
    pub sqlite_busy_share: f64,
    pub dead_letters: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub seed: u64,
    pub latency: Vec<LatencyRow>,
    /// The same levels with the bus paused: the command rate alone.
    pub command_rate: Vec<CommandRateRow>,
    pub replay: ReplayReport,
    pub fold: Vec<fold::FoldRow>,
    /// Every projection folded together, on one core and on two.
    pub fold_all: fold::FoldAll,
    /// Each pipeline figure as a share of its limit.
    pub limits: Limits,
    /// The peer's figures (`--peer`).
    pub peer: Option<peer::PeerReport>,
    /// Why the peer asked for did not run (the rest of the report stands).
    pub peer_error: Option<String>,
    pub workload: fold::WorkloadStats,
    /// DynamoDB units of the projector and consent groups taking pages.
    pub pages: Vec<pages::PageCostRow>,
    /// Messages each consumer queue receives per customer event.
    pub queues: Vec<pages::QueueLoad>,
    /// One broadcast to `broadcast_recipients` customers, end to end.
    pub broadcast: broadcast::BroadcastRow,
    pub peak_memory_kib: u64,
    /// Each phase's own peak (VmHWM, reset as the phase starts where the
    /// kernel allows, [`reset_peak_memory`]), in KiB, in the order they ran:
    /// the resident memory the phase reached, including what earlier phases
    /// left resident. Without the reset, the peak so far after each phase.
    pub phase_peaks: Vec<(String, u64)>,
    /// Whether `phase_peaks` are each phase's own (the reset worked).
    pub phase_peaks_own: bool,
}

/// Resets this process's VmHWM to its resident memory now (`5` into
/// `/proc/self/clear_refs`, Linux 4.0 and later); false where it cannot.
pub fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// VmHWM of this process, in KiB (0 where /proc is not there).
pub fn peak_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn per_second(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn progress_bar(show: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>22} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

/// A read-only side connection to the runtime's database (WAL: readers do not block).
fn side_connection(db: &Path) -> Result<rusqlite::Connection, BenchError> {
    let conn = rusqlite::Connection::open(db).map_err(|e| BenchError::Other(format!("{}: {e}", db.display())))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| BenchError::Other(e.to_string()))?;
    Ok(conn)
}

fn count(conn: &rusqlite::Connection, sql: &str) -> Result<u64, BenchError> {
    conn.query_row(sql, [], |r| r.get::<_, i64>(0))
        .map(|n| n.max(0) as u64)
        .map_err(|e| BenchError::Other(format!("{sql}: {e}")))
}

/// An event's item as crm_aws::dynamodb::items writes it, in bytes: its
/// attributes' names and values (SQL over the `events` table).
pub(crate) const ITEM_BYTES: &str = "2 + length(stream_id) + 2 + length(version) + 4 + 5 + 8 + length(event_id) \
     + 4 + length(type) + 14 + length(schema_version) + COALESCE(11 + length(customer_id), 0) \
     + 11 + length(occurred_at) + 11 + length(recorded_at) + COALESCE(12 + length(causation_id), 0) \
     + 14 + length(correlation_id) + 5 + length(actor) + 4 + length(data)";

/// The DynamoDB event store's cost of the events stored after `after`
/// (positions), and of the reservations and receipts added meanwhile.
fn append_cost(conn: &rusqlite::Connection, after: u64, receipts: u64) -> Result<AppendCost, BenchError> {
    use crm_core::consumer::capacity::append_units;
    // The item as crm_aws::dynamodb::items writes it: names and values.
    let sql = format!(
        "SELECT stream_id, version, recorded_at, correlation_id, {ITEM_BYTES} \
         FROM events WHERE position > ?1 ORDER BY position"
    );
    let mut statement = conn
        .prepare(&sql)
        .map_err(|e| BenchError::Other(format!("{sql}: {e}")))?;
    let rows = statement
        .query_map([after as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .map_err(|e| BenchError::Other(format!("{sql}: {e}")))?;
    // Reservations are owned by the stream whose first append claimed them
    // (an email by its customer's registration): they join that append.
    let mut owned: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    {
        let sql = "SELECT owner FROM reservations";
        let mut owners = conn
            .prepare(sql)
            .map_err(|e| BenchError::Other(format!("{sql}: {e}")))?;
        let found = owners
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| BenchError::Other(format!("{sql}: {e}")))?;
        for owner in found {
            *owned
                .entry(owner.map_err(|e| BenchError::Other(e.to_string()))?)
                .or_default() += 1;
        }
    }
    // A reservation item: pk (`email#<sha256 hex>`), sk 0, kind, owner.
    let reservation_bytes = |owner: &str| 2 + 70 + 2 + 1 + 4 + "reservation".len() + 5 + owner.len();
    let mut cost = AppendCost::default();
    let (mut write_units, mut read_halves) = (0u64, 0u64);
    // The append being gathered: its stream, last version, instant, correlation, item sizes.
    let mut open: Option<(String, i64, String, String, Vec<usize>, i64)> = None;
    let mut close = |append: (String, i64, String, String, Vec<usize>, i64), cost: &mut AppendCost| {
        let (stream, _, _, _, mut sizes, first) = append;
        let check = (first > 1).then(|| sizes[0]);
        let events = sizes.len() as u64;
        if first == 1 {
            let claimed = owned.get(&stream).copied().unwrap_or(0);
            sizes.extend(std::iter::repeat_n(reservation_bytes(&stream), claimed));
            cost.reservations_and_receipts += claimed as u64;
        }
        let (w, r, tx) = append_units(&sizes, check);
        write_units += w;
        read_halves += r;
        cost.appends += 1;
        cost.events += events;
        cost.version_reads += u64::from(check.is_some());
        cost.transactions += u64::from(tx);
    };
    for row in rows {
        let (stream, version, recorded, correlation, bytes) = row.map_err(|e| BenchError::Other(e.to_string()))?;
        let bytes = bytes.max(0) as usize;
        match open.as_mut() {
            Some((s, v, r, c, sizes, _))
                if *s == stream && *v + 1 == version && *r == recorded && *c == correlation =>
            {
                *v = version;
                sizes.push(bytes);
            }
            _ => {
                if let Some(done) = open.take() {
                    close(done, &mut cost);
                }
                open = Some((stream, version, recorded, correlation, vec![bytes], version));
            }
        }
    }
    if let Some(done) = open.take() {
        close(done, &mut cost);
    }
    cost.reservations_and_receipts += receipts;
    cost.write_units = (write_units + 3 * receipts) as f64;
    cost.read_units = read_halves as f64 / 2.0;
    Ok(cost)
}

/// Whether every bus target's cursor reached the head of the store.
fn caught_up(conn: &rusqlite::Connection, targets: usize) -> Result<bool, BenchError> {
    let head = count(conn, "SELECT COALESCE(MAX(position), 0) FROM events")?;
    let (n, min): (i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COALESCE(MIN(position), 0) FROM bus_cursors",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| BenchError::Other(e.to_string()))?;
    Ok(n as usize >= targets && min.max(0) as u64 >= head)
}

async fn wait_caught_up(db: &Path, targets: usize) -> Result<(), BenchError> {
    let conn = side_connection(db)?;
    while !caught_up(&conn, targets)? {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The write key of the ingestion source the bench's runtimes take
/// (`bench`, a server source: it may identify customers).
const BENCH_WRITE_KEY: &str = "bench-write-key-0123456789";

/// A runtime served on a free loopback port, its database in a temporary
/// directory, the ingestion API open to [`BENCH_WRITE_KEY`].
struct Served {
    _dir: tempfile::TempDir,
    db: PathBuf,
    addr: std::net::SocketAddr,
    runtime: LocalRuntime,
    server: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

const BENCH_TOKEN: &str = "bench-token";

async fn serve() -> Result<Served, BenchError> {
    let dir = tempfile::tempdir().map_err(io("temporary directory"))?;
    let db = crate::adapters::data_dir::database_path(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io("binding 127.0.0.1:0"))?;
    let addr = listener.local_addr().map_err(io("local address"))?;
    let mut runtime = LocalRuntime::open_with(
        &db,
        BUILT_IN_TEMPLATE,
        RuntimeOptions {
            clock: ClockChoice::System,
            public_base_url: format!("http://{addr}"),
        },
    )?;
    // One server source of the bench's own, whatever INGEST_WRITE_KEYS says.
    runtime.ingest_sources = crm_api::IngestSources::new(vec![(
        crm_core::ingest::Source::server("bench"),
        BENCH_WRITE_KEY.to_string(),
    )]);
    let server = tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        listener,
        runtime.app(BENCH_TOKEN.to_string()),
    )));
    Ok(Served {
        _dir: dir,
        db,
        addr,
        runtime,
        server,
    })
}

/// What one level's calls measured, by route group ([`RouteGroup::index`]).
struct LevelCalls {
    latencies: [Vec<Duration>; 3],
    /// Calls answered with the status they also accept (a projection's 503).
    also_accepted: [u64; 3],
    /// From the first call to the last answer.
    seconds: f64,
}

/// Runs customers `first..end`'s calls over `level` keep-alive connections.
async fn run_level(
    addr: std::net::SocketAddr,
    workload: &Arc<Workload>,
    first: u64,
    end: u64,
    level: usize,
) -> Result<LevelCalls, BenchError> {
    let next = Arc::new(AtomicU64::new(first));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..level.max(1) {
        let (next, workload) = (next.clone(), workload.clone());
        workers.push(tokio::spawn(async move {
            let mut client = http::Client::connect(addr, BENCH_TOKEN).await?;
            let write_key = http::basic(BENCH_WRITE_KEY);
            let mut latencies: [Vec<Duration>; 3] = Default::default();
            let mut also_accepted = [0u64; 3];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, BenchError>((latencies, also_accepted));
                }
                let mut ids = Ids::default();
                for call in workload.plan(i).calls() {
                    let path = ids.fill(&call.path);
                    let body = call.body.as_ref().map(|b| ids.fill(&b.to_string()));
                    let t = Instant::now();
                    let (status, answer) = match call.group {
                        RouteGroup::Ingestion => client.call_with(call.method, &path, body, &write_key).await?,
                        _ => client.call(call.method, &path, body).await?,
                    };
                    latencies[call.group.index()].push(t.elapsed());
                    if !call.answered(status) {
                        return Err(BenchError::Api {
                            method: call.method.into(),
                            path,
                            message: format!("{status}: {answer}"),
                        });
                    }
                    if !(200..300).contains(&status) {
                        also_accepted[call.group.index()] += 1;
                        continue;
                    }
                    if let Some(capture) = call.capture {
                        let id = serde_json::from_str::<serde_json::Value>(&answer)
                            .ok()
                            .and_then(|v| v["id"].as_str().map(str::to_string))
                            .ok_or_else(|| BenchError::Api {
                                method: call.method.into(),
                                path: path.clone(),
                                message: format!("no id in {answer}"),
                            })?;
                        ids.take(capture, id);
                    }
                }
            }
        }));
    }
    let mut calls = LevelCalls {
        latencies: Default::default(),
        also_accepted: [0; 3],
        seconds: 0.0,
    };
    for worker in workers {
        let (latencies, accepted) = worker
            .await
            .map_err(|e| BenchError::Other(format!("API worker: {e}")))??;
        for (g, l) in latencies.into_iter().enumerate() {
            calls.latencies[g].extend(l);
            calls.also_accepted[g] += accepted[g];
        }
    }
    calls.seconds = started.elapsed().as_secs_f64();
    for l in &mut calls.latencies {
        l.sort();
    }
    Ok(calls)
}

/// The route groups' rows of a level, in [`RouteGroup::ALL`]'s order.
fn route_groups(calls: &LevelCalls) -> Vec<RouteGroupRow> {
    RouteGroup::ALL
        .iter()
        .map(|&g| {
            let l = &calls.latencies[g.index()];
            RouteGroupRow {
                group: g.as_str().to_string(),
                requests: l.len() as u64,
                also_accepted: calls.also_accepted[g.index()],
                p50_ms: percentile(l, 0.50),
                p99_ms: percentile(l, 0.99),
                max_ms: l.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            }
        })
        .collect()
}

/// The group commits between two readings of the store's counters.
fn group_commits_between(
    before: crate::adapters::store::GroupCommits,
    after: crate::adapters::store::GroupCommits,
) -> GroupCommitRow {
    let groups = after.groups.saturating_sub(before.groups);
    let appends = after.appends.saturating_sub(before.appends);
    GroupCommitRow {
        groups,
        appends,
        appends_per_group: if groups > 0 {
            appends as f64 / groups as f64
        } else {
            0.0
        },
    }
}

/// The API phase: one runtime served on a free loopback port, the bus
/// running as under `serve`; each level runs `customers` new customers'
/// calls over `level` keep-alive connections, then waits for the bus.
async fn api_phase(options: &BenchOptions) -> Result<Vec<LatencyRow>, BenchError> {
    let served = serve().await?;
    let (db, runtime) = (&served.db, &served.runtime);
    let bus = runtime.spawn_bus();
    let targets = runtime.bus.targets().len();
    let side = side_connection(db)?;
    let workload = Arc::new(Workload::new(options.seed));
    let mut rows = Vec::new();
    let mut first = 0u64;
    for &level in &options.concurrency {
        let level = level.max(1);
        let before_events = count(&side, "SELECT COALESCE(MAX(position), 0) FROM events")?;
        let before_receipts = count(&side, "SELECT COUNT(*) FROM receipts")?;
        let before_mail = count(&side, "SELECT COUNT(*) FROM mail_sink")?;
        let before_timers = count(&side, "SELECT COUNT(*) FROM timers")?;
        let busy_before = crate::adapters::db::busy_nanos();
        let waits_before = crate::adapters::db::lock_waits();
        let commits_before = runtime.stored_events.group_commits();
        let end = first + options.customers;
        let started = Instant::now();
        let calls = run_level(served.addr, &workload, first, end, level).await?;
        wait_caught_up(db, targets).await?;
        let settled = started.elapsed().as_secs_f64();
        let commits = group_commits_between(commits_before, runtime.stored_events.group_commits());
        let busy = (crate::adapters::db::busy_nanos() - busy_before) as f64 / 1e9;
        let commands = &calls.latencies[RouteGroup::Commands.index()];
        let events = count(&side, "SELECT COALESCE(MAX(position), 0) FROM events")? - before_events;
        rows.push(LatencyRow {
            concurrency: level,
            customers: options.customers,
            requests: commands.len() as u64,
            errors: 0,
            p50_ms: percentile(commands, 0.50),
            p99_ms: percentile(commands, 0.99),
            max_ms: commands.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            requests_per_second: per_second(commands.len() as u64, calls.seconds),
            api_seconds: calls.seconds,
            route_groups: route_groups(&calls),
            events_stored: events,
            seconds_until_settled: settled,
            ingest_events_per_second: per_second(events, settled),
            ingest_customers_per_second: per_second(options.customers, settled),
            sqlite_busy_share: if settled > 0.0 { busy / settled } else { 0.0 },
            messages_sent: count(&side, "SELECT COUNT(*) FROM mail_sink")? - before_mail,
            timers_set: count(&side, "SELECT COUNT(*) FROM timers")?.saturating_sub(before_timers),
            group_commits: commits,
            lock_waits: crate::adapters::db::lock_waits() - waits_before,
            appends: append_cost(
                &side,
                before_events,
                count(&side, "SELECT COUNT(*) FROM receipts")?.saturating_sub(before_receipts),
            )?,
        });
        first = end;
    }
    bus.abort();
    served.server.abort();
    Ok(rows)
}

/// The command rate alone (issue 22 item 3): the same levels and customers
/// as [`api_phase`], against a fresh runtime whose bus is never spawned
/// (no consumer runs: every call of the workload is a command, a read of
/// the event store or an aggregate, or an ingestion call, none of which
/// waits for a projection; the 360 read answers its accepted 503).
async fn command_rate_phase(options: &BenchOptions) -> Result<Vec<CommandRateRow>, BenchError> {
    let served = serve().await?;
    let runtime = &served.runtime;
    let side = side_connection(&served.db)?;
    let workload = Arc::new(Workload::new(options.seed));
    let mut rows = Vec::new();
    let mut first = 0u64;
    for &level in &options.concurrency {
        let level = level.max(1);
        let before_events = count(&side, "SELECT COALESCE(MAX(position), 0) FROM events")?;
        let commits_before = runtime.stored_events.group_commits();
        let end = first + options.customers;
        let waits_before = crate::adapters::db::lock_waits();
        let calls = run_level(served.addr, &workload, first, end, level).await?;
        let lock_waits = crate::adapters::db::lock_waits() - waits_before;
        let commits = group_commits_between(commits_before, runtime.stored_events.group_commits());
        let events = count(&side, "SELECT COALESCE(MAX(position), 0) FROM events")? - before_events;
        let requests: u64 = calls.latencies.iter().map(|l| l.len() as u64).sum();
        rows.push(CommandRateRow {
            concurrency: level,
            customers: options.customers,
            requests,
            seconds: calls.seconds,
            requests_per_second: per_second(requests, calls.seconds),
            events_appended: events,
            events_per_second: per_second(events, calls.seconds),
            customers_per_second: per_second(options.customers, calls.seconds),
            route_groups: route_groups(&calls),
            group_commits: commits,
            lock_waits,
        });
        first = end;
    }
    served.server.abort();
    Ok(rows)
}

/// Writes whole customers' events straight into the SQLite store, in large
/// transactions, personal fields encrypted under each customer's data key
/// as the API would store them, until at least `target` events.
async fn generate_store(
    runtime: &LocalRuntime,
    db: &Path,
    workload: &Workload,
    target: u64,
    progress: bool,
) -> Result<(u64, u64), BenchError> {
    use crm_core::privacy::{encrypt_paths, personal_data_paths};
    let bar = progress_bar(progress, target, "writing the store");
    let mut conn = rusqlite::Connection::open(db).map_err(|e| BenchError::Other(e.to_string()))?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|e| BenchError::Other(e.to_string()))?;
    let sql = |e: rusqlite::Error| BenchError::Other(format!("writing the store: {e}"));
    let (mut written, mut customer) = (0u64, 0u64);
    while written < target {
        let mut batch = Vec::new();
        while written + (batch.len() as u64) < target && batch.len() < 50_000 {
            let mut events = workload
                .events(customer)
                .map_err(|e| BenchError::Other(e.to_string()))?;
            let id = workload.plan(customer).customer_id;
            let key = runtime
                .keys
                .data_key(&id)
                .await
                .map_err(|e| BenchError::Other(e.to_string()))?;
            for e in &mut events {
                encrypt_paths(&mut e.data, &key, &id, personal_data_paths(&e.event_type))
                    .map_err(|e| BenchError::Other(e.to_string()))?;
            }
            batch.extend(events);
            customer += 1;
        }
        let tx = conn.transaction().map_err(sql)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (event_id, stream_id, version, type, schema_version, customer_id, \
                     occurred_at, recorded_at, causation_id, correlation_id, actor, data) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(sql)?;
            let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            for e in &batch {
                insert
                    .execute(rusqlite::params![
                        e.event_id.to_string(),
                        e.stream_id,
                        e.version as i64,
                        e.event_type,
                        e.schema_version,
                        e.customer_id,
                        time(&e.occurred_at),
                        time(&e.recorded_at),
                        e.causation_id.map(|c| c.to_string()),
                        e.correlation_id.to_string(),
                        e.actor,
                        e.data.to_string(),
                    ])
                    .map_err(sql)?;
            }
        }
        tx.commit().map_err(sql)?;
        written += batch.len() as u64;
        bar.set_position(written.min(target));
    }
    bar.finish_and_clear();
    Ok((written, customer))
}

/// The replay phase: a store of `events` events, then every projection
/// (the bus targets `projector` and `consent`) rebuilt from it.
async fn replay_phase(options: &BenchOptions) -> Result<ReplayReport, BenchError> {
    let dir = tempfile::tempdir().map_err(io("temporary directory"))?;
    let db = crate::adapters::data_dir::database_path(dir.path());
    let runtime = LocalRuntime::open(&db, BUILT_IN_TEMPLATE)?;
    let workload = Workload::new(options.seed);
    let started = Instant::now();
    let (events, customers) = generate_store(&runtime, &db, &workload, options.events, options.progress).await?;
    let generate_seconds = started.elapsed().as_secs_f64();
    // The journeys and the channel are not projections: they start at the head.
    let head = runtime.stored_events.head_position().await?;
    for target in runtime.bus.targets() {
        runtime.bus.rewind(&target.rule.target, head).await?;
    }
    let busy_before = crate::adapters::db::busy_nanos();
    let replay_started = Instant::now();
    // Both targets at once: each chunk read and decrypted once, every
    // projection on one lane per core (decision 0094).
    let names = ["projector", "consent"];
    let bar = progress_bar(options.progress, head.max(0) as u64, "replaying projector + consent");
    let side = side_connection(&db)?;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (bar, done) = (bar.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(p) = side.query_row("SELECT position FROM bus_cursors WHERE target = 'projector'", [], |r| {
                    r.get::<_, i64>(0)
                }) {
                    bar.set_position(p.max(0) as u64);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let t = Instant::now();
    let result = runtime.rebuild_targets(&names).await;
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    bar.finish_and_clear();
    let consumers = result?;
    let seconds = t.elapsed().as_secs_f64();
    let replayed = runtime.stored_events.head_position().await?.max(0) as u64;
    let targets = vec![ReplayTarget {
        target: names.join(" + "),
        consumers: consumers.iter().map(|c| c.to_string()).collect(),
        events: replayed,
        seconds,
        events_per_second: per_second(replayed, seconds),
    }];
    let total_seconds = replay_started.elapsed().as_secs_f64();
    let busy = (crate::adapters::db::busy_nanos() - busy_before) as f64 / 1e9;
    let mut projections = Vec::new();
    for group in runtime.consumer_groups() {
        for name in group.rebuildable_names() {
            let t = Instant::now();
            let report = runtime.rebuild_consumer(name, &mut |_| {}).await?;
            let seconds = t.elapsed().as_secs_f64();
            projections.push(ReplayTarget {
                target: name.into(),
                consumers: vec![name.into()],
                events: report.events,
                seconds,
                events_per_second: per_second(report.events, seconds),
            });
        }
    }
    let replayed: u64 = targets.iter().map(|t| t.events).sum();
    let dead_letters = runtime.bus.dead_letters().list().await?.len() as u64;
    // Every stored event read back as stored, as the peer reads its own.
    let (read, read_seconds) = {
        use crm_core::ports::EventStore;
        let started = Instant::now();
        let (mut read, mut after) = (0u64, None::<String>);
        loop {
            let page = runtime.stored_events.read_all(after.as_deref(), 1_000).await?;
            read += page.events.len() as u64;
            match page.next {
                Some(next) if !page.events.is_empty() => after = Some(next),
                _ => break,
            }
        }
        (read, started.elapsed().as_secs_f64())
    };
    Ok(ReplayReport {
        customers,
        events,
        generate_seconds,
        generate_events_per_second: per_second(events, generate_seconds),
        events_per_second: per_second(replayed, total_seconds),
        read_seconds,
        read_events_per_second: per_second(read, read_seconds),
        targets,
        projections,
        sqlite_busy_share: if total_seconds > 0.0 { busy / total_seconds } else { 0.0 },
        dead_letters,
    })
}

/// Runs every phase. With a peer, checks first that it can run (an error
/// before any phase); the peer runs last, alone, and its failure then is
/// the report's `peer_error`.
pub async fn run(options: &BenchOptions) -> Result<BenchReport, BenchError> {
    if let Some(peer) = &options.peer {
        peer::check(peer)?;
    }
    let mut phase_peaks = Vec::new();
    let mut phase_peaks_own = reset_peak_memory();
    let mut peak = |phase: &str| {
        phase_peaks.push((phase.to_string(), peak_memory_kib()));
        phase_peaks_own &= reset_peak_memory();
    };
    let (fold, workload, fold_all) = fold::fold_phase(options).await?;
    peak("fold");
    let (pages, queues) = pages::page_phase(options).await?;
    peak("pages");
    let latency = api_phase(options).await?;
    peak("api");
    let command_rate = command_rate_phase(options).await?;
    peak("command rate");
    let broadcast = broadcast::broadcast_phase(options).await?;
    peak("broadcast");
    let replay = replay_phase(options).await?;
    peak("replay");
    let (peer, peer_error) = match &options.peer {
        Some(options) => match peer::run(options).await {
            Ok(report) => (Some(report), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };
    let limits = limits(&latency, &command_rate, &replay, &fold_all, peer.as_ref());
    let peak_memory_kib = phase_peaks
        .iter()
        .map(|(_, kib)| *kib)
        .max()
        .unwrap_or(0)
        .max(peak_memory_kib());
    Ok(BenchReport {
        phase_peaks,
        phase_peaks_own,
        seed: options.seed,
        latency,
        command_rate,
        replay,
        fold,
        fold_all,
        limits,
        peer,
        peer_error,
        workload,
        pages,
        queues,
        broadcast,
        peak_memory_kib,
    })
}

/// The report as a table.
pub fn table(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "API command latency and end-to-end ingest (seed {})", report.seed);
    let _ = writeln!(
        out,
        "{:>5} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10} {:>11} {:>8} {:>6}",
        "conc",
        "requests",
        "p50 ms",
        "p99 ms",
        "max ms",
        "req/s",
        "events",
        "settled s",
        "ingest ev/s",
        "sqlite%",
        "mails"
    );
    for r in &report.latency {
        let _ = writeln!(
            out,
            "{:>5} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>9.0} {:>8} {:>10.2} {:>11.0} {:>7.0}% {:>6}",
            r.concurrency,
            r.requests,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.requests_per_second,
            r.events_stored,
            r.seconds_until_settled,
            r.ingest_events_per_second,
            r.sqlite_busy_share * 100.0,
            r.messages_sent
        );
    }
    out.push_str(&route_group_table(report));
    out.push_str(&command_rate_table(report));
    let rp = &report.replay;
    let _ = writeln!(
        out,
        "\nReplay: {} events of {} customers written in {:.1} s ({:.0} events/s)",
        rp.events, rp.customers, rp.generate_seconds, rp.generate_events_per_second
    );
    for t in &rp.targets {
        let _ = writeln!(
            out,
            "  rebuild {:<10} {:>9} events {:>8.1} s {:>9.0} events/s  ({})",
            t.target,
            t.events,
            t.seconds,
            t.events_per_second,
            t.consumers.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "  every projection: {:.0} events/s; SQLite busy {:.0}% of the time; dead letters {}",
        rp.events_per_second,
        rp.sqlite_busy_share * 100.0,
        rp.dead_letters
    );
    for t in &rp.projections {
        let _ = writeln!(
            out,
            "  replay {:<18} {:>9} events {:>8.1} s {:>9.0} events/s",
            t.target, t.events, t.seconds, t.events_per_second
        );
    }
    let _ = writeln!(
        out,
        "  read back as stored (pages of 1 000): {:.2} s, {:.0} events/s",
        rp.read_seconds, rp.read_events_per_second
    );
    let _ = writeln!(out, "\nIn-memory fold per projection");
    let _ = writeln!(
        out,
        "  {:<20} {:>9} {:>12} {:>8} {:>8} {:>9}",
        "projection", "events", "events/s", "puts/ev", "reads/ev", "bytes/put"
    );
    for f in &report.fold {
        let _ = writeln!(
            out,
            "  {:<20} {:>9} {:>12.0} {:>8.2} {:>8.2} {:>9.0}",
            f.projection, f.events, f.events_per_second, f.puts_per_event, f.reads_per_event, f.bytes_per_put
        );
    }
    let all = &report.fold_all;
    let _ = writeln!(
        out,
        "  all {} that keep read models together (those that decide left out), {} events: one core {:.0} events/s ({:.2} s); two cores {:.0} events/s ({:.2} s)",
        all.projections,
        all.events,
        all.one_core_events_per_second,
        all.one_core_seconds,
        all.two_cores_events_per_second,
        all.two_cores_seconds
    );
    for (i, group) in all.groups.iter().enumerate() {
        let _ = writeln!(
            out,
            "    core {} ({:.2} s): {}",
            i + 1,
            all.group_seconds.get(i).copied().unwrap_or(0.0),
            group.join(", ")
        );
    }
    out.push_str(&limits_table(report));
    let _ = writeln!(
        out,
        "\nConsumers on DynamoDB, counted per request (page phase)\n  {:<10} {:>5} {:>8} {:>7} {:>9} {:>9} {:>8} {:>6}",
        "group", "page", "routed", "pages", "WRU/ev", "RRU/ev", "writes", "tx"
    );
    for r in &report.pages {
        let _ = writeln!(
            out,
            "  {:<10} {:>5} {:>8} {:>7} {:>9.2} {:>9.2} {:>8} {:>6}",
            r.group,
            r.page_size,
            r.routed,
            r.pages,
            r.write_units_per_event(),
            r.read_units_per_event(),
            r.read_models.write_requests,
            r.read_models.transactions
        );
    }
    out.push_str(&broadcast_table(&report.broadcast));
    let _ = writeln!(
        out,
        "\nPeak memory (VmHWM): {:.1} MiB",
        report.peak_memory_kib as f64 / 1024.0
    );
    let phases: Vec<String> = report
        .phase_peaks
        .iter()
        .map(|(phase, kib)| format!("{phase} {:.1}", *kib as f64 / 1024.0))
        .collect();
    let what = if report.phase_peaks_own {
        "each phase's own peak"
    } else {
        "the peak so far after each phase"
    };
    let _ = writeln!(out, "  {what} (MiB): {}", phases.join(", "));
    out
}

/// Each level's route groups and group commits.
fn route_group_table(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nRoute groups (503: the customer 360 answered before it was projected, accepted)\n  {:>5} {:<10} {:>9} {:>8} {:>8} {:>8} {:>6}",
        "conc", "group", "requests", "p50 ms", "p99 ms", "max ms", "503"
    );
    for r in &report.latency {
        for g in &r.route_groups {
            let _ = writeln!(
                out,
                "  {:>5} {:<10} {:>9} {:>8.2} {:>8.2} {:>8.2} {:>6}",
                r.concurrency, g.group, g.requests, g.p50_ms, g.p99_ms, g.max_ms, g.also_accepted
            );
        }
    }
    let _ = writeln!(
        out,
        "Group commits of the event store (decision 0090), from the first call until settled\n  {:>5} {:>8} {:>8} {:>13} {:>10}",
        "conc", "groups", "appends", "appends/group", "lock waits"
    );
    for r in &report.latency {
        let c = &r.group_commits;
        let _ = writeln!(
            out,
            "  {:>5} {:>8} {:>8} {:>13.2} {:>10}",
            r.concurrency, c.groups, c.appends, c.appends_per_group, r.lock_waits
        );
    }
    out
}

/// The command rate alone (the bus paused).
fn command_rate_table(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nCommand rate alone: the same calls against a fresh runtime, bus paused (no consumer runs)\n  {:>5} {:>9} {:>8} {:>9} {:>8} {:>9} {:>8} {:>8} {:>8} {:>13} {:>10}",
        "conc", "requests", "s", "req/s", "events", "events/s", "cust/s", "cmd p99", "groups", "appends/group", "lock waits"
    );
    for r in &report.command_rate {
        let p99 = r
            .route_groups
            .iter()
            .find(|g| g.group == RouteGroup::Commands.as_str())
            .map_or(0.0, |g| g.p99_ms);
        let _ = writeln!(
            out,
            "  {:>5} {:>9} {:>8.2} {:>9.0} {:>8} {:>9.0} {:>8.1} {:>8.2} {:>8} {:>13.2} {:>10}",
            r.concurrency,
            r.requests,
            r.seconds,
            r.requests_per_second,
            r.events_appended,
            r.events_per_second,
            r.customers_per_second,
            p99,
            r.group_commits.groups,
            r.group_commits.appends_per_group,
            r.lock_waits
        );
    }
    out
}

/// Each pipeline figure beside its limit, and the peer.
fn limits_table(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let l = &report.limits;
    let _ = writeln!(
        out,
        "\nLimits (decision 0091): each pipeline figure as a share of its limit, this run\n  \
         raw batched append of the workload's events (the replay store): {:.0} events/s",
        l.raw_append_events_per_second
    );
    let _ = writeln!(
        out,
        "  {:>5} {:>12} {:>12} {:>15} {:>11} {:>18} {:>19}",
        "conc", "ingest c/s", "command c/s", "ingest/command", "ingest ev/s", "ingest/raw append", "ingest/peer append"
    );
    for level in &l.levels {
        let ingest = report.latency.iter().find(|r| r.concurrency == level.concurrency);
        let command = report.command_rate.iter().find(|r| r.concurrency == level.concurrency);
        let peer = level
            .ingest_over_peer_append
            .map_or_else(|| "-".to_string(), |r| format!("{r:.3}"));
        let _ = writeln!(
            out,
            "  {:>5} {:>12.1} {:>12.1} {:>15.3} {:>11.0} {:>18.4} {:>19}",
            level.concurrency,
            ingest.map_or(0.0, |r| r.ingest_customers_per_second),
            command.map_or(0.0, |r| r.customers_per_second),
            level.ingest_over_command_rate,
            ingest.map_or(0.0, |r| r.ingest_events_per_second),
            level.ingest_over_raw_append,
            peer
        );
    }
    let _ = writeln!(
        out,
        "  replay (every projection) {:.0} events/s / fold of all projections on two cores {:.0} events/s = {:.3}",
        report.replay.events_per_second, report.fold_all.two_cores_events_per_second, l.replay_over_fold_two_cores
    );
    match (&report.peer, &report.peer_error) {
        (Some(p), _) => {
            let _ = writeln!(
                out,
                "  peer ({}): {} customers, {} events appended in {:.2} s, {:.0} events/s; read back {:.0} events/s",
                p.library, p.customers, p.events, p.command_seconds, p.events_per_second, p.read_events_per_second
            );
            let _ = writeln!(
                out,
                "  replay read {:.0} events/s / peer read = {:.3}",
                report.replay.read_events_per_second,
                l.replay_read_over_peer_read.unwrap_or(0.0)
            );
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "  peer: did not run: {e}");
        }
        (None, None) => {}
    }
    out
}

/// The broadcast phase's lines of the table.
fn broadcast_table(b: &broadcast::BroadcastRow) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nBroadcast: {} recipients at {}/s, send now ({}): {} messages in the mail sink in {:.2} s, \
         {:.0} messages/s from the POST to the last mail (settled {:.2} s)",
        b.recipients,
        b.rate_per_second,
        b.status,
        b.messages,
        b.seconds,
        b.messages_per_second,
        b.seconds_until_settled
    );
    let _ = writeln!(
        out,
        "  audience {} in {} pages; {} events appended ({:.2} per message); store writes {:.2} per message \
         ({} appends, {} transactions, {:.2} event-store WRU per message; {} documents, {} checkpoints)",
        b.audience_size,
        b.audience_pages,
        b.events,
        b.events_per_message(),
        b.store_writes_per_message(),
        b.appends.appends,
        b.appends.transactions,
        b.event_write_units_per_message(),
        b.writes.documents,
        b.writes.checkpoints
    );
    let types: Vec<String> = b.events_by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
    let _ = writeln!(out, "  events: {}", types.join(", "));
    let queues: Vec<String> = b.routed.iter().map(|(t, n)| format!("{t} {n}")).collect();
    let _ = writeln!(
        out,
        "  queue messages: {}; timers set {}, removed {}; dead letters {}",
        queues.join(", "),
        b.writes.timers_set,
        b.writes.timers_removed,
        b.dead_letters
    );
    out
}

/// `crm-local bench`: runs, prints the table, writes the JSON and the cost model if asked.
pub async fn command(
    options: BenchOptions,
    json: Option<PathBuf>,
    cost_file: Option<PathBuf>,
    template: Option<PathBuf>,
) -> Result<(), BenchError> {
    command_with_measured(options, json, cost_file, template, None).await
}

/// `crm-local bench --cost FILE --measured UNITS`: as `command`, with the
/// units `scripts/chaos.py --rate 0 --units-out UNITS` measured on the moto
/// pipeline used where the bench's own counting does not reach
/// (`CostModel::using`, decision 0038), and printed beside the model's lines
/// with the price they imply, by function, in the cost model's "Measured on
/// the moto pipeline" section.
/// The file is read before the bench runs, so a bad one fails at once.
pub async fn command_with_measured(
    options: BenchOptions,
    json: Option<PathBuf>,
    cost_file: Option<PathBuf>,
    template: Option<PathBuf>,
    measured: Option<PathBuf>,
) -> Result<(), BenchError> {
    let measured = match measured {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(io(path.display()))?;
            let units = cost::Measured::from_json(&text)
                .map_err(|e| BenchError::Other(format!("{}: not a chaos.py units file: {e}", path.display())))?;
            Some((path, units))
        }
        None => None,
    };
    let report = run(&options).await?;
    print!("{}", table(&report));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| BenchError::Other(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(io(path.display()))?;
        println!("JSON report: {}", path.display());
    }
    // The peer asked for did not run: everything else is printed and
    // written; the command still fails.
    let peer_failed = || match &report.peer_error {
        Some(e) => Err(BenchError::Other(format!("the peer did not run: {e}"))),
        None => Ok(()),
    };
    if cost_file.is_none() && measured.is_none() {
        return peer_failed();
    }
    let template =
        crate::runtime::bus::read_template(template.as_deref()).map_err(|e| BenchError::Other(e.to_string()))?;
    let model = cost::CostModel::from_report(&report, &template);
    let model = match &measured {
        Some((path, units)) => model.using(
            units,
            &report.queues,
            report.workload.customers as f64 / report.workload.events.max(1) as f64,
            &path.display().to_string(),
        ),
        None => model,
    };
    let mut text = model.markdown(&report);
    text.push_str(&model.broadcast_markdown(&report.broadcast));
    if let Some((units_path, units)) = &measured {
        let section = model.measured_markdown(units, &units_path.display().to_string());
        print!("{section}");
        text.push_str(&section);
    }
    if let Some(path) = cost_file {
        std::fs::write(&path, text).map_err(io(path.display()))?;
        println!("cost model: {}", path.display());
    }
    peer_failed()
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn level(concurrency: usize, settled: f64, events: u64) -> LatencyRow {
        LatencyRow {
            concurrency,
            customers: 200,
            requests: 2_600,
            errors: 0,
            p50_ms: 1.0,
            p99_ms: 2.0,
            max_ms: 3.0,
            requests_per_second: 1_000.0,
            api_seconds: 2.6,
            route_groups: Vec::new(),
            events_stored: events,
            seconds_until_settled: settled,
            ingest_events_per_second: per_second(events, settled),
            ingest_customers_per_second: per_second(200, settled),
            group_commits: GroupCommitRow::default(),
            lock_waits: 0,
            sqlite_busy_share: 0.5,
            messages_sent: 0,
            timers_set: 0,
            appends: AppendCost::default(),
        }
    }

    fn paused(concurrency: usize, seconds: f64) -> CommandRateRow {
        CommandRateRow {
            concurrency,
            customers: 200,
            requests: 3_400,
            seconds,
            requests_per_second: per_second(3_400, seconds),
            events_appended: 3_300,
            events_per_second: per_second(3_300, seconds),
            customers_per_second: per_second(200, seconds),
            route_groups: Vec::new(),
            group_commits: GroupCommitRow::default(),
            lock_waits: 0,
        }
    }

    #[test]
    fn each_ratio_is_the_figure_over_its_limit_and_zero_without_a_limit() {
        assert_eq!(ratio(3.0, 4.0), 0.75);
        assert_eq!(ratio(3.0, 0.0), 0.0);
        assert_eq!(ratio(f64::NAN, 4.0), 0.0);
        let replay = ReplayReport {
            customers: 10,
            events: 100_000,
            generate_seconds: 2.0,
            generate_events_per_second: 50_000.0,
            targets: Vec::new(),
            projections: Vec::new(),
            events_per_second: 6_000.0,
            read_seconds: 0.5,
            read_events_per_second: 200_000.0,
            sqlite_busy_share: 0.5,
            dead_letters: 0,
        };
        let fold = fold::FoldAll {
            events: 200_000,
            projections: 17,
            chunks: 20,
            one_core_seconds: 8.0,
            one_core_events_per_second: 25_000.0,
            two_cores_seconds: 5.0,
            two_cores_events_per_second: 40_000.0,
            groups: Vec::new(),
            group_seconds: Vec::new(),
        };
        // Ingest in customers: 200 customers settled in 4 s against 2 s of calls alone.
        let latency = [level(1, 4.0, 6_000), level(4, 5.0, 6_000)];
        let command_rate = [paused(1, 2.0), paused(4, 1.0)];
        let without_peer = limits(&latency, &command_rate, &replay, &fold, None);
        assert_eq!(without_peer.raw_append_events_per_second, 50_000.0);
        let per_level: Vec<(usize, f64, f64)> = without_peer
            .levels
            .iter()
            .map(|l| (l.concurrency, l.ingest_over_command_rate, l.ingest_over_raw_append))
            .collect();
        assert_eq!(per_level, [(1, 0.5, 0.03), (4, 0.2, 0.024)]);
        assert_eq!(without_peer.replay_over_fold_two_cores, 0.15);
        assert!(without_peer.levels.iter().all(|l| l.ingest_over_peer_append.is_none()));
        assert_eq!(without_peer.replay_read_over_peer_read, None);
        let peer = peer::PeerReport {
            library: "eventsourcing 9.5.0".into(),
            customers: 2_000,
            events: 10_000,
            command_seconds: 4.0,
            events_per_second: 2_500.0,
            read_seconds: 0.1,
            read_events_per_second: 100_000.0,
        };
        let with_peer = limits(&latency, &command_rate, &replay, &fold, Some(&peer));
        assert_eq!(with_peer.levels[0].ingest_over_peer_append, Some(0.6));
        assert_eq!(with_peer.replay_read_over_peer_read, Some(2.0));
        // A level the paused run did not measure has no limit: 0, not infinity.
        let missing = limits(&latency, &command_rate[..1], &replay, &fold, None);
        assert_eq!(missing.levels[1].ingest_over_command_rate, 0.0);
    }

    #[test]
    fn group_commits_are_the_counters_difference_and_their_mean() {
        use crate::adapters::store::GroupCommits;
        let before = GroupCommits {
            groups: 10,
            appends: 12,
        };
        let after = GroupCommits {
            groups: 30,
            appends: 62,
        };
        let row = group_commits_between(before, after);
        assert_eq!((row.groups, row.appends, row.appends_per_group), (20, 50, 2.5));
        let none = group_commits_between(after, after);
        assert_eq!((none.groups, none.appends, none.appends_per_group), (0, 0, 0.0));
    }

    #[test]
    fn route_groups_are_reported_in_order_with_their_percentiles() {
        let ms = |n: u64| Duration::from_millis(n);
        let calls = LevelCalls {
            latencies: [(1..=100).map(ms).collect(), vec![ms(5)], Vec::new()],
            also_accepted: [0, 1, 0],
            seconds: 1.0,
        };
        let rows = route_groups(&calls);
        let names: Vec<&str> = rows.iter().map(|r| r.group.as_str()).collect();
        assert_eq!(names, ["commands", "reads", "ingestion"]);
        assert_eq!(
            (rows[0].requests, rows[0].p50_ms, rows[0].p99_ms, rows[0].max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!((rows[1].requests, rows[1].also_accepted), (1, 1));
        assert_eq!((rows[2].requests, rows[2].p99_ms, rows[2].max_ms), (0, 0.0, 0.0));
    }
}

#[cfg(test)]
mod append_cost_tests {
    use super::*;
    use crm_core::ports::{AppendRequest, EventStore, ExpectedVersion, ReservationChange};

    /// Events of one command share their instant and correlation.
    fn command(stream: &str, n: usize) -> Vec<crm_core::event::EventEnvelope> {
        let first = crm_core::store_contract::event(stream, 0);
        (0..n)
            .map(|i| {
                let mut e = crm_core::store_contract::event(stream, i as u64);
                e.recorded_at = first.recorded_at;
                e.correlation_id = first.correlation_id;
                e
            })
            .collect()
    }

    #[tokio::test]
    async fn appends_are_rebuilt_from_the_store_and_priced_as_dynamodb_writes_them() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("appends.db");
        let store = crate::adapters::store::SqliteEventStore::open(&db).expect("store");
        let append = |stream: &str, expected, events, reservations| AppendRequest {
            stream_id: stream.into(),
            expected,
            events,
            reservations,
            receipt: None,
        };
        // A registration: one event and its email reservation (a transaction).
        let claim = vec![ReservationChange::Claim {
            key: "email#x".into(),
            owner: "customer-1".into(),
        }];
        store
            .append(append(
                "customer-1",
                ExpectedVersion::NoStream,
                command("customer-1", 1),
                claim,
            ))
            .await
            .expect("register");
        // Two single events (puts; the second after version 1, read first).
        store
            .append(append(
                "cart-1",
                ExpectedVersion::NoStream,
                command("cart-1", 1),
                Vec::new(),
            ))
            .await
            .expect("cart");
        store
            .append(append(
                "cart-1",
                ExpectedVersion::Exactly(1),
                command("cart-1", 1),
                Vec::new(),
            ))
            .await
            .expect("item");
        // Three events of one command after version 2 (a transaction).
        store
            .append(append(
                "cart-1",
                ExpectedVersion::Exactly(2),
                command("cart-1", 3),
                Vec::new(),
            ))
            .await
            .expect("order");
        let side = side_connection(&db).expect("side");
        let cost = append_cost(&side, 0, 0).expect("cost");
        assert_eq!(
            (cost.appends, cost.events, cost.transactions, cost.version_reads),
            (4, 6, 2, 2)
        );
        assert_eq!(cost.reservations_and_receipts, 1);
        // Every item here is under 1 KB: 2 * 2 + 1 + 1 + 2 * 3.
        assert_eq!(cost.write_units, 12.0);
        assert_eq!(cost.read_units, 2.0);
        // Only what came after a position counts.
        let later = append_cost(&side, 3, 0).expect("cost");
        assert_eq!((later.appends, later.events), (1, 3));
    }
}
