//! Local timers: the SQLite scheduler, and timers fired against a virtual
//! clock through the bus to a target that takes them.

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use crm_core::consumer::ConsumerGroup;
use crm_core::pattern::EventPattern;
use crm_core::ports::DeadLetterQueue;
use crm_core::scheduler::{timer_name, Scheduler, SchedulerError, TimerHandler, TimerKind, TimerPayload};
use crm_local::adapters::timers::SqliteScheduler;
use crm_local::runtime::bus::{LocalBus, Rule, SqliteDeadLetters, Target, BUILT_IN_TEMPLATE};
use crm_local::runtime::{ClockChoice, LocalRuntime, RuntimeError};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-29T00:30:00Z")
        .map(|t| t.with_timezone(&Utc))
        .expect("start time")
}

fn timer(stream: &str, due_at: DateTime<Utc>, version: u64) -> TimerPayload {
    TimerPayload {
        name: timer_name(TimerKind::CartInactivity, &[stream]),
        kind: TimerKind::CartInactivity,
        stream_id: stream.to_string(),
        customer_id: None,
        due_at,
        set_at_version: version,
        data: serde_json::json!({ "step": "remind" }),
    }
}

#[tokio::test]
async fn the_sqlite_scheduler_creates_replaces_cancels_and_finds_due_timers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scheduler = SqliteScheduler::open(&dir.path().join("crm.db")).expect("open");
    let a = timer("cart-a", start() + Duration::minutes(30), 1);
    let b = timer("cart-b", start() + Duration::minutes(10), 1);

    scheduler.schedule(a.clone()).await.expect("schedule a");
    scheduler.schedule(b.clone()).await.expect("schedule b");
    assert_eq!(scheduler.get(&a.name).await.expect("get"), Some(a.clone()));
    assert_eq!(scheduler.get("crm-ci-missing").await.expect("get missing"), None);

    // Due: at or before now, earliest first.
    assert!(scheduler.due(start()).await.expect("due").is_empty());
    assert_eq!(scheduler.due(b.due_at).await.expect("due"), vec![b.clone()]);
    assert_eq!(
        scheduler.due(start() + Duration::hours(1)).await.expect("due"),
        vec![b.clone(), a.clone()]
    );

    // Same name: replaced (and repeating is safe).
    let later = timer("cart-a", start() + Duration::hours(2), 4);
    scheduler.schedule(later.clone()).await.expect("reschedule");
    scheduler.schedule(later.clone()).await.expect("reschedule again");
    assert_eq!(scheduler.get(&a.name).await.expect("get"), Some(later.clone()));
    assert_eq!(
        scheduler.due(start() + Duration::hours(1)).await.expect("due"),
        vec![b.clone()]
    );

    // A fired timer is only removed if it was not rescheduled meanwhile.
    assert!(!scheduler.remove_fired(&a).await.expect("remove stale"));
    assert_eq!(scheduler.get(&a.name).await.expect("get"), Some(later.clone()));

    scheduler.cancel(&b.name).await.expect("cancel");
    scheduler.cancel(&b.name).await.expect("cancel again");
    assert_eq!(scheduler.get(&b.name).await.expect("get"), None);
    assert!(scheduler.remove(&later.name).await.expect("remove"));
    assert!(!scheduler.remove(&later.name).await.expect("remove missing"));
}

/// Records the timers it receives; fails the first `fail` deliveries.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<TimerPayload>>,
    fail: Mutex<u32>,
}

#[async_trait]
impl TimerHandler for Recorder {
    async fn on_timer(&self, payload: &TimerPayload) -> Result<(), SchedulerError> {
        {
            let mut fail = self
                .fail
                .lock()
                .map_err(|e| SchedulerError::Unavailable(e.to_string()))?;
            if *fail > 0 {
                *fail -= 1;
                return Err(SchedulerError::Unavailable("not now".into()));
            }
        }
        self.seen
            .lock()
            .map_err(|e| SchedulerError::Unavailable(e.to_string()))?
            .push(payload.clone());
        Ok(())
    }
}

impl Recorder {
    fn names(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|s| s.iter().map(|t| t.name.clone()).collect())
            .unwrap_or_default()
    }
}

/// A virtual-clock runtime whose bus has one more target: `campaign-test`,
/// taking timers from `crm.scheduler` through `recorder`.
fn runtime_with_timer_target(db: &Path, recorder: Arc<Recorder>) -> LocalRuntime {
    let mut runtime =
        LocalRuntime::open_with_clock(db, BUILT_IN_TEMPLATE, ClockChoice::Virtual(start())).expect("open runtime");
    let pattern = EventPattern::from_value(&serde_json::json!({
        "source": ["crm.scheduler"],
        "detail-type": ["TimerFired"]
    }))
    .expect("pattern");
    let dead_letters: Arc<dyn DeadLetterQueue> = Arc::new(SqliteDeadLetters::open(db).expect("dead letters"));
    let group = ConsumerGroup::new(
        "campaign-test",
        Vec::new(),
        runtime.events.clone(),
        runtime.docs.clone(),
        dead_letters,
    );
    let target = Target::new(
        Rule {
            target: "campaign-test".into(),
            pattern,
        },
        group,
    )
    .with_timer_handler(recorder);
    let bus = LocalBus::new(runtime.stored_events.clone(), db, vec![target])
        .expect("bus")
        .with_retries(2, std::time::Duration::from_millis(1));
    runtime.bus = Arc::new(bus);
    runtime
}

#[tokio::test]
async fn timers_fire_when_the_virtual_clock_passes_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recorder = Arc::new(Recorder::default());
    let runtime = runtime_with_timer_target(&dir.path().join("crm.db"), recorder.clone());
    let soon = timer("cart-1", start() + Duration::minutes(30), 1);
    let later = timer("cart-2", start() + Duration::minutes(90), 1);
    runtime.scheduler.schedule(soon.clone()).await.expect("schedule");
    runtime.scheduler.schedule(later.clone()).await.expect("schedule");

    // Not due yet.
    let now = runtime.advance(Duration::minutes(29)).await.expect("advance");
    assert_eq!(now, start() + Duration::minutes(29));
    assert!(recorder.names().is_empty());

    runtime.advance(Duration::minutes(1)).await.expect("advance");
    assert_eq!(recorder.names(), vec![soon.name.clone()]);
    assert_eq!(
        runtime.scheduler.get(&soon.name).await.expect("get"),
        None,
        "fired: removed"
    );
    assert_eq!(
        runtime.scheduler.get(&later.name).await.expect("get"),
        Some(later.clone())
    );

    // Rescheduled before it fires: fires once, at the new time.
    let moved = timer("cart-2", start() + Duration::minutes(120), 2);
    runtime.scheduler.schedule(moved.clone()).await.expect("reschedule");
    runtime.advance(Duration::minutes(60)).await.expect("advance");
    assert_eq!(recorder.names(), vec![soon.name.clone()]);
    runtime.advance(Duration::minutes(30)).await.expect("advance");
    assert_eq!(recorder.names(), vec![soon.name.clone(), moved.name.clone()]);
    let seen = recorder.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.last(), Some(&moved));

    // Cancelled timers never fire.
    let cancelled = timer("cart-3", start() + Duration::minutes(150), 1);
    runtime.scheduler.schedule(cancelled.clone()).await.expect("schedule");
    runtime.scheduler.cancel(&cancelled.name).await.expect("cancel");
    runtime.advance(Duration::hours(1)).await.expect("advance");
    assert_eq!(recorder.names().len(), 2);
}

#[tokio::test]
async fn a_timer_that_keeps_failing_is_parked_and_can_be_redriven() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recorder = Arc::new(Recorder::default());
    *recorder.fail.lock().expect("lock") = 2;
    let runtime = runtime_with_timer_target(&dir.path().join("crm.db"), recorder.clone());
    let t = timer("cart-9", start() + Duration::minutes(5), 1);
    runtime.scheduler.schedule(t.clone()).await.expect("schedule");
    runtime.advance(Duration::minutes(5)).await.expect("advance");

    assert!(recorder.names().is_empty());
    assert_eq!(runtime.scheduler.get(&t.name).await.expect("get"), None);
    let letters = runtime.bus.dead_letters().list().await.expect("list");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].letter.consumer, "campaign-test");
    assert_eq!(letters[0].letter.payload["detail-type"], "TimerFired");
    assert_eq!(letters[0].letter.payload["source"], "crm.scheduler");

    assert!(runtime.bus.redrive(letters[0].id).await.expect("redrive"));
    assert_eq!(recorder.names(), vec![t.name.clone()]);
    assert!(runtime.bus.dead_letters().list().await.expect("list").is_empty());
}

#[tokio::test]
async fn the_system_clock_cannot_be_advanced_and_serves_no_dev_routes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = LocalRuntime::open(&dir.path().join("crm.db"), BUILT_IN_TEMPLATE).expect("open");
    assert!(matches!(
        runtime.advance(Duration::minutes(1)).await,
        Err(RuntimeError::NotVirtual)
    ));
    let addr = serve(runtime.app("timers-test".into())).await;
    assert_eq!(http(&addr, "GET", "/dev/clock", None, true).await.0, 404);
}

#[tokio::test]
async fn the_dev_clock_routes_read_and_move_virtual_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = LocalRuntime::open_with_clock(
        &dir.path().join("crm.db"),
        BUILT_IN_TEMPLATE,
        ClockChoice::Virtual(start()),
    )
    .expect("open");
    let addr = serve(runtime.app("timers-test".into())).await;

    let (status, body) = http(&addr, "GET", "/dev/clock", None, true).await;
    assert_eq!(status, 200);
    assert_eq!(body["now"], "2026-03-29T00:30:00Z");
    let (status, body) = http(&addr, "POST", "/dev/clock/advance", Some(r#"{"minutes": 90}"#), true).await;
    assert_eq!(status, 200);
    assert_eq!(body["now"], "2026-03-29T02:00:00Z");
    let (_, body) = http(&addr, "POST", "/dev/clock/advance", Some(r#"{"seconds": 5}"#), true).await;
    assert_eq!(body["now"], "2026-03-29T02:00:05Z");
    assert_eq!(
        http(&addr, "POST", "/dev/clock/advance", Some(r#"{"hours": 1}"#), true)
            .await
            .0,
        400
    );
    assert_eq!(http(&addr, "GET", "/dev/clock", None, false).await.0, 401);
    // The API is still there, behind the same token.
    assert_eq!(http(&addr, "GET", "/health", None, true).await.0, 200);
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// One HTTP/1.1 request: (status, JSON body).
async fn http(addr: &str, method: &str, path: &str, body: Option<&str>, auth: bool) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let auth = if auth {
        "Authorization: Bearer timers-test\r\n"
    } else {
        ""
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let payload = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(payload).unwrap_or(serde_json::Value::Null))
}
