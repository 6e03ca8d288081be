//! `coldstart`: each Lambda function's release binary (target/lambda/<name>/bootstrap,
//! as `cargo lambda build --release` makes it) started against a minimal
//! Runtime API on 127.0.0.1, several times, its secrets read at cold start
//! from a local Secrets Manager endpoint (or --aws-endpoint); prints the
//! median figures as a table (or JSON) next to the targets of issue 9.
//! Reports, asserts nothing.

use crm_coldstart::secrets_manager::{LocalSecret, SecretsManager};
use crm_coldstart::{measure, stripped_size, Run, Sample, Stats};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const FUNCTIONS: &[&str] = &[
    "api",
    "relay",
    "projector",
    "consent",
    "campaign",
    "channel",
    "segments",
];

/// The sample event of each function (under --events-dir); `None`: `{}`.
fn default_event(function: &str) -> Option<&'static str> {
    match function {
        "api" => Some("api/02-get-customer.json"),
        // A DynamoDB Streams batch of the events table (one CustomerRegistered).
        "relay" => Some("relay/stream-batch.json"),
        // The queue-fed functions: an SQS batch of their queue (decision 0029).
        "projector" => Some("projector/sqs-batch.json"),
        "consent" => Some("consent/sqs-batch.json"),
        "campaign" => Some("campaign/sqs-batch.json"),
        "channel" => Some("channel/sqs-batch.json"),
        // The daily schedule's invocation (the function ignores its payload).
        "segments" => Some("segments/daily-schedule.json"),
        _ => None,
    }
}

/// Where `cargo lambda build` puts the binaries: `$CARGO_TARGET_DIR/lambda`, or `target/lambda`.
fn default_lambda_dir(cargo_target_dir: Option<std::ffi::OsString>) -> PathBuf {
    match cargo_target_dir {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("lambda"),
        _ => "target/lambda".into(),
    }
}

/// The customer of the api's sample events.
const SAMPLE_CUSTOMER: &str = "0193a6f3-1a2b-7c3d-8e4f-5a6b7c8d9e0f";

const TARGET_READY_MS: f64 = 10.0;
const TARGET_PEAK_MB: f64 = 30.0;
/// The stripped size limit of every function (issue 9), MiB.
const TARGET_STRIPPED_MB: f64 = 8.0;
/// The api's own limit (issue 18): it also validates custom event schemas
/// and renders template previews, which no other function does.
const TARGET_STRIPPED_MB_API: f64 = 12.0;

/// The stripped size limit of `function`, MiB.
fn target_stripped_mb(function: &str) -> f64 {
    match function {
        "api" => TARGET_STRIPPED_MB_API,
        _ => TARGET_STRIPPED_MB,
    }
}

const USAGE: &str = "\
usage: coldstart [options] [FUNCTION...]
  FUNCTION            api relay projector consent campaign channel segments (default: all)
  --lambda-dir DIR    where `cargo lambda build --release` put the binaries
                      (default $CARGO_TARGET_DIR/lambda when set, else target/lambda)
  --events-dir DIR    sample events (default events)
  --event NAME=FILE   the invocation of NAME (default: a sample event of events/NAME/)
  --iterations N      cold starts per function (default 5)
  --aws-endpoint URL  AWS_ENDPOINT_URL of the functions, e.g. a moto server (default: a local
                      endpoint on 127.0.0.1 that answers Secrets Manager's GetSecretValue for
                      the functions' three secrets and closes the connection on any other
                      call, so every other AWS call fails at once). With URL the secrets
                      must exist there, in account 123456789012, region us-east-1; on moto:
                        aws --endpoint-url URL secretsmanager create-secret --name NAME \
                          --secret-string VALUE
                      for each NAME=VALUE of: crm-coldstart-unsubscribe=coldstart-unsubscribe-secret,
                      crm-coldstart-identifier-hash=coldstart-identifier-secret,
                      crm-coldstart-ingest-write-keys=coldstart:wk_coldstart_0123456789
                      (the functions name them by partial ARN, which moto and AWS resolve)
  --env KEY=VALUE     one more environment variable of every function (repeatable)
  --timeout-ms MS     wait for ready, and then for the first response, at most this long (default 10000)
  --json [FILE]       JSON instead of the table (to FILE, or stdout)";

struct Options {
    functions: Vec<String>,
    lambda_dir: PathBuf,
    events_dir: PathBuf,
    events: Vec<(String, PathBuf)>,
    iterations: usize,
    aws_endpoint: Option<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
    json: Option<Option<PathBuf>>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut o = Options {
        functions: Vec::new(),
        lambda_dir: default_lambda_dir(std::env::var_os("CARGO_TARGET_DIR")),
        events_dir: "events".into(),
        events: Vec::new(),
        iterations: 5,
        aws_endpoint: None,
        env: Vec::new(),
        timeout: Duration::from_secs(10),
        json: None,
    };
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let pair = |v: String, name: &str| {
            v.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or(format!("{name} takes KEY=VALUE, not {v:?}"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--lambda-dir" => o.lambda_dir = value(&arg)?.into(),
            "--events-dir" => o.events_dir = value(&arg)?.into(),
            "--event" => {
                let (k, v) = pair(value(&arg)?, &arg)?;
                o.events.push((k, v.into()));
            }
            "--iterations" => {
                o.iterations = value(&arg)?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--iterations takes a positive number")?
            }
            "--aws-endpoint" => o.aws_endpoint = Some(value(&arg)?),
            "--env" => o.env.push(pair(value(&arg)?, &arg)?),
            "--timeout-ms" => {
                o.timeout = Duration::from_millis(
                    value(&arg)?
                        .parse()
                        .map_err(|_| "--timeout-ms takes a number of milliseconds")?,
                )
            }
            "--json" => {
                let file = if args.peek().is_some_and(|a| !a.starts_with('-') && a.ends_with(".json")) {
                    args.next().map(PathBuf::from)
                } else {
                    None
                };
                o.json = Some(file);
            }
            f if FUNCTIONS.contains(&f) => o.functions.push(f.to_string()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.functions.is_empty() {
        o.functions = FUNCTIONS.iter().map(|f| f.to_string()).collect();
    }
    Ok(o)
}

const ACCOUNT: &str = "123456789012";

/// The secrets the functions read at cold start (decision 0047): the
/// setting naming each, and the secret (its partial ARN, without the
/// random suffix, so the same name created on moto or AWS resolves).
/// Which function reads which: functions/*/src (settings).
fn secrets() -> Vec<(&'static str, LocalSecret)> {
    [
        (
            "UNSUBSCRIBE_SECRET_ARN",
            "crm-coldstart-unsubscribe",
            "coldstart-unsubscribe-secret",
        ),
        (
            "IDENTIFIER_HASH_SECRET_ARN",
            "crm-coldstart-identifier-hash",
            "coldstart-identifier-secret",
        ),
        (
            "INGEST_WRITE_KEYS_SECRET_ARN",
            "crm-coldstart-ingest-write-keys",
            "coldstart:wk_coldstart_0123456789",
        ),
    ]
    .into_iter()
    .map(|(setting, name, value)| {
        (
            setting,
            LocalSecret {
                arn: format!("arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:{name}"),
                name: name.to_string(),
                value: value.to_string(),
            },
        )
    })
    .collect()
}

/// What the report says the functions' AWS endpoint was.
const LOCAL_ENDPOINT: &str = "local endpoint on 127.0.0.1: Secrets Manager GetSecretValue answered \
(the functions' secrets), every other AWS call's connection closed";

/// What every function needs to start (scripts/test's Lambda smoke sets the same),
/// the Lambda variables lambda_runtime reads, and static test credentials.
fn base_env(function: &str, endpoint: &str) -> Vec<(String, String)> {
    let account = ACCOUNT;
    let mut env: Vec<(String, String)> = [
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{function}")),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "coldstart".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_SESSION_TOKEN", "test".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_MAX_ATTEMPTS", "1".into()),
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("RUST_LOG", "info".into()),
        ("EVENTS_TABLE", "crm-events".into()),
        ("READ_MODELS_TABLE", "crm-read-models".into()),
        ("KEYS_TABLE", "crm-keys".into()),
        (
            "DATA_KEYS_KMS_KEY_ID",
            format!("arn:aws:kms:us-east-1:{account}:key/11111111-2222-3333-4444-555555555555"),
        ),
        ("EVENT_BUS_NAME", "crm".into()),
        (
            "EVENT_BUS_ARN",
            format!("arn:aws:events:us-east-1:{account}:event-bus/crm"),
        ),
        (
            "DEAD_LETTER_QUEUE_URL",
            format!("{endpoint}/{account}/crm-dead-letters"),
        ),
        ("SCHEDULE_GROUP", "crm-timers".into()),
        (
            "SCHEDULER_ROLE_ARN",
            format!("arn:aws:iam::{account}:role/crm-scheduler"),
        ),
        ("PUBLIC_BASE_URL", "https://crm.example.com".into()),
        ("SES_CONFIGURATION_SET", "crm-messages".into()),
        ("FROM_ADDRESS", "Shop <news@shop.example.com>".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    // Their values come from GetSecretValue at cold start, never from the environment.
    env.extend(secrets().into_iter().map(|(setting, s)| (setting.to_string(), s.arn)));
    env
}

struct Report {
    function: String,
    binary: PathBuf,
    size: u64,
    stripped: Option<u64>,
    samples: Vec<Sample>,
    /// GetSecretValue calls the local endpoint answered during its runs (none with --aws-endpoint).
    secret_values_read: Option<usize>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mb(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

impl Report {
    fn ready(&self) -> Option<Stats> {
        Stats::of(self.samples.iter().filter_map(|s| s.ready.map(ms)))
    }
    fn first_response(&self) -> Option<Stats> {
        Stats::of(self.samples.iter().filter_map(|s| s.first_response.map(ms)))
    }
    fn cpu(&self) -> Option<Stats> {
        Stats::of(self.samples.iter().filter_map(|s| s.cpu.map(ms)))
    }
    fn peak_mib(&self) -> Option<Stats> {
        Stats::of(
            self.samples
                .iter()
                .filter_map(|s| s.peak_rss_kib.map(|k| k as f64 / 1024.0)),
        )
    }
    /// The outcomes, e.g. "error x5".
    fn outcomes(&self) -> String {
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for s in &self.samples {
            match counts.iter_mut().find(|(l, _)| *l == s.outcome.label()) {
                Some((_, n)) => *n += 1,
                None => counts.push((s.outcome.label(), 1)),
            }
        }
        counts
            .iter()
            .map(|(l, n)| format!("{l} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    fn targets(&self) -> Vec<&'static str> {
        let mut missed = Vec::new();
        if self.ready().is_none_or(|s| s.median >= TARGET_READY_MS) {
            missed.push("ready");
        }
        if mb(self.stripped.unwrap_or(self.size) as f64) > target_stripped_mb(&self.function) {
            missed.push("size");
        }
        if self.peak_mib().is_none_or(|s| s.median >= TARGET_PEAK_MB) {
            missed.push("peak");
        }
        missed
    }
    fn json(&self) -> Value {
        let stats = |s: Option<Stats>| s.map(|s| json!({"median": s.median, "min": s.min, "max": s.max}));
        json!({
            "function": self.function,
            "binary": self.binary,
            "size_bytes": self.size,
            "stripped_bytes": self.stripped,
            "ready_ms": stats(self.ready()),
            "first_response_ms": stats(self.first_response()),
            "cpu_ms": stats(self.cpu()),
            "peak_rss_mib": stats(self.peak_mib()),
            "outcomes": self.outcomes(),
            "secret_values_read": self.secret_values_read,
            "targets_missed": self.targets(),
            "samples": self.samples.iter().map(|s| json!({
                "ready_ms": s.ready.map(ms),
                "first_response_ms": s.first_response.map(ms),
                "peak_rss_kib": s.peak_rss_kib,
                "cpu_ms": s.cpu.map(ms),
                "outcome": s.outcome.label(),
                "body": s.outcome.body().chars().take(300).collect::<String>(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({"cpu": cpu, "cores": cores, "kernel": kernel})
}

fn run(o: &Options) -> Result<Vec<Report>, String> {
    let scratch = tempfile_dir()?;
    // Kept alive for the whole run; stops when dropped.
    let local = match &o.aws_endpoint {
        Some(_) => None,
        None => Some(
            SecretsManager::start(secrets().into_iter().map(|(_, s)| s).collect())
                .map_err(|e| format!("cannot serve the local Secrets Manager endpoint on 127.0.0.1: {e}"))?,
        ),
    };
    let endpoint = match (&o.aws_endpoint, &local) {
        (Some(e), _) => e.clone(),
        (None, Some(local)) => local.url(),
        (None, None) => return Err("no AWS endpoint".into()),
    };
    let mut reports = Vec::new();
    for function in &o.functions {
        let binary = o.lambda_dir.join(function).join("bootstrap");
        let size = std::fs::metadata(&binary)
            .map_err(|e| {
                format!(
                    "{}: {e} (build the functions first: cargo lambda build --release)",
                    binary.display()
                )
            })?
            .len();
        let event = match o.events.iter().find(|(f, _)| f == function) {
            Some((_, path)) => Some(path.clone()),
            None => default_event(function).map(|p| o.events_dir.join(p)),
        };
        let event = match event {
            // The api's samples name their customer as `{{customer_id}}` (the smoke fills it in).
            Some(path) => std::fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .replace("{{customer_id}}", SAMPLE_CUSTOMER)
                .into_bytes(),
            None => b"{}".to_vec(),
        };
        let mut env = base_env(function, &endpoint);
        env.extend(o.env.iter().cloned());
        let spec = Run {
            binary: binary.clone(),
            event,
            env,
            log: scratch.join(format!("{function}.log")),
            timeout: o.timeout,
        };
        let mut samples = Vec::new();
        let served_before = local.as_ref().map(SecretsManager::values_served);
        for i in 0..o.iterations {
            let sample = measure(&spec).map_err(|e| format!("{function}: {e}"))?;
            if sample.ready.is_none() && i == 0 {
                let log = std::fs::read_to_string(&spec.log).unwrap_or_default();
                eprintln!(
                    "{function}: never asked for an invocation ({}); its output:\n{}",
                    sample.outcome.label(),
                    log.lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            samples.push(sample);
        }
        reports.push(Report {
            function: function.clone(),
            stripped: stripped_size(&binary, &scratch),
            binary,
            size,
            samples,
            secret_values_read: local
                .as_ref()
                .zip(served_before)
                .map(|(l, before)| l.values_served() - before),
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(reports)
}

fn tempfile_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("coldstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn table(reports: &[Report], iterations: usize, aws_endpoint: &str) -> String {
    let fmt = |s: Option<Stats>| s.map_or("-".to_string(), |s| format!("{:.1}", s.median));
    let mut out = format!(
        "cold start, median of {iterations} (targets: ready < {TARGET_READY_MS} ms, stripped <= {TARGET_STRIPPED_MB} MB (api {TARGET_STRIPPED_MB_API}), peak < {TARGET_PEAK_MB} MB)\n"
    );
    out.push_str(&format!("AWS endpoint: {aws_endpoint}\n"));
    out.push_str(&format!(
        "{:<10} {:>9} {:>14} {:>7} {:>9} {:>13} {:>12} {:>8}  {:<16} {}\n",
        "function",
        "ready ms",
        "1st answer ms",
        "cpu ms",
        "size MB",
        "stripped MB",
        "peak RSS MB",
        "secrets",
        "first answer",
        "missed"
    ));
    for r in reports {
        let missed = r.targets();
        out.push_str(&format!(
            "{:<10} {:>9} {:>14} {:>7} {:>9.2} {:>13} {:>12} {:>8}  {:<16} {}\n",
            r.function,
            fmt(r.ready()),
            fmt(r.first_response()),
            fmt(r.cpu()),
            mb(r.size as f64),
            r.stripped.map_or("-".into(), |s| format!("{:.2}", mb(s as f64))),
            fmt(r.peak_mib()),
            r.secret_values_read.map_or("-".into(), |n| n.to_string()),
            r.outcomes(),
            if missed.is_empty() {
                "-".to_string()
            } else {
                missed.join(",")
            },
        ));
    }
    out
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("coldstart: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let reports = match run(&options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("coldstart: {e}");
            return ExitCode::FAILURE;
        }
    };
    let aws_endpoint = options.aws_endpoint.as_deref().unwrap_or(LOCAL_ENDPOINT);
    match &options.json {
        None => print!("{}", table(&reports, options.iterations, aws_endpoint)),
        Some(file) => {
            let doc = json!({
                "machine": machine(),
                "iterations": options.iterations,
                "aws_endpoint": aws_endpoint,
                "targets": {"ready_ms": TARGET_READY_MS, "stripped_mb": TARGET_STRIPPED_MB, "stripped_mb_api": TARGET_STRIPPED_MB_API, "peak_mb": TARGET_PEAK_MB},
                "functions": reports.iter().map(Report::json).collect::<Vec<_>>(),
            });
            let text = match serde_json::to_string_pretty(&doc) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("coldstart: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match file {
                None => println!("{text}"),
                Some(path) => {
                    if let Err(e) = std::fs::write(path, text + "\n") {
                        eprintln!("coldstart: {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                    print!("{}", table(&reports, options.iterations, aws_endpoint));
                }
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_has_a_sample_event() {
        let events = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events");
        for function in FUNCTIONS {
            let file = default_event(function).map(|p| events.join(p));
            let file = file.unwrap_or_else(|| panic!("{function}: no sample event"));
            let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let parsed: Result<Value, _> = serde_json::from_str(&text.replace("{{customer_id}}", SAMPLE_CUSTOMER));
            assert!(parsed.is_ok(), "{}: not JSON", file.display());
        }
    }

    #[test]
    fn the_lambda_dir_follows_cargo_target_dir() {
        assert_eq!(default_lambda_dir(None), PathBuf::from("target/lambda"));
        assert_eq!(default_lambda_dir(Some("".into())), PathBuf::from("target/lambda"));
        assert_eq!(
            default_lambda_dir(Some("/work/target-release".into())),
            PathBuf::from("/work/target-release/lambda")
        );
    }

    #[test]
    fn the_functions_get_secret_arns_served_by_the_local_endpoint_and_no_secret_values() {
        let env = base_env("api", "http://127.0.0.1:1");
        let value = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        for old in ["UNSUBSCRIBE_SECRET", "IDENTIFIER_HASH_SECRET", "INGEST_WRITE_KEYS"] {
            assert_eq!(value(old), None, "{old} is still in the environment");
        }
        let served = secrets();
        for setting in [
            "UNSUBSCRIBE_SECRET_ARN",
            "IDENTIFIER_HASH_SECRET_ARN",
            "INGEST_WRITE_KEYS_SECRET_ARN",
        ] {
            let arn = value(setting).unwrap_or_else(|| panic!("{setting} missing"));
            assert!(
                arn.starts_with("arn:aws:secretsmanager:us-east-1:123456789012:secret:"),
                "{arn}"
            );
            assert!(
                served.iter().any(|(s, secret)| *s == setting && secret.arn == arn),
                "{setting}"
            );
        }
        assert!(env
            .iter()
            .all(|(_, v)| served.iter().all(|(_, s)| !v.contains(&s.value))));
    }

    #[test]
    fn the_api_may_be_larger_than_the_other_functions() {
        assert_eq!(target_stripped_mb("api"), 12.0);
        for function in FUNCTIONS.iter().filter(|f| **f != "api") {
            assert_eq!(target_stripped_mb(function), 8.0, "{function}");
        }
        let report = |function: &str, mib: f64| Report {
            function: function.into(),
            binary: PathBuf::new(),
            size: (mib * 1024.0 * 1024.0) as u64,
            stripped: Some((mib * 1024.0 * 1024.0) as u64),
            samples: Vec::new(),
            secret_values_read: None,
        };
        assert!(!report("api", 11.9).targets().contains(&"size"));
        assert!(report("api", 12.1).targets().contains(&"size"));
        assert!(report("channel", 8.1).targets().contains(&"size"));
        assert!(!report("channel", 7.9).targets().contains(&"size"));
    }

    #[test]
    fn options() {
        let o = parse(["relay", "segments", "--iterations", "3", "--lambda-dir", "x"].map(String::from)).unwrap();
        assert_eq!(o.functions, ["relay", "segments"]);
        assert_eq!(o.iterations, 3);
        assert_eq!(o.lambda_dir, PathBuf::from("x"));
        assert!(parse(["bogus".to_string()]).is_err());
    }
}
