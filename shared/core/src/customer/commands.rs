//! Commands on a customer. They deserialise straight from request bodies;
//! unknown fields are refused so a typo never passes silently.

use crate::preferences::Preferences;
use crate::vocabulary::{Channel, ConsentMethod, Purpose};
use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize};

/// Where a registration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RegistrationSource {
    Web,
    Mobile,
    Api,
    Import,
}

/// Marketing consent ticked at registration, per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketingConsentChoice {
    #[serde(default)]
    pub email: bool,
    #[serde(default)]
    pub sms: bool,
    #[serde(default)]
    pub push: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterCustomer {
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(default)]
    pub phone: Option<String>,
    pub source: RegistrationSource,
    #[serde(default)]
    pub marketing_consent: MarketingConsentChoice,
    pub terms_accepted: bool,
    pub ip: String,
    pub user_agent: String,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub locale: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmail {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEmail {
    pub new_email: String,
}

/// A postal address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, e.g. `DE`.
    pub country: String,
}

impl Address {
    /// An address whose customer was erased: every field reads as `[erased]`.
    pub fn erased() -> Address {
        let erased = crate::privacy::ERASED.to_string();
        Address {
            line1: erased.clone(),
            line2: None,
            city: erased.clone(),
            region: None,
            postal_code: erased.clone(),
            country: erased,
        }
    }
}

/// Deserialises a required address that may read as `[erased]` (its
/// customer was erased) as [`Address::erased`], so the event still folds.
pub fn address_or_erased<'de, D>(deserializer: D) -> Result<Address, D::Error>
where
    D: Deserializer<'de>,
{
    let value = serde_json::Value::deserialize(deserializer)?;
    if value.as_str() == Some(crate::privacy::ERASED) {
        return Ok(Address::erased());
    }
    serde_json::from_value(value).map_err(serde::de::Error::custom)
}

/// A partial profile update: an absent field is left alone, `null` clears an
/// optional one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub phone: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub address: Option<Option<Address>>,
    #[serde(default, deserialize_with = "present")]
    pub date_of_birth: Option<Option<NaiveDate>>,
}

/// Tells "absent" (outer `None`, via `default`) from "null" (`Some(None)`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantConsent {
    pub purpose: Purpose,
    pub channel: Channel,
    pub method: ConsentMethod,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeConsent {
    pub purpose: Purpose,
    pub channel: Channel,
    pub reason: String,
    /// How the customer revoked (one-click, preference centre, ...), kept on the event.
    #[serde(default)]
    pub method: Option<ConsentMethod>,
}

/// A device the app registered for push notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterPushDevice {
    /// `apns` or `fcm`.
    pub platform: String,
    pub token: String,
}

/// The email address cannot receive mail (a permanent bounce, or found invalid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateEmail {
    /// The address that failed: ignored if the customer changed it since.
    pub email: String,
    pub reason: String,
}

/// Why an account is deactivated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeactivationReason {
    CustomerRequest,
    Fraud,
    TermsViolation,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeactivateCustomer {
    pub reason: DeactivationReason,
    #[serde(default)]
    pub notes: Option<String>,
}

/// Everything a customer can be asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerCommand {
    /// A registration through the API (`POST /customers`): every field the
    /// form asks for, names included.
    Register(RegisterCustomer),
    /// A registration by ingestion: a `server` source's `identify` of an
    /// unknown user id with an email address (decision 0051). Names may be
    /// empty (Segment's most common identify carries only an email); when
    /// given they are checked as [`CustomerCommand::Register`] checks them.
    /// Not reachable from a request body: only ingestion builds it.
    RegisterFromIngestion(RegisterCustomer),
    VerifyEmail(VerifyEmail),
    /// Sends the verification in progress again (decision 0085): the same
    /// token, so a link already sent keeps working; refused when the
    /// address is verified.
    ResendVerification,
    ChangeEmail(ChangeEmail),
    UpdateProfile(UpdateProfile),
    UpdatePreferences(Preferences),
    GrantConsent(GrantConsent),
    RevokeConsent(RevokeConsent),
    Deactivate(DeactivateCustomer),
    Reactivate,
    RegisterPushDevice(RegisterPushDevice),
    InvalidateEmail(InvalidateEmail),
    /// Art. 17: start erasing (the data key is deleted after this).
    RequestErasure(RequestErasure),
    /// Record that the data key is gone.
    CompleteErasure,
    /// Identity resolution (issue 8): an anonymous profile's history now
    /// belongs to this customer.
    RecordMerge(RecordMerge),
}

/// Merges the anonymous profile `profile_id` into the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMerge {
    pub profile_id: String,
}

/// Starts an erasure. `identifiers` are the salted hashes of the customer's
/// email and phone (`IdentifierHasher::identifiers_of`), computed by the
/// caller while the data key still exists: the proof ledger keeps the
/// customer's consent history and the erasure under them (decision 0019).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestErasure {
    #[serde(default)]
    pub identifiers: Vec<crate::privacy::HashedIdentifier>,
}
