//! The schema registry's tests. `UPDATE_SCHEMAS=1 cargo test -p crm-core
//! schemas` rewrites `schemas/events/` and the generated part of
//! `template.yaml`; without it, a stale file fails.

use super::custom::{CustomEventSchemas, CustomSchemaError, SchemaCheckError};
use super::history::{consent_granted_v1_to_v2, ConsentGrantedV1, HISTORY};
use super::*;
use crate::clock::SystemClock;
use crate::consent::{Channel, ConsentMethod, GdprContext, LegalBasis, Purpose};
use crate::customer::CustomerEvent;
use crate::event::{envelopes, upcast, Actor, CommandMeta, Upcaster};
use crate::ports::EventStore;
use crate::testing::{raw_event, InMemoryEventStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn updating() -> bool {
    std::env::var("UPDATE_SCHEMAS").is_ok_and(|v| v == "1")
}

const HOW: &str = "run `UPDATE_SCHEMAS=1 cargo test -p crm-core schemas` and commit the result";

fn all() -> Vec<EventSchema> {
    event_schemas().expect("the event types generate their schemas")
}

fn pretty(v: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).expect("serialises"))
}

/// Every `.json` under `dir`, relative to the repository root.
fn files_under(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            if let Ok(rel) = path.strip_prefix(repo()) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
}

#[test]
fn schemas_files_are_current() {
    let schemas = all();
    let mut expected: BTreeMap<String, String> = schemas.iter().map(|s| (s.path(), pretty(&s.schema))).collect();
    expected.insert("schemas/events/index.json".into(), pretty(&index(&schemas)));
    let mut present = Vec::new();
    files_under(&repo().join("schemas/events"), &mut present);
    if updating() {
        for stale in present.iter().filter(|p| !expected.contains_key(*p)) {
            std::fs::remove_file(repo().join(stale)).expect("remove a stale schema");
        }
        for (path, text) in &expected {
            let file = repo().join(path);
            std::fs::create_dir_all(file.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(&file, text).expect("write the schema");
        }
        return;
    }
    let mut problems = Vec::new();
    for (path, text) in &expected {
        match std::fs::read_to_string(repo().join(path)) {
            Ok(found) if &found == text => {}
            Ok(_) => problems.push(format!("{path} differs from the types")),
            Err(_) => problems.push(format!("{path} is missing")),
        }
    }
    for stale in present.iter().filter(|p| !expected.contains_key(*p)) {
        problems.push(format!("{stale} is no event type's schema"));
    }
    assert!(problems.is_empty(), "{}\n{HOW}", problems.join("\n"));
}

#[test]
fn schemas_template_publishes_exactly_the_latest_schemas() {
    let schemas = all();
    let block = template_block(&schemas).expect("block");
    let path = repo().join("template.yaml");
    let template = std::fs::read_to_string(&path).expect("read template.yaml");
    let wanted = replace_template_block(&template, &block).expect("markers");
    if updating() {
        if wanted != template {
            std::fs::write(&path, &wanted).expect("write template.yaml");
        }
        return;
    }
    assert!(wanted == template, "template.yaml's event schemas are stale: {HOW}");

    // And, read as CloudFormation: one schema per event type, its latest version.
    let doc: serde_yaml::Value = serde_yaml::from_str(&template).expect("template.yaml is YAML");
    let resources = doc
        .get("Resources")
        .and_then(serde_yaml::Value::as_mapping)
        .expect("Resources");
    let mut published = BTreeMap::new();
    for (_, r) in resources {
        if r.get("Type").and_then(serde_yaml::Value::as_str) != Some("AWS::EventSchemas::Schema") {
            continue;
        }
        let props = r.get("Properties").expect("Properties");
        assert_eq!(
            props.get("Type").and_then(serde_yaml::Value::as_str),
            Some("JSONSchemaDraft4")
        );
        let name = props
            .get("SchemaName")
            .and_then(serde_yaml::Value::as_str)
            .expect("SchemaName");
        let content = props
            .get("Content")
            .and_then(serde_yaml::Value::as_str)
            .expect("Content");
        let content: Value = serde_json::from_str(content).expect("Content is JSON");
        assert!(published.insert(name.to_string(), content).is_none(), "{name} twice");
    }
    let latest: BTreeMap<String, Value> = schemas
        .iter()
        .filter(|s| s.latest)
        .map(|s| (s.registry_name(), s.schema.clone()))
        .collect();
    assert_eq!(
        published.keys().collect::<Vec<_>>(),
        latest.keys().collect::<Vec<_>>(),
        "the registry lists exactly the event types"
    );
    assert!(published == latest, "every published schema is the latest version");
}

#[test]
fn schemas_cover_every_event_type_and_are_draft4() {
    let schemas = all();
    let types: BTreeSet<&str> = schemas.iter().map(|s| s.event_type.as_str()).collect();
    for list in [
        crate::customer::CUSTOMER_EVENT_TYPES,
        crate::customer::activity::ACTIVITY_EVENT_TYPES,
        crate::messaging::events::MESSAGE_EVENT_TYPES,
        crate::segments::SEGMENT_EVENT_TYPES,
    ] {
        for t in list {
            assert!(types.contains(t), "{t} has no schema");
        }
    }
    for t in [
        "CartAbandoned",
        "OrderPlaced",
        "PaymentFailed",
        "JourneyStarted",
        "MessageRequested",
        "CampaignPublished",
        "CampaignRegistered",
        "ActivityDaySummarized",
        "CustomEventSchemaRegistered",
    ] {
        assert!(types.contains(t), "{t} has no schema");
    }
    let draft4 = jsonschema::draft4::meta::validator();
    for s in &schemas {
        assert_eq!(s.schema["$schema"], DRAFT4);
        assert!(
            draft4.is_valid(&s.schema),
            "{} v{} is not a valid draft-4 schema",
            s.event_type,
            s.version
        );
        let text = s.schema.to_string();
        assert!(!text.contains("\"const\""), "{}: const is not draft 4", s.event_type);
        assert!(
            text.len() < 100_000,
            "{}: EventBridge takes at most 100 KB",
            s.event_type
        );
    }
}

#[test]
fn schemas_every_version_bump_has_a_past_schema_and_an_upcaster() {
    let schemas = all();
    let chains: Vec<&[Upcaster]> = vec![
        <CustomerEvent as DomainEvent>::upcasters(),
        <crate::customer::activity::ActivityEvent as DomainEvent>::upcasters(),
        <crate::commerce::OrderEvent as DomainEvent>::upcasters(),
        <crate::commerce::CartEvent as DomainEvent>::upcasters(),
        <crate::journey::instance::JourneyEvent as DomainEvent>::upcasters(),
        <crate::messaging::events::MessageEvent as DomainEvent>::upcasters(),
        <crate::segments::SegmentEvent as DomainEvent>::upcasters(),
        <crate::retention::RetentionEvent as DomainEvent>::upcasters(),
    ];
    for s in schemas.iter().filter(|s| s.latest) {
        for v in 1..s.version {
            assert!(
                schemas.iter().any(|o| o.event_type == s.event_type && o.version == v),
                "{} v{v} has no schema (keep its type in schemas::history)",
                s.event_type
            );
            assert!(
                chains
                    .iter()
                    .flat_map(|c| c.iter())
                    .any(|u| u.event_type == s.event_type && u.from == v),
                "{} has no upcaster from v{v}",
                s.event_type
            );
        }
    }
    for p in HISTORY {
        assert!(schemas
            .iter()
            .any(|s| s.event_type == p.event_type && s.latest && s.version > p.version));
    }
    // Both ConsentGranted files exist, as the seed's example wants (unless
    // another test is writing them right now).
    for v in [1, 2].into_iter().filter(|_| !updating()) {
        assert!(
            repo()
                .join(format!("schemas/events/ConsentGranted/v{v}.json"))
                .is_file(),
            "ConsentGranted v{v}.json"
        );
    }
}

#[test]
fn schemas_draft4_turns_const_and_boolean_schemas() {
    let v = json!({
        "type": "object",
        "properties": { "t": { "const": "X" }, "any": true, "none": false },
        "additionalProperties": false,
        "anyOf": [true, { "items": { "const": 1 } }],
        "default": true
    });
    assert_eq!(
        to_draft4(&v),
        json!({
            "type": "object",
            "properties": { "t": { "enum": ["X"] }, "any": {}, "none": { "not": {} } },
            "additionalProperties": false,
            "anyOf": [{}, { "items": { "enum": [1] } }],
            "default": true
        })
    );
}

fn validator_of(schemas: &[EventSchema], event_type: &str, version: u32) -> jsonschema::Validator {
    let s = schemas
        .iter()
        .find(|s| s.event_type == event_type && s.version == version)
        .unwrap_or_else(|| panic!("{event_type} v{version} has a schema"));
    jsonschema::validator_for(&s.schema).expect("compiles")
}

fn check(schemas: &[EventSchema], e: &crate::event::EventEnvelope) -> Vec<String> {
    let value = serde_json::to_value(e).expect("serialises");
    let validator = validator_of(schemas, &e.event_type, e.schema_version);
    validator
        .iter_errors(&value)
        .map(|err| {
            format!(
                "{} v{} {}: {err}",
                e.event_type,
                e.schema_version,
                err.instance_path().as_str()
            )
        })
        .collect()
}

/// Real events, through the services and the in-memory store, each checked
/// against the schema of its type and version.
#[tokio::test]
async fn schemas_accept_the_events_the_services_store() {
    use crate::commerce::{CartCommand, CartService};
    use crate::customer::{CustomerCommand, CustomerService};
    use crate::testing::{registration, InMemoryScheduler};
    let store = Arc::new(InMemoryEventStore::default());
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(SystemClock);
    let customers = CustomerService::new(store.clone(), clock.clone()).with_identifiers(crate::testing::identifiers());
    let respond = |_: &crate::customer::Customer, _: &[crate::event::EventEnvelope]| (200, json!({}));
    let meta = || CommandMeta::new(Actor::api("tester"));
    let commands: Vec<CustomerCommand> = vec![
        CustomerCommand::Register(registration("ada@example.com", "Ada", "Lovelace", "Europe/London")),
        CustomerCommand::UpdateProfile(
            serde_json::from_value(json!({
                "last_name": "King",
                "phone": "+441234567890",
                "date_of_birth": "1985-12-10",
                "address": { "line1": "12 St James's Square", "city": "London", "postal_code": "SW1Y 4JH", "country": "GB" }
            }))
            .expect("profile"),
        ),
        CustomerCommand::GrantConsent(
            serde_json::from_value(json!({ "purpose": "marketing", "channel": "sms", "method": "preference-centre" }))
                .expect("grant"),
        ),
        CustomerCommand::RevokeConsent(
            serde_json::from_value(json!({ "purpose": "marketing", "channel": "sms", "reason": "too many" }))
                .expect("revoke"),
        ),
        CustomerCommand::UpdatePreferences(
            serde_json::from_value(json!({ "email_frequency": "daily", "timezone": "Europe/London",
                "quiet_hours": { "start": "21:00", "end": "08:00" } }))
            .expect("preferences"),
        ),
        CustomerCommand::Deactivate(
            serde_json::from_value(json!({ "reason": "customer-request", "notes": "by phone" })).expect("deactivate"),
        ),
        CustomerCommand::Reactivate,
    ];
    for c in &commands {
        customers
            .execute("c1", c, &meta(), None, &respond)
            .await
            .unwrap_or_else(|e| panic!("{c:?}: {e:?}"));
    }
    let carts = CartService::new(store.clone(), clock.clone(), Arc::new(InMemoryScheduler::default()));
    let cart_view = |_: &crate::commerce::Cart, _: &[crate::event::EventEnvelope]| (200, json!({}));
    let create: crate::commerce::CreateCart =
        serde_json::from_value(json!({ "customer_id": "c1", "currency": "EUR" })).expect("create");
    let add: crate::commerce::AddItem = serde_json::from_value(
        json!({ "product_id": "sku-1", "name": "Cup", "quantity": 2, "unit_price_minor": 1250 }),
    )
    .expect("add");
    for command in [
        CartCommand::Create(create),
        CartCommand::AddItem(add),
        CartCommand::StartCheckout,
    ] {
        carts
            .execute("k1", &command, &meta(), None, &cart_view)
            .await
            .unwrap_or_else(|e| panic!("{command:?}: {e:?}"));
    }
    CustomEventSchemas::new(store.clone())
        .with_clock(clock)
        .register("Signed Up", json!({ "type": "object" }), Actor::api("tester"))
        .await
        .expect("register");

    let schemas = all();
    let page = store.read_all(None, usize::MAX).await.expect("read all");
    assert!(page.events.len() >= 10, "{} events", page.events.len());
    let types: BTreeSet<&str> = page.events.iter().map(|e| e.event_type.as_str()).collect();
    for t in [
        "CustomerRegistered",
        "ConsentGranted",
        "CustomerAddressChanged",
        "CustomEventSchemaRegistered",
    ] {
        assert!(types.contains(t), "{t} was stored: {types:?}");
    }
    let problems: Vec<String> = page.events.iter().flat_map(|e| check(&schemas, e)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // And a schema can fail: a grant without its GDPR context is not v2.
    let grant = page
        .events
        .iter()
        .find(|e| e.event_type == "ConsentGranted")
        .expect("a grant");
    let mut broken = grant.clone();
    if let Some(o) = broken.data.as_object_mut() {
        o.remove("gdpr");
    }
    assert!(!check(&schemas, &broken).is_empty(), "v2 needs gdpr");
    broken.schema_version = 1;
    assert!(check(&schemas, &broken).is_empty(), "but that is a valid v1");
}

#[test]
fn schemas_accept_encrypted_and_erased_personal_fields() {
    let schemas = all();
    let mut e = raw_event(
        "customer-c1",
        "CustomerAddressChanged",
        json!({ "old_address": null, "new_address": "enc:v1:abc" }),
    );
    e.customer_id = Some("c1".into());
    assert!(check(&schemas, &e).is_empty(), "{:?}", check(&schemas, &e));
    e.data = json!({ "old_address": "[erased]", "new_address": "[erased]" });
    assert!(check(&schemas, &e).is_empty(), "{:?}", check(&schemas, &e));
    e.data = json!({ "old_address": null, "new_address": "12 Main St" });
    assert!(!check(&schemas, &e).is_empty(), "a plain string is no address");
}

// Upcasters.

fn v1_grant() -> crate::event::EventEnvelope {
    let mut e = raw_event(
        "customer-c1",
        "ConsentGranted",
        json!({ "purpose": "marketing", "channel": "email", "method": "registration-checkbox",
                "ip": "203.0.113.7", "user_agent": "curl" }),
    );
    e.schema_version = 1;
    e.customer_id = Some("c1".into());
    e
}

#[test]
fn upcast_a_stored_v1_consent_grant_reads_as_v2() {
    let e = v1_grant();
    let schemas = all();
    assert!(check(&schemas, &e).is_empty(), "a stored v1 matches v1.json");
    let read = CustomerEvent::from_envelope(&e).expect("upcast");
    assert_eq!(
        read,
        CustomerEvent::ConsentGranted {
            purpose: Purpose::Marketing,
            channel: Channel::Email,
            method: ConsentMethod::RegistrationCheckbox,
            ip: Some("203.0.113.7".into()),
            user_agent: Some("curl".into()),
            gdpr: GdprContext {
                legal_basis: LegalBasis::Consent,
                jurisdiction: None,
                explicit: true,
            },
        }
    );
    // Derived from the v1 data: essential processing rests on the contract;
    // an import is not the customer's own act.
    let mut essential = v1_grant();
    essential.data["purpose"] = json!("essential");
    essential.data["method"] = json!("import");
    let CustomerEvent::ConsentGranted { gdpr, .. } = CustomerEvent::from_envelope(&essential).expect("upcast") else {
        panic!("a grant")
    };
    assert_eq!((gdpr.legal_basis, gdpr.explicit), (LegalBasis::Contract, false));
    // The v1 type itself is what v1.json describes.
    let v1: ConsentGrantedV1 = serde_json::from_value(e.data.clone()).expect("v1 type");
    assert_eq!(v1.purpose, Purpose::Marketing);
}

#[test]
fn upcast_a_v2_grant_round_trips_and_is_written_as_v2() {
    let event = CustomerEvent::ConsentGranted {
        purpose: Purpose::Analytics,
        channel: Channel::Push,
        method: ConsentMethod::Api,
        ip: None,
        user_agent: None,
        gdpr: GdprContext {
            legal_basis: LegalBasis::Consent,
            jurisdiction: Some("DE".into()),
            explicit: false,
        },
    };
    let meta = CommandMeta::new(Actor::api("tester"));
    let stored = envelopes(
        "customer-c1",
        Some("c1"),
        std::slice::from_ref(&event),
        &meta,
        crate::testing::test_time(),
    )
    .expect("envelope");
    assert_eq!(stored[0].schema_version, 2, "new grants are written as v2");
    assert_eq!(stored[0].data["gdpr"]["jurisdiction"], "DE");
    assert_eq!(CustomerEvent::from_envelope(&stored[0]).expect("reads"), event);
    assert!(check(&all(), &stored[0]).is_empty());
}

#[test]
fn upcast_keeps_encrypted_fields_and_refuses_what_it_cannot_read() {
    let mut e = v1_grant();
    e.data["ip"] = json!("enc:v1:opaque");
    let up = consent_granted_v1_to_v2(e.data.clone()).expect("upcast");
    assert_eq!(up["ip"], "enc:v1:opaque", "personal fields pass through untouched");
    assert_eq!(up["gdpr"]["legal_basis"], "consent");
    // Idempotent on data that already has a context.
    assert_eq!(consent_granted_v1_to_v2(up.clone()).expect("again"), up);

    assert!(
        consent_granted_v1_to_v2(json!({ "channel": "email" })).is_err(),
        "no purpose"
    );
    assert!(consent_granted_v1_to_v2(json!("text")).is_err());
    // A stored version newer than the code, or a gap in the chain, is an error.
    let mut newer = v1_grant();
    newer.schema_version = 3;
    assert!(CustomerEvent::from_envelope(&newer).is_err());
    let err = upcast(&[], "ConsentGranted", 1, 2, json!({})).expect_err("no step");
    assert!(err.0.contains("no upcaster from schema version 1"), "{err}");
}

#[tokio::test]
async fn upcast_consumers_read_stored_v1_grants() {
    use crate::consent::ledger::ConsentLedgerProjection;
    use crate::consumer::Projection;
    let ledger = ConsentLedgerProjection;
    let docs = crate::testing::InMemoryReadModels::default();
    let ops = ledger
        .project(&v1_grant(), &docs)
        .await
        .expect("the ledger reads a v1 grant");
    assert!(!ops.is_empty());
}

// Custom event schemas.

fn custom(store: Arc<InMemoryEventStore>) -> CustomEventSchemas {
    CustomEventSchemas::new(store).with_clock(Arc::new(SystemClock))
}

#[tokio::test]
async fn custom_schemas_register_version_and_validate_with_paths() {
    let store = Arc::new(InMemoryEventStore::default());
    let schemas = custom(store.clone());
    let actor = || Actor::api("tester");
    let schema = json!({
        "type": "object",
        "required": ["price"],
        "properties": { "price": { "type": "number", "minimum": 0 }, "items": { "type": "array", "items": { "type": "string" } } }
    });
    // Unknown names pass.
    schemas
        .validate("Video Played", &json!({ "anything": 1 }))
        .await
        .expect("unknown");

    let first = schemas
        .register("Video Played", schema.clone(), actor())
        .await
        .expect("register");
    assert_eq!(first.version, 1);
    let again = schemas
        .register("Video Played", schema.clone(), actor())
        .await
        .expect("same");
    assert_eq!(again.version, 1, "the same schema registers nothing");

    schemas
        .validate("Video Played", &json!({ "price": 3.5, "items": ["a"] }))
        .await
        .expect("valid");
    let err = schemas
        .validate("Video Played", &json!({ "price": "cheap", "items": ["a", 2] }))
        .await
        .expect_err("invalid");
    let paths: Vec<&str> = err.violations().iter().map(|v| v.path.as_str()).collect();
    assert!(paths.contains(&"properties.price"), "{paths:?}");
    assert!(paths.contains(&"properties.items.1"), "{paths:?}");
    assert!(!err.to_string().contains("cheap"), "values are not quoted: {err}");
    let missing = schemas
        .validate("Video Played", &json!({}))
        .await
        .expect_err("required");
    assert_eq!(missing.field(), Some("properties"));
    assert!(matches!(missing, SchemaCheckError::Invalid { version: 1, .. }));

    // A new version replaces the cached one.
    let relaxed = json!({ "type": "object" });
    let second = schemas
        .register("Video Played", relaxed.clone(), actor())
        .await
        .expect("v2");
    assert_eq!(second.version, 2);
    schemas
        .validate("Video Played", &json!({ "price": "cheap" }))
        .await
        .expect("v2 allows it");
    let other = custom(store.clone());
    let got = other.get("Video Played").await.expect("get").expect("exists");
    assert_eq!((got.version, got.schema), (2, relaxed));
    assert_eq!(other.versions("Video Played").await.expect("versions").len(), 2);
    let stored = store
        .read_stream("schema-custom-Video Played", 0, 10)
        .await
        .expect("stream");
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|e| e.event_type == "CustomEventSchemaRegistered"));
}

#[tokio::test]
async fn custom_schemas_refuse_invalid_schemas_and_names_naming_the_field() {
    let schemas = custom(Arc::new(InMemoryEventStore::default()));
    let field = |r: Result<_, CustomSchemaError>| match r {
        Err(CustomSchemaError::Invalid { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    let actor = || Actor::api("tester");
    assert_eq!(
        field(schemas.register("X", json!({ "type": "nope" }), actor()).await),
        "schema.type"
    );
    assert_eq!(
        field(
            schemas
                .register(
                    "X",
                    json!({ "properties": { "price": { "minimum": "zero" } } }),
                    actor()
                )
                .await
        ),
        "schema.properties.price.minimum"
    );
    assert_eq!(field(schemas.register("X", json!([1]), actor()).await), "schema");
    assert_eq!(
        field(
            schemas
                .register("X", json!({ "$schema": "https://example.com/s" }), actor())
                .await
        ),
        "schema.$schema"
    );
    assert!(matches!(
        schemas
            .register("X", json!({ "$ref": "https://example.com/remote.json" }), actor())
            .await,
        Err(CustomSchemaError::Invalid { .. })
    ));
    assert_eq!(field(schemas.register(" ", json!({}), actor()).await), "name");
    assert_eq!(field(schemas.register("a/b", json!({}), actor()).await), "name");
    assert_eq!(
        field(schemas.register(&"x".repeat(201), json!({}), actor()).await),
        "name"
    );
}

#[tokio::test]
async fn custom_schemas_survive_hostile_schemas() {
    let schemas = custom(Arc::new(InMemoryEventStore::default()));
    for (i, schema) in [
        json!({ "pattern": "(" }),
        json!({ "$ref": "#/definitions/missing" }),
        json!({ "$ref": "#" }),
        json!({ "$id": "not a uri at all", "type": "object" }),
        json!({ "$schema": 5 }),
        json!({ "type": ["object", "nope"] }),
        json!({ "properties": { "a": { "$ref": "#/properties/a" } } }),
        json!({ "definitions": { "a": { "$ref": "#/definitions/b" }, "b": { "$ref": "#/definitions/a" } }, "$ref": "#/definitions/a" }),
        json!({ "minimum": 1e308, "multipleOf": 1e-308 }),
        json!({ "format": "no-such-format", "enum": [] }),
        json!({ "items": { "items": { "items": { "items": { "type": "string" } } } } }),
    ]
    .into_iter()
    .enumerate()
    {
        // Either refused (naming the field) or registered; never a panic.
        if schemas.register(&format!("h{i}"), schema.clone(), Actor::api("t")).await.is_ok() {
            let _ = schemas.validate(&format!("h{i}"), &json!({ "a": [[["x"]]], "n": 3 })).await;
        }
    }
}

#[test]
fn a_schema_registers_as_a_new_version_unless_it_is_the_latest() {
    use super::custom::{CustomSchemaStream, SchemaCommand, SchemaEvent};
    use crate::testing::AggregateScenario;
    let registered = |schema: Value| SchemaEvent::CustomEventSchemaRegistered {
        name: "Wishlist Shared".into(),
        schema,
    };
    let v1 = json!({ "type": "object" });
    let v2 = json!({ "type": "object", "required": ["list_id"] });
    AggregateScenario::<CustomSchemaStream>::new("Wishlist Shared", ())
        .when(SchemaCommand::Register { schema: v1.clone() })
        .then_expect_events(&[registered(v1.clone())]);
    let given = AggregateScenario::<CustomSchemaStream>::new("Wishlist Shared", ()).given(&[registered(v1.clone())]);
    assert_eq!(given.state().map(|s| s.version), Some(1));
    given
        .when(SchemaCommand::Register { schema: v1.clone() })
        .then_expect_events(&[]);
    given
        .when(SchemaCommand::Register { schema: v2.clone() })
        .then_expect_events(&[registered(v2)]);
}

#[test]
fn schema_errors_say_their_kind() {
    use crate::failure::{Classify, FailureKind};
    use crate::ports::StoreError;
    assert_eq!(
        CustomSchemaError::Invalid {
            field: "name".into(),
            message: "empty".into()
        }
        .kind(),
        FailureKind::Poison
    );
    assert_eq!(
        CustomSchemaError::Conflict("again".into()).kind(),
        FailureKind::Conflict
    );
    assert_eq!(
        CustomSchemaError::from(crate::aggregate::AggregateError::Contended { attempts: 1 }),
        CustomSchemaError::Conflict("the schema was registered concurrently; retry".into())
    );
    assert_eq!(
        SchemaCheckError::Store(StoreError::Unavailable("busy".into())).kind(),
        FailureKind::Retryable
    );
    assert_eq!(
        SchemaCheckError::Invalid {
            name: "x".into(),
            version: 1,
            violations: Vec::new()
        }
        .kind(),
        FailureKind::Poison
    );
}
