//! One rendered email as a complete RFC 5322 / MIME message: what SES v2
//! sends as raw content and what the local mail sink keeps.

use super::provider::EmailMessage;
use base64::Engine;

/// Header value safe to write as is: printable ASCII without line breaks.
fn is_plain(value: &str) -> bool {
    value.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// A header value, RFC 2047-encoded when it is not plain ASCII; line breaks
/// never survive (no header injection).
fn header_value(value: &str) -> String {
    let one_line: String = value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    if is_plain(&one_line) {
        one_line
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(one_line.as_bytes())
        )
    }
}

/// Base64 body wrapped at 76 characters.
fn body_base64(text: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// The boundary: derived from the message id, so the same email always
/// yields the same bytes.
fn boundary(message_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(message_id.as_bytes());
    format!("=_crm_{}", hex::encode(&digest[..12]))
}

/// The whole message, CRLF line endings, a text and an HTML alternative.
pub fn to_mime(email: &EmailMessage, date: chrono::DateTime<chrono::Utc>) -> String {
    let boundary = boundary(&email.message_id);
    let mut out = String::new();
    let mut header = |name: &str, value: &str| {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&header_value(value));
        out.push_str("\r\n");
    };
    header("From", &email.from);
    header("To", &email.to);
    header("Subject", &email.subject);
    header("Date", &date.to_rfc2822());
    header("Message-ID", &format!("<{}@crm.local>", email.message_id));
    header("X-CRM-Message-Id", &email.message_id);
    for (name, value) in &email.headers {
        header(name, value);
    }
    header("MIME-Version", "1.0");
    header(
        "Content-Type",
        &format!("multipart/alternative; boundary=\"{boundary}\""),
    );
    out.push_str("\r\n");
    for (kind, body) in [("text/plain", &email.text), ("text/html", &email.html)] {
        out.push_str(&format!("--{boundary}\r\n"));
        out.push_str(&format!("Content-Type: {kind}; charset=UTF-8\r\n"));
        out.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
        out.push_str(&body_base64(body));
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

/// The decoded parts of a message made by [`to_mime`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEmail {
    pub headers: Vec<(String, String)>,
    pub text: String,
    pub html: String,
}

impl ParsedEmail {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a message made by [`to_mime`] (for the local mail viewer and tests).
pub fn parse(mime: &str) -> Option<ParsedEmail> {
    let (head, body) = mime.split_once("\r\n\r\n")?;
    let headers: Vec<(String, String)> = head
        .split("\r\n")
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let boundary = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Content-Type"))
        .and_then(|(_, v)| v.split("boundary=\"").nth(1))
        .and_then(|v| v.split('"').next())?
        .to_string();
    let mut text = String::new();
    let mut html = String::new();
    for part in body.split(&format!("--{boundary}")) {
        let Some((part_head, part_body)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let raw: String = part_body.split_whitespace().collect();
        let decoded = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        if part_head.contains("text/plain") {
            text = decoded;
        } else if part_head.contains("text/html") {
            html = decoded;
        }
    }
    Some(ParsedEmail { headers, text, html })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> EmailMessage {
        EmailMessage {
            message_id: "m-1".into(),
            from: "shop@example.com".into(),
            to: "ana@example.com".into(),
            subject: "Grüße\r\nBcc: evil@example.com".into(),
            html: "<p>Hallo Ana</p>".into(),
            text: "Hallo Ana".into(),
            headers: vec![
                ("List-Unsubscribe".into(), "<https://x.test/u/tok>".into()),
                ("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into()),
            ],
            tags: vec![],
        }
    }

    #[test]
    fn round_trips_and_never_lets_a_header_break_the_lines() {
        let when = chrono::DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
            .unwrap()
            .to_utc();
        let mime = to_mime(&email(), when);
        assert!(!mime.contains("\r\nBcc:"), "{mime}");
        let parsed = parse(&mime).unwrap();
        assert_eq!(parsed.text, "Hallo Ana");
        assert_eq!(parsed.html, "<p>Hallo Ana</p>");
        assert_eq!(
            parsed.header("List-Unsubscribe-Post"),
            Some("List-Unsubscribe=One-Click")
        );
        assert!(parsed.header("Subject").unwrap().starts_with("=?UTF-8?B?"));
        assert_eq!(mime, to_mime(&email(), when), "deterministic");
    }
}
