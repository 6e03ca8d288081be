//! crm-aws: adapters of crm-core's ports over the AWS SDK for Rust.

pub mod dead_letters;
pub mod dynamodb;
pub mod emf;
pub mod eventbridge;
pub mod health;
pub mod http_client;
pub mod keys;
pub mod lambda;
pub mod ops;
mod provider_error;
pub mod refusals;
pub mod scheduler;
pub mod secrets;
pub mod ses;
pub mod ses_feedback;
pub mod sns;
pub mod sqs;
pub mod stores;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
