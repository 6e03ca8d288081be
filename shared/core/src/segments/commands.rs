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
    /// The rule evaluator's answers (decision 0083): for each segment
    /// defined by rules that it evaluated, whether the customer matches now,
    /// and why (the definition's id and version). Only those segments
    /// change; the fixed evaluator's [`MembershipCommand::Reconcile`] and a
    /// journey's request never touch them.
    Rules { answers: Vec<RuleAnswer> },
}

/// One rule segment's answer for a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleAnswer {
    pub segment: String,
    pub matches: bool,
    /// The reason recorded with the change: the definition's id and
    /// version, never the customer's figures (decision 0065).
    pub reason: String,
}

/// The outside input of a [`MembershipCommand::Reconcile`]: the computed
/// segments the customer belongs to now, each with why
/// ([`super::evaluate`] of their profile metrics, read before each attempt).
/// A request ignores it.
pub type Desired = BTreeMap<String, String>;
