//! Replay and the consistency check over the in-memory adapters.

use super::*;
use crate::assembly::AssembledGroups;
use crate::clock::SystemClock;
use crate::consent::ledger::CONSENT_LEDGER;
use crate::consent::{Channel, ConsentMethod, Purpose};
use crate::consumer::ConsumerGroup;
use crate::customer::views::CUSTOMER_360;
use crate::customer::*;
use crate::event::{Actor, CommandMeta};
use crate::ports::{ReadModelStore, ReadOp};
use crate::testing::{InMemoryDeadLetters, InMemoryEventStore, InMemoryReadModels};

fn respond(c: &Customer, _: &[EventEnvelope]) -> (u16, serde_json::Value) {
    (200, serde_json::json!({ "id": c.id }))
}

/// Three customers with a registration, a consent and a profile change each.
async fn store() -> Arc<InMemoryEventStore> {
    let store = Arc::new(InMemoryEventStore::default());
    let service =
        CustomerService::new(store.clone(), Arc::new(SystemClock)).with_identifiers(crate::testing::identifiers());
    let meta = CommandMeta::new(Actor::api("ops-test"));
    for n in 0..3 {
        let id = format!("00000000-0000-7000-8000-{n:012}");
        let register = CustomerCommand::Register(RegisterCustomer {
            email: format!("ops{n}@example.com"),
            first_name: format!("First{n}"),
            last_name: "Ops".into(),
            phone: None,
            source: RegistrationSource::Web,
            marketing_consent: MarketingConsentChoice {
                email: true,
                sms: false,
                push: false,
            },
            terms_accepted: true,
            ip: "192.0.2.1".into(),
            user_agent: "ops-test".into(),
            timezone: None,
            locale: None,
        });
        service
            .execute(&id, &register, &meta, None, &respond)
            .await
            .expect("register");
        let grant = CustomerCommand::GrantConsent(GrantConsent {
            purpose: Purpose::Marketing,
            channel: Channel::Push,
            method: ConsentMethod::PreferenceCentre,
            ip: None,
            user_agent: None,
        });
        service
            .execute(&id, &grant, &meta, None, &respond)
            .await
            .expect("grant");
        let update = CustomerCommand::UpdateProfile(UpdateProfile {
            first_name: Some(format!("Renamed{n}")),
            ..Default::default()
        });
        service
            .execute(&id, &update, &meta, None, &respond)
            .await
            .expect("update");
    }
    store
}

/// The projector and consent groups over `docs`, fed every stored event.
async fn project(store: Arc<InMemoryEventStore>, docs: Arc<InMemoryReadModels>) {
    let dead = Arc::new(InMemoryDeadLetters::default());
    let groups = [
        ConsumerGroup::projector(store.clone(), docs.clone(), dead.clone(), crate::testing::identifiers()),
        ConsumerGroup::consent(
            store.clone(),
            docs.clone(),
            dead.clone(),
            crate::privacy::IdentifierHasher::new(b"ops-test"),
        ),
    ];
    let mut cursor: Option<String> = None;
    loop {
        let page = store.read_all(cursor.as_deref(), 100).await.expect("read all");
        for event in &page.events {
            for group in &groups {
                group.handle(event, Utc::now()).await.expect("handle");
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
}

#[tokio::test]
async fn a_consistent_store_reports_no_differences() {
    let store = store().await;
    let docs = Arc::new(InMemoryReadModels::default());
    project(store.clone(), docs.clone()).await;
    let streams = sample_streams(store.as_ref(), 10).await.expect("sample");
    assert_eq!(streams.len(), 3);
    let report = check(store.as_ref(), docs.as_ref(), &checked_projections(), &streams)
        .await
        .expect("check");
    assert!(report.documents >= 3 * 2, "folded the 360 and the ledger: {report:?}");
    assert!(report.is_consistent(), "{:?}", report.differences);
    assert!(report.behind.is_empty());
}

#[tokio::test]
async fn a_tampered_document_and_an_extra_document_are_reported() {
    let store = store().await;
    let docs = Arc::new(InMemoryReadModels::default());
    project(store.clone(), docs.clone()).await;
    let customer = "00000000-0000-7000-8000-000000000001";
    let stream = format!("customer-{customer}");
    let mut profile = docs
        .get(CUSTOMER_360, customer, "profile")
        .await
        .expect("get")
        .expect("a 360");
    profile["first_name"] = serde_json::json!("Tampered");
    let checkpoint = docs.checkpoint(CUSTOMER_360, &stream).await.expect("checkpoint");
    let tamper = vec![ReadOp::Put {
        partition: customer.into(),
        sort: "profile".into(),
        body: profile.clone(),
    }];
    docs.commit(CUSTOMER_360, &stream, checkpoint, checkpoint, tamper)
        .await
        .expect("tamper");
    let checkpoint = docs.checkpoint(CONSENT_LEDGER, &stream).await.expect("checkpoint");
    let extra = vec![ReadOp::Put {
        partition: customer.into(),
        sort: "current#analytics#sms".into(),
        body: serde_json::json!({"granted": true}),
    }];
    docs.commit(CONSENT_LEDGER, &stream, checkpoint, checkpoint, extra)
        .await
        .expect("extra");

    let streams = sample_streams(store.as_ref(), 0).await.expect("sample");
    let report = check(store.as_ref(), docs.as_ref(), &checked_projections(), &streams)
        .await
        .expect("check");
    assert_eq!(report.differences.len(), 2, "{:#?}", report.differences);
    let tampered = &report.differences[0];
    assert_eq!(
        (tampered.consumer.as_str(), tampered.partition.as_str()),
        (CUSTOMER_360, customer)
    );
    assert_eq!(tampered.stored.as_ref(), Some(&profile));
    assert_eq!(
        tampered.expected.as_ref().and_then(|p| p["first_name"].as_str()),
        Some("Renamed1")
    );
    let extra = &report.differences[1];
    assert_eq!(extra.consumer, CONSENT_LEDGER);
    assert_eq!(extra.expected, None);
}

#[tokio::test]
async fn replaying_one_consumer_rebuilds_it_alone() {
    let store = store().await;
    let docs = Arc::new(InMemoryReadModels::default());
    project(store.clone(), docs.clone()).await;
    let before = docs.dump();
    // Forget the customer 360 only (what `clear` does to one consumer).
    let fresh = Arc::new(InMemoryReadModels::default());
    let group = ConsumerGroup::new(
        "projector",
        vec![Arc::new(crate::customer::views::CustomerProfileProjection)],
        store.clone(),
        fresh.clone(),
        Arc::new(InMemoryDeadLetters::default()),
    );
    let mut seen = 0;
    let report = replay(&group, store.as_ref(), Utc::now(), &mut |n| seen = n)
        .await
        .expect("replay");
    assert_eq!(report.events, seen);
    assert!(report.applied > 0 && report.parked == 0, "{report:?}");
    let rebuilt: Vec<_> = fresh.dump().into_iter().collect();
    let original: Vec<_> = before.into_iter().filter(|((c, _, _), _)| c == CUSTOMER_360).collect();
    assert_eq!(rebuilt, original);
    // Replaying again applies nothing: the checkpoints skip every event.
    let again = replay(&group, store.as_ref(), Utc::now(), &mut |_| {})
        .await
        .expect("replay again");
    assert_eq!(again.applied, 0);
}

// ---------------------------------------------------------------- verify

/// The projector and consent groups as the functions build them.
fn function_groups(
    events: Arc<dyn EventStore>,
    docs: Arc<dyn ReadModelStore>,
    dead: Arc<dyn DeadLetterQueue>,
) -> Vec<ConsumerGroup> {
    vec![
        ConsumerGroup::projector(
            events.clone(),
            docs.clone(),
            dead.clone(),
            crate::testing::identifiers(),
        ),
        ConsumerGroup::consent(events, docs, dead, crate::privacy::IdentifierHasher::new(b"ops-test")),
    ]
}

/// Appends `events` (already typed, customer set) to `stream` after what it holds.
async fn append(store: &InMemoryEventStore, stream: &str, events: Vec<EventEnvelope>) {
    let current = store.read_stream(stream, 0, 10_000).await.expect("read").len() as u64;
    store
        .append(crate::ports::AppendRequest {
            stream_id: stream.into(),
            expected: match current {
                0 => crate::ports::ExpectedVersion::NoStream,
                n => crate::ports::ExpectedVersion::Exactly(n),
            },
            events,
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
}

/// The three customers of [`store`], each with an activity stream (a visit
/// with UTM, a login) and a paid order: the insights, metrics and segments
/// have documents too.
async fn rich_store() -> Arc<InMemoryEventStore> {
    let store = store().await;
    for n in 0..3 {
        let customer = crate::testing::customer_id(n);
        let with_customer = |stream: &str, kind: &str, data: serde_json::Value| EventEnvelope {
            customer_id: Some(customer.clone()),
            ..crate::testing::raw_event(stream, kind, data)
        };
        let activity = crate::customer::activity::activity_stream_id(&customer);
        append(
            &store,
            &activity,
            vec![
                with_customer(
                    &activity,
                    "PageViewed",
                    serde_json::json!({"utm": {"source": "news", "medium": "email", "campaign": "spring"}}),
                ),
                with_customer(&activity, "CustomerLoggedIn", serde_json::json!({})),
            ],
        )
        .await;
        let order = format!("order-ops-{n}");
        append(
            &store,
            &order,
            vec![
                with_customer(
                    &order,
                    "OrderPlaced",
                    serde_json::json!({"order_id": format!("ops-{n}"), "total_minor": 1000 * (n as i64 + 1),
                        "currency": "EUR", "items": [{"category": "Books", "quantity": 2}]}),
                ),
                with_customer(
                    &order,
                    "PaymentSucceeded",
                    serde_json::json!({"order_id": format!("ops-{n}"), "payment_id": format!("pay-{n}"),
                        "amount_minor": 1000 * (n as i64 + 1), "currency": "EUR"}),
                ),
                // Co-purchases (decision 0075).
                with_customer(
                    &order,
                    "OrderDelivered",
                    serde_json::json!({"order_id": format!("ops-{n}"), "delivered_at": "2026-01-02T00:00:00Z",
                        "items": [{"product_id": "book", "name": "Book", "category": "Books", "quantity": 2,
                            "unit_price_minor": 500}],
                        "total_minor": 1000 * (n as i64 + 1), "currency": "EUR"}),
                ),
            ],
        )
        .await;
        if n == 0 {
            // A broadcast's message (decision 0084), for the broadcast stats.
            let message_id = crate::broadcast::message_id("spring", &customer);
            let message = crate::vocabulary::streams::message_stream_id(&message_id);
            let sent = serde_json::json!({"message_id": message_id, "customer_id": customer, "channel": "email",
                "category": "marketing", "campaign_id": "broadcast-spring", "provider_message_id": "ses-1"});
            let delivered = serde_json::json!({"message_id": message_id, "customer_id": customer});
            append(
                &store,
                &message,
                vec![
                    with_customer(&message, "MessageSent", sent),
                    with_customer(&message, "EmailDelivered", delivered),
                ],
            )
            .await;
        }
    }
    store
}

/// Every stored event to both groups, one at a time, except those `skip`
/// says a group (by name) never received; again until no event is left
/// undelivered (the segment evaluator appends membership events, which the
/// relay publishes on AWS).
async fn project_except(
    store: Arc<InMemoryEventStore>,
    docs: Arc<InMemoryReadModels>,
    skip: &dyn Fn(&str, &EventEnvelope) -> bool,
) {
    let groups = function_groups(store.clone(), docs, Arc::new(InMemoryDeadLetters::default()));
    let mut delivered = std::collections::HashSet::new();
    loop {
        let mut cursor: Option<String> = None;
        let mut fresh = 0;
        loop {
            let page = store.read_all(cursor.as_deref(), 100).await.expect("read all");
            for event in &page.events {
                if !delivered.insert(event.event_id) {
                    continue;
                }
                fresh += 1;
                for group in groups.iter().filter(|g| !skip(g.name, event)) {
                    group.handle(event, Utc::now()).await.expect("handle");
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        if fresh == 0 {
            return;
        }
    }
}

fn figures<'a>(report: &'a VerifyReport, consumer: &str) -> &'a ConsumerFigures {
    report
        .consumers
        .iter()
        .find(|c| c.consumer == consumer)
        .unwrap_or_else(|| panic!("{consumer} not folded: {report:#?}"))
}

#[tokio::test]
async fn verify_finds_every_consumer_consistent_when_nothing_was_lost() {
    let store = rich_store().await;
    let docs = Arc::new(InMemoryReadModels::default());
    project_except(store.clone(), docs.clone(), &|_, _| false).await;
    let report = verify(store.as_ref(), docs.clone(), &function_groups)
        .await
        .expect("verify");
    assert!(report.is_consistent(), "{:#?}", report.mismatches);
    assert_eq!(
        report.streams,
        3 + 3 + 3 + 3 + 3 + 1,
        "customer, activity, order, segments and recommendations streams, and a broadcast's message"
    );
    let folded: Vec<&str> = report.consumers.iter().map(|c| c.consumer.as_str()).collect();
    let mut every = Vec::new();
    for group in function_groups(store.clone(), docs.clone(), Arc::new(InMemoryDeadLetters::default())) {
        every.extend(group.consumer_names());
    }
    let appenders = [crate::segments::SEGMENT_EVALUATOR, crate::segments::AFFINITY_DETECTOR];
    every.retain(|c| !appenders.contains(c));
    assert_eq!(
        folded, every,
        "every consumer but the segment evaluator and the affinity detector"
    );
    let not_folded: Vec<&str> = report.not_folded.iter().map(|n| n.consumer.as_str()).collect();
    assert_eq!(not_folded, appenders);
    for consumer in folded {
        let f = figures(&report, consumer);
        assert!(f.compared > 0, "{consumer} compared nothing: {f:?}");
        assert_eq!(
            (f.missing, f.different, f.extra, f.order_dependent),
            (0, 0, 0, 0),
            "{f:?}"
        );
    }
    assert_eq!(
        report.compared(),
        docs.dump().len() as u64,
        "every stored document compared"
    );
    assert!(
        report.order_dependent.is_empty() && report.refused.is_empty(),
        "{report:#?}"
    );
}

#[tokio::test]
async fn verify_reports_what_a_consumer_that_lost_an_event_is_missing() {
    let store = rich_store().await;
    let customer = crate::testing::customer_id(2);
    let stream = format!("customer-{customer}");
    let last = store
        .read_stream(&stream, 0, 100)
        .await
        .expect("read")
        .pop()
        .expect("events");
    assert_eq!(last.event_type, "CustomerNameChanged");
    // The projector never received customer 2's rename (its newest event,
    // so no later event fills the gap); the consent group did.
    let docs = Arc::new(InMemoryReadModels::default());
    project_except(store.clone(), docs.clone(), &|group, e| {
        group == "projector" && e.event_id == last.event_id
    })
    .await;
    // A sampled check calls it "behind", not a difference.
    let sampled = check(
        store.as_ref(),
        docs.as_ref(),
        &checked_projections(),
        std::slice::from_ref(&stream),
    )
    .await
    .expect("check");
    assert!(sampled.is_consistent());
    assert_eq!(sampled.behind, [(CUSTOMER_360.to_string(), stream.clone())]);

    let report = verify(store.as_ref(), docs.clone(), &function_groups)
        .await
        .expect("verify");
    assert!(!report.is_consistent());
    let profile = figures(&report, CUSTOMER_360);
    assert_eq!(
        (profile.missing, profile.different, profile.extra),
        (0, 1, 0),
        "{profile:?}"
    );
    let timeline = figures(&report, crate::customer::views::TIMELINE);
    assert_eq!(
        (timeline.missing, timeline.different, timeline.extra),
        (1, 0, 0),
        "the rename's entry; the state is unchanged by a rename: {timeline:?}"
    );
    for untouched in [
        CONSENT_LEDGER,
        crate::consent::proof::PROOF_LEDGER,
        crate::customer::views::EMAIL_INDEX,
    ] {
        let f = figures(&report, untouched);
        assert_eq!((f.missing, f.different, f.extra), (0, 0, 0), "{f:?}");
    }
    let names = figures(&report, crate::customer::name_index::NAME_INDEX);
    assert_eq!(
        (names.missing, names.different, names.extra),
        (1, 1, 1),
        "the new name's entry, the customer's list of keys, the old name's entry: {names:?}"
    );
    let counters = figures(&report, crate::ops::counters::OPS_COUNTERS);
    assert_eq!(
        (counters.missing, counters.different, counters.extra),
        (0, 1, 0),
        "the event's count in its bucket, shared with other events (decision 0088): {counters:?}"
    );
    assert_eq!(report.mismatched(), 6);
    assert_eq!(
        report.lost_events(),
        1,
        "the 360, the timeline entry, the name index and the counters: one event"
    );
    let different = report
        .mismatches
        .iter()
        .find(|m| m.consumer == CUSTOMER_360)
        .expect("the 360");
    assert_eq!(different.kind, Mismatch::Different);
    assert_eq!(
        (different.partition.as_str(), different.sort.as_str()),
        (customer.as_str(), "profile")
    );
    let lost = different.event.as_ref().expect("the event named");
    assert_eq!(
        (lost.stream_id.as_str(), lost.version, lost.event_id.clone()),
        (stream.as_str(), last.version, last.event_id.to_string())
    );
    assert_eq!(
        different.expected.as_ref().map(|p| p["first_name"].clone()),
        Some(serde_json::json!("Renamed2"))
    );
    assert_eq!(
        different.stored.as_ref().map(|p| p["first_name"].clone()),
        Some(serde_json::json!("First2"))
    );
    let missing = report
        .mismatches
        .iter()
        .find(|m| m.kind == Mismatch::Missing)
        .expect("the timeline entry");
    assert_eq!(missing.stored, None);
    assert!(missing.sort.starts_with("entry#"), "{missing:?}");
}

#[tokio::test]
async fn verify_reports_an_extra_document_and_a_consumer_never_run_as_missing() {
    let store = rich_store().await;
    let docs = Arc::new(InMemoryReadModels::default());
    // The consent function never ran at all.
    project_except(store.clone(), docs.clone(), &|group, _| group == "consent").await;
    let customer = crate::testing::customer_id(0);
    let stream = format!("customer-{customer}");
    let checkpoint = docs.checkpoint(CUSTOMER_360, &stream).await.expect("checkpoint");
    docs.commit(
        CUSTOMER_360,
        &stream,
        checkpoint,
        checkpoint,
        vec![ReadOp::Put {
            partition: customer.clone(),
            sort: "stray".into(),
            body: serde_json::json!({"stray": true}),
        }],
    )
    .await
    .expect("extra");
    let report = verify(store.as_ref(), docs.clone(), &function_groups)
        .await
        .expect("verify");
    let profile = figures(&report, CUSTOMER_360);
    assert_eq!(
        (profile.missing, profile.different, profile.extra),
        (0, 0, 1),
        "{profile:?}"
    );
    let extra = report
        .mismatches
        .iter()
        .find(|m| m.kind == Mismatch::Extra)
        .expect("extra");
    assert_eq!((extra.sort.as_str(), extra.expected.clone()), ("stray", None));
    for consent in [CONSENT_LEDGER, crate::consent::proof::PROOF_LEDGER] {
        let f = figures(&report, consent);
        assert!(f.compared > 0 && f.missing == f.compared, "{f:?}");
    }
}

/// A projection whose shared document keeps the last stream that wrote it:
/// its result depends on the order of events of different streams.
struct LastWriter;

#[async_trait::async_trait]
impl crate::consumer::Projection for LastWriter {
    fn name(&self) -> &'static str {
        "last-writer"
    }
    fn handles(&self, event_type: &str) -> bool {
        event_type == "CustomerRegistered"
    }
    async fn project(
        &self,
        event: &EventEnvelope,
        _: &dyn ReadModelStore,
    ) -> Result<Vec<ReadOp>, crate::consumer::ProjectionError> {
        Ok(vec![
            ReadOp::Put {
                partition: "all".into(),
                sort: "last".into(),
                body: serde_json::json!(event.stream_id),
            },
            ReadOp::Put {
                partition: "all".into(),
                sort: event.stream_id.clone(),
                body: serde_json::json!(event.version),
            },
        ])
    }
}

#[tokio::test]
async fn a_document_that_depends_on_cross_stream_order_is_reported_and_not_compared() {
    let store = store().await;
    let groups = |events: Arc<dyn EventStore>, docs: Arc<dyn ReadModelStore>, dead: Arc<dyn DeadLetterQueue>| {
        vec![ConsumerGroup::new(
            "test",
            vec![Arc::new(LastWriter)],
            events,
            docs,
            dead,
        )]
    };
    let docs = Arc::new(InMemoryReadModels::default());
    let group = ConsumerGroup::new(
        "test",
        vec![Arc::new(LastWriter)],
        store.clone(),
        docs.clone(),
        Arc::new(InMemoryDeadLetters::default()),
    );
    replay(&group, store.as_ref(), Utc::now(), &mut |_| {})
        .await
        .expect("replay");
    let report = verify(store.as_ref(), docs.clone(), &groups).await.expect("verify");
    assert_eq!(
        report.order_dependent,
        [("last-writer".to_string(), "all".to_string(), "last".to_string())]
    );
    let f = figures(&report, "last-writer");
    assert_eq!(
        (f.compared, f.order_dependent, f.missing, f.different, f.extra),
        (3, 1, 0, 0, 0),
        "{f:?}"
    );
    assert!(!report.is_consistent(), "nothing can be said about it");
}

#[tokio::test]
async fn a_checkpoint_below_the_newest_event_is_not_behind_when_the_documents_are_whole() {
    let store = store().await;
    let docs = Arc::new(InMemoryReadModels::default());
    project(store.clone(), docs.clone()).await;
    // As when the stream's newest events changed nothing and so recorded no
    // checkpoint (decision 0031): the checkpoint lags, the documents do not.
    let stream = format!("customer-{}", crate::testing::customer_id(0));
    let sample = std::slice::from_ref(&stream);
    let before = check(store.as_ref(), docs.as_ref(), &checked_projections(), sample)
        .await
        .expect("check");
    let checkpoint = docs.checkpoint(CUSTOMER_360, &stream).await.expect("checkpoint");
    docs.commit(CUSTOMER_360, &stream, checkpoint, checkpoint - 1, Vec::new())
        .await
        .expect("lower");
    let report = check(store.as_ref(), docs.as_ref(), &checked_projections(), sample)
        .await
        .expect("check");
    assert!(report.behind.is_empty(), "{report:?}");
    assert!(report.is_consistent(), "{report:?}");
    assert_eq!(report.documents, before.documents, "the 360 compared all the same");
}

/// Every stored document of the consumers asked about, as a scan of the
/// table would give them.
struct Everything(Arc<InMemoryReadModels>);

#[async_trait::async_trait]
impl StoredDocuments for Everything {
    async fn documents(
        &self,
        partitions: &std::collections::BTreeSet<(String, String)>,
    ) -> Result<BTreeMap<crate::memory::DocKey, serde_json::Value>, StoreError> {
        Ok(self
            .0
            .dump()
            .into_iter()
            .filter(|((c, _, _), _)| partitions.iter().any(|(consumer, _)| consumer == c))
            .collect())
    }
}

#[tokio::test]
async fn a_source_of_every_stored_document_finds_an_extra_one_in_a_partition_no_event_touched() {
    let store = rich_store().await;
    let docs = Arc::new(InMemoryReadModels::default());
    project_except(store.clone(), docs.clone(), &|_, _| false).await;
    docs.commit(
        CUSTOMER_360,
        "customer-nobody",
        0,
        0,
        vec![ReadOp::Put {
            partition: "nobody".into(),
            sort: "profile".into(),
            body: serde_json::json!({"stray": true}),
        }],
    )
    .await
    .expect("stray");
    let listed = verify(store.as_ref(), docs.clone(), &function_groups)
        .await
        .expect("verify");
    assert!(listed.is_consistent(), "listing the touched partitions cannot see it");
    let scanned = verify_with(
        store.as_ref(),
        docs.as_ref(),
        &Everything(docs.clone()),
        &function_groups,
    )
    .await
    .expect("verify");
    assert_eq!(scanned.extra(), 1, "{:#?}", scanned.mismatches);
    assert_eq!(
        (
            scanned.mismatches[0].partition.as_str(),
            scanned.mismatches[0].event.clone()
        ),
        ("nobody", None)
    );
    assert_eq!(scanned.lost_events(), 1);
    assert_eq!(scanned.compared(), listed.compared());
}
