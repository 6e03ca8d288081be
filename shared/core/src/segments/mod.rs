//! Segments (seed 000, "Purchase-Based Customer Segmentation";
//! docs/decisions/0013-profile-metrics-and-segments.md).
//!
//! Membership is a function of a customer's profile metrics at a moment:
//! RFM scores (1 to 5) and the seed's RFM segments, `high-value`, `buyers`
//! and `affinity-<category>`, for an active customer; a deactivated or
//! erased one is in no segment, manual ones included (decision 0065). The
//! [`SegmentEvaluator`] recomputes it after every commerce and lifecycle
//! event of the customer and appends the difference to the
//! customer's `segments-<customer id>` stream as `CustomerSegmentAdded` /
//! `CustomerSegmentRemoved` (bus source `crm.segments`), through the shared
//! command path ([`crate::aggregate::AggregateService`], with
//! `ExpectedVersion::Exactly`): the stream is the membership, so a
//! redelivered event finds nothing left to change and appends nothing.
//! Because recency moves with the clock, [`reevaluate_buyers`] re-evaluates
//! every buyer (the daily re-evaluation). The [`SegmentMembersProjection`]
//! indexes the membership events for the read routes. [`recommend`]
//! (decision 0075) turns delivered orders' co-purchases into
//! `ProductAffinityDetected` with recommended products.
//!
//! The folder has the shape of every business area: [`rules`] (the fixed
//! segments, RFM, [`evaluate`]), [`commands`], [`events`], [`membership`]
//! (the state, `decide` and the aggregate), [`service`] (the command path
//! and the evaluator) and [`projections`] (the members index and its
//! queries).

mod commands;
pub mod definition;
mod events;
mod membership;
mod projections;
pub mod recommend;
pub mod rule_evaluator;
mod rules;
mod service;
#[cfg(test)]
mod tests;

pub use commands::{Desired, MembershipCommand, RuleAnswer};
pub use events::{SegmentEvent, SEGMENT_EVENT_TYPES};
pub use membership::{Membership, MembershipError, SegmentMembership};
pub use projections::{
    all_segments, customer_segments, is_member, member_count, members, Member, SegmentMembersProjection,
};
pub use recommend::{
    latest_recommendations, rank, AffinityDetector, AffinityEvent, CoPurchaseProjection, RecommendedProduct,
    AFFINITY_DETECTOR, AFFINITY_EVENT_TYPES, CO_PURCHASES,
};
pub use rules::{
    affinity_rule, evaluate, is_computed, recency_days, rule_of, score_frequency, score_monetary, score_recency, Rfm,
    SegmentDefinition, AFFINITY_PREFIX, AFFINITY_THRESHOLD, DEACTIVATED, ERASED, HIGH_VALUE_LTV_MINOR,
    HIGH_VALUE_MIN_ORDERS, MANUAL_RULE, NEVER_BOUGHT_RECENCY_DAYS, SEGMENTS,
};
pub use service::{
    apply_request, is_member_now, reconcile, reevaluate_buyers, segments_now, SegmentError, SegmentEvaluator,
};

/// The stream of customer `id`'s segment membership.
pub use crate::vocabulary::streams::segments_stream_id as stream_id;

pub const SEGMENT_EVALUATOR: &str = "segment-evaluator";
pub const SEGMENT_MEMBERS: &str = "segment-members";
