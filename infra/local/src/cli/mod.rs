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

use crate::adapters::data_dir::database_path;
use crate::runtime::bus::{read_template, TemplateFileError};
use crate::runtime::{LocalRuntime, RuntimeError};
use std::path::Path;

/// The runtime over the database of the data directory `data_dir`, with the
/// rules of `template` (`--template`), else of the built-in one: what the
/// subcommands that take both open.
pub(crate) fn open_runtime<E>(data_dir: &Path, template: Option<&Path>) -> Result<LocalRuntime, E>
where
    E: From<TemplateFileError> + From<RuntimeError>,
{
    let template = read_template(template)?;
    Ok(LocalRuntime::open(&database_path(data_dir), &template)?)
}
