//! `crm-local bench` with tiny sizes: every section is there with non-zero
//! counts, the table and the cost model name them. No timings are asserted.

use crm_local::bench::{cost::CostModel, run, table, BenchOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_every_section_with_tiny_sizes() {
    let options = BenchOptions {
        seed: 7,
        customers: 3,
        concurrency: vec![1, 2],
        events: 1_500,
        fold_events: 300,
        broadcast_recipients: 12,
        progress: false,
    };
    let report = run(&options).await.expect("the bench runs");

    assert_eq!(report.latency.len(), 2);
    for row in &report.latency {
        assert!(row.requests > 0 && row.events_stored > 0, "{row:?}");
        assert!(row.p50_ms > 0.0 && row.p99_ms >= row.p50_ms, "{row:?}");
        assert!(row.ingest_events_per_second > 0.0, "{row:?}");
    }
    assert!(report.replay.events >= 1_500 && report.replay.customers > 0);
    let targets: Vec<_> = report.replay.targets.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(targets, ["projector", "consent"]);
    for t in &report.replay.targets {
        assert!(t.events >= report.replay.events && t.events_per_second > 0.0, "{t:?}");
    }
    assert_eq!(report.replay.dead_letters, 0, "every generated event projects");
    assert_eq!(report.fold.len(), 13, "every projection of projector and consent");
    for f in &report.fold {
        assert!(f.events >= 300 && f.events_per_second > 0.0, "{f:?}");
    }
    assert!(report.workload.mean_event_bytes > 0.0 && report.workload.targets_per_event > 0.0);
    assert!(report.peak_memory_kib > 0);
    // The broadcast: every recipient's message reached the sink, in one
    // audience page; the counts are there (the throughput is only printed).
    let b = &report.broadcast;
    assert_eq!(
        (b.status.as_str(), b.messages, b.audience_pages),
        ("completed", 12, 1),
        "{b:?}"
    );
    assert!(b.events_by_type.get("MessageRequested") == Some(&12), "{b:?}");
    assert!(b.appends.appends > 0 && b.writes.documents > 0, "{b:?}");

    let printed = table(&report);
    for section in [
        "API command latency",
        "Replay:",
        "In-memory fold",
        "Broadcast:",
        "Peak memory",
    ] {
        assert!(printed.contains(section), "{section} missing from\n{printed}");
    }
    let cost = CostModel::from_report(&report, crm_local::runtime::bus::BUILT_IN_TEMPLATE);
    assert_eq!(cost.memory_mb, 256);
    assert!(CostModel::total(&cost.per_million_events) > 0.0);
    assert!(CostModel::total(&cost.per_million_messages) > 0.0);
    let broadcast = cost.broadcast_markdown(&report.broadcast);
    assert!(broadcast.contains("A broadcast to 1 million recipients") && broadcast.contains("SES sends"));
    // SES alone is $100 a million; every counted line adds to it.
    assert!(CostModel::total(&cost.broadcast_lines(&report.broadcast)) > 100.0);
    let markdown = cost.markdown(&report);
    for section in ["Per million customer events", "Per million messages", "us-east-1"] {
        assert!(markdown.contains(section), "{section} missing");
    }
}
