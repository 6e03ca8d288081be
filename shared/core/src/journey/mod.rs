//! Journeys (ARCHITECTURE.md §7): campaign definitions as data, and the
//! pure pieces the journey engine evaluates.
//!
//! - [`definition`]: the campaign format and its validating loader,
//! - [`condition`]: conditions on the event and the customer profile,
//! - [`duration`]: `90s` / `1h` / `3d` durations and `HH:MM` local times
//!   (shared vocabulary, [`crate::vocabulary::duration`]: messaging's
//!   frequency caps use them too),
//! - [`templates`]: the template registry,
//! - [`instance`]: a journey instance as a pure state machine,
//! - [`experiment`]: split and holdout assignment (decision 0081).

pub mod campaigns;
pub mod catalog;
pub mod condition;
pub mod definition;
pub mod engine;
pub mod experiment;
pub mod explain;
pub mod instance;
pub mod templates;

pub use crate::vocabulary::duration;

pub use condition::{Condition, Op};
pub use definition::{Campaign, DefinitionError, Step};
pub use duration::{Duration, LocalTime};

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod tests;
