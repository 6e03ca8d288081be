//! The SQLite adapters of crm-core's ports, all in the data directory's one
//! database file: the event store, the read models, the key store and its
//! master key, the stored secrets, the timers, the refused-messages log and
//! the mail sink. They depend on nothing else of this crate.

pub mod data_dir;
pub mod db;
pub mod keys;
pub mod mail;
pub mod read_models;
pub mod refusals;
pub mod secrets;
pub mod store;
pub mod timers;
pub mod unsubscribe;
