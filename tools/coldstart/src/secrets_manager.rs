//! A minimal Secrets Manager on 127.0.0.1 (decision 0047): the functions
//! read their secrets with `GetSecretValue` at cold start, so a cold start
//! measured without it would be a failed one. It answers exactly that
//! call, in the AWS JSON 1.1 protocol the SDK speaks (`POST /`,
//! `X-Amz-Target: secretsmanager.GetSecretValue`, a `{"SecretId": …}`
//! body), for the secrets it was given (by ARN or name), with their value
//! as `SecretString`; an unknown secret gets `ResourceNotFoundException`.
//! Any other request (DynamoDB, KMS, SQS…: every service shares
//! `AWS_ENDPOINT_URL`) gets its connection closed without an answer, so
//! that call fails at once, as it did against a closed port. Connections
//! are HTTP/1.1 keep-alive: requests are answered one after another until
//! the client closes.

use crate::http::{read_request, respond, Request};
use serde_json::{json, Value};
use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `X-Amz-Target` of the one operation answered.
pub const GET_SECRET_VALUE: &str = "secretsmanager.GetSecretValue";
/// The version id of every value served (a fixed UUID: one version per secret).
pub const VERSION_ID: &str = "c01d5747-0000-4000-8000-000000000001";
const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// A secret the endpoint holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSecret {
    /// Its ARN, as the functions' `*_SECRET_ARN` settings name it.
    pub arn: String,
    /// Its name (also accepted as `SecretId`).
    pub name: String,
    /// Its `SecretString`.
    pub value: String,
}

/// The running endpoint; stops accepting when dropped.
pub struct SecretsManager {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
}

struct Shared {
    secrets: Vec<LocalSecret>,
    created: u64,
    answered: Arc<AtomicUsize>,
}

impl SecretsManager {
    /// Serves `secrets` on an ephemeral port of 127.0.0.1.
    pub fn start(secrets: Vec<LocalSecret>) -> io::Result<SecretsManager> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            secrets,
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            answered: answered.clone(),
        });
        let stopping = stop.clone();
        thread::Builder::new()
            .name("secrets-manager".into())
            .spawn(move || accept_loop(listener, &stopping, shared))?;
        Ok(SecretsManager { addr, stop, answered })
    }

    /// `http://127.0.0.1:<port>`, the functions' `AWS_ENDPOINT_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many `GetSecretValue` calls were answered with a value so far.
    pub fn values_served(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

impl Drop for SecretsManager {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the blocking accept, which then sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn accept_loop(listener: TcpListener, stop: &AtomicBool, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = shared.clone();
        // A connection that fails only ends itself: the function's call fails, as intended.
        let _ = thread::Builder::new()
            .name("secrets-manager-conn".into())
            .spawn(move || serve(stream, &shared));
    }
}

/// One keep-alive connection: `GetSecretValue` requests answered until the
/// client closes it; any other request closes it unanswered.
fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader)? {
        let Some((status, body)) = answer(&request, shared) else {
            // Dropping both halves closes the connection: the caller's request fails at once.
            return Ok(());
        };
        respond(
            &mut writer,
            status,
            &[("Content-Type", CONTENT_TYPE.to_string())],
            body.to_string().as_bytes(),
        )?;
    }
    Ok(())
}

/// The status and body of the answer to `request`, or `None` when it is
/// not a `GetSecretValue` call (the connection is then closed).
fn answer(request: &Request, shared: &Shared) -> Option<(&'static str, Value)> {
    if request.method != "POST" || request.path != "/" || request.header("x-amz-target") != Some(GET_SECRET_VALUE) {
        return None;
    }
    let secret_id = serde_json::from_slice::<Value>(&request.body)
        .ok()
        .and_then(|b| b.get("SecretId").and_then(Value::as_str).map(str::to_string));
    let Some(secret_id) = secret_id else {
        return Some((
            "400 Bad Request",
            json!({"__type": "InvalidParameterException", "message": "the body names no SecretId"}),
        ));
    };
    match shared
        .secrets
        .iter()
        .find(|s| s.arn == secret_id || s.name == secret_id)
    {
        Some(secret) => {
            shared.answered.fetch_add(1, Ordering::SeqCst);
            Some((
                "200 OK",
                json!({
                    "ARN": secret.arn,
                    "Name": secret.name,
                    "SecretString": secret.value,
                    "VersionId": VERSION_ID,
                    "VersionStages": ["AWSCURRENT"],
                    "CreatedDate": shared.created,
                }),
            ))
        }
        None => Some((
            "400 Bad Request",
            json!({
                "__type": "ResourceNotFoundException",
                "message": format!("Secrets Manager can't find the specified secret ({secret_id})."),
            }),
        )),
    }
}
