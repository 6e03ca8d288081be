//! `crm-local replay` and `crm-local check`: rebuild a projection or a bus
//! target from the event store (with a progress bar), and compare a sample of
//! folded customer streams with the stored projections (issue 9).

use crate::cli::open_runtime;
use crate::runtime::bus::TemplateFileError;
use crate::runtime::{LocalRuntime, RuntimeError};
use crm_core::ops::{CheckReport, ReplayReport};
use crm_core::ports::{ConsumerHealth, StoreError};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum OpsCliError {
    #[error(transparent)]
    Template(#[from] TemplateFileError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("consistency check: {0}")]
    Check(#[from] crm_core::ops::OpsError),
    #[error("{0} document(s) differ from the event store")]
    Inconsistent(usize),
}

fn bar(total: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} events ({per_sec})")
    {
        bar.set_style(style);
    }
    bar
}

/// What `replay` did, for printing and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The projections rebuilt.
    pub consumers: Vec<String>,
    pub report: ReplayReport,
}

/// Rebuilds `name`: one projection (`customer-360`, `consent-ledger`, ...;
/// the others of its group untouched) or a whole bus target (`projector`,
/// `consent`: [`LocalRuntime::rebuild`], rewinding the target's cursor).
pub async fn replay(runtime: &LocalRuntime, name: &str, quiet: bool) -> Result<Replayed, OpsCliError> {
    let total = u64::try_from(runtime.stored_events.head_position().await?).unwrap_or(0);
    let bar = bar(total, quiet);
    let started = Instant::now();
    let is_target = runtime.bus.targets().iter().any(|t| t.rule.target == name);
    let replayed = if is_target {
        let rebuild = runtime.rebuild(name);
        tokio::pin!(rebuild);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let consumers = loop {
            tokio::select! {
                done = &mut rebuild => break done?,
                _ = tick.tick() => {
                    let lag = runtime.bus.consumers().await?.into_iter().find(|c| c.name == name).map(|c| c.lag);
                    if let Some(lag) = lag {
                        bar.set_position(total.saturating_sub(lag));
                    }
                }
            }
        };
        Replayed {
            consumers: consumers.into_iter().map(str::to_string).collect(),
            report: ReplayReport {
                events: total,
                ..ReplayReport::default()
            },
        }
    } else {
        let report = runtime.rebuild_consumer(name, &mut |n| bar.set_position(n)).await?;
        Replayed {
            consumers: vec![name.to_string()],
            report,
        }
    };
    bar.set_position(replayed.report.events.max(total));
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    if !quiet {
        println!(
            "rebuilt {} from {} events in {:.2} s ({:.0} events/s){}",
            replayed.consumers.join(", "),
            replayed.report.events,
            seconds,
            replayed.report.events as f64 / seconds,
            if replayed.report.parked > 0 {
                format!("; {} parked as dead letters", replayed.report.parked)
            } else {
                String::new()
            }
        );
    }
    Ok(replayed)
}

/// Folds up to `sample` customer streams (0: all) and compares them with
/// the stored customer 360 and consent ledger.
pub async fn check(runtime: &LocalRuntime, sample: usize) -> Result<CheckReport, OpsCliError> {
    let streams = crm_core::ops::sample_streams(runtime.stored_events.as_ref(), sample).await?;
    Ok(crm_core::ops::check(
        runtime.events.as_ref(),
        runtime.docs.as_ref(),
        &crm_core::ops::checked_projections(),
        &streams,
    )
    .await?)
}

/// Prints a check's report; an error when anything differs.
pub fn print_check(report: &CheckReport) -> Result<(), OpsCliError> {
    for d in &report.differences {
        println!(
            "DIFF {} {} {}/{}\n  expected: {}\n  stored:   {}",
            d.consumer,
            d.stream_id,
            d.partition,
            d.sort,
            d.expected
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "(none)".into()),
            d.stored
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "(none)".into()),
        );
    }
    for (consumer, stream) in &report.behind {
        println!("BEHIND {consumer} {stream} (not yet caught up; skipped)");
    }
    println!(
        "checked {} streams, {} documents: {} difference(s)",
        report.streams,
        report.documents,
        report.differences.len()
    );
    if report.is_consistent() {
        Ok(())
    } else {
        Err(OpsCliError::Inconsistent(report.differences.len()))
    }
}

/// `crm-local replay`.
pub async fn run_replay(
    data_dir: &Path,
    template: Option<&Path>,
    consumer: &str,
    quiet: bool,
) -> Result<(), OpsCliError> {
    let runtime = open_runtime::<OpsCliError>(data_dir, template)?;
    replay(&runtime, consumer, quiet).await.map(|_| ())
}

/// `crm-local check`.
pub async fn run_check(data_dir: &Path, template: Option<&Path>, sample: usize) -> Result<(), OpsCliError> {
    let runtime = open_runtime::<OpsCliError>(data_dir, template)?;
    // Deliver what is pending first, so lag is not reported as a difference.
    runtime.bus.settle().await?;
    print_check(&check(&runtime, sample).await?)
}
