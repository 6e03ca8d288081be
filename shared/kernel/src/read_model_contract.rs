//! The read-model contract: one suite, run against every `ReadModelStore`
//! adapter (SQLite in crm-local, DynamoDB in crm-aws), through
//! [`read_model_contract!`](crate::read_model_contract).

use crate::ports::*;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

/// Generates one `#[tokio::test]` per case. `$make` names an async fn in the
/// calling module returning a fresh `Arc<dyn ReadModelStore>`.
#[macro_export]
macro_rules! read_model_contract {
    ($make:ident) => {
        mod read_model_contract {
            use $crate::read_model_contract as contract;
            $crate::read_model_contract!(@cases $make;
                commit_get_and_list, stale_checkpoint_conflicts_and_writes_nothing, delete_removes_a_document,
                consumers_are_isolated, concurrent_commits_keep_every_step, oversized_commit_is_refused,
                commit_all_chains_commits_and_refuses_a_stale_one, checkpoints_come_in_the_order_asked,
                a_page_larger_than_one_write_is_applied_whole, add_creates_adds_and_sets,
                adds_to_one_document_in_a_page_are_summed, a_refused_add_adds_nothing,
                concurrent_adds_count_every_commit_once);
        }
    };
    (@cases $make:ident; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                contract::$case(super::$make().await).await;
            }
        )*
    };
}

/// `prefix` and a new unique suffix: a stream id or partition of one test.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

/// A put of the document (`partition`, `sort`).
pub fn put(partition: &str, sort: &str, body: serde_json::Value) -> ReadOp {
    ReadOp::Put {
        partition: partition.into(),
        sort: sort.into(),
        body,
    }
}

/// An add of `counts` to the document (`partition`, `sort`), setting `set`.
pub fn add(partition: &str, sort: &str, counts: &[(&str, i64)], set: serde_json::Value) -> ReadOp {
    ReadOp::Add {
        partition: partition.into(),
        sort: sort.into(),
        counts: counts.iter().map(|(f, n)| (f.to_string(), *n)).collect(),
        set: match set {
            serde_json::Value::Object(set) => set,
            _ => serde_json::Map::new(),
        },
    }
}

pub async fn commit_get_and_list(store: Arc<dyn ReadModelStore>) {
    let stream = unique("customer");
    let p = unique("c");
    assert_eq!(store.checkpoint("timeline", &stream).await.expect("checkpoint"), 0);
    let ops = vec![
        put(&p, "t#0000000002", json!({"n": 2})),
        put(
            &p,
            "t#0000000001",
            json!({"n": 1, "text": "grüße", "nested": {"a": [1, null, true]}}),
        ),
        put(&p, "t#0000000003", json!({"n": 3})),
        put(&p, "profile", json!({"name": "Ada"})),
    ];
    store.commit("timeline", &stream, 0, 3, ops).await.expect("commit");
    assert_eq!(store.checkpoint("timeline", &stream).await.expect("checkpoint"), 3);
    assert_eq!(
        store.get("timeline", &p, "t#0000000001").await.expect("get"),
        Some(json!({"n": 1, "text": "grüße", "nested": {"a": [1, null, true]}}))
    );
    assert_eq!(store.get("timeline", &p, "missing").await.expect("get"), None);
    let all = store.list("timeline", &p, "t#", None, 100).await.expect("list");
    let sorts: Vec<&str> = all.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        sorts,
        ["t#0000000001", "t#0000000002", "t#0000000003"],
        "prefix, in sort order"
    );
    let page = store
        .list("timeline", &p, "t#", Some("t#0000000001"), 1)
        .await
        .expect("list");
    assert_eq!(page, vec![("t#0000000002".to_string(), json!({"n": 2}))]);
}

pub async fn stale_checkpoint_conflicts_and_writes_nothing(store: Arc<dyn ReadModelStore>) {
    let stream = unique("customer");
    let p = unique("c");
    store
        .commit("c360", &stream, 0, 1, vec![put(&p, "profile", json!({"v": 1}))])
        .await
        .expect("first");
    let err = store
        .commit(
            "c360",
            &stream,
            0,
            2,
            vec![put(&p, "profile", json!({"v": 2})), put(&p, "other", json!({}))],
        )
        .await
        .expect_err("stale expected checkpoint");
    assert!(matches!(err, CommitError::Conflict { .. }), "{err:?}");
    assert_eq!(
        store.get("c360", &p, "profile").await.expect("get"),
        Some(json!({"v": 1}))
    );
    assert_eq!(store.get("c360", &p, "other").await.expect("get"), None);
    assert_eq!(store.checkpoint("c360", &stream).await.expect("checkpoint"), 1);
    // A commit with no documents still moves the checkpoint.
    store
        .commit("c360", &stream, 1, 2, Vec::new())
        .await
        .expect("empty commit");
    assert_eq!(store.checkpoint("c360", &stream).await.expect("checkpoint"), 2);
}

pub async fn delete_removes_a_document(store: Arc<dyn ReadModelStore>) {
    let stream = unique("customer");
    let p = unique("email");
    store
        .commit("index", &stream, 0, 1, vec![put(&p, "c-1", json!({"id": "c-1"}))])
        .await
        .expect("put");
    let del = ReadOp::Delete {
        partition: p.clone(),
        sort: "c-1".into(),
    };
    store.commit("index", &stream, 1, 2, vec![del]).await.expect("delete");
    assert_eq!(store.get("index", &p, "c-1").await.expect("get"), None);
    assert!(store.list("index", &p, "", None, 10).await.expect("list").is_empty());
}

pub async fn consumers_are_isolated(store: Arc<dyn ReadModelStore>) {
    let stream = unique("customer");
    let p = unique("c");
    store
        .commit("a", &stream, 0, 5, vec![put(&p, "doc", json!("a"))])
        .await
        .expect("a");
    assert_eq!(store.checkpoint("b", &stream).await.expect("checkpoint"), 0);
    assert_eq!(store.get("b", &p, "doc").await.expect("get"), None);
    store
        .commit("b", &stream, 0, 1, vec![put(&p, "doc", json!("b"))])
        .await
        .expect("b");
    assert_eq!(store.get("a", &p, "doc").await.expect("get"), Some(json!("a")));
}

pub async fn concurrent_commits_keep_every_step(store: Arc<dyn ReadModelStore>) {
    const TASKS: u64 = 8;
    const EACH: u64 = 3;
    let stream = unique("customer");
    let p = unique("c");
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let stream = stream.clone();
        let p = p.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..EACH {
                let mut attempts = 0;
                loop {
                    let cp = store.checkpoint("race", &stream).await.expect("checkpoint");
                    let doc = put(&p, &format!("step#{:04}", cp + 1), json!({ "by": t, "i": i }));
                    match store.commit("race", &stream, cp, cp + 1, vec![doc]).await {
                        Ok(()) => break,
                        Err(CommitError::Conflict { .. }) => {
                            attempts += 1;
                            assert!(attempts < 10_000, "task {t} starved");
                        }
                        Err(e) => panic!("task {t}: {e:?}"),
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    assert_eq!(
        store.checkpoint("race", &stream).await.expect("checkpoint"),
        TASKS * EACH
    );
    let steps = store.list("race", &p, "step#", None, 1000).await.expect("list");
    assert_eq!(
        steps.len() as u64,
        TASKS * EACH,
        "one document per accepted step, none overwritten"
    );
}

pub async fn oversized_commit_is_refused(store: Arc<dyn ReadModelStore>) {
    let stream = unique("customer");
    let p = unique("c");
    let ops: Vec<ReadOp> = (0..=MAX_OPS_PER_COMMIT)
        .map(|i| put(&p, &format!("d{i:04}"), json!(i)))
        .collect();
    let err = store.commit("big", &stream, 0, 1, ops).await.expect_err("too many ops");
    assert!(matches!(err, CommitError::TooLarge(_)), "{err:?}");
    assert_eq!(store.checkpoint("big", &stream).await.expect("checkpoint"), 0);
    assert!(store.list("big", &p, "", None, 1000).await.expect("list").is_empty());
}

fn commit(consumer: &str, stream: &str, expected: u64, new: u64, ops: Vec<ReadOp>) -> Commit {
    Commit {
        consumer: consumer.into(),
        stream_id: stream.into(),
        expected,
        new,
        ops,
        idempotent: Vec::new(),
    }
}

pub async fn commit_all_chains_commits_and_refuses_a_stale_one(store: Arc<dyn ReadModelStore>) {
    let (a, b) = (unique("customer"), unique("customer"));
    let p = unique("c");
    store
        .commit_all(vec![
            commit("page", &a, 0, 1, vec![put(&p, "a", json!(1))]),
            commit("page", &a, 1, 2, vec![put(&p, "a", json!(2))]),
            commit("page", &b, 0, 1, vec![put(&p, "b", json!(1))]),
        ])
        .await
        .expect("chained commits");
    assert_eq!(store.checkpoint("page", &a).await.expect("checkpoint"), 2);
    assert_eq!(store.get("page", &p, "a").await.expect("get"), Some(json!(2)));
    let err = store
        .commit_all(vec![commit("page", &b, 0, 2, vec![put(&p, "stale", json!(0))])])
        .await
        .expect_err("stale checkpoint");
    assert!(matches!(err, CommitError::Conflict { .. }), "{err:?}");
    assert_eq!(store.get("page", &p, "stale").await.expect("get"), None);
    assert_eq!(store.checkpoint("page", &b).await.expect("checkpoint"), 1);
}

pub async fn checkpoints_come_in_the_order_asked(store: Arc<dyn ReadModelStore>) {
    let (a, b) = (unique("customer"), unique("customer"));
    store.commit("first", &a, 0, 3, Vec::new()).await.expect("commit");
    store.commit("second", &b, 0, 5, Vec::new()).await.expect("commit");
    let keys = [("second", &b), ("first", &b), ("first", &a)].map(|(c, s)| (c.to_string(), s.clone()));
    assert_eq!(store.checkpoints(&keys).await.expect("checkpoints"), vec![5, 0, 3]);
}

/// A page of 90 commits on 30 streams, 3 documents each plus a document
/// every commit rewrites: more items than one DynamoDB transaction holds.
pub async fn a_page_larger_than_one_write_is_applied_whole(store: Arc<dyn ReadModelStore>) {
    let p = unique("c");
    let streams: Vec<String> = (0..30).map(|_| unique("customer")).collect();
    let mut commits = Vec::new();
    for round in 0..3u64 {
        for (i, stream) in streams.iter().enumerate() {
            let ops = vec![
                put(&p, &format!("{i:02}#{round}#a"), json!(round)),
                put(&p, &format!("{i:02}#{round}#b"), json!(round)),
                put(&p, &format!("{i:02}#{round}#c"), json!(round)),
                put(&p, "shared", json!({ "last": [i, round] })),
            ];
            commits.push(commit("big-page", stream, round, round + 1, ops));
        }
    }
    store.commit_all(commits).await.expect("page");
    let keys: Vec<(String, String)> = streams.iter().map(|s| ("big-page".to_string(), s.clone())).collect();
    assert_eq!(store.checkpoints(&keys).await.expect("checkpoints"), vec![3; 30]);
    let docs = store.list("big-page", &p, "", None, 1000).await.expect("list");
    assert_eq!(docs.len(), 30 * 9 + 1);
    assert_eq!(
        store.get("big-page", &p, "shared").await.expect("get"),
        Some(json!({ "last": [29, 2] })),
        "the last write of the page wins"
    );
}

/// An add creates a document, adds to its counts and sets its other
/// fields; a put's fields are what an add adds to; a put or a delete
/// replaces what adds made.
pub async fn add_creates_adds_and_sets(store: Arc<dyn ReadModelStore>) {
    let stream = unique("customer");
    let p = unique("c");
    let expires = json!({"expires_at": 1_800_000_000});
    store
        .commit(
            "counts",
            &stream,
            0,
            1,
            vec![add(&p, "b", &[("n", 1), ("m", 2)], expires.clone())],
        )
        .await
        .expect("create");
    assert_eq!(
        store.get("counts", &p, "b").await.expect("get"),
        Some(json!({"n": 1, "m": 2, "expires_at": 1_800_000_000}))
    );
    store
        .commit(
            "counts",
            &stream,
            1,
            2,
            vec![add(&p, "b", &[("n", 5)], json!({"expires_at": 1_900_000_000}))],
        )
        .await
        .expect("add");
    assert_eq!(
        store.list("counts", &p, "", None, 10).await.expect("list"),
        vec![("b".to_string(), json!({"n": 6, "m": 2, "expires_at": 1_900_000_000}))]
    );
    // A put's integer fields are counted on; its other fields stay.
    store
        .commit(
            "counts",
            &stream,
            2,
            3,
            vec![put(&p, "c", json!({"n": 10, "keep": "x"}))],
        )
        .await
        .expect("put");
    store
        .commit(
            "counts",
            &stream,
            3,
            4,
            vec![add(&p, "c", &[("n", -3), ("k", 1)], json!({}))],
        )
        .await
        .expect("add on a put");
    assert_eq!(
        store.get("counts", &p, "c").await.expect("get"),
        Some(json!({"n": 7, "keep": "x", "k": 1}))
    );
    // A put replaces the counts; a delete removes them, and the next add starts again.
    store
        .commit(
            "counts",
            &stream,
            4,
            5,
            vec![
                put(&p, "b", json!({"other": true})),
                ReadOp::Delete {
                    partition: p.clone(),
                    sort: "c".into(),
                },
            ],
        )
        .await
        .expect("replace");
    assert_eq!(
        store.get("counts", &p, "b").await.expect("get"),
        Some(json!({"other": true}))
    );
    assert_eq!(store.get("counts", &p, "c").await.expect("get"), None);
    store
        .commit("counts", &stream, 5, 6, vec![add(&p, "c", &[("n", 1)], json!({}))])
        .await
        .expect("add after delete");
    assert_eq!(store.get("counts", &p, "c").await.expect("get"), Some(json!({"n": 1})));
}

/// Many commits of a page adding to one document (two adds in one commit
/// too), more than one DynamoDB transaction holds: every add counted once.
pub async fn adds_to_one_document_in_a_page_are_summed(store: Arc<dyn ReadModelStore>) {
    let p = unique("c");
    let streams: Vec<String> = (0..120).map(|_| unique("customer")).collect();
    let mut commits = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        let mut ops = vec![add(&p, "shared", &[("events", 1)], json!({"expires_at": 7}))];
        if i % 3 == 0 {
            ops.push(add(&p, "shared", &[("events", 1), ("thirds", 1)], json!({})));
            ops.push(add(&p, &format!("own#{i:03}"), &[("events", 1)], json!({})));
        }
        commits.push(commit("adds", stream, 0, 1, ops));
    }
    store.commit_all(commits).await.expect("page");
    assert_eq!(
        store.get("adds", &p, "shared").await.expect("get"),
        Some(json!({"events": 160, "thirds": 40, "expires_at": 7}))
    );
    assert_eq!(
        store.list("adds", &p, "own#", None, 1000).await.expect("list").len(),
        40
    );
}

/// A commit whose checkpoint moved (a redelivery) adds nothing, in a page
/// or alone.
pub async fn a_refused_add_adds_nothing(store: Arc<dyn ReadModelStore>) {
    let (a, b) = (unique("customer"), unique("customer"));
    let p = unique("c");
    store
        .commit_all(vec![
            commit("redelivered", &a, 0, 1, vec![add(&p, "n", &[("n", 1)], json!({}))]),
            commit("redelivered", &b, 0, 1, vec![add(&p, "n", &[("n", 1)], json!({}))]),
        ])
        .await
        .expect("first delivery");
    let err = store
        .commit("redelivered", &a, 0, 1, vec![add(&p, "n", &[("n", 1)], json!({}))])
        .await
        .expect_err("delivered again");
    assert!(matches!(err, CommitError::Conflict { .. }), "{err:?}");
    let err = store
        .commit_all(vec![commit(
            "redelivered",
            &b,
            0,
            1,
            vec![add(&p, "n", &[("n", 1)], json!({}))],
        )])
        .await
        .expect_err("page delivered again");
    assert!(matches!(err, CommitError::Conflict { .. }), "{err:?}");
    assert_eq!(
        store.get("redelivered", &p, "n").await.expect("get"),
        Some(json!({"n": 2}))
    );
}

/// Commits of different streams adding to one document at once: each
/// accepted commit counts once (a refused one, retried, adds nothing).
pub async fn concurrent_adds_count_every_commit_once(store: Arc<dyn ReadModelStore>) {
    const TASKS: u64 = 6;
    const EACH: u64 = 3;
    let p = unique("c");
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let (store, p) = (store.clone(), p.clone());
        let stream = unique("customer");
        handles.push(tokio::spawn(async move {
            for _ in 0..EACH {
                let mut attempts = 0;
                loop {
                    let cp = store.checkpoint("together", &stream).await.expect("checkpoint");
                    let op = add(&p, "count", &[("n", 1)], json!({}));
                    match store.commit("together", &stream, cp, cp + 1, vec![op]).await {
                        Ok(()) => break,
                        // Another writer held the item: nothing written, try again.
                        Err(e) => {
                            attempts += 1;
                            assert!(attempts < 1000, "task {t} starved: {e:?}");
                        }
                    }
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    assert_eq!(
        store.get("together", &p, "count").await.expect("get"),
        Some(json!({"n": TASKS * EACH}))
    );
}
