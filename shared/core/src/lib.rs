//! crm-core: the domain and application services of the CRM.
//!
//! Nothing here knows about AWS, SQL or HTTP, nor whether it runs in Lambda
//! or in the local runtime. Adapters implement the traits in [`ports`].

pub mod aggregate;
pub mod assembly;
pub mod bus;
pub mod clock;
pub mod commerce;
pub mod consent;
pub mod consumer;
pub mod crash;
pub mod customer;
pub mod event;
pub mod failure;
pub mod idempotency;
pub mod identity;
pub mod ingest;
pub mod insights;
pub mod journey;
pub mod memory;
pub mod messaging;
pub mod metrics;
pub mod ops;
pub mod pattern;
pub mod ports;
pub mod preferences;
pub mod privacy;
pub mod read_model_adapter;
pub mod relay;
pub mod retention;
pub mod scheduler;
pub mod schemas;
pub mod segments;
pub mod vocabulary;

#[cfg(feature = "contract")]
pub mod read_model_contract;
#[cfg(feature = "contract")]
pub mod store_contract;

#[cfg(any(test, feature = "contract"))]
pub mod testing;
