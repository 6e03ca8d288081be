use super::*;
use crate::clock::{Clock, VirtualClock};
use crate::testing::{registration, test_time, InMemoryEventStore, InMemoryScheduler};
use serde_json::json;

struct World {
    store: Arc<InMemoryEventStore>,
    clock: Arc<VirtualClock>,
    customers: Arc<CustomerService>,
    ingestion: Ingestion,
}

fn world() -> World {
    let store = Arc::new(InMemoryEventStore::default());
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let scheduler = Arc::new(InMemoryScheduler::default());
    let customers =
        Arc::new(CustomerService::new(store.clone(), clock.clone()).with_identifiers(crate::testing::identifiers()));
    let ingestion = Ingestion::new(
        store.clone(),
        customers.clone(),
        Arc::new(CartService::new(store.clone(), clock.clone(), scheduler.clone())),
        Arc::new(OrderService::new(store.clone(), clock.clone(), scheduler)),
        IngestSettings::default(),
    );
    World {
        store,
        clock,
        customers,
        ingestion,
    }
}

impl World {
    async fn send(&self, body: Value) -> Result<Accepted, IngestError> {
        let message = SegmentMessage::parse(&body, None, self.clock.now())?;
        self.ingestion.ingest(&Source::server("web"), &message).await
    }

    async fn count(&self) -> usize {
        self.store.read_all(None, 10_000).await.expect("read").events.len()
    }

    async fn register(&self, id: &str, email: &str) {
        let respond = |c: &Customer, _: &[EventEnvelope]| (201, json!({ "id": c.id }));
        self.customers
            .execute(
                id,
                &CustomerCommand::Register(registration(email, "Ada", "L", "UTC")),
                &CommandMeta::new(Actor::system("t")),
                None,
                &respond,
            )
            .await
            .expect("registered");
    }
}

const K: &str = "0190a000-0000-7000-8000-0000000000aa";

#[tokio::test]
async fn anonymous_activity_is_merged_by_identify_and_later_calls_follow() {
    let w = world();
    w.register(K, "ada@example.com").await;
    let anon = anonymous_profile_id("device-1");
    let page = json!({ "type": "page", "messageId": "m1", "anonymousId": "device-1", "name": "Home",
        "properties": { "url": "https://shop.example/" } });
    assert_eq!(w.send(page.clone()).await, Ok(Accepted::Stored { late: false }));
    let added = json!({ "type": "track", "messageId": "m2", "anonymousId": "device-1", "event": "Product Added",
        "properties": { "cart_id": "c1", "product_id": "lamp", "name": "Desk lamp", "price": 40, "currency": "EUR" } });
    assert_eq!(w.send(added).await, Ok(Accepted::Stored { late: false }));
    let cart = w
        .store
        .read_stream(&crate::commerce::stream_id(&derived_id("cart", "web", "c1")), 0, 10)
        .await
        .expect("read");
    assert_eq!(
        cart.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["CartCreated", "ItemAddedToCart"]
    );
    assert!(
        cart.iter().all(|e| e.customer_id.as_deref() == Some(anon.as_str())),
        "the anonymous profile's cart"
    );

    // A duplicate appends nothing.
    let before = w.count().await;
    assert_eq!(w.send(page).await, Ok(Accepted::Duplicate));
    assert_eq!(w.count().await, before);

    // identify by email merges the anonymous profile into the customer.
    let identify = json!({ "type": "identify", "messageId": "m3", "anonymousId": "device-1", "userId": "u-1",
        "traits": { "email": "ADA@example.com" } });
    assert_eq!(w.send(identify.clone()).await, Ok(Accepted::Stored { late: false }));
    assert_eq!(w.ingestion.identity().resolve(&anon).await.expect("resolve"), K);
    let customer = w.customers.load(K).await.expect("load").expect("customer");
    assert_eq!(customer.merged_profiles, vec![anon.clone()]);
    let after_identify = w.count().await;
    assert_eq!(
        w.send(identify).await,
        Ok(Accepted::Stored { late: false }),
        "identify again: accepted"
    );
    assert_eq!(w.count().await, after_identify, "and nothing appended");

    // Later anonymous calls land on the customer.
    let search = json!({ "type": "track", "messageId": "m4", "anonymousId": "device-1", "event": "Products Searched",
        "properties": { "query": "lamp" } });
    w.send(search).await.expect("accepted");
    let activity = w.store.read_stream(&activity_stream_id(K), 0, 10).await.expect("read");
    assert_eq!(activity.last().map(|e| e.event_type.as_str()), Some("SearchPerformed"));

    // The user id now names the customer: an order by user id is theirs.
    let order = json!({ "type": "track", "messageId": "m5", "userId": "u-1", "event": "Order Completed",
        "properties": { "order_id": "o-1", "currency": "EUR",
            "shipping_address": { "street": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE" },
            "products": [{ "product_id": "lamp", "name": "Desk lamp", "price": 40 }] } });
    assert_eq!(w.send(order.clone()).await, Ok(Accepted::Stored { late: false }));
    let placed = w
        .store
        .read_stream(&format!("order-{}", derived_id("order", "web", "o-1")), 0, 10)
        .await
        .expect("read");
    assert_eq!(placed.first().and_then(|e| e.customer_id.as_deref()), Some(K));
    let before = w.count().await;
    assert_eq!(w.send(order).await, Ok(Accepted::Duplicate));
    assert_eq!(w.count().await, before);
}

#[tokio::test]
async fn merges_that_would_join_two_known_customers_are_refused() {
    let w = world();
    w.register(K, "ada@example.com").await;
    let other = "0190a000-0000-7000-8000-0000000000bb";
    w.register(other, "bea@example.com").await;
    w.send(json!({ "type": "identify", "messageId": "i1", "anonymousId": "d", "userId": "ada", "traits": { "email": "ada@example.com" } }))
        .await
        .expect("first identify");
    let second = w
        .send(json!({ "type": "identify", "messageId": "i2", "anonymousId": "d", "userId": "bea", "traits": { "email": "bea@example.com" } }))
        .await;
    assert!(
        matches!(&second, Err(IngestError::Rejected(r)) if r.message.contains("two different known customers")),
        "{second:?}"
    );
    let alias = w
        .send(json!({ "type": "alias", "messageId": "a1", "previousId": "ada", "userId": "bea" }))
        .await;
    assert!(
        matches!(&alias, Err(IngestError::Rejected(r)) if r.field == "previousId"),
        "{alias:?}"
    );
    assert_eq!(
        w.customers
            .load(other)
            .await
            .expect("load")
            .expect("bea")
            .merged_profiles,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn identify_creates_a_customer_from_traits_and_late_events_are_flagged() {
    let w = world();
    w.send(json!({ "type": "identify", "messageId": "i1", "userId": "crm-user-7",
        "traits": { "email": "new@example.com", "firstName": "New", "lastName": "Person" },
        "context": { "ip": "203.0.113.5" } }))
        .await
        .expect("created");
    let customer = w
        .ingestion
        .identity()
        .customer_of_user("crm-user-7")
        .await
        .expect("read")
        .expect("linked");
    let c = w.customers.load(&customer).await.expect("load").expect("customer");
    assert_eq!((c.email.as_str(), c.first_name.as_str()), ("new@example.com", "New"));
    assert!(c.consents.is_empty(), "no consent is inferred");

    let old = (w.clock.now() - Duration::days(30)).to_rfc3339();
    assert_eq!(
        w.send(json!({ "type": "track", "messageId": "t1", "userId": "crm-user-7", "event": "Wishlist Shared", "timestamp": old })).await,
        Ok(Accepted::Stored { late: true })
    );
    let activity = w
        .store
        .read_stream(&activity_stream_id(&customer), 0, 10)
        .await
        .expect("read");
    assert_eq!(activity[0].event_type, "CustomEvent");
    assert_eq!(activity[0].data["late"], true);
    assert_eq!(
        activity[0].occurred_at.to_rfc3339(),
        old,
        "stored at the time it happened"
    );

    // A user id never identified: from a server, its own profile; from a
    // client (which sends its anonymous id), refused.
    let unknown = json!({ "type": "track", "messageId": "t2", "userId": "nobody", "event": "X" });
    assert_eq!(w.send(unknown.clone()).await, Ok(Accepted::Stored { late: false }));
    let profile = w.ingestion.identity().user_profile("nobody").expect("secret");
    assert_eq!(
        w.ingestion.identity().customer_of_user("nobody").await.expect("read"),
        Some(profile.clone())
    );
    assert_eq!(
        w.store
            .read_stream(&activity_stream_id(&profile), 0, 10)
            .await
            .expect("read")
            .len(),
        1
    );
    let from_client = w
        .send_as_client(json!({ "type": "track", "messageId": "t3", "userId": "stranger", "event": "X" }))
        .await;
    assert!(
        matches!(&from_client, Err(IngestError::Rejected(r)) if r.field == "userId"),
        "{from_client:?}"
    );
    // The email arrives: the profile's activity is the customer's.
    w.send(json!({ "type": "identify", "messageId": "i3", "userId": "nobody", "traits": { "email": "nobody@example.com" } }))
        .await
        .expect("identified");
    let customer = w
        .ingestion
        .identity()
        .customer_of_user("nobody")
        .await
        .expect("read")
        .expect("linked");
    assert_eq!(
        w.ingestion.identity().resolve(&profile).await.expect("resolve"),
        customer
    );
}

impl World {
    async fn customer_of(&self, user_id: &str) -> Option<String> {
        self.ingestion.identity().customer_of_user(user_id).await.expect("read")
    }

    async fn activity_of(&self, profile: &str) -> Vec<EventEnvelope> {
        self.store
            .read_stream(&activity_stream_id(profile), 0, 100)
            .await
            .expect("read")
    }
}

#[tokio::test]
async fn identify_with_only_an_email_creates_a_customer_and_later_tracks_land_on_them() {
    let w = world();
    let identify = json!({ "type": "identify", "messageId": "i1", "userId": "u-mail",
        "traits": { "email": "Only.Email@example.com" } });
    assert_eq!(w.send(identify.clone()).await, Ok(Accepted::Stored { late: false }));
    let customer = w.customer_of("u-mail").await.expect("linked to a customer");
    assert!(!is_anonymous_profile(&customer));
    let c = w.customers.load(&customer).await.expect("load").expect("customer");
    assert_eq!(
        (c.email.as_str(), c.first_name.as_str(), c.last_name.as_str()),
        ("only.email@example.com", "", "")
    );
    assert_eq!(c.source, RegistrationSource::Api);
    assert!(c.consents.is_empty(), "no consent is inferred from traits");
    assert_eq!(
        w.send(identify).await,
        Ok(Accepted::Stored { late: false }),
        "again: the same customer"
    );
    let types = w.event_types().await;
    assert_eq!(types.iter().filter(|t| *t == "CustomerRegistered").count(), 1);

    for (m, event) in [("t1", "Products Searched"), ("t2", "Wishlist Shared")] {
        let track = json!({ "type": "track", "messageId": m, "userId": "u-mail", "event": event,
            "properties": { "query": "lamp" } });
        assert_eq!(w.send(track).await, Ok(Accepted::Stored { late: false }));
    }
    let activity = w.activity_of(&customer).await;
    assert_eq!(
        activity.iter().map(|e| e.event_type.as_str()).collect::<Vec<_>>(),
        ["SearchPerformed", "CustomEvent"]
    );
    assert!(activity
        .iter()
        .all(|e| e.customer_id.as_deref() == Some(customer.as_str())));

    // Names sent later fill the profile.
    w.send(json!({ "type": "identify", "messageId": "i2", "userId": "u-mail",
        "traits": { "name": "Ada Lovelace" } }))
        .await
        .expect("names");
    let c = w.customers.load(&customer).await.expect("load").expect("customer");
    assert_eq!((c.first_name.as_str(), c.last_name.as_str()), ("Ada", "Lovelace"));
}

#[tokio::test]
async fn names_are_taken_in_every_form_segment_sends_them() {
    let cases = [
        (
            json!({ "firstName": "Ada", "lastName": "Lovelace" }),
            ("Ada", "Lovelace"),
        ),
        (
            json!({ "first_name": "Ada", "last_name": "Lovelace" }),
            ("Ada", "Lovelace"),
        ),
        (json!({ "name": "Ada King Lovelace" }), ("Ada", "King Lovelace")),
        (json!({ "name": "  Ada   Lovelace " }), ("Ada", "Lovelace")),
        (json!({ "name": "Ada" }), ("Ada", "")),
        (
            json!({ "firstName": "Augusta", "name": "Ada Lovelace" }),
            ("Augusta", "Lovelace"),
        ),
        (json!({ "lastName": "Byron", "name": "Ada Lovelace" }), ("Ada", "Byron")),
        (json!({ "firstName": " ", "name": "" }), ("", "")),
        (json!({}), ("", "")),
    ];
    let w = world();
    for (i, (traits, (first, last))) in cases.into_iter().enumerate() {
        let mut traits = traits;
        traits["email"] = json!(format!("names-{i}@example.com"));
        let user = format!("names-{i}");
        w.send(json!({ "type": "identify", "messageId": format!("n{i}"), "userId": user, "traits": traits }))
            .await
            .unwrap_or_else(|e| panic!("case {i}: {e:?}"));
        let id = w.customer_of(&user).await.expect("customer");
        let c = w.customers.load(&id).await.expect("load").expect("customer");
        assert_eq!(
            (c.first_name.as_str(), c.last_name.as_str()),
            (first, last),
            "case {i}: {traits}"
        );
    }
}

#[tokio::test]
async fn a_user_id_known_only_by_its_id_has_a_profile_merged_when_its_email_arrives() {
    let w = world();
    let profile = w.ingestion.identity().user_profile("u-solo").expect("secret");
    // A page from the browser, before the backend identifies the user.
    w.send(
        json!({ "type": "page", "messageId": "p0", "anonymousId": "dev-solo", "name": "Home",
        "properties": { "url": "https://shop.example/" } }),
    )
    .await
    .expect("page");

    // The backend identifies the user id without an email: a profile, no customer.
    let identify = json!({ "type": "identify", "messageId": "i1", "userId": "u-solo", "anonymousId": "dev-solo",
        "traits": { "plan": "pro", "firstName": "Ada" } });
    assert_eq!(w.send(identify.clone()).await, Ok(Accepted::Stored { late: false }));
    assert_eq!(w.customer_of("u-solo").await, Some(profile.clone()));
    assert!(!w.event_types().await.iter().any(|t| t == "CustomerRegistered"));
    let kept = w.activity_of(&profile).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].data["event"], UNVERIFIED_TRAITS_EVENT);
    assert_eq!(kept[0].data["properties"]["verified"], true);
    assert_eq!(kept[0].data["properties"]["traits"]["plan"], "pro");
    let before = w.count().await;
    assert_eq!(w.send(identify).await, Ok(Accepted::Duplicate));
    assert_eq!(w.count().await, before, "a repeat appends nothing");

    // Its activity (and its cart) land on the profile.
    let search = json!({ "type": "track", "messageId": "t1", "userId": "u-solo", "event": "Products Searched",
        "properties": { "query": "lamp" } });
    assert_eq!(w.send(search).await, Ok(Accepted::Stored { late: false }));
    let added = json!({ "type": "track", "messageId": "t2", "userId": "u-solo", "event": "Product Added",
        "properties": { "cart_id": "c-solo", "product_id": "lamp", "name": "Desk lamp", "price": 40, "currency": "EUR" } });
    assert_eq!(w.send(added).await, Ok(Accepted::Stored { late: false }));
    assert_eq!(w.activity_of(&profile).await.len(), 2);
    let cart = w
        .store
        .read_stream(&crate::commerce::stream_id(&derived_id("cart", "web", "c-solo")), 0, 10)
        .await
        .expect("read");
    assert_eq!(cart[0].customer_id.as_deref(), Some(profile.as_str()));

    // The email arrives: the customer, with the profile and the device merged in.
    w.send(json!({ "type": "identify", "messageId": "i2", "userId": "u-solo",
        "traits": { "email": "solo@example.com", "lastName": "Lovelace" } }))
        .await
        .expect("identified");
    let customer = w.customer_of("u-solo").await.expect("linked");
    assert!(!is_anonymous_profile(&customer));
    let identity = w.ingestion.identity();
    assert_eq!(identity.resolve(&profile).await.expect("resolve"), customer);
    assert_eq!(
        identity
            .resolve(&anonymous_profile_id("dev-solo"))
            .await
            .expect("resolve"),
        customer
    );
    let c = w.customers.load(&customer).await.expect("load").expect("customer");
    assert_eq!(c.email, "solo@example.com");
    assert_eq!(c.last_name, "Lovelace");
    assert_eq!(c.first_name, "Ada", "the name sent without the email");
    assert_eq!(
        c.merged_profiles,
        vec![profile.clone(), anonymous_profile_id("dev-solo")]
    );
    assert!(c.consents.is_empty());
    // Nothing of the profile's activity is lost, and later calls land on the customer.
    assert_eq!(w.activity_of(&profile).await.len(), 2);
    let later = json!({ "type": "track", "messageId": "t3", "userId": "u-solo", "event": "Products Searched",
        "properties": { "query": "desk" } });
    assert_eq!(w.send(later).await, Ok(Accepted::Stored { late: false }));
    assert_eq!(w.activity_of(&customer).await.len(), 1);
    let device = json!({ "type": "track", "messageId": "t4", "anonymousId": "dev-solo", "event": "Products Searched",
        "properties": { "query": "chair" } });
    assert_eq!(w.send(device).await, Ok(Accepted::Stored { late: false }));
    assert_eq!(w.activity_of(&customer).await.len(), 2);
    // Identified again with the same email: nothing changes hands.
    w.send(json!({ "type": "identify", "messageId": "i3", "userId": "u-solo",
        "traits": { "email": "solo@example.com" } }))
        .await
        .expect("again");
    assert_eq!(w.customer_of("u-solo").await, Some(customer));
}

#[tokio::test]
async fn a_user_profile_merges_into_a_customer_the_api_registered() {
    let w = world();
    w.register(K, "shop@example.com").await;
    w.send(json!({ "type": "identify", "messageId": "i1", "userId": "u-shop", "traits": {} }))
        .await
        .expect("profile");
    let profile = w.ingestion.identity().user_profile("u-shop").expect("secret");
    w.send(json!({ "type": "track", "messageId": "t1", "userId": "u-shop", "event": "Wishlist Shared" }))
        .await
        .expect("activity");
    // An alias needs a customer: refused, naming the field, nothing merged.
    let alias = w
        .send(json!({ "type": "alias", "messageId": "a1", "previousId": "dev-x", "userId": "u-shop" }))
        .await;
    assert!(
        matches!(&alias, Err(IngestError::Rejected(r)) if r.field == "userId"),
        "{alias:?}"
    );
    assert_eq!(
        w.ingestion
            .identity()
            .merged_into(&anonymous_profile_id("dev-x"))
            .await
            .expect("read"),
        None
    );
    w.send(json!({ "type": "identify", "messageId": "i2", "userId": "u-shop",
        "traits": { "email": "SHOP@example.com" } }))
        .await
        .expect("found by email");
    assert_eq!(w.customer_of("u-shop").await.as_deref(), Some(K));
    let c = w.customers.load(K).await.expect("load").expect("customer");
    assert_eq!(c.merged_profiles, vec![profile.clone()]);
    assert_eq!(c.first_name, "Ada", "the API's names stay");
    assert_eq!(
        w.activity_of(&profile).await.len(),
        2,
        "the profile's traits and activity kept"
    );
}

#[tokio::test]
async fn a_client_identify_of_a_user_known_only_by_its_id_creates_nothing() {
    let w = world();
    w.send(json!({ "type": "identify", "messageId": "s1", "userId": "u-c", "traits": { "plan": "pro" } }))
        .await
        .expect("server: profile");
    let profile = w.ingestion.identity().user_profile("u-c").expect("secret");
    // The browser: its anonymous id is linked, not merged into the profile.
    assert_eq!(
        w.send_as_client(
            json!({ "type": "identify", "messageId": "c1", "anonymousId": "dev-c", "userId": "u-c",
            "traits": { "email": "victim@example.com" } })
        )
        .await,
        Ok(Accepted::Stored { late: false })
    );
    assert_eq!(
        w.ingestion
            .identity()
            .merged_into(&anonymous_profile_id("dev-c"))
            .await
            .expect("read"),
        None
    );
    // Without an anonymous id, its traits are kept, unverified, on the profile.
    assert_eq!(
        w.send_as_client(json!({ "type": "identify", "messageId": "c2", "userId": "u-c",
            "traits": { "firstName": "Mallory" } }))
            .await,
        Ok(Accepted::Stored { late: false })
    );
    let kept = w.activity_of(&profile).await;
    assert_eq!(
        kept.last().map(|e| e.data["properties"]["verified"].clone()),
        Some(json!(false))
    );
    let types = w.event_types().await;
    assert!(!types.iter().any(|t| t == "CustomerRegistered"), "{types:?}");
    assert_eq!(w.customer_of("u-c").await, Some(profile.clone()));

    // The server names the customer: the browser's device follows.
    w.send(
        json!({ "type": "identify", "messageId": "s2", "userId": "u-c", "traits": { "email": "real@example.com" } }),
    )
    .await
    .expect("server identify");
    let customer = w.customer_of("u-c").await.expect("customer");
    let c = w.customers.load(&customer).await.expect("load").expect("customer");
    assert_eq!(c.email, "real@example.com");
    assert_eq!(c.first_name, "", "the browser's traits are never applied");
    assert_eq!(
        w.ingestion
            .identity()
            .resolve(&anonymous_profile_id("dev-c"))
            .await
            .expect("resolve"),
        customer
    );
}

impl World {
    async fn send_as_client(&self, body: Value) -> Result<Accepted, IngestError> {
        let message = SegmentMessage::parse(&body, None, self.clock.now())?;
        self.ingestion.ingest(&Source::client("browser"), &message).await
    }

    async fn event_types(&self) -> Vec<String> {
        let all = self.store.read_all(None, 10_000).await.expect("read").events;
        all.into_iter().map(|e| e.event_type).collect()
    }
}

#[tokio::test]
async fn a_client_identify_never_finds_creates_or_changes_a_customer() {
    let w = world();
    w.register(K, "victim@example.com").await;
    let victim_stream = crate::customer::stream_id(K);
    let victim_before = w.store.read_stream(&victim_stream, 0, 100).await.expect("read");

    // The victim's address under the attacker's own user id.
    let hostile = json!({ "type": "identify", "messageId": "h1", "anonymousId": "attacker-device",
        "userId": "attacker", "traits": { "email": "VICTIM@example.com", "firstName": "Mallory", "phone": "+447700900999" } });
    assert_eq!(w.send_as_client(hostile).await, Ok(Accepted::Stored { late: false }));
    // An address nobody has.
    let unknown = json!({ "type": "identify", "messageId": "h2", "anonymousId": "attacker-device",
        "userId": "someone-new", "traits": { "email": "new-person@example.com", "firstName": "Eve" } });
    assert_eq!(w.send_as_client(unknown).await, Ok(Accepted::Stored { late: false }));

    let after = w.store.read_stream(&victim_stream, 0, 100).await.expect("read");
    assert_eq!(after.len(), victim_before.len(), "nothing appended to the victim");
    let victim = w.customers.load(K).await.expect("load").expect("victim");
    assert_eq!(victim.first_name, "Ada");
    assert!(victim.merged_profiles.is_empty());
    for user in ["attacker", "someone-new"] {
        assert_eq!(
            w.ingestion.identity().customer_of_user(user).await.expect("read"),
            None,
            "{user} is linked to no customer"
        );
    }
    let types = w.event_types().await;
    assert_eq!(
        types.iter().filter(|t| *t == "CustomerRegistered").count(),
        1,
        "only the victim was ever registered: {types:?}"
    );
    assert!(!types
        .iter()
        .any(|t| t == "UserIdLinked" || t == "AnonymousProfileMerged"));

    // The traits are kept, unverified, on the anonymous profile's activity.
    let anon = anonymous_profile_id("attacker-device");
    let kept = w
        .store
        .read_stream(&activity_stream_id(&anon), 0, 10)
        .await
        .expect("read");
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].event_type, "CustomEvent");
    assert_eq!(kept[0].data["event"], UNVERIFIED_TRAITS_EVENT);
    assert_eq!(kept[0].data["properties"]["verified"], false);
    assert_eq!(kept[0].data["properties"]["user_id"], "attacker");
    assert_eq!(kept[0].data["properties"]["traits"]["firstName"], "Mallory");

    // The same message again is a duplicate, appending nothing.
    let before = w.count().await;
    let again = json!({ "type": "identify", "messageId": "h1", "anonymousId": "attacker-device",
        "userId": "attacker", "traits": { "email": "victim@example.com" } });
    assert_eq!(w.send_as_client(again).await, Ok(Accepted::Duplicate));
    assert_eq!(w.count().await, before);

    // Without an anonymous id, an unknown user id has nothing to link.
    let bare = w
        .send_as_client(json!({ "type": "identify", "messageId": "h3", "userId": "x", "traits": { "email": "victim@example.com" } }))
        .await;
    assert!(
        matches!(&bare, Err(IngestError::Rejected(r)) if r.field == "anonymousId"),
        "{bare:?}"
    );
}

#[tokio::test]
async fn a_client_order_completed_is_activity_and_places_no_order() {
    let w = world();
    w.register(K, "ada@example.com").await;
    let order = json!({ "type": "track", "messageId": "o1", "userId": K, "event": "Order Completed",
        "properties": { "order_id": "o-1", "currency": "EUR",
            "shipping_address": { "street": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE" },
            "products": [{ "product_id": "lamp", "name": "Desk lamp", "price": 40 }] } });
    assert_eq!(
        w.send_as_client(order.clone()).await,
        Ok(Accepted::Stored { late: false })
    );
    let placed = w
        .store
        .read_stream(&format!("order-{}", derived_id("order", "browser", "o-1")), 0, 10)
        .await
        .expect("read");
    assert!(placed.is_empty(), "no order stream: {placed:?}");
    assert!(!w.event_types().await.iter().any(|t| t == "OrderPlaced"));
    let activity = w.store.read_stream(&activity_stream_id(K), 0, 10).await.expect("read");
    assert_eq!(activity.len(), 1);
    assert_eq!(activity[0].event_type, "CustomEvent");
    assert_eq!(activity[0].data["event"], "Order Completed");
    assert_eq!(activity[0].data["properties"]["order_id"], "o-1");
    // The same call from a server source places the order.
    let mut from_server = order;
    from_server["messageId"] = json!("o2");
    assert_eq!(w.send(from_server).await, Ok(Accepted::Stored { late: false }));
    assert!(w.event_types().await.iter().any(|t| t == "OrderPlaced"));
}

#[tokio::test]
async fn a_client_linked_anonymous_id_follows_when_a_server_names_the_customer() {
    let w = world();
    // The browser (two devices) knows the user id before the CRM does.
    for (m, device) in [("p1", "phone"), ("p2", "laptop")] {
        w.send_as_client(
            json!({ "type": "page", "messageId": m, "anonymousId": device, "name": "Home",
            "properties": { "url": "https://shop.example/" } }),
        )
        .await
        .expect("page");
        w.send_as_client(
            json!({ "type": "identify", "messageId": format!("i-{m}"), "anonymousId": device,
            "userId": "shop-user-1", "traits": { "email": "ada@example.com" } }),
        )
        .await
        .expect("identify");
    }
    // The same pair again takes no second link.
    w.send_as_client(
        json!({ "type": "identify", "messageId": "i-again", "anonymousId": "phone", "userId": "shop-user-1" }),
    )
    .await
    .expect("identify");
    assert_eq!(
        w.store
            .reservation_owner(&pending_link_key(&crate::testing::identifiers(), "shop-user-1", 2))
            .await
            .expect("read"),
        None
    );
    assert_eq!(
        w.ingestion
            .identity()
            .customer_of_user("shop-user-1")
            .await
            .expect("read"),
        None
    );

    // The shop's backend identifies the user: both devices follow.
    w.send(json!({ "type": "identify", "messageId": "s1", "userId": "shop-user-1",
        "traits": { "email": "ada@example.com", "firstName": "Ada", "lastName": "L" } }))
        .await
        .expect("server identify");
    let customer = w
        .ingestion
        .identity()
        .customer_of_user("shop-user-1")
        .await
        .expect("read")
        .expect("linked");
    for device in ["phone", "laptop"] {
        assert_eq!(
            w.ingestion
                .identity()
                .resolve(&anonymous_profile_id(device))
                .await
                .expect("resolve"),
            customer,
            "{device}'s activity follows"
        );
    }
    let c = w.customers.load(&customer).await.expect("load").expect("customer");
    assert_eq!(c.merged_profiles.len(), 2);

    // Now known: a client identify from a new device merges it directly,
    // and its traits still change nothing.
    w.send_as_client(
        json!({ "type": "identify", "messageId": "i-tablet", "anonymousId": "tablet",
        "userId": "shop-user-1", "traits": { "firstName": "Someone-else" } }),
    )
    .await
    .expect("identify");
    assert_eq!(
        w.ingestion
            .identity()
            .resolve(&anonymous_profile_id("tablet"))
            .await
            .expect("resolve"),
        customer
    );
    let c = w.customers.load(&customer).await.expect("load").expect("customer");
    assert_eq!(c.first_name, "Ada");
    let activity = w
        .store
        .read_stream(&activity_stream_id(&customer), 0, 10)
        .await
        .expect("read");
    assert_eq!(
        activity.last().map(|e| e.data["event"].clone()),
        Some(json!(UNVERIFIED_TRAITS_EVENT))
    );
}

#[tokio::test]
async fn names_sent_before_the_email_are_the_customers() {
    let w = world();
    let identify = |m: &str, user: &str, traits: Value| json!({ "type": "identify", "messageId": m, "userId": user, "traits": traits });
    // Sent without an email, in two parts; an older one arriving late; and
    // a browser's unverified traits on the same profile.
    w.send(identify("a1", "u-names", json!({ "firstName": "Ada" })))
        .await
        .expect("first name");
    w.send(identify(
        "a2",
        "u-names",
        json!({ "last_name": "Lovelace", "plan": "pro" }),
    ))
    .await
    .expect("last name");
    let mut older = identify("a3", "u-names", json!({ "name": "Augusta Byron" }));
    older["timestamp"] = json!((w.clock.now() - Duration::hours(1)).to_rfc3339());
    w.send(older).await.expect("older names");
    w.send_as_client(identify("a4", "u-names", json!({ "firstName": "Mallory" })))
        .await
        .expect("unverified");
    // The email arrives without names: the customer is registered with them.
    w.send(identify("a5", "u-names", json!({ "email": "names@example.com" })))
        .await
        .expect("customer");
    let customer = w.customer_of("u-names").await.expect("linked");
    assert!(!is_anonymous_profile(&customer));
    let c = w.customers.load(&customer).await.expect("load").expect("customer");
    assert_eq!((c.first_name.as_str(), c.last_name.as_str()), ("Ada", "Lovelace"));
    let types = w.event_types().await;
    assert!(
        !types.iter().any(|t| t == "CustomerNameChanged"),
        "registered with the names, not changed after: {types:?}"
    );

    // Names sent with the email win over those sent before it.
    w.send(identify(
        "b1",
        "u-wins",
        json!({ "firstName": "Ada", "lastName": "King" }),
    ))
    .await
    .expect("profile");
    w.send(identify(
        "b2",
        "u-wins",
        json!({ "email": "wins@example.com", "firstName": "Augusta" }),
    ))
    .await
    .expect("customer");
    let id = w.customer_of("u-wins").await.expect("linked");
    let c = w.customers.load(&id).await.expect("load").expect("customer");
    assert_eq!((c.first_name.as_str(), c.last_name.as_str()), ("Augusta", "King"));

    // A customer found by the address: names it lacks are filled, names it
    // has are kept.
    w.send(identify("c1", "u-nameless", json!({ "email": "found@example.com" })))
        .await
        .expect("nameless customer");
    w.send(identify(
        "c2",
        "u-found",
        json!({ "firstName": "Grace", "lastName": "Hopper" }),
    ))
    .await
    .expect("profile");
    w.send(identify("c3", "u-found", json!({ "email": "found@example.com" })))
        .await
        .expect("found by email");
    let found = w.customer_of("u-found").await.expect("linked");
    assert_eq!(w.customer_of("u-nameless").await.as_ref(), Some(&found));
    let c = w.customers.load(&found).await.expect("load").expect("customer");
    assert_eq!((c.first_name.as_str(), c.last_name.as_str()), ("Grace", "Hopper"));
    w.register(K, "shop-names@example.com").await;
    w.send(identify("d1", "u-shop-names", json!({ "name": "Bob Builder" })))
        .await
        .expect("profile");
    w.send(identify(
        "d2",
        "u-shop-names",
        json!({ "email": "shop-names@example.com" }),
    ))
    .await
    .expect("found by email");
    assert_eq!(w.customer_of("u-shop-names").await.as_deref(), Some(K));
    let c = w.customers.load(K).await.expect("load").expect("customer");
    assert_eq!(
        (c.first_name.as_str(), c.last_name.as_str()),
        ("Ada", "L"),
        "the API's names stay"
    );
}

/// An event store that counts how receipts are read and written, and may
/// answer every batch read of receipts with none (as if each was written
/// just after the read).
struct Observed {
    inner: Arc<InMemoryEventStore>,
    stale_receipts: bool,
    receipt_reads: std::sync::atomic::AtomicUsize,
    grouped_appends: std::sync::atomic::AtomicUsize,
}

impl Observed {
    fn new(stale_receipts: bool) -> Arc<Self> {
        Arc::new(Observed {
            inner: Arc::new(InMemoryEventStore::default()),
            stale_receipts,
            receipt_reads: Default::default(),
            grouped_appends: Default::default(),
        })
    }
}

#[async_trait::async_trait]
impl EventStore for Observed {
    async fn load(&self, stream_id: &str) -> Result<crate::ports::LoadedStream, StoreError> {
        self.inner.load(stream_id).await
    }
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner.read_stream(stream_id, after, limit).await
    }
    async fn append(&self, request: AppendRequest) -> Result<crate::ports::Appended, AppendError> {
        self.inner.append(request).await
    }
    async fn append_with_receipts(
        &self,
        request: AppendRequest,
        receipts: Vec<CommandReceipt>,
    ) -> Result<crate::ports::Appended, AppendError> {
        self.grouped_appends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.append_with_receipts(request, receipts).await
    }
    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        self.inner.receipt(key).await
    }
    async fn receipts(&self, keys: &[String]) -> Result<Vec<Option<CommandReceipt>>, StoreError> {
        self.receipt_reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.stale_receipts {
            return Ok(vec![None; keys.len()]);
        }
        self.inner.receipts(keys).await
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

/// Ingestion over `store`, with customer `K` registered (ada@example.com).
async fn ingestion_over(store: Arc<dyn EventStore>) -> Ingestion {
    let clock = Arc::new(VirtualClock::starting_at(test_time()));
    let scheduler = Arc::new(InMemoryScheduler::default());
    let customers =
        Arc::new(CustomerService::new(store.clone(), clock.clone()).with_identifiers(crate::testing::identifiers()));
    let respond = |c: &Customer, _: &[EventEnvelope]| (201, json!({ "id": c.id }));
    customers
        .execute(
            K,
            &CustomerCommand::Register(registration("ada@example.com", "Ada", "L", "UTC")),
            &CommandMeta::new(Actor::system("t")),
            None,
            &respond,
        )
        .await
        .expect("registered");
    Ingestion::new(
        store.clone(),
        customers,
        Arc::new(CartService::new(store.clone(), clock.clone(), scheduler.clone())),
        Arc::new(OrderService::new(store, clock, scheduler)),
        IngestSettings::default(),
    )
}

/// One shopper's visit: anonymous pages and views, a refused view, a
/// message without a type, a message id sent twice, a product added, an
/// identify that merges the device into customer `K`, 52 pages as `K`, and
/// a view taken before the batch.
fn one_shopper() -> Vec<Value> {
    let page = |id: &str, who: Value| {
        let mut m = json!({ "type": "page", "messageId": id, "name": "Shop",
            "properties": { "url": format!("https://shop.example/{id}") } });
        m.as_object_mut()
            .expect("object")
            .extend(who.as_object().expect("object").clone());
        m
    };
    let device = json!({ "anonymousId": "device-9" });
    let known = json!({ "userId": "u-9", "anonymousId": "device-9" });
    let mut messages = vec![
        page("m1", device.clone()),
        json!({ "type": "track", "messageId": "m2", "anonymousId": "device-9", "event": "Product Viewed",
            "properties": { "product_id": "lamp", "price": 40 } }),
        json!({ "type": "track", "messageId": "m3", "anonymousId": "device-9", "event": "Product Viewed",
            "properties": { "product_id": "lamp", "price": "ada@example.com" } }),
        json!({ "messageId": "m4", "anonymousId": "device-9" }),
        page("m1", device.clone()),
        json!({ "type": "track", "messageId": "m5", "anonymousId": "device-9", "event": "Product Added",
            "properties": { "cart_id": "c9", "product_id": "lamp", "name": "Desk lamp", "price": 40, "currency": "EUR" } }),
        page("m6", device),
        json!({ "type": "identify", "messageId": "m7", "userId": "u-9", "anonymousId": "device-9",
            "traits": { "email": "ada@example.com" } }),
    ];
    messages.extend((8..60).map(|i| page(&format!("m{i}"), known.clone())));
    messages.push(
        json!({ "type": "track", "messageId": "m60", "userId": "u-9", "event": "Product Viewed",
        "properties": { "product_id": "lamp" } }),
    );
    messages
}

#[tokio::test]
async fn a_shopper_s_messages_taken_together_answer_as_taken_one_by_one() {
    let web = Source::server("web");
    let now = test_time();
    let messages = one_shopper();
    let taken_before = messages.last().expect("m60").clone();

    let one_by_one = ingestion_over(Arc::new(InMemoryEventStore::default()) as Arc<dyn EventStore>).await;
    let store = Observed::new(false);
    let together = ingestion_over(store.clone()).await;
    for ingestion in [&one_by_one, &together] {
        assert_eq!(
            ingestion.take_in_batch(&web, &taken_before, now, None).await,
            Ok(Accepted::Stored { late: false })
        );
    }
    let mut expected = Vec::new();
    for m in &messages {
        expected.push(one_by_one.take_in_batch(&web, m, now, None).await);
    }
    let raws: Vec<&Value> = messages.iter().collect();
    let outcomes = together.take_shopper(&web, &raws, now, None).await;
    assert_eq!(outcomes, expected);
    assert!(
        matches!(outcomes[2], Err(IngestError::Rejected(_))),
        "{:?}",
        outcomes[2]
    );
    assert!(
        matches!(outcomes[3], Err(IngestError::Rejected(_))),
        "{:?}",
        outcomes[3]
    );
    assert_eq!(outcomes[4], Ok(Accepted::Duplicate), "m1 again");
    assert_eq!(outcomes[60], Ok(Accepted::Duplicate), "taken before the batch");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Ok(Accepted::Stored { .. })))
            .count(),
        57
    );

    // The same activity on the same streams, in the same order.
    for profile in [K.to_string(), anonymous_profile_id("device-9")] {
        let stream = activity_stream_id(&profile);
        let read = |events: Vec<EventEnvelope>| -> Vec<(String, Value)> {
            events.into_iter().map(|e| (e.event_type, e.data)).collect()
        };
        let a = read(one_by_one.store.read_stream(&stream, 0, 1000).await.expect("read"));
        let b = read(together.store.read_stream(&stream, 0, 1000).await.expect("read"));
        assert_eq!(a, b, "{stream}");
        assert!(!a.is_empty(), "{stream}");
    }
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(store.receipt_reads.load(SeqCst), 1, "the receipts read at once");
    // The page and the view before m1 comes again; m6 alone (written as
    // before); then 52 pages as K in runs of at most 45.
    assert_eq!(store.grouped_appends.load(SeqCst), 3);
}

#[tokio::test]
async fn a_receipt_written_after_the_read_makes_only_its_message_a_duplicate() {
    let web = Source::server("web");
    let now = test_time();
    let store = Observed::new(true);
    let ingestion = ingestion_over(store.clone()).await;
    let page = |id: &str| {
        json!({ "type": "page", "messageId": id, "anonymousId": "device-3", "name": "Shop",
            "properties": { "url": "https://shop.example/" } })
    };
    assert_eq!(
        ingestion.take_in_batch(&web, &page("p2"), now, None).await,
        Ok(Accepted::Stored { late: false })
    );
    let messages = [page("p1"), page("p2"), page("p3")];
    let raws: Vec<&Value> = messages.iter().collect();
    assert_eq!(
        ingestion.take_shopper(&web, &raws, now, None).await,
        vec![
            Ok(Accepted::Stored { late: false }),
            Ok(Accepted::Duplicate),
            Ok(Accepted::Stored { late: false })
        ]
    );
    let stream = activity_stream_id(&anonymous_profile_id("device-3"));
    assert_eq!(store.read_stream(&stream, 0, 10).await.expect("read").len(), 3);
    assert_eq!(store.grouped_appends.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_failure_to_ingest_says_its_kind_and_keeps_its_cause() {
    use crate::failure::{Classify, FailureKind};
    let unavailable = IngestError::from(StoreError::Unavailable("throttled".into()));
    assert_eq!(unavailable.kind(), FailureKind::Retryable);
    assert_eq!(unavailable.to_string(), "try again: event store unavailable: throttled");
    assert_eq!(unavailable.reason(), "event store unavailable: throttled");
    let IngestError::Retry(failure) = &unavailable else {
        panic!("{unavailable:?}");
    };
    assert_eq!(
        failure.cause_as::<StoreError>(),
        Some(&StoreError::Unavailable("throttled".into()))
    );
    let answer = outcome_json(0, Some("m0"), &Err(unavailable.clone()));
    assert_eq!(answer["status"], "retry");
    assert_eq!(answer["reason"], "event store unavailable: throttled");
    assert_eq!(
        IngestError::conflict("the email address changed hands").kind(),
        FailureKind::Conflict
    );
    let refused = IngestError::Rejected(Rejection::new("userId", "is required"));
    assert_eq!(refused.kind(), FailureKind::Poison);
    assert_eq!(outcome_json(1, None, &Err(refused))["status"], "rejected");
}
