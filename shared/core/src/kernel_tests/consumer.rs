//! The consumers' exactly-once-effect property: histories for 50 customers,
//! every event delivered 1 to 3 times in random order, give the same read
//! models as in-order single delivery, for every projection.

use crate::clock::SystemClock;
use crate::consent::ledger::{self, ConsentLedgerProjection};
use crate::consent::{Channel, ConsentMethod, Purpose};
use crate::consumer::*;
use crate::customer::views::{self, CustomerProfileProjection, EmailIndexProjection, TimelineProjection};
use crate::customer::*;
use crate::event::EventEnvelope;
use crate::event::{Actor, CommandMeta};
use crate::failure::Classify;
use crate::ports::{EventStore, ReadModelStore};
use crate::preferences::{EmailFrequency, Preferences};
use crate::testing::{InMemoryEventStore, InMemoryReadModels, Rng};
use async_trait::async_trait;
use std::sync::Arc;

fn respond(c: &Customer, _: &[EventEnvelope]) -> (u16, serde_json::Value) {
    (200, serde_json::json!({ "id": c.id }))
}

fn registration(n: usize, rng: &mut Rng) -> RegisterCustomer {
    RegisterCustomer {
        email: format!("customer{n}@example.com"),
        first_name: format!("First{n}"),
        last_name: format!("Last{n}"),
        phone: (rng.below(2) == 0).then(|| format!("+4915{:08}", n)),
        source: RegistrationSource::Web,
        marketing_consent: MarketingConsentChoice {
            email: rng.below(2) == 0,
            sms: false,
            push: rng.below(2) == 0,
        },
        terms_accepted: true,
        ip: "192.0.2.1".into(),
        user_agent: "property-test".into(),
        timezone: Some("Europe/Berlin".into()),
        locale: None,
    }
}

fn random_command(n: usize, step: usize, rng: &mut Rng, token: Option<String>) -> CustomerCommand {
    let purposes = [Purpose::Marketing, Purpose::Analytics];
    let channels = [Channel::Email, Channel::Sms, Channel::Push];
    match rng.below(9) {
        0 => CustomerCommand::VerifyEmail(VerifyEmail {
            token: token.unwrap_or_default(),
        }),
        1 => CustomerCommand::UpdateProfile(UpdateProfile {
            first_name: Some(format!("Name{}", rng.below(4))),
            phone: Some(Some(format!("+4916{:08}", rng.below(3)))),
            ..Default::default()
        }),
        2 => CustomerCommand::UpdatePreferences(Preferences {
            email_frequency: rng.pick(&[EmailFrequency::Daily, EmailFrequency::Weekly, EmailFrequency::Never]),
            ..Preferences::default()
        }),
        3 | 4 => CustomerCommand::GrantConsent(GrantConsent {
            purpose: rng.pick(&purposes),
            channel: rng.pick(&channels),
            method: ConsentMethod::PreferenceCentre,
            ip: Some("198.51.100.9".into()),
            user_agent: None,
        }),
        5 => CustomerCommand::RevokeConsent(RevokeConsent {
            purpose: rng.pick(&purposes),
            channel: rng.pick(&channels),
            reason: "test".into(),
            method: None,
        }),
        6 => CustomerCommand::ChangeEmail(ChangeEmail {
            new_email: format!("customer{n}.{step}@example.org"),
        }),
        7 => CustomerCommand::Deactivate(DeactivateCustomer {
            reason: DeactivationReason::Other,
            notes: None,
        }),
        _ => CustomerCommand::Reactivate,
    }
}

/// Runs real commands through the service; refused ones simply add nothing.
async fn histories(customers: usize, rng: &mut Rng) -> Arc<InMemoryEventStore> {
    let store = Arc::new(InMemoryEventStore::default());
    let service =
        CustomerService::new(store.clone(), Arc::new(SystemClock)).with_identifiers(crate::testing::identifiers());
    let meta = CommandMeta::new(Actor::api("property"));
    for n in 0..customers {
        let id = format!("00000000-0000-7000-8000-{n:012}");
        let reg = CustomerCommand::Register(registration(n, rng));
        service
            .execute(&id, &reg, &meta, None, &respond)
            .await
            .expect("register");
        for step in 0..(3 + rng.below(10) as usize) {
            let token = service
                .load(&id)
                .await
                .expect("load")
                .and_then(|c| c.pending_verification_token);
            let cmd = random_command(n, step, rng, token);
            let _ = service.execute(&id, &cmd, &meta, None, &respond).await;
        }
    }
    store
}

fn consumers(events: Arc<dyn EventStore>, docs: Arc<dyn ReadModelStore>) -> Vec<Consumer> {
    let projections: Vec<Arc<dyn Projection>> = vec![
        Arc::new(CustomerProfileProjection),
        Arc::new(TimelineProjection),
        Arc::new(EmailIndexProjection::new(crate::testing::identifiers())),
        Arc::new(ConsentLedgerProjection),
    ];
    projections
        .into_iter()
        .map(|p| Consumer::new(p, events.clone(), docs.clone()))
        .collect()
}

async fn all_events(store: &InMemoryEventStore) -> Vec<EventEnvelope> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.read_all(cursor.as_deref(), 1000).await.expect("read all");
        out.extend(page.events);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

#[tokio::test]
async fn duplicated_and_reordered_delivery_gives_the_in_order_read_models() {
    let mut rng = Rng(0x5EED_CAFE_F00D_BEEF);
    let store = histories(50, &mut rng).await;
    let events = all_events(&store).await;
    assert!(events.len() > 300, "a meaningful history ({} events)", events.len());

    let in_order = Arc::new(InMemoryReadModels::default());
    for consumer in consumers(store.clone(), in_order.clone()) {
        for e in &events {
            consumer.deliver(e).await.expect("in-order delivery");
        }
    }

    let chaotic = Arc::new(InMemoryReadModels::default());
    let mut deliveries: Vec<&EventEnvelope> = Vec::new();
    for e in &events {
        for _ in 0..(1 + rng.below(3)) {
            deliveries.push(e);
        }
    }
    for i in (1..deliveries.len()).rev() {
        deliveries.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut duplicates = 0;
    for consumer in consumers(store.clone(), chaotic.clone()) {
        for e in &deliveries {
            if consumer.deliver(e).await.expect("chaotic delivery") == Delivery::Duplicate {
                duplicates += 1;
            }
        }
    }
    assert!(duplicates > 0);

    let expected = in_order.dump();
    let got = chaotic.dump();
    for name in [
        views::CUSTOMER_360,
        views::TIMELINE,
        views::EMAIL_INDEX,
        ledger::CONSENT_LEDGER,
    ] {
        let of = |m: &std::collections::BTreeMap<(String, String, String), serde_json::Value>| {
            m.iter()
                .filter(|((c, _, _), _)| c == name)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert!(!of(&expected).is_empty(), "{name} built something");
        assert_eq!(of(&got), of(&expected), "{name} equals in-order single delivery");
    }
    assert_eq!(got, expected);

    // The read side answers like the write side.
    for n in [0usize, 17, 49] {
        let id = format!("00000000-0000-7000-8000-{n:012}");
        let profile = views::customer_profile(in_order.as_ref(), &id)
            .await
            .expect("read")
            .expect("profile");
        let service =
            CustomerService::new(store.clone(), Arc::new(SystemClock)).with_identifiers(crate::testing::identifiers());
        let mut written = service.load(&id).await.expect("load").expect("exists");
        written.pending_verification_token = None;
        assert_eq!(profile.customer, written);
        let found = views::customers_with_email(
            in_order.as_ref(),
            &crate::testing::identifiers(),
            &written.email.to_uppercase(),
        )
        .await
        .expect("index");
        assert_eq!(found, vec![id.clone()]);
        let timeline = views::timeline(in_order.as_ref(), &id, 0, 1000)
            .await
            .expect("timeline");
        assert_eq!(timeline.len() as u64, written.version, "one entry per event");
        let now = chrono::Utc::now();
        for c in &written.consents {
            assert!(
                ledger::has_active_consent(in_order.as_ref(), &id, c.purpose, c.channel, now)
                    .await
                    .expect("check")
            );
        }
        let current = ledger::current_consents(in_order.as_ref(), &id).await.expect("ledger");
        let active = current.iter().filter(|r| r.is_active_at(now)).count();
        assert_eq!(active, written.consents.len());
    }
}

#[tokio::test]
async fn a_gap_is_filled_from_the_store_and_a_poison_event_is_not_retried() {
    let mut rng = Rng(7);
    let store = histories(1, &mut rng).await;
    let events = all_events(&store).await;
    let docs = Arc::new(InMemoryReadModels::default());
    let consumer = Consumer::new(Arc::new(TimelineProjection), store.clone(), docs.clone());
    let last = events.last().expect("events");
    assert_eq!(
        consumer.deliver(last).await,
        Ok(Delivery::Applied {
            from: 1,
            to: last.version
        })
    );
    assert_eq!(consumer.deliver(&events[0]).await, Ok(Delivery::Duplicate));

    let mut poison = events[0].clone();
    poison.stream_id = "customer-poison".into();
    poison.version = 1;
    poison.data = serde_json::json!({ "nonsense": true });
    let err = consumer.deliver(&poison).await.expect_err("undecodable");
    assert_eq!(err.kind(), crate::failure::FailureKind::Poison, "{err:?}");
    assert_eq!(
        docs.checkpoint(views::TIMELINE, "customer-poison")
            .await
            .expect("checkpoint"),
        0
    );
}

#[tokio::test]
async fn an_expired_consent_is_not_active() {
    let store = Arc::new(InMemoryEventStore::default());
    let service =
        CustomerService::new(store.clone(), Arc::new(SystemClock)).with_identifiers(crate::testing::identifiers());
    let mut reg = registration(1, &mut Rng(3));
    reg.marketing_consent = MarketingConsentChoice {
        email: true,
        sms: false,
        push: false,
    };
    let id = "00000000-0000-7000-8000-000000000001";
    let meta = CommandMeta::new(Actor::api("property"));
    service
        .execute(id, &CustomerCommand::Register(reg), &meta, None, &respond)
        .await
        .expect("register");
    let events = all_events(&store).await;
    let docs = Arc::new(InMemoryReadModels::default());
    let consumer = Consumer::new(Arc::new(ConsentLedgerProjection), store.clone(), docs.clone());
    // The newest event the ledger handles fills the gap before it.
    let newest = events
        .iter()
        .rev()
        .find(|e| consumer.handles(&e.event_type))
        .expect("a consent event");
    consumer.deliver(newest).await.expect("deliver");

    let record = ledger::current_consents(docs.as_ref(), id).await.expect("current");
    assert_eq!(record.len(), 1);
    let record = &record[0];
    assert_eq!(
        (record.purpose, record.channel, record.status),
        (Purpose::Marketing, Channel::Email, ledger::ConsentStatus::Active)
    );
    assert_eq!(
        record.expires_at,
        record
            .granted_at
            .checked_add_months(chrono::Months::new(24))
            .expect("date")
    );
    assert_eq!(record.proof.ip.as_deref(), Some("192.0.2.1"));
    let check = |at| ledger::has_active_consent(docs.as_ref(), id, Purpose::Marketing, Channel::Email, at);
    assert!(check(record.expires_at - chrono::Duration::days(1))
        .await
        .expect("check"));
    assert!(!check(record.expires_at).await.expect("check"), "expired at two years");
    assert!(
        !ledger::has_active_consent(docs.as_ref(), id, Purpose::Marketing, Channel::Sms, record.granted_at)
            .await
            .expect("check")
    );
}

/// The insight projections (funnel, attribution, campaign stats) over a
/// random commerce, activity, message and journey history: every event
/// delivered 1 to 3 times in random order (so events of other streams
/// overtake each other) gives the in-order read models and the same reports.
#[tokio::test]
async fn insight_projections_are_duplicate_and_reorder_safe() {
    use crate::insights::{attribution, campaign_stats, funnel, tests as fixtures};
    let mut rng = fixtures::Rng(0x1A51_6475);
    let store = fixtures::random_history(60, &mut rng).await;
    let events = fixtures::all_events(&store).await;
    assert!(events.len() > 300, "a meaningful history ({} events)", events.len());
    let run = |docs: Arc<InMemoryReadModels>| {
        let store = store.clone();
        fixtures::projections()
            .into_iter()
            .map(move |p| Consumer::new(p, store.clone(), docs.clone()))
            .collect::<Vec<_>>()
    };

    let in_order = Arc::new(InMemoryReadModels::default());
    for consumer in run(in_order.clone()) {
        for e in &events {
            consumer.deliver(e).await.expect("in-order delivery");
        }
    }
    let chaotic = Arc::new(InMemoryReadModels::default());
    let mut deliveries: Vec<&EventEnvelope> = Vec::new();
    for e in &events {
        for _ in 0..(1 + rng.below(3)) {
            deliveries.push(e);
        }
    }
    for i in (1..deliveries.len()).rev() {
        deliveries.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for consumer in run(chaotic.clone()) {
        for e in &deliveries {
            consumer.deliver(e).await.expect("chaotic delivery");
        }
    }
    let expected = in_order.dump();
    for name in [funnel::FUNNEL, attribution::ATTRIBUTION, campaign_stats::CAMPAIGN_STATS] {
        let of = |m: &std::collections::BTreeMap<(String, String, String), serde_json::Value>| {
            m.iter()
                .filter(|((c, _, _), _)| c == name)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
        };
        assert!(!of(&expected).is_empty(), "{name} built something");
        assert_eq!(
            of(&chaotic.dump()),
            of(&expected),
            "{name} equals in-order single delivery"
        );
    }

    // And the reports read from them agree.
    let (from, to) = (
        fixtures::t() - chrono::Duration::days(30),
        fixtures::t() + chrono::Duration::days(1),
    );
    let now = fixtures::t();
    let a = funnel::funnel_report(in_order.as_ref(), from, to, now)
        .await
        .expect("funnel");
    assert!(a.customers > 30 && a.stages[4].customers > 0, "{a:?}");
    assert_eq!(
        funnel::funnel_report(chaotic.as_ref(), from, to, now)
            .await
            .expect("funnel"),
        a
    );
    for model in attribution::Model::ALL {
        let a = attribution::attribution_report(in_order.as_ref(), model, from, to)
            .await
            .expect("attribution");
        assert!(a.orders > 10 && a.channels.len() > 2, "{a:?}");
        let b = attribution::attribution_report(chaotic.as_ref(), model, from, to)
            .await
            .expect("attribution");
        assert_eq!(a, b);
    }
    for campaign in ["camp0", "camp1", "camp2"] {
        let a = campaign_stats::campaign_stats(in_order.as_ref(), campaign, 7)
            .await
            .expect("stats");
        assert!(a.entered > 0 && a.messages.sent > 0, "{a:?}");
        let b = campaign_stats::campaign_stats(chaotic.as_ref(), campaign, 7)
            .await
            .expect("stats");
        assert_eq!(a, b);
    }
}

mod by_customer {
    use super::*;
    use std::sync::Mutex;

    /// Records the events it handles; the first event of each customer in
    /// `together` waits at a barrier for the other's, which only a page
    /// handled concurrently gets past; events of `failing` fail.
    struct Waiting {
        together: tokio::sync::Barrier,
        handled: Mutex<Vec<(String, u64)>>,
        failing: &'static str,
    }

    #[async_trait]
    impl EventHandler for Waiting {
        fn name(&self) -> &'static str {
            "waiting"
        }

        fn consumer_names(&self) -> Vec<&'static str> {
            vec!["waiting"]
        }

        async fn handle(
            &self,
            event: &EventEnvelope,
            _: chrono::DateTime<chrono::Utc>,
        ) -> Result<GroupOutcome, ConsumeError> {
            let customer = event.customer_id.clone().unwrap_or_default();
            if customer == self.failing {
                return Err(ConsumeError::retry(
                    "waiting",
                    crate::ports::StoreError::Unavailable("throttled".into()),
                ));
            }
            if event.version == 1 && (customer == "a" || customer == "b") {
                self.together.wait().await;
            }
            self.handled.lock().expect("lock").push((customer, event.version));
            Ok(GroupOutcome {
                applied: vec!["waiting"],
                duplicates: Vec::new(),
                parked: Vec::new(),
            })
        }

        async fn handle_page(
            &self,
            events: &[EventEnvelope],
            now: chrono::DateTime<chrono::Utc>,
        ) -> Result<PageOutcome, ConsumeError> {
            handle_by_customer(self, events, now).await
        }
    }

    fn event(customer: &str, version: u64) -> EventEnvelope {
        EventEnvelope {
            version,
            ..crate::testing::registered_event(customer, serde_json::json!({}))
        }
    }

    #[tokio::test]
    async fn customers_of_a_page_are_handled_at_once_each_in_page_order() {
        let handler = Waiting {
            together: tokio::sync::Barrier::new(2),
            handled: Mutex::new(Vec::new()),
            failing: "none",
        };
        let page = [
            event("a", 1),
            event("a", 2),
            event("b", 1),
            event("a", 3),
            event("b", 2),
        ];
        let outcome = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            handler.handle_page(&page, crate::testing::test_time()),
        )
        .await
        .expect("customers a and b handled at the same time (one at a time never passes the barrier)")
        .expect("page");
        assert_eq!(outcome.applied, 5);
        let handled = handler.handled.lock().expect("lock").clone();
        let of = |c: &str| -> Vec<u64> { handled.iter().filter(|(x, _)| x == c).map(|(_, v)| *v).collect() };
        assert_eq!(of("a"), vec![1, 2, 3]);
        assert_eq!(of("b"), vec![1, 2]);
    }

    #[tokio::test]
    async fn a_failing_customer_fails_the_page_after_the_others_are_handled() {
        let handler = Waiting {
            together: tokio::sync::Barrier::new(2),
            handled: Mutex::new(Vec::new()),
            failing: "c",
        };
        let page = [event("c", 1), event("a", 1), event("b", 1)];
        let result = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            handler.handle_page(&page, crate::testing::test_time()),
        )
        .await
        .expect("not stuck");
        assert!(
            matches!(&result, Err(e) if e.kind() == crate::failure::FailureKind::Retryable),
            "{result:?}"
        );
        assert_eq!(handler.handled.lock().expect("lock").len(), 2, "a and b were handled");
    }
}
