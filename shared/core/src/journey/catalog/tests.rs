use super::*;
use crate::clock::VirtualClock;
use crate::event::envelopes;
use crate::journey::engine::CatalogSnapshot;
use crate::ports::{AppendRequest, ExpectedVersion};
use crate::testing::{test_time, InMemoryEventStore};
use serde_json::json;

fn service() -> (CampaignService, Arc<InMemoryEventStore>) {
    let store = Arc::new(InMemoryEventStore::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    (CampaignService::new(store.clone(), clock), store)
}

fn actor() -> Actor {
    Actor::api("test")
}

fn cart_definition(reminder: &str) -> Value {
    let (_, text) = SHIPPED
        .iter()
        .find(|(n, _)| *n == "abandoned-cart")
        .copied()
        .unwrap_or(("", ""));
    let mut v: Value = serde_yaml::from_str(text).unwrap_or(Value::Null);
    v["steps"][1]["template"] = json!(reminder);
    v
}

/// The shipped campaigns that run until paused (not `starts_paused`).
fn shipped_running() -> usize {
    SHIPPED
        .iter()
        .filter(|(_, text)| !Campaign::from_yaml(text).is_ok_and(|c| c.starts_paused))
        .count()
}

#[tokio::test]
async fn a_shipped_campaign_that_starts_paused_runs_once_resumed_and_pauses_again() {
    let (svc, _) = service();
    let c = svc.get("consent-renewal").await.unwrap().unwrap();
    assert_eq!((c.version, c.paused), (1, true), "shipped paused");
    let running = |active: Vec<(Arc<Campaign>, u64)>| active.iter().any(|(c, _)| c.id == "consent-renewal");
    assert!(!running(svc.catalog().active().await.unwrap()));
    assert!(matches!(
        svc.pause("consent-renewal", actor()).await,
        Err(CampaignError::AlreadyPaused)
    ));

    let resumed = svc.resume("consent-renewal", actor()).await.unwrap();
    assert_eq!((resumed.version, resumed.paused), (1, false));
    assert!(running(svc.catalog().active().await.unwrap()));
    // A later version does not pause it again.
    let mut definition = resumed.definition.clone();
    definition["name"] = json!("Consent renewal, reworded");
    let put = svc.put("consent-renewal", definition, actor()).await.unwrap();
    assert!(put.version > 1 && !put.paused, "{put:?}");
    let paused = svc.pause("consent-renewal", actor()).await.unwrap();
    assert!(paused.paused);
    // A new campaign whose first version says so starts paused too.
    let mut fresh = minimal("starts-paused");
    fresh["starts_paused"] = json!(true);
    assert!(svc.put("starts-paused", fresh, actor()).await.unwrap().paused);
}

fn minimal(id: &str) -> Value {
    json!({
        "id": id,
        "name": "Test",
        "trigger": { "pattern": { "source": ["crm.commerce"], "detail-type": ["OrderPlaced"] } },
        "steps": [{ "id": "send", "type": "send", "channel": "email", "template": "welcome", "category": "marketing", "purpose": "marketing" }]
    })
}

#[tokio::test]
async fn shipped_campaigns_are_version_1_until_put() {
    let (svc, _) = service();
    let catalog = svc.catalog();
    let active = catalog.active().await.unwrap();
    assert_eq!(active.len(), shipped_running());
    assert!(active.iter().all(|(_, v)| *v == 1));
    let c = svc.get("abandoned-cart").await.unwrap().unwrap();
    assert_eq!((c.version, c.paused), (1, false));
}

#[tokio::test]
async fn a_put_of_a_shipped_campaign_keeps_version_1_as_shipped() {
    let (svc, _) = service();
    let c = svc
        .put("abandoned-cart", cart_definition("abandoned-cart-final-offer"), actor())
        .await
        .unwrap();
    assert_eq!(c.version, 2);
    let catalog = svc.catalog();
    let old = catalog.version("abandoned-cart", 1).await.unwrap().unwrap();
    let new = catalog.version("abandoned-cart", 2).await.unwrap().unwrap();
    assert_ne!(old, new);
    assert!(catalog.version("abandoned-cart", 3).await.unwrap().is_none());
    let active = catalog.active().await.unwrap();
    assert_eq!(active.len(), shipped_running());
    assert!(active.iter().any(|(c, v)| c.id == "abandoned-cart" && *v == 2));
    let again = svc
        .put("abandoned-cart", cart_definition("abandoned-cart-reminder"), actor())
        .await
        .unwrap();
    assert_eq!(again.version, 3);
}

#[tokio::test]
async fn a_new_campaign_starts_at_version_1_and_is_listed() {
    let (svc, _) = service();
    assert!(svc.get("new-one").await.unwrap().is_none());
    let c = svc.put("new-one", minimal("new-one"), actor()).await.unwrap();
    assert_eq!(c.version, 1);
    let active = svc.catalog().active().await.unwrap();
    assert_eq!(active.len(), shipped_running() + 1);
    assert!(active.iter().any(|(c, v)| c.id == "new-one" && *v == 1));
}

#[tokio::test]
async fn invalid_puts_list_every_error_and_write_nothing() {
    let (svc, store) = service();
    let mut bad = minimal("bad");
    bad["steps"][0]["template"] = json!("no-such-template");
    bad["name"] = json!(5);
    let Err(CampaignError::Invalid(errors)) = svc.put("bad", bad, actor()).await else {
        panic!("expected invalid");
    };
    assert!(errors.len() >= 2, "{errors:?}");
    let Err(CampaignError::Invalid(errors)) = svc.put("other", minimal("bad"), actor()).await else {
        panic!("expected invalid");
    };
    assert_eq!(errors[0].path, "id");
    assert!(store.read_all(None, 100).await.unwrap().events.is_empty());
}

/// Registers `id` in the `templates` stream, as the template service does
/// before a template's first version.
async fn register_template(store: &InMemoryEventStore, id: &str) {
    use crate::journey::templates::{TemplateIndexEvent, INDEX_STREAM as TEMPLATES};
    let events = envelopes(
        TEMPLATES,
        None,
        &[TemplateIndexEvent::TemplateRegistered {
            template_id: id.to_string(),
        }],
        &CommandMeta::new(actor()),
        test_time(),
    )
    .expect("envelopes");
    store
        .append(AppendRequest {
            stream_id: TEMPLATES.to_string(),
            expected: ExpectedVersion::Any,
            events,
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
}

#[tokio::test]
async fn a_campaign_may_name_a_stored_template_and_reads_back() {
    let (svc, store) = service();
    let mut custom = minimal("spring");
    custom["steps"][0]["template"] = json!("spring-sale");
    let Err(CampaignError::Invalid(errors)) = svc.put("spring", custom.clone(), actor()).await else {
        panic!("an unknown template is refused");
    };
    assert_eq!(errors[0].path, "steps[0].template");
    assert!(store.read_all(None, 100).await.unwrap().events.is_empty());
    register_template(&store, "spring-sale").await;
    let c = svc
        .put("spring", custom, actor())
        .await
        .expect("a stored template is known");
    assert_eq!(c.version, 1);
    // Read back (and by a fresh catalog, as another process would).
    let fresh = StoredCatalog::new(store.clone());
    let read = fresh.get("spring").await.expect("reads").expect("stored");
    assert_eq!(read.definition["steps"][0]["template"], "spring-sale");
    assert!(fresh
        .current()
        .await
        .expect("catalog")
        .entries()
        .any(|e| e.id == "spring"));
}

#[tokio::test]
async fn pause_and_resume() {
    let (svc, _) = service();
    assert!(matches!(svc.pause("nope", actor()).await, Err(CampaignError::NotFound)));
    assert!(matches!(
        svc.resume("welcome", actor()).await,
        Err(CampaignError::NotPaused)
    ));
    let paused = svc.pause("welcome", actor()).await.unwrap();
    assert!(paused.paused);
    assert_eq!(paused.version, 1);
    assert!(matches!(
        svc.pause("welcome", actor()).await,
        Err(CampaignError::AlreadyPaused)
    ));
    let catalog = svc.catalog();
    let active = catalog.active().await.unwrap();
    assert!(!active.iter().any(|(c, _)| c.id == "welcome"));
    // Running instances keep their version while paused.
    assert!(catalog.version("welcome", 1).await.unwrap().is_some());
    let resumed = svc.resume("welcome", actor()).await.unwrap();
    assert!(!resumed.paused);
    assert!(catalog
        .active()
        .await
        .unwrap()
        .iter()
        .any(|(c, v)| c.id == "welcome" && *v == 1));
}

/// A process's catalog over a counting store, and a writer (the API, another
/// process) over the same events.
fn process_and_writer() -> (
    Arc<crate::journey::engine_tests::CountingEvents>,
    StoredCatalog,
    CampaignService,
    Arc<VirtualClock>,
) {
    let store = Arc::new(InMemoryEventStore::default());
    let counting = Arc::new(crate::journey::engine_tests::CountingEvents::over(store.clone()));
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let process = StoredCatalog::reading_all_every(counting.clone(), clock.clone(), FULL_READ_EVERY);
    (counting, process, CampaignService::new(store, clock.clone()), clock)
}

fn is_active(snapshot: &CatalogSnapshot, id: &str) -> Option<u64> {
    snapshot.active().iter().find(|(c, _)| c.id == id).map(|(_, v)| *v)
}

#[tokio::test]
async fn a_kept_catalog_reads_one_stream_and_sees_every_publish_pause_and_resume_at_its_next_call() {
    let (reads, process, svc, _) = process_and_writer();
    let first = process.current().await.unwrap();
    assert_eq!(first.active().len(), shipped_running());
    assert_eq!(
        reads.take_reads().len(),
        1 + SHIPPED.len(),
        "the first call reads everything"
    );
    process.current().await.unwrap();
    assert_eq!(
        reads.take_reads(),
        vec![INDEX_STREAM.to_string()],
        "then the signal only"
    );

    svc.pause("welcome", actor()).await.unwrap();
    let paused = process.current().await.unwrap();
    assert_eq!(is_active(&paused, "welcome"), None);
    assert!(paused.version("welcome", 1).is_some_and(|at| at.paused));
    assert_eq!(
        reads.take_reads(),
        vec![INDEX_STREAM.to_string(), stream_id("welcome")],
        "the signal, and the campaign it names"
    );

    svc.resume("welcome", actor()).await.unwrap();
    assert_eq!(is_active(&process.current().await.unwrap(), "welcome"), Some(1));

    svc.put("abandoned-cart", cart_definition("abandoned-cart-final-offer"), actor())
        .await
        .unwrap();
    let published = process.current().await.unwrap();
    assert_eq!(is_active(&published, "abandoned-cart"), Some(2));
    assert!(
        published.version("abandoned-cart", 1).is_some(),
        "running instances keep theirs"
    );

    svc.put("new-one", minimal("new-one"), actor()).await.unwrap();
    assert_eq!(is_active(&process.current().await.unwrap(), "new-one"), Some(1));
    reads.take_reads();
    process.current().await.unwrap();
    assert_eq!(reads.take_reads(), vec![INDEX_STREAM.to_string()]);
}

#[tokio::test]
async fn a_change_whose_signal_was_lost_takes_effect_at_the_next_full_read() {
    let (reads, process, svc, clock) = process_and_writer();
    let written = svc
        .put("welcome", shipped_definition("welcome"), actor())
        .await
        .unwrap();
    assert_eq!(
        is_active(&process.current().await.unwrap(), "welcome"),
        Some(written.version)
    );
    // A pause stored by a writer that stopped before its signal.
    let envs = envelopes(
        &stream_id("welcome"),
        None,
        &[CampaignEvent::CampaignPaused],
        &CommandMeta::new(actor()),
        clock.now(),
    )
    .unwrap();
    reads
        .inner
        .append(AppendRequest {
            stream_id: stream_id("welcome"),
            expected: ExpectedVersion::Exactly(written.stream_version),
            events: envs,
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .unwrap();
    clock.advance(FULL_READ_EVERY - chrono::Duration::seconds(1));
    assert!(
        is_active(&process.current().await.unwrap(), "welcome").is_some(),
        "no signal: not seen yet"
    );
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(
        is_active(&process.current().await.unwrap(), "welcome"),
        None,
        "seen at the full read"
    );
}

/// A shipped campaign's definition as JSON.
fn shipped_definition(name: &str) -> Value {
    let (_, text) = SHIPPED.iter().find(|(n, _)| *n == name).copied().unwrap_or(("", ""));
    serde_yaml::from_str(text).unwrap_or(Value::Null)
}

/// The campaign aggregate's decisions, given/when/then.
mod aggregate {
    use super::*;
    use crate::testing::AggregateScenario;

    fn published(id: &str) -> CampaignEvent {
        CampaignEvent::CampaignPublished {
            definition: minimal(id),
        }
    }

    fn shipped_input(definition: Value) -> CampaignInput {
        CampaignInput {
            shipped: Some(definition),
            ..CampaignInput::default()
        }
    }

    #[test]
    fn the_first_write_of_a_shipped_campaign_keeps_the_shipped_definition_as_version_1() {
        let shipped = minimal("welcome");
        AggregateScenario::<CampaignAggregate>::new("welcome", shipped_input(shipped.clone()))
            .when(CampaignCommand::Pause)
            .then_expect_events(&[
                CampaignEvent::CampaignPublished { definition: shipped },
                CampaignEvent::CampaignPaused,
            ]);
        // A stored campaign does not get it again.
        AggregateScenario::<CampaignAggregate>::new("welcome", shipped_input(minimal("welcome")))
            .given(&[published("welcome")])
            .when(CampaignCommand::Pause)
            .then_expect_events(&[CampaignEvent::CampaignPaused]);
    }

    #[test]
    fn pauses_and_resumes_are_refused_when_they_change_nothing_or_name_nothing() {
        AggregateScenario::<CampaignAggregate>::new("nope", CampaignInput::default())
            .when(CampaignCommand::Pause)
            .then_expect_error(CampaignError::NotFound);
        let stored =
            AggregateScenario::<CampaignAggregate>::new("c", CampaignInput::default()).given(&[published("c")]);
        stored
            .when(CampaignCommand::Resume)
            .then_expect_error(CampaignError::NotPaused);
        let paused = stored.given(&[CampaignEvent::CampaignPaused]);
        paused
            .when(CampaignCommand::Pause)
            .then_expect_error(CampaignError::AlreadyPaused);
        paused
            .when(CampaignCommand::Resume)
            .then_expect_events(&[CampaignEvent::CampaignResumed]);
    }

    #[test]
    fn a_publish_is_validated_and_must_name_its_campaign() {
        let scenario = AggregateScenario::<CampaignAggregate>::new("c", CampaignInput::default());
        scenario
            .when(CampaignCommand::Publish {
                definition: minimal("c"),
            })
            .then_expect_events(&[published("c")]);
        let CampaignError::Invalid(errors) = scenario
            .when(CampaignCommand::Publish {
                definition: minimal("other"),
            })
            .error()
        else {
            panic!("expected invalid");
        };
        assert_eq!(errors[0].path, "id");
    }

    #[test]
    fn a_pause_continuation_stops_when_a_later_pause_step_carries_on() {
        // Paused at version 2, an edit at 3: the continuation of the pause steps over the edit.
        let paused = AggregateScenario::<CampaignAggregate>::new("c", CampaignInput::default()).given(&[
            published("c"),
            CampaignEvent::CampaignPaused,
            published("c"),
        ]);
        let next = |step_version| CampaignCommand::ContinuePause {
            after: "i-100".into(),
            step_version,
        };
        paused
            .when(next(2))
            .then_expect_events(&[CampaignEvent::CampaignPauseContinued { after: "i-100".into() }]);
        // Another chain continued at 4: this chain (still at 2) stops; that one goes on.
        let continued = paused.given(&[CampaignEvent::CampaignPauseContinued { after: "i-100".into() }]);
        continued.when(next(2)).then_expect_events(&[]);
        assert_eq!(continued.when(next(4)).events().len(), 1);
        // Resumed since: nothing.
        continued
            .given(&[CampaignEvent::CampaignResumed])
            .when(next(4))
            .then_expect_events(&[]);
    }

    #[test]
    fn campaign_errors_say_their_kind() {
        assert_eq!(CampaignError::AlreadyPaused.kind(), FailureKind::Poison);
        assert_eq!(CampaignError::ChangedConcurrently.kind(), FailureKind::Conflict);
        assert_eq!(
            CampaignError::Store(StoreError::Unavailable("throttled".into())).kind(),
            FailureKind::Retryable
        );
        assert_eq!(
            CampaignError::from(AggregateError::Contended { attempts: 8 }),
            CampaignError::ChangedConcurrently
        );
    }
}

#[tokio::test]
async fn a_rollback_publishes_the_earlier_definition_as_a_new_current_version() {
    let (svc, _) = service();
    let edited = svc
        .put("abandoned-cart", cart_definition("abandoned-cart-final-offer"), actor())
        .await
        .unwrap();
    assert_eq!(edited.version, 2);
    let paused = svc.pause("abandoned-cart", actor()).await.unwrap();
    assert_eq!(paused.version, 2);

    let rolled = svc.rollback("abandoned-cart", 1, actor()).await.unwrap();
    // Stream versions: 1 shipped, 2 edit, 3 pause, 4 the rollback.
    assert_eq!(rolled.version, 4);
    assert!(rolled.paused, "a rollback does not resume");
    assert_eq!(rolled.definition, shipped_definition("abandoned-cart"));
    let catalog = svc.catalog();
    // Every earlier version stays for the instances running on it.
    let v1 = catalog.version("abandoned-cart", 1).await.unwrap().unwrap();
    let v2 = catalog.version("abandoned-cart", 2).await.unwrap().unwrap();
    let v4 = catalog.version("abandoned-cart", 4).await.unwrap().unwrap();
    assert_eq!(v4, v1);
    assert_ne!(v4, v2);
    let listed = svc.list().await.unwrap();
    let line = listed.iter().find(|c| c.id == "abandoned-cart").unwrap();
    assert_eq!((line.version, line.paused), (4, true));
    assert_eq!(line.name, v1.campaign.name);
}

#[tokio::test]
async fn a_rollback_to_an_unknown_or_the_current_definition_is_refused_and_writes_nothing() {
    let (svc, store) = service();
    assert!(matches!(
        svc.rollback("nope", 1, actor()).await,
        Err(CampaignError::NotFound)
    ));
    // A shipped campaign has only version 1, which is current.
    assert!(matches!(
        svc.rollback("welcome", 1, actor()).await,
        Err(CampaignError::AlreadyCurrent { to: 1, current: 1 })
    ));
    assert!(matches!(
        svc.rollback("welcome", 2, actor()).await,
        Err(CampaignError::UnknownVersion(2))
    ));
    assert!(store.read_all(None, 100).await.unwrap().events.is_empty());

    svc.put("abandoned-cart", cart_definition("abandoned-cart-final-offer"), actor())
        .await
        .unwrap();
    svc.rollback("abandoned-cart", 1, actor()).await.unwrap();
    let written = store.read_all(None, 100).await.unwrap().events.len();
    // Version 3 is version 1's definition: rolling back to 1 again changes nothing.
    assert!(matches!(
        svc.rollback("abandoned-cart", 1, actor()).await,
        Err(CampaignError::AlreadyCurrent { to: 1, current: 3 })
    ));
    assert!(matches!(
        svc.rollback("abandoned-cart", 3, actor()).await,
        Err(CampaignError::AlreadyCurrent { to: 3, current: 3 })
    ));
    assert!(matches!(
        svc.rollback("abandoned-cart", 5, actor()).await,
        Err(CampaignError::UnknownVersion(5))
    ));
    assert_eq!(store.read_all(None, 100).await.unwrap().events.len(), written);
    // Version 2 is still there to go back to.
    assert_eq!(svc.rollback("abandoned-cart", 2, actor()).await.unwrap().version, 4);
}
