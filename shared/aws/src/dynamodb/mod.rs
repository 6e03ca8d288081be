//! DynamoDB adapters: the event store over the `events` table
//! (ARCHITECTURE.md §5) and the read models over the `read-models` table
//! (ARCHITECTURE.md §6).

mod batch_get;
mod event_store;
pub mod items;
mod read_models;
mod table;
mod transact;

pub use event_store::{DynamoEventStore, MAX_TRANSACTION_ITEMS};
pub use read_models::{DynamoReadModels, KIND_CHECKPOINT, KIND_DOC, READ_MODELS_TABLE};
pub use table::{create_events_table, create_read_models_table, TableError};
