//! Consent terms: what a customer agrees to, for which purpose, over which
//! channel, and how (the customer aggregate records grants and revocations;
//! the consent context keeps the ledgers; journeys and messaging check them;
//! privacy hashes the addresses of a channel).

use chrono::{DateTime, Utc};
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

/// One consent that is in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveConsent {
    pub purpose: Purpose,
    pub channel: Channel,
    pub method: ConsentMethod,
    pub granted_at: DateTime<Utc>,
}
