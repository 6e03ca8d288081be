//! A minimal Lambda Runtime API (the 2018-06-01 interface a custom runtime
//! polls) on 127.0.0.1: the first `GET .../invocation/next` gets the one
//! sample event, later ones are held open until the server stops (as Lambda
//! freezes an idle environment); responses, invocation errors and init
//! errors are accepted (202) and reported, with the instant they arrived,
//! on a channel.

use crate::http::{read_request, respond};
use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "/2018-06-01/runtime";
/// The request id of the one invocation.
pub const REQUEST_ID: &str = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";
/// The function ARN sent with the invocation (`Lambda-Runtime-Invoked-Function-Arn`).
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:coldstart";
const TRACE_ID: &str = "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1";

/// What the function under test did, and when the server saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    pub at: Instant,
    pub kind: HitKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HitKind {
    /// `GET /invocation/next` (the first one got the event).
    Next,
    /// `POST /invocation/{id}/response` with its body.
    Response(String),
    /// `POST /invocation/{id}/error` with its body.
    Error(String),
    /// `POST /init/error` with its body.
    InitError(String),
}

/// The running server; stops (and releases held `/next` requests) when dropped.
pub struct RuntimeApi {
    addr: SocketAddr,
    hits: Receiver<Hit>,
    stop: Arc<AtomicBool>,
}

struct Shared {
    event: Vec<u8>,
    deadline_ms: u64,
    delivered: AtomicBool,
    stop: Arc<AtomicBool>,
    hits: Sender<Hit>,
}

impl RuntimeApi {
    /// Serves `event` (the body of the one invocation) on an ephemeral port of 127.0.0.1.
    pub fn start(event: Vec<u8>, invocation_timeout: Duration) -> io::Result<RuntimeApi> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let deadline_ms = SystemTime::now()
            .checked_add(invocation_timeout)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let shared = Arc::new(Shared {
            event,
            deadline_ms,
            delivered: AtomicBool::new(false),
            stop: stop.clone(),
            hits: tx,
        });
        thread::Builder::new()
            .name("runtime-api".into())
            .spawn(move || accept_loop(listener, shared))?;
        Ok(RuntimeApi { addr, hits: rx, stop })
    }

    /// `127.0.0.1:<port>`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The next hit, or `None` after `timeout`.
    pub fn next_hit(&self, timeout: Duration) -> Option<Hit> {
        self.hits.recv_timeout(timeout).ok()
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let shared = shared.clone();
                // A connection that fails only ends itself; the harness sees the missing hits.
                let _ = thread::Builder::new()
                    .name("runtime-api-conn".into())
                    .spawn(move || serve(stream, &shared));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_micros(200)),
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// One keep-alive connection: requests one after another until it closes.
fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader)? {
        let at = Instant::now();
        let path = request.path.strip_prefix(PREFIX).unwrap_or("");
        let body = || String::from_utf8_lossy(&request.body).into_owned();
        match (request.method.as_str(), path) {
            ("GET", "/invocation/next") => {
                let _ = shared.hits.send(Hit {
                    at,
                    kind: HitKind::Next,
                });
                if shared.delivered.swap(true, Ordering::SeqCst) {
                    // One invocation per run: hold this one until the harness is done.
                    while !shared.stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(5));
                    }
                    return Ok(());
                }
                let headers = [
                    ("Content-Type", "application/json".to_string()),
                    ("Lambda-Runtime-Aws-Request-Id", REQUEST_ID.to_string()),
                    ("Lambda-Runtime-Deadline-Ms", shared.deadline_ms.to_string()),
                    ("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN.to_string()),
                    ("Lambda-Runtime-Trace-Id", TRACE_ID.to_string()),
                ];
                respond(&mut writer, "200 OK", &headers, &shared.event)?;
            }
            ("POST", p) if p.starts_with("/invocation/") && p.ends_with("/response") => {
                let _ = shared.hits.send(Hit {
                    at,
                    kind: HitKind::Response(body()),
                });
                accepted(&mut writer)?;
            }
            ("POST", p) if p.starts_with("/invocation/") && p.ends_with("/error") => {
                let _ = shared.hits.send(Hit {
                    at,
                    kind: HitKind::Error(body()),
                });
                accepted(&mut writer)?;
            }
            ("POST", "/init/error") => {
                let _ = shared.hits.send(Hit {
                    at,
                    kind: HitKind::InitError(body()),
                });
                accepted(&mut writer)?;
            }
            _ => respond(
                &mut writer,
                "404 Not Found",
                &[("Content-Type", "application/json".to_string())],
                br#"{"errorMessage":"not part of the minimal Runtime API","errorType":"NotFound"}"#,
            )?,
        }
    }
    Ok(())
}

fn accepted(writer: &mut TcpStream) -> io::Result<()> {
    respond(
        writer,
        "202 Accepted",
        &[("Content-Type", "application/json".to_string())],
        br#"{"status":"OK"}"#,
    )
}
