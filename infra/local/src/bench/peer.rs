//! `crm-local bench --peer PYTHON` (issue 22 item 3, decision 0091): runs
//! `PYTHON <script> --customers N` (the script is `scripts/peer_bench.py`,
//! the Python `eventsourcing` library on SQLite: load, decide and save per
//! command, no HTTP, no projections), reads the one JSON object it prints,
//! and puts its append and read rates beside the bench's.
//!
//! Whether the peer can run is checked before the bench starts
//! (`PYTHON <script> --help`: the interpreter, the script and the library it
//! imports), so a missing one fails at once. A peer that fails later (after
//! the bench's phases) is reported in its section and the JSON
//! (`peer_error`); the rest of the report still prints, and the command
//! exits non-zero.

use super::BenchError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// What to run.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The Python interpreter (`.venv/bin/python`).
    pub python: PathBuf,
    /// The script, relative to the current directory or absolute.
    pub script: PathBuf,
    /// Customers the peer registers (5 events each).
    pub customers: u64,
}

/// The script's figures, as it prints them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerReport {
    pub library: String,
    pub customers: u64,
    pub events: u64,
    pub command_seconds: f64,
    /// Events appended per second by the commands (load, decide, save).
    pub events_per_second: f64,
    pub read_seconds: f64,
    /// Every event read back from the recorder, pages of 1 000 (0 when the
    /// read was too quick to time).
    #[serde(default, deserialize_with = "number_or_null")]
    pub read_events_per_second: f64,
}

fn number_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(0.0))
}

/// The report in the script's output: its last line that is a JSON object.
pub fn parse(stdout: &str) -> Result<PeerReport, String> {
    let line = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("the peer printed no JSON object: {:?}", tail(stdout)))?;
    let report: PeerReport =
        serde_json::from_str(line).map_err(|e| format!("the peer's JSON is not its report ({e}): {line}"))?;
    if report.events == 0 || report.events_per_second <= 0.0 {
        return Err(format!("the peer appended nothing: {line}"));
    }
    Ok(report)
}

/// The last few hundred characters of an output, for an error.
fn tail(text: &str) -> &str {
    let text = text.trim();
    let mut start = text.len().saturating_sub(600);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn command(options: &PeerOptions) -> Command {
    let mut command = Command::new(&options.python);
    command.arg(&options.script).stdin(Stdio::null());
    command
}

/// Checks that the peer can run: the script is there and `PYTHON <script>
/// --help` succeeds (the interpreter starts and the library imports).
pub fn check(options: &PeerOptions) -> Result<(), BenchError> {
    if !options.script.is_file() {
        return Err(BenchError::Other(format!(
            "--peer-script {}: no such file (the default is relative to the current directory: \
             run from the repository root, or pass --peer-script)",
            options.script.display()
        )));
    }
    let output = command(options)
        .arg("--help")
        .output()
        .map_err(|e| BenchError::Other(format!("--peer {}: cannot run it: {e}", options.python.display())))?;
    if !output.status.success() {
        return Err(BenchError::Other(format!(
            "--peer: `{} {} --help` failed ({}): {} (the peer needs the eventsourcing library: \
             .venv/bin/pip install -r scripts/requirements-dev.txt)",
            options.python.display(),
            options.script.display(),
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr))
        )));
    }
    Ok(())
}

/// Runs the peer: its report, or why not.
pub async fn run(options: &PeerOptions) -> Result<PeerReport, String> {
    let mut command = command(options);
    command.arg("--customers").arg(options.customers.max(1).to_string());
    let python = options.python.display().to_string();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .map_err(|e| format!("the peer's task: {e}"))?
        .map_err(|e| format!("--peer {python}: cannot run it: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "the peer failed ({}): {}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr))
        ));
    }
    parse(&String::from_utf8_lossy(&output.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_the_last_json_line_and_a_null_read_rate_is_zero() {
        let out = "warming up\n{\"library\": \"eventsourcing 9.5.0\", \"customers\": 2, \"events\": 10, \
                   \"command_seconds\": 0.5, \"events_per_second\": 20.0, \"read_seconds\": 0.0, \
                   \"read_events_per_second\": null}\n";
        let report = parse(out).expect("report");
        assert_eq!(
            (report.events, report.events_per_second, report.read_events_per_second),
            (10, 20.0, 0.0)
        );
        assert!(parse("Traceback: no module named eventsourcing").is_err());
        assert!(parse("{\"library\": \"x\"}").is_err(), "fields missing");
        let nothing = "{\"library\": \"x\", \"customers\": 0, \"events\": 0, \"command_seconds\": 0, \
                       \"events_per_second\": 0, \"read_seconds\": 0, \"read_events_per_second\": 0}";
        assert!(parse(nothing).is_err(), "an empty run is no figure");
    }

    #[test]
    fn a_missing_script_or_interpreter_is_a_clear_error_before_the_bench() {
        let missing = PeerOptions {
            python: "python3".into(),
            script: "/nonexistent/peer_bench.py".into(),
            customers: 1,
        };
        let e = check(&missing).expect_err("no script").to_string();
        assert!(
            e.contains("--peer-script /nonexistent/peer_bench.py: no such file"),
            "{e}"
        );
        let dir = tempfile::tempdir().expect("dir");
        let script = dir.path().join("peer.sh");
        std::fs::write(&script, "exit 0\n").expect("script");
        let no_python = PeerOptions {
            python: dir.path().join("no-such-python"),
            script,
            customers: 1,
        };
        let e = check(&no_python).expect_err("no interpreter").to_string();
        assert!(e.contains("cannot run it"), "{e}");
    }

    /// A stand-in for the peer: `sh` runs it as `python` would the script.
    fn fake(dir: &std::path::Path, body: &str) -> PeerOptions {
        let script = dir.join("peer.sh");
        std::fs::write(&script, body).expect("script");
        PeerOptions {
            python: "sh".into(),
            script,
            customers: 4,
        }
    }

    #[tokio::test]
    async fn the_peer_runs_with_its_customers_and_a_failure_says_why() {
        let dir = tempfile::tempdir().expect("dir");
        let good = fake(
            dir.path(),
            r#"[ "$1" = --help ] && exit 0
n=$2
echo "peer: warming up"
echo "{\"library\": \"fake\", \"customers\": $n, \"events\": $((n * 5)), \"command_seconds\": 1, \"events_per_second\": $((n * 5)), \"read_seconds\": 0.5, \"read_events_per_second\": 40}"
"#,
        );
        check(&good).expect("the fake peer can run");
        let report = run(&good).await.expect("report");
        assert_eq!(
            (report.customers, report.events, report.events_per_second),
            (4, 20, 20.0)
        );
        let bad = fake(
            dir.path(),
            "[ \"$1\" = --help ] && exit 0\necho 'ModuleNotFoundError: eventsourcing' >&2\nexit 3\n",
        );
        check(&bad).expect("--help passes");
        let e = run(&bad).await.expect_err("it fails");
        assert!(
            e.contains("the peer failed") && e.contains("ModuleNotFoundError"),
            "{e}"
        );
        let refuses_help = fake(dir.path(), "echo 'No module named eventsourcing' >&2\nexit 1\n");
        let e = check(&refuses_help).expect_err("no library").to_string();
        assert!(
            e.contains("No module named eventsourcing") && e.contains("requirements-dev.txt"),
            "{e}"
        );
    }
}
