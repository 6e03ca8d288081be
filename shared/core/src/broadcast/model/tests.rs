//! The broadcast aggregate: given events, when a command, then events.

use super::*;
use chrono::TimeZone;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap()
}

fn definition(send: SendTime) -> BroadcastDefinition {
    BroadcastDefinition {
        template: "spring".into(),
        channel: Channel::Email,
        audience: Audience {
            segments: vec!["vip".into()],
            exclude: vec![],
        },
        send,
        rate_per_second: 10,
        subject_test: None,
    }
}

fn decide(
    state: Option<&BroadcastState>,
    command: BroadcastCommand,
    now: DateTime<Utc>,
) -> Result<Vec<BroadcastEvent>, BroadcastRejected> {
    let ctx = DecideContext {
        id: "b1",
        now,
        input: &(),
    };
    Broadcast::decide(state, &command, &ctx)
}

/// Folds `events` (each at `now`) onto `state`.
fn fold(mut state: Option<BroadcastState>, events: &[BroadcastEvent], now: DateTime<Utc>) -> Option<BroadcastState> {
    for e in events {
        let version = state.as_ref().map_or(1, |s| s.version + 1);
        state = Broadcast::evolve(state, e, now, version);
    }
    state
}

fn run(
    state: Option<BroadcastState>,
    command: BroadcastCommand,
    now: DateTime<Utc>,
) -> (Option<BroadcastState>, Vec<BroadcastEvent>) {
    let events = decide(state.as_ref(), command, now).unwrap();
    (fold(state, &events, now), events)
}

fn names(events: &[BroadcastEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap()["type"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn scheduling_twice_with_the_same_definition_is_a_retry_and_another_is_refused() {
    let (s, events) = run(None, BroadcastCommand::Schedule(definition(SendTime::Now)), at(9, 0));
    assert_eq!(names(&events), ["BroadcastScheduled"]);
    let s = s.unwrap();
    assert_eq!(s.phase, Phase::Scheduled);
    assert_eq!(s.next_step_at(), Some(at(9, 0)));
    assert!(decide(
        Some(&s),
        BroadcastCommand::Schedule(definition(SendTime::Now)),
        at(9, 1)
    )
    .unwrap()
    .is_empty());
    let other = definition(SendTime::At { at: at(12, 0) });
    assert_eq!(
        decide(Some(&s), BroadcastCommand::Schedule(other), at(9, 1)),
        Err(BroadcastRejected::AlreadyExists("b1".into()))
    );
    assert_eq!(
        decide(None, BroadcastCommand::Pause, at(9, 0)),
        Err(BroadcastRejected::NotFound)
    );
}

#[test]
fn a_send_snapshots_its_audience_then_sends_each_bucket_page_by_page_at_the_rate() {
    let (s, _) = run(None, BroadcastCommand::Schedule(definition(SendTime::Now)), at(9, 0));
    let (s, events) = run(s, BroadcastCommand::Start, at(9, 0));
    assert_eq!(names(&events), ["BroadcastStarted"]);
    // Started once: a second start is nothing.
    assert!(decide(s.as_ref(), BroadcastCommand::Start, at(9, 0))
        .unwrap()
        .is_empty());
    let page = |done: bool, due: DateTime<Utc>| BroadcastCommand::RecordAudience {
        segment: 0,
        after: Some("c-100".into()),
        page_written: true,
        added: 100,
        due: vec![due],
        done,
    };
    let (s, events) = run(s, page(false, at(9, 0)), at(9, 0));
    assert_eq!(names(&events), ["BroadcastAudienceProgressed"]);
    let (s, events) = run(s, page(true, at(10, 0)), at(9, 0));
    assert_eq!(names(&events), ["BroadcastAudienceSnapshotted"]);
    let s = s.unwrap();
    assert_eq!((s.phase, s.pages, s.size, s.due.len()), (Phase::Sending, 2, 200, 2));
    assert_eq!(s.next_step_at(), Some(at(9, 0)));
    // Bucket 0 (09:00), page 0: 100 requested at 10/s: the next step 10 s later.
    let (s, events) = run(
        Some(s),
        BroadcastCommand::RecordPage {
            requested: 100,
            page: 0,
        },
        at(9, 0),
    );
    assert_eq!(names(&events), ["BroadcastPageSent"]);
    let s = s.unwrap();
    assert_eq!((s.bucket, s.page, s.requested), (0, 1, 100));
    assert_eq!(s.next_step_at(), Some(at(9, 0) + Duration::seconds(10)));
    // A step decided on a page already recorded adds nothing.
    assert!(decide(
        Some(&s),
        BroadcastCommand::RecordPage { requested: 5, page: 0 },
        at(9, 1)
    )
    .unwrap()
    .is_empty());
    let (s, _) = run(
        Some(s),
        BroadcastCommand::RecordPage { requested: 40, page: 1 },
        at(9, 1),
    );
    let s = s.unwrap();
    // Bucket 1 waits for its time (10:00), whatever the rate allows.
    assert_eq!((s.bucket, s.page), (1, 0));
    assert_eq!(s.next_step_at(), Some(at(10, 0)));
    let (s, _) = run(
        Some(s),
        BroadcastCommand::RecordPage { requested: 0, page: 0 },
        at(10, 0),
    );
    let (s, events) = run(s, BroadcastCommand::RecordPage { requested: 60, page: 1 }, at(10, 0));
    assert_eq!(names(&events), ["BroadcastPageSent", "BroadcastCompleted"]);
    let s = s.unwrap();
    assert_eq!((s.phase, s.requested), (Phase::Completed, 200));
    assert_eq!(s.next_step_at(), None);
    assert!(matches!(
        decide(Some(&s), BroadcastCommand::Pause, at(10, 1)),
        Err(BroadcastRejected::NotNow(_))
    ));
}

#[test]
fn pause_stops_the_steps_resume_continues_cancel_ends() {
    let (s, _) = run(None, BroadcastCommand::Schedule(definition(SendTime::Now)), at(9, 0));
    let (s, _) = run(s, BroadcastCommand::Start, at(9, 0));
    let (s, events) = run(s, BroadcastCommand::Pause, at(9, 0));
    assert_eq!(names(&events), ["BroadcastPaused"]);
    let s = s.unwrap();
    assert_eq!(s.next_step_at(), None);
    // A step decided while paused records nothing.
    let step = BroadcastCommand::RecordAudience {
        segment: 1,
        after: None,
        page_written: true,
        added: 3,
        due: vec![at(9, 0)],
        done: true,
    };
    assert!(decide(Some(&s), step.clone(), at(9, 1)).unwrap().is_empty());
    assert!(decide(Some(&s), BroadcastCommand::Pause, at(9, 1)).unwrap().is_empty());
    let (s, events) = run(Some(s), BroadcastCommand::Resume, at(9, 5));
    assert_eq!(names(&events), ["BroadcastResumed"]);
    let s = s.unwrap();
    assert_eq!(s.next_step_at(), Some(at(9, 5)));
    assert!(matches!(
        decide(Some(&s), BroadcastCommand::Resume, at(9, 5)),
        Err(BroadcastRejected::NotNow(_))
    ));
    let (s, _) = run(Some(s), step, at(9, 5));
    let (s, events) = run(s, BroadcastCommand::Cancel, at(9, 6));
    assert_eq!(names(&events), ["BroadcastCancelled"]);
    let s = s.unwrap();
    assert_eq!((s.phase, s.next_step_at()), (Phase::Cancelled, None));
    assert!(decide(Some(&s), BroadcastCommand::Cancel, at(9, 7)).unwrap().is_empty());
    assert!(decide(
        Some(&s),
        BroadcastCommand::RecordPage { requested: 3, page: 0 },
        at(9, 7)
    )
    .unwrap()
    .is_empty());
}

#[test]
fn an_empty_audience_completes_at_once() {
    let (s, _) = run(None, BroadcastCommand::Schedule(definition(SendTime::Now)), at(9, 0));
    let (s, _) = run(s, BroadcastCommand::Start, at(9, 0));
    let done = BroadcastCommand::RecordAudience {
        segment: 1,
        after: None,
        page_written: false,
        added: 0,
        due: vec![],
        done: true,
    };
    let (s, events) = run(s, done, at(9, 0));
    assert_eq!(names(&events), ["BroadcastAudienceSnapshotted", "BroadcastCompleted"]);
    assert_eq!(s.unwrap().phase, Phase::Completed);
}

#[test]
fn a_local_time_is_due_at_that_time_in_each_zone() {
    let send = SendTime::Local {
        date: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
        time: "10:00".into(),
    };
    // The send starts when UTC+14 reaches 10:00.
    assert_eq!(
        send.start_at(at(0, 0)),
        Utc.with_ymd_and_hms(2026, 3, 1, 20, 0, 0).unwrap()
    );
    let start = send.start_at(at(0, 0));
    assert_eq!(send.due_for(start, "Europe/Berlin"), at(9, 0));
    assert_eq!(send.due_for(start, "America/New_York"), at(15, 0));
    assert_eq!(send.due_for(start, "Asia/Tokyo"), at(1, 0));
    assert_eq!(send.due_for(start, "UTC"), at(10, 0));
    // An unknown zone is UTC.
    assert_eq!(send.due_for(start, "Mars/Olympus"), at(10, 0));
    // A time skipped by the clock change (02:30 on 2026-03-29 in Berlin) is an hour later.
    let gap = SendTime::Local {
        date: NaiveDate::from_ymd_opt(2026, 3, 29).unwrap(),
        time: "02:30".into(),
    };
    assert_eq!(
        gap.due_for(start, "Europe/Berlin"),
        Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap()
    );
    assert!(SendTime::local_time("25:00").is_none());
    assert!(SendTime::local_time("9:00").is_none());
}

#[test]
fn message_ids_are_one_per_broadcast_and_customer() {
    assert_eq!(message_id("b1", "c-1"), message_id("b1", "c-1"));
    assert_ne!(message_id("b1", "c-1"), message_id("b1", "c-2"));
    assert_ne!(message_id("b1", "c-1"), message_id("b2", "c-1"));
    assert!(valid_id("spring-sale_2026"));
    assert!(!valid_id("Spring"));
    assert!(!valid_id("x-audience-1"));
    assert!(!valid_id(""));
}

fn subject_test(percent: u32) -> SubjectTest {
    SubjectTest {
        variants: vec![
            SubjectVariant {
                id: "a".into(),
                subject: "Spring is here".into(),
            },
            SubjectVariant {
                id: "b".into(),
                subject: "{{ first_name }}, spring is here".into(),
            },
        ],
        test_percent: percent,
        decide_after_minutes: 120,
        metric: WinnerMetric::Opened,
    }
}

/// A broadcast with a subject test, snapshotted: `pages` pages due at 09:00.
fn tested(pages: u64) -> BroadcastState {
    let mut d = definition(SendTime::Now);
    d.subject_test = Some(subject_test(20));
    let (s, _) = run(None, BroadcastCommand::Schedule(d), at(9, 0));
    let (s, _) = run(s, BroadcastCommand::Start, at(9, 0));
    let (s, _) = run(
        s,
        BroadcastCommand::RecordAudience {
            segment: 1,
            after: None,
            page_written: true,
            added: 90 * pages,
            due: vec![at(9, 0)],
            done: true,
        },
        at(9, 0),
    );
    let mut s = s.unwrap();
    s.pages = pages;
    s
}

#[test]
fn a_subject_test_sends_the_share_waits_then_chooses_the_winner_before_the_rest() {
    let s = tested(2);
    assert_eq!(
        (s.buckets(), s.test_round(0), s.test_round(1)),
        (2, Some(true), Some(false))
    );
    // The test share: bucket 0, both pages; then the wait of 120 minutes.
    let (s, _) = run(
        Some(s),
        BroadcastCommand::RecordPage { requested: 10, page: 0 },
        at(9, 0),
    );
    let (s, events) = run(s, BroadcastCommand::RecordPage { requested: 8, page: 1 }, at(9, 1));
    assert_eq!(
        names(&events),
        ["BroadcastPageSent"],
        "not completed: the rest is to come"
    );
    let s = s.unwrap();
    assert_eq!((s.bucket, s.page), (1, 0));
    assert_eq!(s.decide_at, Some(at(11, 1)));
    assert_eq!(s.next_step_at(), Some(at(11, 1)));
    assert!(s.needs_winner());
    // No page of the rest is recorded before the winner.
    assert!(decide(
        Some(&s),
        BroadcastCommand::RecordPage { requested: 5, page: 0 },
        at(11, 2)
    )
    .unwrap()
    .is_empty());
    let arms = vec![
        ArmResult {
            variant: "a".into(),
            sent: 9,
            count: 2,
        },
        ArmResult {
            variant: "b".into(),
            sent: 9,
            count: 4,
        },
    ];
    let (s, events) = run(
        Some(s),
        BroadcastCommand::ChooseWinner { arms: arms.clone() },
        at(11, 2),
    );
    assert_eq!(names(&events), ["BroadcastWinnerChosen"]);
    let s = s.unwrap();
    assert_eq!(s.winner.as_deref(), Some("b"));
    assert!(!s.needs_winner());
    // Chosen once.
    assert!(decide(Some(&s), BroadcastCommand::ChooseWinner { arms }, at(11, 3))
        .unwrap()
        .is_empty());
    // The rest: bucket 1, both pages, then complete.
    let (s, _) = run(
        Some(s),
        BroadcastCommand::RecordPage { requested: 72, page: 0 },
        at(11, 2),
    );
    let (s, events) = run(s, BroadcastCommand::RecordPage { requested: 90, page: 1 }, at(11, 3));
    assert_eq!(names(&events), ["BroadcastPageSent", "BroadcastCompleted"]);
    assert_eq!(s.unwrap().requested, 180);
}

#[test]
fn the_winner_is_the_best_rate_and_the_first_variant_on_a_tie() {
    let test = subject_test(10);
    let arm = |variant: &str, sent, count| ArmResult {
        variant: variant.into(),
        sent,
        count,
    };
    let winner = |arms: &[ArmResult]| test.winner(arms).map(|v| v.id.clone());
    assert_eq!(winner(&[arm("a", 100, 30), arm("b", 50, 20)]).as_deref(), Some("b"));
    assert_eq!(
        winner(&[arm("a", 100, 30), arm("b", 10, 3)]).as_deref(),
        Some("a"),
        "a tie"
    );
    assert_eq!(
        winner(&[arm("a", 0, 0), arm("b", 0, 0)]).as_deref(),
        Some("a"),
        "nothing sent"
    );
    assert_eq!(winner(&[]).as_deref(), Some("a"));
    let none = SubjectTest {
        variants: vec![],
        ..subject_test(10)
    };
    assert!(none.winner(&[]).is_none());
}

#[test]
fn the_test_share_and_the_variants_follow_the_hash_in_their_proportions() {
    let test = subject_test(20);
    let customers: Vec<String> = (0..5000).map(|i| format!("c-{i}")).collect();
    let in_test: Vec<&String> = customers.iter().filter(|c| test.in_test("spring", c)).collect();
    let share = in_test.len() as f64 / customers.len() as f64;
    assert!((0.18..=0.22).contains(&share), "test share {share}");
    let a = in_test
        .iter()
        .filter(|c| test.variant_for("spring", c).map(|v| v.id.as_str()) == Some("a"))
        .count() as f64
        / in_test.len() as f64;
    assert!((0.45..=0.55).contains(&a), "variant a's share {a}");
    // The same customer, the same answer; another broadcast, another draw.
    assert_eq!(test.in_test("spring", "c-7"), test.in_test("spring", "c-7"));
    let moved = customers
        .iter()
        .filter(|c| test.in_test("spring", c) != test.in_test("summer", c))
        .count();
    assert!(moved > 500, "the share depends on the broadcast: {moved} moved");
}
