//! Segment membership in a journey's conditions (decision 0086): a branch
//! on `segments.<id>` sends members one template and others another, as
//! their segments stream has it when the branch runs; the trigger and an
//! exit rule may test it too; a campaign that names no segment reads no
//! membership.

use super::*;

/// Cart abandonments branch on membership of `de-speakers`: members get
/// the reminder, others the final offer. `wait` puts an hour before the
/// branch.
fn branching(wait: bool) -> Campaign {
    let wait = if wait {
        "  - { id: wait-1h, type: wait, duration: 1h }\n"
    } else {
        ""
    };
    let yaml = format!(
        "id: segment-branch
name: Segment branch
trigger:
  pattern:
    source: [crm.commerce]
    detail-type: [CartAbandoned]
entry:
  reentry: every_time
  dedupe_key: event.detail.data.cart_id
steps:
{wait}  - id: speaks-german
    type: branch
    conditions:
      - path: segments.de-speakers
        op: exists
    then: german
    else: other
  - {{ id: german, type: send, channel: email, template: abandoned-cart-reminder, category: transactional, next: exit }}
  - {{ id: other, type: send, channel: email, template: abandoned-cart-final-offer, category: transactional }}
"
    );
    Campaign::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e:?}"))
}

fn templates_requested(events: &[JourneyEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            JourneyEvent::MessageRequested { template, .. } => Some(template.clone()),
            _ => None,
        })
        .collect()
}

/// The world over `campaigns`, its engine reading through a counting store.
async fn counting_world(campaigns: Vec<Campaign>) -> (World, Arc<CountingEvents>, JourneyEngine) {
    let world = World::new(Arc::new(FixedCatalog::new(campaigns.clone()))).await;
    let counting = Arc::new(CountingEvents::over(world.events.clone()));
    let engine = JourneyEngine::new(
        counting.clone(),
        world.docs.clone(),
        world.scheduler.clone(),
        Arc::new(FixedCatalog::new(campaigns)),
        world.clock.clone(),
    );
    (world, counting, engine)
}

async fn join(world: &World, segment: &str, add: bool) {
    let changed =
        crate::segments::apply_request(world.events.as_ref(), CUSTOMER, segment, add, world.clock.now(), None)
            .await
            .expect("membership");
    assert_eq!(changed.len(), 1, "{segment} changed");
}

fn segment_reads(reads: &[String]) -> usize {
    let stream = crate::segments::stream_id(CUSTOMER);
    reads.iter().filter(|r| **r == stream).count()
}

#[tokio::test]
async fn a_branch_sends_members_one_template_and_others_another() {
    let (world, counting, engine) = counting_world(vec![branching(false)]).await;

    let outsider = world.abandoned_cart("s1").await;
    counting.take_reads();
    let started = engine.on_event(&outsider).await.expect("start").started;
    assert_eq!(segment_reads(&counting.take_reads()), 1, "one membership read");
    assert_eq!(
        templates_requested(&world.journey_events(&started[0]).await),
        vec!["abandoned-cart-final-offer"]
    );

    join(&world, "de-speakers", true).await;
    let member = world.abandoned_cart("s2").await;
    counting.take_reads();
    let started = engine.on_event(&member).await.expect("start").started;
    assert_eq!(segment_reads(&counting.take_reads()), 1, "one membership read");
    let events = world.journey_events(&started[0]).await;
    assert_eq!(templates_requested(&events), vec!["abandoned-cart-reminder"]);
    // The branch and the step it took, as the explain API's chain shows them.
    let entered: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            JourneyEvent::JourneyStepEntered { step_id, .. } => Some(step_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(entered, vec!["speaks-german", "german"]);
}

/// After a wait, the branch reads membership when the timer fires, not as
/// it was at the start.
#[tokio::test]
async fn a_branch_after_a_wait_reads_membership_when_it_runs() {
    let (world, counting, engine) = counting_world(vec![branching(true)]).await;
    let trigger = world.abandoned_cart("w1").await;
    counting.take_reads();
    let started = engine.on_event(&trigger).await.expect("start").started;
    assert_eq!(started.len(), 1);
    // The start reads the membership (the campaign names a segment) and waits.
    assert_eq!(segment_reads(&counting.take_reads()), 1);
    assert!(templates_requested(&world.journey_events(&started[0]).await).is_empty());

    join(&world, "de-speakers", true).await;
    world.clock.advance(chrono::Duration::hours(1));
    let due = world.scheduler.pending();
    assert_eq!(due.len(), 1, "the wait's timer");
    counting.take_reads();
    engine.on_timer(&due[0]).await.expect("timer");
    assert_eq!(segment_reads(&counting.take_reads()), 1, "read again for the timer");
    assert_eq!(
        templates_requested(&world.journey_events(&started[0]).await),
        vec!["abandoned-cart-reminder"]
    );
}

/// A trigger condition on membership (`not_exists`): the journey starts
/// for non-members only; two conditions naming segments read the stream once.
#[tokio::test]
async fn trigger_conditions_test_membership_with_one_read() {
    let mut campaign = branching(false);
    campaign.trigger.conditions = vec![crate::journey::Condition {
        path: "segments.unsubscribed-lately".into(),
        op: crate::journey::Op::NotExists,
        value: None,
    }];
    let (world, counting, engine) = counting_world(vec![campaign]).await;
    let first = world.abandoned_cart("t1").await;
    counting.take_reads();
    assert_eq!(engine.on_event(&first).await.expect("start").started.len(), 1);
    assert_eq!(segment_reads(&counting.take_reads()), 1);

    join(&world, "unsubscribed-lately", true).await;
    let second = world.abandoned_cart("t2").await;
    counting.take_reads();
    assert!(engine.on_event(&second).await.expect("event").started.is_empty());
    assert_eq!(segment_reads(&counting.take_reads()), 1);
}

/// A campaign whose conditions name no segment reads no membership, from
/// its start to its last send.
#[tokio::test]
async fn a_campaign_naming_no_segment_reads_no_membership() {
    let (world, counting, engine) = counting_world(vec![shipped("abandoned-cart")]).await;
    assert!(shipped("abandoned-cart").segments_named().is_empty());
    let trigger = world.abandoned_cart("n1").await;
    counting.take_reads();
    assert_eq!(engine.on_event(&trigger).await.expect("start").started.len(), 1);
    world.clock.advance(chrono::Duration::hours(1));
    for t in world.scheduler.pending() {
        engine.on_timer(&t).await.expect("timer");
    }
    let reads = counting.take_reads();
    assert!(!reads.is_empty());
    assert_eq!(segment_reads(&reads), 0, "{reads:?}");
}

/// An exit rule's condition on membership, tested when a running journey
/// gets the customer's event: a view by a non-member leaves the journey
/// waiting, a view once a member ends it.
#[tokio::test]
async fn an_exit_condition_tests_membership_when_the_event_arrives() {
    let campaign = Campaign::from_yaml(
        "id: member-exit
name: Member exit
trigger:
  pattern:
    source: [crm.commerce]
    detail-type: [CartAbandoned]
exit_on:
  - name: joined-and-looked
    pattern:
      source: [crm.customer]
      detail-type: [ProductViewed]
    conditions:
      - { path: segments.de-speakers, op: exists }
steps:
  - { id: wait-1h, type: wait, duration: 1h }
  - { id: remind, type: send, channel: email, template: abandoned-cart-reminder, category: transactional }
",
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let (world, counting, engine) = counting_world(vec![campaign]).await;
    let trigger = world.abandoned_cart("e1").await;
    let started = engine.on_event(&trigger).await.expect("start").started;
    assert_eq!(started.len(), 1);
    let activity = crate::customer::activity::activity_stream_id(CUSTOMER);

    let view = world
        .commerce_event(&activity, "ProductViewed", json!({ "product_id": "p1" }))
        .await;
    counting.take_reads();
    engine.on_event(&view).await.expect("view");
    assert_eq!(segment_reads(&counting.take_reads()), 1);
    assert_eq!(world.instance(&started[0]).await.status, InstanceStatus::Waiting);

    join(&world, "de-speakers", true).await;
    let view = world
        .commerce_event(&activity, "ProductViewed", json!({ "product_id": "p2" }))
        .await;
    assert_eq!(engine.on_event(&view).await.expect("view").advanced, started);
    assert!(matches!(
        world.journey_events(&started[0]).await.last(),
        Some(JourneyEvent::JourneyExited { rule: Some(rule), .. }) if rule == "joined-and-looked"
    ));
}
