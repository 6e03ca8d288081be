//! AWS wire tests: the read-model contract and the item layout, against the
//! DynamoDB endpoint in `AWS_ENDPOINT_URL` (a moto server started through
//! `scripts/moto_server.py`, see `dynamodb_contract.rs`). Every test gets a
//! table of its own, so they run in parallel.

use aws_sdk_dynamodb::types::{AttributeValue, KeyType, ScalarAttributeType};
use crm_aws::dynamodb::{create_read_models_table, DynamoReadModels};
use crm_aws::testing::{dynamodb_client, get_item};
use crm_core::ports::*;
use crm_core::read_model_contract::{put, unique};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Read models over a new, uniquely named table.
async fn fresh_dynamo() -> DynamoReadModels {
    let client = dynamodb_client().await;
    let table = format!("read-models-test-{}", Uuid::now_v7().simple());
    create_read_models_table(&client, &table)
        .await
        .expect("create the read-models table");
    DynamoReadModels::new(client, table)
}

async fn fresh_read_models() -> Arc<dyn ReadModelStore> {
    Arc::new(fresh_dynamo().await)
}

crm_core::read_model_contract!(fresh_read_models);

type RawItem = HashMap<String, AttributeValue>;

async fn raw_item(store: &DynamoReadModels, pk: &str, sk: &str) -> Option<RawItem> {
    let key = [
        ("pk", AttributeValue::S(pk.into())),
        ("sk", AttributeValue::S(sk.into())),
    ];
    get_item(store.client(), store.table(), key).await
}

fn s<'a>(item: &'a RawItem, name: &str) -> &'a str {
    match item.get(name) {
        Some(AttributeValue::S(v)) => v,
        other => panic!("{name} is not a string: {other:?}"),
    }
}

#[tokio::test]
async fn items_have_the_documented_layout() {
    let store = fresh_dynamo().await;
    let stream = unique("customer");
    let p = unique("c");
    let body = json!({"name": "Ada", "tags": ["a", "ß"], "n": 1.5});
    store
        .commit("timeline", &stream, 0, 4, vec![put(&p, "profile", body.clone())])
        .await
        .expect("commit");

    let doc = raw_item(&store, &format!("timeline#{p}"), "profile")
        .await
        .expect("the document item");
    assert_eq!(s(&doc, "kind"), "doc");
    let stored: serde_json::Value = serde_json::from_str(s(&doc, "body")).expect("body is JSON");
    assert_eq!(stored, body);
    assert_eq!(doc.len(), 4, "{doc:?}");

    // One checkpoint item per stream, one version attribute per consumer (decision 0036).
    let checkpoint = raw_item(&store, &format!("checkpoint#{stream}"), "checkpoint")
        .await
        .expect("the checkpoint item");
    assert_eq!(s(&checkpoint, "kind"), "checkpoint");
    assert_eq!(checkpoint.get("v#timeline"), Some(&AttributeValue::N("4".into())));
    assert_eq!(checkpoint.len(), 4, "{checkpoint:?}");

    let described = store
        .client()
        .describe_table()
        .table_name(store.table())
        .send()
        .await
        .expect("describe table");
    let table = described.table().expect("table description");
    let keys: Vec<(&str, &KeyType)> = table
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type()))
        .collect();
    assert_eq!(keys, [("pk", &KeyType::Hash), ("sk", &KeyType::Range)]);
    for definition in table.attribute_definitions() {
        assert_eq!(definition.attribute_type(), &ScalarAttributeType::S, "{definition:?}");
    }
    assert!(table.stream_specification().is_none_or(|s| !s.stream_enabled()));
}

#[tokio::test]
async fn one_commit_may_touch_a_document_twice() {
    let store = fresh_dynamo().await;
    let stream = unique("customer");
    let p = unique("c");
    let delete = |sort: &str| ReadOp::Delete {
        partition: p.clone(),
        sort: sort.into(),
    };
    store
        .commit(
            "index",
            &stream,
            0,
            1,
            vec![
                put(&p, "a", json!(1)),
                put(&p, "b", json!(1)),
                put(&p, "a", json!(2)),
                delete("b"),
                delete("c"),
                put(&p, "c", json!(3)),
            ],
        )
        .await
        .expect("commit");
    assert_eq!(store.get("index", &p, "a").await.expect("get"), Some(json!(2)));
    assert_eq!(store.get("index", &p, "b").await.expect("get"), None);
    assert_eq!(store.get("index", &p, "c").await.expect("get"), Some(json!(3)));
    assert_eq!(store.checkpoint("index", &stream).await.expect("cp"), 1);
}

#[tokio::test]
async fn list_bounds_and_pages() {
    let store = fresh_dynamo().await;
    let stream = unique("customer");
    let p = unique("c");
    let sorts = ["a#1", "a#2", "b#1", "b#2", "b#3", "c"];
    store
        .commit(
            "timeline",
            &stream,
            0,
            1,
            sorts.iter().map(|s| put(&p, s, json!(s))).collect(),
        )
        .await
        .expect("commit");
    let list = |prefix: &'static str, after: Option<&'static str>, limit: usize| {
        let store = store.clone();
        let p = p.clone();
        async move {
            store
                .list("timeline", &p, prefix, after, limit)
                .await
                .expect("list")
                .into_iter()
                .map(|(s, _)| s)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list("", None, 100).await, sorts);
    assert_eq!(list("", Some(""), 100).await, sorts);
    assert_eq!(list("", Some("b#2"), 100).await, ["b#3", "c"]);
    assert_eq!(list("b#", None, 100).await, ["b#1", "b#2", "b#3"]);
    // `after` before the prefix's range, inside it, and past it.
    assert_eq!(list("b#", Some("a#9"), 100).await, ["b#1", "b#2", "b#3"]);
    assert_eq!(list("b#", Some("b#1"), 100).await, ["b#2", "b#3"]);
    assert_eq!(list("b#", Some("b#3"), 100).await, Vec::<String>::new());
    assert_eq!(list("b#", Some("bz"), 100).await, Vec::<String>::new());
    assert_eq!(list("b#", Some("b#1"), 1).await, ["b#2"]);
    assert_eq!(list("b#", None, 0).await, Vec::<String>::new());
    assert_eq!(list("z", None, 100).await, Vec::<String>::new());
    // Page by page, as a caller does.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list("timeline", &p, "", after.as_deref(), 2).await.expect("list");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|(s, _)| s.clone());
        seen.extend(page.into_iter().map(|(s, _)| s));
    }
    assert_eq!(seen, sorts);
}

#[tokio::test]
async fn ambiguous_consumers_and_huge_documents_are_refused() {
    let store = fresh_dynamo().await;
    let stream = unique("customer");
    let p = unique("c");
    for consumer in ["checkpoint", "a#b", ""] {
        assert!(
            matches!(
                store
                    .commit(consumer, &stream, 0, 1, vec![put(&p, "d", json!(1))])
                    .await,
                Err(CommitError::Store(StoreError::Failed(_)))
            ),
            "{consumer:?}"
        );
        assert!(store.get(consumer, &p, "d").await.is_err(), "{consumer:?}");
    }
    let huge = json!("x".repeat(500 * 1024));
    let err = store
        .commit("timeline", &stream, 0, 1, vec![put(&p, "d", huge)])
        .await
        .expect_err("an item over 400 KB");
    assert!(matches!(err, CommitError::TooLarge(_)), "{err:?}");
    assert_eq!(store.checkpoint("timeline", &stream).await.expect("cp"), 0);
}

#[tokio::test]
async fn a_list_spans_query_pages() {
    // A Query page holds at most 1 MB; five documents of 300 KB need two.
    let store = fresh_dynamo().await;
    let stream = unique("customer");
    let p = unique("c");
    let ops: Vec<ReadOp> = (0..5)
        .map(|i| put(&p, &format!("d#{i}"), json!({ "i": i, "pad": "x".repeat(300 * 1024) })))
        .chain([put(&p, "e", json!("after the range"))])
        .collect();
    store.commit("timeline", &stream, 0, 1, ops).await.expect("commit");
    let first_page = store
        .client()
        .query()
        .table_name(store.table())
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(format!("timeline#{p}")))
        .consistent_read(true)
        .send()
        .await
        .expect("query");
    assert!(
        first_page.last_evaluated_key().is_some() && first_page.items().len() < 6,
        "the documents do not fit one page: {} items",
        first_page.items().len()
    );
    let sorts = |docs: Vec<(String, serde_json::Value)>| docs.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
    let all = store.list("timeline", &p, "d#", None, 100).await.expect("list");
    assert_eq!(sorts(all), ["d#0", "d#1", "d#2", "d#3", "d#4"]);
    let rest = store.list("timeline", &p, "d#", Some("d#0"), 100).await.expect("list");
    assert_eq!(sorts(rest), ["d#1", "d#2", "d#3", "d#4"]);
    let everything = store.list("timeline", &p, "", Some("d#0"), 100).await.expect("list");
    assert_eq!(sorts(everything), ["d#1", "d#2", "d#3", "d#4", "e"]);
}

#[tokio::test]
async fn capacity_is_counted_from_item_sizes_per_request() {
    use crm_core::consumer::capacity::{checkpoint_item_bytes, doc_item_bytes};
    let store = fresh_dynamo().await;
    let (a, b) = (unique("customer"), unique("customer"));
    let p = unique("c");
    let before = store.capacity();
    // A checkpoint moving alone: one conditional PutItem, no transaction.
    store
        .commit("meter", &a, 0, 1, Vec::new())
        .await
        .expect("checkpoint alone");
    let after = store.capacity();
    assert_eq!(after.write_units - before.write_units, 1.0);
    assert_eq!(
        (
            after.write_requests - before.write_requests,
            after.transactions - before.transactions
        ),
        (1, 0)
    );
    // A page: three commits of one stream rewriting one 1.5 KB document, and
    // another stream's checkpoint: one transaction of the first stream's
    // checkpoint and the document, each written once, and the other
    // checkpoint alone (a conditional put).
    let body = |n: u64| json!({ "n": n, "pad": "x".repeat(1500) });
    let page = (1..=3)
        .map(|n| Commit {
            consumer: "meter".into(),
            stream_id: a.clone(),
            expected: n,
            new: n + 1,
            ops: vec![put(&p, "doc", body(n))],
            idempotent: Vec::new(),
        })
        .chain([Commit {
            consumer: "meter".into(),
            stream_id: b.clone(),
            expected: 0,
            new: 7,
            ops: Vec::new(),
            idempotent: Vec::new(),
        }])
        .collect();
    let before = store.capacity();
    store.commit_all(page).await.expect("page");
    let after = store.capacity();
    let doc = doc_item_bytes("meter", &put(&p, "doc", body(3)));
    assert!(doc > 1024 && doc <= 2048, "{doc} bytes");
    assert!(checkpoint_item_bytes("meter", &a, 4) <= 1024);
    assert_eq!(after.write_units - before.write_units, 2.0 * (1.0 + 2.0) + 1.0);
    assert_eq!(
        (
            after.write_requests - before.write_requests,
            after.transactions - before.transactions
        ),
        (2, 1)
    );
    assert_eq!(store.get("meter", &p, "doc").await.expect("get"), Some(body(3)));
    // Checkpoints in one BatchGetItem: one unit per item, found or not.
    let before = store.capacity();
    let keys = [&a, &b, &unique("customer")].map(|s| ("meter".to_string(), s.clone()));
    assert_eq!(store.checkpoints(&keys).await.expect("checkpoints"), vec![4, 7, 0]);
    let after = store.capacity();
    assert_eq!(after.read_units - before.read_units, 3.0);
    assert_eq!(after.read_requests - before.read_requests, 1);
    // A consistent GetItem of the 1.5 KB document: one unit.
    let before = store.capacity();
    store.get("meter", &p, "doc").await.expect("get");
    assert_eq!(store.capacity().read_units - before.read_units, 1.0);
}

#[tokio::test]
async fn a_stale_checkpoint_in_a_later_chunk_keeps_the_chunks_before() {
    let store = fresh_dynamo().await;
    let p = unique("c");
    let streams: Vec<String> = (0..60).map(|_| unique("customer")).collect();
    // The last stream's checkpoint already moved: its commit conflicts.
    let last = streams.last().expect("streams").clone();
    store.commit("chunks", &last, 0, 1, Vec::new()).await.expect("moved");
    let commits: Vec<Commit> = streams
        .iter()
        .enumerate()
        .map(|(i, s)| Commit {
            consumer: "chunks".into(),
            stream_id: s.clone(),
            expected: 0,
            new: 1,
            ops: vec![put(&p, &format!("d{i:02}"), json!(i))],
            idempotent: Vec::new(),
        })
        .collect();
    let err = store.commit_all(commits).await.expect_err("stale checkpoint");
    assert!(
        matches!(&err, CommitError::Conflict { stream_id, expected: 0, .. } if *stream_id == last),
        "{err:?}"
    );
    // 60 commits of 2 items: the first chunk (50 commits) stands, the second is refused whole.
    assert_eq!(store.checkpoint("chunks", &streams[0]).await.expect("cp"), 1);
    assert_eq!(store.checkpoint("chunks", &streams[49]).await.expect("cp"), 1);
    assert_eq!(store.checkpoint("chunks", &streams[50]).await.expect("cp"), 0);
    assert_eq!(store.get("chunks", &p, "d50").await.expect("get"), None);
    assert_eq!(store.checkpoint("chunks", &last).await.expect("cp"), 1);
}

#[tokio::test]
async fn idempotent_documents_go_first_and_a_stale_one_never_overwrites_a_newer() {
    let store = fresh_dynamo().await;
    let stream = unique("customer");
    let p = unique("c");
    let idempotent = |expected: u64, new: u64, n: u64| Commit {
        consumer: "loose".into(),
        stream_id: stream.clone(),
        expected,
        new,
        ops: Vec::new(),
        idempotent: vec![put(&p, "marker", json!({ "n": n }))],
    };
    let before = store.capacity();
    store.commit_all(vec![idempotent(0, 5, 5)]).await.expect("commit");
    let after = store.capacity();
    // The document alone (a put of its own) and the checkpoint alone: two
    // plain writes, no transaction.
    assert_eq!(
        (
            after.write_requests - before.write_requests,
            after.transactions - before.transactions
        ),
        (2, 0)
    );
    assert_eq!(after.write_units - before.write_units, 2.0);
    let doc = raw_item(&store, &format!("loose#{p}"), "marker").await.expect("item");
    assert_eq!(s(&doc, "stamp_stream"), stream);
    assert_eq!(doc.get("stamp_version"), Some(&AttributeValue::N("5".into())));
    // A stale delivery (version 3, expecting the checkpoint at 0): its
    // document write is skipped, its checkpoint conflicts.
    let err = store
        .commit_all(vec![idempotent(0, 3, 3)])
        .await
        .expect_err("stale checkpoint");
    assert!(matches!(err, CommitError::Conflict { .. }), "{err:?}");
    assert_eq!(
        store.get("loose", &p, "marker").await.expect("get"),
        Some(json!({ "n": 5 }))
    );
    // The same commit again (a redelivery after a crash) changes nothing.
    store.commit_all(vec![idempotent(5, 5, 5)]).await.expect("again");
    assert_eq!(
        store.get("loose", &p, "marker").await.expect("get"),
        Some(json!({ "n": 5 }))
    );
    assert_eq!(store.checkpoint("loose", &stream).await.expect("cp"), 5);
}
