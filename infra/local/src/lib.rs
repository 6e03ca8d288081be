//! crm-local: the local runtime. It hosts the same handlers as the Lambda
//! functions over an embedded SQLite store.
//!
//! - [`adapters`]: the SQLite adapters of crm-core's ports;
//! - [`runtime`]: what hosts the handlers over them: the assembled
//!   [`runtime::LocalRuntime`], the bus, the HTTP server (`serve`);
//! - [`cli`]: the operator subcommands;
//! - [`bench`]: the local benchmark.
//!
//! The arrows point `cli` → `runtime` → `adapters`.

pub mod adapters;
pub mod bench;
pub mod cli;
pub mod runtime;

pub use adapters::store::SqliteEventStore;
