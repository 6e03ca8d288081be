//! Why the engine could not handle an event, a timer or a sweep step. Each
//! error keeps what caused it, and its kind ([`Classify::kind`]) tells the
//! caller what to do: deliver it again (retryable, or a conflict that kept
//! coming back) or park it (poison).

use crate::aggregate::AggregateError;
use crate::failure::{Classify, Failure, FailureKind};
use crate::journey::catalog::CampaignError;
use crate::journey::instance::JourneyError;
use crate::ports::{CommitError, StoreError};
use crate::scheduler::SchedulerError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// The event store or the read models could not be read or written:
    /// the store's own kind (unavailable: retryable; failed: poison).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scheduler could not set, read or delete a timer: its own kind.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// A write of the journey index or of the sweep's cursor failed other
    /// than by a conflict (those the engine expects): retryable, whatever
    /// the store said (the write may succeed when the input comes again).
    #[error("journey index: {0}")]
    Index(#[source] CommitError),
    /// An instance's command failed (its decision was refused, its stream
    /// did not decode, its append failed): the command's kind.
    #[error("{stream}: {source}")]
    Instance {
        stream: String,
        #[source]
        source: AggregateError<JourneyError>,
    },
    /// A campaign's command failed (a pause's continuation): its kind; a
    /// stream that kept changing is a conflict, retried later.
    #[error("{stream}: {source}")]
    Campaign {
        stream: String,
        #[source]
        source: AggregateError<CampaignError>,
    },
    /// Stored data the engine cannot read (a campaign event, an index line,
    /// the sweep's cursor): poison.
    #[error(transparent)]
    Unreadable(Failure),
    /// A running instance's campaign version is not in the catalog: poison.
    #[error("campaign {campaign_id}@{version} is unknown")]
    UnknownCampaign { campaign_id: String, version: u64 },
    /// Other writers changed the instance's stream at every attempt: a
    /// conflict, retried later.
    #[error("{stream} kept changing")]
    KeptChanging { stream: String },
}

impl EngineError {
    /// A failure of the command on the instance `instance_id`.
    pub(super) fn instance(instance_id: &str, source: AggregateError<JourneyError>) -> Self {
        EngineError::Instance {
            stream: crate::journey::instance::stream_id(instance_id),
            source,
        }
    }

    /// A decision the instance `instance_id` refused.
    pub(super) fn refused(instance_id: &str, source: JourneyError) -> Self {
        EngineError::instance(instance_id, AggregateError::Rejected(source))
    }

    /// Stored data `what` that does not read as it should.
    pub(super) fn unreadable(
        what: impl Into<std::borrow::Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        EngineError::Unreadable(Failure::poison(what, source))
    }
}

impl Classify for EngineError {
    fn kind(&self) -> FailureKind {
        match self {
            EngineError::Store(e) => e.kind(),
            EngineError::Scheduler(e) => e.kind(),
            EngineError::Index(_) => FailureKind::Retryable,
            EngineError::Instance { source, .. } => source.kind(),
            EngineError::Campaign { source, .. } => source.kind(),
            EngineError::Unreadable(f) => f.kind(),
            EngineError::UnknownCampaign { .. } => FailureKind::Poison,
            EngineError::KeptChanging { .. } => FailureKind::Conflict,
        }
    }
}
