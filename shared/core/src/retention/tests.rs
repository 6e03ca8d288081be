//! Retention: given stored events, when the fold or the sweep runs, then
//! these summaries, these deletions, and the same answers from a rebuild.

use super::*;
use crate::consumer::Consumer;
use crate::customer::metrics::{customer_facts, profile_metrics, ProfileMetricsProjection};
use crate::ports::{AppendRequest, EventStore, ExpectedVersion, ReadModelStore};
use crate::testing::{raw_event, InMemoryEventStore, InMemoryReadModels};
use chrono::TimeZone;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

fn at(days_ago: i64, hour: u32) -> DateTime<Utc> {
    let day = (now() - Duration::days(days_ago)).date_naive();
    day.and_hms_opt(hour, 15, 0).map(|t| t.and_utc()).unwrap_or_default()
}

fn event(stream: &str, customer: &str, event_type: &str, at: DateTime<Utc>, data: Value) -> EventEnvelope {
    let mut e = raw_event(stream, event_type, data);
    e.customer_id = Some(customer.to_string());
    e.occurred_at = at;
    e.recorded_at = at;
    e
}

async fn append(store: &dyn EventStore, e: EventEnvelope) {
    store
        .append(AppendRequest {
            stream_id: e.stream_id.clone(),
            expected: ExpectedVersion::Any,
            events: vec![e],
            reservations: Vec::new(),
            receipt: None,
        })
        .await
        .expect("append");
}

fn view(product: &str, category: &str, session: &str) -> Value {
    json!({ "product_id": product, "name": "A thing", "category": category, "session_id": session })
}

async fn stream(store: &dyn EventStore, id: &str) -> Vec<EventEnvelope> {
    read_whole_stream(store, id).await.expect("read")
}

fn summaries(events: &[EventEnvelope]) -> Vec<ActivityDaySummarized> {
    events
        .iter()
        .filter(|e| e.event_type == ACTIVITY_DAY_SUMMARIZED)
        .map(|e| ActivityDaySummarized::from_envelope(e).expect("summary"))
        .collect()
}

#[tokio::test]
async fn old_days_are_folded_once_per_day_and_recent_ones_are_left() {
    // Given: two old days of activity and one recent day.
    let store = InMemoryEventStore::default();
    let s = activity_stream_id("c1");
    let given = [
        event(
            &s,
            "c1",
            "ProductViewed",
            at(120, 9),
            view("sku-1", "Home & Garden", "s1"),
        ),
        event(
            &s,
            "c1",
            "ProductViewed",
            at(120, 10),
            view("sku-1", "Home & Garden", "s1"),
        ),
        event(&s, "c1", "ProductViewed", at(120, 11), view("sku-2", "Books", "s2")),
        event(&s, "c1", "CustomerLoggedIn", at(120, 8), json!({ "session_id": "s1" })),
        event(
            &s,
            "c1",
            "SearchPerformed",
            at(95, 8),
            json!({ "query": "lamp", "results_count": 3 }),
        ),
        event(&s, "c1", "CustomerLoggedIn", at(10, 8), json!({})),
    ];
    for e in given.iter().cloned() {
        append(&store, e).await;
    }

    // When
    let policy = RetentionPolicy::default();
    let fold = fold_activity(&store, "c1", &policy, now()).await.expect("fold");

    // Then: one summary per old day, none for the recent day.
    let old: Vec<&EventEnvelope> = given
        .iter()
        .filter(|e| e.occurred_at.date_naive() < policy.first_kept_day(now()))
        .collect();
    let old_days: BTreeSet<NaiveDate> = old.iter().map(|e| e.occurred_at.date_naive()).collect();
    assert_eq!(fold.appended, old_days.iter().copied().collect::<Vec<_>>());
    assert_eq!(fold.expirable.len(), old.len());
    let stored = stream(&store, &s).await;
    let sums = summaries(&stored);
    assert_eq!(sums.len(), old_days.len());
    let day120 = sums.iter().find(|x| x.day == at(120, 0).date_naive()).expect("day 120");
    let raw120: Vec<&&EventEnvelope> = old
        .iter()
        .filter(|e| e.occurred_at.date_naive() == day120.day)
        .collect();
    assert_eq!(day120.events, raw120.len() as u64);
    assert_eq!(day120.counts.values().sum::<u64>(), day120.events);
    assert_eq!(day120.products_viewed.get("sku-1"), Some(&2));
    assert_eq!(day120.categories_viewed.get("home-garden"), Some(&2));
    assert_eq!((day120.logins, day120.last_login_at), (1, Some(at(120, 8))));
    assert_eq!(day120.sessions, 2);
    // No personal data and no raw identifiers beyond product ids.
    let text = serde_json::to_string(&stored.last().map(|e| &e.data)).expect("json");
    assert!(!text.contains("lamp") && !text.contains("\"s1\""), "{text}");
    // The event id is derived from the stream and the day.
    let ids: Vec<_> = stored
        .iter()
        .filter(|e| e.event_type == ACTIVITY_DAY_SUMMARIZED)
        .map(|e| e.event_id)
        .collect();
    assert!(ids.contains(&summary_event_id(&s, day120.day)));

    // When it runs again (the next day, say): nothing new.
    let again = fold_activity(&store, "c1", &policy, now()).await.expect("fold");
    assert!(again.appended.is_empty());
    assert_eq!(again.expirable, fold.expirable);
    assert_eq!(stream(&store, &s).await.len(), stored.len());
}

#[tokio::test]
async fn expiry_never_deletes_the_newest_event() {
    let store = InMemoryEventStore::default();
    let s = activity_stream_id("c1");
    append(&store, event(&s, "c1", "CustomerLoggedIn", at(100, 8), json!({}))).await;
    append(&store, event(&s, "c1", "CustomerLoggedIn", at(99, 8), json!({}))).await;
    assert!(store.delete_events(&s, &[2]).await.is_err());
    assert_eq!(store.delete_events(&s, &[1, 7]).await, Ok(1));
    // The next append continues after the newest version.
    append(&store, event(&s, "c1", "CustomerLoggedIn", at(1, 8), json!({}))).await;
    let versions: Vec<u64> = stream(&store, &s).await.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![2, 3]);
}

#[test]
fn the_policy_reads_its_environment_and_refuses_nonsense() {
    let none = |_: &str| None;
    assert_eq!(RetentionPolicy::from_lookup(none), Ok(RetentionPolicy::default()));
    let set = |days: &'static str, years: &'static str| {
        move |name: &str| match name {
            ACTIVITY_DAYS_ENV => Some(days.to_string()),
            LEGAL_YEARS_ENV => Some(years.to_string()),
            _ => None,
        }
    };
    assert_eq!(
        RetentionPolicy::from_lookup(set("30", "10")),
        Ok(RetentionPolicy {
            activity_days: 30,
            legal_years: 10
        })
    );
    assert!(RetentionPolicy::from_lookup(set("ninety", "7")).is_err());
    // Shorter than the lateness window: a late event could land on a folded day.
    assert!(RetentionPolicy::new(RetentionPolicy::min_activity_days() - 1, 7).is_err());
    assert!(RetentionPolicy::new(RetentionPolicy::min_activity_days(), 7).is_ok());
    assert!(RetentionPolicy::from_lookup(set("90", "0")).is_err());
    let p = RetentionPolicy::default();
    let t = at(0, 10);
    assert_eq!(p.activity_expires_at(t), t + p.activity_age() + ttl_margin());
    use chrono::Datelike;
    let cutoff = p.legal_cutoff(now());
    assert_eq!(
        (cutoff.year(), cutoff.month(), cutoff.day()),
        (now().year() - 7, now().month(), now().day())
    );
}

/// Several customers with orders and activity spread over 200 days.
async fn history(store: &InMemoryEventStore) -> Vec<String> {
    let customers: Vec<String> = (0..4).map(|i| format!("cus-{i}")).collect();
    for (i, c) in customers.iter().enumerate() {
        let s = activity_stream_id(c);
        for d in (0..200).rev() {
            // A varying pattern per customer: logins some days, views others.
            let k = (d as usize * (i + 3)) % 7;
            if k < 3 {
                for n in 0..=k {
                    append(store, event(&s, c, "CustomerLoggedIn", at(d, 7 + n as u32), json!({}))).await;
                }
            }
            if k >= 2 {
                let category = ["lamps", "books", "Home & Garden"][k % 3];
                append(
                    store,
                    event(
                        &s,
                        c,
                        "ProductViewed",
                        at(d, 14),
                        view(&format!("sku-{k}"), category, "s"),
                    ),
                )
                .await;
            }
        }
        for (n, d) in [150i64, 100, 40, 5].iter().enumerate().take(i + 1) {
            let order = format!("order-{c}-{n}");
            let amount = 1_000 * (n as i64 + 1) * (i as i64 + 1);
            append(
                store,
                event(
                    &order,
                    c,
                    "OrderPlaced",
                    at(*d, 9),
                    json!({ "order_id": order, "items": [{ "category": "lamps", "quantity": n + 1 }] }),
                ),
            )
            .await;
            append(
                store,
                event(
                    &order,
                    c,
                    "PaymentSucceeded",
                    at(*d, 10),
                    json!({ "order_id": order, "payment_id": format!("p-{order}"), "amount_minor": amount, "currency": "EUR" }),
                ),
            )
            .await;
        }
    }
    customers
}

/// Delivers every stored event to a fresh profile-metrics projection.
async fn rebuild(store: Arc<InMemoryEventStore>) -> Arc<InMemoryReadModels> {
    let docs = Arc::new(InMemoryReadModels::default());
    let consumer = Consumer::new(Arc::new(ProfileMetricsProjection), store.clone(), docs.clone());
    let mut cursor: Option<String> = None;
    loop {
        let page = store.read_all(cursor.as_deref(), 100).await.expect("read all");
        for e in &page.events {
            consumer.deliver(e).await.expect("deliver");
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => return docs,
        }
    }
}

async fn answers(
    docs: &dyn ReadModelStore,
    customers: &[String],
) -> Vec<(
    crate::customer::metrics::ProfileMetrics,
    BTreeMap<String, String>,
    Value,
)> {
    let mut out = Vec::new();
    for c in customers {
        let m = profile_metrics(docs, c, now()).await.expect("metrics");
        let segments = crate::segments::evaluate(&m);
        let (_, activity) = customer_facts(docs, c).await.expect("facts");
        out.push((m, segments, serde_json::to_value(activity).expect("json")));
    }
    out
}

#[tokio::test]
async fn metrics_and_segments_rebuilt_from_summaries_answer_as_before() {
    // Given: the projection built from every raw event.
    let store = Arc::new(InMemoryEventStore::default());
    let customers = history(&store).await;
    let before_docs = rebuild(store.clone()).await;
    let before = answers(before_docs.as_ref(), &customers).await;
    assert!(before
        .iter()
        .any(|(m, _, _)| m.last_login_at.is_some() && m.logins_7d > 0));
    let raw_before = stream(store.as_ref(), &activity_stream_id(&customers[0])).await;

    // When: the sweep folds and expires.
    let policy = RetentionPolicy::default();
    let report = sweep(store.as_ref(), store.as_ref(), &policy, now())
        .await
        .expect("sweep");

    // Then: the old raw events are gone, only summaries cover those days.
    assert_eq!(report.activity_streams, customers.len() as u64);
    assert!(report.activity_events_deleted > 0 && report.summaries_appended > 0);
    assert_eq!(report.legal_streams_deleted, 0, "nothing is 7 years old");
    let after = stream(store.as_ref(), &activity_stream_id(&customers[0])).await;
    let first_kept = policy.first_kept_day(now());
    assert!(after
        .iter()
        .all(|e| e.event_type == ACTIVITY_DAY_SUMMARIZED || e.occurred_at.date_naive() >= first_kept));
    let old_raw = raw_before
        .iter()
        .filter(|e| e.occurred_at.date_naive() < first_kept)
        .count() as u64;
    let folded: u64 = summaries(&after).iter().map(|s| s.events).sum();
    assert_eq!(folded, old_raw, "every old raw event is in exactly one summary");

    // The live projection, handed the summaries, answers the same.
    let summaries_only: Vec<EventEnvelope> = after
        .iter()
        .filter(|e| e.event_type == ACTIVITY_DAY_SUMMARIZED)
        .cloned()
        .collect();
    let live = Consumer::new(Arc::new(ProfileMetricsProjection), store.clone(), before_docs.clone());
    for e in &summaries_only {
        live.deliver(e).await.expect("deliver");
    }
    assert_eq!(answers(before_docs.as_ref(), &customers).await, before);

    // A rebuild from what is left answers the same.
    let rebuilt = rebuild(store.clone()).await;
    assert_eq!(answers(rebuilt.as_ref(), &customers).await, before);

    // A second sweep changes nothing.
    let again = sweep(store.as_ref(), store.as_ref(), &policy, now())
        .await
        .expect("sweep");
    assert_eq!((again.summaries_appended, again.activity_events_deleted), (0, 0));
    assert_eq!(stream(store.as_ref(), &activity_stream_id(&customers[0])).await, after);
}

#[tokio::test]
async fn orders_and_erased_customers_go_only_after_the_legal_period() {
    let store = InMemoryEventStore::default();
    let policy = RetentionPolicy::default();
    // The legal period ends at the start of the month after (decision 0078).
    let old = policy.legal_cutoff(now()) - Duration::days(40);
    let recent = policy.legal_cutoff(now()) - Duration::days(1);
    let order = |id: &str, t| {
        event(
            &format!("order-{id}"),
            "c1",
            "OrderPlaced",
            t,
            json!({ "order_id": id }),
        )
    };
    append(&store, order("old", old)).await;
    append(&store, order("recent", recent)).await;
    let customer = |id: &str, event_type: &str, t| event(&format!("customer-{id}"), id, event_type, t, json!({}));
    append(&store, customer("kept", "ConsentGranted", old)).await;
    append(&store, customer("erased", "ConsentGranted", old - Duration::days(3))).await;
    append(&store, customer("erased", "CustomerErased", old)).await;
    append(&store, customer("erased-lately", "CustomerErased", recent)).await;

    let report = sweep(&store, &store, &policy, now()).await.expect("sweep");

    let left = store.streams("", None, 100).await.expect("streams");
    assert_eq!(
        left,
        vec!["customer-erased-lately", "customer-kept", "order-recent"],
        "an old order and an erased customer past the period go; consent of a customer still here stays"
    );
    assert_eq!((report.legal_streams_deleted, report.legal_events_deleted), (2, 3));
}

#[tokio::test]
async fn the_daily_fold_on_aws_folds_every_customer_and_deletes_nothing() {
    // Given
    let store = Arc::new(InMemoryEventStore::default());
    let customers = history(&store).await;
    let policy = RetentionPolicy::default();
    let before: usize = {
        let mut n = 0;
        for c in &customers {
            n += stream(store.as_ref(), &activity_stream_id(c)).await.len();
        }
        n
    };
    // When
    let appended = fold_all_activity(store.as_ref(), store.as_ref(), &policy, now())
        .await
        .expect("fold");
    // Then: a summary per old day per customer, every raw event still there (the TTL expires them).
    let mut after = 0;
    let mut summary_count = 0;
    for c in &customers {
        let events = stream(store.as_ref(), &activity_stream_id(c)).await;
        summary_count += summaries(&events).len();
        after += events.len();
    }
    assert!(appended > 0);
    assert_eq!(summary_count as u64, appended);
    assert_eq!(after, before + summary_count);
    assert_eq!(
        fold_all_activity(store.as_ref(), store.as_ref(), &policy, now()).await,
        Ok(0)
    );
}

/// Before its first append, a late activity event for an old day lands on
/// the stream (another writer): the fold's append conflicts.
struct LateWriter {
    inner: InMemoryEventStore,
    late: std::sync::Mutex<Option<EventEnvelope>>,
    appends: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl EventStore for LateWriter {
    async fn load(&self, stream_id: &str) -> Result<crate::ports::LoadedStream, StoreError> {
        self.inner.load(stream_id).await
    }
    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner.read_stream(stream_id, after, limit).await
    }
    async fn append(&self, request: AppendRequest) -> Result<crate::ports::Appended, crate::ports::AppendError> {
        self.appends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let late = self.late.lock().map(|mut l| l.take()).unwrap_or_default();
        if let Some(late) = late {
            append(&self.inner, late).await;
        }
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

#[tokio::test]
async fn a_long_backlog_is_folded_50_days_an_append_and_a_late_writer_makes_it_decide_again() {
    // Given: 120 old days with one view each, and a view on one more old
    // day that another writer appends just before the fold's first append.
    let s = activity_stream_id("c1");
    let store = LateWriter {
        inner: InMemoryEventStore::default(),
        late: std::sync::Mutex::new(Some(event(
            &s,
            "c1",
            "ProductViewed",
            at(400, 9),
            view("sku-late", "Books", "s9"),
        ))),
        appends: Default::default(),
    };
    for day in 0..120 {
        append(
            &store.inner,
            event(
                &s,
                "c1",
                "ProductViewed",
                at(100 + day, 9),
                view("sku-1", "Books", "s1"),
            ),
        )
        .await;
    }

    // When
    let policy = RetentionPolicy::default();
    let fold = fold_activity(&store, "c1", &policy, now()).await.expect("fold");

    // Then: every old day once, the late one too, in appends of at most 50
    // (the first lost to the late writer and was decided again).
    assert_eq!(fold.appended.len(), 121);
    assert_eq!(fold.expirable.len(), 121);
    let stored = stream(&store.inner, &s).await;
    let days: BTreeSet<NaiveDate> = summaries(&stored).iter().map(|x| x.day).collect();
    assert_eq!(days.len(), 121, "each day summarized exactly once");
    assert_eq!(summaries(&stored).len(), 121);
    assert!(days.contains(&at(400, 0).date_naive()));
    // 1 lost + 3 (50, 50, 21).
    assert_eq!(store.appends.load(std::sync::atomic::Ordering::SeqCst), 4);
    let late = summaries(&stored)
        .into_iter()
        .find(|x| x.day == at(400, 0).date_naive())
        .expect("late day");
    assert_eq!(late.products_viewed.get("sku-late"), Some(&1));
    // Summaries occur at their day's last activity and start no chain.
    let envelope = stored
        .iter()
        .find(|e| e.event_id == summary_event_id(&s, late.day))
        .expect("late summary");
    assert_eq!(envelope.occurred_at, late.last_at);
    assert_eq!(
        (envelope.causation_id, envelope.correlation_id),
        (None, envelope.event_id)
    );
    assert_eq!(envelope.actor, "system:retention");

    // A stream that does not exist folds to nothing.
    let none = fold_activity(&store, "nobody", &policy, now()).await.expect("fold");
    assert_eq!(none, Fold::default());
}

#[test]
fn the_legal_period_ends_at_the_start_of_the_month_after() {
    let policy = RetentionPolicy::new(90, 7).expect("policy");
    let at = |y, m, d, h| Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().unwrap_or_default();
    assert_eq!(policy.legal_expires_at(at(2026, 3, 14, 9)), at(2033, 4, 1, 0));
    assert_eq!(policy.legal_expires_at(at(2026, 12, 31, 23)), at(2034, 1, 1, 0));
    assert_eq!(
        policy.legal_expires_at(at(2026, 3, 1, 0)),
        at(2033, 4, 1, 0),
        "never before the period is over"
    );
    assert!(expires_after_legal_period("order-o-1", false));
    assert!(!expires_after_legal_period("customer-c-1", false));
    assert!(expires_after_legal_period("customer-c-1", true));
    assert!(!expires_after_legal_period("cart-1", true));
}
