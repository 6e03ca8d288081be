//! `crm-local serve` as a user runs it: a registered customer's 360 view,
//! timeline and consent ledger appear shortly after the command, and
//! `/health` shows every consumer caught up. (How long it took is printed,
//! not asserted: timings belong in benchmarks.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 request over a fresh connection: (status, JSON body). A
/// connection the loaded test machine drops is tried again, a few times.
async fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let mut last = None;
    for _ in 0..5 {
        match try_http(addr, method, path, body).await {
            Ok(answer) => return answer,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    panic!("{method} {path}: {last:?}");
}

async fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, serde_json::Value)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer serve-test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let payload = text.split("\r\n\r\n").nth(1).unwrap_or("");
    Ok((status, serde_json::from_str(payload).unwrap_or(serde_json::Value::Null)))
}

#[tokio::test]
async fn projections_appear_and_health_shows_no_lag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_crm-local"))
        .args(["serve", "--addr", "127.0.0.1:0", "--token", "serve-test", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start crm-local serve");
    let stdout = child.stdout.take().expect("stdout");
    let server = Server(child);
    let mut addr = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(url) = line.trim().strip_prefix("url:") {
            addr = url.trim().trim_start_matches("http://").to_string();
            break;
        }
    }
    assert!(!addr.is_empty(), "serve printed its url");

    let body = serde_json::json!({
        "email": "served@example.com", "first_name": "Ser", "last_name": "Ved", "source": "web",
        "marketing_consent": {"email": true}, "terms_accepted": true, "ip": "203.0.113.9", "user_agent": "serve-test"
    })
    .to_string();
    let started = Instant::now();
    let (status, created) = http(&addr, "POST", "/customers", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();

    let deadline = started + Duration::from_secs(30);
    let mut seen = None;
    while Instant::now() < deadline {
        let (p, profile) = http(&addr, "GET", &format!("/customers/{id}"), None).await;
        let (t, timeline) = http(&addr, "GET", &format!("/customers/{id}/timeline"), None).await;
        let (c, consents) = http(&addr, "GET", &format!("/customers/{id}/consents"), None).await;
        if p == 200
            && t == 200
            && c == 200
            && timeline["items"].as_array().map(Vec::len) == Some(3)
            && consents["current"].as_array().map(Vec::len) == Some(1)
        {
            seen = Some((started.elapsed(), profile));
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (elapsed, profile) = seen.expect("the projections caught up");
    println!("customer 360, timeline and consent ledger visible {elapsed:?} after the command");
    assert_eq!(profile["email"], "served@example.com");
    assert_eq!(profile["consent_summary"], serde_json::json!(["marketing:email"]));

    // The journeys the registration started append events of their own; the
    // bus catches up with those too, and then every consumer shows no lag.
    let mut health = serde_json::Value::Null;
    while Instant::now() < deadline {
        let (status, answer) = http(&addr, "GET", "/health", None).await;
        assert_eq!(status, 200);
        health = answer;
        let caught_up = health["consumers"]
            .as_array()
            .is_some_and(|cs| cs.iter().all(|c| c["lag"] == 0));
        if caught_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(health["status"], "ok");
    let consumers = health["consumers"].as_array().expect("consumers");
    assert!(!consumers.is_empty());
    assert!(
        consumers.iter().all(|c| c["lag"] == 0 && c["dead_letters"] == 0),
        "{health}"
    );
    drop(server);
}
