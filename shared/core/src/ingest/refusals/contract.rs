//! The contract every [`RefusalLog`] adapter passes (SQLite in crm-local,
//! DynamoDB in crm-aws): [`check`] on a fresh log.

use super::*;
use serde_json::json;

fn refusal(source: &str, at: DateTime<Utc>, n: usize) -> Refusal {
    let raw = json!({ "type": "track", "messageId": format!("m-{n}"), "event": "Order Completed",
        "userId": "ada@example.com", "properties": { "total": "x" } });
    Refusal::new(
        source,
        &raw,
        None,
        &Rejection::new("properties.total", "must be a number"),
        Some(&IdentifierHasher::new(b"contract")),
        at,
    )
}

/// Records, lists newest first in pages, keeps sources apart and
/// forgets what expired.
pub async fn check(log: Arc<dyn RefusalLog>) {
    let source = format!("contract-{}", uuid::Uuid::new_v4().simple());
    let other = format!("{source}-other");
    let t0 = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    let now = t0 + Duration::days(1);
    let old = refusal(&source, t0 - Duration::days(KEPT_FOR_DAYS) - Duration::seconds(1), 0);
    log.record(&old).await.expect("record an expired refusal");
    let kept: Vec<Refusal> = (1..=5)
        .map(|n| refusal(&source, t0 + Duration::milliseconds(n as i64), n))
        .collect();
    for r in &kept {
        log.record(r).await.expect("record");
    }
    log.record(&refusal(&other, t0, 9))
        .await
        .expect("record another source's");

    let first = log.list(&source, None, 2, now).await.expect("first page");
    assert_eq!(
        first.refusals,
        vec![kept[4].clone(), kept[3].clone()],
        "newest first, whole"
    );
    let after = first.next_after.clone().expect("a next page");
    let second = log.list(&source, Some(&after), 2, now).await.expect("second page");
    assert_eq!(second.refusals, vec![kept[2].clone(), kept[1].clone()]);
    let third = log
        .list(&source, second.next_after.as_deref(), 2, now)
        .await
        .expect("third page");
    assert_eq!(third.refusals, vec![kept[0].clone()], "the expired one is not listed");
    assert_eq!(third.next_after, None);

    let all = log.list(&source, None, MAX_PAGE, now).await.expect("all");
    assert_eq!(all.refusals.len(), 5);
    assert_eq!(all.next_after, None);
    let others = log.list(&other, None, MAX_PAGE, now).await.expect("other source");
    assert_eq!(others.refusals.len(), 1, "sources are apart");
    let none = log.list("no-such-source", None, MAX_PAGE, now).await.expect("none");
    assert!(none.refusals.is_empty());

    let later = now + Duration::days(KEPT_FOR_DAYS);
    let gone = log.list(&source, None, MAX_PAGE, later).await.expect("after a week");
    assert!(
        gone.refusals.is_empty(),
        "kept {KEPT_FOR_DAYS} days: {:?}",
        gone.refusals
    );
}
