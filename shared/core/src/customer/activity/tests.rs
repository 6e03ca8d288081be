use super::*;
use crate::customer::CustomerError;
use crate::event::DomainEvent;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T09:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default()
}

fn field(body: Value) -> String {
    match RecordActivity::from_json(body) {
        Err(CustomerError::Invalid { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_typed_event_is_read_with_its_common_fields() {
    let r = RecordActivity::from_json(json!({
        "type": "ProductViewed", "product_id": "sku-1", "name": "Lamp", "category": "lighting",
        "price_minor": 4000, "session_id": "s1", "utm": {"source": "newsletter", "medium": "email"},
        "occurred_at": "2026-11-22T09:00:00Z"
    }))
    .expect("valid");
    let ActivityEvent::ProductViewed(p) = &r.event else {
        panic!("type")
    };
    assert_eq!((p.category.as_str(), p.price_minor), ("lighting", Some(4000)));
    assert_eq!(p.utm.as_ref().and_then(|u| u.source.as_deref()), Some("newsletter"));
    assert_eq!(r.occurred_at(now()), Ok(now() - Duration::days(1)));
    let (t, data) = r.event.to_parts().expect("parts");
    assert_eq!(t, "ProductViewed");
    assert_eq!(data["session_id"], "s1");
    assert!(data.get("occurred_at").is_none());
}

#[test]
fn unknown_types_and_fields_and_bad_values_are_named() {
    assert_eq!(field(json!({"type": "ProductLiked"})), "type");
    assert_eq!(field(json!({"product_id": "x"})), "type");
    assert_eq!(
        field(json!({"type": "ReviewRead", "product_id": "p", "stars": 5})),
        "stars"
    );
    assert_eq!(field(json!({"type": "ReviewRead"})), "product_id");
    assert_eq!(
        field(json!({"type": "ReviewRead", "product_id": "p", "utm": {"source": "x", "bogus": 1}})),
        "utm.bogus"
    );
    assert_eq!(
        field(json!({"type": "SearchPerformed", "query": "x", "results_count": -1})),
        "results_count"
    );
    assert_eq!(
        field(json!({"type": "PageViewed", "url": "javascript:alert(1)"})),
        "url"
    );
    assert_eq!(
        field(json!({"type": "ProductCompared", "product_ids": ["a"]})),
        "product_ids"
    );
    assert_eq!(
        field(json!({"type": "ReviewRead", "product_id": "p", "occurred_at": "yesterday"})),
        "occurred_at"
    );
    assert_eq!(
        field(json!({"type": "CheckoutStepCompleted", "cart_id": "c", "step": "shipping"})),
        "cart_id"
    );
}

#[test]
fn occurred_at_is_neither_future_nor_too_late() {
    let at = |t: DateTime<Utc>| RecordActivity {
        event: ActivityEvent::CustomerLoggedIn(CustomerLoggedIn {
            session_id: None,
            utm: None,
            late: false,
        }),
        occurred_at: Some(t),
    };
    assert!(at(now() + Duration::hours(1)).occurred_at(now()).is_err());
    assert!(at(now() - Duration::days(8)).occurred_at(now()).is_err());
    assert!(at(now() - Duration::days(6)).occurred_at(now()).is_ok());
}
