//! Which projections each consumer group holds: the projector function's
//! group and the consent function's (the same groups the local runtime
//! hosts). They name projections of every context, so they live here in
//! the assembly layer, as associated functions that [`AssembledGroups`]
//! gives the framework's [`ConsumerGroup`] (`ConsumerGroup::projector`,
//! `::projector_at`, `::consent`, with the trait in scope): the consumer
//! framework, in crm-kernel, knows no context.

use crate::consumer::ConsumerGroup;
use crate::ports::{EventStore, ReadModelStore};
use std::sync::Arc;

/// The consumer groups the deployed functions and the local runtime host,
/// assembled from every context's projections.
pub trait AssembledGroups: Sized {
    /// The projector function: customer 360, timeline, email and name
    /// indexes (keyed by hashes made with `identifiers`, decision 0046),
    /// profile metrics and segments (on the wall clock).
    fn projector(
        events: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        dead_letters: Arc<dyn crate::ports::DeadLetterQueue>,
        identifiers: crate::privacy::IdentifierHasher,
    ) -> Self;

    /// The projector with its clock: segments depend on "now" (recency).
    fn projector_at(
        events: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        dead_letters: Arc<dyn crate::ports::DeadLetterQueue>,
        clock: Arc<dyn crate::clock::Clock>,
        identifiers: crate::privacy::IdentifierHasher,
    ) -> Self;

    /// The consent function: the consent ledger and the proof ledger (by
    /// identifier hashes made with `identifiers`, decision 0019).
    fn consent(
        events: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        dead_letters: Arc<dyn crate::ports::DeadLetterQueue>,
        identifiers: crate::privacy::IdentifierHasher,
    ) -> Self;
}

impl AssembledGroups for ConsumerGroup {
    /// The projector function: customer 360, timeline, email and name
    /// indexes (keyed by hashes made with `identifiers`, decision 0046),
    /// profile metrics and segments (on the wall clock).
    fn projector(
        events: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        dead_letters: Arc<dyn crate::ports::DeadLetterQueue>,
        identifiers: crate::privacy::IdentifierHasher,
    ) -> Self {
        Self::projector_at(
            events,
            docs,
            dead_letters,
            Arc::new(crate::clock::SystemClock),
            identifiers,
        )
    }

    /// The projector with its clock: segments depend on "now" (recency).
    /// The segment evaluator comes after the profile metrics it reads, and
    /// appends membership events to `events`.
    fn projector_at(
        events: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        dead_letters: Arc<dyn crate::ports::DeadLetterQueue>,
        clock: Arc<dyn crate::clock::Clock>,
        identifiers: crate::privacy::IdentifierHasher,
    ) -> Self {
        use crate::customer::metrics::ProfileMetricsProjection;
        use crate::customer::name_index::NameIndexProjection;
        use crate::customer::views::{CustomerProfileProjection, EmailIndexProjection, TimelineProjection};
        use crate::segments::{SegmentEvaluator, SegmentMembersProjection};
        Self::new(
            "projector",
            vec![
                Arc::new(CustomerProfileProjection),
                Arc::new(TimelineProjection),
                Arc::new(EmailIndexProjection::new(identifiers.clone())),
                Arc::new(NameIndexProjection::new(identifiers)),
                Arc::new(crate::insights::funnel::FunnelProjection),
                Arc::new(crate::insights::attribution::AttributionProjection),
                Arc::new(crate::insights::campaign_stats::CampaignStatsProjection),
                // A broadcast's delivered, opened, clicked, bounced (decision 0084).
                Arc::new(crate::broadcast::stats::BroadcastStatsProjection),
                Arc::new(ProfileMetricsProjection),
                Arc::new(SegmentEvaluator::new(events.clone(), clock.clone())),
                // Co-purchases and ProductAffinityDetected (decision 0075).
                Arc::new(crate::segments::CoPurchaseProjection),
                Arc::new(crate::segments::AffinityDetector::new(events.clone(), clock)),
                Arc::new(SegmentMembersProjection),
                // Which streams hold events about each customer (export, decision 0020).
                Arc::new(crate::customer::streams::CustomerStreamsProjection),
                // The operator's overview counters (decision 0085).
                Arc::new(crate::ops::counters::OpsCountersProjection),
            ],
            events,
            docs,
            dead_letters,
        )
    }

    /// The consent function: the consent ledger and the proof ledger (by
    /// identifier hashes made with `identifiers`, decision 0019).
    fn consent(
        events: Arc<dyn EventStore>,
        docs: Arc<dyn ReadModelStore>,
        dead_letters: Arc<dyn crate::ports::DeadLetterQueue>,
        identifiers: crate::privacy::IdentifierHasher,
    ) -> Self {
        Self::new(
            "consent",
            vec![
                Arc::new(crate::consent::ledger::ConsentLedgerProjection),
                Arc::new(crate::consent::proof::ProofLedgerProjection::new(identifiers)),
            ],
            events,
            docs,
            dead_letters,
        )
    }
}
