//! The customer: registration, profile, email, preferences, consent and
//! activation, as a pure aggregate (`decide` + `evolve`) and its service.

pub mod activity;
mod aggregate;
mod commands;
pub mod day_summary;
pub mod email_index;
mod erasure;
mod events;
pub mod history;
mod keyed_reservations;
pub mod metrics;
pub mod name_index;
pub mod past_versions;
pub mod rekey;
mod service;
pub mod streams;
mod validate;
pub mod views;

pub use aggregate::{decide, evolve, fold, reservations_for, Customer, CustomerStatus, DecisionInput};
pub use commands::*;
pub use erasure::{erase_customer, ErasureError};
pub use events::*;
pub use keyed_reservations::NO_IDENTIFIER_SECRET;
pub use service::{CommandError, CustomerAggregate, CustomerService, Executed, IdempotencyRequest, ResponseBuilder};
pub use validate::{email_reservation_key, email_reservation_name, normalise_email, unkeyed_email_reservation_key};

/// The stream of customer `id`.
pub use crate::vocabulary::streams::customer_stream_id as stream_id;

/// Why a customer command was refused. Each variant says which HTTP-free
/// kind of refusal it is; adapters map kinds to status codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CustomerError {
    /// The input is not acceptable (422), naming the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such customer (404).
    #[error("customer not found")]
    NotFound,
    /// The command is valid but the customer's state forbids it (409).
    #[error("{message}")]
    Conflict { field: Option<String>, message: String },
}

impl CustomerError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CustomerError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
    pub fn conflict(field: Option<&str>, message: impl Into<String>) -> Self {
        CustomerError::Conflict {
            field: field.map(str::to_string),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests;
