//! What a journey asks the channel to send, and the few terms of messages
//! other contexts name: the customer's push devices (kept on the customer),
//! a message's [`Category`] (journeys decide it, messaging enforces it), and
//! how a sent email names its customer (dead letters seal SES feedback
//! under that customer's key).

use super::consent::{Channel, Purpose};
use crate::event::EventEnvelope;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Whether a message is part of a transaction the customer started or
/// marketing (which needs consent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Transactional,
    Marketing,
}

/// What a marketing message is to the customer (decision 0064), declared by
/// its campaign (`kind`). The customer's email frequency governs
/// promotional messages; lifecycle messages, which follow up something the
/// customer just did (registered, left a cart, browsed, started a checkout,
/// received an order), count only against the channel's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MarketingKind {
    Lifecycle,
    /// Broadcasts, cross-sell, replenishment, win-back: anything not
    /// declared lifecycle.
    #[default]
    Promotional,
}

/// What a journey asked for (the payload of `MessageRequested` on the
/// journey stream), as the channel function reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MessageRequest {
    pub message_id: String,
    pub instance_id: String,
    pub campaign_id: String,
    pub campaign_version: u64,
    pub step_id: String,
    pub customer_id: String,
    pub channel: Channel,
    pub template: String,
    pub category: Category,
    #[serde(default)]
    pub purpose: Option<Purpose>,
    /// The campaign's kind, on marketing messages; absent on transactional
    /// ones and on requests made before decision 0064 (read as promotional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<MarketingKind>,
    /// The discount code the send step asks for (decision 0074): minted by
    /// the channel when the message is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount: Option<DiscountOffer>,
    #[serde(default)]
    pub data: Value,
    /// A `channel: preferred` send (decision 0076): the channels it may
    /// take, in the step's fallback order, each with its template. The
    /// channel function chooses among them; `channel` and `template` are
    /// then the first option's. Empty for a send on one channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<ChannelOption>,
    /// The subject (an email's subject line, a push's title), in Liquid,
    /// that replaces the template's: a broadcast's subject-line test
    /// (decision 0087). Absent: the template's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// What a send step's `discount:` asks for (decision 0074): a code worth
/// `percent` off, valid `valid_for_seconds` from when the message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DiscountOffer {
    /// 1 to 100.
    pub percent: u8,
    pub valid_for_seconds: i64,
}

/// One channel a `channel: preferred` send may take, with its template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChannelOption {
    pub channel: Channel,
    pub template: String,
}

/// How the channel function chose the channel of a `channel: preferred`
/// send (decision 0076), recorded on the message stream (on the claim, or
/// on the suppression) for the explain API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChannelChoice {
    /// The channel taken; `None` when none qualified (the message is refused).
    pub chosen: Option<Channel>,
    /// The customer's preferred channel (`preferences.preferred_channel`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred: Option<Channel>,
    /// Every channel in the order considered (the preferred one first,
    /// then the step's fallback order), and why each was or was not taken.
    pub considered: Vec<ChannelConsidered>,
}

/// One channel of a [`ChannelChoice`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ChannelConsidered {
    pub channel: Channel,
    /// Whether this is the channel taken.
    pub taken: bool,
    /// Why it was taken, passed over, or not tried.
    pub reason: String,
}

impl MessageRequest {
    /// Reads a stored `MessageRequested` event.
    pub fn from_envelope(event: &EventEnvelope) -> Result<Self, crate::event::EventCodecError> {
        if event.event_type != "MessageRequested" {
            return Err(crate::event::EventCodecError(format!(
                "{} is not a MessageRequested",
                event.event_type
            )));
        }
        serde_json::from_value(event.data.clone()).map_err(|e| crate::event::EventCodecError(e.to_string()))
    }

    /// The kind of a marketing message (promotional unless its campaign
    /// said lifecycle); `None` for a transactional one.
    pub fn marketing_kind(&self) -> Option<MarketingKind> {
        (self.category == Category::Marketing).then(|| self.kind.unwrap_or_default())
    }

    /// The topic preferences filter on: the campaign.
    pub fn topic(&self) -> &str {
        &self.campaign_id
    }
}

/// Where push notifications go: a device registered by the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushDevice {
    /// `apns` or `fcm`.
    pub platform: String,
    pub token: String,
}

/// The EventBridge `source` of SES events.
pub const SES_SOURCE: &str = "aws.ses";
/// The message tag (on every sent email) that carries the customer id.
pub const CUSTOMER_ID_TAG: &str = "customer_id";
