//! Email feedback from the provider: what happened to one of our emails
//! after the send (accepted, content rejected, delivered, bounced,
//! complained, opened, clicked), as the domain reads it ([`EmailFeedback`]).
//! [`EmailFeedback::to_event`] gives the message-stream event
//! (`MessageAccepted`, `MessageContentRejected`, `EmailDelivered`,
//! `EmailBounced`, ...). Acceptance and every later event prove the provider
//! took the message: they settle an unknown outcome (decision 0032).
//!
//! Reading the provider's own format is an adapter's job: crm-aws's
//! `ses_feedback` reads SES's EventBridge events into this type
//! (decision 0059).

use super::events::{BounceType, MessageEvent};
use crate::privacy::IdentifierHasher;
use chrono::{DateTime, Utc};

pub use crate::vocabulary::{CUSTOMER_ID_TAG, SES_SOURCE};

/// The message tag that carries our message id.
pub const MESSAGE_ID_TAG: &str = "message_id";

/// What the provider reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackKind {
    /// The provider accepted the message and will try to deliver it (SES's
    /// `Send`).
    Accepted,
    /// The provider accepted the message, then refused to send it (SES's
    /// `Reject`: a virus).
    ContentRejected {
        reason: String,
    },
    Delivered,
    Bounced {
        bounce_type: BounceType,
        /// The receiving server's answer (`diagnosticCode`), when SES has one.
        diagnostic: Option<String>,
    },
    Complained,
    Opened,
    Clicked {
        link: String,
    },
}

/// One piece of provider feedback about one of our emails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailFeedback {
    /// Our message id (the `message_id` tag).
    pub message_id: String,
    /// The customer (the `customer_id` tag).
    pub customer_id: String,
    /// Identifies this piece of feedback, stable across redeliveries (for
    /// SES: its `feedbackId` for bounces and complaints, else the
    /// EventBridge event id).
    pub feedback_id: String,
    /// The provider's own message id (SES's `mail.messageId`).
    pub provider_message_id: String,
    /// The address the feedback is about: personal data, hash it
    /// ([`EmailFeedback::address_hash`]) before keeping it anywhere.
    pub recipient: String,
    /// When it happened (the event's own timestamp, else the envelope time).
    pub occurred_at: Option<DateTime<Utc>>,
    pub kind: FeedbackKind,
}

impl EmailFeedback {
    /// The message-stream event type this feedback becomes.
    pub fn event_type(&self) -> &'static str {
        match self.kind {
            FeedbackKind::Accepted => "MessageAccepted",
            FeedbackKind::ContentRejected { .. } => "MessageContentRejected",
            FeedbackKind::Delivered => "EmailDelivered",
            FeedbackKind::Bounced { .. } => "EmailBounced",
            FeedbackKind::Complained => "EmailComplained",
            FeedbackKind::Opened => "EmailOpened",
            FeedbackKind::Clicked { .. } => "EmailClicked",
        }
    }

    /// The salted hash of the recipient address (decision 0019).
    pub fn address_hash(&self, identifiers: &IdentifierHasher) -> String {
        identifiers.email(&self.recipient)
    }

    /// The event for the message stream `message-<message id>`.
    pub fn to_event(&self, identifiers: &IdentifierHasher) -> MessageEvent {
        let message_id = self.message_id.clone();
        let customer_id = self.customer_id.clone();
        match &self.kind {
            FeedbackKind::Accepted => MessageEvent::MessageAccepted {
                message_id,
                customer_id,
                provider_message_id: self.provider_message_id.clone(),
            },
            FeedbackKind::ContentRejected { reason } => MessageEvent::MessageContentRejected {
                message_id,
                customer_id,
                reason: reason.clone(),
            },
            FeedbackKind::Delivered => MessageEvent::EmailDelivered {
                message_id,
                customer_id,
            },
            FeedbackKind::Bounced {
                bounce_type,
                diagnostic,
            } => MessageEvent::EmailBounced {
                message_id,
                customer_id,
                bounce_type: *bounce_type,
                address_hash: self.address_hash(identifiers),
                diagnostic: diagnostic.clone(),
            },
            FeedbackKind::Complained => MessageEvent::EmailComplained {
                message_id,
                customer_id,
                address_hash: self.address_hash(identifiers),
            },
            FeedbackKind::Opened => MessageEvent::EmailOpened {
                message_id,
                customer_id,
            },
            FeedbackKind::Clicked { link } => MessageEvent::EmailClicked {
                message_id,
                customer_id,
                link: link.clone(),
            },
        }
    }
}
