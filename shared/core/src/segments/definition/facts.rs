//! The facts builder (decision 0083): what a definition reads about one
//! customer, read only as far as its [`Dependencies`] say.
//!
//! - the profile: the customer 360 document with the customer's fields as
//!   their stream says now (one stream read, strongly consistent; the 360
//!   adds its counts);
//! - the metrics: the profile metrics projection's order and activity facts;
//! - the consents: the latest unrevoked grant of each pair, from the same
//!   customer stream;
//! - the memberships: the customer's `segments-<id>` stream (strongly
//!   consistent, as the journey engine's `entry.segment`);
//! - the events of the listed types within the longest window: the streams
//!   the customer-streams index lists (plus the ones named after the
//!   customer) whose kind can hold one of those types, each read once.
//!   `EmailOpened` / `EmailClicked` get the `campaign_id` of their message,
//!   read from the same message stream (its `MessageClaimed` copies the
//!   campaign of the `MessageRequested`).

use super::{CustomerFacts, Dependencies, EventFact, MetricFacts, EMAIL_CLICKED, EMAIL_OPENED};
use crate::aggregate::{AggregateError, AggregateService};
use crate::bus::source_for;
use crate::clock::SystemClock;
use crate::customer::metrics::{customer_facts, profile_metrics};
use crate::customer::streams::CUSTOMER_STREAMS;
use crate::customer::views::customer_profile;
use crate::customer::{Customer, CustomerAggregate};
use crate::event::EventEnvelope;
use crate::ports::{EventStore, ReadModelStore, StoreError};
use crate::segments::SegmentMembership;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Index lines read per page.
const PAGE: usize = 500;

/// The facts of `customer_id` that a definition with `deps` reads, at `now`.
pub async fn gather(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    customer_id: &str,
    deps: &Dependencies,
    now: DateTime<Utc>,
) -> Result<CustomerFacts, StoreError> {
    gather_with(store, docs, customer_id, deps, now, None).await
}

/// [`gather`], counting `known` too (the event being handled, which the
/// customer-streams index may not list yet: its stream may be new).
pub async fn gather_with(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    customer_id: &str,
    deps: &Dependencies,
    now: DateTime<Utc>,
    known: Option<&EventEnvelope>,
) -> Result<CustomerFacts, StoreError> {
    let mut facts = CustomerFacts::default();
    if deps.profile || !deps.consents.is_empty() {
        if let Some(customer) = load_customer(store, customer_id).await? {
            if deps.profile {
                facts.profile = profile_of(docs, &customer).await?;
            }
            facts.consents = customer.consents.clone();
        }
    }
    if !deps.metrics.is_empty() {
        let metrics = profile_metrics(docs, customer_id, now).await?;
        let (_, activity) = customer_facts(docs, customer_id).await?;
        facts.metrics = MetricFacts::from_metrics(&metrics, activity.as_ref());
    }
    if !deps.segments.is_empty() {
        facts.segments = memberships(store, customer_id).await?;
    }
    if !deps.event_types.is_empty() {
        facts.events = events(store, docs, customer_id, deps, now, known).await?;
    }
    Ok(facts)
}

fn unreadable<E: std::error::Error>(what: &str, e: AggregateError<E>) -> StoreError {
    match e {
        AggregateError::Store(e) => e,
        other => StoreError::Failed(format!("{what} unreadable: {other}")),
    }
}

/// The customer as their stream says now.
pub(crate) async fn load_customer(store: &dyn EventStore, customer_id: &str) -> Result<Option<Customer>, StoreError> {
    AggregateService::<CustomerAggregate, _>::borrowing(store, Arc::new(SystemClock))
        .load(customer_id)
        .await
        .map_err(|e| unreadable(&format!("customer {customer_id}"), e))
}

/// The segments the customer's membership stream holds.
async fn memberships(store: &dyn EventStore, customer_id: &str) -> Result<BTreeSet<String>, StoreError> {
    let loaded = AggregateService::<SegmentMembership, _>::borrowing(store, Arc::new(SystemClock))
        .load(customer_id)
        .await
        .map_err(|e| unreadable(&format!("segments of {customer_id}"), e))?;
    Ok(loaded.map(|m| m.segments.into_keys().collect()).unwrap_or_default())
}

/// The customer 360 document with the customer's fields as their stream says
/// now (the projection may lag behind), without the verification token.
async fn profile_of(docs: &dyn ReadModelStore, customer: &Customer) -> Result<Value, StoreError> {
    let mut profile = match customer_profile(docs, &customer.id).await? {
        Some(p) => serde_json::to_value(p).map_err(|e| StoreError::Failed(e.to_string()))?,
        None => Value::Object(Map::new()),
    };
    let fields = serde_json::to_value(customer).map_err(|e| StoreError::Failed(e.to_string()))?;
    if let (Value::Object(profile), Value::Object(fields)) = (&mut profile, fields) {
        profile.extend(fields);
        profile.remove("pending_verification_token");
        let summary: Vec<Value> = customer
            .consents
            .iter()
            .map(|c| Value::String(format!("{}:{}", c.purpose, c.channel)))
            .collect();
        profile.insert("consent_summary".into(), Value::Array(summary));
    }
    Ok(profile)
}

/// The bus sources a stream of this kind can carry; `None`: any.
fn stream_sources(stream: &str) -> Option<&'static [&'static str]> {
    match stream.split_once('-').map(|(kind, _)| kind) {
        Some("activity") => Some(&["crm.customer"]),
        Some("customer") => Some(&["crm.customer", "crm.consent"]),
        Some("cart" | "order") => Some(&["crm.commerce"]),
        Some("segments") => Some(&["crm.segments"]),
        Some("message") => Some(&["crm.messaging"]),
        Some("journey") => Some(&["crm.journey"]),
        _ => None,
    }
}

/// The streams about `customer_id` that can hold an event of one of `types`.
async fn streams_for(
    docs: &dyn ReadModelStore,
    customer_id: &str,
    types: &BTreeSet<String>,
) -> Result<BTreeSet<String>, StoreError> {
    let sources: BTreeSet<&str> = types.iter().map(|t| source_for(t)).collect();
    let mut streams = BTreeSet::from([
        crate::customer::stream_id(customer_id),
        crate::customer::activity::activity_stream_id(customer_id),
        crate::segments::stream_id(customer_id),
    ]);
    let mut after: Option<String> = None;
    loop {
        let page = docs
            .list(CUSTOMER_STREAMS, customer_id, "", after.as_deref(), PAGE)
            .await?;
        let done = page.len() < PAGE;
        after = page.last().map(|(k, _)| k.clone());
        streams.extend(page.into_iter().map(|(stream, _)| stream));
        if done {
            break;
        }
    }
    streams.retain(|s| stream_sources(s).is_none_or(|kinds| kinds.iter().any(|k| sources.contains(k))));
    Ok(streams)
}

/// The campaign of a message stream's events: its `MessageClaimed` (or a
/// `MessageRequested`, should one be stored there) names it.
fn campaign_of(events: &[EventEnvelope]) -> Option<String> {
    events
        .iter()
        .filter(|e| e.event_type == "MessageClaimed" || e.event_type == "MessageRequested")
        .find_map(|e| e.data.get("campaign_id").and_then(Value::as_str).map(str::to_string))
}

/// The customer's events of the listed types that occurred within the
/// longest window before `now`, oldest first (each event once).
async fn events(
    store: &dyn EventStore,
    docs: &dyn ReadModelStore,
    customer_id: &str,
    deps: &Dependencies,
    now: DateTime<Utc>,
    known: Option<&EventEnvelope>,
) -> Result<Vec<EventFact>, StoreError> {
    let from = now - Duration::days(i64::from(deps.window_days));
    let wanted = |e: &EventEnvelope| {
        deps.event_types.contains(&e.event_type)
            && e.customer_id.as_deref() == Some(customer_id)
            && e.occurred_at > from
    };
    let mut found: BTreeMap<uuid::Uuid, EventFact> = BTreeMap::new();
    let keep = |found: &mut BTreeMap<uuid::Uuid, EventFact>, e: &EventEnvelope, campaign: Option<&String>| {
        let mut properties = e.data.clone();
        if e.event_type == EMAIL_OPENED || e.event_type == EMAIL_CLICKED {
            if let (Value::Object(map), Some(campaign)) = (&mut properties, campaign) {
                map.insert("campaign_id".into(), Value::String(campaign.clone()));
            }
        }
        found.insert(
            e.event_id,
            EventFact {
                event_type: e.event_type.clone(),
                at: e.occurred_at,
                properties,
            },
        );
    };
    for stream in streams_for(docs, customer_id, &deps.event_types).await? {
        let events = store.read_stream(&stream, 0, usize::MAX).await?;
        let campaign = stream.starts_with("message-").then(|| campaign_of(&events)).flatten();
        for e in events.iter().filter(|e| wanted(e)) {
            keep(&mut found, e, campaign.as_ref());
        }
    }
    if let Some(e) = known.filter(|e| wanted(e) && !found.contains_key(&e.event_id)) {
        let campaign = if e.stream_id.starts_with("message-") {
            campaign_of(&store.read_stream(&e.stream_id, 0, usize::MAX).await?)
        } else {
            None
        };
        keep(&mut found, e, campaign.as_ref());
    }
    let mut out: Vec<EventFact> = found.into_values().collect();
    out.sort_by_key(|f| f.at);
    Ok(out)
}
