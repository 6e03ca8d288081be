//! Given/when/then tests of the customer aggregate, and of its service over
//! the in-memory store.

use super::service::CustomerAggregate;
use super::*;
use crate::aggregate::Aggregate;
use crate::consent::{Channel, ConsentMethod, Purpose};
use crate::preferences::{EmailFrequency, Preferences, QuietHours};
use crate::testing::{test_time, AggregateScenario, Then};

/// The customer aggregate after `events`: a registration there gives the
/// new customer the id `c1` and the verification token `token-1`.
fn given(events: &[CustomerEvent]) -> AggregateScenario<CustomerAggregate> {
    let input = DecisionInput {
        new_customer_id: "c1".into(),
        verification_token: "token-1".into(),
    };
    AggregateScenario::new("c1", input).given(events)
}

fn given_no_customer() -> AggregateScenario<CustomerAggregate> {
    given(&[])
}

fn registration() -> RegisterCustomer {
    RegisterCustomer {
        email: "  Ada.Lovelace@Example.COM ".into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        phone: Some("+441234567890".into()),
        source: RegistrationSource::Web,
        marketing_consent: MarketingConsentChoice {
            email: true,
            sms: true,
            push: false,
        },
        terms_accepted: true,
        ip: "203.0.113.7".into(),
        user_agent: "Mozilla/5.0".into(),
        timezone: Some("Europe/London".into()),
        locale: Some("en-GB".into()),
    }
}

fn registered() -> Vec<CustomerEvent> {
    given_no_customer()
        .when(CustomerCommand::Register(registration()))
        .events()
}

fn verified() -> Vec<CustomerEvent> {
    let mut events = registered();
    events.push(CustomerEvent::EmailVerified {
        email: "ada.lovelace@example.com".into(),
    });
    events
}

/// The field a refused command names as invalid.
fn invalid_field(decided: Then<CustomerAggregate>) -> String {
    match decided.error() {
        CustomerError::Invalid { field, .. } => field,
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn registering_emits_registration_consents_and_verification_in_order() {
    let events = registered();
    let types: Vec<_> = events.iter().map(CustomerEvent::event_type).collect();
    assert_eq!(
        types,
        [
            "CustomerRegistered",
            "ConsentGranted",
            "ConsentGranted",
            "EmailVerificationRequested"
        ]
    );
    match &events[0] {
        CustomerEvent::CustomerRegistered { email, customer_id, .. } => {
            assert_eq!(email, "ada.lovelace@example.com", "trimmed and lower-cased");
            assert_eq!(customer_id, "c1");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        events[1],
        CustomerEvent::ConsentGranted {
            purpose: Purpose::Marketing,
            channel: Channel::Email,
            method: ConsentMethod::RegistrationCheckbox,
            ip: Some("203.0.113.7".into()),
            user_agent: Some("Mozilla/5.0".into()),
            gdpr: crate::consent::GdprContext {
                legal_basis: crate::consent::LegalBasis::Consent,
                jurisdiction: None,
                explicit: true,
            },
        }
    );
    assert_eq!(
        events[3],
        CustomerEvent::EmailVerificationRequested {
            email: "ada.lovelace@example.com".into(),
            token: "token-1".into()
        }
    );
    let reservations = reservations_for("c1", None, &events);
    assert_eq!(
        reservations,
        vec![crate::ports::ReservationChange::Claim {
            key: email_reservation_name("ada.lovelace@example.com"),
            owner: "customer-c1".into()
        }]
    );
}

type Mutation = Box<dyn Fn(&mut RegisterCustomer)>;

#[test]
fn registration_rejects_each_bad_field_by_name() {
    let s = given_no_customer();
    let cases: Vec<(&str, Mutation)> = vec![
        ("email", Box::new(|r| r.email = "not-an-email".into())),
        ("email", Box::new(|r| r.email = "ada@localhost".into())),
        ("first_name", Box::new(|r| r.first_name = "  ".into())),
        ("last_name", Box::new(|r| r.last_name = "x".repeat(101))),
        ("phone", Box::new(|r| r.phone = Some("0123".into()))),
        ("terms_accepted", Box::new(|r| r.terms_accepted = false)),
        ("ip", Box::new(|r| r.ip = "999.1.1.1".into())),
        ("timezone", Box::new(|r| r.timezone = Some("Mars/Base".into()))),
        ("locale", Box::new(|r| r.locale = Some("english please".into()))),
        ("marketing_consent.sms", Box::new(|r| r.phone = None)),
    ];
    for (field, mutate) in cases {
        let mut r = registration();
        mutate(&mut r);
        assert_eq!(invalid_field(s.when(CustomerCommand::Register(r))), field);
    }
}

#[test]
fn a_registration_by_ingestion_may_have_no_names_the_api_s_may_not() {
    let s = given_no_customer();
    let mut nameless = registration();
    nameless.first_name = " ".into();
    nameless.last_name = String::new();
    nameless.source = RegistrationSource::Api;
    nameless.marketing_consent = MarketingConsentChoice::default();
    // The API's registration (POST /customers) still requires both names.
    assert_eq!(
        invalid_field(s.when(CustomerCommand::Register(nameless.clone()))),
        "first_name"
    );
    let events = s
        .when(CustomerCommand::RegisterFromIngestion(nameless.clone()))
        .events();
    match &events[0] {
        CustomerEvent::CustomerRegistered {
            first_name, last_name, ..
        } => assert_eq!((first_name.as_str(), last_name.as_str()), ("", "")),
        other => panic!("{other:?}"),
    }
    let types: Vec<_> = events.iter().map(CustomerEvent::event_type).collect();
    assert_eq!(
        types,
        ["CustomerRegistered", "EmailVerificationRequested"],
        "no consent without a choice"
    );
    // A name that is given is checked as the API's are.
    for (field, mutate) in [
        (
            "first_name",
            Box::new(|r: &mut RegisterCustomer| r.first_name = "A\u{7}da".into()) as Mutation,
        ),
        (
            "last_name",
            Box::new(|r: &mut RegisterCustomer| r.last_name = "x".repeat(101)),
        ),
        (
            "email",
            Box::new(|r: &mut RegisterCustomer| r.email = "not-an-email".into()),
        ),
    ] {
        let mut r = nameless.clone();
        mutate(&mut r);
        assert_eq!(invalid_field(s.when(CustomerCommand::RegisterFromIngestion(r))), field);
    }
    let registered = given(&events);
    assert!(matches!(
        registered
            .when(CustomerCommand::RegisterFromIngestion(nameless))
            .error(),
        CustomerError::Conflict { .. }
    ));
}

#[test]
fn registering_twice_conflicts_and_commands_need_a_customer() {
    let s = given(&registered());
    assert!(matches!(
        s.when(CustomerCommand::Register(registration())).error(),
        CustomerError::Conflict { .. }
    ));
    let none = given_no_customer();
    none.when(CustomerCommand::Reactivate)
        .then_expect_error(CustomerError::NotFound);
}

#[test]
fn verifying_email_needs_the_right_token() {
    let s = given(&registered());
    assert_eq!(s.state().map(|c| c.status), Some(CustomerStatus::PendingVerification));
    assert_eq!(
        invalid_field(s.when(CustomerCommand::VerifyEmail(VerifyEmail { token: "wrong".into() }))),
        "token"
    );
    let events = s
        .when(CustomerCommand::VerifyEmail(VerifyEmail {
            token: "token-1".into(),
        }))
        .events();
    assert_eq!(
        events,
        vec![CustomerEvent::EmailVerified {
            email: "ada.lovelace@example.com".into()
        }]
    );

    let done = given(&verified());
    assert_eq!(done.state().map(|c| c.status), Some(CustomerStatus::Active));
    assert!(matches!(
        done.when(CustomerCommand::VerifyEmail(VerifyEmail {
            token: "token-1".into()
        }))
        .error(),
        CustomerError::Conflict { .. }
    ));
}

#[test]
fn changing_email_moves_the_reservation_and_asks_for_verification() {
    let s = given(&verified());
    let events = s
        .when(CustomerCommand::ChangeEmail(ChangeEmail {
            new_email: "ada@analytical.engine.org".into(),
        }))
        .events();
    assert_eq!(
        events,
        vec![
            CustomerEvent::CustomerEmailChanged {
                old_email: "ada.lovelace@example.com".into(),
                new_email: "ada@analytical.engine.org".into()
            },
            CustomerEvent::EmailVerificationRequested {
                email: "ada@analytical.engine.org".into(),
                token: "token-1".into()
            },
        ]
    );
    let keys: Vec<_> = reservations_for("c1", None, &events)
        .iter()
        .map(|r| r.key().to_string())
        .collect();
    assert_eq!(
        keys,
        vec![
            email_reservation_name("ada@analytical.engine.org"),
            email_reservation_name("ada.lovelace@example.com")
        ]
    );
    assert_eq!(
        invalid_field(s.when(CustomerCommand::ChangeEmail(ChangeEmail {
            new_email: "ADA.LOVELACE@example.com".into()
        }))),
        "new_email"
    );
}

#[test]
fn profile_updates_emit_one_event_per_kind_of_change_only_when_different() {
    let s = given(&verified());
    let unchanged = s
        .when(CustomerCommand::UpdateProfile(UpdateProfile {
            first_name: Some("Ada".into()),
            phone: Some(Some("+441234567890".into())),
            ..Default::default()
        }))
        .events();
    assert!(unchanged.is_empty(), "same values: no events");

    let address = Address {
        line1: "12 St James's Square".into(),
        line2: None,
        city: "London".into(),
        region: None,
        postal_code: "SW1Y 4JH".into(),
        country: "gb".into(),
    };
    let events = s.when(CustomerCommand::UpdateProfile(UpdateProfile {
        last_name: Some("King".into()),
        phone: Some(Some("+447700900123".into())),
        address: Some(Some(address)),
        date_of_birth: Some(Some(chrono::NaiveDate::from_ymd_opt(1815, 12, 10).expect("date"))),
        ..Default::default()
    }));
    assert_eq!(invalid_field(events), "date_of_birth", "before 1900 is refused");

    let events = s
        .when(CustomerCommand::UpdateProfile(UpdateProfile {
            last_name: Some("King".into()),
            phone: Some(Some("+447700900123".into())),
            address: Some(Some(Address {
                line1: "12 St James's Square".into(),
                line2: None,
                city: "London".into(),
                region: None,
                postal_code: "SW1Y 4JH".into(),
                country: "gb".into(),
            })),
            ..Default::default()
        }))
        .events();
    let types: Vec<_> = events.iter().map(CustomerEvent::event_type).collect();
    assert_eq!(
        types,
        [
            "CustomerNameChanged",
            "CustomerPhoneChanged",
            "ConsentRevoked",
            "CustomerAddressChanged"
        ],
        "the new number has no SMS consent"
    );
    match &events[0] {
        CustomerEvent::CustomerNameChanged {
            old_last_name,
            new_last_name,
            new_first_name,
            ..
        } => {
            assert_eq!(
                (old_last_name.as_str(), new_last_name.as_str(), new_first_name.as_str()),
                ("Lovelace", "King", "Ada")
            );
        }
        other => panic!("{other:?}"),
    }
    match &events[3] {
        CustomerEvent::CustomerAddressChanged {
            new_address: Some(a),
            old_address: None,
        } => assert_eq!(a.country, "GB"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn changing_the_phone_number_revokes_sms_consent_until_granted_again() {
    let s = given(&verified());
    let events = s
        .when(CustomerCommand::UpdateProfile(UpdateProfile {
            phone: Some(Some("+447700900123".into())),
            ..Default::default()
        }))
        .events();
    assert_eq!(
        events,
        vec![
            CustomerEvent::CustomerPhoneChanged {
                old_phone: Some("+441234567890".into()),
                new_phone: Some("+447700900123".into()),
            },
            CustomerEvent::ConsentRevoked {
                purpose: Purpose::Marketing,
                channel: Channel::Sms,
                reason: "phone-changed".into(),
                method: None,
            },
        ]
    );
    let mut history = verified();
    history.extend(events);
    let after = given(&history);
    let state = after.state().expect("state");
    assert!(state.consent(Purpose::Marketing, Channel::Sms).is_none());
    assert!(
        state.consent(Purpose::Marketing, Channel::Email).is_some(),
        "email consent stays"
    );
    // The same number again is no change: nothing revoked.
    assert!(after
        .when(CustomerCommand::UpdateProfile(UpdateProfile {
            phone: Some(Some("+447700900123".into())),
            ..Default::default()
        }))
        .events()
        .is_empty());
}

#[test]
fn phone_cannot_be_removed_while_sms_consent_is_active() {
    let s = given(&verified());
    let result = s
        .when(CustomerCommand::UpdateProfile(UpdateProfile {
            phone: Some(None),
            ..Default::default()
        }))
        .error();
    assert!(matches!(result, CustomerError::Conflict { field: Some(f), .. } if f == "phone"));
}

#[test]
fn preferences_are_validated_and_only_recorded_when_changed() {
    let s = given(&verified());
    let current = s.state().map(|c| c.preferences.clone()).expect("state");
    assert_eq!(
        current.timezone, "Europe/London",
        "registration time zone is the default"
    );
    assert!(s
        .when(CustomerCommand::UpdatePreferences(current.clone()))
        .events()
        .is_empty());
    let wanted = Preferences {
        email_frequency: EmailFrequency::Daily,
        categories: vec!["new-arrivals".into()],
        timezone: "America/New_York".into(),
        quiet_hours: Some(QuietHours {
            start: "21:00".into(),
            end: "08:00".into(),
        }),
        sms_for_promotions: true,
        push_categories: vec!["order-updates".into()],
        preferred_channel: Some(crate::consent::Channel::Sms),
    };
    s.when(CustomerCommand::UpdatePreferences(wanted.clone()))
        .then_expect_events(&[CustomerEvent::PreferencesUpdated {
            preferences: wanted.clone(),
        }]);
    let bad = Preferences {
        timezone: "Nowhere/Land".into(),
        ..wanted
    };
    assert_eq!(
        invalid_field(s.when(CustomerCommand::UpdatePreferences(bad))),
        "timezone"
    );
}

#[test]
fn consent_is_granted_once_and_revoked_only_when_active() {
    let s = given(&verified());
    let grant = |purpose, channel| {
        CustomerCommand::GrantConsent(GrantConsent {
            purpose,
            channel,
            method: ConsentMethod::PreferenceCentre,
            ip: None,
            user_agent: None,
        })
    };
    assert!(
        matches!(
            s.when(grant(Purpose::Marketing, Channel::Email)).error(),
            CustomerError::Conflict { .. }
        ),
        "already active"
    );
    assert_eq!(s.when(grant(Purpose::Analytics, Channel::Email)).events().len(), 1);
    let revoke = |purpose, channel| {
        CustomerCommand::RevokeConsent(RevokeConsent {
            purpose,
            channel,
            reason: "".into(),
            method: Some(ConsentMethod::OneClick),
        })
    };
    s.when(revoke(Purpose::Marketing, Channel::Sms))
        .then_expect_events(&[CustomerEvent::ConsentRevoked {
            purpose: Purpose::Marketing,
            channel: Channel::Sms,
            reason: "customer-request".into(),
            method: Some(ConsentMethod::OneClick),
        }]);
    assert!(
        matches!(
            s.when(revoke(Purpose::Marketing, Channel::Push)).error(),
            CustomerError::Conflict { .. }
        ),
        "not active"
    );
}

#[test]
fn a_lapsed_consent_is_given_again_and_can_no_longer_be_revoked() {
    let grant = CustomerCommand::GrantConsent(GrantConsent {
        purpose: Purpose::Marketing,
        channel: Channel::Email,
        method: ConsentMethod::PreferenceCentre,
        ip: None,
        user_agent: None,
    });
    let revoke = CustomerCommand::RevokeConsent(RevokeConsent {
        purpose: Purpose::Marketing,
        channel: Channel::Email,
        reason: "".into(),
        method: None,
    });
    // Registration granted marketing email; 24 months later (731 days from
    // 2026-11-23) it has lapsed: 732 days is a day past. Before its last 30
    // days it is in force and cannot be given again.
    let almost = given(&verified()).later_by(chrono::Duration::days(690));
    assert!(matches!(
        almost.when(grant.clone()).error(),
        CustomerError::Conflict { .. }
    ));
    assert_eq!(
        almost.when(revoke.clone()).events().len(),
        1,
        "still in force: revocable"
    );

    let lapsed = given(&verified()).later_by(chrono::Duration::days(732));
    let state = lapsed.state().expect("a customer");
    assert!(
        state.consent(Purpose::Marketing, Channel::Email).is_some(),
        "the grant is kept"
    );
    assert!(
        state
            .consent_in_force(
                Purpose::Marketing,
                Channel::Email,
                test_time() + chrono::Duration::days(732)
            )
            .is_none(),
        "but not in force"
    );
    let renewed = lapsed.when(grant.clone()).events();
    assert!(
        matches!(
            renewed.as_slice(),
            [CustomerEvent::ConsentGranted {
                purpose: Purpose::Marketing,
                channel: Channel::Email,
                ..
            }]
        ),
        "{renewed:?}"
    );
    assert!(
        matches!(lapsed.when(revoke).error(), CustomerError::Conflict { .. }),
        "nothing to revoke"
    );
}

#[test]
fn a_consent_in_its_last_30_days_is_renewed_for_two_years_from_then() {
    let grant = CustomerCommand::GrantConsent(GrantConsent {
        purpose: Purpose::Marketing,
        channel: Channel::Email,
        method: ConsentMethod::PreferenceCentre,
        ip: None,
        user_agent: None,
    });
    // Registered 2026-11-23; lapses 2028-11-23 (731 days): renewable from day 701.
    assert!(matches!(
        given(&verified())
            .later_by(chrono::Duration::days(700))
            .when(grant.clone())
            .error(),
        CustomerError::Conflict { .. }
    ));
    let window = given(&verified()).later_by(chrono::Duration::days(715));
    let renewed = window.when(grant.clone()).events();
    assert!(
        matches!(renewed.as_slice(), [CustomerEvent::ConsentGranted { .. }]),
        "{renewed:?}"
    );
    // In force two years from the renewal, past the first grant's end.
    let renewed_at = test_time() + chrono::Duration::days(715);
    let before = window.state().expect("a customer").clone();
    let version = CustomerAggregate::version(&before) + 1;
    let state = CustomerAggregate::evolve(Some(before), &renewed[0], renewed_at, version).expect("a customer");
    let active = state
        .consent_in_force(
            Purpose::Marketing,
            Channel::Email,
            renewed_at + chrono::Duration::days(400),
        )
        .expect("in force after the first grant's end");
    assert_eq!(active.granted_at, renewed_at);
    assert!(!active.is_due_for_renewal_at(renewed_at + chrono::Duration::days(1)));
}

#[test]
fn deactivation_revokes_every_active_consent_and_blocks_changes_until_reactivated() {
    let s = given(&verified());
    let events = s
        .when(CustomerCommand::Deactivate(DeactivateCustomer {
            reason: DeactivationReason::Fraud,
            notes: Some("chargebacks".into()),
        }))
        .events();
    assert_eq!(
        events,
        vec![
            CustomerEvent::CustomerDeactivated {
                reason: DeactivationReason::Fraud,
                notes: Some("chargebacks".into()),
                previous_status: CustomerStatus::Active
            },
            CustomerEvent::ConsentRevoked {
                purpose: Purpose::Marketing,
                channel: Channel::Email,
                reason: "account-deactivated".into(),
                method: None,
            },
            CustomerEvent::ConsentRevoked {
                purpose: Purpose::Marketing,
                channel: Channel::Sms,
                reason: "account-deactivated".into(),
                method: None,
            },
        ]
    );
    let mut history = verified();
    history.extend(events);
    let off = given(&history);
    let c = off.state().expect("state");
    assert_eq!(c.status, CustomerStatus::Deactivated);
    assert!(c.consents.is_empty());
    let grant = CustomerCommand::GrantConsent(GrantConsent {
        purpose: Purpose::Marketing,
        channel: Channel::Email,
        method: ConsentMethod::Api,
        ip: None,
        user_agent: None,
    });
    assert!(matches!(off.when(grant).error(), CustomerError::Conflict { .. }));
    assert!(matches!(
        off.when(CustomerCommand::Deactivate(DeactivateCustomer {
            reason: DeactivationReason::Other,
            notes: None
        }))
        .error(),
        CustomerError::Conflict { .. }
    ));
    off.when(CustomerCommand::Reactivate)
        .then_expect_events(&[CustomerEvent::CustomerReactivated {
            status: CustomerStatus::Active,
        }]);
    assert!(matches!(
        s.when(CustomerCommand::Reactivate).error(),
        CustomerError::Conflict { .. }
    ));
}

mod service {
    use super::*;
    use crate::clock::SystemClock;
    use crate::event::{Actor, CommandMeta};
    use crate::idempotency::IdempotencyKey;
    use crate::ports::EventStore;
    use crate::testing::InMemoryEventStore;
    use std::sync::Arc;

    fn respond(c: &Customer, _: &[crate::event::EventEnvelope]) -> (u16, serde_json::Value) {
        (201, serde_json::json!({ "id": c.id, "version": c.version }))
    }

    #[tokio::test]
    async fn registers_atomically_and_answers_a_retry_from_its_receipt() {
        let store = Arc::new(InMemoryEventStore::default());
        let service = CustomerService::new(store.clone(), Arc::new(SystemClock))
            .with_identifiers(crate::testing::identifiers())
            .with_snapshot_every(3);
        let meta = CommandMeta::new(Actor::api("tester"));
        let key = IdempotencyKey::new("tester", "k-1", "POST", "/customers", b"body");
        let first = service
            .execute(
                "c1",
                &CustomerCommand::Register(registration()),
                &meta,
                Some(&key),
                &respond,
            )
            .await
            .expect("register");
        let Executed::Applied {
            events, status, body, ..
        } = first
        else {
            panic!("applied")
        };
        assert_eq!(status, 201);
        assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert!(events
            .iter()
            .all(|e| e.correlation_id == meta.command_id && e.actor == "api:tester"));

        let again = service
            .execute(
                "c2",
                &CustomerCommand::Register(registration()),
                &meta,
                Some(&key),
                &respond,
            )
            .await
            .expect("retry");
        assert_eq!(again, Executed::Replayed { status: 201, body });
        assert_eq!(
            store.load("customer-c2").await.expect("load").version,
            0,
            "not applied twice"
        );

        let other = IdempotencyKey::new("tester", "k-1", "POST", "/customers", b"other body");
        let reused = service
            .execute(
                "c3",
                &CustomerCommand::Register(registration()),
                &meta,
                Some(&other),
                &respond,
            )
            .await;
        assert_eq!(reused, Err(CommandError::IdempotencyKeyReused));

        let dup = service
            .execute("c4", &CustomerCommand::Register(registration()), &meta, None, &respond)
            .await;
        assert_eq!(dup, Err(CommandError::EmailTaken { field: "email" }));

        // The snapshot written after crossing 3 events is used on load.
        let loaded = store.load("customer-c1").await.expect("load");
        assert_eq!(loaded.snapshot.map(|s| s.version), Some(4));
        let customer = service.load("c1").await.expect("load").expect("exists");
        assert_eq!(customer.version, 4);
        assert_eq!(customer.consents.len(), 2);
    }
}

#[test]
fn a_revocation_stored_before_methods_were_recorded_still_reads() {
    let old = serde_json::json!({
        "type": "ConsentRevoked",
        "data": { "purpose": "marketing", "channel": "email", "reason": "customer-request" }
    });
    let event: CustomerEvent = serde_json::from_value(old.clone()).expect("old event reads");
    assert_eq!(
        event,
        CustomerEvent::ConsentRevoked {
            purpose: Purpose::Marketing,
            channel: Channel::Email,
            reason: "customer-request".into(),
            method: None,
        }
    );
    assert_eq!(
        serde_json::to_value(&event).expect("json"),
        old,
        "written back unchanged"
    );
    let one_click: CustomerEvent = serde_json::from_value(serde_json::json!({
        "type": "ConsentRevoked",
        "data": { "purpose": "marketing", "channel": "email", "reason": "one-click unsubscribe", "method": "one-click" }
    }))
    .expect("new event reads");
    assert!(matches!(
        one_click,
        CustomerEvent::ConsentRevoked {
            method: Some(ConsentMethod::OneClick),
            ..
        }
    ));
}

#[test]
fn erasure_is_requested_once_then_completed_and_every_other_command_is_refused() {
    let mut events = verified();
    let scenario = given(&events);
    assert_eq!(
        scenario.when(CustomerCommand::CompleteErasure).error(),
        CustomerError::conflict(None, "erasure was not requested")
    );
    let identifiers = crate::privacy::IdentifierHasher::new(b"salt").identifiers_of("ada.lovelace@example.com", None);
    let requested = scenario
        .when(CustomerCommand::RequestErasure(RequestErasure {
            identifiers: identifiers.clone(),
        }))
        .events();
    assert_eq!(
        requested.first(),
        Some(&CustomerEvent::CustomerErasureRequested { identifiers }),
        "the request carries the hashed identifiers for the proof ledger"
    );
    let types: Vec<_> = requested.iter().map(CustomerEvent::event_type).collect();
    assert_eq!(
        types,
        ["CustomerErasureRequested", "ConsentRevoked", "ConsentRevoked"],
        "the active consents end with the erasure request"
    );
    // The request gives the email's reservation back.
    assert_eq!(
        reservations_for("c1", scenario.state(), &requested),
        vec![crate::ports::ReservationChange::Release {
            key: email_reservation_name("ada.lovelace@example.com"),
            owner: "customer-c1".into()
        }]
    );
    events.extend(requested);
    let pending = given(&events);
    pending
        .when(CustomerCommand::RequestErasure(Default::default()))
        .then_expect_events(&[]);
    assert!(matches!(
        pending.when(CustomerCommand::Reactivate).error(),
        CustomerError::Conflict { .. }
    ));
    let completed = pending.when(CustomerCommand::CompleteErasure).events();
    assert_eq!(completed, vec![CustomerEvent::CustomerErased {}]);
    events.extend(completed);

    let erased = given(&events);
    let state = erased.state().expect("still there");
    assert_eq!(state.status, CustomerStatus::Erased);
    assert_eq!(state.email, crate::privacy::ERASED);
    assert!(state.consents.is_empty() && state.phone.is_none());
    erased
        .when(CustomerCommand::RequestErasure(Default::default()))
        .then_expect_events(&[]);
    erased.when(CustomerCommand::CompleteErasure).then_expect_events(&[]);
    assert!(matches!(
        erased
            .when(CustomerCommand::UpdateProfile(UpdateProfile {
                first_name: Some("Eve".into()),
                ..UpdateProfile::default()
            }))
            .error(),
        CustomerError::Conflict { .. }
    ));
}

#[test]
fn typed_events_read_the_erased_marker_in_object_and_date_fields() {
    let erased = crate::privacy::ERASED;
    let address: CustomerEvent = serde_json::from_value(serde_json::json!({
        "type": "CustomerAddressChanged",
        "data": { "old_address": null, "new_address": erased }
    }))
    .expect("address");
    assert_eq!(
        address,
        CustomerEvent::CustomerAddressChanged {
            old_address: None,
            new_address: None
        }
    );
    let dob: CustomerEvent = serde_json::from_value(serde_json::json!({
        "type": "CustomerDateOfBirthChanged",
        "data": { "old_date_of_birth": erased, "new_date_of_birth": "1990-01-02" }
    }))
    .expect("date of birth");
    assert_eq!(
        dob,
        CustomerEvent::CustomerDateOfBirthChanged {
            old_date_of_birth: None,
            new_date_of_birth: chrono::NaiveDate::from_ymd_opt(1990, 1, 2)
        }
    );
    let placed: Address = address_or_erased(serde_json::json!(erased)).expect("order address");
    assert_eq!(placed, Address::erased());
}

/// A customer registered by ingestion may have no name (decision 0051):
/// every template greets them without a dangling comma, and still names a
/// customer who has one.
#[test]
fn every_template_reads_well_for_a_customer_without_a_name() {
    use crate::messaging::render::{preview, Rendered};
    let parts = |r: &Rendered| {
        [r.subject.clone(), Some(r.text.clone()), r.html.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
    };
    let nameless = serde_json::json!({ "customer": { "first_name": "", "last_name": "" } });
    let named = serde_json::json!({ "customer": { "first_name": "Grace", "last_name": "Hopper" } });
    for id in crate::journey::templates::KNOWN_TEMPLATES {
        let (_, rendered) = preview(id, Some(&nameless)).unwrap_or_else(|e| panic!("{id}: {e}"));
        for part in parts(&rendered) {
            for awkward in [" ,", ",,", ", !", ", ?", ", :", ",!", ",?", ": ,", "Hi ,", "  ,"] {
                assert!(!part.contains(awkward), "{id} reads {awkward:?} without a name: {part}");
            }
            assert!(!part.trim_start().starts_with(','), "{id}: {part}");
        }
        let (_, rendered) = preview(id, Some(&named)).unwrap_or_else(|e| panic!("{id}: {e}"));
        let greets = parts(&rendered).iter().any(|p| p.contains("Grace"));
        let (_, sample) = preview(id, None).unwrap_or_else(|e| panic!("{id}: {e}"));
        let sample_greets = parts(&sample).iter().any(|p| p.contains("Ada"));
        assert_eq!(greets, sample_greets, "{id} names a customer who has a name");
    }
    let (_, verification) = preview("email-verification", Some(&nameless)).expect("renders");
    assert!(verification.text.contains("Hi there,"), "{}", verification.text);
    let (_, welcome) = preview("welcome", Some(&nameless)).expect("renders");
    assert_eq!(welcome.subject.as_deref(), Some("Welcome!"));
}

#[test]
fn resending_the_verification_requests_it_again_with_the_same_token_until_verified() {
    let pending = given(&registered());
    assert_eq!(
        pending.when(CustomerCommand::ResendVerification).events(),
        vec![CustomerEvent::EmailVerificationRequested {
            email: "ada.lovelace@example.com".into(),
            token: "token-1".into(),
        }]
    );
    let done = given(&verified());
    assert!(matches!(
        done.when(CustomerCommand::ResendVerification).error(),
        CustomerError::Conflict { .. }
    ));
}
