//! The customer aggregate: `decide` turns a command into events against the
//! current state, `evolve` folds one event into the state. Both are pure.

use super::commands::*;
use super::events::CustomerEvent;
use super::validate;
use super::{stream_id, CustomerError};
use crate::ports::ReservationChange;
use crate::preferences::Preferences;
use crate::vocabulary::{ActiveConsent, Channel, Purpose};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CustomerStatus {
    PendingVerification,
    Active,
    Deactivated,
    /// Erased (GDPR Art. 17): the data key is gone, no command applies.
    Erased,
}

/// The customer as the write side knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    pub status: CustomerStatus,
    pub email: String,
    pub email_verified: bool,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
    /// `[erased]` in a view of an erased customer (decision 0045) reads as none.
    #[serde(default, deserialize_with = "crate::privacy::erasable")]
    pub address: Option<Address>,
    #[serde(default, deserialize_with = "crate::privacy::erasable")]
    pub date_of_birth: Option<NaiveDate>,
    pub source: RegistrationSource,
    pub locale: Option<String>,
    pub preferences: Preferences,
    pub consents: Vec<ActiveConsent>,
    /// Devices registered for push notifications (latest last).
    #[serde(default)]
    pub push_devices: Vec<crate::vocabulary::PushDevice>,
    /// The current email address bounced for good or was found invalid.
    #[serde(default)]
    pub email_invalidated: bool,
    /// The token of the verification in progress, if any (never shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_verification_token: Option<String>,
    /// Erasure was requested (the data key is being or was deleted).
    #[serde(default)]
    pub erasure_requested: bool,
    /// Anonymous profiles merged into this customer (identity resolution).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_profiles: Vec<String>,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
}

impl Customer {
    /// The latest unrevoked grant of (purpose, channel), in force or lapsed:
    /// see [`Customer::consent_in_force`] for what may be acted on.
    pub fn consent(&self, purpose: Purpose, channel: Channel) -> Option<&ActiveConsent> {
        self.consents
            .iter()
            .find(|c| c.purpose == purpose && c.channel == channel)
    }

    /// The grant of (purpose, channel) in force at `now`: given, not
    /// revoked, and not lapsed ([`ActiveConsent::is_in_force_at`]).
    pub fn consent_in_force(&self, purpose: Purpose, channel: Channel, now: DateTime<Utc>) -> Option<&ActiveConsent> {
        self.consent(purpose, channel).filter(|c| c.is_in_force_at(now))
    }

    /// Erased, or being erased: nothing more is done for this customer.
    pub fn is_erased(&self) -> bool {
        self.erasure_requested || self.status == CustomerStatus::Erased
    }

    fn ensure_not_deactivated(&self) -> Result<(), CustomerError> {
        if self.status == CustomerStatus::Deactivated {
            return Err(CustomerError::conflict(None, "customer is deactivated"));
        }
        Ok(())
    }
}

/// What `decide` may need besides the command: the time and values chosen
/// outside (ids and tokens), so that `decide` stays deterministic.
#[derive(Debug, Clone)]
pub struct DecisionInput {
    /// The id a new customer gets (used by `Register` only).
    pub new_customer_id: String,
    /// A fresh, unguessable email verification token.
    pub verification_token: String,
}

/// Decides which events a command produces at `now`, or why it is refused.
pub fn decide(
    state: Option<&Customer>,
    command: &CustomerCommand,
    input: &DecisionInput,
    now: DateTime<Utc>,
) -> Result<Vec<CustomerEvent>, CustomerError> {
    match (state, command) {
        (Some(_), CustomerCommand::Register(_) | CustomerCommand::RegisterFromIngestion(_)) => {
            Err(CustomerError::conflict(None, "customer already exists"))
        }
        (None, CustomerCommand::Register(cmd)) => register(cmd, input, Names::Required),
        (None, CustomerCommand::RegisterFromIngestion(cmd)) => register(cmd, input, Names::Optional),
        (None, _) => Err(CustomerError::NotFound),
        (Some(c), CustomerCommand::RequestErasure(cmd)) => request_erasure(c, cmd),
        (Some(c), CustomerCommand::CompleteErasure) => complete_erasure(c),
        (Some(c), CustomerCommand::RecordMerge(cmd)) => record_merge(c, cmd),
        (Some(c), _) if c.erasure_requested || c.status == CustomerStatus::Erased => {
            Err(CustomerError::conflict(None, "customer is erased"))
        }
        (Some(c), CustomerCommand::VerifyEmail(cmd)) => verify_email(c, cmd),
        (Some(c), CustomerCommand::ResendVerification) => resend_verification(c),
        (Some(c), CustomerCommand::ChangeEmail(cmd)) => change_email(c, cmd, input),
        (Some(c), CustomerCommand::UpdateProfile(cmd)) => update_profile(c, cmd, now),
        (Some(c), CustomerCommand::UpdatePreferences(p)) => update_preferences(c, p),
        (Some(c), CustomerCommand::GrantConsent(cmd)) => grant_consent(c, cmd, now),
        (Some(c), CustomerCommand::RevokeConsent(cmd)) => revoke_consent(c, cmd, now),
        (Some(c), CustomerCommand::Deactivate(cmd)) => deactivate(c, cmd),
        (Some(c), CustomerCommand::Reactivate) => reactivate(c),
        (Some(c), CustomerCommand::RegisterPushDevice(cmd)) => register_push_device(c, cmd),
        (Some(c), CustomerCommand::InvalidateEmail(cmd)) => invalidate_email(c, cmd),
    }
}

/// Starts erasing: once only (a repeat, or one on an erased customer, writes
/// nothing). Every active consent is revoked with it, so the consent ledger
/// (which keeps no personal data) shows the consents ended at erasure.
fn request_erasure(c: &Customer, cmd: &RequestErasure) -> Result<Vec<CustomerEvent>, CustomerError> {
    if c.erasure_requested || c.status == CustomerStatus::Erased {
        return Ok(Vec::new());
    }
    let mut events = vec![CustomerEvent::CustomerErasureRequested {
        identifiers: cmd.identifiers.clone(),
    }];
    events.extend(c.consents.iter().map(|consent| CustomerEvent::ConsentRevoked {
        purpose: consent.purpose,
        channel: consent.channel,
        reason: "customer-erased".into(),
        method: None,
    }));
    Ok(events)
}

/// Merges an anonymous profile, once.
fn record_merge(c: &Customer, cmd: &RecordMerge) -> Result<Vec<CustomerEvent>, CustomerError> {
    if c.is_erased() {
        return Err(CustomerError::conflict(None, "the customer is erased"));
    }
    if c.merged_profiles.iter().any(|p| p == &cmd.profile_id) {
        return Ok(Vec::new());
    }
    Ok(vec![CustomerEvent::CustomersMerged {
        merged_profile_id: cmd.profile_id.clone(),
    }])
}

/// Records the erasure once the data key is deleted.
fn complete_erasure(c: &Customer) -> Result<Vec<CustomerEvent>, CustomerError> {
    if c.status == CustomerStatus::Erased {
        return Ok(Vec::new());
    }
    if !c.erasure_requested {
        return Err(CustomerError::conflict(None, "erasure was not requested"));
    }
    Ok(vec![CustomerEvent::CustomerErased {}])
}

/// Whether a registration must name the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    /// The API's registration: first and last name are required.
    Required,
    /// Ingestion's: a customer may be known by their email alone (decision 0051).
    Optional,
}

fn register(cmd: &RegisterCustomer, input: &DecisionInput, names: Names) -> Result<Vec<CustomerEvent>, CustomerError> {
    let email = validate::normalise_email("email", &cmd.email)?;
    let name = match names {
        Names::Required => validate::name,
        Names::Optional => validate::optional_name,
    };
    let first_name = name("first_name", &cmd.first_name)?;
    let last_name = name("last_name", &cmd.last_name)?;
    let phone = cmd.phone.as_deref().map(|p| validate::phone("phone", p)).transpose()?;
    if !cmd.terms_accepted {
        return Err(CustomerError::invalid("terms_accepted", "the terms must be accepted"));
    }
    let ip = validate::ip("ip", &cmd.ip)?;
    let user_agent = validate::user_agent("user_agent", &cmd.user_agent)?;
    let timezone = cmd
        .timezone
        .as_deref()
        .map(|t| validate::timezone("timezone", t))
        .transpose()?;
    let locale = cmd
        .locale
        .as_deref()
        .map(|l| validate::locale("locale", l))
        .transpose()?;
    if cmd.marketing_consent.sms && phone.is_none() {
        return Err(CustomerError::invalid(
            "marketing_consent.sms",
            "SMS consent needs a phone number",
        ));
    }

    let mut events = vec![CustomerEvent::CustomerRegistered {
        customer_id: input.new_customer_id.clone(),
        email: email.clone(),
        first_name,
        last_name,
        phone,
        source: cmd.source,
        ip: ip.clone(),
        user_agent: user_agent.clone(),
        timezone,
        locale,
        terms_accepted: true,
    }];
    let choice = cmd.marketing_consent;
    for (channel, chosen) in [
        (Channel::Email, choice.email),
        (Channel::Sms, choice.sms),
        (Channel::Push, choice.push),
    ] {
        if chosen {
            let method = crate::vocabulary::ConsentMethod::RegistrationCheckbox;
            events.push(CustomerEvent::ConsentGranted {
                purpose: Purpose::Marketing,
                channel,
                method,
                ip: Some(ip.clone()),
                user_agent: Some(user_agent.clone()),
                gdpr: crate::vocabulary::GdprContext::new(Purpose::Marketing, method, None),
            });
        }
    }
    events.push(CustomerEvent::EmailVerificationRequested {
        email,
        token: input.verification_token.clone(),
    });
    Ok(events)
}

fn verify_email(c: &Customer, cmd: &VerifyEmail) -> Result<Vec<CustomerEvent>, CustomerError> {
    c.ensure_not_deactivated()?;
    let Some(expected) = &c.pending_verification_token else {
        return Err(CustomerError::conflict(None, "email is already verified"));
    };
    if cmd.token.trim().is_empty() {
        return Err(CustomerError::invalid("token", "is required"));
    }
    if !constant_time_eq(cmd.token.trim().as_bytes(), expected.as_bytes()) {
        return Err(CustomerError::invalid("token", "does not match the verification sent"));
    }
    Ok(vec![CustomerEvent::EmailVerified { email: c.email.clone() }])
}

/// The verification in progress, requested again with its token (the
/// email-verification journey sends a message per request).
fn resend_verification(c: &Customer) -> Result<Vec<CustomerEvent>, CustomerError> {
    c.ensure_not_deactivated()?;
    let Some(token) = &c.pending_verification_token else {
        return Err(CustomerError::conflict(None, "email is already verified"));
    };
    Ok(vec![CustomerEvent::EmailVerificationRequested {
        email: c.email.clone(),
        token: token.clone(),
    }])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn change_email(c: &Customer, cmd: &ChangeEmail, input: &DecisionInput) -> Result<Vec<CustomerEvent>, CustomerError> {
    c.ensure_not_deactivated()?;
    let new_email = validate::normalise_email("new_email", &cmd.new_email)?;
    if new_email == c.email {
        return Err(CustomerError::invalid("new_email", "is the current email address"));
    }
    Ok(vec![
        CustomerEvent::CustomerEmailChanged {
            old_email: c.email.clone(),
            new_email: new_email.clone(),
        },
        CustomerEvent::EmailVerificationRequested {
            email: new_email,
            token: input.verification_token.clone(),
        },
    ])
}

fn address(a: &Address) -> Result<Address, CustomerError> {
    let required = |field: &str, v: &str| -> Result<String, CustomerError> {
        let v = validate::free_text(field, v, 200)?;
        if v.is_empty() {
            Err(CustomerError::invalid(field, "is required"))
        } else {
            Ok(v)
        }
    };
    let optional = |field: &str, v: &Option<String>| -> Result<Option<String>, CustomerError> {
        v.as_deref()
            .map(|s| validate::free_text(field, s, 200))
            .transpose()
            .map(|o| o.filter(|s| !s.is_empty()))
    };
    let country = a.country.trim().to_ascii_uppercase();
    if country.len() != 2 || !country.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(CustomerError::invalid(
            "address.country",
            "is not an ISO 3166-1 alpha-2 country code such as DE",
        ));
    }
    Ok(Address {
        line1: required("address.line1", &a.line1)?,
        line2: optional("address.line2", &a.line2)?,
        city: required("address.city", &a.city)?,
        region: optional("address.region", &a.region)?,
        postal_code: required("address.postal_code", &a.postal_code)?,
        country,
    })
}

fn update_profile(c: &Customer, cmd: &UpdateProfile, now: DateTime<Utc>) -> Result<Vec<CustomerEvent>, CustomerError> {
    c.ensure_not_deactivated()?;
    let mut events = Vec::new();

    let first = cmd
        .first_name
        .as_deref()
        .map(|n| validate::name("first_name", n))
        .transpose()?;
    let last = cmd
        .last_name
        .as_deref()
        .map(|n| validate::name("last_name", n))
        .transpose()?;
    let new_first = first.unwrap_or_else(|| c.first_name.clone());
    let new_last = last.unwrap_or_else(|| c.last_name.clone());
    let phone = match &cmd.phone {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) => Some(Some(validate::phone("phone", p)?)),
    };
    let address = match &cmd.address {
        None => None,
        Some(None) => Some(None),
        Some(Some(a)) => Some(Some(address(a)?)),
    };
    if let Some(Some(dob)) = cmd.date_of_birth {
        if dob > c.updated_at.date_naive() || dob < NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(dob) {
            return Err(CustomerError::invalid(
                "date_of_birth",
                "must be a past date after 1900-01-01",
            ));
        }
    }
    if phone == Some(None) && c.consent_in_force(Purpose::Marketing, Channel::Sms, now).is_some() {
        return Err(CustomerError::conflict(
            Some("phone"),
            "the phone number cannot be removed while SMS consent is active",
        ));
    }

    if new_first != c.first_name || new_last != c.last_name {
        events.push(CustomerEvent::CustomerNameChanged {
            old_first_name: c.first_name.clone(),
            old_last_name: c.last_name.clone(),
            new_first_name: new_first,
            new_last_name: new_last,
        });
    }
    if let Some(new_phone) = phone {
        if new_phone != c.phone {
            events.push(CustomerEvent::CustomerPhoneChanged {
                old_phone: c.phone.clone(),
                new_phone,
            });
            // SMS consent was given for the old number: it lapses with it
            // until it is granted again for the new one (decision 0042).
            events.extend(
                c.consents
                    .iter()
                    .filter(|consent| consent.channel == Channel::Sms)
                    .map(|consent| CustomerEvent::ConsentRevoked {
                        purpose: consent.purpose,
                        channel: consent.channel,
                        reason: "phone-changed".into(),
                        method: None,
                    }),
            );
        }
    }
    if let Some(new_address) = address {
        if new_address != c.address {
            events.push(CustomerEvent::CustomerAddressChanged {
                old_address: c.address.clone(),
                new_address,
            });
        }
    }
    if let Some(new_dob) = cmd.date_of_birth {
        if new_dob != c.date_of_birth {
            events.push(CustomerEvent::CustomerDateOfBirthChanged {
                old_date_of_birth: c.date_of_birth,
                new_date_of_birth: new_dob,
            });
        }
    }
    Ok(events)
}

fn update_preferences(c: &Customer, p: &Preferences) -> Result<Vec<CustomerEvent>, CustomerError> {
    c.ensure_not_deactivated()?;
    p.validate().map_err(|e| CustomerError::invalid(e.field, e.message))?;
    if *p == c.preferences {
        return Ok(Vec::new());
    }
    Ok(vec![CustomerEvent::PreferencesUpdated { preferences: p.clone() }])
}

/// A new grant, unless one is in force and not yet due for renewal. A
/// lapsed grant (two years old), or one in its last 30 days (renewed), is
/// given again: a new `ConsentGranted`, with its own proof beside the old
/// one, in force for two years from now.
fn grant_consent(c: &Customer, cmd: &GrantConsent, now: DateTime<Utc>) -> Result<Vec<CustomerEvent>, CustomerError> {
    c.ensure_not_deactivated()?;
    if c.consent_in_force(cmd.purpose, cmd.channel, now)
        .is_some_and(|active| !active.is_due_for_renewal_at(now))
    {
        return Err(CustomerError::conflict(
            Some("channel"),
            format!("{} consent over {} is already active", cmd.purpose, cmd.channel),
        ));
    }
    if cmd.channel == Channel::Sms && c.phone.is_none() {
        return Err(CustomerError::conflict(
            Some("channel"),
            "SMS consent needs a phone number on the profile",
        ));
    }
    let ip = cmd.ip.as_deref().map(|v| validate::ip("ip", v)).transpose()?;
    let user_agent = cmd
        .user_agent
        .as_deref()
        .map(|v| validate::user_agent("user_agent", v))
        .transpose()?;
    // The law of the customer's country applies, when their address is known.
    let jurisdiction = c.address.as_ref().map(|a| a.country.clone());
    Ok(vec![CustomerEvent::ConsentGranted {
        purpose: cmd.purpose,
        channel: cmd.channel,
        method: cmd.method,
        ip,
        user_agent,
        gdpr: crate::vocabulary::GdprContext::new(cmd.purpose, cmd.method, jurisdiction),
    }])
}

/// Revokes a grant in force; a lapsed one has nothing left to revoke.
fn revoke_consent(c: &Customer, cmd: &RevokeConsent, now: DateTime<Utc>) -> Result<Vec<CustomerEvent>, CustomerError> {
    let reason = validate::free_text("reason", &cmd.reason, 200)?;
    if c.consent_in_force(cmd.purpose, cmd.channel, now).is_none() {
        return Err(CustomerError::conflict(
            Some("channel"),
            format!("{} consent over {} is not active", cmd.purpose, cmd.channel),
        ));
    }
    Ok(vec![CustomerEvent::ConsentRevoked {
        purpose: cmd.purpose,
        channel: cmd.channel,
        reason: if reason.is_empty() {
            "customer-request".into()
        } else {
            reason
        },
        method: cmd.method,
    }])
}

fn deactivate(c: &Customer, cmd: &DeactivateCustomer) -> Result<Vec<CustomerEvent>, CustomerError> {
    if c.status == CustomerStatus::Deactivated {
        return Err(CustomerError::conflict(None, "customer is already deactivated"));
    }
    let notes = cmd
        .notes
        .as_deref()
        .map(|n| validate::free_text("notes", n, 1000))
        .transpose()?;
    let mut events = vec![CustomerEvent::CustomerDeactivated {
        reason: cmd.reason,
        notes,
        previous_status: c.status,
    }];
    events.extend(c.consents.iter().map(|consent| CustomerEvent::ConsentRevoked {
        purpose: consent.purpose,
        channel: consent.channel,
        reason: "account-deactivated".into(),
        method: None,
    }));
    Ok(events)
}

fn reactivate(c: &Customer) -> Result<Vec<CustomerEvent>, CustomerError> {
    if c.status != CustomerStatus::Deactivated {
        return Err(CustomerError::conflict(None, "customer is not deactivated"));
    }
    let status = if c.email_verified {
        CustomerStatus::Active
    } else {
        CustomerStatus::PendingVerification
    };
    Ok(vec![CustomerEvent::CustomerReactivated { status }])
}

fn register_push_device(c: &Customer, cmd: &RegisterPushDevice) -> Result<Vec<CustomerEvent>, CustomerError> {
    c.ensure_not_deactivated()?;
    if !matches!(cmd.platform.as_str(), "apns" | "fcm") {
        return Err(CustomerError::invalid("platform", "platform is apns or fcm"));
    }
    let token = cmd.token.trim();
    if token.is_empty() || token.len() > 4096 || !token.chars().all(|ch| ch.is_ascii_graphic()) {
        return Err(CustomerError::invalid(
            "token",
            "a device token is 1 to 4096 printable ASCII characters",
        ));
    }
    if c.push_devices
        .iter()
        .any(|d| d.token == token && d.platform == cmd.platform)
    {
        return Ok(Vec::new());
    }
    Ok(vec![CustomerEvent::PushDeviceRegistered {
        platform: cmd.platform.clone(),
        token: token.to_string(),
    }])
}

fn invalidate_email(c: &Customer, cmd: &InvalidateEmail) -> Result<Vec<CustomerEvent>, CustomerError> {
    if c.email_invalidated || !c.email.eq_ignore_ascii_case(cmd.email.trim()) {
        return Ok(Vec::new());
    }
    let reason = validate::free_text("reason", &cmd.reason, 200)?;
    Ok(vec![CustomerEvent::CustomerEmailInvalidated {
        email: c.email.clone(),
        reason,
    }])
}

/// Folds one event into the state. `at` is when it occurred, `version` its
/// position in the stream.
pub fn evolve(state: Option<Customer>, event: &CustomerEvent, at: DateTime<Utc>, version: u64) -> Option<Customer> {
    if let CustomerEvent::CustomerRegistered {
        customer_id,
        email,
        first_name,
        last_name,
        phone,
        source,
        timezone,
        locale,
        ..
    } = event
    {
        let preferences = Preferences {
            timezone: timezone.clone().unwrap_or_else(|| "UTC".into()),
            ..Preferences::default()
        };
        return Some(Customer {
            id: customer_id.clone(),
            status: CustomerStatus::PendingVerification,
            email: email.clone(),
            email_verified: false,
            first_name: first_name.clone(),
            last_name: last_name.clone(),
            phone: phone.clone(),
            address: None,
            date_of_birth: None,
            source: *source,
            locale: locale.clone(),
            preferences,
            consents: Vec::new(),
            push_devices: Vec::new(),
            email_invalidated: false,
            pending_verification_token: None,
            erasure_requested: false,
            merged_profiles: Vec::new(),
            registered_at: at,
            updated_at: at,
            version,
        });
    }
    let mut c = state?;
    c.updated_at = at;
    c.version = version;
    match event {
        CustomerEvent::CustomerRegistered { .. } => {}
        CustomerEvent::ConsentGranted {
            purpose,
            channel,
            method,
            ..
        } => {
            c.consents.retain(|x| !(x.purpose == *purpose && x.channel == *channel));
            c.consents.push(ActiveConsent {
                purpose: *purpose,
                channel: *channel,
                method: *method,
                granted_at: at,
            });
        }
        CustomerEvent::ConsentRevoked { purpose, channel, .. } => {
            c.consents.retain(|x| !(x.purpose == *purpose && x.channel == *channel));
        }
        CustomerEvent::EmailVerificationRequested { token, .. } => {
            c.pending_verification_token = Some(token.clone());
        }
        CustomerEvent::EmailVerified { .. } => {
            c.pending_verification_token = None;
            c.email_verified = true;
            if c.status == CustomerStatus::PendingVerification {
                c.status = CustomerStatus::Active;
            }
        }
        CustomerEvent::CustomerEmailChanged { new_email, .. } => {
            c.email = new_email.clone();
            c.email_verified = false;
            c.email_invalidated = false;
            if c.status == CustomerStatus::Active {
                c.status = CustomerStatus::PendingVerification;
            }
        }
        CustomerEvent::CustomerNameChanged {
            new_first_name,
            new_last_name,
            ..
        } => {
            c.first_name = new_first_name.clone();
            c.last_name = new_last_name.clone();
        }
        CustomerEvent::CustomerPhoneChanged { new_phone, .. } => c.phone = new_phone.clone(),
        CustomerEvent::CustomerAddressChanged { new_address, .. } => c.address = new_address.clone(),
        CustomerEvent::CustomerDateOfBirthChanged { new_date_of_birth, .. } => c.date_of_birth = *new_date_of_birth,
        CustomerEvent::PreferencesUpdated { preferences } => c.preferences = preferences.clone(),
        CustomerEvent::CustomerDeactivated { .. } => c.status = CustomerStatus::Deactivated,
        CustomerEvent::CustomerReactivated { status } => c.status = *status,
        CustomerEvent::PushDeviceRegistered { platform, token } => {
            c.push_devices.retain(|d| d.token != *token);
            c.push_devices.push(crate::vocabulary::PushDevice {
                platform: platform.clone(),
                token: token.clone(),
            });
        }
        CustomerEvent::CustomerEmailInvalidated { .. } => c.email_invalidated = true,
        CustomerEvent::CustomerErasureRequested { .. } => {
            c.erasure_requested = true;
            c.consents.clear();
            c.pending_verification_token = None;
        }
        CustomerEvent::CustomerErased {} => {
            c.erasure_requested = true;
            c.status = CustomerStatus::Erased;
            c.consents.clear();
            c.push_devices.clear();
            c.pending_verification_token = None;
            c.phone = None;
            c.address = None;
            c.date_of_birth = None;
            c.email = crate::privacy::ERASED.to_string();
            c.first_name = crate::privacy::ERASED.to_string();
            c.last_name = crate::privacy::ERASED.to_string();
        }
        CustomerEvent::CustomersMerged { merged_profile_id } => c.merged_profiles.push(merged_profile_id.clone()),
    }
    Some(c)
}

/// Folds a sequence of (event, occurred_at, version) onto a starting state.
pub fn fold<'a>(
    start: Option<Customer>,
    events: impl IntoIterator<Item = (&'a CustomerEvent, DateTime<Utc>, u64)>,
) -> Option<Customer> {
    events
        .into_iter()
        .fold(start, |state, (event, at, version)| evolve(state, event, at, version))
}

/// The uniqueness claims that events imply, each named by its logical name
/// ([`validate::email_reservation_name`]; the customer service's store
/// writes it under the address's keyed hash, decision 0046): a registered
/// or changed email takes its reservation, a changed email gives the old one back, and an
/// erasure request gives back the current one (of `state`, the customer
/// before `events`), so the address can register again as a new customer.
pub fn reservations_for(
    customer_id: &str,
    state: Option<&Customer>,
    events: &[CustomerEvent],
) -> Vec<ReservationChange> {
    let owner = stream_id(customer_id);
    let mut changes = Vec::new();
    for event in events {
        match event {
            CustomerEvent::CustomerErasureRequested { .. } => {
                if let Some(c) = state {
                    changes.push(ReservationChange::Release {
                        key: validate::email_reservation_name(&c.email),
                        owner: owner.clone(),
                    });
                }
            }
            CustomerEvent::CustomerRegistered { email, .. } => changes.push(ReservationChange::Claim {
                key: validate::email_reservation_name(email),
                owner: owner.clone(),
            }),
            CustomerEvent::CustomerEmailChanged { old_email, new_email } => {
                changes.push(ReservationChange::Claim {
                    key: validate::email_reservation_name(new_email),
                    owner: owner.clone(),
                });
                changes.push(ReservationChange::Release {
                    key: validate::email_reservation_name(old_email),
                    owner: owner.clone(),
                });
            }
            _ => {}
        }
    }
    changes
}
