//! `crm-local bench` with tiny sizes: every section is there with non-zero
//! counts, the table and the cost model name them. No timings are asserted.

use crm_local::bench::{cost::CostModel, peer::PeerOptions, run, table, BenchOptions};

/// A stand-in for `scripts/peer_bench.py` (run by `sh` as by Python): its
/// JSON line for the customers it is given.
const FAKE_PEER: &str = r#"[ "$1" = --help ] && exit 0
n=$2
echo "{\"library\": \"fake-peer 1\", \"customers\": $n, \"events\": $((n * 5)), \"command_seconds\": 2, \"events_per_second\": $((n * 5 / 2)), \"read_seconds\": 0.01, \"read_events_per_second\": $((n * 500))}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_runs_every_section_with_tiny_sizes() {
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("peer.sh");
    std::fs::write(&script, FAKE_PEER).expect("fake peer");
    let options = BenchOptions {
        seed: 7,
        customers: 3,
        concurrency: vec![1, 2],
        events: 1_500,
        fold_events: 300,
        broadcast_recipients: 12,
        progress: false,
        peer: Some(PeerOptions {
            python: "sh".into(),
            script,
            customers: 4,
        }),
    };
    let report = run(&options).await.expect("the bench runs");

    assert_eq!(report.latency.len(), 2);
    let groups = ["commands", "reads", "ingestion"];
    for row in &report.latency {
        assert!(row.requests > 0 && row.events_stored > 0, "{row:?}");
        assert!(row.p50_ms > 0.0 && row.p99_ms >= row.p50_ms, "{row:?}");
        assert!(
            row.ingest_events_per_second > 0.0 && row.ingest_customers_per_second > 0.0,
            "{row:?}"
        );
        // Every route group ran; the row's own figures are the commands'.
        let names: Vec<_> = row.route_groups.iter().map(|g| g.group.as_str()).collect();
        assert_eq!(names, groups);
        for g in &row.route_groups {
            assert!(g.requests > 0 && g.p99_ms >= g.p50_ms && g.max_ms >= g.p99_ms, "{g:?}");
        }
        assert_eq!(row.route_groups[0].requests, row.requests);
        assert_eq!(row.route_groups[0].p99_ms, row.p99_ms);
        // Every customer's 360 is read once: answered, or 503 while projecting.
        assert!(row.route_groups[1].also_accepted <= row.customers, "{row:?}");
        assert_eq!(
            row.route_groups[2].requests,
            2 * row.customers,
            "identify and track each"
        );
        let c = &row.group_commits;
        assert!(
            c.groups > 0 && c.appends >= c.groups && c.appends_per_group >= 1.0,
            "{c:?}"
        );
    }
    // The command rate alone: the same calls, the bus never spawned.
    assert_eq!(report.command_rate.len(), 2);
    for (paused, running) in report.command_rate.iter().zip(&report.latency) {
        assert_eq!(paused.concurrency, running.concurrency);
        assert!(
            paused.events_appended > 0 && paused.events_per_second > 0.0,
            "{paused:?}"
        );
        assert!(
            paused.customers_per_second > 0.0 && paused.requests_per_second > 0.0,
            "{paused:?}"
        );
        let requests: Vec<u64> = paused.route_groups.iter().map(|g| g.requests).collect();
        let same: Vec<u64> = running.route_groups.iter().map(|g| g.requests).collect();
        assert_eq!(requests, same, "the same workload's calls");
        assert_eq!(paused.requests, requests.iter().sum::<u64>());
        // No projector ran: every customer's 360 answered 503.
        assert_eq!(paused.route_groups[1].also_accepted, paused.customers, "{paused:?}");
        // Nothing but the calls appended: fewer events than with consumers.
        assert!(paused.events_appended < running.events_stored, "{paused:?} {running:?}");
        let c = &paused.group_commits;
        assert!(c.groups > 0 && c.appends >= c.groups, "{c:?}");
    }
    // The fold of every projection together, on one core and on two.
    let all = &report.fold_all;
    // The 15 that keep read models: the two that decide are not replayed (decision 0093).
    assert_eq!(
        (all.projections, all.events, all.chunks),
        (15, report.fold[0].events, 1)
    );
    assert!(
        all.one_core_events_per_second > 0.0 && all.two_cores_events_per_second > 0.0,
        "{all:?}"
    );
    assert_eq!(all.groups.len(), 2);
    assert!(all.groups.iter().all(|g| !g.is_empty()), "{all:?}");
    let mut split: Vec<&str> = all.groups.iter().flatten().map(String::as_str).collect();
    let mut names: Vec<&str> = report
        .fold
        .iter()
        .map(|f| f.projection.as_str())
        .filter(|p| !["segment-evaluator", "affinity-detector"].contains(p))
        .collect();
    split.sort_unstable();
    names.sort_unstable();
    assert_eq!(split, names, "each projection in one group");
    // Each limit and ratio is there.
    let limits = &report.limits;
    assert_eq!(
        limits.raw_append_events_per_second,
        report.replay.generate_events_per_second
    );
    assert_eq!(limits.levels.len(), 2);
    for level in &limits.levels {
        assert!(level.ingest_over_command_rate > 0.0, "{level:?}");
        assert!(level.ingest_over_raw_append > 0.0, "{level:?}");
        assert!(level.ingest_over_peer_append.is_some_and(|r| r > 0.0), "{level:?}");
    }
    assert!(limits.replay_over_fold_two_cores > 0.0);
    assert!(limits.replay_read_over_peer_read.is_some_and(|r| r > 0.0));
    let peer = report.peer.as_ref().expect("the peer ran");
    assert_eq!(
        (peer.library.as_str(), peer.customers, peer.events),
        ("fake-peer 1", 4, 20)
    );
    assert_eq!(report.peer_error, None);
    assert!(report.replay.read_events_per_second > 0.0);
    assert!(report.replay.events >= 1_500 && report.replay.customers > 0);
    let targets: Vec<_> = report.replay.targets.iter().map(|t| t.target.as_str()).collect();
    // Both targets rebuilt at once, each event read once (decision 0094).
    assert_eq!(targets, ["projector + consent"]);
    for t in &report.replay.targets {
        assert!(t.events >= report.replay.events && t.events_per_second > 0.0, "{t:?}");
    }
    assert_eq!(report.replay.dead_letters, 0, "every generated event projects");
    assert_eq!(report.fold.len(), 17, "every projection of projector and consent");
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
        "Route groups",
        "Group commits",
        "Command rate alone",
        "all 15 that keep read models together",
        "Limits",
        "peer (fake-peer 1)",
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
