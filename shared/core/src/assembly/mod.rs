//! The assembly layer: what lists or reaches into every business context,
//! above them all (docs/architecture.md, decision 0058). The framework
//! below knows no context, and the contexts know only those below them;
//! the registries that name them all live here.
//!
//! * [`projections`]: which projections each consumer group holds
//!   (`ConsumerGroup::projector`, `ConsumerGroup::consent`, from
//!   [`AssembledGroups`]).
//! * [`export`]: a customer's data export, which reads every context
//!   (GDPR Art. 20, decision 0020).

pub mod export;
pub mod projections;

pub use projections::AssembledGroups;
