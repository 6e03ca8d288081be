use super::*;
use crate::consumer::{Projection, ProjectionError};
use crate::memory::InMemoryReadModels;
use crate::ports::EventStore;
use crate::testing::{raw_event, InMemoryDeadLetters, InMemoryEventStore, RefusingProjection, Rng};
use serde_json::json;

/// A random commit of puts, deletes and adds on a few documents of two partitions.
fn random_ops(rng: &mut Rng, round: u64) -> Vec<ReadOp> {
    (0..rng.below(6))
        .map(|i| {
            let partition = rng.pick(&["p", "q"]).to_string();
            let sort = format!("k{:02}", rng.below(12));
            match rng.below(4) {
                0 => ReadOp::Delete { partition, sort },
                1 => ReadOp::Add {
                    partition,
                    sort,
                    counts: BTreeMap::from([("n".to_string(), 1 + i as i64)]),
                    set: serde_json::Map::from_iter([("at".to_string(), json!(round))]),
                },
                _ => ReadOp::Put {
                    partition,
                    sort,
                    body: json!({ "round": round, "i": i }),
                },
            }
        })
        .collect()
}

#[tokio::test]
async fn replay_docs_read_and_store_what_the_store_itself_would_across_flushes() {
    for seed in 1..=20 {
        let mut rng = Rng(seed);
        let base = Arc::new(InMemoryReadModels::default());
        let reference = InMemoryReadModels::default();
        let docs = ReplayDocs::new(base.clone(), &["c"]);
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for round in 0..300u64 {
            let stream = rng.pick(&["s1", "s2", "s3"]);
            let version = versions.entry(stream).or_default();
            let ops = random_ops(&mut rng, round);
            docs.commit("c", stream, *version, *version + 1, ops.clone())
                .await
                .expect("replay commit");
            reference
                .commit("c", stream, *version, *version + 1, ops)
                .await
                .expect("reference commit");
            *version += 1;
            // A stale commit is a conflict, as in any store.
            assert!(matches!(
                docs.commit("c", stream, *version - 1, *version + 1, Vec::new()).await,
                Err(CommitError::Conflict { .. })
            ));
            let partition = rng.pick(&["p", "q"]);
            let sort = format!("k{:02}", rng.below(12));
            assert_eq!(
                docs.get("c", partition, &sort).await.expect("get"),
                reference.get("c", partition, &sort).await.expect("get"),
                "seed {seed} round {round}: {partition}/{sort}"
            );
            let prefix = rng.pick(&["", "k", "k0", "k1"]);
            let after = (rng.below(2) == 0).then(|| format!("k{:02}", rng.below(12)));
            let limit = 1 + rng.below(6) as usize;
            assert_eq!(
                docs.list("c", partition, prefix, after.as_deref(), limit)
                    .await
                    .expect("list"),
                reference
                    .list("c", partition, prefix, after.as_deref(), limit)
                    .await
                    .expect("list"),
                "seed {seed} round {round}: {partition} {prefix:?} after {after:?} limit {limit}"
            );
            assert_eq!(
                docs.checkpoint("c", stream).await.expect("checkpoint"),
                reference.checkpoint("c", stream).await.expect("checkpoint")
            );
            if rng.below(25) == 0 {
                docs.flush().await.expect("flush");
                assert_eq!(docs.unflushed(), 0);
            }
        }
        docs.flush().await.expect("last flush");
        assert_eq!(base.dump(), reference.dump(), "seed {seed}");
        for stream in ["s1", "s2", "s3"] {
            assert_eq!(
                base.checkpoint("c", stream).await.expect("checkpoint"),
                versions.get(stream).copied().unwrap_or(0),
                "seed {seed}: {stream}"
            );
        }
    }
}

#[tokio::test]
async fn a_flush_writes_each_document_once_however_many_commits_changed_it() {
    let base = Arc::new(InMemoryReadModels::default());
    let docs = ReplayDocs::new(base.clone(), &["c"]);
    for v in 0..250u64 {
        let ops = vec![ReadOp::Put {
            partition: "p".into(),
            sort: format!("k{}", v % 120),
            body: json!(v),
        }];
        docs.commit("c", "s", v, v + 1, ops).await.expect("commit");
    }
    // Nothing reaches the store before the flush.
    assert!(base.dump().is_empty());
    let flushed = docs.flush().await.expect("flush");
    assert_eq!(
        flushed,
        Flushed {
            documents: 120,
            checkpoints: 1
        }
    );
    assert_eq!(base.dump().len(), 120);
    assert_eq!(base.checkpoint("c", "s").await.expect("checkpoint"), 250);
    // Another consumer's documents are the store's, never cached or written.
    base.commit(
        "other",
        "s",
        0,
        1,
        vec![ReadOp::Put {
            partition: "p".into(),
            sort: "x".into(),
            body: json!(1),
        }],
    )
    .await
    .expect("other");
    assert_eq!(docs.get("other", "p", "x").await.expect("get"), Some(json!(1)));
    assert!(docs.commit("other", "s", 1, 2, Vec::new()).await.is_err());
}

/// Counts each event of its type per stream, reading what it counted so far.
struct Counter(&'static str, &'static str);

#[async_trait]
impl Projection for Counter {
    fn name(&self) -> &'static str {
        self.0
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == self.1
    }
    async fn project(&self, event: &EventEnvelope, docs: &dyn ReadModelStore) -> Result<Vec<ReadOp>, ProjectionError> {
        let seen = docs
            .get(self.0, &event.stream_id, "count")
            .await?
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        Ok(vec![ReadOp::Put {
            partition: event.stream_id.clone(),
            sort: "count".into(),
            body: json!(seen + 1),
        }])
    }
}

fn group(
    docs: Arc<dyn ReadModelStore>,
    dead: Arc<InMemoryDeadLetters>,
    store: Arc<InMemoryEventStore>,
) -> ConsumerGroup {
    ConsumerGroup::new(
        "g",
        vec![
            Arc::new(Counter("a", "A")),
            Arc::new(Counter("b", "B")),
            Arc::new(RefusingProjection("refuses")),
        ],
        store,
        docs,
        dead,
    )
}

fn events(rng: &mut Rng) -> Vec<EventEnvelope> {
    let mut versions: HashMap<&str, u64> = HashMap::new();
    (0..400)
        .map(|_| {
            let stream = rng.pick(&["s1", "s2", "s3", "s4"]);
            let v = versions.entry(stream).or_default();
            *v += 1;
            let mut e = raw_event(stream, rng.pick(&["A", "B", "C"]), json!({}));
            e.version = *v;
            e
        })
        .collect()
}

#[tokio::test]
async fn a_replay_in_parts_and_pages_gives_the_read_models_of_one_event_delivery() {
    for seed in 1..=8 {
        let mut rng = Rng(seed);
        let events = events(&mut rng);
        // The store holds them (live delivery reads the gaps from it).
        let store = Arc::new(InMemoryEventStore::default());
        for e in &events {
            store
                .append(crate::ports::AppendRequest {
                    stream_id: e.stream_id.clone(),
                    expected: crate::ports::ExpectedVersion::Exactly(e.version - 1),
                    events: vec![e.clone()],
                    reservations: Vec::new(),
                    receipt: None,
                })
                .await
                .expect("append");
        }
        // One event at a time, as live delivery.
        let live = Arc::new(InMemoryReadModels::default());
        let live_dead = Arc::new(InMemoryDeadLetters::default());
        let whole = group(live.clone(), live_dead.clone(), store.clone());
        for e in &events {
            whole.handle(e, crate::testing::test_time()).await.expect("handle");
        }
        // Rebuilt: each consumer in a part of its own, random pages, random flushes.
        let base = Arc::new(InMemoryReadModels::default());
        let dead = Arc::new(InMemoryDeadLetters::default());
        let template = group(base.clone(), dead.clone(), store.clone());
        let parts: Vec<(Arc<ReplayDocs>, ConsumerGroup)> = [&["a", "refuses"][..], &["b"][..]]
            .into_iter()
            .map(|names| {
                let docs = Arc::new(ReplayDocs::new(base.clone(), names));
                let part = template.part_over(names, docs.clone());
                (docs, part)
            })
            .collect();
        let mut stuck = HashSet::new();
        let mut at = 0;
        while at < events.len() {
            let end = (at + 1 + rng.below(60) as usize).min(events.len());
            for (docs, part) in &parts {
                part.replay(&events[at..end], &mut stuck, crate::testing::test_time())
                    .await
                    .expect("replay");
                if rng.below(3) == 0 {
                    docs.flush().await.expect("flush");
                }
            }
            at = end;
        }
        for (docs, _) in &parts {
            docs.flush().await.expect("flush");
        }
        assert_eq!(base.dump(), live.dump(), "seed {seed}");
        let parked = |d: &InMemoryDeadLetters| d.letters.lock().expect("letters").len();
        assert_eq!(
            parked(&dead),
            parked(&live_dead),
            "seed {seed}: one letter per event, as live"
        );
        assert_eq!(parked(&dead), events.len());
    }
}

#[test]
fn written_keys_are_remembered_by_fingerprint_and_parts_never_run_together() {
    let mut written = super::Written::default();
    assert!(!written.contains(&["timeline", "customer-a", "0001"]));
    written.insert(&["timeline", "customer-a", "0001"]);
    assert!(written.contains(&["timeline", "customer-a", "0001"]));
    // The same characters cut differently are another key.
    assert!(!written.contains(&["timeline", "customer-a0", "001"]));
    assert!(!written.contains(&["timelinecustomer-a", "0001"]));
    assert!(!written.contains(&["timeline", "customer-a"]));
}
