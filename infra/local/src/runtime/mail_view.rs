//! The local mail viewer (`/_local/mail`) and `crm-local mail list`: what the
//! local runtime "sent", as a mail catcher shows it. Only the local runtime
//! mounts these routes (never the Lambda API). `crm-local serve` shows them
//! only to a bearer token carrying `crm/admin` or to the mail link it prints
//! (`crate::runtime::serve::guard`, decision 0039): the messages hold verification
//! tokens and preference-centre links.

use crate::adapters::mail::{MailSink, SinkEntry};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use crm_core::messaging::render::html_escape;
use std::sync::Arc;

/// `GET /_local/mail` (list), `/_local/mail/{seq}` (the HTML part, or the
/// text of SMS and push), `/_local/mail/{seq}/raw` (the whole MIME message).
pub fn routes(sink: Arc<MailSink>) -> Router {
    Router::new()
        .route("/_local/mail", get(list))
        .route("/_local/mail/{seq}", get(show))
        .route("/_local/mail/{seq}/raw", get(raw))
        .with_state(sink)
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}</style></head>\
         <body><h1>{}</h1>{body}</body></html>",
        html_escape(title),
        html_escape(title)
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Mail sink unavailable",
        &html_escape(&e.to_string()),
    )
}

fn not_found(seq: i64) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "No such message",
        &format!("<p>Nothing was sent as number {seq}. <a href=\"/_local/mail\">All messages</a></p>"),
    )
}

async fn list(State(sink): State<Arc<MailSink>>) -> Response {
    let entries = match sink.list().await {
        Ok(e) => e,
        Err(e) => return unavailable(e),
    };
    let mut rows = String::new();
    for e in entries.iter().rev() {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/_local/mail/{}\">{}</a></td><td><a href=\"/_local/mail/{}/raw\">raw</a></td></tr>",
            e.seq,
            e.sent_at.to_rfc3339(),
            html_escape(&e.channel),
            html_escape(&e.recipient),
            e.seq,
            html_escape(if e.subject.is_empty() { "(no subject)" } else { &e.subject }),
            e.seq,
        ));
    }
    let body = format!(
        "<p>{} messages, newest first.</p><table><thead><tr><th>#</th><th>Sent</th><th>Channel</th><th>To</th><th>Subject</th><th></th></tr></thead><tbody>{rows}</tbody></table>",
        entries.len()
    );
    page(StatusCode::OK, "Local mail", &body)
}

async fn entry(sink: &MailSink, seq: i64) -> Result<SinkEntry, Response> {
    match sink.get(seq).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(not_found(seq)),
        Err(e) => Err(unavailable(e)),
    }
}

async fn show(State(sink): State<Arc<MailSink>>, Path(seq): Path<i64>) -> Response {
    let e = match entry(&sink, seq).await {
        Ok(e) => e,
        Err(r) => return r,
    };
    match e.email() {
        // The message's own HTML, as a mail client shows it; scripts off.
        Some(email) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, "sandbox allow-popups allow-forms"),
            ],
            email.html,
        )
            .into_response(),
        None => page(
            StatusCode::OK,
            &format!("{} to {}", e.channel, e.recipient),
            &format!("<pre>{}</pre>", html_escape(&e.body)),
        ),
    }
}

async fn raw(State(sink): State<Arc<MailSink>>, Path(seq): Path<i64>) -> Response {
    match entry(&sink, seq).await {
        Ok(e) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            e.body,
        )
            .into_response(),
        Err(r) => r,
    }
}

/// `crm-local mail list`: one line per message, oldest first.
pub fn print_list(entries: &[SinkEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        out.push_str(&format!(
            "{:>4}  {}  {:<5}  {:<32}  {}\n",
            e.seq,
            e.sent_at.to_rfc3339(),
            e.channel,
            e.recipient,
            e.subject
        ));
    }
    out
}
