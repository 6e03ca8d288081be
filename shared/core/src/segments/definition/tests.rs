//! Segment definitions: loading and its errors, the published schema, each
//! leaf, and the instant the answer next changes (decision 0080).

use super::*;
use crate::vocabulary::{ActiveConsent, Channel, ConsentMethod, Purpose};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The example: viewed at least 3 products in category X in 7 days
/// and no order in 30 days.
const BROWSING_NOT_BUYING: &str = "\
id: browsing-not-buying
name: Browsing X, not buying
description: viewed at least 3 products in category X in 7 days and no order in 30 days
match:
  all:
    - performed: ProductViewed
      where:
        - { path: category, op: equals, value: X }
      distinct: product_id
      at_least: 3
      within_days: 7
    - not_performed: OrderPlaced
      within_days: 30
";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).single().expect("a time")
}

fn load(text: &str) -> RuleSegment {
    match RuleSegment::from_yaml(text) {
        Ok(segment) => segment,
        Err(errors) => panic!(
            "{}",
            errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        ),
    }
}

fn paths(text: &str) -> Vec<String> {
    match RuleSegment::from_yaml(text) {
        Ok(_) => panic!("expected errors in {text}"),
        Err(errors) => errors.into_iter().map(|e| e.path).collect(),
    }
}

/// A definition matching `condition` (YAML flow syntax).
fn with(condition: &str) -> RuleSegment {
    load(&format!("id: s\nname: S\nmatch: {condition}\n"))
}

fn event(event_type: &str, at: DateTime<Utc>, properties: Value) -> EventFact {
    EventFact {
        event_type: event_type.to_string(),
        at,
        properties,
    }
}

fn view(at: DateTime<Utc>, category: &str) -> EventFact {
    event(
        "ProductViewed",
        at,
        json!({ "product_id": format!("p-{}", at.timestamp()), "name": "P", "category": category }),
    )
}

fn order(at: DateTime<Utc>) -> EventFact {
    event("OrderPlaced", at, json!({ "order_id": "o-1" }))
}

fn facts(events: Vec<EventFact>) -> CustomerFacts {
    CustomerFacts {
        events,
        ..CustomerFacts::default()
    }
}

fn schema() -> jsonschema::Validator {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("schemas/segment.schema.json")).expect("schema exists"),
    )
    .expect("schema is JSON");
    jsonschema::draft202012::new(&schema).expect("schema compiles")
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).expect("YAML")
}

const DAY: i64 = 24 * 3600;

fn secs(n: i64) -> Duration {
    Duration::seconds(n)
}

#[test]
fn the_example_loads_matches_the_schema_and_round_trips() {
    let validator = schema();
    let document = yaml(BROWSING_NOT_BUYING);
    let problems: Vec<String> = validator.iter_errors(&document).map(|e| e.to_string()).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let segment = load(BROWSING_NOT_BUYING);
    assert_eq!(segment.id, "browsing-not-buying");
    let Condition::All { all } = &segment.matches else {
        panic!("an all")
    };
    let Condition::Performed(viewed) = &all[0] else {
        panic!("a performed leaf")
    };
    assert_eq!(
        (viewed.performed.as_str(), viewed.min(), viewed.within_days),
        ("ProductViewed", 3, 7)
    );
    let serialized = serde_json::to_value(&segment).expect("serializes");
    assert!(validator.is_valid(&serialized), "{serialized}");
    assert_eq!(RuleSegment::from_value(&serialized), Ok(segment.clone()));
    // Stored definitions read through the same loader.
    let read: RuleSegment = serde_json::from_value(serialized).expect("deserializes");
    assert_eq!(read, segment);
    let deps = segment.dependencies();
    assert_eq!(
        deps.event_types,
        BTreeSet::from(["OrderPlaced".to_string(), "ProductViewed".to_string()])
    );
    assert_eq!(deps.window_days, 30);
    assert!(!deps.profile && deps.metrics.is_empty() && deps.consents.is_empty() && deps.segments.is_empty());
}

#[test]
fn membership_follows_the_events_as_they_arrive() {
    let segment = load(BROWSING_NOT_BUYING);
    let mut events = vec![view(t0(), "X"), view(t0() + secs(3600), "X")];
    let now = t0() + secs(2 * DAY);
    let answer = segment.evaluate(&facts(events.clone()), now);
    assert_eq!(
        answer,
        Evaluation {
            matches: false,
            next_change: None
        },
        "two views are not three; time alone only takes them away"
    );
    // A view in another category does not count, nor a second view of a product.
    events.push(view(now, "Y"));
    let again = event("ProductViewed", t0() + secs(3660), events[1].properties.clone());
    events.push(again);
    assert!(!segment.evaluate(&facts(events.clone()), now).matches);
    // The third view in X: in.
    events.push(view(now, "X"));
    let answer = segment.evaluate(&facts(events.clone()), now);
    assert!(answer.matches);
    // The first view leaves its 7 days at t0 + 7 d exactly, leaving two.
    let boundary = t0() + secs(7 * DAY);
    assert_eq!(answer.next_change, Some(boundary));
    assert!(segment.evaluate(&facts(events.clone()), boundary - secs(1)).matches);
    assert!(!segment.evaluate(&facts(events.clone()), boundary).matches);
    // An order takes the customer out, for as long as the views last.
    let ordered = now + secs(3600);
    events.push(order(ordered));
    let answer = segment.evaluate(&facts(events.clone()), ordered);
    assert_eq!(
        answer,
        Evaluation {
            matches: false,
            next_change: None
        },
        "the views leave their window before the order leaves its own"
    );
}

#[test]
fn membership_appears_when_the_order_leaves_its_30_days() {
    let segment = load(BROWSING_NOT_BUYING);
    let events = vec![
        order(t0()),
        view(t0() + secs(27 * DAY), "X"),
        view(t0() + secs(28 * DAY), "X"),
        view(t0() + secs(29 * DAY), "X"),
    ];
    let facts = facts(events);
    let now = t0() + secs(29 * DAY);
    let answer = segment.evaluate(&facts, now);
    assert!(!answer.matches, "ordered 29 days ago");
    let boundary = t0() + secs(30 * DAY);
    assert_eq!(answer.next_change, Some(boundary), "the no-order window closes");
    assert!(!segment.evaluate(&facts, boundary - Duration::nanoseconds(1)).matches);
    let answer = segment.evaluate(&facts, boundary);
    assert!(answer.matches);
    // Then the first of the three views leaves, at 27 d + 7 d.
    assert_eq!(answer.next_change, Some(t0() + secs(34 * DAY)));
    let later = segment.evaluate(&facts, t0() + secs(34 * DAY));
    assert_eq!(
        later,
        Evaluation {
            matches: false,
            next_change: None
        }
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = "\
id: Bad_Id
name: ' '
colour: red
match:
  all:
    - performed: ProductViewed
      where: [{ path: category, op: within_days, value: 3 }]
      at_least: 5
      at_most: 2
      within_days: 7
    - not_performed: OrderPlaced
      within_days: 400
    - any: []
    - { metric: orders, op: gt, value: -1 }
    - { profile: 'traits..plan', op: in, value: [] }
    - { in_segment: nope, performed: X, within_days: 1 }
    - { engaged: viewed, within_days: 3 }
    - { consent: { purpose: marketing, channel: fax }, state: granted }
    - { profile: signed_up_at, op: before, value: yesterday }
    - { performed: productViewed, within_days: 3 }
    - { performed: ProductViewed, within_days: 3, colour: red }
    - { profile: email, op: exists, value: true }
    - { metric: ltv_minor, op: contains, value: 3 }
    - 3
    - {}
    - { not: { any: [{ in_segment: a }] }, all: [] }
";
    assert_eq!(
        paths(text),
        [
            "colour",
            "id",
            "name",
            "match.all[0].where[0].op",
            "match.all[0].at_most",
            "match.all[1].within_days",
            "match.all[2].any",
            "match.all[3].value",
            "match.all[4].profile",
            "match.all[4].value",
            "match.all[5]",
            "match.all[6].engaged",
            "match.all[7].consent.channel",
            "match.all[8].value",
            "match.all[9].performed",
            "match.all[10].colour",
            "match.all[11].value",
            "match.all[12].op",
            "match.all[13]",
            "match.all[14]",
            "match.all[15]",
        ]
    );
    let messages: Vec<String> = RuleSegment::from_yaml(text)
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    for expected in [
        "match.all[1].within_days: a window of 1 to 365 days",
        "match.all[5]: a condition has exactly one kind; this one has in_segment and performed",
        "match.all[0].at_most: less than at_least (5)",
    ] {
        assert!(messages.iter().any(|m| m == expected), "{expected} in {messages:#?}");
    }
    assert!(!schema().is_valid(&yaml(text)));
    let missing = paths("description: nothing else\n");
    assert_eq!(missing, ["id", "name", "match"]);
    assert_eq!(
        paths("id: a\nname: A\nmatch: { in_segment: a }\n"),
        ["match.in_segment"]
    );
    assert_eq!(
        paths("id: a\nname: A\nmatch: { performed: Viewed, within_days: 1, at_least: 0 }\n"),
        ["match.at_least"]
    );
    assert_eq!(
        paths("id: a\nname: A\nmatch: { all: [ { not: {} } ] }\n"),
        ["match.all[0].not"]
    );
    // A stored definition that no longer loads says where.
    let broken = json!({ "id": "a", "name": "A", "match": { "all": [
        { "in_segment": "b" }, { "engaged": "opened", "within_days": 0 } ] } });
    let error = serde_json::from_value::<RuleSegment>(broken).expect_err("refused");
    assert!(error.to_string().contains("match.all[1].within_days"), "{error}");
}

fn nested_nots(levels: usize) -> String {
    format!(
        "id: s\nname: S\nmatch: {}{{ in_segment: a }}{}\n",
        "{ not: ".repeat(levels),
        " }".repeat(levels)
    )
}

fn all_of(leaves: usize) -> String {
    let items = vec!["{ in_segment: a }"; leaves].join(", ");
    format!("id: s\nname: S\nmatch: {{ all: [{items}] }}\n")
}

#[test]
fn the_limits_hold() {
    // The top condition is level 1: seven nots and a leaf make eight levels.
    let deepest = load(&nested_nots(MAX_DEPTH - 1));
    assert!(deepest.evaluate(&CustomerFacts::default(), t0()).matches, "seven nots");
    let too_deep = paths(&nested_nots(MAX_DEPTH));
    assert_eq!(too_deep, [format!("match{}", ".not".repeat(MAX_DEPTH - 1))]);

    // `all` is a level of its own: 50 leaves under it.
    load(&all_of(MAX_LEAVES));
    assert_eq!(paths(&all_of(MAX_LEAVES + 1)), [format!("match.all[{MAX_LEAVES}]")]);

    for (leaf, path) in [
        ("{ performed: A, within_days: 365 }", None),
        ("{ performed: A, within_days: 366 }", Some("match.within_days")),
        ("{ performed: A, within_days: 0 }", Some("match.within_days")),
        ("{ performed: A, within_days: 1, at_least: 10000 }", None),
        (
            "{ performed: A, within_days: 1, at_least: 10001 }",
            Some("match.at_least"),
        ),
        ("{ profile: x, op: within_days, value: 365 }", None),
        ("{ profile: x, op: within_days, value: 366 }", Some("match.value")),
    ] {
        let text = format!("id: s\nname: S\nmatch: {leaf}\n");
        match path {
            None => {
                load(&text);
                assert!(schema().is_valid(&yaml(&text)), "{leaf}");
            }
            Some(path) => {
                assert_eq!(paths(&text), [path], "{leaf}");
                assert!(!schema().is_valid(&yaml(&text)), "{leaf}");
            }
        }
    }
}

#[test]
fn all_any_and_not_combine() {
    let member = CustomerFacts {
        segments: BTreeSet::from(["a".to_string()]),
        ..CustomerFacts::default()
    };
    let cases = [
        ("{ in_segment: a }", true),
        ("{ in_segment: b }", false),
        ("{ all: [{ in_segment: a }] }", true),
        ("{ all: [{ in_segment: a }, { in_segment: b }] }", false),
        ("{ any: [{ in_segment: a }, { in_segment: b }] }", true),
        ("{ any: [{ in_segment: b }, { in_segment: c }] }", false),
        ("{ not: { in_segment: b } }", true),
        ("{ not: { in_segment: a } }", false),
        ("{ not: { not: { in_segment: a } } }", true),
        (
            "{ all: [{ in_segment: a }, { not: { any: [{ in_segment: b }, { in_segment: c }] } }] }",
            true,
        ),
        (
            "{ any: [{ not: { in_segment: a } }, { all: [{ in_segment: b }] }] }",
            false,
        ),
    ];
    for (condition, expected) in cases {
        let segment = with(condition);
        assert_eq!(segment.evaluate(&member, t0()).matches, expected, "{condition}");
        assert_eq!(segment.evaluate(&member, t0()).next_change, None);
    }
    assert_eq!(
        with("{ any: [{ in_segment: a }, { not: { in_segment: vip } }] }")
            .dependencies()
            .segments,
        BTreeSet::from(["a".to_string(), "vip".to_string()])
    );
}

#[test]
fn profile_fields_and_traits() {
    let profile = json!({
        "email": "ada@shop.test",
        "address": { "country": "DE" },
        "traits": { "plan": "pro", "seats": 12, "tags": ["vip", "beta"] },
        "registered_at": "2026-03-01T09:00:00Z",
        "date_of_birth": "1990-05-01",
        "phone": null
    });
    let facts = CustomerFacts {
        profile,
        ..CustomerFacts::default()
    };
    let cases = [
        ("{ profile: address.country, op: equals, value: DE }", true),
        ("{ profile: address.country, op: equals, value: FR }", false),
        ("{ profile: traits.seats, op: equals, value: 12.0 }", true),
        ("{ profile: email, op: contains, value: '@shop.test' }", true),
        ("{ profile: email, op: contains, value: '@other.test' }", false),
        ("{ profile: traits.tags, op: contains, value: vip }", true),
        ("{ profile: traits.tags, op: contains, value: gold }", false),
        ("{ profile: traits.plan, op: exists }", true),
        ("{ profile: traits.missing, op: exists }", false),
        ("{ profile: phone, op: exists }", false),
        ("{ profile: traits.plan, op: in, value: [pro, team] }", true),
        ("{ profile: traits.plan, op: in, value: [free] }", false),
        ("{ profile: traits.seats, op: gt, value: 10 }", true),
        ("{ profile: traits.seats, op: gte, value: 12 }", true),
        ("{ profile: traits.seats, op: lt, value: 12 }", false),
        ("{ profile: traits.seats, op: lte, value: 11.5 }", false),
        ("{ profile: traits.plan, op: gt, value: 1 }", false),
        ("{ profile: date_of_birth, op: before, value: '2000-01-01' }", true),
        ("{ profile: date_of_birth, op: after, value: '2000-01-01' }", false),
        (
            "{ profile: registered_at, op: after, value: '2026-03-01T08:59:59Z' }",
            true,
        ),
        ("{ profile: registered_at, op: within_days, value: 30 }", true),
        ("{ profile: date_of_birth, op: within_days, value: 30 }", false),
        ("{ not: { profile: traits.missing, op: equals, value: 1 } }", true),
    ];
    for (condition, expected) in cases {
        assert_eq!(with(condition).evaluate(&facts, t0()).matches, expected, "{condition}");
    }
    // Registered at 2026-03-01 09:00: in the last 30 days until 30 days later, exactly.
    let recent = with("{ profile: registered_at, op: within_days, value: 30 }");
    let leaves = Utc.with_ymd_and_hms(2026, 3, 31, 9, 0, 0).single().expect("a time");
    assert_eq!(recent.evaluate(&facts, t0()).next_change, Some(leaves));
    assert!(!recent.evaluate(&facts, leaves).matches);
    assert!(recent.dependencies().profile);
}

#[test]
fn metrics_and_the_ones_that_move_with_the_clock() {
    let today = t0().date_naive();
    let day = |back: u64| today.checked_sub_days(chrono::Days::new(back)).expect("a day");
    let metrics = MetricFacts {
        ltv_minor: 15_000,
        orders: 3,
        aov_minor: 5_000,
        last_order_at: Some(t0() - secs(10 * DAY)),
        logins_by_day: [(today, 2), (day(6), 1), (day(7), 5)].into_iter().collect(),
    };
    assert_eq!(metrics.value(Metric::Logins7d, t0()), Some(3), "day 7 is out");
    assert_eq!(metrics.value(Metric::DaysSinceLastOrder, t0()), Some(10));
    let facts = CustomerFacts {
        metrics: metrics.clone(),
        ..CustomerFacts::default()
    };
    let cases = [
        ("{ metric: ltv_minor, op: gte, value: 15000 }", true),
        ("{ metric: ltv_minor, op: gt, value: 15000 }", false),
        ("{ metric: orders, op: equals, value: 3 }", true),
        ("{ metric: aov_minor, op: lt, value: 5000 }", false),
        ("{ metric: aov_minor, op: lte, value: 5000 }", true),
        ("{ metric: days_since_last_order, op: gt, value: 9 }", true),
        ("{ metric: logins_7d, op: equals, value: 3 }", true),
    ];
    for (condition, expected) in cases {
        let answer = with(condition).evaluate(&facts, t0());
        assert_eq!(answer.matches, expected, "{condition}");
    }
    // More than 10 days since the last order: from 11 days after it, exactly.
    let lapsing = with("{ metric: days_since_last_order, op: gt, value: 10 }");
    let answer = lapsing.evaluate(&facts, t0());
    assert!(!answer.matches);
    assert_eq!(answer.next_change, Some(t0() + secs(DAY)));
    // Logins in 7 days drop at the next UTC midnight, when day(6)'s login leaves.
    let logins = with("{ metric: logins_7d, op: equals, value: 3 }");
    let midnight = today
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .expect("midnight")
        .and_utc();
    assert_eq!(logins.evaluate(&facts, t0()).next_change, Some(midnight));
    // Never ordered: days since the last order has no value and fails every test.
    let never = CustomerFacts::default();
    for op in ["lt", "gte"] {
        let segment = with(&format!("{{ metric: days_since_last_order, op: {op}, value: 0 }}"));
        assert_eq!(
            segment.evaluate(&never, t0()),
            Evaluation {
                matches: false,
                next_change: None
            }
        );
    }
    assert_eq!(logins.dependencies().metrics, BTreeSet::from([Metric::Logins7d]));
}

#[test]
fn consent_in_force_and_when_it_lapses() {
    let granted_at = Utc.with_ymd_and_hms(2024, 3, 10, 8, 0, 0).single().expect("a time");
    let consent = ActiveConsent {
        purpose: Purpose::Marketing,
        channel: Channel::Email,
        method: ConsentMethod::PreferenceCentre,
        granted_at,
    };
    let facts = CustomerFacts {
        consents: vec![consent.clone()],
        ..CustomerFacts::default()
    };
    let email = with("{ consent: { purpose: marketing, channel: email }, state: granted }");
    let answer = email.evaluate(&facts, t0());
    assert!(answer.matches);
    // It lapses two years after it was given (`ActiveConsent::expires_at`).
    let lapses = consent.expires_at().expect("an expiry");
    assert_eq!(
        lapses,
        Utc.with_ymd_and_hms(2026, 3, 10, 8, 0, 0).single().expect("a time")
    );
    assert_eq!(answer.next_change, Some(lapses));
    assert!(!email.evaluate(&facts, lapses).matches);
    let sms = with("{ consent: { purpose: marketing, channel: sms }, state: not_granted }");
    assert!(sms.evaluate(&facts, t0()).matches);
    let not_email = with("{ consent: { purpose: marketing, channel: email }, state: not_granted }");
    assert!(!not_email.evaluate(&facts, t0()).matches);
    assert!(not_email.evaluate(&facts, lapses).matches);
    assert!(
        with("{ consent: { purpose: analytics, channel: email }, state: not_granted }")
            .evaluate(&facts, t0())
            .matches
    );
    assert_eq!(
        email.dependencies().consents,
        BTreeSet::from([(Purpose::Marketing, Channel::Email)])
    );
}

#[test]
fn performed_counts_events_with_their_properties_within_bounds() {
    let login = |at| event("CustomerLoggedIn", at, json!({}));
    let first = t0() - secs(20 * DAY);
    let facts = facts(vec![
        login(first),
        login(t0() - secs(DAY)),
        event("OrderPlaced", t0() - secs(2 * DAY), json!({ "total_minor": 12_000 })),
        event("OrderPlaced", t0() - secs(3 * DAY), json!({ "total_minor": 2_000 })),
    ]);
    let at_most_one = with("{ performed: CustomerLoggedIn, at_most: 1, within_days: 30 }");
    let answer = at_most_one.evaluate(&facts, t0());
    assert!(!answer.matches, "two logins");
    assert_eq!(answer.next_change, Some(first + secs(30 * DAY)), "the first leaves");
    assert!(at_most_one.evaluate(&facts, first + secs(30 * DAY)).matches);
    // at_most includes zero.
    assert!(
        with("{ performed: Unseen, at_most: 1, within_days: 30 }")
            .evaluate(&facts, t0())
            .matches
    );
    assert!(
        with("{ performed: CustomerLoggedIn, within_days: 2 }")
            .evaluate(&facts, t0())
            .matches
    );
    assert!(
        !with("{ performed: CustomerLoggedIn, within_days: 1 }")
            .evaluate(&facts, t0())
            .matches
    );
    let big = "{ performed: OrderPlaced, where: [{ path: total_minor, op: gte, value: 10000 }], within_days: 7 }";
    assert!(with(big).evaluate(&facts, t0()).matches);
    let two_big = "{ performed: OrderPlaced, where: [{ path: total_minor, op: gte, value: 10000 }], \
                   at_least: 2, within_days: 7 }";
    assert!(!with(two_big).evaluate(&facts, t0()).matches);
    let two = with("{ performed: OrderPlaced, at_least: 2, at_most: 2, within_days: 7 }");
    let answer = two.evaluate(&facts, t0());
    assert!(answer.matches);
    assert_eq!(answer.next_change, Some(t0() + secs(4 * DAY)), "the older order leaves");
    // not_performed with a property test: no small order in 7 days.
    let small = "{ not_performed: OrderPlaced, where: [{ path: total_minor, op: lt, value: 5000 }], within_days: 7 }";
    let answer = with(small).evaluate(&facts, t0());
    assert!(!answer.matches);
    assert_eq!(answer.next_change, Some(t0() + secs(4 * DAY)));
    // An event after `now` counts from its instant on.
    let future = facts_with_future_view();
    let viewed = with("{ performed: ProductViewed, within_days: 1 }");
    let answer = viewed.evaluate(&future, t0());
    assert!(!answer.matches);
    assert_eq!(answer.next_change, Some(t0() + secs(60)));
}

fn facts_with_future_view() -> CustomerFacts {
    facts(vec![view(t0() + secs(60), "X")])
}

#[test]
fn email_engagement_by_campaign() {
    let clicked_at = t0() - secs(DAY);
    let facts = facts(vec![
        event(
            EMAIL_CLICKED,
            clicked_at,
            json!({ "message_id": "m-1", "campaign_id": "welcome", "link": "https://shop.test" }),
        ),
        event(
            EMAIL_OPENED,
            t0() - secs(5 * DAY),
            json!({ "message_id": "m-2", "campaign_id": "cross-sell" }),
        ),
    ]);
    let cases = [
        ("{ engaged: opened, within_days: 2 }", true),
        ("{ engaged: opened, campaign: welcome, within_days: 2 }", true),
        ("{ engaged: clicked, campaign: welcome, within_days: 2 }", true),
        ("{ engaged: clicked, campaign: cross-sell, within_days: 30 }", false),
        ("{ engaged: opened, campaign: cross-sell, within_days: 30 }", true),
        ("{ engaged: opened, campaign: cross-sell, within_days: 5 }", false),
        ("{ engaged: clicked, within_days: 1 }", false),
    ];
    for (condition, expected) in cases {
        assert_eq!(with(condition).evaluate(&facts, t0()).matches, expected, "{condition}");
    }
    let clicked = with("{ engaged: clicked, within_days: 2 }");
    assert_eq!(
        clicked.evaluate(&facts, t0()).next_change,
        Some(clicked_at + secs(2 * DAY))
    );
    assert_eq!(
        clicked.dependencies().event_types,
        BTreeSet::from([EMAIL_CLICKED.to_string()])
    );
    assert_eq!(
        with("{ engaged: opened, within_days: 2 }").dependencies().event_types,
        BTreeSet::from([EMAIL_CLICKED.to_string(), EMAIL_OPENED.to_string()])
    );
}

#[test]
fn the_schema_and_the_loader_agree() {
    let validator = schema();
    let valid = [
        "{ profile: traits.plan, op: in, value: [pro] }",
        "{ profile: email, op: exists }",
        "{ metric: days_since_last_order, op: gte, value: 30 }",
        "{ consent: { purpose: marketing, channel: push }, state: granted }",
        "{ in_segment: high-value }",
        "{ performed: ProductViewed, where: [{ path: category, op: in, value: [X, Y] }], at_least: 3, within_days: 7 }",
        "{ not_performed: OrderPlaced, within_days: 30 }",
        "{ performed: ProductViewed, distinct: product_id, at_most: 5, within_days: 7 }",
        "{ engaged: clicked, campaign: welcome, within_days: 14 }",
        "{ not: { any: [{ in_segment: a }, { all: [{ in_segment: b }] }] } }",
    ];
    for condition in valid {
        let text = format!("id: s\nname: S\nmatch: {condition}\n");
        assert!(validator.is_valid(&yaml(&text)), "schema refuses {condition}");
        let segment = load(&text);
        let serialized = serde_json::to_value(&segment).expect("serializes");
        assert!(
            validator.is_valid(&serialized),
            "schema refuses serialized {serialized}"
        );
        assert_eq!(RuleSegment::from_value(&serialized), Ok(segment), "{condition}");
    }
    let invalid = [
        "{ profile: email, op: exists, value: 1 }",
        "{ profile: email, op: equals }",
        "{ profile: traits.plan, op: in, value: [] }",
        "{ profile: traits.seats, op: gt, value: ten }",
        "{ metric: visits, op: gt, value: 1 }",
        "{ metric: orders, op: in, value: 1 }",
        "{ consent: { purpose: marketing }, state: granted }",
        "{ in_segment: Not_A_Slug }",
        "{ performed: ProductViewed, where: [{ path: category, op: within_days, value: 1 }], within_days: 7 }",
        "{ performed: ProductViewed }",
        "{ performed: ProductViewed, distinct: 'product..id', within_days: 7 }",
        "{ not_performed: OrderPlaced, at_least: 1, within_days: 3 }",
        "{ engaged: bounced, within_days: 3 }",
        "{ all: [] }",
        "{ in_segment: a, not: { in_segment: b } }",
        "{ anything: 1 }",
    ];
    for condition in invalid {
        let text = format!("id: s\nname: S\nmatch: {condition}\n");
        assert!(!validator.is_valid(&yaml(&text)), "schema accepts {condition}");
        assert!(RuleSegment::from_yaml(&text).is_err(), "loader accepts {condition}");
    }
}
