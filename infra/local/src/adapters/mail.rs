//! The local mail sink: the email, SMS and push providers of the local
//! runtime. Every message is kept whole in SQLite (email as its full MIME
//! text), listed by `crm-local mail list` and shown at `/_local/mail`.

use crate::adapters::db::{failed, sql, Db};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use crm_core::clock::Clock;
use crm_core::messaging::mime;
use crm_core::messaging::provider::{
    EmailMessage, EmailProvider, ProviderError, ProviderReceipt, PushMessage, PushProvider, SmsMessage, SmsProvider,
};
use crm_core::ports::StoreError;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mail_sink (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    channel    TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    sent_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mail_sink_message ON mail_sink (message_id);
";

/// One kept message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkEntry {
    pub seq: i64,
    pub message_id: String,
    /// `email`, `sms` or `push`.
    pub channel: String,
    pub recipient: String,
    /// The email subject or push title (empty for SMS).
    pub subject: String,
    /// Email: the whole MIME message; SMS: the text; push: the JSON payload.
    pub body: String,
    pub sent_at: DateTime<Utc>,
}

impl SinkEntry {
    /// The decoded email, for email entries.
    pub fn email(&self) -> Option<mime::ParsedEmail> {
        (self.channel == "email").then(|| mime::parse(&self.body)).flatten()
    }
}

/// The sink over the local database.
#[derive(Clone)]
pub struct MailSink {
    db: Db,
    clock: Arc<dyn Clock>,
}

fn provider_error(e: StoreError) -> ProviderError {
    match e {
        StoreError::Unavailable(m) => ProviderError::Unavailable(m),
        StoreError::Failed(m) => ProviderError::Unavailable(m),
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, String, String, String, String)> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn entry(r: (i64, String, String, String, String, String, String)) -> Result<SinkEntry, StoreError> {
    let (seq, message_id, channel, recipient, subject, body, sent_at) = r;
    let sent_at = DateTime::parse_from_rfc3339(&sent_at)
        .map_err(|e| failed(format!("mail_sink row {seq}: {e}")))?
        .to_utc();
    Ok(SinkEntry {
        seq,
        message_id,
        channel,
        recipient,
        subject,
        body,
        sent_at,
    })
}

const COLUMNS: &str = "seq, message_id, channel, recipient, subject, body, sent_at";

impl MailSink {
    pub fn open(path: &Path, clock: Arc<dyn Clock>) -> Result<Self, StoreError> {
        Ok(MailSink {
            db: Db::open(path, SCHEMA)?,
            clock,
        })
    }

    async fn keep(
        &self,
        message_id: &str,
        channel: &str,
        recipient: &str,
        subject: &str,
        body: String,
    ) -> Result<ProviderReceipt, ProviderError> {
        let (message_id, channel, recipient, subject) = (
            message_id.to_string(),
            channel.to_string(),
            recipient.to_string(),
            subject.to_string(),
        );
        let at = self.clock.now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let seq: i64 = self
            .db
            .run(move |conn| {
                conn.execute(
                    "INSERT INTO mail_sink (message_id, channel, recipient, subject, body, sent_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![message_id, channel, recipient, subject, body, at],
                )
                .map_err(sql)?;
                Ok::<_, StoreError>(conn.last_insert_rowid())
            })
            .await
            .map_err(provider_error)?;
        Ok(ProviderReceipt {
            provider_message_id: format!("local-{seq}"),
        })
    }

    /// Every kept message, oldest first.
    pub async fn list(&self) -> Result<Vec<SinkEntry>, StoreError> {
        self.db
            .run(|conn| {
                let mut stmt = conn
                    .prepare(&format!("SELECT {COLUMNS} FROM mail_sink ORDER BY seq"))
                    .map_err(sql)?;
                let rows = stmt.query_map([], row).map_err(sql)?;
                let mut out = Vec::new();
                for r in rows {
                    out.push(entry(r.map_err(sql)?)?);
                }
                Ok(out)
            })
            .await
    }

    /// Redacts the kept messages with these ids (an erased customer's):
    /// recipient, subject and body become `[erased]`; the row stays, so the
    /// sink still shows that a message went out and when. Returns how many
    /// rows were redacted.
    pub async fn redact_messages(&self, message_ids: Vec<String>) -> Result<usize, StoreError> {
        if message_ids.is_empty() {
            return Ok(0);
        }
        self.db
            .run(move |conn| {
                let erased = crm_core::privacy::ERASED;
                let mut changed = 0;
                for id in &message_ids {
                    changed += conn
                        .execute(
                            "UPDATE mail_sink SET recipient = ?1, subject = ?1, body = ?1 WHERE message_id = ?2",
                            params![erased, id],
                        )
                        .map_err(sql)?;
                }
                Ok(changed)
            })
            .await
    }

    /// One kept message.
    pub async fn get(&self, seq: i64) -> Result<Option<SinkEntry>, StoreError> {
        self.db
            .run(move |conn| {
                conn.query_row(&format!("SELECT {COLUMNS} FROM mail_sink WHERE seq = ?1"), [seq], row)
                    .optional()
                    .map_err(sql)?
                    .map(entry)
                    .transpose()
            })
            .await
    }
}

#[async_trait]
impl EmailProvider for MailSink {
    async fn send_email(&self, email: &EmailMessage) -> Result<ProviderReceipt, ProviderError> {
        let text = mime::to_mime(email, self.clock.now());
        self.keep(&email.message_id, "email", &email.to, &email.subject, text)
            .await
    }
}

#[async_trait]
impl SmsProvider for MailSink {
    async fn send_sms(&self, sms: &SmsMessage) -> Result<ProviderReceipt, ProviderError> {
        self.keep(&sms.message_id, "sms", &sms.to, "", sms.body.clone()).await
    }
}

#[async_trait]
impl PushProvider for MailSink {
    async fn send_push(&self, push: &PushMessage) -> Result<ProviderReceipt, ProviderError> {
        let body = serde_json::json!({ "title": push.title, "body": push.body, "data": push.data }).to_string();
        let recipient = format!("{}:{}", push.device.platform, push.device.token);
        self.keep(&push.message_id, "push", &recipient, &push.title, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_core::clock::SystemClock;

    #[tokio::test]
    async fn keeps_every_channel_and_reads_the_email_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = MailSink::open(&dir.path().join("crm.db"), Arc::new(SystemClock)).expect("open");
        let email = EmailMessage {
            message_id: "m-1".into(),
            from: "shop@example.com".into(),
            to: "ana@example.com".into(),
            subject: "Your cart".into(),
            html: "<p>Hi</p>".into(),
            text: "Hi".into(),
            headers: vec![("List-Unsubscribe".into(), "<http://x/u/t>".into())],
            tags: vec![],
        };
        let receipt = sink.send_email(&email).await.expect("email");
        sink.send_sms(&SmsMessage {
            message_id: "m-2".into(),
            to: "+4915112345678".into(),
            body: "Hi".into(),
            transactional: true,
        })
        .await
        .expect("sms");
        let all = sink.list().await.expect("list");
        assert_eq!(all.len(), 2);
        assert_eq!(receipt.provider_message_id, format!("local-{}", all[0].seq));
        let parsed = all[0].email().expect("parsed");
        assert_eq!(parsed.html, "<p>Hi</p>");
        assert_eq!(parsed.header("List-Unsubscribe"), Some("<http://x/u/t>"));
        assert_eq!(
            sink.get(all[1].seq).await.expect("get").map(|e| e.channel),
            Some("sms".into())
        );
        assert_eq!(sink.get(999).await.expect("get"), None);
    }
}
