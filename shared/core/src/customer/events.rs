//! What happened to a customer. Past tense, one event per fact.

use super::commands::{Address, DeactivationReason, RegistrationSource};
use super::CustomerStatus;
use crate::event::{DomainEvent, Upcaster};
use crate::preferences::Preferences;
use crate::vocabulary::{Channel, ConsentMethod, GdprContext, Purpose};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum CustomerEvent {
    CustomerRegistered {
        customer_id: String,
        email: String,
        first_name: String,
        last_name: String,
        #[serde(default)]
        phone: Option<String>,
        source: RegistrationSource,
        ip: String,
        user_agent: String,
        #[serde(default)]
        timezone: Option<String>,
        #[serde(default)]
        locale: Option<String>,
        terms_accepted: bool,
    },
    /// Schema version 2 (decision 0022): version 1 had no `gdpr`; stored v1
    /// grants are upcast on read (`super::past_versions`).
    ConsentGranted {
        purpose: Purpose,
        channel: Channel,
        method: ConsentMethod,
        #[serde(default)]
        ip: Option<String>,
        #[serde(default)]
        user_agent: Option<String>,
        gdpr: GdprContext,
    },
    ConsentRevoked {
        purpose: Purpose,
        channel: Channel,
        reason: String,
        /// How the revocation was made (absent on events stored before it was recorded).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<ConsentMethod>,
    },
    EmailVerificationRequested {
        email: String,
        token: String,
    },
    EmailVerified {
        email: String,
    },
    CustomerEmailChanged {
        old_email: String,
        new_email: String,
    },
    CustomerNameChanged {
        old_first_name: String,
        old_last_name: String,
        new_first_name: String,
        new_last_name: String,
    },
    CustomerPhoneChanged {
        old_phone: Option<String>,
        new_phone: Option<String>,
    },
    CustomerAddressChanged {
        #[serde(default, deserialize_with = "crate::privacy::erasable")]
        old_address: Option<Address>,
        #[serde(default, deserialize_with = "crate::privacy::erasable")]
        new_address: Option<Address>,
    },
    CustomerDateOfBirthChanged {
        #[serde(default, deserialize_with = "crate::privacy::erasable")]
        old_date_of_birth: Option<NaiveDate>,
        #[serde(default, deserialize_with = "crate::privacy::erasable")]
        new_date_of_birth: Option<NaiveDate>,
    },
    PreferencesUpdated {
        preferences: Preferences,
    },
    CustomerDeactivated {
        reason: DeactivationReason,
        #[serde(default)]
        notes: Option<String>,
        previous_status: CustomerStatus,
    },
    CustomerReactivated {
        status: CustomerStatus,
    },
    PushDeviceRegistered {
        platform: String,
        token: String,
    },
    /// Mail to this address fails for good; nothing more is sent to it.
    CustomerEmailInvalidated {
        email: String,
        reason: String,
    },
    /// Art. 17 erasure was asked for: the data key is deleted next, then
    /// [`CustomerEvent::CustomerErased`] follows. No personal data: the
    /// customer's identifiers only as salted hashes, for the proof ledger.
    CustomerErasureRequested {
        #[serde(default)]
        identifiers: Vec<crate::privacy::HashedIdentifier>,
    },
    /// The customer's data key is gone: every personal field of the stream
    /// now reads as `[erased]` (no personal data).
    CustomerErased {},
    /// An anonymous profile (its activity, carts and journeys) was merged
    /// into this customer (identity resolution, issue 8).
    CustomersMerged {
        merged_profile_id: String,
    },
}

impl DomainEvent for CustomerEvent {
    fn schema_version(event_type: &str) -> u32 {
        match event_type {
            "ConsentGranted" => 2,
            _ => 1,
        }
    }

    fn upcasters() -> &'static [Upcaster] {
        super::past_versions::CUSTOMER_UPCASTERS
    }
}

/// Every event type of the customer stream.
pub const CUSTOMER_EVENT_TYPES: &[&str] = &[
    "CustomerRegistered",
    "ConsentGranted",
    "ConsentRevoked",
    "EmailVerificationRequested",
    "EmailVerified",
    "CustomerEmailChanged",
    "CustomerNameChanged",
    "CustomerPhoneChanged",
    "CustomerAddressChanged",
    "CustomerDateOfBirthChanged",
    "PreferencesUpdated",
    "CustomerDeactivated",
    "CustomerReactivated",
    "PushDeviceRegistered",
    "CustomerEmailInvalidated",
    "CustomerErasureRequested",
    "CustomerErased",
    "CustomersMerged",
];

impl CustomerEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            CustomerEvent::CustomerRegistered { .. } => "CustomerRegistered",
            CustomerEvent::ConsentGranted { .. } => "ConsentGranted",
            CustomerEvent::ConsentRevoked { .. } => "ConsentRevoked",
            CustomerEvent::EmailVerificationRequested { .. } => "EmailVerificationRequested",
            CustomerEvent::EmailVerified { .. } => "EmailVerified",
            CustomerEvent::CustomerEmailChanged { .. } => "CustomerEmailChanged",
            CustomerEvent::CustomerNameChanged { .. } => "CustomerNameChanged",
            CustomerEvent::CustomerPhoneChanged { .. } => "CustomerPhoneChanged",
            CustomerEvent::CustomerAddressChanged { .. } => "CustomerAddressChanged",
            CustomerEvent::CustomerDateOfBirthChanged { .. } => "CustomerDateOfBirthChanged",
            CustomerEvent::PreferencesUpdated { .. } => "PreferencesUpdated",
            CustomerEvent::CustomerDeactivated { .. } => "CustomerDeactivated",
            CustomerEvent::CustomerReactivated { .. } => "CustomerReactivated",
            CustomerEvent::PushDeviceRegistered { .. } => "PushDeviceRegistered",
            CustomerEvent::CustomerEmailInvalidated { .. } => "CustomerEmailInvalidated",
            CustomerEvent::CustomerErasureRequested { .. } => "CustomerErasureRequested",
            CustomerEvent::CustomerErased {} => "CustomerErased",
            CustomerEvent::CustomersMerged { .. } => "CustomersMerged",
        }
    }
}
