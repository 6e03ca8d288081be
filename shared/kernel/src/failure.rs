//! The one retry contract (issue 18 item 3, decision 0060): every failure is
//! [`FailureKind::Retryable`], [`FailureKind::Poison`] or
//! [`FailureKind::Conflict`], and keeps the error that caused it.
//!
//! Error types of ports, services and handlers implement [`Classify`]; a
//! caller decides what to do from [`Classify::kind`], never from a message.
//! [`Failure`] carries a classified error across a boundary (a consumer, the
//! engine, delivery, a Lambda handler) with its source kept, not flattened to
//! a string.

use std::borrow::Cow;
use std::sync::Arc;

/// What the caller of a failed step should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The same step may succeed later: throttling, a timeout, a busy
    /// database, a provider's 5xx. Retry it (the event source redelivers).
    Retryable,
    /// The step can never succeed with this input: bad data, a refusal,
    /// corrupt state, bad configuration. Park it with its reason (a dead
    /// letter) and go on; retrying wastes attempts.
    Poison,
    /// Another writer changed the same stream or checkpoint first. Load
    /// again and decide again; a caller that cannot do that retries later.
    Conflict,
}

impl FailureKind {
    /// Worth doing again later: [`FailureKind::Retryable`] and
    /// [`FailureKind::Conflict`] are, [`FailureKind::Poison`] is not.
    pub fn is_retryable(self) -> bool {
        !matches!(self, FailureKind::Poison)
    }

    /// The kebab-case name (`retryable`, `poison`, `conflict`), for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Retryable => "retryable",
            FailureKind::Poison => "poison",
            FailureKind::Conflict => "conflict",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error that knows which kind of failure it is.
pub trait Classify {
    fn kind(&self) -> FailureKind;

    /// Worth doing again later (not poison).
    fn retryable(&self) -> bool {
        self.kind().is_retryable()
    }
}

/// A failure with no error value behind it (a refusal written as text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Reason(pub String);

/// A classified failure, with the step that failed and the error that caused it.
///
/// Cheap to clone (the source is shared). Two failures are equal when their
/// kind, step and message are: tests compare them without the source type.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{context}: {source}")]
pub struct Failure {
    kind: FailureKind,
    context: Cow<'static, str>,
    source: Arc<dyn std::error::Error + Send + Sync + 'static>,
}

impl Failure {
    /// A failure of `kind` in `context` (the step, the consumer ...) caused by `source`.
    pub fn new(
        kind: FailureKind,
        context: impl Into<Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Failure {
            kind,
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// A failure classified by its own error: `source.kind()`.
    pub fn from_error<E>(context: impl Into<Cow<'static, str>>, source: E) -> Self
    where
        E: Classify + std::error::Error + Send + Sync + 'static,
    {
        Failure::new(source.kind(), context, source)
    }

    /// A failure with only a reason as text.
    pub fn reason(kind: FailureKind, context: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        Failure::new(kind, context, Reason(reason.into()))
    }

    pub fn retryable(
        context: impl Into<Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Failure::new(FailureKind::Retryable, context, source)
    }

    pub fn poison(
        context: impl Into<Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Failure::new(FailureKind::Poison, context, source)
    }

    pub fn conflict(
        context: impl Into<Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Failure::new(FailureKind::Conflict, context, source)
    }

    /// The step that failed.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The error that caused it.
    pub fn cause(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self.source.as_ref()
    }

    /// The cause as a concrete error type, if it is one.
    pub fn cause_as<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.downcast_ref::<E>()
    }

    /// The same failure with another kind (a caller that knows better: a
    /// conflict that kept coming back becomes retryable, say).
    pub fn with_kind(mut self, kind: FailureKind) -> Self {
        self.kind = kind;
        self
    }
}

impl Classify for Failure {
    fn kind(&self) -> FailureKind {
        self.kind
    }
}

impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.context == other.context && self.source.to_string() == other.source.to_string()
    }
}

impl Classify for crate::ports::StoreError {
    fn kind(&self) -> FailureKind {
        match self {
            crate::ports::StoreError::Unavailable(_) => FailureKind::Retryable,
            crate::ports::StoreError::Failed(_) => FailureKind::Poison,
        }
    }
}

impl Classify for crate::ports::AppendError {
    fn kind(&self) -> FailureKind {
        use crate::ports::AppendError;
        match self {
            AppendError::Conflict { .. } => FailureKind::Conflict,
            AppendError::Store(e) => e.kind(),
            AppendError::ReservationTaken { .. } | AppendError::DuplicateCommand(_) | AppendError::TooLarge(_) => {
                FailureKind::Poison
            }
        }
    }
}

impl Classify for crate::ports::CommitError {
    fn kind(&self) -> FailureKind {
        use crate::ports::CommitError;
        match self {
            CommitError::Conflict { .. } => FailureKind::Conflict,
            CommitError::Store(e) => e.kind(),
            CommitError::TooLarge(_) => FailureKind::Poison,
        }
    }
}

impl Classify for crate::ports::BusError {
    fn kind(&self) -> FailureKind {
        match self {
            crate::ports::BusError::Unavailable(_) => FailureKind::Retryable,
            crate::ports::BusError::Refused(_) => FailureKind::Poison,
        }
    }
}

impl Classify for crate::scheduler::SchedulerError {
    fn kind(&self) -> FailureKind {
        match self {
            crate::scheduler::SchedulerError::Unavailable(_) => FailureKind::Retryable,
            crate::scheduler::SchedulerError::Refused(_) => FailureKind::Poison,
        }
    }
}

impl Classify for crate::event::EventCodecError {
    fn kind(&self) -> FailureKind {
        FailureKind::Poison
    }
}

impl<E: std::error::Error> Classify for crate::aggregate::AggregateError<E> {
    fn kind(&self) -> FailureKind {
        use crate::aggregate::AggregateError;
        match self {
            AggregateError::Store(e) => e.kind(),
            AggregateError::Contended { .. } => FailureKind::Conflict,
            AggregateError::Rejected(_)
            | AggregateError::IdempotencyKeyReused
            | AggregateError::ReservationTaken { .. }
            | AggregateError::TooLarge(_)
            | AggregateError::Codec(_) => FailureKind::Poison,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::{AppendError, ExpectedVersion, StoreError};

    #[test]
    fn store_and_append_errors_say_their_kind() {
        assert_eq!(
            StoreError::Unavailable("throttled".into()).kind(),
            FailureKind::Retryable
        );
        assert_eq!(StoreError::Failed("corrupt".into()).kind(), FailureKind::Poison);
        let conflict = AppendError::Conflict {
            stream_id: "customer-1".into(),
            expected: ExpectedVersion::Exactly(1),
            actual: Some(2),
        };
        assert_eq!(conflict.kind(), FailureKind::Conflict);
        assert!(conflict.retryable());
        assert_eq!(
            AppendError::Store(StoreError::Failed("x".into())).kind(),
            FailureKind::Poison
        );
        assert!(!AppendError::TooLarge("x".into()).retryable());
    }

    #[test]
    fn a_failure_keeps_its_source_and_its_kind() {
        let failure = Failure::from_error("projector", StoreError::Unavailable("throttled".into()));
        assert_eq!(failure.kind(), FailureKind::Retryable);
        assert_eq!(failure.context(), "projector");
        assert_eq!(
            failure.cause_as::<StoreError>(),
            Some(&StoreError::Unavailable("throttled".into()))
        );
        assert_eq!(failure.to_string(), "projector: event store unavailable: throttled");
        let source = std::error::Error::source(&failure).map(|s| s.to_string());
        assert_eq!(source.as_deref(), Some("event store unavailable: throttled"));
    }

    #[test]
    fn failures_compare_by_kind_step_and_message() {
        let a = Failure::reason(FailureKind::Poison, "engine", "no such campaign");
        assert_eq!(a, Failure::reason(FailureKind::Poison, "engine", "no such campaign"));
        assert_ne!(a, Failure::reason(FailureKind::Retryable, "engine", "no such campaign"));
        assert_ne!(a.clone().with_kind(FailureKind::Conflict), a);
        assert_eq!(FailureKind::Conflict.to_string(), "conflict");
        assert!(FailureKind::Conflict.is_retryable());
        assert!(!FailureKind::Poison.is_retryable());
    }
}
