//! Consent: what a customer agreed to, for which purpose, over which channel.
//! The ledger of grants and revocations lives on the customer stream as
//! `ConsentGranted` / `ConsentRevoked` events.
//!
//! The terms themselves ([`Purpose`], [`Channel`], [`ConsentMethod`],
//! [`GdprContext`]...) are shared vocabulary ([`crate::vocabulary`]): the
//! customer aggregate, journeys, messaging and privacy use them too.

pub use crate::vocabulary::{ActiveConsent, Channel, ConsentMethod, GdprContext, LegalBasis, Purpose};

pub mod ledger;
pub mod proof;
