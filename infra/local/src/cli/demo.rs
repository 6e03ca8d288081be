//! `crm-local demo`: the seed's end-to-end story on a virtual clock, through
//! the real API router in-process. A customer registers with marketing email
//! consent, verifies the email, fills a cart, leaves it; the cart is abandoned
//! after 60 minutes, the abandoned-cart campaign reminds 60 minutes later, and
//! an order of the cart (through the order API), paid, ends the journey and is
//! confirmed. Prints the timeline of every stored event and
//! the explain chain of the reminder.

use crate::adapters::data_dir::{database_path, DataDir};
use crate::runtime::bus::BUILT_IN_TEMPLATE;
use crate::runtime::{ClockChoice, LocalRuntime, RuntimeError};
use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Duration, Utc};
use crm_core::event::EventEnvelope;
use crm_core::journey::explain::explain;
use crm_core::ports::StoreError;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use tower::ServiceExt;

/// The bearer token of the in-process calls.
const TOKEN: &str = "demo-token";

/// Where the story starts: a fixed date, so every run reads the same.
pub const START: &str = "2026-11-23T09:00:00Z";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Step(String),
}

fn step(msg: impl Into<String>) -> DemoError {
    DemoError::Step(msg.into())
}

struct Demo {
    runtime: LocalRuntime,
    app: axum::Router,
    start: DateTime<Utc>,
    out: String,
}

impl Demo {
    fn say(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.out, "{}", line.as_ref());
    }

    fn now(&self) -> String {
        let now = self.runtime.clock.now();
        format!("T+{}", minutes_label(now - self.start))
    }

    /// Calls the router and settles the bus; an answer outside 2xx is an error.
    async fn call(&mut self, method: &str, path: &str, body: Option<Value>) -> Result<Value, DemoError> {
        let builder = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"));
        let request = match body {
            Some(b) => builder
                .header("content-type", "application/json")
                .body(Body::from(b.to_string())),
            None => builder.body(Body::empty()),
        }
        .map_err(|e| step(format!("request {method} {path}: {e}")))?;
        let response = self
            .app
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| step(format!("{method} {path}: {e}")))?;
        self.runtime.bus.settle().await?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .map_err(|e| step(format!("{method} {path}: reading the answer: {e}")))?;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        let line = format!("{}  {method} {path} -> {}", self.now(), status.as_u16());
        self.say(line);
        if !status.is_success() {
            return Err(step(format!("{method} {path} answered {status}: {body}")));
        }
        Ok(body)
    }

    async fn advance(&mut self, minutes: i64) -> Result<(), DemoError> {
        self.runtime.advance(Duration::minutes(minutes)).await?;
        let line = format!("{}  (the virtual clock moves {minutes} minutes)", self.now());
        self.say(line);
        Ok(())
    }

    async fn all_events(&self) -> Result<Vec<EventEnvelope>, DemoError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.runtime.events.read_all(cursor.as_deref(), 1000).await?;
            out.extend(page.events);
            match page.next {
                Some(n) => cursor = Some(n),
                None => return Ok(out),
            }
        }
    }
}

fn minutes_label(d: Duration) -> String {
    let m = d.num_minutes();
    format!("{:02}:{:02}", m / 60, m % 60)
}

/// A short summary of an event's data: its most telling fields.
fn summary(e: &EventEnvelope) -> String {
    const KEYS: [&str; 16] = [
        "email",
        "purpose",
        "channel",
        "product_id",
        "quantity",
        "unit_price_minor",
        "total_value_minor",
        "total_minor",
        "currency",
        "confirmation_number",
        "campaign_id",
        "campaign_version",
        "step_id",
        "template",
        "rule",
        "reason",
    ];
    let mut parts = Vec::new();
    if let Some(map) = e.data.as_object() {
        for key in KEYS {
            match map.get(key) {
                Some(Value::String(s)) => parts.push(format!("{key}={s}")),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => parts.push(format!("{key}={v}")),
                _ => {}
            }
        }
    }
    parts.join(" ")
}

/// Runs the story in `data_dir` (a fresh temporary directory when `None`) and returns what it prints.
pub async fn run_story(data_dir: Option<&Path>) -> Result<String, DemoError> {
    let temp;
    let dir: PathBuf = match data_dir {
        Some(d) => DataDir::open(d)?.path().to_path_buf(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let db = database_path(&dir);
    if db.exists() {
        return Err(step(format!(
            "{} already holds a database; the demo needs a fresh directory",
            dir.display()
        )));
    }
    let start = DateTime::parse_from_rfc3339(START)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| step(format!("start date: {e}")))?;
    let runtime = LocalRuntime::open_with_clock(&db, BUILT_IN_TEMPLATE, ClockChoice::Virtual(start))?;
    let app = runtime.app(TOKEN.to_string());
    let mut demo = Demo {
        runtime,
        app,
        start,
        out: String::new(),
    };
    demo.say(format!(
        "crm-local demo: a virtual clock from {START}, data in {}",
        dir.display()
    ));
    demo.say("");
    demo.say("== The story");

    // Registration with marketing email consent: the welcome and email-verification journeys start.
    let customer = demo
        .call(
            "POST",
            "/customers",
            Some(json!({
                "email": "grace.hopper@example.com",
                "first_name": "Grace",
                "last_name": "Hopper",
                "phone": "+12025550123",
                "source": "web",
                "marketing_consent": { "email": true, "sms": false, "push": false },
                "terms_accepted": true,
                "ip": "198.51.100.4",
                "user_agent": "crm-local demo",
                "timezone": "Europe/Berlin",
                "locale": "en-GB"
            })),
        )
        .await?;
    let customer_id = customer["id"]
        .as_str()
        .ok_or_else(|| step("the registration answer has no id"))?
        .to_string();

    // Email verification with the token the registration requested.
    let events = demo
        .call("GET", &format!("/customers/{customer_id}/events?limit=500"), None)
        .await?;
    let token = events["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .rev()
                .find(|e| e["type"] == "EmailVerificationRequested")
                .and_then(|e| e["data"]["token"].as_str())
        })
        .ok_or_else(|| step("no EmailVerificationRequested with a token"))?
        .to_string();
    demo.call(
        "POST",
        &format!("/customers/{customer_id}/email/verify"),
        Some(json!({ "token": token })),
    )
    .await?;

    // Browsing: a product view (the browse-abandonment journey starts, and
    // ends when the lamp goes into the cart).
    demo.call(
        "POST",
        &format!("/customers/{customer_id}/activity"),
        Some(json!({
            "type": "ProductViewed",
            "product_id": "lamp-01",
            "name": "Desk lamp",
            "category": "lighting",
            "price_minor": 4000,
            "session_id": "demo-session",
            "utm": { "source": "newsletter", "medium": "email", "campaign": "autumn" }
        })),
    )
    .await?;

    // A cart worth 65.00.
    let cart = demo
        .call(
            "POST",
            "/carts",
            Some(json!({ "customer_id": customer_id, "currency": "EUR" })),
        )
        .await?;
    let cart_id = cart["id"]
        .as_str()
        .ok_or_else(|| step("the cart answer has no id"))?
        .to_string();
    for (product, name, price) in [("lamp-01", "Desk lamp", 4000), ("shade-02", "Lamp shade", 2500)] {
        demo.call(
            "POST",
            &format!("/carts/{cart_id}/items"),
            Some(json!({ "product_id": product, "name": name, "quantity": 1, "unit_price_minor": price })),
        )
        .await?;
    }

    // 60 minutes without activity: CartAbandoned. 60 more: the reminder.
    demo.advance(60).await?;
    demo.advance(60).await?;

    // The cart ordered, through the order API, and paid: the order ends the
    // abandoned-cart journey, and its confirmation starts the order-confirmation one.
    demo.advance(30).await?;
    let order = demo
        .call(
            "POST",
            "/orders",
            Some(json!({
                "customer_id": customer_id,
                "cart_id": cart_id,
                "tax_minor": 0,
                "shipping_minor": 0,
                "total_minor": 6500,
                "shipping_address": { "line1": "Unter den Linden 1", "city": "Berlin", "postal_code": "10117", "country": "DE" }
            })),
        )
        .await?;
    let order_id = order["id"]
        .as_str()
        .ok_or_else(|| step("the order answer has no id"))?
        .to_string();
    for status in ["initiated", "succeeded"] {
        demo.call(
            "POST",
            &format!("/orders/{order_id}/payments"),
            Some(json!({
                "payment_id": "pay-demo-1",
                "status": status,
                "method": "credit-card",
                "amount_minor": 6500,
                "currency": "EUR",
                "provider": "demo",
                "transaction_id": "tx-demo-1"
            })),
        )
        .await?;
    }
    demo.advance(24 * 60).await?;

    // The timeline.
    let all = demo.all_events().await?;
    demo.say("");
    demo.say(format!("== Timeline ({} events)", all.len()));
    for e in &all {
        let line = format!(
            "T+{}  {:<52} v{:<3} {:<28} {}",
            minutes_label(e.occurred_at - start),
            e.stream_id,
            e.version,
            e.event_type,
            summary(e)
        );
        demo.say(line.trim_end());
    }

    // Why was the reminder sent?
    let reminder = all
        .iter()
        .find(|e| e.event_type == "MessageRequested" && e.data["template"] == "abandoned-cart-reminder")
        .ok_or_else(|| step("no abandoned-cart reminder was requested"))?;
    let message_id = reminder.data["message_id"]
        .as_str()
        .ok_or_else(|| step("the reminder has no message_id"))?
        .to_string();
    let why = explain(demo.runtime.events.as_ref(), demo.runtime.docs.as_ref(), &message_id)
        .await?
        .ok_or_else(|| step(format!("explain knows no message {message_id}")))?;
    demo.say("");
    demo.say(format!(
        "== Why was message {message_id} sent? (campaign {}, journey {})",
        why.campaign, why.instance_id
    ));
    for l in &why.chain {
        let line = format!(
            "{:<8} {:<24} {}@{}  {}  {}  {}",
            l.role,
            l.event_type,
            l.stream_id,
            l.version,
            l.occurred_at.to_rfc3339(),
            l.actor,
            l.step_id.as_deref().map(|s| format!("step={s}")).unwrap_or_default()
        );
        demo.say(line.trim_end());
    }

    // What the channel function sent: the local mail sink.
    let mail = demo.runtime.mail.list().await?;
    demo.say("");
    demo.say(format!(
        "== Mail sent ({} messages; `crm-local serve --data-dir {}` shows them at /_local/mail)",
        mail.len(),
        dir.display()
    ));
    for m in &mail {
        let unsubscribe = m
            .email()
            .and_then(|e| e.header("List-Unsubscribe").map(str::to_string))
            .map(|h| format!("  one-click: {h}"))
            .unwrap_or_default();
        let line = format!(
            "T+{}  #{:<3} {:<5} {:<26} {}{}",
            minutes_label(m.sent_at - start),
            m.seq,
            m.channel,
            m.recipient,
            m.subject,
            unsubscribe
        );
        demo.say(line.trim_end());
    }
    let parked = crate::runtime::bus::SqliteDeadLetters::open(&db)?.list().await?;
    if !parked.is_empty() {
        demo.say("");
        demo.say(format!("== Dead letters ({})", parked.len()));
        for p in &parked {
            demo.say(format!("#{} {}: {}", p.id, p.letter.consumer, p.letter.reason));
        }
    }
    Ok(demo.out)
}

/// The `demo` command: runs the story and prints it.
pub async fn run(data_dir: Option<&Path>) -> Result<(), DemoError> {
    let out = run_story(data_dir).await?;
    print!("{out}");
    Ok(())
}
