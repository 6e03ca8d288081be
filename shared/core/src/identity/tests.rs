use super::*;
use crate::clock::VirtualClock;
use crate::customer::Customer;
use crate::event::Actor;
use crate::testing::{registration, test_time, InMemoryEventStore};

struct World {
    customers: Arc<CustomerService>,
    identity: IdentityService,
}

fn world() -> World {
    let store = Arc::new(InMemoryEventStore::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let customers = Arc::new(CustomerService::new(store.clone(), clock));
    World {
        identity: IdentityService::new(store, customers.clone()),
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
    assert_ne!(user_stream("u1"), user_stream("u2"));
    assert!(!user_stream("ada@example.com").contains("ada"), "the user id is hashed");
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
