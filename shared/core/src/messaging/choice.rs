//! The channel of a `channel: preferred` send (decision 0076), chosen by
//! the channel function when it delivers, from what it knows then: the
//! customer's consent for the send's purpose on each channel, their
//! preferences (the preferred channel first; marketing they ruled out on a
//! channel), and whether the channel reaches them (a verified, valid email
//! address; a phone number; a push device).
//!
//! Pure, like the decision pipeline that runs after it on the chosen
//! channel: suppression lists, caps, the email frequency and quiet hours
//! still apply there, and do not make the choice move on to another
//! channel (a cap is no reason to try the customer elsewhere).

use super::decision::preference_refusal;
use crate::consent::Channel;
use crate::customer::Customer;
use crate::vocabulary::{Category, ChannelChoice, ChannelConsidered, MessageRequest};
use chrono::{DateTime, Utc};

/// Why `channel` cannot carry `request` to `customer` now, if it cannot.
fn refusal(request: &MessageRequest, customer: &Customer, channel: Channel, now: DateTime<Utc>) -> Option<String> {
    if let Some(purpose) = request.purpose {
        if customer.consent_in_force(purpose, channel, now).is_none() {
            return Some(format!("no {purpose} consent for {channel} in force"));
        }
    }
    let unreachable = match channel {
        Channel::Email if customer.email.is_empty() => Some("no email address"),
        Channel::Email if customer.email_invalidated => Some("the email address is invalidated"),
        Channel::Email if !customer.email_verified => Some("the email address is not verified"),
        Channel::Sms if customer.phone.as_deref().is_none_or(str::is_empty) => Some("no phone number"),
        Channel::Push if customer.push_devices.is_empty() => Some("no push device"),
        _ => None,
    };
    if let Some(why) = unreachable {
        return Some(why.to_string());
    }
    if request.category == Category::Marketing {
        return preference_refusal(&customer.preferences, channel, request.topic());
    }
    None
}

/// Chooses the channel of `request` for `customer`, or `None` for a
/// request on one channel. The order tried: the customer's preferred
/// channel if the step offers it, then the step's fallback order; the
/// first channel that qualifies is taken. A choice with no channel taken
/// means none qualified: the message is refused.
pub fn choose(request: &MessageRequest, customer: &Customer, now: DateTime<Utc>) -> Option<ChannelChoice> {
    if request.candidates.is_empty() {
        return None;
    }
    let preferred = customer.preferences.preferred_channel;
    let mut order: Vec<Channel> = Vec::new();
    if let Some(p) = preferred.filter(|p| request.candidates.iter().any(|c| c.channel == *p)) {
        order.push(p);
    }
    order.extend(
        request
            .candidates
            .iter()
            .map(|c| c.channel)
            .filter(|c| Some(*c) != preferred),
    );
    let mut chosen = None;
    let mut considered = Vec::new();
    for channel in order {
        let origin = if Some(channel) == preferred {
            "the customer's preferred channel".to_string()
        } else {
            match preferred {
                Some(p) if !request.candidates.iter().any(|c| c.channel == p) => {
                    format!("in the step's fallback order (the preferred {p} is not among the step's channels)")
                }
                _ => "in the step's fallback order".to_string(),
            }
        };
        let (taken, reason) = match (chosen, refusal(request, customer, channel, now)) {
            (Some(taken), _) => (false, format!("not tried: {taken} was taken before it")),
            (None, Some(why)) => (false, format!("passed over: {why}")),
            (None, None) => {
                chosen = Some(channel);
                (true, format!("taken: {origin}, with consent and an address"))
            }
        };
        considered.push(ChannelConsidered { channel, taken, reason });
    }
    Some(ChannelChoice {
        chosen,
        preferred,
        considered,
    })
}

/// The request on the chosen channel, with that channel's template.
pub fn on_channel(request: &MessageRequest, channel: Channel) -> MessageRequest {
    let mut chosen = request.clone();
    chosen.channel = channel;
    if let Some(option) = request.candidates.iter().find(|c| c.channel == channel) {
        chosen.template = option.template.clone();
    }
    chosen
}

/// The detail of the refusal when no channel qualified.
pub fn none_qualified(choice: &ChannelChoice) -> String {
    let reasons: Vec<String> = choice
        .considered
        .iter()
        .map(|c| format!("{}: {}", c.channel, c.reason.trim_start_matches("passed over: ")))
        .collect();
    format!("no channel qualifies ({})", reasons.join("; "))
}

#[cfg(test)]
mod tests;
