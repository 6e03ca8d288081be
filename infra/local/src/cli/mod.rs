//! The operator subcommands of `crm-local` that are more than a line in
//! `main.rs`: each opens the data directory's runtime or adapters, does its
//! one job and prints the result.

pub mod demo;
pub mod dlq;
pub mod ops;
pub mod pattern;
pub mod privacy;
pub mod refusals;
pub mod rekey;
pub mod retention;
