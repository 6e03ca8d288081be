//! crm-local: the local runtime. It hosts the same handlers as the Lambda
//! functions over an embedded SQLite store.

pub mod bench;
pub mod bus;
pub mod db;
pub mod demo;
pub mod dev;
pub mod dlq;
pub mod keys;
pub mod mail;
pub mod mail_view;
pub mod ops;
pub mod pattern_cli;
pub mod privacy;
pub mod read_models;
pub mod refusals;
pub mod rekey;
pub mod retention;
pub mod runtime;
pub mod secrets;
pub mod serve;
pub mod sources;
pub mod store;
pub mod timers;
pub mod unsubscribe;

pub use store::SqliteEventStore;
