//! What a customer's segment membership can be asked to do.

use std::collections::BTreeMap;

/// A command on a customer's `segments-<customer id>` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipCommand {
    /// Bring the computed segments in line with the ones the customer's
    /// metrics put them in now (the [`Desired`] input); manual segments are
    /// not the evaluator's to remove.
    Reconcile,
    /// A journey's `update_segment` step: join (`join`) or leave a manual
    /// segment, for `reason`. A computed segment is not writable: such a
    /// request changes nothing.
    Request {
        segment: String,
        join: bool,
        reason: String,
    },
    /// The customer left the shop's active customers (deactivated, or erased
    /// or being erased): they leave every segment, manual ones included, for
    /// `reason` (a fixed phrase: [`super::DEACTIVATED`], [`super::ERASED`]).
    LeaveAll { reason: &'static str },
}

/// The outside input of a [`MembershipCommand::Reconcile`]: the computed
/// segments the customer belongs to now, each with why
/// ([`super::evaluate`] of their profile metrics, read before each attempt).
/// A request ignores it.
pub type Desired = BTreeMap<String, String>;
