use super::*;
use crate::clock::VirtualClock;
use crate::customer::Customer;
use crate::event::{envelopes, Actor};
use crate::ports::{AppendRequest, ExpectedVersion};
use crate::testing::{identifiers, registration, test_time, InMemoryEventStore};

struct World {
    store: Arc<InMemoryEventStore>,
    customers: Arc<CustomerService>,
    identity: IdentityService,
}

fn world() -> World {
    let store = Arc::new(InMemoryEventStore::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let customers = Arc::new(CustomerService::new(store.clone(), clock).with_identifiers(identifiers()));
    World {
        identity: IdentityService::new(store.clone(), customers.clone()),
        store,
        customers,
    }
}

fn meta() -> CommandMeta {
    CommandMeta::new(Actor::system("test"))
}

async fn register(w: &World, id: &str, email: &str) {
    let respond = |c: &Customer, _: &[EventEnvelope]| (201, serde_json::json!({ "id": c.id }));
    w.customers
        .execute(
            id,
            &CustomerCommand::Register(registration(email, "A", "B", "UTC")),
            &meta(),
            None,
            &respond,
        )
        .await
        .expect("registered");
}

const K: &str = "0190a000-0000-7000-8000-00000000000a";
const L: &str = "0190a000-0000-7000-8000-00000000000b";

#[test]
fn anonymous_profiles_are_stable_and_recognisable() {
    let a = anonymous_profile_id("anon-1");
    assert_eq!(a, anonymous_profile_id("anon-1"));
    assert_ne!(a, anonymous_profile_id("anon-2"));
    assert!(is_anonymous_profile(&a));
    assert!(!is_anonymous_profile(K), "customer ids are UUID v7");
    assert!(!is_anonymous_profile("not a uuid"));
    let h = identifiers();
    assert_ne!(user_stream(&h, "u1"), user_stream(&h, "u2"));
    assert!(
        !user_stream(&h, "ada@example.com").contains("ada"),
        "the user id is hashed"
    );
}

#[test]
fn a_user_profile_is_stable_keyed_and_a_profile() {
    let (a, b) = (IdentifierHasher::new(b"one"), IdentifierHasher::new(b"two"));
    let profile = user_profile_id(&a, "shop-user-1");
    assert_eq!(profile, user_profile_id(&a, "shop-user-1"));
    assert_ne!(profile, user_profile_id(&a, "shop-user-2"));
    assert_ne!(
        profile,
        user_profile_id(&b, "shop-user-1"),
        "another secret, another profile"
    );
    assert_ne!(
        profile,
        anonymous_profile_id("shop-user-1"),
        "not the anonymous id's profile"
    );
    assert!(is_anonymous_profile(&profile));
}

#[tokio::test]
async fn a_user_linked_to_its_profile_names_the_customer_it_is_merged_into() {
    let w = world();
    register(&w, K, "k@example.com").await;
    register(&w, L, "l@example.com").await;
    let profile = w.identity.user_profile("u-solo").expect("secret");
    w.identity.link_user("u-solo", &profile, &meta()).await.expect("linked");
    assert_eq!(
        w.identity.customer_of_user("u-solo").await.expect("read"),
        Some(profile.clone())
    );
    // A profile is merged only into a customer: nothing is written otherwise.
    let anon = anonymous_profile_id("device");
    let refused = w.identity.merge(&anon, &profile, &meta()).await;
    assert!(matches!(refused, Err(IdentityError::Refused(_))), "{refused:?}");
    assert_eq!(w.identity.merged_into(&anon).await.expect("read"), None);
    // Linking to a customer before the profile is merged is refused.
    assert!(matches!(
        w.identity.link_user("u-solo", K, &meta()).await,
        Err(IdentityError::Refused(_))
    ));

    w.identity.merge(&profile, K, &meta()).await.expect("merged");
    assert_eq!(
        w.identity.customer_of_user("u-solo").await.expect("read"),
        Some(K.to_string())
    );
    w.identity
        .link_user("u-solo", K, &meta())
        .await
        .expect("the same customer");
    assert!(matches!(
        w.identity.link_user("u-solo", L, &meta()).await,
        Err(IdentityError::Refused(_))
    ));
}

#[test]
fn a_user_stream_is_named_by_the_keyed_hash() {
    let (a, b) = (IdentifierHasher::new(b"one"), IdentifierHasher::new(b"two"));
    assert_ne!(
        user_stream(&a, "ada@example.com"),
        user_stream(&b, "ada@example.com"),
        "another secret, another stream"
    );
    assert_ne!(
        user_stream(&a, "ada@example.com"),
        unkeyed_user_stream("ada@example.com"),
        "not the unkeyed SHA-256 a list of addresses finds"
    );
    assert_eq!(user_stream(&a, "u1").len(), "user-".len() + 32);
}

#[tokio::test]
async fn without_a_secret_user_ids_are_neither_read_nor_linked() {
    let store = Arc::new(InMemoryEventStore::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let identity = IdentityService::new(store.clone(), Arc::new(CustomerService::new(store.clone(), clock)));
    assert!(identity.customer_of_user("u1").await.is_err());
    assert!(identity.link_user("u1", K, &meta()).await.is_err());
    assert_eq!(store.read_all(None, 10).await.expect("read").events.len(), 0);
}

/// A link as it was made before decision 0046: on the unkeyed stream.
async fn link_unkeyed(w: &World, user_id: &str, customer_id: &str) {
    let stream = unkeyed_user_stream(user_id);
    let event = IdentityEvent::UserIdLinked {
        customer_id: customer_id.into(),
    };
    let events = envelopes(&stream, Some(customer_id), &[event], &meta(), test_time()).expect("envelope");
    w.store
        .append(AppendRequest {
            stream_id: stream,
            expected: ExpectedVersion::NoStream,
            events,
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("linked before 0046");
}

#[tokio::test]
async fn a_link_made_before_keyed_hashes_still_counts_and_moves_to_the_keyed_stream() {
    let w = world();
    register(&w, K, "k@example.com").await;
    register(&w, L, "l@example.com").await;
    link_unkeyed(&w, "shop-7", K).await;
    assert_eq!(
        w.identity.customer_of_user("shop-7").await.expect("read").as_deref(),
        Some(K)
    );
    assert!(
        matches!(
            w.identity.link_user("shop-7", L, &meta()).await,
            Err(IdentityError::Refused(_))
        ),
        "the earlier link wins"
    );
    // The refused link still carried the earlier one over: the keyed stream names K.
    let keyed = user_stream(&identifiers(), "shop-7");
    let moved = w.store.read_stream(&keyed, 0, 10).await.expect("read");
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].customer_id.as_deref(), Some(K));
    w.identity
        .link_user("shop-7", K, &meta())
        .await
        .expect("the same customer again");
    assert_eq!(w.store.read_stream(&keyed, 0, 10).await.expect("read").len(), 1);
}

#[tokio::test]
async fn a_profile_merges_once_and_never_into_a_second_customer() {
    let w = world();
    register(&w, K, "k@example.com").await;
    register(&w, L, "l@example.com").await;
    let anon = anonymous_profile_id("device-1");
    assert_eq!(w.identity.resolve(&anon).await.expect("resolve"), anon);

    assert_eq!(w.identity.merge(&anon, K, &meta()).await, Ok(MergeOutcome::Merged));
    assert_eq!(w.identity.resolve(&anon).await.expect("resolve"), K);
    let customer = w.customers.load(K).await.expect("load").expect("customer");
    assert_eq!(customer.merged_profiles, vec![anon.clone()]);

    // Twice: a no-op, on both sides.
    assert_eq!(
        w.identity.merge(&anon, K, &meta()).await,
        Ok(MergeOutcome::AlreadyMerged)
    );
    let again = w.customers.load(K).await.expect("load").expect("customer");
    assert_eq!(again.version, customer.version, "nothing appended");

    // Into another known customer: refused, and nothing changes.
    let refused = w.identity.merge(&anon, L, &meta()).await;
    assert!(
        matches!(refused, Err(IdentityError::Refused(ref m)) if m.contains("two different known customers")),
        "{refused:?}"
    );
    assert_eq!(w.identity.resolve(&anon).await.expect("resolve"), K);
    assert!(w
        .customers
        .load(L)
        .await
        .expect("load")
        .expect("customer")
        .merged_profiles
        .is_empty());

    // Two known customers are never merged.
    assert!(matches!(
        w.identity.merge(L, K, &meta()).await,
        Err(IdentityError::Refused(_))
    ));
}

#[tokio::test]
async fn a_user_id_names_one_customer() {
    let w = world();
    register(&w, K, "k@example.com").await;
    assert_eq!(w.identity.customer_of_user("user-42").await.expect("read"), None);
    w.identity.link_user("user-42", K, &meta()).await.expect("linked");
    w.identity
        .link_user("user-42", K, &meta())
        .await
        .expect("again: a no-op");
    assert_eq!(
        w.identity.customer_of_user("user-42").await.expect("read").as_deref(),
        Some(K)
    );
    assert!(matches!(
        w.identity.link_user("user-42", L, &meta()).await,
        Err(IdentityError::Refused(_))
    ));
}

#[test]
fn the_first_claim_of_an_identity_stream_names_its_owner_for_good() {
    use crate::testing::AggregateScenario;
    let merge = |c: &str| ClaimCommand::MergeProfile { customer_id: c.into() };
    AggregateScenario::<IdentityStream>::new("identity-p1", ())
        .when(merge(K))
        .then_expect_events(&[IdentityEvent::AnonymousProfileMerged { customer_id: K.into() }]);
    AggregateScenario::<IdentityStream>::new("user-u1", ())
        .when(ClaimCommand::LinkUserId { customer_id: L.into() })
        .then_expect_events(&[IdentityEvent::UserIdLinked { customer_id: L.into() }]);
    let claimed = AggregateScenario::<IdentityStream>::new("identity-p1", ())
        .given(&[IdentityEvent::AnonymousProfileMerged { customer_id: K.into() }]);
    assert_eq!(claimed.state().map(|c| c.customer_id.as_str()), Some(K));
    claimed.when(merge(L)).then_expect_events(&[]);
}

#[test]
fn identity_errors_say_their_kind() {
    use crate::aggregate::AggregateError;
    use crate::failure::{Classify, FailureKind};
    assert_eq!(
        IdentityError::Refused("two customers".into()).kind(),
        FailureKind::Poison
    );
    assert_eq!(
        IdentityError::Store(StoreError::Unavailable("busy".into())).kind(),
        FailureKind::Retryable
    );
    let contended = IdentityError::Claim(AggregateError::Contended { attempts: 8 });
    assert_eq!(contended.kind(), FailureKind::Conflict);
    assert!(contended.is_retryable());
    assert_eq!(
        IdentityError::Customer(CommandError::Contended { attempts: 8 }).kind(),
        FailureKind::Conflict
    );
    let unreadable = IdentityError::Claim(AggregateError::Codec(crate::event::EventCodecError("bad".into())));
    assert!(!unreadable.is_retryable());
    assert_eq!(
        std::error::Error::source(&unreadable).map(|s| s.to_string()).as_deref(),
        Some("event codec: bad")
    );
}
