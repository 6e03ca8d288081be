//! crm-core: the business contexts of the CRM and the layer that assembles them.
//!
//! Nothing here knows about AWS, SQL or HTTP, nor whether it runs in Lambda
//! or in the local runtime. Adapters implement the traits in [`ports`].
//!
//! The framework the contexts stand on (envelope, ports, aggregates,
//! consumers, privacy, the shared vocabulary) is the crm-kernel crate; its
//! modules are re-exported here under the same paths, so `crm_core::ports`
//! is `crm_kernel::ports`. The layers are in docs/architecture.md.

pub use crm_kernel::{
    aggregate, bus, clock, consumer, crash, event, failure, idempotency, memory, metrics, pattern, ports, preferences,
    privacy, read_model_adapter, relay, scheduler, vocabulary,
};

#[cfg(feature = "contract")]
pub use crm_kernel::{event_store_contract, key_store_contract, read_model_contract, store_contract};

pub mod assembly;
pub mod broadcast;
pub mod commerce;
pub mod consent;
pub mod customer;
pub mod identity;
pub mod ingest;
pub mod insights;
pub mod journey;
pub mod messaging;
pub mod ops;
pub mod retention;
pub mod schemas;
pub mod segments;

#[cfg(test)]
mod kernel_tests;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
