//! Pausing a campaign: its running instances exit, a page at a time, and
//! nothing is sent after the pause.

use super::*;

#[tokio::test]
async fn pausing_a_campaign_exits_its_running_instances_at_once() {
    let world = World::stored().await;
    let e = world
        .commerce_event(
            "cart-p1",
            "CartAbandoned",
            json!({ "cart_id": "p1", "total_value_minor": 6000 }),
        )
        .await;
    let started = world.engine.on_event(&e).await.expect("start").started;
    assert_eq!(world.scheduler.pending().len(), 1);
    world
        .campaigns()
        .pause("abandoned-cart", Actor::api("t"))
        .await
        .expect("paused");
    let paused = world.engine.on_campaign_paused("abandoned-cart").await.expect("pause");
    assert_eq!(paused.advanced, started);
    assert!(world.scheduler.pending().is_empty());
    assert!(matches!(
        world.journey_events(&started[0]).await.last(),
        Some(JourneyEvent::JourneyExited {
            reason: crate::journey::instance::ExitReason::CampaignPaused,
            ..
        })
    ));
    assert!(world
        .engine
        .on_campaign_paused("abandoned-cart")
        .await
        .expect("again")
        .advanced
        .is_empty());
    assert!(world.advance(chrono::Duration::days(2)).await.is_empty());
}

#[tokio::test]
async fn a_timer_that_fires_after_the_pause_sends_nothing() {
    let world = World::stored().await;
    let id = world.abandon("p2").await.expect("start").started[0].clone();
    // Paused; the pause's own exits have not reached this instance yet.
    world
        .campaigns()
        .pause("abandoned-cart", Actor::api("t"))
        .await
        .expect("paused");
    assert!(
        world.advance(chrono::Duration::hours(1)).await.is_empty(),
        "no reminder after the pause"
    );
    assert!(matches!(
        world.journey_events(&id).await.last(),
        Some(JourneyEvent::JourneyExited {
            reason: crate::journey::instance::ExitReason::CampaignPaused,
            ..
        })
    ));
    assert!(world.scheduler.pending().is_empty());
    assert_eq!(
        world.campaign_lines("abandoned-cart").await,
        0,
        "it left the campaign's partition"
    );
}

#[tokio::test]
async fn pausing_exits_the_instances_a_page_at_a_time_over_continuations() {
    let world = World::stored().await;
    let total = PAUSE_PAGE * 2 + 30;
    for n in 0..total {
        world.abandon(&format!("m{n}")).await.expect("start");
    }
    assert_eq!(world.scheduler.pending().len(), total);
    let service = world.campaigns();
    service.pause("abandoned-cart", Actor::api("t")).await.expect("paused");
    let stream = crate::journey::catalog::stream_id("abandoned-cart");
    let read_campaign = || async { world.events.read_stream(&stream, 0, 1000).await.expect("read") };

    // The API's call: the first page, and a continuation.
    world.docs.most_index_lines_read.store(0, Ordering::SeqCst);
    let before = world.docs.index_lists.load(Ordering::SeqCst);
    let first = world.engine.on_campaign_paused("abandoned-cart").await.expect("page 1");
    assert_eq!(world.docs.index_lists.load(Ordering::SeqCst) - before, 1);
    assert_eq!(first.advanced.len(), PAUSE_PAGE);
    let paused_event = read_campaign()
        .await
        .into_iter()
        .find(|e| e.event_type == "CampaignPaused")
        .expect("paused event");

    // The campaign function receives each continuation in turn.
    let mut exited = first.advanced.len();
    let mut handled = paused_event.version;
    let mut continuations = 0;
    loop {
        let next = read_campaign()
            .await
            .into_iter()
            .find(|e| e.version > handled && e.event_type == "CampaignPauseContinued");
        let Some(next) = next else { break };
        continuations += 1;
        assert!(next.causation_id.is_some());
        let before = world.docs.index_lists.load(Ordering::SeqCst);
        let page = world.engine.on_event(&next).await.expect("next page");
        assert_eq!(
            world.docs.index_lists.load(Ordering::SeqCst) - before,
            1,
            "one page read per call"
        );
        exited += page.advanced.len();
        handled = next.version;
        assert!(continuations < 10, "the chain ends");
    }
    assert_eq!(continuations, 2);
    assert_eq!(exited, total);
    assert!(world.docs.most_index_lines_read.load(Ordering::SeqCst) <= PAUSE_PAGE);
    assert!(world.scheduler.pending().is_empty(), "every timer deleted");
    assert_eq!(world.campaign_lines("abandoned-cart").await, 0);

    // The CampaignPaused itself arriving through the bus, and a redelivered
    // continuation, find nothing left and start no second chain.
    let events_before = read_campaign().await.len();
    assert!(world
        .engine
        .on_event(&paused_event)
        .await
        .expect("bus")
        .advanced
        .is_empty());
    let last = read_campaign().await.pop().expect("last");
    assert!(world
        .engine
        .on_event(&last)
        .await
        .expect("redelivered")
        .advanced
        .is_empty());
    assert_eq!(read_campaign().await.len(), events_before);
}

#[tokio::test]
async fn a_duplicated_pause_step_does_not_fork_the_chain() {
    let world = World::stored().await;
    for n in 0..PAUSE_PAGE + 1 {
        world.abandon(&format!("f{n}")).await.expect("start");
    }
    world
        .campaigns()
        .pause("abandoned-cart", Actor::api("t"))
        .await
        .expect("paused");
    let stream = crate::journey::catalog::stream_id("abandoned-cart");
    let paused = world
        .events
        .read_stream(&stream, 0, 100)
        .await
        .expect("read")
        .into_iter()
        .find(|e| e.event_type == "CampaignPaused")
        .expect("paused");
    // The API and the bus both run the first step.
    world.engine.on_campaign_paused("abandoned-cart").await.expect("api");
    world.engine.on_event(&paused).await.expect("bus");
    let continued: Vec<_> = world
        .events
        .read_stream(&stream, 0, 100)
        .await
        .expect("read")
        .into_iter()
        .filter(|e| e.event_type == "CampaignPauseContinued")
        .collect();
    assert_eq!(continued.len(), 1, "one chain");
    world.engine.on_event(&continued[0]).await.expect("page 2");
    assert_eq!(world.campaign_lines("abandoned-cart").await, 0);
}

#[tokio::test]
async fn pausing_exits_an_instance_whose_start_stopped_after_its_append() {
    let world = World::stored().await;
    let id = half_started(&world, "h6").await;
    world
        .campaigns()
        .pause("abandoned-cart", Actor::api("t"))
        .await
        .expect("paused");
    let paused = world.engine.on_campaign_paused("abandoned-cart").await.expect("pause");
    assert_eq!(paused.advanced, vec![id.clone()]);
    let state = world.instance(&id).await;
    assert_eq!(state.status, InstanceStatus::Exited);
    assert_eq!(world.campaign_lines("abandoned-cart").await, 0);
    assert!(world.scheduler.pending().is_empty());
    assert!(world.advance(chrono::Duration::days(2)).await.is_empty());
}
