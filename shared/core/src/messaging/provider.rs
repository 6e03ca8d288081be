//! The ports to the providers that carry a message: email (SES v2), SMS (SNS),
//! push (SNS platform endpoints), and the local sink that keeps them all.

use crate::failure::{Classify, FailureKind};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::vocabulary::PushDevice;

/// One rendered email, ready for a provider. `mime::to_mime` turns it into the
/// raw message that SES sends and the local sink keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailMessage {
    /// The deterministic message id (also a tag and the `X-CRM-Message-Id` header).
    pub message_id: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// Extra headers in order, e.g. `List-Unsubscribe` and `List-Unsubscribe-Post`.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Provider tags (SES message tags): `campaign`, `message_id`, `category`.
    #[serde(default)]
    pub tags: Vec<(String, String)>,
}

/// One SMS to an E.164 number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsMessage {
    pub message_id: String,
    /// E.164, e.g. `+4915112345678`.
    pub to: String,
    pub body: String,
    /// Transactional SMS get SNS's `Transactional` type, marketing `Promotional`.
    pub transactional: bool,
}

/// One push notification to one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushMessage {
    pub message_id: String,
    pub device: PushDevice,
    pub title: String,
    pub body: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

/// What a provider answered when it accepted a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderReceipt {
    pub provider_message_id: String,
}

/// Why a provider call did not end in a receipt. The first three prove that
/// nothing was sent; [`ProviderError::OutcomeUnknown`] does not
/// (docs/decisions/0032-unknown-send-outcomes.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Too many requests, refused before acceptance: nothing was sent; retry
    /// with backoff.
    #[error("throttled by the provider: {0}")]
    Throttled(String),
    /// The provider could not be asked (no connection, the account paused or
    /// not authorised): nothing was sent; deliver again later.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused this message for good (bad address, rejected
    /// content, unknown endpoint): nothing was sent; do not retry.
    #[error("rejected by the provider: {0}")]
    Rejected(String),
    /// The request may have reached the provider and been accepted, but no
    /// answer says so: a timeout or a connection lost after the request went
    /// out, a 5xx, an answer that could not be read. Sending again could send
    /// twice, so the claim is kept and the outcome settled (SES feedback) or
    /// left at most once (SNS).
    #[error("provider outcome unknown: {0}")]
    OutcomeUnknown(String),
}

impl ProviderError {
    /// Whether the delivery may simply be tried again: the error proves
    /// nothing was sent and another attempt can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind() == FailureKind::Retryable
    }

    /// Whether the error proves that the provider did not take the message.
    pub fn proves_nothing_sent(&self) -> bool {
        !matches!(self, ProviderError::OutcomeUnknown(_))
    }
}

/// Throttled and unavailable are retryable (nothing was sent, another
/// attempt can succeed); a refusal is poison; an unknown outcome is poison
/// too: delivering it again could send twice, so it is never retried as it
/// is (decision 0032 settles it instead).
impl Classify for ProviderError {
    fn kind(&self) -> FailureKind {
        match self {
            ProviderError::Throttled(_) | ProviderError::Unavailable(_) => FailureKind::Retryable,
            ProviderError::Rejected(_) | ProviderError::OutcomeUnknown(_) => FailureKind::Poison,
        }
    }
}

#[async_trait]
pub trait EmailProvider: Send + Sync {
    async fn send_email(&self, email: &EmailMessage) -> Result<ProviderReceipt, ProviderError>;
}

#[async_trait]
pub trait SmsProvider: Send + Sync {
    async fn send_sms(&self, sms: &SmsMessage) -> Result<ProviderReceipt, ProviderError>;
}

#[async_trait]
pub trait PushProvider: Send + Sync {
    async fn send_push(&self, push: &PushMessage) -> Result<ProviderReceipt, ProviderError>;
}
