//! Helpers for the workspace-level tests: the API over a real SQLite file,
//! called in-process through tower.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use crm_core::ports::EventStore;
use crm_local::runtime::bus::BUILT_IN_TEMPLATE;
use crm_local::runtime::{ClockChoice, LocalRuntime};
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;

pub const TOKEN: &str = "test-token";

/// The API as `crm-local serve` runs it (store, bus, projections), over a
/// fresh SQLite file. After each call the bus is settled, so reads see every
/// projection caught up.
pub struct TestApi {
    pub app: Router,
    /// The runtime's event store (decrypting; the raw rows are in
    /// `runtime.stored_events`).
    pub store: Arc<dyn EventStore>,
    pub runtime: LocalRuntime,
    _dir: tempfile::TempDir,
}

/// An answer: status, headers and JSON body (Null when empty).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl TestApi {
    pub fn new() -> Self {
        Self::with_clock(ClockChoice::System)
    }

    /// The API on a virtual clock starting at `start` (move it with `runtime.advance`).
    pub fn at(start: chrono::DateTime<chrono::Utc>) -> Self {
        Self::with_clock(ClockChoice::Virtual(start))
    }

    /// The API over the database an earlier run left in `dir` (system clock).
    pub fn open_in(dir: tempfile::TempDir) -> Self {
        Self::over(dir, ClockChoice::System)
    }

    fn with_clock(clock: ClockChoice) -> Self {
        Self::over(tempfile::tempdir().expect("temp dir"), clock)
    }

    fn over(dir: tempfile::TempDir, clock: ClockChoice) -> Self {
        let runtime =
            LocalRuntime::open_with_clock(&dir.path().join("crm.db"), BUILT_IN_TEMPLATE, clock).expect("open runtime");
        let app = runtime.app(TOKEN.to_string());
        TestApi {
            app,
            store: runtime.events.clone(),
            runtime,
            _dir: dir,
        }
    }

    /// The SQLite database file the runtime stores everything in.
    pub fn db_path(&self) -> std::path::PathBuf {
        self._dir.path().join("crm.db")
    }

    /// The `Authorization` header of the runtime's own ingestion source
    /// (`local`): HTTP Basic with its write key as the user name.
    pub fn write_key_header(&self) -> String {
        use base64::Engine;
        let user = format!("{}:", self.runtime.local_write_key);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user))
    }

    /// Sends Segment messages to `/v1/<call>` as the source `local`.
    pub async fn segment(&self, call: &str, body: &serde_json::Value) -> Answer {
        let auth = self.write_key_header();
        self.call_with(
            "POST",
            &format!("/v1/{call}"),
            Some(&body.to_string()),
            &[("authorization", &auth)],
        )
        .await
    }

    /// Sends a request with the right bearer token.
    pub async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        self.call_with(method, path, body, &[("authorization", &format!("Bearer {TOKEN}"))])
            .await
    }

    /// Sends a request with exactly these headers (plus content-type for a body).
    pub async fn call_with(&self, method: &str, path: &str, body: Option<&str>, headers: &[(&str, &str)]) -> Answer {
        self.call_raw(method, path, body.map(|b| b.as_bytes().to_vec()), headers)
            .await
    }

    pub async fn call_raw(&self, method: &str, path: &str, body: Option<Vec<u8>>, headers: &[(&str, &str)]) -> Answer {
        let mut builder = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let typed = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        let request = match body {
            Some(b) if typed => builder.body(Body::from(b)),
            Some(b) => builder.header("content-type", "application/json").body(Body::from(b)),
            None => builder.body(Body::empty()),
        }
        .expect("request");
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        self.runtime.bus.settle().await.expect("bus settles");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer { status, headers, body }
    }

    /// Posts an `application/x-www-form-urlencoded` body, without a bearer token
    /// (as a browser or a mail client does).
    pub async fn post_form(&self, path: &str, form: &str) -> Answer {
        self.call_raw(
            "POST",
            path,
            Some(form.as_bytes().to_vec()),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await
    }

    /// A signed unsubscribe / preference-centre token of the runtime's secret.
    pub fn unsubscribe_token(
        &self,
        customer_id: &str,
        purpose: crm_core::consent::Purpose,
        channel: crm_core::consent::Channel,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> String {
        self.runtime
            .unsubscribe
            .sign(&crm_core::messaging::unsubscribe::UnsubscribeToken {
                customer_id: customer_id.to_string(),
                purpose,
                channel,
                expires_at,
            })
    }

    /// Moves the virtual clock `minutes` forward, firing what falls due.
    pub async fn advance_minutes(&self, minutes: i64) {
        self.runtime
            .advance(chrono::Duration::minutes(minutes))
            .await
            .expect("advance the virtual clock");
    }

    /// Registers a customer (the body of [`registration`]); returns its id.
    pub async fn register(&self, email: &str) -> String {
        let a = self.call("POST", "/customers", Some(&registration(email))).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        a.body["id"].as_str().expect("customer id").to_string()
    }

    /// Opens a EUR cart for the customer holding `quantity` desk lamps at
    /// `unit_price_minor` each; returns the cart id.
    pub async fn cart_with_lamps(&self, customer_id: &str, quantity: u32, unit_price_minor: i64) -> String {
        let body = serde_json::json!({ "customer_id": customer_id, "currency": "EUR" }).to_string();
        let cart = self.call("POST", "/carts", Some(&body)).await;
        assert_eq!(cart.status, 201, "{:?}", cart.body);
        let cart_id = cart.body["id"].as_str().expect("cart id").to_string();
        let item = serde_json::json!({ "product_id": "lamp", "name": "Desk lamp", "quantity": quantity,
            "unit_price_minor": unit_price_minor });
        let added = self
            .call("POST", &format!("/carts/{cart_id}/items"), Some(&item.to_string()))
            .await;
        assert_eq!(added.status, 200, "{:?}", added.body);
        cart_id
    }

    /// Places a EUR order of `total` for the customer (one item `name` of
    /// `category`, shipped to Berlin) and pays it by card; returns the order id.
    pub async fn paid_order(&self, customer_id: &str, total: i64, name: &str, category: &str) -> String {
        let body = serde_json::json!({
            "customer_id": customer_id,
            "items": [{ "product_id": "sku-1", "name": name, "category": category, "quantity": 1, "unit_price_minor": total }],
            "tax_minor": 0, "shipping_minor": 0, "total_minor": total, "currency": "EUR",
            "shipping_address": { "line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE" }
        });
        let order = self.call("POST", "/orders", Some(&body.to_string())).await;
        assert_eq!(order.status, 201, "{:?}", order.body);
        let order_id = order.body["id"].as_str().expect("order id").to_string();
        let payment = serde_json::json!({
            "payment_id": format!("pay-{order_id}"), "status": "succeeded", "method": "credit-card",
            "amount_minor": total, "currency": "EUR", "transaction_id": "tx-1"
        });
        let paid = self
            .call(
                "POST",
                &format!("/orders/{order_id}/payments"),
                Some(&payment.to_string()),
            )
            .await;
        assert_eq!(paid.status, 200, "{:?}", paid.body);
        order_id
    }

    /// Every stored event of one type, in store order.
    pub async fn events_of_type(&self, event_type: &str) -> Vec<crm_core::event::EventEnvelope> {
        self.all_events()
            .await
            .into_iter()
            .filter(|e| e.event_type == event_type)
            .collect()
    }

    /// Every stored event, in store order.
    pub async fn all_events(&self) -> Vec<crm_core::event::EventEnvelope> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.store.read_all(cursor.as_deref(), 1000).await.expect("read all");
            out.extend(page.events);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return out,
            }
        }
    }

    /// How many events the store holds in all.
    pub async fn event_count(&self) -> usize {
        self.all_events().await.len()
    }
}

impl Default for TestApi {
    fn default() -> Self {
        Self::new()
    }
}

/// A valid registration body for `email`.
pub fn registration(email: &str) -> String {
    serde_json::json!({
        "email": email,
        "first_name": "Grace",
        "last_name": "Hopper",
        "phone": "+12025550123",
        "source": "web",
        "marketing_consent": { "email": true, "sms": false, "push": true },
        "terms_accepted": true,
        "ip": "198.51.100.4",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "timezone": "America/New_York",
        "locale": "en-US"
    })
    .to_string()
}

/// An RFC 3339 instant, for a test's virtual clock.
pub fn time(rfc3339: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&chrono::Utc))
        .expect("an RFC 3339 time")
}

/// The tables of the SQLite database file `db`.
pub fn sqlite_tables(db: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open the database file");
    let mut s = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("tables");
    let names = s.query_map([], |r| r.get::<_, String>(0)).expect("query");
    names.map(|n| n.expect("name")).collect()
}

/// Every row of `table` in the SQLite database file `db`, as text: its cells
/// joined by " | " (text as it is, blobs as lossy UTF-8, the rest by Debug),
/// for scans of what is stored at rest.
pub fn sqlite_rows(db: &std::path::Path, table: &str) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).expect("open the database file");
    let mut statement = conn.prepare(&format!("SELECT * FROM \"{table}\"")).expect("select");
    let columns = statement.column_count();
    let rows = statement
        .query_map([], |row| {
            let mut cells = Vec::new();
            for i in 0..columns {
                let cell: rusqlite::types::Value = row.get(i)?;
                cells.push(match cell {
                    rusqlite::types::Value::Text(t) => t,
                    rusqlite::types::Value::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
                    other => format!("{other:?}"),
                });
            }
            Ok(cells.join(" | "))
        })
        .expect("query");
    rows.map(|r| r.expect("row")).collect()
}
