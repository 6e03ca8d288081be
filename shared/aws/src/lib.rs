//! crm-aws: adapters of crm-core's ports over the AWS SDK for Rust.

pub mod dynamodb;
pub mod eventbridge;
pub mod scheduler;
pub mod sqs;
