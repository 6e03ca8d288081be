use super::*;
use crate::clock::VirtualClock;
use crate::ports::AppendRequest;
use crate::testing::{test_time, AggregateScenario, InMemoryEventStore};
use serde_json::json;

fn actor() -> Actor {
    Actor::api("test")
}

fn service() -> (TemplateService, Arc<InMemoryEventStore>) {
    let store = Arc::new(InMemoryEventStore::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    (TemplateService::new(store.clone(), clock), store)
}

const MJML: &str = "<mjml>\n  <mj-body>\n    <mj-section>\n      <mj-column>\n        <mj-text>Hi {{ customer.first_name }}</mj-text>\n      </mj-column>\n    </mj-section>\n  </mj-body>\n</mjml>\n";

fn email(subject: &str) -> TemplateParts {
    TemplateParts {
        channel: Channel::Email,
        subject: Some(subject.into()),
        mjml: Some(MJML.into()),
        text: "Hi {{ customer.first_name }}".into(),
    }
}

fn sample() -> Value {
    json!({ "customer": { "first_name": "Ada" } })
}

/// An in-memory event store that records each stream read and from which version.
struct ReadLog {
    inner: Arc<InMemoryEventStore>,
    reads: std::sync::Mutex<Vec<(String, u64)>>,
}

impl ReadLog {
    fn take(&self) -> Vec<(String, u64)> {
        std::mem::take(&mut *self.reads.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl EventStore for ReadLog {
    async fn load(&self, stream_id: &str) -> Result<crate::ports::LoadedStream, StoreError> {
        self.inner.load(stream_id).await
    }
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((stream_id.to_string(), after));
        self.inner.read_stream(stream_id, after, limit).await
    }
    async fn append(&self, request: AppendRequest) -> Result<crate::ports::Appended, AppendError> {
        self.inner.append(request).await
    }
    async fn receipt(&self, key: &str) -> Result<Option<crate::ports::CommandReceipt>, StoreError> {
        self.inner.receipt(key).await
    }
    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.reservation_owner(key).await
    }
    async fn save_snapshot(&self, snapshot: crate::ports::Snapshot) -> Result<(), StoreError> {
        self.inner.save_snapshot(snapshot).await
    }
    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<crate::ports::EventPage, StoreError> {
        self.inner.read_all(after, limit).await
    }
}

fn shipped_welcome() -> (TemplateParts, Value) {
    render::shipped_parts("welcome").expect("shipped")
}

#[test]
fn the_first_edit_of_a_shipped_template_keeps_version_1_as_shipped() {
    let (parts, sample_vars) = shipped_welcome();
    let edited = TemplateParts {
        subject: Some("Hello {{ customer.first_name }}".into()),
        ..parts.clone()
    };
    AggregateScenario::<TemplateAggregate>::new("welcome", Some((parts.clone(), sample_vars.clone())))
        .when(TemplateCommand::Publish {
            parts: edited.clone(),
            sample: sample_vars.clone(),
        })
        .then_expect_events(&[
            published("welcome", 1, &parts, &sample_vars),
            published("welcome", 2, &edited, &sample_vars),
        ]);
    // The shipped version put as it is: nothing.
    AggregateScenario::<TemplateAggregate>::new("welcome", Some((parts.clone(), sample_vars.clone())))
        .when(TemplateCommand::Publish {
            parts,
            sample: sample_vars,
        })
        .then_expect_events(&[]);
}

#[test]
fn a_version_is_checked_by_rendering_its_sample() {
    let scenario = AggregateScenario::<TemplateAggregate>::new("spring-sale", None);
    scenario
        .when(TemplateCommand::Publish {
            parts: email("Spring, {{ customer.first_name }}"),
            sample: sample(),
        })
        .then_expect_events(&[published(
            "spring-sale",
            1,
            &email("Spring, {{ customer.first_name }}"),
            &sample(),
        )]);
    let refused = |parts: TemplateParts, sample: Value| {
        scenario
            .when(TemplateCommand::Publish { parts, sample })
            .inspect_result()
            .err()
    };
    // Liquid that does not parse: the part and its line.
    let broken = TemplateParts {
        text: "Hello\n{% if customer.first_name %}\nHi\n".into(),
        ..email("Hi")
    };
    match refused(broken, sample()) {
        Some(TemplateError::Invalid { field, .. }) => assert_eq!(field, "text"),
        other => panic!("{other:?}"),
    }
    // A variable the sample lacks.
    match refused(email("Your code {{ data.code }}"), sample()) {
        Some(TemplateError::Invalid { field, line, message }) => {
            assert_eq!((field.as_str(), line), ("subject", Some(1)));
            assert!(message.contains("data"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // MJML that does not parse: its line as written.
    let bad = TemplateParts {
        mjml: Some(MJML.replace("<mj-text>Hi", "<mj-text <b>Hi")),
        ..email("Hi")
    };
    match refused(bad, sample()) {
        Some(TemplateError::Invalid { field, line, .. }) => assert_eq!((field.as_str(), line), ("mjml", Some(5))),
        other => panic!("{other:?}"),
    }
    // The sample must be an object; ids are slugs; parts fit the channel.
    assert!(
        matches!(refused(email("Hi"), json!([1])), Some(TemplateError::Invalid { field, .. }) if field == "sample")
    );
    let sms_with_mjml = TemplateParts {
        channel: Channel::Sms,
        subject: None,
        ..email("x")
    };
    assert!(matches!(refused(sms_with_mjml, sample()), Some(TemplateError::Invalid { field, .. }) if field == "mjml"));
    assert!(matches!(
        AggregateScenario::<TemplateAggregate>::new("Bad_Id", None)
            .when(TemplateCommand::Publish { parts: email("Hi"), sample: sample() })
            .inspect_result()
            .err(),
        Some(TemplateError::Invalid { field, .. }) if field == "id"
    ));
    // Too large.
    let huge = TemplateParts {
        text: "x".repeat(MAX_TEMPLATE_BYTES + 1),
        ..email("Hi")
    };
    assert!(matches!(refused(huge, sample()), Some(TemplateError::Invalid { field, .. }) if field == "text"));
}

#[test]
fn a_version_cannot_change_the_channel() {
    let (parts, sample_vars) = shipped_welcome();
    let sms = TemplateParts {
        channel: Channel::Sms,
        subject: None,
        mjml: None,
        text: "Hi {{ customer.first_name }}".into(),
    };
    let error = AggregateScenario::<TemplateAggregate>::new("welcome", Some((parts, sample_vars.clone())))
        .when(TemplateCommand::Publish {
            parts: sms,
            sample: sample_vars,
        })
        .inspect_result()
        .err();
    assert!(matches!(error, Some(TemplateError::Invalid { field, .. }) if field == "channel"));
}

#[tokio::test]
async fn shipped_templates_are_listed_at_version_1_until_a_version_is_put() {
    let (svc, store) = service();
    let list = svc.list().await.expect("list");
    assert_eq!(
        list.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        KNOWN_TEMPLATES.to_vec()
    );
    assert!(list
        .iter()
        .all(|t| t.version == 1 && t.source == TemplateOrigin::Shipped && t.updated_at.is_none()));
    let sms = list
        .iter()
        .find(|t| t.id == "checkout-abandonment-sms")
        .expect("listed");
    assert_eq!(sms.channel, Channel::Sms);
    assert!(store.read_all(None, 100).await.expect("read").events.is_empty());

    let (parts, sample_vars) = shipped_welcome();
    let edited = TemplateParts {
        subject: Some("Hello {{ customer.first_name }}".into()),
        ..parts.clone()
    };
    let (put, written) = svc
        .put("welcome", edited.clone(), sample_vars.clone(), actor())
        .await
        .expect("put");
    assert!(written);
    assert_eq!(
        (put.version, put.current_version, put.versions.clone()),
        (2, 2, vec![1, 2])
    );
    assert_eq!(put.origin, TemplateOrigin::Custom);
    assert_eq!(put.published_at, Some(test_time()));
    let v1 = svc.get("welcome", Some(1)).await.expect("v1");
    assert_eq!((v1.parts, v1.origin), (parts.clone(), TemplateOrigin::Shipped));
    assert_eq!(svc.get("welcome", Some(3)).await, Err(TemplateError::UnknownVersion(3)));
    let welcome = svc.list().await.expect("list").into_iter().find(|t| t.id == "welcome");
    assert_eq!(
        welcome.map(|t| (t.version, t.source, t.updated_at)),
        Some((2, TemplateOrigin::Custom, Some(test_time())))
    );
    // The same version again writes nothing; the shipped parts again are a
    // new version that is "shipped" once more.
    let before = store.read_all(None, 100).await.expect("read").events.len();
    let (again, written) = svc
        .put("welcome", edited, sample_vars.clone(), actor())
        .await
        .expect("put");
    assert!(!written);
    assert_eq!(again.version, 2);
    assert_eq!(store.read_all(None, 100).await.expect("read").events.len(), before);
    let (back, _) = svc.put("welcome", parts, sample_vars, actor()).await.expect("put");
    assert_eq!((back.version, back.origin), (3, TemplateOrigin::Shipped));
}

#[tokio::test]
async fn a_new_template_is_registered_and_a_refused_one_writes_nothing() {
    let (svc, store) = service();
    assert_eq!(svc.get("spring-sale", None).await, Err(TemplateError::NotFound));
    let broken = TemplateParts {
        subject: Some("{{ customer.first_name".into()),
        ..email("x")
    };
    assert!(matches!(
        svc.put("spring-sale", broken, sample(), actor()).await,
        Err(TemplateError::Invalid { field, .. }) if field == "subject"
    ));
    assert!(store.read_all(None, 100).await.expect("read").events.is_empty());
    let (t, written) = svc
        .put(
            "spring-sale",
            email("Spring, {{ customer.first_name }}"),
            sample(),
            actor(),
        )
        .await
        .expect("put");
    assert!(written);
    assert_eq!((t.version, t.origin), (1, TemplateOrigin::Custom));
    assert_eq!(
        registry::stored_ids(store.as_ref()).await.expect("ids"),
        BTreeSet::from(["spring-sale".to_string()])
    );
    assert!(svc.list().await.expect("list").iter().any(|t| t.id == "spring-sale"));
    // Previews render the stored version, with changes to its sample.
    let shown = preview(&t, Some(&json!({ "customer": { "first_name": "Grace" } }))).expect("preview");
    assert_eq!(shown.subject.as_deref(), Some("Spring, Grace"));
}

#[tokio::test]
async fn the_channel_renders_the_current_version_and_falls_back_to_the_shipped_one() {
    let (svc, store) = service();
    let counting = Arc::new(ReadLog {
        inner: store.clone(),
        reads: std::sync::Mutex::new(Vec::new()),
    });
    let source = StoredTemplates::new(counting.clone());
    let (parts, sample_vars) = shipped_welcome();
    let before = source.current("welcome").await.expect("shipped");
    assert!(matches!(before, CurrentTemplate::Shipped(_)));
    assert_eq!(before.version(), 1);
    let shipped_subject = render::render_compiled(&before, &sample_vars).expect("renders").subject;

    let edited = TemplateParts {
        subject: Some("Hello again {{ customer.first_name }}".into()),
        ..parts
    };
    svc.put("welcome", edited, sample_vars.clone(), actor())
        .await
        .expect("put");
    let after = source.current("welcome").await.expect("stored");
    assert_eq!(after.version(), 2);
    let subject = render::render_compiled(&after, &sample_vars).expect("renders").subject;
    assert_eq!(subject.as_deref(), Some("Hello again Ada"));
    assert_ne!(subject, shipped_subject);
    // Held: the next call reads the stream past version 2 only, and gets the same compiled template.
    counting.take();
    let again = source.current("welcome").await.expect("held");
    assert!(matches!((&after, &again), (CurrentTemplate::Stored(a), CurrentTemplate::Stored(b)) if Arc::ptr_eq(a, b)));
    assert_eq!(counting.take(), vec![(stream_id("welcome"), 2)]);
    // Unknown ids are render errors (poison), never a store failure.
    assert!(matches!(
        source.current("no-such-template").await,
        Err(TemplateSourceError::Render(RenderError::UnknownTemplate(_)))
    ));
    assert_eq!(
        TemplateSourceError::Render(RenderError::UnknownTemplate("x".into())).kind(),
        FailureKind::Poison
    );
}
