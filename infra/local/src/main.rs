//! The `crm-local` command: the local runtime and operator commands.

use clap::{Parser, Subcommand};
use crm_local::runtime::serve::{serve, ClockKind, ServeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "crm-local",
    version,
    about = "The CRM on one machine: API, store and operator commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API over the local SQLite store.
    Serve {
        /// Address to listen on: loopback, unless --allow-remote.
        #[arg(long, default_value = "127.0.0.1:3000", env = "CRM_ADDR")]
        addr: SocketAddr,
        /// Allow a non-loopback --addr (other machines can then reach the API; a warning is printed).
        #[arg(long)]
        allow_remote: bool,
        /// Directory for the database and the token file.
        #[arg(long, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
        /// The all-scopes bearer token (default: the one in <data-dir>/token, created on first run).
        #[arg(long, env = "CRM_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// SAM template whose EventBridge rules route the local bus (default: the built-in template.yaml).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Clock for commands and timers: `system`, or `virtual` (starts at the real now; moved by
        /// `POST /dev/clock/advance`).
        #[arg(long, value_enum, default_value_t = ClockArg::System)]
        clock: ClockArg,
        /// Public base URL of the API, for unsubscribe links (default: http://<addr>).
        #[arg(long, env = "PUBLIC_BASE_URL")]
        public_base_url: Option<String>,
        #[command(flatten)]
        retention: RetentionArgs,
        /// The shop's tracking.require_analytics_consent: record activity (browsing) only with
        /// the customer's analytics consent (decision 0079).
        #[arg(long, env = "TRACKING_REQUIRE_ANALYTICS_CONSENT")]
        require_analytics_consent: bool,
        /// Also take the JWTs of this issuer (an http:// URL; its discovery document names its
        /// keys), checked as the HTTP API's authorizer does on AWS; the console signs in with it
        /// (OIDC authorization code with PKCE).
        #[arg(long, env = "CRM_JWT_ISSUER")]
        jwt_issuer: Option<String>,
        /// An audience the JWTs may name (`aud`, or `client_id`); repeat for several.
        #[arg(long = "jwt-audience", env = "CRM_JWT_AUDIENCE", value_delimiter = ',')]
        jwt_audiences: Vec<String>,
        /// The console's OIDC client id at --jwt-issuer (default: the first --jwt-audience).
        #[arg(long, env = "CRM_CONSOLE_CLIENT_ID")]
        console_client_id: Option<String>,
    },
    /// Print a bearer token for `serve`'s API carrying only these scopes (crm/read, crm/write,
    /// crm/privacy, crm/admin), signed with the all-scopes token of <data-dir>/token.
    Token {
        /// A scope the token carries (repeat for several).
        #[arg(long = "scope", value_name = "SCOPE", required = true)]
        scopes: Vec<String>,
        /// Directory holding the all-scopes token file.
        #[arg(long, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
        /// The all-scopes token `serve` was given with --token, instead of the file's.
        #[arg(long, env = "CRM_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Print a customer's signed unsubscribe / preference-centre link (`<base>/u/<token>`),
    /// valid for 60 days, signed with the data directory's secret (or `UNSUBSCRIBE_SECRET`).
    UnsubscribeLink {
        /// The customer's id.
        customer: String,
        /// The consent purpose the link unsubscribes from.
        #[arg(long, default_value = "marketing")]
        purpose: String,
        /// The channel the link unsubscribes from.
        #[arg(long, default_value = "email")]
        channel: String,
        /// Public base URL of the API the link points at.
        #[arg(long, default_value = "http://127.0.0.1:3000", env = "PUBLIC_BASE_URL")]
        base_url: String,
        /// Directory holding the database.
        #[arg(long, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Test an event against an EventBridge event pattern, like `aws events test-event-pattern`.
    ///
    /// Prints {"Result": true} or {"Result": false}; exits 2 if the pattern or the event is invalid.
    TestEventPattern {
        /// The event pattern, as JSON.
        #[arg(long)]
        event_pattern: String,
        /// The full EventBridge event, as JSON.
        #[arg(long)]
        event: String,
    },
    /// Run the seed's story (register, verify, cart, abandonment, reminder, order) on a virtual
    /// clock through the API in-process, then print the timeline and why the reminder was sent.
    Demo {
        /// Directory for the demo's database (default: a fresh temporary directory, removed afterwards).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Rebuild a projection (`customer-360`, `consent-ledger`, ...: only it) or a bus target
    /// (`projector`, `consent`: all of its projections) from the event store, with a progress bar.
    Replay {
        /// The projection or bus target to rebuild.
        #[arg(long)]
        consumer: String,
        /// Directory holding the database.
        #[arg(long, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
        /// SAM template whose rules route the bus (default: the built-in template.yaml).
        #[arg(long)]
        template: Option<PathBuf>,
        /// No progress bar or summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Move the email reservations made before keyed hashes (`email#<sha256>`) to the keyed
    /// key (decision 0046); idempotent. Then `replay --consumer projector` rebuilds the indexes.
    Rekey {
        /// Directory holding the database.
        #[arg(long, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Consistency check: fold a sample of customer streams and compare with the stored
    /// customer 360 and consent ledger; prints every difference, exits 1 if there is any.
    Check {
        /// How many customer streams to fold (0: all).
        #[arg(long, default_value_t = 100)]
        sample: usize,
        /// Directory holding the database.
        #[arg(long, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
        /// SAM template whose rules route the bus (default: the built-in template.yaml).
        #[arg(long)]
        template: Option<PathBuf>,
    },
    /// What the local runtime sent (email, SMS, push), from its mail sink.
    Mail {
        /// Directory holding the database.
        #[arg(long, global = true, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
        #[command(subcommand)]
        action: MailAction,
    },
    /// Retention: fold old activity into daily summaries and delete what has expired.
    Retention {
        /// Directory holding the database.
        #[arg(long, global = true, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
        /// SAM template whose rules route the bus (default: the built-in template.yaml).
        #[arg(long, global = true)]
        template: Option<PathBuf>,
        #[command(subcommand)]
        action: RetentionAction,
    },
    /// Privacy: erase or export a customer (as DELETE and GET /customers/{id}/export do),
    /// or encrypt what was stored before encryption at rest.
    Privacy {
        /// Directory holding the database.
        #[arg(long, global = true, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
        #[command(subcommand)]
        action: crm_local::cli::privacy::PrivacyAction,
    },
    /// Benchmarks: API latency and end-to-end ingest against an in-process server on
    /// 127.0.0.1, replay of every projection, in-memory fold per projection, peak memory,
    /// and each pipeline figure beside its limit (command rate alone, raw append, the fold
    /// of all projections on one and two cores; decision 0091).
    Bench {
        /// Workload seed (the same seed, the same customers and events).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Customers run through the API at each concurrency level.
        #[arg(long, default_value_t = 200)]
        customers: u64,
        /// Concurrency levels (client connections), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
        concurrency: Vec<usize>,
        /// Events in the replay store (written straight into SQLite); `--events 1000000`
        /// for the million-event replay (about 25 minutes on 2 cores).
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Events folded in memory by each projection.
        #[arg(long, default_value_t = 200_000)]
        fold_events: u64,
        /// Recipients of the broadcast phase (one broadcast, send now, at the highest rate).
        #[arg(long, default_value_t = 2_000)]
        broadcast_recipients: u64,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write the cost model (markdown) to this file, e.g. docs/cost.md.
        #[arg(long)]
        cost: Option<PathBuf>,
        /// SAM template the cost model reads the Lambda memory from (default: the built-in one).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Units measured on the moto pipeline (`scripts/chaos.py --rate 0 --units-out FILE`):
        /// used by the cost model where the bench's own counting does not reach (the
        /// campaign's cost of an event that starts nothing, KMS, the per-message table;
        /// decision 0038), and shown by function in the --cost file.
        #[arg(long)]
        measured: Option<PathBuf>,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
        /// Also run the peer with this Python interpreter (e.g. `.venv/bin/python`, which
        /// has the `eventsourcing` library): `PYTHON --peer-script --customers N`, its
        /// append and read rates printed beside the bench's. Checked before the bench runs.
        #[arg(long, value_name = "PYTHON")]
        peer: Option<PathBuf>,
        /// The peer's script, relative to the current directory or absolute.
        #[arg(long, default_value = "scripts/peer_bench.py", requires = "peer")]
        peer_script: PathBuf,
        /// Customers the peer registers (5 events each).
        #[arg(long, default_value_t = 2_000, requires = "peer")]
        peer_customers: u64,
    },
    /// The messages a source sent that ingestion refused in the last 7 days, newest first,
    /// as JSON (what GET /sources/{source}/refused answers; decision 0053).
    Refused {
        /// The source's name (`local`, `local-web`, or one of INGEST_WRITE_KEYS).
        #[arg(long)]
        source: String,
        /// The `next_after` of the previous page.
        #[arg(long)]
        after: Option<String>,
        /// At most this many (1 to 100).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=100))]
        limit: u16,
        /// Directory holding the database.
        #[arg(long, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Inspect and redrive the local dead letters.
    Dlq {
        /// Directory holding the database.
        #[arg(long, global = true, default_value = ".crm", env = "CRM_DATA_DIR")]
        data_dir: PathBuf,
        /// SAM template whose rules name the targets (default: the built-in template.yaml).
        #[arg(long, global = true)]
        template: Option<PathBuf>,
        #[command(subcommand)]
        action: crm_local::cli::dlq::DlqAction,
    },
}

/// How long what is kept (`serve` sweeps at start and daily; `retention sweep` once).
#[derive(clap::Args, Clone, Copy)]
struct RetentionArgs {
    /// Activity older than this many days is folded into daily summaries, then deleted.
    #[arg(long, default_value_t = crm_core::retention::DEFAULT_ACTIVITY_DAYS, env = "RETENTION_ACTIVITY_DAYS")]
    activity_days: u32,
    /// Orders, and erased customers' consent and erasure proof, are kept this many years.
    #[arg(long, default_value_t = crm_core::retention::DEFAULT_LEGAL_YEARS, env = "RETENTION_LEGAL_YEARS")]
    legal_years: u32,
}

impl RetentionArgs {
    fn policy(self) -> Result<crm_core::retention::RetentionPolicy, String> {
        crm_core::retention::RetentionPolicy::new(self.activity_days, self.legal_years).map_err(|e| e.to_string())
    }
}

#[derive(Subcommand)]
enum RetentionAction {
    /// Fold activity older than the age into daily summaries, delete the raw events they cover,
    /// and delete orders and erased customers' streams older than the legal period; prints a JSON report.
    Sweep {
        #[command(flatten)]
        retention: RetentionArgs,
    },
}

#[derive(Subcommand)]
enum MailAction {
    /// One line per message, oldest first.
    List,
    /// One whole message (an email as MIME).
    Show {
        /// The number `list` shows.
        seq: i64,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ClockArg {
    System,
    Virtual,
}

/// mimalloc, not glibc's malloc (decision 0094): the rebuild and the fold
/// spend a quarter of their cycles allocating JSON documents, and glibc's
/// per-thread arenas kept freed memory, doubling the peak.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's own option setter (linked in with the allocator); the option
// numbers are its `mi_option_e` (v2, mimalloc.h).
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
const MI_OPTION_ABANDONED_PAGE_PURGE: std::ffi::c_int = 12;
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Freed memory goes back to the system at once (mimalloc keeps it 10 ms,
/// or until the thread that owns it allocates again), and a thread that
/// ends gives back its free pages: the tokio blocking threads that ran
/// SQLite calls idle or exit holding what they freed, and the bench's peak
/// memory was mostly that, summed over the phases (decision 0096).
/// An environment's `MIMALLOC_PURGE_DELAY` or `MIMALLOC_ABANDONED_PAGE_PURGE`
/// still wins.
fn return_freed_memory_at_once() {
    for (variable, option, value) in [
        ("MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY, 0),
        ("MIMALLOC_ABANDONED_PAGE_PURGE", MI_OPTION_ABANDONED_PAGE_PURGE, 1),
    ] {
        if std::env::var_os(variable).is_none() {
            // SAFETY: mimalloc's documented setter, called with one of its
            // option numbers and a value in range, before any other thread
            // of ours allocates much; it only stores the value.
            unsafe { mi_option_set(option, value) };
        }
    }
}

fn main() -> ExitCode {
    return_freed_memory_at_once();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    // The bench's own output is its table: only warnings in between.
    let default_level = if matches!(cli.command, Command::Bench { .. }) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Serve {
            addr,
            allow_remote,
            data_dir,
            token,
            template,
            clock,
            public_base_url,
            retention,
            require_analytics_consent,
            jwt_issuer,
            jwt_audiences,
            console_client_id,
        } => match retention.policy() {
            Err(e) => Err(e),
            Ok(retention) => serve(ServeConfig {
                addr,
                data_dir,
                token,
                allow_remote,
                template,
                clock: match clock {
                    ClockArg::System => ClockKind::System,
                    ClockArg::Virtual => ClockKind::Virtual,
                },
                public_base_url,
                retention,
                require_analytics_consent,
                jwt_issuer,
                jwt_audiences,
                console_client_id,
            })
            .await
            .map_err(|e| e.to_string()),
        },
        Command::Token {
            scopes,
            data_dir,
            token,
        } => crm_local::runtime::serve::token::mint(&data_dir, token.as_deref(), &scopes)
            .map(|minted| println!("{minted}"))
            .map_err(|e| e.to_string()),
        Command::UnsubscribeLink {
            customer,
            purpose,
            channel,
            base_url,
            data_dir,
        } => crm_local::adapters::unsubscribe::link(
            &crm_local::adapters::data_dir::database_path(&data_dir),
            &base_url,
            &customer,
            &purpose,
            &channel,
        )
        .map(|url| println!("{url}"))
        .map_err(|e| e.to_string()),
        Command::TestEventPattern { event_pattern, event } => {
            return crm_local::cli::pattern::run(&event_pattern, &event)
        }
        Command::Bench {
            seed,
            customers,
            concurrency,
            events,
            fold_events,
            broadcast_recipients,
            json,
            cost,
            template,
            measured,
            quiet,
            peer,
            peer_script,
            peer_customers,
        } => crm_local::bench::command_with_measured(
            crm_local::bench::BenchOptions {
                seed,
                customers,
                concurrency,
                events,
                fold_events,
                broadcast_recipients,
                progress: !quiet,
                peer: peer.map(|python| crm_local::bench::peer::PeerOptions {
                    python,
                    script: peer_script,
                    customers: peer_customers,
                }),
            },
            json,
            cost,
            template,
            measured,
        )
        .await
        .map_err(|e| e.to_string()),
        Command::Demo { data_dir } => crm_local::cli::demo::run(data_dir.as_deref())
            .await
            .map_err(|e| e.to_string()),
        Command::Replay {
            consumer,
            data_dir,
            template,
            quiet,
        } => crm_local::cli::ops::run_replay(&data_dir, template.as_deref(), &consumer, quiet)
            .await
            .map_err(|e| e.to_string()),
        Command::Rekey { data_dir } => crm_local::cli::rekey::rekey(&data_dir)
            .await
            .map(|report| println!("{}", crm_local::cli::rekey::render(&report)))
            .map_err(|e| e.to_string()),
        Command::Check {
            sample,
            data_dir,
            template,
        } => crm_local::cli::ops::run_check(&data_dir, template.as_deref(), sample)
            .await
            .map_err(|e| e.to_string()),
        Command::Mail { data_dir, action } => mail(&data_dir, action).await,
        Command::Refused {
            source,
            after,
            limit,
            data_dir,
        } => {
            crm_local::cli::refusals::page_json(&data_dir, &source, after.as_deref(), limit.into(), chrono::Utc::now())
                .await
                .map(|page| println!("{page}"))
                .map_err(|e| e.to_string())
        }
        Command::Retention {
            data_dir,
            template,
            action: RetentionAction::Sweep { retention },
        } => match retention.policy() {
            Err(e) => Err(e),
            Ok(policy) => crm_local::cli::retention::run_sweep(&data_dir, template.as_deref(), &policy)
                .await
                .map_err(|e| e.to_string()),
        },
        Command::Dlq {
            data_dir,
            template,
            action,
        } => crm_local::cli::dlq::run(&data_dir, template.as_deref(), action)
            .await
            .map_err(|e| e.to_string()),
        Command::Privacy { data_dir, action } => crm_local::cli::privacy::run(&data_dir, action)
            .await
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crm-local: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `crm-local mail list|show`.
async fn mail(data_dir: &std::path::Path, action: MailAction) -> Result<(), String> {
    let db = crm_local::adapters::data_dir::database_path(data_dir);
    let sink = crm_local::adapters::mail::MailSink::open(&db, std::sync::Arc::new(crm_core::clock::SystemClock))
        .map_err(|e| e.to_string())?;
    match action {
        MailAction::List => {
            let entries = sink.list().await.map_err(|e| e.to_string())?;
            print!("{}", crm_local::runtime::mail_view::print_list(&entries));
            Ok(())
        }
        MailAction::Show { seq } => match sink.get(seq).await.map_err(|e| e.to_string())? {
            Some(entry) => {
                println!("{}", entry.body);
                Ok(())
            }
            None => Err(format!("no message number {seq}")),
        },
    }
}
