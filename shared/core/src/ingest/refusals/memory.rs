//! The log in memory.

use super::{Refusal, RefusalLog, RefusalPage, MAX_PAGE};
use crate::ports::StoreError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// A log in memory, for domain tests and the contract's own test.
#[derive(Default)]
pub struct InMemoryRefusals {
    entries: std::sync::Mutex<Vec<Refusal>>,
}

impl InMemoryRefusals {
    pub fn all(&self) -> Vec<Refusal> {
        self.entries.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl RefusalLog for InMemoryRefusals {
    async fn record(&self, refusal: &Refusal) -> Result<(), StoreError> {
        let mut entries = self.entries.lock().map_err(|_| StoreError::Failed("poisoned".into()))?;
        entries.push(refusal.clone());
        Ok(())
    }

    async fn list(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<RefusalPage, StoreError> {
        let mut matching: Vec<Refusal> = self
            .all()
            .into_iter()
            .filter(|r| r.source == source && r.expires_at > now)
            .filter(|r| after.is_none_or(|a| r.cursor().as_str() < a))
            .collect();
        matching.sort_by_key(|r| std::cmp::Reverse(r.cursor()));
        let limit = limit.clamp(1, MAX_PAGE);
        let more = matching.len() > limit;
        matching.truncate(limit);
        let next_after = if more {
            matching.last().map(Refusal::cursor)
        } else {
            None
        };
        Ok(RefusalPage {
            refusals: matching,
            next_after,
        })
    }
}
