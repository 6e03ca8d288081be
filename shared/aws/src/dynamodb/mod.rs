//! DynamoDB adapters: the event store over the `events` table
//! (ARCHITECTURE.md §5).

mod event_store;
pub mod items;
mod table;

pub use event_store::{DynamoEventStore, MAX_TRANSACTION_ITEMS};
pub use table::{create_events_table, TableError};
