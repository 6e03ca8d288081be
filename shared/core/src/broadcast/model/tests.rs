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
