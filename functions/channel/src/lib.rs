//! The channel function (ARCHITECTURE.md §8): its rules send it every
//! `MessageRequested`, the deferral timers, and the SES feedback events.
//! Requests and timers go to `MessageDelivery`; feedback is recorded on the
//! message's stream.
//!
//! `Settings` is what the function reads from its environment;
//! [`build`] assembles the delivery from its ports and the delivery
//! settings, for the Lambda `main` and the local runtime alike
//! ([`assembly`]). The settings, the queue's `handler` and the binary come
//! with the `lambda` feature (default): the local runtime (crm-local) takes
//! [`build`] alone, without the AWS SDK or a Lambda crate (decision 0057).

pub mod assembly;
#[cfg(feature = "lambda")]
pub mod handler;
#[cfg(feature = "lambda")]
mod settings;

pub use assembly::{build, ChannelPorts};
#[cfg(feature = "lambda")]
pub use settings::{Settings, SettingsError};
