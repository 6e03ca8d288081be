//! Shared vocabulary: the few types and names several business contexts use,
//! so that no context imports another one sideways or upward for them
//! (docs/architecture.md, decision 0058).
//!
//! It sits just above the event envelope and below every other module: it
//! holds plain data and names, no behaviour beyond validation and codecs.
//! Each context re-exports what it owns under its usual path
//! (`consent::Channel`, `messaging::events::MessageRequest`,
//! `journey::definition::Category`, `journey::Duration`,
//! `messaging::provider::PushDevice`...).

pub mod consent;
pub mod duration;
pub mod messages;
pub mod streams;
pub mod zone;

pub use consent::{
    ActiveConsent, Channel, ConsentMethod, GdprContext, LegalBasis, Purpose, CONSENT_RENEWAL_DAYS,
    CONSENT_VALIDITY_MONTHS,
};
pub use duration::{Duration, LocalTime};
pub use messages::{
    Category, ChannelChoice, ChannelConsidered, ChannelOption, DiscountOffer, MarketingKind, MessageRequest,
    PushDevice, CUSTOMER_ID_TAG, SES_SOURCE,
};
pub use zone::{Zone, ZoneOffset};

/// A product id: 1 to 64 characters of letters, digits and `._:-` (carts,
/// orders, and the product ids of activity events).
pub fn valid_product_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}
