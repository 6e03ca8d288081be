//! Consent terms: what a customer agrees to, for which purpose, over which
//! channel, and how (the customer aggregate records grants and revocations;
//! the consent context keeps the ledgers; journeys and messaging check them;
//! privacy hashes the addresses of a channel).

use chrono::{DateTime, Months, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Why data is processed or a message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    Marketing,
    Analytics,
    Essential,
}

/// How a customer is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Channel {
    Email,
    Sms,
    Push,
}

/// How consent was captured: kept as proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConsentMethod {
    RegistrationCheckbox,
    PreferenceCentre,
    DoubleOptIn,
    Api,
    Import,
    SupportAgent,
    /// RFC 8058 one-click unsubscribe (`List-Unsubscribe-Post`).
    OneClick,
}

/// The lawful basis of processing (GDPR Art. 6(1)) a grant records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LegalBasis {
    /// Art. 6(1)(a): the customer consented (marketing, analytics).
    Consent,
    /// Art. 6(1)(b): needed for the contract (essential messages).
    Contract,
    /// Art. 6(1)(c).
    LegalObligation,
    /// Art. 6(1)(f).
    LegitimateInterests,
}

impl LegalBasis {
    /// The basis a purpose rests on when nothing else is recorded.
    pub fn for_purpose(purpose: Purpose) -> Self {
        match purpose {
            Purpose::Marketing | Purpose::Analytics => LegalBasis::Consent,
            Purpose::Essential => LegalBasis::Contract,
        }
    }
}

/// The GDPR context of a consent grant (`ConsentGranted` schema version 2,
/// decision 0022). Grants stored as version 1 read with the context their
/// purpose implies and no jurisdiction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GdprContext {
    pub legal_basis: LegalBasis,
    /// The country whose law applies (ISO 3166-1 alpha-2, the customer's
    /// address country when known); `None`: not known when granted.
    #[serde(default)]
    pub jurisdiction: Option<String>,
    /// Whether the customer acted to give it (a checkbox, the preference
    /// centre, a double opt-in), as Art. 7 wants consent to be shown.
    pub explicit: bool,
}

impl GdprContext {
    /// The context of a grant for `purpose` captured by `method`.
    pub fn new(purpose: Purpose, method: ConsentMethod, jurisdiction: Option<String>) -> Self {
        GdprContext {
            legal_basis: LegalBasis::for_purpose(purpose),
            jurisdiction,
            explicit: matches!(
                method,
                ConsentMethod::RegistrationCheckbox | ConsentMethod::PreferenceCentre | ConsentMethod::DoubleOptIn
            ),
        }
    }
}

impl Purpose {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Marketing => "marketing",
            Purpose::Analytics => "analytics",
            Purpose::Essential => "essential",
        }
    }
}

impl Channel {
    pub const ALL: [Channel; 3] = [Channel::Email, Channel::Sms, Channel::Push];
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
        }
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Consent lapses two years after it was given (seed 000), unless given again.
pub const CONSENT_VALIDITY_MONTHS: u32 = 24;

/// A grant may be renewed (given again while in force) in its last this
/// many days: the "renew your consent" message goes out when they begin.
pub const CONSENT_RENEWAL_DAYS: i64 = 30;

/// The latest grant of one (purpose, channel) that was not revoked. It is
/// in force until [`ActiveConsent::expires_at`]; after that it has lapsed
/// and the customer may give it again (a new grant, with its own proof).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveConsent {
    pub purpose: Purpose,
    pub channel: Channel,
    pub method: ConsentMethod,
    pub granted_at: DateTime<Utc>,
}

impl ActiveConsent {
    /// When the grant lapses: [`CONSENT_VALIDITY_MONTHS`] after it was given
    /// (`None` only past the end of the calendar).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.granted_at.checked_add_months(Months::new(CONSENT_VALIDITY_MONTHS))
    }

    /// In force at `now`: given and not yet lapsed.
    pub fn is_in_force_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at().is_some_and(|expires| now < expires)
    }

    /// In force at `now` and in its last [`CONSENT_RENEWAL_DAYS`]: the
    /// customer may give it again, which starts a new two years.
    pub fn is_due_for_renewal_at(&self, now: DateTime<Utc>) -> bool {
        self.is_in_force_at(now)
            && self
                .expires_at()
                .is_some_and(|expires| now >= expires - chrono::Duration::days(CONSENT_RENEWAL_DAYS))
    }
}

#[cfg(test)]
mod active_consent_tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_grant_is_in_force_for_two_years_and_not_a_moment_longer() {
        let granted_at = Utc.with_ymd_and_hms(2026, 2, 28, 9, 30, 0).single().expect("a time");
        let consent = ActiveConsent {
            purpose: Purpose::Marketing,
            channel: Channel::Email,
            method: ConsentMethod::PreferenceCentre,
            granted_at,
        };
        let expires = Utc.with_ymd_and_hms(2028, 2, 28, 9, 30, 0).single().expect("a time");
        assert_eq!(consent.expires_at(), Some(expires));
        assert!(consent.is_in_force_at(granted_at));
        assert!(consent.is_in_force_at(expires - chrono::Duration::seconds(1)));
        assert!(!consent.is_in_force_at(expires));
        assert!(!consent.is_in_force_at(expires + chrono::Duration::days(1)));
        // Renewable only in the last 30 days, while in force.
        let window = expires - chrono::Duration::days(CONSENT_RENEWAL_DAYS);
        assert!(!consent.is_due_for_renewal_at(window - chrono::Duration::seconds(1)));
        assert!(consent.is_due_for_renewal_at(window));
        assert!(consent.is_due_for_renewal_at(expires - chrono::Duration::seconds(1)));
        assert!(!consent.is_due_for_renewal_at(expires));
    }
}
