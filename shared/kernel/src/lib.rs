//! crm-kernel: the framework every business context of the CRM uses.
//!
//! The event envelope and the ports (event store, read models, bus,
//! scheduler, dead letters), the `Aggregate` trait and its command loop,
//! the one retry contract, the consumer framework and page delivery, the
//! metrics port, the relay, privacy's keys, encryption and sealing, and the
//! vocabulary several contexts share. It knows no business context: those
//! live in crm-core, which re-exports every module here under the same
//! path (`crm_core::ports` is `crm_kernel::ports`). The layers inside are
//! in docs/architecture.md (decision 0063).

pub mod aggregate;
pub mod bus;
pub mod clock;
pub mod consumer;
pub mod crash;
pub mod event;
pub mod failure;
pub mod idempotency;
pub mod memory;
pub mod metrics;
pub mod pattern;
pub mod ports;
pub mod preferences;
pub mod privacy;
pub mod read_model_adapter;
pub mod relay;
pub mod scheduler;
pub mod vocabulary;

#[cfg(feature = "contract")]
pub mod read_model_contract;
#[cfg(feature = "contract")]
pub mod store_contract;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
