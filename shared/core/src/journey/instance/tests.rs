use super::*;
use crate::event::DomainEvent;
use crate::journey::definition::Campaign;
use chrono::NaiveTime;
use chrono::{DateTime, Utc};
use serde_json::json;
use serde_json::Value;
use uuid::Uuid;

fn campaign(name: &str) -> Campaign {
    let path = format!("{}/../../campaigns/{name}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    Campaign::from_yaml(&text).unwrap_or_else(|e| panic!("{path}: {e:?}"))
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn zone(name: &str) -> crm_kernel::vocabulary::Zone {
    crm_kernel::vocabulary::Zone::named(name).unwrap_or_else(|| panic!("{name} is a time zone"))
}

fn bus_event(event_type: &str, source: &str, data: Value) -> (Uuid, Value) {
    let id = Uuid::now_v7();
    (
        id,
        json!({ "source": source, "detail-type": event_type, "detail": { "event_id": id, "type": event_type, "data": data } }),
    )
}

fn ctx(now: DateTime<Utc>) -> JourneyContext<'static> {
    JourneyContext {
        now,
        timezone: zone("Europe/Berlin"),
        profile: None,
        segments: None,
    }
}

/// Given the events so far, fold them; versions count from 1.
fn fold(events: &[JourneyEvent], now: DateTime<Utc>) -> Option<JourneyInstance> {
    events
        .iter()
        .enumerate()
        .fold(None, |s, (i, e)| evolve(s, e, now, i as u64 + 1))
}

fn started(c: &Campaign, now: DateTime<Utc>) -> (Vec<JourneyEvent>, Value) {
    let (id, trigger) = bus_event(
        "CartAbandoned",
        "crm.commerce",
        json!({ "cart_id": "cart-1", "total_value_minor": 7500, "currency": "EUR" }),
    );
    let input = JourneyInput::Start {
        instance_id: instance_id(c, "cust-1", "cart-1", now),
        campaign_version: 3,
        customer_id: "cust-1".into(),
        dedupe_key: "cart-1".into(),
        trigger: TriggerRef {
            event_id: id,
            event_type: "CartAbandoned".into(),
            stream_id: "cart-cart-1".into(),
            version: 4,
            occurred_at: now,
        },
        trigger_event: trigger.clone(),
    };
    (decide(None, c, &input, &ctx(now)).expect("start"), trigger)
}

fn types(events: &[JourneyEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let (t, _) = e.to_parts().unwrap_or_default();
            t
        })
        .collect()
}

#[test]
fn abandoned_cart_waits_then_reminds_and_an_order_mid_wait_exits_it() {
    let c = campaign("abandoned-cart");
    let t0 = at("2026-11-23T12:00:00Z");
    let (mut history, _) = started(&c, t0);
    assert_eq!(
        types(&history),
        ["JourneyStarted", "JourneyStepEntered", "JourneyWaitScheduled"]
    );
    let first_wait = fold(&history, t0).and_then(|s| s.waiting).expect("waiting");
    assert_eq!(first_wait.due_at, t0 + chrono::Duration::hours(1));

    // The hour passes: the timer fires, the reminder is requested, the 24 h wait starts.
    let t1 = first_wait.due_at;
    let state = fold(&history, t1).expect("state");
    let fired = decide(
        Some(&state),
        &c,
        &JourneyInput::Timer {
            timer_name: first_wait.timer_name.clone(),
        },
        &ctx(t1),
    )
    .expect("timer");
    assert_eq!(
        types(&fired),
        [
            "TimerFired",
            "JourneyStepEntered",
            "MessageRequested",
            "JourneyStepEntered",
            "JourneyWaitScheduled"
        ]
    );
    match &fired[2] {
        JourneyEvent::MessageRequested {
            template,
            campaign_version,
            data,
            message_id: id,
            ..
        } => {
            assert_eq!(template, "abandoned-cart-reminder");
            assert_eq!(*campaign_version, 3, "the instance keeps its campaign version");
            assert_eq!(data["cart_id"], "cart-1");
            assert_eq!(id, &message_id(&state.id, "reminder", 1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        timer_to_cancel(Some(&state), &fired),
        Some(first_wait.timer_name.clone())
    );
    // The same timer again (redelivery) does nothing.
    history.extend(fired);
    let state = fold(&history, t1).expect("state");
    let again = decide(
        Some(&state),
        &c,
        &JourneyInput::Timer {
            timer_name: first_wait.timer_name.clone(),
        },
        &ctx(t1),
    );
    assert_eq!(again, Ok(Vec::new()));
    let second_wait = state.waiting.clone().expect("waiting 24h");
    assert_eq!(second_wait.due_at, t1 + chrono::Duration::hours(24));

    // An order in the middle of the 24 h wait ends the instance at once.
    let (order_id, order) = bus_event("OrderPlaced", "crm.commerce", json!({ "order_id": "o-1" }));
    let t2 = t1 + chrono::Duration::hours(3);
    let exited = decide(
        Some(&state),
        &c,
        &JourneyInput::Event {
            event_id: order_id,
            event: order.clone(),
        },
        &ctx(t2),
    )
    .expect("event");
    assert_eq!(
        exited,
        vec![JourneyEvent::JourneyExited {
            reason: ExitReason::ExitEvent,
            rule: Some("order-placed".into()),
            event_id: Some(order_id)
        }]
    );
    assert_eq!(
        timer_to_cancel(Some(&state), &exited),
        Some(second_wait.timer_name.clone()),
        "its schedule is deleted"
    );
    history.extend(exited);
    let state = fold(&history, t2).expect("state");
    // The 24 h timer, if it still fires, finds nothing to do: no final offer.
    let late = decide(
        Some(&state),
        &c,
        &JourneyInput::Timer {
            timer_name: second_wait.timer_name.clone(),
        },
        &ctx(t2),
    );
    assert_eq!(late, Ok(Vec::new()));
}

#[test]
fn unrelated_events_and_the_trigger_itself_change_nothing() {
    let c = campaign("abandoned-cart");
    let t0 = at("2026-11-23T12:00:00Z");
    let (history, trigger) = started(&c, t0);
    let state = fold(&history, t0).expect("state");
    let (id, viewed) = bus_event("ProductViewed", "crm.customer", json!({}));
    assert_eq!(
        decide(
            Some(&state),
            &c,
            &JourneyInput::Event {
                event_id: id,
                event: viewed.clone()
            },
            &ctx(t0)
        ),
        Ok(Vec::new())
    );
    let trigger_id = state.trigger.event_id;
    assert_eq!(
        decide(
            Some(&state),
            &c,
            &JourneyInput::Event {
                event_id: trigger_id,
                event: trigger.clone()
            },
            &ctx(t0)
        ),
        Ok(Vec::new())
    );
    assert!(matches!(
        decide(
            Some(&state),
            &c,
            &JourneyInput::CustomerDeactivated { event_id: id },
            &ctx(t0)
        )
        .as_deref(),
        Ok([JourneyEvent::JourneyExited {
            reason: ExitReason::CustomerDeactivated,
            ..
        }])
    ));
}

#[test]
fn the_same_trigger_always_names_the_same_instance() {
    let c = campaign("abandoned-cart");
    let t = at("2026-11-23T12:00:00Z");
    assert_eq!(
        instance_id(&c, "cust-1", "cart-1", t),
        instance_id(&c, "cust-1", "cart-1", t + chrono::Duration::hours(5))
    );
    assert_ne!(
        instance_id(&c, "cust-1", "cart-1", t),
        instance_id(&c, "cust-1", "cart-2", t)
    );
    let once = campaign("welcome");
    assert_eq!(
        instance_id(&once, "cust-1", "a", t),
        instance_id(&once, "cust-1", "b", t),
        "once per customer"
    );
    assert_ne!(
        instance_id(&once, "cust-1", "a", t),
        instance_id(&once, "cust-2", "a", t)
    );
}

#[test]
fn until_ten_local_lands_at_ten_across_dst_changes() {
    let ten = NaiveTime::from_hms_opt(10, 0, 0).unwrap_or_default();
    // Berlin springs forward on 2026-03-29: 10:00 CEST is 08:00 UTC.
    let before = at("2026-03-28T20:00:00Z");
    assert_eq!(
        next_local_time(before, zone("Europe/Berlin"), ten),
        at("2026-03-29T08:00:00Z")
    );
    // The day before it was still CET: 10:00 is 09:00 UTC.
    assert_eq!(
        next_local_time(at("2026-03-27T20:00:00Z"), zone("Europe/Berlin"), ten),
        at("2026-03-28T09:00:00Z")
    );
    // New York falls back on 2026-11-01: 10:00 EST is 15:00 UTC.
    assert_eq!(
        next_local_time(at("2026-10-31T20:00:00Z"), zone("America/New_York"), ten),
        at("2026-11-01T15:00:00Z")
    );
    // Already past 10:00 local: tomorrow.
    assert_eq!(
        next_local_time(at("2026-11-23T10:30:00Z"), zone("Europe/London"), ten),
        at("2026-11-24T10:00:00Z")
    );
    // A time inside the spring-forward gap (02:30 does not exist in Berlin on 2026-03-29).
    let gap = NaiveTime::from_hms_opt(2, 30, 0).unwrap_or_default();
    assert_eq!(
        next_local_time(at("2026-03-28T23:00:00Z"), zone("Europe/Berlin"), gap),
        at("2026-03-29T01:30:00Z")
    );
}

#[test]
fn a_local_time_in_a_fold_takes_the_first_instant_and_in_a_gap_the_hour_after() {
    let half_past_one = NaiveTime::from_hms_opt(1, 30, 0).unwrap_or_default();
    // New York falls back on 2026-11-01 at 02:00 EDT: 01:30 happens twice,
    // first in EDT (05:30 UTC), then in EST (06:30 UTC).
    assert_eq!(
        next_local_time(at("2026-10-31T20:00:00Z"), zone("America/New_York"), half_past_one),
        at("2026-11-01T05:30:00Z")
    );
    // Sydney, southern hemisphere: falls back on 2026-04-05 at 03:00 AEDT
    // (+11) to 02:00 AEST (+10): 02:30 is first 15:30 UTC the day before.
    let half_past_two = NaiveTime::from_hms_opt(2, 30, 0).unwrap_or_default();
    let sydney = zone("Australia/Sydney");
    assert_eq!(
        next_local_time(at("2026-04-04T12:00:00Z"), sydney, half_past_two),
        at("2026-04-04T15:30:00Z")
    );
    // Springs forward on 2026-10-04 at 02:00 AEST to 03:00 AEDT: 02:30 does
    // not exist, 03:30 AEDT is 16:30 UTC the day before.
    assert_eq!(
        next_local_time(at("2026-10-03T12:00:00Z"), sydney, half_past_two),
        at("2026-10-03T16:30:00Z")
    );
    // 09:00 in the Australian winter (AEST) and summer (AEDT).
    let nine = NaiveTime::from_hms_opt(9, 0, 0).unwrap_or_default();
    assert_eq!(
        next_local_time(at("2026-07-01T12:00:00Z"), sydney, nine),
        at("2026-07-01T23:00:00Z")
    );
    assert_eq!(
        next_local_time(at("2026-12-01T12:00:00Z"), sydney, nine),
        at("2026-12-01T22:00:00Z")
    );
}

#[test]
fn decisions_are_deterministic() {
    let c = campaign("abandoned-cart");
    let t0 = at("2026-11-23T12:00:00Z");
    let (history, _) = started(&c, t0);
    let state = fold(&history, t0).expect("state");
    let wait = state.waiting.clone().expect("wait");
    let a = decide(
        Some(&state),
        &c,
        &JourneyInput::Timer {
            timer_name: wait.timer_name.clone(),
        },
        &ctx(wait.due_at),
    );
    let b = decide(
        Some(&state),
        &c,
        &JourneyInput::Timer {
            timer_name: wait.timer_name.clone(),
        },
        &ctx(wait.due_at),
    );
    assert_eq!(a, b, "same message ids and timer names");
    let timers = timers_to_schedule(&state, &[(history[2].clone(), 3)]);
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].set_at_version, 3);
    assert_eq!(timers[0].stream_id, stream_id(&state.id));
    assert_eq!(
        pending_timer(&state).as_ref(),
        timers.first(),
        "the pending wait's timer is the one that was set"
    );
}

/// The instance as an aggregate (the engine's command path), given/when/then.
mod aggregate {
    use super::*;
    use crate::testing::{test_time, AggregateScenario};
    use std::sync::Arc;

    fn facts(c: &Campaign, lookback: Vec<(Uuid, Value, bool)>) -> JourneyFacts {
        JourneyFacts {
            campaign: Arc::new(c.clone()),
            timezone: zone("Europe/Berlin"),
            profile: None,
            segments: None,
            lookback,
        }
    }

    #[test]
    fn a_fired_timer_is_decided_as_the_instance_decides_it() {
        let c = campaign("abandoned-cart");
        let (history, _) = started(&c, test_time());
        let scenario = AggregateScenario::<JourneyAggregate>::new("i-1", facts(&c, Vec::new())).given(&history);
        let wait = scenario.state().and_then(|s| s.waiting.clone()).expect("waiting");
        let fired = scenario
            .when(JourneyInput::Timer {
                timer_name: wait.timer_name.clone(),
            })
            .events();
        assert_eq!(
            types(&fired),
            [
                "TimerFired",
                "JourneyStepEntered",
                "MessageRequested",
                "JourneyStepEntered",
                "JourneyWaitScheduled"
            ]
        );
        // A stale timer changes nothing.
        scenario
            .when(JourneyInput::Timer {
                timer_name: "no-such-timer".into(),
            })
            .then_expect_events(&[]);
        // A step on an instance that does not exist is refused.
        AggregateScenario::<JourneyAggregate>::new("i-1", facts(&c, Vec::new()))
            .when(JourneyInput::CampaignPaused)
            .then_expect_error(JourneyError::NotStarted(c.id.clone()));
    }

    #[test]
    fn the_lookback_s_finds_are_caught_up_on_in_the_same_decision() {
        // An order recorded during the wait, before the timer fired: the
        // instance exits on it instead of sending the reminder.
        let c = campaign("abandoned-cart");
        let (history, _) = started(&c, test_time());
        let (order_id, order) = bus_event("OrderPlaced", "crm.commerce", json!({ "order_id": "o-1" }));
        let scenario =
            AggregateScenario::<JourneyAggregate>::new("i-1", facts(&c, vec![(order_id, order, true)])).given(&history);
        let wait = scenario.state().and_then(|s| s.waiting.clone()).expect("waiting");
        scenario
            .when(JourneyInput::Timer {
                timer_name: wait.timer_name,
            })
            .then_expect_events(&[JourneyEvent::JourneyExited {
                reason: ExitReason::ExitEvent,
                rule: Some("order-placed".into()),
                event_id: Some(order_id),
            }]);
    }
}
