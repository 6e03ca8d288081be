//! Test support: an in-memory event store (for domain tests only; adapters are
//! tested against real SQLite and DynamoDB) and a given/when/then helper.

use crate::customer::{
    decide, fold, Customer, CustomerCommand, CustomerError, CustomerEvent, DecisionInput,
};
use crate::event::EventEnvelope;
use crate::ports::*;
use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Given these events, when this command, then these events or this error.
pub struct CustomerScenario {
    state: Option<Customer>,
    input: DecisionInput,
}

/// A fixed instant for domain tests.
pub fn test_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

impl CustomerScenario {
    pub fn given(events: &[CustomerEvent]) -> Self {
        let at = test_time();
        let state = fold(
            None,
            events
                .iter()
                .enumerate()
                .map(|(i, e)| (e, at, i as u64 + 1)),
        );
        CustomerScenario {
            state,
            input: DecisionInput {
                new_customer_id: "c1".into(),
                verification_token: "token-1".into(),
            },
        }
    }

    pub fn given_no_customer() -> Self {
        Self::given(&[])
    }

    pub fn when(&self, command: CustomerCommand) -> Result<Vec<CustomerEvent>, CustomerError> {
        decide(self.state.as_ref(), &command, &self.input)
    }

    pub fn state(&self) -> Option<&Customer> {
        self.state.as_ref()
    }
}

#[derive(Default)]
struct Inner {
    streams: BTreeMap<String, Vec<EventEnvelope>>,
    order: Vec<(String, u64)>,
    reservations: HashMap<String, String>,
    receipts: HashMap<String, CommandReceipt>,
    snapshots: HashMap<String, Snapshot>,
}

/// An event store in a `Mutex`: for domain and service unit tests.
#[derive(Default)]
pub struct InMemoryEventStore {
    inner: Mutex<Inner>,
}

impl InMemoryEventStore {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Failed("poisoned".into()))
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        let inner = self.lock()?;
        let events = inner.streams.get(stream_id).cloned().unwrap_or_default();
        let version = events.last().map_or(0, |e| e.version);
        let snapshot = inner.snapshots.get(stream_id).cloned();
        let after = snapshot.as_ref().map_or(0, |s| s.version);
        Ok(LoadedStream {
            snapshot,
            events: events.into_iter().filter(|e| e.version > after).collect(),
            version,
        })
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .streams
            .get(stream_id)
            .map(|s| {
                s.iter()
                    .filter(|e| e.version > after)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        if request.events.len() > MAX_EVENTS_PER_APPEND {
            return Err(AppendError::TooLarge(format!(
                "{} events in one append",
                request.events.len()
            )));
        }
        let mut inner = self.lock()?;
        let current = inner
            .streams
            .get(&request.stream_id)
            .map_or(0, |s| s.len() as u64);
        let base = match request.expected {
            ExpectedVersion::Any => current,
            ExpectedVersion::NoStream if current == 0 => 0,
            ExpectedVersion::Exactly(n) if n == current => n,
            expected if !request.events.is_empty() => {
                return Err(AppendError::Conflict {
                    stream_id: request.stream_id,
                    expected,
                    actual: Some(current),
                })
            }
            _ => current,
        };
        if let Some(r) = &request.receipt {
            if let Some(existing) = inner.receipts.get(&r.key) {
                return Err(AppendError::DuplicateCommand(Box::new(existing.clone())));
            }
        }
        for change in &request.reservations {
            let holder = inner.reservations.get(change.key());
            let ok = match change {
                ReservationChange::Claim { owner, .. } => holder.is_none_or(|h| h == owner),
                ReservationChange::Release { owner, .. } => holder == Some(owner),
            };
            if !ok {
                return Err(AppendError::ReservationTaken {
                    key: change.key().to_string(),
                });
            }
        }
        let mut stored = request.events;
        for (i, e) in stored.iter_mut().enumerate() {
            e.version = base + 1 + i as u64;
            e.stream_id = request.stream_id.clone();
        }
        for change in request.reservations {
            match change {
                ReservationChange::Claim { key, owner } => {
                    inner.reservations.insert(key, owner);
                }
                ReservationChange::Release { key, .. } => {
                    inner.reservations.remove(&key);
                }
            }
        }
        if let Some(r) = request.receipt {
            inner.receipts.insert(r.key.clone(), r);
        }
        for e in &stored {
            inner.order.push((e.stream_id.clone(), e.version));
        }
        inner
            .streams
            .entry(request.stream_id)
            .or_default()
            .extend(stored.iter().cloned());
        let version = base + stored.len() as u64;
        Ok(Appended {
            events: stored,
            version,
        })
    }

    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        Ok(self.lock()?.receipts.get(key).cloned())
    }

    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock()?.reservations.get(key).cloned())
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.lock()?
            .snapshots
            .insert(snapshot.stream_id.clone(), snapshot);
        Ok(())
    }

    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        let inner = self.lock()?;
        let start = match after {
            Some(c) => c
                .parse::<usize>()
                .map_err(|_| StoreError::Failed(format!("bad cursor {c}")))?,
            None => 0,
        };
        let slice: Vec<_> = inner.order.iter().skip(start).take(limit).collect();
        let events = slice
            .iter()
            .filter_map(|(s, v)| {
                inner
                    .streams
                    .get(s)
                    .and_then(|es| es.get(*v as usize - 1))
                    .cloned()
            })
            .collect::<Vec<_>>();
        let end = start + slice.len();
        Ok(EventPage {
            next: (end < inner.order.len()).then(|| end.to_string()),
            events,
        })
    }
}
