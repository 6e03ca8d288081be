//! The decision pipeline: what to do with one requested message, given the
//! customer as the event store knows them right now. Pure: the channel
//! function gathers the inputs, this decides, and the outcome becomes an
//! event on the message stream.
//!
//! Order: customer active → consent for the purpose and channel
//! (transactional messages need none) → suppression list (applies to every
//! message, transactional too) → preferences (marketing) → frequency caps
//! (marketing) → the customer's email frequency (promotional email) → quiet
//! hours (marketing: defer, never drop) → send.
//!
//! The email frequency (decision 0064, seed 000): a promotional email goes
//! only if the last promotional email went at least 24 h (`daily`) or 168 h
//! (`weekly`, the default) before. Lifecycle email (the follow-up of the
//! customer's own action: welcome, cart, browse and checkout reminders,
//! review requests) is not held back by it, and does not hold back the
//! next promotional email; it counts against the caps like all marketing.

use super::events::{DeferralReason, MarketingKind, MessageRequest, SuppressionReason};
use crate::consent::Channel;
use crate::customer::{Customer, CustomerStatus};
use crate::preferences::{EmailFrequency, Preferences};
use crate::vocabulary::Category;
use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

/// At most `limit` marketing messages on `channel` in any window of `window_seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrequencyCap {
    pub channel: Channel,
    pub limit: u32,
    pub window_seconds: i64,
}

/// The configurable limits of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryPolicy {
    /// Per channel, rolling windows, over every marketing message of both
    /// kinds; transactional messages are exempt.
    pub caps: Vec<FrequencyCap>,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            caps: vec![
                FrequencyCap {
                    channel: Channel::Email,
                    limit: 3,
                    window_seconds: 24 * 3600,
                },
                FrequencyCap {
                    channel: Channel::Sms,
                    limit: 1,
                    window_seconds: 24 * 3600,
                },
                // Seed 000: at most one push notification an hour.
                FrequencyCap {
                    channel: Channel::Push,
                    limit: 1,
                    window_seconds: 3600,
                },
            ],
        }
    }
}

impl DeliveryPolicy {
    /// Caps from configuration, e.g. `email:3/24h,sms:1/24h,push:1/1h`
    /// (`DELIVERY_CAPS`); the channels not named keep no cap.
    pub fn parse_caps(text: &str) -> Result<Vec<FrequencyCap>, String> {
        let mut caps = Vec::new();
        for (i, part) in text.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
            let bad =
                |why: &str| format!("DELIVERY_CAPS[{i}] '{part}': {why} (channel:limit/window, e.g. email:3/24h)");
            let (channel, rest) = part.split_once(':').ok_or_else(|| bad("no ':'"))?;
            let (limit, window) = rest.split_once('/').ok_or_else(|| bad("no '/'"))?;
            let channel = Channel::parse(channel.trim()).ok_or_else(|| bad("unknown channel"))?;
            let limit: u32 = limit.trim().parse().map_err(|_| bad("the limit is not a number"))?;
            let window: crate::vocabulary::Duration =
                window.trim().parse().map_err(|_| bad("the window is not a duration"))?;
            caps.push(FrequencyCap {
                channel,
                limit,
                window_seconds: window.as_seconds(),
            });
        }
        Ok(caps)
    }
}

/// One message the customer was sent (the channel function's send log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRecord {
    pub message_id: String,
    pub channel: Channel,
    pub category: Category,
    pub campaign_id: String,
    /// Marketing: lifecycle or promotional; absent on transactional sends
    /// and on sends logged before decision 0064 (read as promotional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<MarketingKind>,
    pub at: DateTime<Utc>,
}

impl SentRecord {
    /// Whether the customer's email frequency counts this send.
    fn is_promotional(&self) -> bool {
        self.category == Category::Marketing && self.kind.unwrap_or_default() == MarketingKind::Promotional
    }
}

/// How long after the last promotional email the next may go, by the
/// customer's email frequency (seed 000); `None` for `never` (no marketing
/// email at all).
pub fn email_interval(frequency: EmailFrequency) -> Option<Duration> {
    match frequency {
        EmailFrequency::Daily => Some(Duration::hours(24)),
        EmailFrequency::Weekly => Some(Duration::hours(168)),
        EmailFrequency::Never => None,
    }
}

/// Everything the pipeline looks at.
#[derive(Debug, Clone, Copy)]
pub struct DecisionInput<'a> {
    pub now: DateTime<Utc>,
    pub request: &'a MessageRequest,
    /// The customer, loaded from the event store (strongly consistent).
    pub customer: Option<&'a Customer>,
    /// The reason the address is on the suppression list, if it is.
    pub suppressed: Option<&'a str>,
    /// When a customer who had this address was erased, if no one consented
    /// on the channel since (the proof ledger).
    pub erased_address: Option<DateTime<Utc>>,
    /// Recent sends to this customer (at least the longest cap window).
    pub recent: &'a [SentRecord],
    pub policy: &'a DeliveryPolicy,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Send,
    Suppress {
        reason: SuppressionReason,
        detail: String,
    },
    Defer {
        until: DateTime<Utc>,
        reason: DeferralReason,
    },
}

fn suppress(reason: SuppressionReason, detail: impl Into<String>) -> Decision {
    Decision::Suppress {
        reason,
        detail: detail.into(),
    }
}

/// The address a channel uses, if the customer has one.
pub fn address(customer: &Customer, channel: Channel) -> Option<String> {
    match channel {
        Channel::Email => Some(customer.email.clone()).filter(|e| !e.is_empty()),
        Channel::Sms => customer.phone.clone().filter(|p| !p.is_empty()),
        Channel::Push => customer.push_devices.first().map(|d| d.token.clone()),
    }
}

/// Runs the pipeline.
pub fn decide(input: DecisionInput<'_>) -> Decision {
    let request = input.request;
    let channel = request.channel;
    let marketing = request.category == Category::Marketing;
    let Some(customer) = input.customer else {
        return suppress(
            SuppressionReason::UnknownCustomer,
            format!("customer {} does not exist", request.customer_id),
        );
    };
    if customer.status == CustomerStatus::Deactivated {
        return suppress(SuppressionReason::CustomerInactive, "customer is deactivated");
    }
    if let Some(erased_at) = input.erased_address.filter(|_| marketing) {
        return suppress(
            SuppressionReason::ErasedAddress,
            format!(
                "the address belonged to a customer erased on {}; no {channel} consent on it since",
                erased_at.format("%Y-%m-%d")
            ),
        );
    }
    if let Some(purpose) = request.purpose {
        if customer.consent_in_force(purpose, channel, input.now).is_none() {
            return suppress(
                SuppressionReason::NoConsent,
                format!("no {purpose} consent for {channel} in force"),
            );
        }
    }
    if address(customer, channel).is_none() {
        return suppress(
            SuppressionReason::NoAddress,
            format!("customer has no {channel} address"),
        );
    }
    if channel == Channel::Email && customer.email_invalidated {
        return suppress(SuppressionReason::Suppressed, "email address invalidated");
    }
    if let Some(reason) = input.suppressed {
        return suppress(
            SuppressionReason::Suppressed,
            format!("address is suppressed: {reason}"),
        );
    }
    if !marketing {
        return Decision::Send;
    }
    let prefs = &customer.preferences;
    if let Some(detail) = preference_refusal(prefs, channel, request.topic()) {
        return suppress(SuppressionReason::Preference, detail);
    }
    let sent_within = |window: Duration| {
        input
            .recent
            .iter()
            .filter(|s| s.channel == channel && s.category == Category::Marketing && s.message_id != request.message_id)
            .filter(|s| s.at > input.now - window)
            .count() as u64
    };
    for cap in input.policy.caps.iter().filter(|c| c.channel == channel) {
        if sent_within(Duration::seconds(cap.window_seconds)) >= u64::from(cap.limit) {
            return suppress(
                SuppressionReason::FrequencyCap,
                format!(
                    "{} {channel} marketing messages in {} s already",
                    cap.limit, cap.window_seconds
                ),
            );
        }
    }
    if channel == Channel::Email && request.marketing_kind() == Some(MarketingKind::Promotional) {
        if let Some(interval) = email_interval(prefs.email_frequency) {
            let last = input
                .recent
                .iter()
                .filter(|s| s.channel == Channel::Email && s.is_promotional() && s.message_id != request.message_id)
                .map(|s| s.at)
                .max();
            if let Some(last) = last.filter(|at| *at > input.now - interval) {
                return suppress(
                    SuppressionReason::FrequencyCap,
                    format!(
                        "email frequency {}: the last promotional email went at {}, the next may go from {}",
                        frequency_name(prefs.email_frequency),
                        last.to_rfc3339(),
                        (last + interval).to_rfc3339()
                    ),
                );
            }
        }
    }
    if let Some(until) = quiet_hours_end(customer, input.now) {
        return Decision::Defer {
            until,
            reason: DeferralReason::QuietHours,
        };
    }
    Decision::Send
}

/// Why the customer's preferences rule out marketing about `topic` on
/// `channel`, if they do.
pub(crate) fn preference_refusal(prefs: &Preferences, channel: Channel, topic: &str) -> Option<String> {
    match channel {
        Channel::Email if prefs.email_frequency == EmailFrequency::Never => Some("email frequency is never".into()),
        Channel::Email if !prefs.categories.is_empty() && !prefs.categories.iter().any(|c| c == topic) => {
            Some(format!("category {topic} not chosen"))
        }
        Channel::Email => None,
        Channel::Sms => (!prefs.sms_for_promotions).then(|| "no SMS for promotions".into()),
        // Opt-in (seed 000): no category chosen means no marketing push.
        Channel::Push => {
            (!prefs.push_categories.iter().any(|c| c == topic)).then(|| format!("push category {topic} not chosen"))
        }
    }
}

fn frequency_name(frequency: EmailFrequency) -> &'static str {
    match frequency {
        EmailFrequency::Daily => "daily",
        EmailFrequency::Weekly => "weekly",
        EmailFrequency::Never => "never",
    }
}

/// When `now` falls in the customer's quiet hours: the moment they end, in UTC.
pub fn quiet_hours_end(customer: &Customer, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let quiet = customer.preferences.quiet_hours.as_ref()?;
    let tz: crm_kernel::vocabulary::Zone = customer.preferences.timezone.parse().ok()?;
    let start = NaiveTime::parse_from_str(&quiet.start, "%H:%M").ok()?;
    let end = NaiveTime::parse_from_str(&quiet.end, "%H:%M").ok()?;
    let local = now.with_timezone(&tz).time();
    let inside = if start < end {
        start <= local && local < end
    } else {
        local >= start || local < end
    };
    inside.then(|| crate::journey::instance::next_local_time(now, tz, end))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::consent::{ActiveConsent, ConsentMethod, Purpose};
    use crate::customer::RegistrationSource;
    use crate::preferences::{Preferences, QuietHours};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    /// A verified customer with a phone, marketing consent on email, and a
    /// daily email frequency (the channel choice's tests start from it too).
    pub(crate) fn customer() -> Customer {
        Customer {
            id: "c-1".into(),
            status: CustomerStatus::Active,
            email: "ana@example.com".into(),
            email_verified: true,
            first_name: "Ana".into(),
            last_name: "Lima".into(),
            phone: Some("+4915112345678".into()),
            erasure_requested: false,
            merged_profiles: Vec::new(),
            address: None,
            date_of_birth: None,
            source: RegistrationSource::Web,
            locale: None,
            preferences: Preferences {
                email_frequency: EmailFrequency::Daily,
                ..Preferences::default()
            },
            consents: vec![ActiveConsent {
                purpose: Purpose::Marketing,
                channel: Channel::Email,
                method: ConsentMethod::RegistrationCheckbox,
                granted_at: at("2026-11-01T00:00:00Z"),
            }],
            push_devices: Vec::new(),
            email_invalidated: false,
            pending_verification_token: None,
            registered_at: at("2026-11-01T00:00:00Z"),
            updated_at: at("2026-11-01T00:00:00Z"),
            version: 2,
        }
    }

    fn request(category: Category, channel: Channel) -> MessageRequest {
        MessageRequest {
            message_id: "m-1".into(),
            instance_id: "i-1".into(),
            campaign_id: "abandoned-cart".into(),
            campaign_version: 1,
            step_id: "reminder".into(),
            candidates: Vec::new(),
            subject: None,
            customer_id: "c-1".into(),
            channel,
            template: "abandoned-cart-reminder".into(),
            category,
            purpose: (category == Category::Marketing).then_some(Purpose::Marketing),
            // The abandoned cart is a lifecycle campaign (decision 0064).
            kind: (category == Category::Marketing).then_some(MarketingKind::Lifecycle),
            discount: None,
            data: serde_json::Value::Null,
        }
    }

    /// A promotional email (the cross-sell), message `id`.
    fn promotional(id: &str) -> MessageRequest {
        MessageRequest {
            message_id: id.into(),
            campaign_id: "cross-sell".into(),
            template: "cross-sell-recommendations".into(),
            kind: Some(MarketingKind::Promotional),
            ..request(Category::Marketing, Channel::Email)
        }
    }

    fn decide_for(c: Option<&Customer>, r: &MessageRequest, now: &str, recent: &[SentRecord]) -> Decision {
        decide(DecisionInput {
            now: at(now),
            request: r,
            customer: c,
            suppressed: None,
            erased_address: None,
            recent,
            policy: &DeliveryPolicy::default(),
        })
    }

    fn reason(d: Decision) -> SuppressionReason {
        match d {
            Decision::Suppress { reason, .. } => reason,
            other => panic!("expected a suppression, got {other:?}"),
        }
    }

    const NOON: &str = "2026-11-29T12:00:00Z";

    #[test]
    fn marketing_needs_consent_in_force_transactional_does_not() {
        let mut c = customer();
        let marketing = request(Category::Marketing, Channel::Email);
        assert_eq!(decide_for(Some(&c), &marketing, NOON, &[]), Decision::Send);
        assert_eq!(
            reason(decide_for(Some(&c), &marketing, "2028-11-02T00:00:00Z", &[])),
            SuppressionReason::NoConsent,
            "consent lapses after 24 months"
        );
        c.consents.clear();
        assert_eq!(
            reason(decide_for(Some(&c), &marketing, NOON, &[])),
            SuppressionReason::NoConsent
        );
        let transactional = request(Category::Transactional, Channel::Email);
        assert_eq!(decide_for(Some(&c), &transactional, NOON, &[]), Decision::Send);
        c.status = CustomerStatus::Deactivated;
        assert_eq!(
            reason(decide_for(Some(&c), &transactional, NOON, &[])),
            SuppressionReason::CustomerInactive
        );
        assert_eq!(
            reason(decide_for(None, &transactional, NOON, &[])),
            SuppressionReason::UnknownCustomer
        );
    }

    #[test]
    fn an_erased_address_gets_no_marketing_but_transactional_mail() {
        let c = customer();
        let erased_at = at(NOON) - Duration::days(30);
        let policy = DeliveryPolicy::default();
        let input = |r| DecisionInput {
            now: at(NOON),
            request: r,
            customer: Some(&c),
            suppressed: None,
            erased_address: Some(erased_at),
            recent: &[],
            policy: &policy,
        };
        let marketing = request(Category::Marketing, Channel::Email);
        match decide(input(&marketing)) {
            Decision::Suppress { reason, detail } => {
                assert_eq!(reason, SuppressionReason::ErasedAddress);
                assert!(detail.contains(&erased_at.format("%Y-%m-%d").to_string()), "{detail}");
            }
            other => panic!("expected a suppression, got {other:?}"),
        }
        let transactional = request(Category::Transactional, Channel::Email);
        assert_eq!(decide(input(&transactional)), Decision::Send);
    }

    #[test]
    fn the_suppression_list_stops_transactional_mail_too() {
        let c = customer();
        let r = request(Category::Transactional, Channel::Email);
        let d = decide(DecisionInput {
            now: at(NOON),
            request: &r,
            customer: Some(&c),
            suppressed: Some("hard bounce"),
            erased_address: None,
            recent: &[],
            policy: &DeliveryPolicy::default(),
        });
        assert_eq!(reason(d), SuppressionReason::Suppressed);
    }

    #[test]
    fn preferences_rule_out_marketing() {
        let mut c = customer();
        let r = request(Category::Marketing, Channel::Email);
        c.preferences.categories = vec!["cross-sell".into()];
        assert_eq!(
            reason(decide_for(Some(&c), &r, NOON, &[])),
            SuppressionReason::Preference
        );
        c.preferences.categories = vec!["abandoned-cart".into()];
        assert_eq!(decide_for(Some(&c), &r, NOON, &[]), Decision::Send);
        c.preferences.email_frequency = EmailFrequency::Never;
        assert_eq!(
            reason(decide_for(Some(&c), &r, NOON, &[])),
            SuppressionReason::Preference
        );
        c.preferences.email_frequency = EmailFrequency::Daily;
        c.consents.push(ActiveConsent {
            purpose: Purpose::Marketing,
            channel: Channel::Sms,
            method: ConsentMethod::Api,
            granted_at: at("2026-11-01T00:00:00Z"),
        });
        let sms = request(Category::Marketing, Channel::Sms);
        assert_eq!(
            reason(decide_for(Some(&c), &sms, NOON, &[])),
            SuppressionReason::Preference
        );
        c.preferences.sms_for_promotions = true;
        assert_eq!(decide_for(Some(&c), &sms, NOON, &[]), Decision::Send);
    }

    fn sent(id: &str, channel: Channel, category: Category, when: &str) -> SentRecord {
        SentRecord {
            message_id: id.into(),
            channel,
            category,
            campaign_id: "x".into(),
            kind: None,
            at: at(when),
        }
    }

    /// A marketing email of `kind` sent at `when`.
    fn sent_email(id: &str, kind: MarketingKind, when: &str) -> SentRecord {
        SentRecord {
            kind: Some(kind),
            ..sent(id, Channel::Email, Category::Marketing, when)
        }
    }

    fn weekly() -> Customer {
        let mut c = customer();
        c.preferences.email_frequency = EmailFrequency::Weekly;
        c
    }

    #[test]
    fn weekly_is_the_default_and_allows_one_promotional_email_in_168_hours() {
        assert_eq!(Preferences::default().email_frequency, EmailFrequency::Weekly);
        let c = weekly();
        let last = [sent_email("p-1", MarketingKind::Promotional, "2026-11-22T12:00:00Z")];
        // One week less a second after the last: held back, with when it may go.
        let d = decide_for(Some(&c), &promotional("p-2"), "2026-11-29T11:59:59Z", &last);
        match d {
            Decision::Suppress { reason, detail } => {
                assert_eq!(reason, SuppressionReason::FrequencyCap);
                assert!(detail.contains("weekly"), "{detail}");
                assert!(detail.contains("2026-11-29T12:00:00"), "{detail}");
            }
            other => panic!("expected a suppression, got {other:?}"),
        }
        assert_eq!(
            decide_for(Some(&c), &promotional("p-2"), NOON, &last),
            Decision::Send,
            "168 h after the last"
        );
        // A send logged before decision 0064 (no kind) counts as promotional.
        let old = [sent("p-0", Channel::Email, Category::Marketing, "2026-11-26T12:00:00Z")];
        assert_eq!(
            reason(decide_for(Some(&c), &promotional("p-2"), NOON, &old)),
            SuppressionReason::FrequencyCap
        );
        // The request's own earlier attempt does not hold it back.
        let itself = [sent_email("p-2", MarketingKind::Promotional, "2026-11-29T11:00:00Z")];
        assert_eq!(decide_for(Some(&c), &promotional("p-2"), NOON, &itself), Decision::Send);
    }

    #[test]
    fn daily_allows_one_promotional_email_in_24_hours() {
        let c = customer();
        assert_eq!(c.preferences.email_frequency, EmailFrequency::Daily);
        let last = [sent_email("p-1", MarketingKind::Promotional, "2026-11-28T12:00:00Z")];
        assert_eq!(
            reason(decide_for(Some(&c), &promotional("p-2"), "2026-11-29T11:59:59Z", &last)),
            SuppressionReason::FrequencyCap
        );
        assert_eq!(decide_for(Some(&c), &promotional("p-2"), NOON, &last), Decision::Send);
        // An SMS or a transactional email the same hour does not count.
        let other = [
            sent("s-1", Channel::Sms, Category::Marketing, "2026-11-29T11:00:00Z"),
            sent("t-1", Channel::Email, Category::Transactional, "2026-11-29T11:00:00Z"),
        ];
        assert_eq!(decide_for(Some(&c), &promotional("p-2"), NOON, &other), Decision::Send);
    }

    #[test]
    fn lifecycle_email_is_held_back_only_by_the_caps() {
        let c = weekly();
        let lifecycle = request(Category::Marketing, Channel::Email);
        // A promotional email an hour ago: the cart reminder still goes.
        let promo = [sent_email("p-1", MarketingKind::Promotional, "2026-11-29T11:00:00Z")];
        assert_eq!(decide_for(Some(&c), &lifecycle, NOON, &promo), Decision::Send);
        // Three marketing emails this week, none in the last day: it goes too.
        let week = [
            sent_email("p-1", MarketingKind::Promotional, "2026-11-23T12:00:00Z"),
            sent_email("w-1", MarketingKind::Lifecycle, "2026-11-25T12:00:00Z"),
            sent_email("c-1", MarketingKind::Lifecycle, "2026-11-27T12:00:00Z"),
        ];
        assert_eq!(decide_for(Some(&c), &lifecycle, NOON, &week), Decision::Send);
        // Lifecycle emails do not hold back the next promotional one...
        let welcome = [sent_email("w-1", MarketingKind::Lifecycle, "2026-11-29T11:00:00Z")];
        assert_eq!(
            decide_for(Some(&c), &promotional("p-2"), NOON, &welcome),
            Decision::Send
        );
        // ...but every marketing email counts against the channel's cap (3 in 24 h).
        let three = [
            sent_email("w-1", MarketingKind::Lifecycle, "2026-11-29T08:00:00Z"),
            sent_email("c-1", MarketingKind::Lifecycle, "2026-11-29T09:00:00Z"),
            sent_email("p-1", MarketingKind::Promotional, "2026-11-28T13:00:00Z"),
        ];
        assert_eq!(
            reason(decide_for(Some(&c), &lifecycle, NOON, &three)),
            SuppressionReason::FrequencyCap
        );
        // `never` stops lifecycle email too: it is marketing.
        let mut never = weekly();
        never.preferences.email_frequency = EmailFrequency::Never;
        assert_eq!(
            reason(decide_for(Some(&never), &lifecycle, NOON, &[])),
            SuppressionReason::Preference
        );
    }

    fn with_push(mut c: Customer) -> Customer {
        c.consents.push(ActiveConsent {
            purpose: Purpose::Marketing,
            channel: Channel::Push,
            method: ConsentMethod::Api,
            granted_at: at("2026-11-01T00:00:00Z"),
        });
        c.push_devices.push(crate::messaging::provider::PushDevice {
            platform: "fcm".into(),
            token: "t".into(),
        });
        c
    }

    #[test]
    fn push_categories_are_opt_in() {
        let mut c = with_push(customer());
        let push = request(Category::Marketing, Channel::Push);
        assert!(c.preferences.push_categories.is_empty());
        match decide_for(Some(&c), &push, NOON, &[]) {
            Decision::Suppress { reason, detail } => {
                assert_eq!(reason, SuppressionReason::Preference);
                assert!(detail.contains("abandoned-cart"), "{detail}");
            }
            other => panic!("no category chosen means no push, got {other:?}"),
        }
        c.preferences.push_categories = vec!["cross-sell".into()];
        assert_eq!(
            reason(decide_for(Some(&c), &push, NOON, &[])),
            SuppressionReason::Preference
        );
        c.preferences.push_categories.push("abandoned-cart".into());
        assert_eq!(decide_for(Some(&c), &push, NOON, &[]), Decision::Send);
        // A stored document without the field reads as none chosen.
        let stored: Preferences =
            serde_json::from_value(serde_json::json!({ "email_frequency": "daily" })).expect("preferences");
        assert!(stored.push_categories.is_empty());
        // Transactional push needs no category.
        c.preferences.push_categories.clear();
        let transactional = request(Category::Transactional, Channel::Push);
        assert_eq!(decide_for(Some(&c), &transactional, NOON, &[]), Decision::Send);
    }

    #[test]
    fn caps_count_marketing_on_the_channel_in_the_rolling_window() {
        let mut c = with_push(customer());
        c.preferences.push_categories = vec!["abandoned-cart".into()];
        let push = request(Category::Marketing, Channel::Push);
        let one_push = [sent("p-0", Channel::Push, Category::Marketing, "2026-11-29T11:30:00Z")];
        assert_eq!(
            reason(decide_for(Some(&c), &push, NOON, &one_push)),
            SuppressionReason::FrequencyCap
        );
        assert_eq!(
            decide_for(Some(&c), &push, "2026-11-29T12:30:01Z", &one_push),
            Decision::Send
        );
        let email = request(Category::Marketing, Channel::Email);
        let three = [
            sent("e-1", Channel::Email, Category::Marketing, "2026-11-28T13:00:00Z"),
            sent("e-2", Channel::Email, Category::Marketing, "2026-11-29T08:00:00Z"),
            sent("e-3", Channel::Email, Category::Marketing, "2026-11-29T09:00:00Z"),
            sent("t-1", Channel::Email, Category::Transactional, "2026-11-29T10:00:00Z"),
        ];
        assert_eq!(
            reason(decide_for(Some(&c), &email, NOON, &three)),
            SuppressionReason::FrequencyCap
        );
        assert_eq!(
            decide_for(Some(&c), &email, "2026-11-29T13:00:01Z", &three),
            Decision::Send
        );
        let transactional = request(Category::Transactional, Channel::Email);
        assert_eq!(decide_for(Some(&c), &transactional, NOON, &three), Decision::Send);
    }

    #[test]
    fn caps_read_from_configuration() {
        let caps = DeliveryPolicy::parse_caps("email:5/24h, push:2/30m").expect("caps");
        assert_eq!(caps.len(), 2);
        assert_eq!(
            (caps[1].channel, caps[1].limit, caps[1].window_seconds),
            (Channel::Push, 2, 1800)
        );
        assert!(DeliveryPolicy::parse_caps("fax:1/1h")
            .unwrap_err()
            .contains("unknown channel"));
        assert!(DeliveryPolicy::parse_caps("email:x/1h")
            .unwrap_err()
            .contains("DELIVERY_CAPS[0]"));
        assert!(DeliveryPolicy::parse_caps("email:1/soon").is_err());
    }

    #[test]
    fn quiet_hours_defer_marketing_to_their_local_end() {
        let mut c = customer();
        c.preferences.timezone = "Europe/Berlin".into();
        c.preferences.quiet_hours = Some(QuietHours {
            start: "21:00".into(),
            end: "08:00".into(),
        });
        let r = request(Category::Marketing, Channel::Email);
        // 22:30 UTC is 23:30 in Berlin (CET): deferred to 08:00 Berlin = 07:00 UTC.
        assert_eq!(
            decide_for(Some(&c), &r, "2026-11-29T22:30:00Z", &[]),
            Decision::Defer {
                until: at("2026-11-30T07:00:00Z"),
                reason: DeferralReason::QuietHours
            }
        );
        assert_eq!(decide_for(Some(&c), &r, "2026-11-30T07:00:00Z", &[]), Decision::Send);
        let t = request(Category::Transactional, Channel::Email);
        assert_eq!(decide_for(Some(&c), &t, "2026-11-29T22:30:00Z", &[]), Decision::Send);
    }
}
