//! The cold-start harness of issue 9: starts a Lambda function's binary (as
//! `cargo lambda build --release` makes it) against a minimal Runtime API
//! ([`runtime_api`]) it serves on 127.0.0.1, and measures the time from
//! exec to the first `/next` request (ready), to the first response or
//! error, and the child's peak memory (VmHWM, sampled from /proc). The
//! functions' secrets (decision 0047) come from a minimal Secrets Manager
//! ([`secrets_manager`]) the `coldstart` binary also serves on 127.0.0.1.

mod http;
pub mod runtime_api;
pub mod secrets_manager;

use runtime_api::{HitKind, RuntimeApi};
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// One cold start to measure.
#[derive(Debug, Clone)]
pub struct Run {
    pub binary: PathBuf,
    /// The body of the one invocation.
    pub event: Vec<u8>,
    /// The function's environment (besides `AWS_LAMBDA_RUNTIME_API`, set by [`measure`]).
    pub env: Vec<(String, String)>,
    /// Where the function's stdout and stderr go.
    pub log: PathBuf,
    /// How long to wait for ready and for the first response, each.
    pub timeout: Duration,
}

/// How the first invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `POST /invocation/{id}/response`.
    Response(String),
    /// `POST /invocation/{id}/error`.
    Error(String),
    /// `POST /init/error` (never ready).
    InitError(String),
    /// The process ended (status) before answering.
    Exited(String),
    /// Nothing within the timeout.
    TimedOut,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Response(_) => "response",
            Outcome::Error(_) => "error",
            Outcome::InitError(_) => "init error",
            Outcome::Exited(_) => "exited",
            Outcome::TimedOut => "timed out",
        }
    }

    pub fn body(&self) -> &str {
        match self {
            Outcome::Response(b) | Outcome::Error(b) | Outcome::InitError(b) | Outcome::Exited(b) => b,
            Outcome::TimedOut => "",
        }
    }
}

/// The figures of one cold start.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Exec to the first `GET /invocation/next`.
    pub ready: Option<Duration>,
    /// Exec to the first response or error.
    pub first_response: Option<Duration>,
    pub outcome: Outcome,
    /// VmHWM of the child, KiB (the largest sampled; read last while it waits for its second invocation).
    pub peak_rss_kib: Option<u64>,
    /// On-CPU time of the child's threads by then (schedstat): unlike the
    /// wall-clock figures, hardly moved by other load on the machine.
    pub cpu: Option<Duration>,
}

/// A harness failure (not a function's: those are [`Outcome`]s).
#[derive(Debug)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn err(context: impl fmt::Display, e: impl fmt::Display) -> Error {
    Error(format!("{context}: {e}"))
}

/// Starts `run.binary` once against a fresh Runtime API and measures it; the
/// child is killed after its first response (it is then waiting for the next
/// invocation), or at the timeout.
pub fn measure(run: &Run) -> Result<Sample, Error> {
    let api = RuntimeApi::start(run.event.clone(), run.timeout)
        .map_err(|e| err("cannot serve the Runtime API on 127.0.0.1", e))?;
    let log = File::create(&run.log).map_err(|e| err(format_args!("cannot create {}", run.log.display()), e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| err(format_args!("cannot reopen {}", run.log.display()), e))?;
    let mut command = Command::new(&run.binary);
    command
        .env_clear()
        .envs(run.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", api.addr().to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| err(format_args!("cannot start {}", run.binary.display()), e))?;
    let mut child = Reaper(child);
    let pid = child.0.id();
    let sampler = Sampler::start(pid);

    let mut ready = None;
    let mut first_response = None;
    let mut outcome = Outcome::TimedOut;
    let deadline = started + run.timeout * 2;
    while Instant::now() < deadline {
        match api.next_hit(Duration::from_millis(5)) {
            Some(hit) => match hit.kind {
                HitKind::Next => {
                    if ready.is_none() {
                        ready = Some(hit.at - started);
                    }
                }
                HitKind::Response(body) => {
                    first_response = Some(hit.at - started);
                    outcome = Outcome::Response(body);
                    break;
                }
                HitKind::Error(body) => {
                    first_response = Some(hit.at - started);
                    outcome = Outcome::Error(body);
                    break;
                }
                HitKind::InitError(body) => {
                    outcome = Outcome::InitError(body);
                    break;
                }
            },
            None => {
                if let Ok(Some(status)) = child.0.try_wait() {
                    outcome = Outcome::Exited(status.to_string());
                    break;
                }
            }
        }
    }
    if matches!(outcome, Outcome::Response(_) | Outcome::Error(_)) {
        // Let it reach its second `/next`: the peak of the whole invocation.
        let settle = Instant::now() + Duration::from_millis(500);
        while Instant::now() < settle {
            if let Some(hit) = api.next_hit(Duration::from_millis(5)) {
                if hit.kind == HitKind::Next {
                    break;
                }
            }
        }
    }
    let cpu = cpu_time(pid);
    let peak_rss_kib = sampler.finish();
    drop(child);
    Ok(Sample {
        ready,
        first_response,
        outcome,
        peak_rss_kib,
        cpu,
    })
}

/// Kills and reaps the child however [`measure`] ends.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Samples the child's VmHWM every millisecond (it only grows).
struct Sampler {
    pid: u32,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = thread::Builder::new()
            .name("vmhwm".into())
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    if let Some(kib) = vm_hwm_kib(pid) {
                        p.fetch_max(kib, Ordering::SeqCst);
                    }
                    thread::sleep(Duration::from_millis(1));
                }
            })
            .ok();
        Sampler {
            pid,
            stop,
            peak,
            thread,
        }
    }

    fn finish(mut self) -> Option<u64> {
        if let Some(kib) = vm_hwm_kib(self.pid) {
            self.peak.fetch_max(kib, Ordering::SeqCst);
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Some(self.peak.load(Ordering::SeqCst)).filter(|&k| k > 0)
    }
}

/// `VmHWM` of /proc/<pid>/status in KiB (none once the process is gone or a zombie).
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The on-CPU time of the live threads of `pid` (the first field of each
/// /proc/<pid>/task/<tid>/schedstat, in ns); none when the process is gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut ns = 0u64;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (ns > 0).then(|| Duration::from_nanos(ns))
}

/// The size of `binary` once stripped (`strip` into a temporary file), or
/// `None` when no `strip` is installed.
pub fn stripped_size(binary: &Path, scratch: &Path) -> Option<u64> {
    let out = scratch.join("stripped");
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(binary)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let size = if ok {
        std::fs::metadata(&out).ok().map(|m| m.len())
    } else {
        None
    };
    let _ = std::fs::remove_file(&out);
    size
}

/// Median, min and max of some figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(Stats::of([3.0, 1.0, 2.0]).map(|s| s.median), Some(2.0));
        assert_eq!(
            Stats::of([4.0, 1.0, 2.0, 3.0]),
            Some(Stats {
                median: 2.5,
                min: 1.0,
                max: 4.0
            })
        );
        assert_eq!(Stats::of([]), None);
    }

    #[test]
    fn reads_its_own_peak_memory_and_cpu_time() {
        assert!(vm_hwm_kib(std::process::id()).is_some_and(|k| k > 0));
        assert!(cpu_time(std::process::id()).is_some_and(|t| t > Duration::ZERO));
    }
}
