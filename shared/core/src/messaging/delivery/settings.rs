//! The channel function's settings, where messages go, and the names of
//! the unknown-outcome metrics.

use crate::consent::Channel;
use crate::messaging::decision::DeliveryPolicy;
use crate::messaging::provider::{EmailProvider, PushProvider, SmsProvider};
use chrono::Duration;
use std::sync::Arc;

/// The most times one email goes to SES while nothing proves SES took it
/// (the first send and its resends), unless the settings say otherwise.
pub const DEFAULT_MAX_EMAIL_SENDS: u32 = 3;
/// How many times longer each resend's settle window is than the one before,
/// unless the settings say otherwise.
pub const DEFAULT_SETTLE_WINDOW_GROWTH: u32 = 2;
/// The longest a grown settle window becomes (unless the base window is
/// longer still): SES's `Send` comes within seconds, a day covers any backlog
/// of the feedback path that the queue-age alarms would not already show.
const MAX_GROWN_SETTLE_WINDOW: Duration = Duration::days(1);

/// Metric names of unknown outcomes (dimension `Channel`), for the alarms in
/// template.yaml (decision 0032).
pub mod outcome_metrics {
    /// A `MessageOutcomeUnknown` recorded: after a provider error that does
    /// not prove the message stayed unsent (property `Reason`:
    /// `provider-error`), or for a claim found without an outcome when its
    /// settle window ended (`stale-claim`). Property [`SETTLEMENT`] says
    /// what comes of it.
    pub const MESSAGE_OUTCOMES_UNKNOWN: &str = "MessageOutcomesUnknown";
    /// The property of [`MESSAGE_OUTCOMES_UNKNOWN`] that says what comes of
    /// the unknown outcome: `settle-check` (email: a check at the window's
    /// end sends it again unless SES reported it), `resend` (a stale email
    /// claim, given back and sent again at once), `given-up` (an email sent
    /// the most times allowed: never sent again, though a late `Send` still
    /// settles it), `at-most-once` (SMS, push: nothing can settle it).
    pub const SETTLEMENT: &str = "Settlement";
    /// The values of [`SETTLEMENT`].
    pub mod settlement {
        pub const SETTLE_CHECK: &str = "settle-check";
        pub const RESEND: &str = "resend";
        pub const GIVEN_UP: &str = "given-up";
        pub const AT_MOST_ONCE: &str = "at-most-once";
    }
    /// A claim found without any outcome when its settle window ended (a
    /// crash between the claim and the provider's answer).
    pub const STALE_MESSAGE_CLAIMS: &str = "StaleMessageClaims";
    /// An email sent again because SES reported nothing within the settle
    /// window after an unknown outcome (property `Send`: which send this
    /// is, 2 for the first resend).
    pub const MESSAGES_RESENT: &str = "MessagesResent";
}

/// Where messages go.
#[derive(Clone)]
pub struct Providers {
    pub email: Arc<dyn EmailProvider>,
    pub sms: Arc<dyn SmsProvider>,
    pub push: Arc<dyn PushProvider>,
}

/// Settings of the channel function.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// The `From` of every email.
    pub from_address: String,
    /// Where the API answers (`<base>/u/<token>`).
    pub public_base_url: String,
    /// The shop's own site (`links.shop` in templates).
    pub shop_url: String,
    pub policy: DeliveryPolicy,
    /// Backoff before the second provider attempt (doubles each time).
    pub first_backoff: std::time::Duration,
    /// How long after its claim a message with an unknown outcome waits for
    /// the provider's word (SES's `Send` comes within seconds) before it is
    /// taken as never sent (email: sent again) or left unknown (SMS, push).
    /// Also when a claim without any outcome counts as stale. This is the
    /// first send's window; each resend's is longer
    /// ([`Self::settle_window_growth`], [`Self::settle_window_for`]).
    pub settle_window: Duration,
    /// The most times one email goes to SES while no `Send` (or later
    /// feedback) proves SES took it: the first send and its resends. After
    /// the last, an unknown outcome is given up (counted, alarmed). 1 never
    /// sends again; 0 counts as 1.
    pub max_email_sends: u32,
    /// How many times longer each resend's settle window is than the one
    /// before (the window after `n` resends is `settle_window × growth^n`,
    /// at most a day unless `settle_window` is longer). 1 keeps it fixed; 0
    /// counts as 1.
    pub settle_window_growth: u32,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            from_address: "Shop <shop@example.com>".into(),
            public_base_url: "http://127.0.0.1:3000".into(),
            shop_url: "https://shop.example".into(),
            policy: DeliveryPolicy::default(),
            first_backoff: std::time::Duration::from_millis(200),
            settle_window: Duration::minutes(15),
            max_email_sends: DEFAULT_MAX_EMAIL_SENDS,
            settle_window_growth: DEFAULT_SETTLE_WINDOW_GROWTH,
        }
    }
}

/// The setting (environment variable) of the settle window, in whole
/// seconds: the channel function's and the local runtime's.
pub const SETTLE_WINDOW_SETTING: &str = "MESSAGE_SETTLE_SECONDS";

impl DeliverySettings {
    /// The channel's settings from its environment, the one reading the
    /// channel Lambda function and the local runtime share (issue 15): each
    /// setting that is absent or blank keeps its default.
    ///
    /// - `FROM_ADDRESS`, `PUBLIC_BASE_URL`, `SHOP_URL`;
    /// - `DELIVERY_CAPS` (`email:3/24h,...`, [`DeliveryPolicy::parse_caps`]);
    /// - [`SETTLE_WINDOW_SETTING`] (whole seconds).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let mut settings = DeliverySettings::default();
        if let Some(from) = get("FROM_ADDRESS") {
            settings.from_address = from;
        }
        if let Some(base) = get("PUBLIC_BASE_URL") {
            settings.public_base_url = base;
        }
        if let Some(shop) = get("SHOP_URL") {
            settings.shop_url = shop;
        }
        if let Some(caps) = get("DELIVERY_CAPS") {
            settings.policy.caps = DeliveryPolicy::parse_caps(&caps)?;
        }
        if let Some(seconds) = get(SETTLE_WINDOW_SETTING) {
            settings.settle_window = Self::parse_settle_window(&seconds)?;
        }
        Ok(settings)
    }

    /// The settle window of a claim made after `resends` resends:
    /// `settle_window × settle_window_growth^resends`, at most a day (or
    /// `settle_window`, if that is longer).
    pub fn settle_window_for(&self, resends: usize) -> Duration {
        let cap = self.settle_window.max(MAX_GROWN_SETTLE_WINDOW);
        let growth = i64::from(self.settle_window_growth.max(1));
        u32::try_from(resends)
            .ok()
            .and_then(|n| growth.checked_pow(n))
            .and_then(|factor| self.settle_window.num_milliseconds().checked_mul(factor))
            .map_or(cap, |millis| Duration::milliseconds(millis).min(cap))
    }

    /// Whether a message on `channel` whose outcome is unknown after
    /// `resends` resends may be sent again when SES reports nothing: email
    /// only, and fewer than [`Self::max_email_sends`] sends so far (the
    /// resends and the one whose outcome is unknown).
    pub fn may_resend(&self, channel: Channel, resends: usize) -> bool {
        let sends = resends.saturating_add(1);
        channel == Channel::Email && sends < self.max_email_sends.max(1) as usize
    }

    /// The settle window from its setting's text ([`SETTLE_WINDOW_SETTING`]):
    /// whole seconds, at least one.
    pub fn parse_settle_window(text: &str) -> Result<Duration, String> {
        match text.trim().parse::<i64>() {
            Ok(seconds) if seconds >= 1 => Ok(Duration::seconds(seconds)),
            _ => Err(format!(
                "{SETTLE_WINDOW_SETTING} must be a whole number of seconds, at least 1: {text:?}"
            )),
        }
    }
}
