//! crm-local: the local runtime. It hosts the same handlers as the Lambda
//! functions over an embedded SQLite store.

pub mod db;
pub mod read_models;
pub mod serve;
pub mod store;

pub use store::SqliteEventStore;
