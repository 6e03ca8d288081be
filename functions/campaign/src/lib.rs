//! The campaign function (ARCHITECTURE.md §2, §7): its rule sends it the
//! customer, consent and commerce events and the fired timers. Events go to
//! the journey engine; timers to the journey or cart they belong to.
//!
//! `Settings` is what the function reads from its environment;
//! [`build`] assembles the handler from its ports, for the Lambda `main`
//! and the local runtime alike ([`assembly`]). The settings, the queue's
//! `handler` and the binary come with the `lambda` feature (default): the
//! local runtime (crm-local) takes [`build`] alone, without the AWS SDK or
//! a Lambda crate (decision 0057).

pub mod assembly;
#[cfg(feature = "lambda")]
pub mod handler;
#[cfg(feature = "lambda")]
mod settings;

pub use assembly::{build, CampaignPorts};
#[cfg(feature = "lambda")]
pub use settings::Settings;
