//! The messages of a batch, grouped by the shopper they are about, so that
//! a batch's shoppers can be taken side by side while each shopper's
//! messages keep their order (a product added before the identify that
//! merges the cart's anonymous profile must stay before it).
//!
//! One shopper's messages are then taken together
//! ([`Ingestion::take_shopper`], decision 0056): their receipts read at
//! once, the profile of their activity resolved once (again after anything
//! that may change it), and consecutive activity of one profile appended
//! with its receipts in one atomic write.

use super::mapping::{self, Mapped};
use super::refusals::Refusal;
use super::{receipt_key, reject, Accepted, IngestError, Ingestion, Kind, SegmentMessage, Source, SourceKind};
use crate::event::{Actor, CommandMeta, EventEnvelope};
use crate::idempotency::IdempotencyKey;
use crate::ports::{AppendError, AppendRequest, CommandReceipt, ExpectedVersion, MAX_RECEIPTS_PER_APPEND};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// One activity message ready to append: its place in the shopper's
/// messages, its envelope and receipt, and whether it was late.
struct Ready {
    at: usize,
    events: Vec<EventEnvelope>,
    receipt: CommandReceipt,
    late: bool,
}

/// Consecutive activity messages of one profile's stream, not yet written.
#[derive(Default)]
struct Run {
    stream: String,
    ready: Vec<Ready>,
}

/// Where a message's activity goes, by the ids it names: resolved once,
/// until a message that may change it.
type Profiles = HashMap<(Option<String>, Option<String>), String>;

impl Ingestion {
    /// Takes one shopper's messages of a batch (those of one
    /// [`shopper_groups`] group, in their order) as
    /// [`Ingestion::take_in_batch`] takes each, with the same outcome for
    /// each, in fewer round trips (decision 0056):
    /// * the receipts of all of them are read at once
    ///   ([`crate::ports::EventStore::receipts`]);
    /// * the profile of their activity (and the check that its customer was
    ///   not erased) is resolved once per ids, again after an identify, an
    ///   alias or an order call;
    /// * consecutive activity messages of one profile (pages, screens,
    ///   product views...) are appended together, each with its receipt, in
    ///   one atomic write of at most [`MAX_RECEIPTS_PER_APPEND`]; when that
    ///   write is refused (a receipt written meanwhile, a conflict), they
    ///   are appended one by one, so that only the message already taken is
    ///   a duplicate.
    ///
    /// Identify, alias, carts and orders are taken one by one as before. A
    /// message id seen earlier in the same group is taken alone, after what
    /// comes before it is written.
    pub async fn take_shopper(
        &self,
        from: &Source,
        raws: &[&Value],
        now: DateTime<Utc>,
        batch_sent_at: Option<DateTime<Utc>>,
    ) -> Vec<Result<Accepted, IngestError>> {
        let parsed: Vec<Result<SegmentMessage, _>> = raws
            .iter()
            .map(|raw| SegmentMessage::parse_sent(raw, None, now, batch_sent_at))
            .collect();
        let keys: Vec<String> = parsed
            .iter()
            .flatten()
            .map(|m| receipt_key(&from.name, &m.message_id))
            .collect();
        let mut outcomes: Vec<Option<Result<Accepted, IngestError>>> = vec![None; raws.len()];
        match self.store.receipts(&keys).await {
            Ok(found) => {
                let taken: HashSet<&str> = found.iter().flatten().map(|r| r.key.as_str()).collect();
                self.take_unseen(from, &parsed, &taken, &mut outcomes).await;
            }
            Err(e) => {
                let retry = IngestError::from(e);
                for (outcome, message) in outcomes.iter_mut().zip(&parsed) {
                    if message.is_ok() {
                        *outcome = Some(Err(retry.clone()));
                    }
                }
            }
        }
        let mut results = Vec::with_capacity(raws.len());
        for ((raw, message), outcome) in raws.iter().zip(parsed).zip(outcomes) {
            let outcome = match message {
                Err(rejection) => Err(IngestError::Rejected(rejection)),
                Ok(_) => outcome.unwrap_or_else(|| Err(IngestError::not_taken())),
            };
            if let (Err(IngestError::Rejected(rejection)), Some(refusals)) = (&outcome, &self.refusals) {
                let identifiers = self.customers.identifiers();
                let refusal = Refusal::new(&from.name, raw, None, rejection, identifiers, now);
                refusals.record(&refusal).await;
            }
            results.push(outcome);
        }
        results
    }

    /// Takes the parsed messages in order; `taken`: the receipts found.
    async fn take_unseen(
        &self,
        from: &Source,
        parsed: &[Result<SegmentMessage, super::Rejection>],
        taken: &HashSet<&str>,
        outcomes: &mut [Option<Result<Accepted, IngestError>>],
    ) {
        let source = from.name.as_str();
        let mut seen: HashSet<String> = HashSet::new();
        let mut profiles = Profiles::new();
        let mut run = Run::default();
        for (at, message) in parsed.iter().enumerate() {
            let Ok(message) = message else { continue };
            let key = receipt_key(source, &message.message_id);
            if !seen.insert(key.clone()) {
                // The same message twice in one group: the first is written
                // before the second looks for its receipt.
                self.write_run(&mut run, outcomes).await;
                outcomes[at] = Some(self.ingest(from, message).await);
                continue;
            }
            if taken.contains(key.as_str()) {
                outcomes[at] = Some(Ok(Accepted::Duplicate));
                continue;
            }
            let outcome = match message.kind {
                Kind::Track | Kind::Page | Kind::Screen => {
                    match self.activity_of(from, message, at, &key, &mut profiles).await {
                        Ok(Some((stream, ready))) => {
                            if run.stream != stream || run.ready.len() >= MAX_RECEIPTS_PER_APPEND {
                                self.write_run(&mut run, outcomes).await;
                                run.stream = stream;
                            }
                            run.ready.push(ready);
                            continue;
                        }
                        Ok(None) => {
                            // A cart or an order: taken alone, in its place.
                            self.write_run(&mut run, outcomes).await;
                            let outcome = self.ingest_unseen(from, message).await;
                            if !Self::keeps_profiles(message, source) {
                                profiles.clear();
                            }
                            outcome
                        }
                        Err(e) => Err(e),
                    }
                }
                Kind::Identify | Kind::Alias => {
                    self.write_run(&mut run, outcomes).await;
                    let outcome = self.ingest_unseen(from, message).await;
                    profiles.clear();
                    outcome
                }
            };
            outcomes[at] = Some(outcome);
        }
        self.write_run(&mut run, outcomes).await;
    }

    /// Whether a track call taken alone leaves every profile as it was: a
    /// cart call does; an order call may not (it may name a customer).
    fn keeps_profiles(message: &SegmentMessage, source: &str) -> bool {
        matches!(
            mapping::map(message, source, false),
            Ok(Mapped::AddToCart { .. } | Mapped::RemoveFromCart { .. } | Mapped::Checkout { .. })
        )
    }

    /// A track, page or screen call's activity, ready to append, as
    /// [`Ingestion::ingest`] would append it (the same checks in the same
    /// order); `None` when it is not plain activity (a cart or an order).
    async fn activity_of(
        &self,
        from: &Source,
        message: &SegmentMessage,
        at: usize,
        key: &str,
        profiles: &mut Profiles,
    ) -> Result<Option<(String, Ready)>, IngestError> {
        let source = from.name.as_str();
        let now = self.customers.now();
        let occurred_at = message.timestamp.unwrap_or(now);
        let late = occurred_at < now - self.settings.late_after;
        let meta = CommandMeta::new(Actor::system(&format!("ingest:{source}")));
        // A cart or an order is taken alone (which resolves its profile).
        let event = match mapping::map(message, source, late) {
            // A browser's key places, cancels and refunds no order (decision 0042).
            Ok(mapped) if from.kind == SourceKind::Client && mapped.changes_an_order() => {
                Ok(mapping::as_custom_event(message, late))
            }
            Ok(Mapped::Activity(event)) => Ok(event),
            Ok(_) => return Ok(None),
            Err(rejection) => Err(rejection),
        };
        // The profile first: its refusal comes before the message's own.
        let ids = (message.user_id.clone(), message.anonymous_id.clone());
        let profile = match profiles.get(&ids) {
            Some(profile) => profile.clone(),
            None => {
                let profile = self.profile_of(from.kind, message, &meta).await?;
                profiles.insert(ids, profile.clone());
                profile
            }
        };
        let event = event?;
        self.refuse_untracked(message, &profile, now).await?;
        let idempotency = IdempotencyKey {
            receipt_key: key.to_string(),
            request_hash: "segment".into(),
        };
        let (stream, events, receipt) = self
            .activity_write(&profile, event, occurred_at, &idempotency, &meta, now)
            .await?;
        Ok(Some((
            stream,
            Ready {
                at,
                events,
                receipt,
                late,
            },
        )))
    }

    /// Writes a run of activity: at once, or one by one when that is refused.
    async fn write_run(&self, run: &mut Run, outcomes: &mut [Option<Result<Accepted, IngestError>>]) {
        let ready = std::mem::take(&mut run.ready);
        if ready.is_empty() {
            return;
        }
        let stream = run.stream.clone();
        if ready.len() > 1 {
            let events: Vec<EventEnvelope> = ready.iter().flat_map(|r| r.events.iter().cloned()).collect();
            let receipts: Vec<CommandReceipt> = ready.iter().map(|r| r.receipt.clone()).collect();
            let request = AppendRequest {
                stream_id: stream.clone(),
                expected: ExpectedVersion::Any,
                events,
                reservations: Vec::new(),
                receipt: None,
            };
            match self.store.append_with_receipts(request, receipts).await {
                Ok(_) => {
                    for r in ready {
                        outcomes[r.at] = Some(Ok(Accepted::Stored { late: r.late }));
                    }
                    return;
                }
                Err(AppendError::Store(e)) => {
                    let retry = IngestError::from(e);
                    for r in ready {
                        outcomes[r.at] = Some(Err(retry.clone()));
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(stream_id = %stream, error = %e, "activity taken together refused; one by one");
                }
            }
        }
        for r in ready {
            let request = AppendRequest {
                stream_id: stream.clone(),
                expected: ExpectedVersion::Any,
                events: r.events,
                reservations: Vec::new(),
                receipt: Some(r.receipt),
            };
            outcomes[r.at] = Some(match self.store.append(request).await {
                Ok(_) => Ok(Accepted::Stored { late: r.late }),
                Err(AppendError::DuplicateCommand(_)) => Ok(Accepted::Duplicate),
                Err(AppendError::TooLarge(m)) => Err(reject("properties", m)),
                Err(e) => Err(IngestError::retry_classified(e)),
            });
        }
    }
}

/// The ids that name a shopper in a raw message (as text: numbers written
/// out): its `userId` and `anonymousId`, and an alias's `previousId`, which
/// may be either.
fn shopper_ids(message: &Value) -> Vec<String> {
    let text = |field: &str| match message.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let mut ids = Vec::new();
    ids.extend(text("userId").map(|id| format!("user:{id}")));
    ids.extend(text("anonymousId").map(|id| format!("anonymous:{id}")));
    if let Some(previous) = text("previousId") {
        ids.push(format!("user:{previous}"));
        ids.push(format!("anonymous:{previous}"));
    }
    ids
}

/// The indexes of `messages`, grouped so that messages sharing any shopper id
/// (directly, or through a message that names two of them, as an identify
/// with both ids does) are in one group, in their order in the batch.
/// Groups come in the order of their first message; a message naming no
/// shopper is a group of its own.
pub fn shopper_groups(messages: &[Value]) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..messages.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_with: HashMap<String, usize> = HashMap::new();
    for (index, message) in messages.iter().enumerate() {
        for id in shopper_ids(message) {
            match first_with.get(&id) {
                Some(&other) => {
                    let (a, b) = (root(&mut parent, index), root(&mut parent, other));
                    if a != b {
                        // The earlier message's root stays the root.
                        parent[a.max(b)] = a.min(b);
                    }
                }
                None => {
                    first_with.insert(id, index);
                }
            }
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of_root: HashMap<usize, usize> = HashMap::new();
    for index in 0..messages.len() {
        let r = root(&mut parent, index);
        let group = *group_of_root.entry(r).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[group].push(index);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_of_one_shopper_stay_together_and_in_order() {
        let messages = vec![
            json!({ "anonymousId": "a1", "type": "page" }),
            json!({ "anonymousId": "a2", "type": "page" }),
            json!({ "userId": "u1", "type": "track" }),
            // Joins a1 and u1 (and so messages 0 and 2).
            json!({ "userId": "u1", "anonymousId": "a1", "type": "identify" }),
            json!({ "type": "track" }),
            json!({ "userId": 42, "type": "track" }),
            json!({ "anonymousId": "a2", "type": "track" }),
            // An alias joins user 42 with anonymous a3 (named later).
            json!({ "userId": "42", "previousId": "a3", "type": "alias" }),
            json!({ "anonymousId": "a3", "type": "track" }),
        ];
        assert_eq!(
            shopper_groups(&messages),
            vec![vec![0, 2, 3], vec![1, 6], vec![4], vec![5, 7, 8]]
        );
    }

    #[test]
    fn a_batch_of_strangers_is_one_group_each() {
        let messages: Vec<Value> = (0..5).map(|i| json!({ "anonymousId": format!("a{i}") })).collect();
        assert_eq!(shopper_groups(&messages).len(), 5);
        assert!(shopper_groups(&[]).is_empty());
    }
}
