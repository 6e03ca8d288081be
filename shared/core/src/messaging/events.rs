//! The message stream `message-<message id>`: what became of one requested
//! message, and what the provider told us afterwards.

use crate::consent::Channel;
use crate::event::{DomainEvent, EventEnvelope};
pub use crate::vocabulary::streams::message_stream_id as message_stream;
pub use crate::vocabulary::{Category, MarketingKind, MessageRequest};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a message's request is stored: its `MessageRequested` event on the
/// journey stream. A deferral and the message's timer carry this, never the
/// request: the request's `data` is the trigger event's personal data,
/// encrypted only where it is stored (decision 0041). The request is read
/// again, decrypted by the event store, when it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RequestRef {
    pub message_id: String,
    /// The journey stream (`journey-<instance id>`) holding the `MessageRequested`.
    pub stream_id: String,
    /// Its version on that stream. `None` when not known (a deferral or a
    /// settle check recorded before decision 0041): the stream is searched
    /// for the message id.
    #[serde(default)]
    pub version: Option<u64>,
}

impl RequestRef {
    /// Where `request` is stored when its event's version is not known: its
    /// journey instance's stream.
    pub fn of_request(request: &MessageRequest) -> RequestRef {
        RequestRef {
            message_id: request.message_id.clone(),
            stream_id: crate::journey::instance::stream_id(&request.instance_id),
            version: None,
        }
    }

    /// Where the stored `MessageRequested` `event` (of `request`) is; its
    /// version only when it was stored (a version above 0).
    pub fn of_event(request: &MessageRequest, event: &EventEnvelope) -> RequestRef {
        RequestRef {
            message_id: request.message_id.clone(),
            stream_id: event.stream_id.clone(),
            version: (event.version > 0).then_some(event.version),
        }
    }
}

/// Why a message was not sent (and never will be).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SuppressionReason {
    UnknownCustomer,
    CustomerInactive,
    NoConsent,
    /// The address bounced hard, complained, or is invalid.
    Suppressed,
    /// The address belonged to an erased customer and no one consented on
    /// it since (the proof ledger, decision 0019): no marketing.
    ErasedAddress,
    NoAddress,
    /// The customer's preferences rule it out (frequency never, category, SMS promotions).
    Preference,
    FrequencyCap,
    /// A `channel: preferred` send found no channel with consent, an
    /// address and the customer's leave (decision 0076).
    NoChannel,
}

/// Why a message waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeferralReason {
    QuietHours,
}

/// How an email bounced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BounceType {
    /// The address does not exist or refuses mail for good: suppress it.
    Permanent,
    Transient,
    Undetermined,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum MessageEvent {
    MessageSuppressed {
        message_id: String,
        customer_id: String,
        campaign_id: String,
        channel: Channel,
        reason: SuppressionReason,
        detail: String,
        /// A `channel: preferred` send: how its channel was chosen (decision 0076).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_choice: Option<crate::vocabulary::ChannelChoice>,
    },
    /// Waits until `until`; the message's timer hands it back then, and
    /// the request is read again from where it is stored. Schema version 2
    /// (decision 0041): the place of the request, never the request itself
    /// (its `data` is personal). Version 1 kept a copy of the request; it is
    /// read upcast (`messaging::past_versions::message_deferred_v1_to_v2`).
    MessageDeferred {
        message_id: String,
        customer_id: String,
        channel: Channel,
        reason: DeferralReason,
        until: DateTime<Utc>,
        requested: RequestRef,
    },
    /// The send is ours: recorded (a conditional append) before the provider
    /// is called, so a redelivered request finds it and does not send again.
    MessageClaimed {
        message_id: String,
        customer_id: String,
        channel: Channel,
        campaign_id: String,
        template: String,
        /// The version of the template rendered (decision 0077); none on
        /// claims recorded before templates had versions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template_version: Option<u64>,
        category: Category,
        /// sha256 of the normalised address (no personal data on this stream).
        address_hash: String,
        /// A `channel: preferred` send: how its channel was chosen (decision 0076).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel_choice: Option<crate::vocabulary::ChannelChoice>,
        /// The request's kind, on marketing messages (decision 0064).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<MarketingKind>,
    },
    MessageSent {
        message_id: String,
        customer_id: String,
        channel: Channel,
        category: Category,
        campaign_id: String,
        provider_message_id: String,
        /// The request's kind, on marketing messages (decision 0064).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<MarketingKind>,
    },
    MessageFailed {
        message_id: String,
        customer_id: String,
        channel: Channel,
        retryable: bool,
        error: String,
    },
    /// The provider call ended without an answer that says whether the
    /// message was taken (a timeout, a lost connection, a 5xx), or a claim
    /// found no outcome when its settle window ended (a crash between the
    /// claim and the provider's answer). The claim is kept: the message is
    /// not sent again blindly (decision 0032).
    MessageOutcomeUnknown {
        message_id: String,
        customer_id: String,
        channel: Channel,
        error: String,
        /// Email: when the settle check looks whether SES reported the
        /// message (`MessageAccepted` or later feedback settles it as sent;
        /// none means SES never took it and it is sent again). `None`: no
        /// feedback can settle it (SMS, push), or it was the email's last
        /// allowed send (given up): no further send, though a late `Send`
        /// still settles an email.
        #[serde(default)]
        settle_by: Option<DateTime<Utc>>,
    },
    /// No word from the provider within the settle window after an unknown
    /// outcome: it never took the message. The claim is given back and the
    /// message is sent again (email only, up to the most sends allowed,
    /// decision 0032).
    MessageNotAccepted {
        message_id: String,
        customer_id: String,
        channel: Channel,
        reason: String,
    },
    /// The provider reported it accepted the message (SES's `Send` event).
    /// Recorded only when it settles an outcome the channel did not know
    /// (then followed by `MessageSent`); for a message already recorded sent
    /// it adds nothing and is not stored.
    MessageAccepted {
        message_id: String,
        customer_id: String,
        provider_message_id: String,
    },
    /// SES accepted the message, then refused to send it (its `Reject`
    /// event: a virus in the content). It never went out; sending it again
    /// cannot help.
    MessageContentRejected {
        message_id: String,
        customer_id: String,
        reason: String,
    },
    EmailDelivered {
        message_id: String,
        customer_id: String,
    },
    EmailBounced {
        message_id: String,
        customer_id: String,
        bounce_type: BounceType,
        address_hash: String,
        #[serde(default)]
        diagnostic: Option<String>,
    },
    EmailComplained {
        message_id: String,
        customer_id: String,
        address_hash: String,
    },
    EmailOpened {
        message_id: String,
        customer_id: String,
    },
    EmailClicked {
        message_id: String,
        customer_id: String,
        link: String,
    },
}

impl MessageEvent {
    /// The claim of `request`'s message (`MessageClaimed`), to the address
    /// whose hash is `address_hash`.
    pub fn claim(request: &MessageRequest, address_hash: String) -> MessageEvent {
        MessageEvent::MessageClaimed {
            message_id: request.message_id.clone(),
            customer_id: request.customer_id.clone(),
            channel: request.channel,
            campaign_id: request.campaign_id.clone(),
            template: request.template.clone(),
            template_version: None,
            category: request.category,
            address_hash,
            kind: request.marketing_kind(),
            channel_choice: None,
        }
    }
}

impl DomainEvent for MessageEvent {
    fn schema_version(event_type: &str) -> u32 {
        match event_type {
            "MessageDeferred" => 2,
            _ => 1,
        }
    }

    fn upcasters() -> &'static [crate::event::Upcaster] {
        super::past_versions::MESSAGE_UPCASTERS
    }
}

/// Every event type on a message stream.
pub const MESSAGE_EVENT_TYPES: &[&str] = &[
    "MessageSuppressed",
    "MessageDeferred",
    "MessageClaimed",
    "MessageSent",
    "MessageFailed",
    "MessageOutcomeUnknown",
    "MessageNotAccepted",
    "MessageAccepted",
    "MessageContentRejected",
    "EmailDelivered",
    "EmailBounced",
    "EmailComplained",
    "EmailOpened",
    "EmailClicked",
];
