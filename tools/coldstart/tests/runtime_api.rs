//! The harness's minimal Runtime API, driven by hand and by a fake bootstrap
//! (no release build: cheap enough for every CI run).

mod common;

use common::request;

use crm_coldstart::runtime_api::{HitKind, RuntimeApi, FUNCTION_ARN, REQUEST_ID};
use crm_coldstart::{measure, Outcome, Run};
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn serves_next_and_accepts_a_response_on_one_keep_alive_connection() {
    let api = RuntimeApi::start(br#"{"hello":"world"}"#.to_vec(), Duration::from_secs(3)).expect("start");
    let mut stream = TcpStream::connect(api.addr()).expect("connect");

    let (status, headers, body) = request(&mut stream, "GET", "/2018-06-01/runtime/invocation/next", "");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body, r#"{"hello":"world"}"#);
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(header("lambda-runtime-aws-request-id"), Some(REQUEST_ID));
    assert_eq!(header("lambda-runtime-invoked-function-arn"), Some(FUNCTION_ARN));
    assert!(header("lambda-runtime-trace-id").is_some_and(|t| t.starts_with("Root=")));
    assert!(header("lambda-runtime-deadline-ms").is_some_and(|d| d.parse::<u64>().is_ok_and(|d| d > 0)));

    let path = format!("/2018-06-01/runtime/invocation/{REQUEST_ID}/response");
    let (status, _, body) = request(&mut stream, "POST", &path, r#"{"ok":true}"#);
    assert_eq!(status, "HTTP/1.1 202 Accepted");
    assert_eq!(body, r#"{"status":"OK"}"#);

    let path = format!("/2018-06-01/runtime/invocation/{REQUEST_ID}/error");
    let (status, _, _) = request(&mut stream, "POST", &path, r#"{"errorType":"E"}"#);
    assert_eq!(status, "HTTP/1.1 202 Accepted");
    let (status, _, _) = request(&mut stream, "POST", "/2018-06-01/runtime/init/error", "{}");
    assert_eq!(status, "HTTP/1.1 202 Accepted");
    let (status, _, _) = request(&mut stream, "GET", "/elsewhere", "");
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    let hits: Vec<HitKind> = std::iter::from_fn(|| api.next_hit(Duration::from_millis(500)).map(|h| h.kind))
        .take(4)
        .collect();
    assert_eq!(
        hits,
        vec![
            HitKind::Next,
            HitKind::Response(r#"{"ok":true}"#.into()),
            HitKind::Error(r#"{"errorType":"E"}"#.into()),
            HitKind::InitError("{}".into()),
        ]
    );
}

/// A bootstrap in Python (as scripts/test needs python3 anyway): polls
/// /next, answers with the event's "echo" and polls again, like a runtime.
const FAKE_BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import json, os, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
with urllib.request.urlopen(api + "/invocation/next") as r:
    request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
    event = json.load(r)
body = json.dumps({"echo": event["echo"], "fn": os.environ["AWS_LAMBDA_FUNCTION_NAME"]}).encode()
urllib.request.urlopen(urllib.request.Request(api + "/invocation/" + request_id + "/response", data=body, method="POST")).read()
urllib.request.urlopen(api + "/invocation/next")
"#;

#[test]
fn measures_a_fake_bootstrap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let binary = dir.path().join("bootstrap");
    std::fs::write(&binary, FAKE_BOOTSTRAP).expect("write bootstrap");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let run = Run {
        binary,
        event: br#"{"echo":"hi"}"#.to_vec(),
        env: vec![
            ("AWS_LAMBDA_FUNCTION_NAME".into(), "fake".into()),
            ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
            ("HOME".into(), std::env::var("HOME").unwrap_or_default()),
        ],
        log: dir.path().join("fake.log"),
        timeout: Duration::from_secs(20),
    };
    let sample = measure(&run).expect("measure");
    let log = std::fs::read_to_string(&run.log).unwrap_or_default();
    assert_eq!(
        sample.outcome,
        Outcome::Response(r#"{"echo": "hi", "fn": "fake"}"#.into()),
        "{log}"
    );
    let (ready, answered) = (sample.ready.expect("ready"), sample.first_response.expect("answered"));
    assert!(ready <= answered);
    assert!(sample.peak_rss_kib.is_some_and(|k| k > 0));
}
