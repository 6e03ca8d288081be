//! The sweep: lost timers re-armed, overdue waits fired once, half-started
//! instances healed, orphaned index lines removed.

use super::*;

#[tokio::test]
async fn the_sweep_rearms_a_missing_timer_and_fires_an_overdue_one_exactly_once() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let a = world.abandon("s1").await.expect("start").started[0].clone();
    let b = world.abandon("s2").await.expect("start").started[0].clone();
    let budget = whole_sweep();
    // Nothing to repair.
    let swept = world.engine.sweep(budget).await.expect("sweep");
    assert_eq!(swept.examined, 2);
    assert!(swept.rearmed.is_empty() && swept.fired.is_empty() && swept.healed.is_empty());
    assert!(swept.finished_walk);

    // A's schedule is lost: the sweep creates it again, the same timer.
    let lost = world
        .scheduler
        .pending()
        .into_iter()
        .find(|t| t.stream_id.ends_with(&a))
        .expect("a's timer");
    world.scheduler.cancel(&lost.name).await.expect("lose it");
    let swept = world.engine.sweep(budget).await.expect("sweep");
    assert_eq!(swept.rearmed, vec![a.clone()]);
    assert!(world.scheduler.pending().contains(&lost));

    // B's timer fired but the event never arrived (the schedule is gone),
    // and the due time is long past: the sweep runs the step, once.
    let b_timer = world
        .scheduler
        .pending()
        .into_iter()
        .find(|t| t.stream_id.ends_with(&b))
        .expect("b's timer");
    world.scheduler.cancel(&b_timer.name).await.expect("fired and deleted");
    world.clock.advance(chrono::Duration::minutes(90));
    world
        .scheduler
        .cancel(&lost.name)
        .await
        .expect("a's fired too, and its step runs late as well");
    let swept = world.engine.sweep(budget).await.expect("sweep");
    let mut fired = swept.fired.clone();
    fired.sort();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(fired, both);
    assert_eq!(swept.messages.len(), 2, "one reminder each");
    let again = world.engine.sweep(budget).await.expect("sweep again");
    assert!(again.fired.is_empty() && again.messages.is_empty(), "{again:?}");
    // The lost timer arriving late after all changes nothing.
    assert!(world.engine.on_timer(&b_timer).await.expect("late").messages.is_empty());
    for id in [&a, &b] {
        let reminders = world
            .journey_events(id)
            .await
            .iter()
            .filter(|e| matches!(e, JourneyEvent::MessageRequested { .. }))
            .count();
        assert_eq!(reminders, 1, "{id}");
    }
    // Both wait for their 24 h timers now, which are set.
    assert_eq!(world.scheduler.pending().len(), 2);
}

#[tokio::test]
async fn the_sweep_reads_a_page_at_a_time_and_rests_after_a_walk() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    for n in 0..5 {
        world.abandon(&format!("w{n}")).await.expect("start");
    }
    let budget = SweepBudget {
        page_size: 2,
        pages: 1,
        rest: chrono::Duration::hours(1),
    };
    let mut examined = 0;
    let mut calls = 0;
    loop {
        let reads = world.docs.index_lists.load(Ordering::SeqCst);
        let swept = world.engine.sweep(budget).await.expect("sweep");
        calls += 1;
        assert_eq!(
            world.docs.index_lists.load(Ordering::SeqCst) - reads,
            1,
            "one page per call"
        );
        examined += swept.examined;
        if swept.finished_walk {
            break;
        }
        assert!(calls < 10, "the walk ends");
    }
    assert_eq!(examined, 5);
    assert_eq!(calls, 3);
    assert!(world.engine.sweep(budget).await.expect("rest").resting);
    world.clock.advance(chrono::Duration::hours(2));
    assert_eq!(world.engine.sweep(budget).await.expect("again").examined, 2);
}

/// The input of the recurring schedule that runs the sweep on AWS (decision
/// 0033): a `TimerFired` whose detail is this timer reaches the campaign
/// function like every timer and runs one sweep step.
const SWEEP_SCHEDULE_INPUT: &str = r#"{"name":"crm-journey-sweep","kind":"journey-wait","stream_id":"journey-sweep","due_at":"2026-01-01T00:00:00Z","set_at_version":0,"data":null}"#;

#[tokio::test]
async fn a_fired_sweep_timer_runs_a_sweep_step() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let id = world.abandon("t1").await.expect("start").started[0].clone();
    let timer: crate::scheduler::TimerPayload = serde_json::from_str(SWEEP_SCHEDULE_INPUT).expect("a timer");
    assert_eq!(timer.stream_id, SWEEP_STREAM);
    assert_eq!(timer.name, sweep_timer(world.clock.now()).name);
    let lost = world.scheduler.pending().remove(0);
    world.scheduler.cancel(&lost.name).await.expect("lost");
    world.engine.on_timer(&timer).await.expect("sweep step");
    assert_eq!(world.scheduler.pending(), vec![lost], "{id}'s timer is back");

    // The schedule's input can set the budget.
    assert_eq!(SweepBudget::from_timer_data(&timer.data), SweepBudget::default());
    let tuned = SweepBudget::from_timer_data(&json!({ "pages": 7, "page_size": 50, "rest_minutes": 30 }));
    assert_eq!(
        tuned,
        SweepBudget {
            page_size: 50,
            pages: 7,
            rest: chrono::Duration::minutes(30)
        }
    );
}

#[tokio::test]
async fn the_sweep_heals_an_instance_whose_start_stopped_after_its_append() {
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let id = half_started(&world, "h5").await;
    let budget = whole_sweep();
    // Found through its campaign's line: timer set again, index written.
    let swept = world.engine.sweep(budget).await.expect("sweep");
    assert_eq!(swept.healed, vec![id.clone()]);
    assert_eq!(world.scheduler.pending().len(), 1, "the 1 h wait");
    let state = world.instance(&id).await;
    let index = world.index().await;
    assert_eq!(index[0].version, state.version);
    assert_eq!(world.advance(chrono::Duration::hours(1)).await.len(), 1, "one reminder");
}

#[tokio::test]
async fn the_sweep_removes_an_index_line_whose_append_never_came_after_the_grace() {
    // Given a start that wrote its index lines, then failed to append, and
    // whose trigger never comes back; and another start that stopped after
    // its append (its lines are at version 0 too, but it has a stream).
    let world = World::with_shipped(&["abandoned-cart"]).await;
    let healed = half_started(&world, "o0").await;
    let (_, crashing) = world.engine_whose_journey_appends_fail(vec![shipped("abandoned-cart")]);
    let abandoned = world.abandoned_cart("o1").await;
    assert_eq!(
        crashing.on_event(&abandoned).await.map_err(|e| e.kind()),
        Err(FailureKind::Retryable)
    );
    let orphan = world
        .index()
        .await
        .into_iter()
        .map(|line| line.instance_id)
        .find(|id| *id != healed)
        .expect("the orphan's line");
    let budget = whole_sweep();

    // When the sweep runs within the grace: the line stays (its redelivery may still come).
    world.clock.advance(chrono::Duration::minutes(30));
    let early = world.engine.sweep(budget).await.expect("sweep");
    assert!(early.orphans_removed.is_empty(), "{early:?}");
    assert_eq!(world.campaign_lines("abandoned-cart").await, 2);

    // When it runs after the grace.
    world.clock.advance(ORPHAN_LINE_GRACE);
    let swept = world.engine.sweep(budget).await.expect("sweep");

    // Then the orphan's lines are gone, both the campaign's and the
    // customer's; the started instance's are not.
    assert_eq!(swept.orphans_removed, vec![orphan.clone()]);
    let lines: Vec<String> = world.index().await.into_iter().map(|line| line.instance_id).collect();
    assert_eq!(lines, vec![healed.clone()]);
    assert_eq!(world.campaign_lines("abandoned-cart").await, 1);

    // A trigger that does come back after all starts the instance, once, indexed.
    let started = world.engine.on_event(&abandoned).await.expect("redelivered").started;
    assert_eq!(started, vec![orphan.clone()]);
    let state = world.instance(&orphan).await;
    let line = world
        .index()
        .await
        .into_iter()
        .find(|line| line.instance_id == orphan)
        .expect("indexed again");
    assert_eq!(line.version, state.version);
    assert!(world
        .engine
        .sweep(budget)
        .await
        .expect("sweep")
        .orphans_removed
        .is_empty());
}
