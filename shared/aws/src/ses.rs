//! `crm_core::messaging::provider::EmailProvider` over SES v2 `SendEmail`
//! with raw content: the whole message as `mime::to_mime` renders it, so our
//! own headers (RFC 8058 `List-Unsubscribe`, `List-Unsubscribe-Post`,
//! `X-CRM-Message-Id`) go out exactly as rendered. Sent through a
//! configuration set whose event destination (EventBridge) brings delivery,
//! bounce, complaint, open and click events back (see
//! `crm_core::messaging::feedback`), with the message's tags as SES message
//! tags so those events can be matched to our message and customer.
//! One attempt per call (no SDK retries): SES has no idempotency token, and
//! a retried request whose first answer was lost would send twice.

use crate::provider_error::{no_sdk_retries, provider_error};
use async_trait::async_trait;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, MessageTag, RawMessage};
use aws_sdk_sesv2::Client;
use crm_core::messaging::mime;
use crm_core::messaging::provider::{EmailMessage, EmailProvider, ProviderError, ProviderReceipt};

/// The longest tag name or value SES accepts.
const MAX_TAG_LEN: usize = 256;

/// A tag name or value as SES accepts it: only `[A-Za-z0-9_-]`, anything
/// else becomes `_`; at most 256 characters; never empty. Our ids (message
/// ids are hex, customer ids UUIDs) pass through unchanged, so the feedback
/// events carry them back exactly.
pub fn sanitize_tag(raw: &str) -> String {
    let clean: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_TAG_LEN)
        .collect();
    if clean.is_empty() {
        "_".to_string()
    } else {
        clean
    }
}

/// Sends email through SES v2.
#[derive(Debug, Clone)]
pub struct SesEmailProvider {
    client: Client,
    configuration_set: String,
}

impl SesEmailProvider {
    /// Sends through the configuration set `configuration_set` (the one whose
    /// event destination publishes to EventBridge).
    pub fn new(client: Client, configuration_set: impl Into<String>) -> Self {
        SesEmailProvider {
            client,
            configuration_set: configuration_set.into(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn configuration_set(&self) -> &str {
        &self.configuration_set
    }
}

/// The message's tags as SES message tags (sanitized; a repeated name keeps
/// its first value, since SES refuses duplicates).
fn email_tags(email: &EmailMessage) -> Result<Vec<MessageTag>, ProviderError> {
    let mut names: Vec<String> = Vec::with_capacity(email.tags.len());
    let mut tags = Vec::with_capacity(email.tags.len());
    for (name, value) in &email.tags {
        let name = sanitize_tag(name);
        if names.contains(&name) {
            continue;
        }
        let tag = MessageTag::builder()
            .name(&name)
            .value(sanitize_tag(value))
            .build()
            .map_err(|e| ProviderError::Rejected(format!("SES message tag {name}: {e}")))?;
        names.push(name);
        tags.push(tag);
    }
    Ok(tags)
}

#[async_trait]
impl EmailProvider for SesEmailProvider {
    async fn send_email(&self, email: &EmailMessage) -> Result<ProviderReceipt, ProviderError> {
        let raw = mime::to_mime(email, chrono::Utc::now());
        let raw = RawMessage::builder()
            .data(Blob::new(raw.into_bytes()))
            .build()
            .map_err(|e| ProviderError::Rejected(format!("SES raw message: {e}")))?;
        let output = self
            .client
            .send_email()
            .from_email_address(&email.from)
            .destination(Destination::builder().to_addresses(&email.to).build())
            .content(EmailContent::builder().raw(raw).build())
            .configuration_set_name(&self.configuration_set)
            .set_email_tags(Some(email_tags(email)?))
            .customize()
            .config_override(aws_sdk_sesv2::config::Builder::default().retry_config(no_sdk_retries()))
            .send()
            .await
            .map_err(|e| provider_error("SES SendEmail", &e))?;
        let provider_message_id = output
            .message_id()
            .filter(|id| !id.is_empty())
            // It answered 200: it took the message, but we cannot name it.
            .ok_or_else(|| ProviderError::OutcomeUnknown("SES SendEmail answered without a MessageId".into()))?;
        tracing::debug!(message_id = %email.message_id, ses_message_id = %provider_message_id, "email sent through SES");
        Ok(ProviderReceipt {
            provider_message_id: provider_message_id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_keep_safe_characters_and_replace_the_rest() {
        assert_eq!(sanitize_tag("0f3a9c_x-Y"), "0f3a9c_x-Y");
        assert_eq!(sanitize_tag("spring sale/2026.v2"), "spring_sale_2026_v2");
        assert_eq!(sanitize_tag("café"), "caf_");
        assert_eq!(sanitize_tag(""), "_");
        assert_eq!(sanitize_tag(&"a".repeat(300)).len(), MAX_TAG_LEN);
    }

    #[test]
    fn repeated_tag_names_keep_the_first_value() {
        let email = EmailMessage {
            message_id: "m1".into(),
            from: "a@example.com".into(),
            to: "b@example.com".into(),
            subject: "s".into(),
            html: "<p>h</p>".into(),
            text: "t".into(),
            headers: vec![],
            tags: vec![
                ("campaign".into(), "spring sale".into()),
                ("campaign".into(), "other".into()),
                ("message_id".into(), "m1".into()),
            ],
        };
        let tags = email_tags(&email).expect("tags");
        let pairs: Vec<(&str, &str)> = tags.iter().map(|t| (t.name(), t.value())).collect();
        assert_eq!(pairs, vec![("campaign", "spring_sale"), ("message_id", "m1")]);
    }
}
