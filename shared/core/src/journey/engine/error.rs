//! What the engine's callers do with a failure: retry it or park it.

use crate::ports::StoreError;
use crate::scheduler::SchedulerError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    /// Worth retrying (the store or the scheduler was unavailable, or writers kept conflicting).
    #[error("retry: {0}")]
    Retry(String),
    /// Not worth retrying: park it.
    #[error("{0}")]
    Poison(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => EngineError::Retry(m),
            StoreError::Failed(m) => EngineError::Poison(m),
        }
    }
}

impl From<SchedulerError> for EngineError {
    fn from(e: SchedulerError) -> Self {
        match e {
            SchedulerError::Unavailable(m) => EngineError::Retry(m),
            SchedulerError::Refused(m) => EngineError::Poison(m),
        }
    }
}
