use super::*;
use crate::clock::VirtualClock;
use crate::testing::{test_time, InMemoryEventStore};
use serde_json::json;

fn actor() -> Actor {
    Actor::api("test")
}

fn service() -> (SegmentDefinitions, Arc<InMemoryEventStore>, Arc<VirtualClock>) {
    let store = Arc::new(InMemoryEventStore::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    (SegmentDefinitions::new(store.clone(), clock.clone()), store, clock)
}

fn none() -> BTreeSet<String> {
    BTreeSet::new()
}

/// A definition whose condition is `condition`.
fn doc(id: &str, condition: Value) -> Value {
    json!({ "id": id, "name": format!("Segment {id}"), "match": condition })
}

fn gold(id: &str) -> Value {
    doc(id, json!({ "profile": "traits.plan", "op": "equals", "value": "gold" }))
}

fn member_of(id: &str, other: &str) -> Value {
    doc(
        id,
        json!({ "all": [
            { "metric": "orders", "op": "gte", "value": 1 },
            { "in_segment": other },
        ] }),
    )
}

async fn stream_events(store: &InMemoryEventStore, id: &str) -> Vec<EventEnvelope> {
    store.read_stream(id, 0, usize::MAX).await.expect("read")
}

#[tokio::test]
async fn a_definition_is_stored_as_version_1_and_read_back() {
    let (defs, store, _) = service();
    let (defined, written) = defs.put("gold", &gold("gold"), &none(), actor()).await.expect("put");
    assert!(written);
    assert_eq!(defined.version, 1);
    assert_eq!(defined.segment.id, "gold");
    assert_eq!(defined.defined_at, test_time());

    let events = stream_events(&store, &stream_id("gold")).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "SegmentDefined");
    assert_eq!(events[0].customer_id, None);
    let SegmentDefinitionEvent::SegmentDefined {
        segment_id,
        version,
        definition,
    } = SegmentDefinitionEvent::from_envelope(&events[0]).expect("decode");
    assert_eq!((segment_id.as_str(), version), ("gold", 1));
    assert_eq!(definition, gold("gold"));

    let index = stream_events(&store, INDEX_STREAM).await;
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].event_type, "SegmentRegistered");

    let read = defined_segment(store.as_ref(), "gold")
        .await
        .expect("read")
        .expect("defined");
    assert_eq!(read, defined);
    assert_eq!(defined_segments(store.as_ref()).await.expect("list"), vec![defined]);
    assert_eq!(defined_segment(store.as_ref(), "silver").await.expect("read"), None);
    assert_eq!(defined_segment(store.as_ref(), "Not A Slug").await.expect("read"), None);
}

#[tokio::test]
async fn the_same_definition_again_appends_nothing_and_a_change_is_the_next_version() {
    let (defs, store, clock) = service();
    defs.put("gold", &gold("gold"), &none(), actor()).await.expect("put");
    clock.advance(chrono::Duration::hours(1));
    // The same document, keys in another order: nothing written, still version 1.
    let same = json!({ "match": { "value": "gold", "op": "equals", "profile": "traits.plan" }, "name": "Segment gold", "id": "gold" });
    let (again, written) = defs.put("gold", &same, &none(), actor()).await.expect("put again");
    assert!(!written);
    assert_eq!((again.version, again.defined_at), (1, test_time()));
    assert_eq!(stream_events(&store, &stream_id("gold")).await.len(), 1);

    let mut changed = gold("gold");
    changed["name"] = json!("Gold plan");
    let (v2, written) = defs.put("gold", &changed, &none(), actor()).await.expect("put v2");
    assert!(written);
    assert_eq!((v2.version, v2.segment.name.as_str()), (2, "Gold plan"));
    assert_eq!(v2.defined_at, test_time() + chrono::Duration::hours(1));
    let events = stream_events(&store, &stream_id("gold")).await;
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2]);
    // One registration however many versions.
    assert_eq!(stream_events(&store, INDEX_STREAM).await.len(), 1);
    assert_eq!(
        defined_segment(store.as_ref(), "gold")
            .await
            .expect("read")
            .map(|d| d.version),
        Some(2)
    );
}

#[tokio::test]
async fn an_invalid_definition_reports_every_path_and_writes_nothing() {
    let (defs, store, _) = service();
    let bad = json!({ "id": "bad", "name": "", "match": { "all": [
        { "performed": "ProductViewed", "within_days": 0 },
        { "metric": "orders", "op": "sometimes", "value": 1 },
    ] } });
    let Err(DefinitionError::Invalid(errors)) = defs.put("bad", &bad, &none(), actor()).await else {
        panic!("refused as invalid")
    };
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"name"), "{paths:?}");
    assert!(paths.contains(&"match.all[0].within_days"), "{paths:?}");
    assert!(paths.iter().any(|p| p.starts_with("match.all[1]")), "{paths:?}");
    assert!(stream_events(&store, INDEX_STREAM).await.is_empty());
    assert!(stream_events(&store, &stream_id("bad")).await.is_empty());
}

#[tokio::test]
async fn the_body_id_must_be_the_path_id() {
    let (defs, store, _) = service();
    let Err(DefinitionError::Invalid(errors)) = defs.put("gold", &gold("silver"), &none(), actor()).await else {
        panic!("refused")
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "id");
    assert!(errors[0].message.contains("silver"), "{}", errors[0].message);
    assert!(stream_events(&store, INDEX_STREAM).await.is_empty());
}

#[tokio::test]
async fn a_computed_or_manual_segment_id_is_a_clash() {
    let (defs, store, _) = service();
    for computed in ["buyers", "champions", "affinity-lamps"] {
        let err = defs
            .put(computed, &gold(computed), &none(), actor())
            .await
            .expect_err(computed);
        assert!(
            matches!(&err, DefinitionError::Clash { path, message } if path == "id" && message.contains("computed")),
            "{computed}: {err:?}"
        );
    }
    let manual = BTreeSet::from(["vip".to_string()]);
    let err = defs
        .put("vip", &gold("vip"), &manual, actor())
        .await
        .expect_err("manual");
    assert!(
        matches!(&err, DefinitionError::Clash { path, message } if path == "id" && message.contains("manual")),
        "{err:?}"
    );
    assert!(stream_events(&store, INDEX_STREAM).await.is_empty());
}

#[tokio::test]
async fn in_segment_names_a_computed_manual_or_defined_segment() {
    let (defs, store, _) = service();
    let manual = BTreeSet::from(["welcomed".to_string()]);
    defs.put("a", &member_of("a", "buyers"), &none(), actor())
        .await
        .expect("computed");
    defs.put("b", &member_of("b", "welcomed"), &manual, actor())
        .await
        .expect("manual");
    defs.put("c", &member_of("c", "a"), &none(), actor())
        .await
        .expect("defined");
    let err = defs
        .put("d", &member_of("d", "nobody-knows"), &manual, actor())
        .await
        .expect_err("unknown");
    let DefinitionError::Invalid(errors) = err else {
        panic!("422 for an unknown segment: {err:?}")
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].path, "match.all[1].in_segment");
    assert!(errors[0].message.contains("nobody-knows"));
    assert!(stream_events(&store, &stream_id("d")).await.is_empty());
    assert_eq!(
        defined_segments(store.as_ref())
            .await
            .expect("list")
            .iter()
            .map(|d| d.segment.id.as_str())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
}

#[tokio::test]
async fn a_cycle_through_in_segment_is_refused_with_its_path() {
    let (defs, store, _) = service();
    defs.put("a", &gold("a"), &none(), actor()).await.expect("a");
    defs.put("b", &member_of("b", "a"), &none(), actor())
        .await
        .expect("b -> a");
    defs.put("c", &member_of("c", "b"), &none(), actor())
        .await
        .expect("c -> b");
    // a -> c closes a -> c -> b -> a.
    let closing = doc(
        "a",
        json!({ "any": [ { "metric": "orders", "op": "gt", "value": 3 }, { "not": { "in_segment": "c" } } ] }),
    );
    let err = defs.put("a", &closing, &none(), actor()).await.expect_err("cycle");
    assert_eq!(
        err,
        DefinitionError::Cycle {
            path: "match.any[1].not.in_segment".into(),
            cycle: vec!["a".into(), "c".into(), "b".into(), "a".into()],
        }
    );
    assert!(err.to_string().contains("a -> c -> b -> a"), "{err}");
    assert_eq!(stream_events(&store, &stream_id("a")).await.len(), 1, "nothing written");
    // A definition that no longer closes it is accepted: b -> a dropped.
    defs.put("b", &gold("b"), &none(), actor()).await.expect("b v2");
    let (a, _) = defs.put("a", &closing, &none(), actor()).await.expect("no cycle now");
    assert_eq!(a.version, 2);
}

#[test]
fn find_cycle_sees_a_two_segment_loop_and_a_diamond_is_not_one() {
    let seg = |id: &str, refs: &[&str]| {
        let leaves: Vec<Value> = refs.iter().map(|r| json!({ "in_segment": r })).collect();
        RuleSegment::from_value(&doc(id, json!({ "all": leaves }))).expect("valid")
    };
    let graph = |edges: &[(&str, &[&str])]| -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
            .collect()
    };
    assert_eq!(
        find_cycle(&seg("a", &["b"]), &graph(&[("b", &["a"])])),
        Some((
            "match.all[0].in_segment".into(),
            vec!["a".into(), "b".into(), "a".into()]
        ))
    );
    // a -> b, a -> c, b -> d, c -> d: no cycle.
    assert_eq!(
        find_cycle(
            &seg("a", &["b", "c"]),
            &graph(&[("b", &["d"]), ("c", &["d"]), ("d", &[])])
        ),
        None
    );
    // The second leaf closes it.
    assert_eq!(
        find_cycle(&seg("a", &["buyers", "c"]), &graph(&[("c", &["a"])])).map(|(p, _)| p),
        Some("match.all[1].in_segment".into())
    );
}

#[test]
fn in_segment_refs_walks_every_combinator() {
    let segment = RuleSegment::from_value(&doc(
        "x",
        json!({ "all": [
            { "in_segment": "a" },
            { "any": [ { "metric": "orders", "op": "gt", "value": 1 }, { "not": { "in_segment": "b" } } ] },
        ] }),
    ))
    .expect("valid");
    assert_eq!(
        in_segment_refs(&segment.matches),
        vec![
            ("match.all[0].in_segment".to_string(), "a".to_string()),
            ("match.all[1].any[1].not.in_segment".to_string(), "b".to_string()),
        ]
    );
}

#[tokio::test]
async fn the_stored_events_match_their_published_schemas() {
    let (defs, store, _) = service();
    defs.put("gold", &gold("gold"), &none(), actor()).await.expect("put");
    let schemas = crate::schemas::event_schemas().expect("schemas");
    let mut checked = 0;
    for stream in [stream_id("gold"), INDEX_STREAM.to_string()] {
        for e in stream_events(&store, &stream).await {
            let schema = crate::schemas::latest_schema(&schemas, &e.event_type)
                .unwrap_or_else(|| panic!("{} has a schema", e.event_type));
            let validator = jsonschema::validator_for(&schema).expect("compiles");
            let value = serde_json::to_value(&e).expect("serialises");
            let errors: Vec<String> = validator.iter_errors(&value).map(|err| err.to_string()).collect();
            assert!(errors.is_empty(), "{}: {errors:?}", e.event_type);
            assert_eq!(crate::bus::source_for(&e.event_type), "crm.segments");
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
}
