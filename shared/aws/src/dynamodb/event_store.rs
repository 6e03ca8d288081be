//! `crm_core::ports::EventStore` over one DynamoDB table (ARCHITECTURE.md §5).
//!
//! An append whose expected version is `n > 0` first reads item `(stream, n)`
//! (one strongly consistent GetItem): missing, it is a conflict, nothing is
//! written. Then its items are written: each event a conditional put
//! (`attribute_not_exists(sk)`), reservations conditional puts or deletes,
//! the receipt a conditional put. One item alone (a single event without
//! reservation or receipt, the common case of journeys, the channel and the
//! consumers' appends) is one conditional `PutItem`: 1 write unit per KB.
//! Several items are one `TransactWriteItems` (2 units per KB of each item),
//! since they must move together (decision 0036).
//!
//! Why the read is as safe as the `ConditionCheck` it replaces: versions are
//! dense and only grow, and the newest event is never deleted by retention,
//! so once `(stream, n)` exists the conditional put of `n + 1` succeeds
//! exactly when the stream still ends at `n`. A stream behind `n` fails the
//! read, one ahead of it fails the put: both are the one `Conflict`.
//!
//! A cancelled transaction is explained from its cancellation reasons (in
//! the order of the items sent) or, where those are missing, by reading the
//! items again. Every request is metered by DynamoDB's rounding rules from
//! the items' sizes ([`DynamoEventStore::capacity`]).

use super::batch_get::batch_get;
use super::items::{self, CodecError, Item, KIND, OWNER, PK, SK, VERSION};
use super::transact::{
    build_error, pause, unexplained, Unexplained, CONDITIONAL_CHECK_FAILED, TRANSACTION_CONFLICT_ATTEMPTS,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, Delete, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use base64::Engine as _;
use chrono::Utc;
use crm_core::consumer::capacity::{Capacity, CapacityMeter};
use crm_core::event::EventEnvelope;
use crm_core::ports::EventExpiry;
use crm_core::ports::{
    check_receipts, AppendError, AppendRequest, Appended, CommandReceipt, EventPage, EventStore, ExpectedVersion,
    LoadedStream, ReservationChange, Snapshot, StoreError,
};
use crm_core::retention::{expires_after_legal_period, is_activity, RetentionPolicy, ERASURE_EVENT_TYPES};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// DynamoDB's limit on the items of one transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// How often an `ExpectedVersion::Any` append re-reads the stream's end and
/// tries again after losing a race.
const ANY_ATTEMPTS: u32 = 8;

/// A Scan page reads at least this many items, so that pages of few events
/// over a table with many reservations and receipts take few round trips.
const MIN_SCAN_PAGE: usize = 25;
/// And at most this many.
const MAX_SCAN_PAGE: usize = 1000;

/// Service error codes worth retrying.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "LimitExceededException",
];

/// The event store over the DynamoDB table `table` (see [`super::items`] for
/// its layout and [`super::create_events_table`] for its definition).
#[derive(Debug, Clone)]
pub struct DynamoEventStore {
    client: Client,
    table: String,
    /// Activity events get the TTL `expires_at` = occurred_at + the activity
    /// age + a margin for the daily fold (`crm_core::retention`).
    retention: RetentionPolicy,
    /// Whether order streams and erased customers' streams get the legal
    /// TTL (decision 0078): only a store given its policy
    /// ([`DynamoEventStore::with_retention`]) writes it, so no process ever
    /// stamps a default period shorter than the deployment's.
    legal_ttl: bool,
    /// What the appends spent (clones share it).
    meter: Arc<CapacityMeter>,
}

/// What an item of a transaction is for, to read its cancellation reason.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    Event,
    Reservation(String),
    /// A command receipt, by its key.
    Receipt(String),
}

/// The items of one transaction and, in the same order, what each is for.
#[derive(Debug, Default)]
struct Plan {
    items: Vec<TransactWriteItem>,
    roles: Vec<Role>,
}

/// Why a transaction was cancelled.
enum Cancelled {
    /// One of ours: conflict, reservation taken, duplicate command, or a
    /// store error.
    Refused(AppendError),
    /// Worth sending the same transaction again.
    Transient(String),
}

fn failed(e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(e.to_string())
}

fn corrupt(table: &str, e: CodecError) -> StoreError {
    StoreError::Failed(format!("corrupt item in table {table}: {e}"))
}

/// Maps an SDK error: throttling, transaction conflicts, 5xx, timeouts and
/// connection failures are [`StoreError::Unavailable`]; the rest (validation,
/// missing table, bad credentials ...) [`StoreError::Failed`].
pub(crate) fn sdk_error<E>(operation: &str, err: &SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = format!("{operation}: {}", DisplayErrorContext(err));
    let retryable = match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => !d.is_user(),
        SdkError::ServiceError(s) => {
            s.raw().status().is_server_error() || s.err().code().is_some_and(|c| RETRYABLE_CODES.contains(&c))
        }
        _ => false,
    };
    if retryable {
        StoreError::Unavailable(message)
    } else {
        StoreError::Failed(message)
    }
}

fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

fn values(pairs: Vec<(&str, AttributeValue)>) -> HashMap<String, AttributeValue> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn encode_cursor(key: &Item) -> Result<String, StoreError> {
    let pk = items::get_s(key, PK).map_err(failed)?;
    let sk: u64 = items::get_n(key, SK).map_err(failed)?;
    let json = serde_json::json!({ "pk": pk, "sk": sk });
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json.to_string()))
}

fn decode_cursor(cursor: &str) -> Result<Item, StoreError> {
    let invalid = || StoreError::Failed(format!("invalid read_all cursor {cursor:?}"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    let pk = json.get("pk").and_then(|v| v.as_str()).ok_or_else(invalid)?;
    let sk = json.get("sk").and_then(|v| v.as_u64()).ok_or_else(invalid)?;
    Ok(items::key(pk, sk))
}

impl DynamoEventStore {
    /// A store over `table`, which must exist (see [`super::create_events_table`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoEventStore {
            client,
            table: table.into(),
            retention: RetentionPolicy::default(),
            legal_ttl: false,
            meter: Arc::new(CapacityMeter::default()),
        }
    }

    /// The capacity units and requests the appends of this store (and its
    /// clones) spent so far, counted from the items' sizes by DynamoDB's
    /// rules (`crm_core::consumer::capacity`): the version reads and the
    /// writes, not the loads.
    pub fn capacity(&self) -> Capacity {
        self.meter.capacity()
    }

    /// The same store, writing activity events' TTL under `policy`
    /// (`RETENTION_ACTIVITY_DAYS` in the functions), and the legal TTL of
    /// order streams and erased customers' streams (`RETENTION_LEGAL_YEARS`,
    /// decision 0078).
    pub fn with_retention(mut self, policy: RetentionPolicy) -> Self {
        self.retention = policy;
        self.legal_ttl = true;
        self
    }

    /// The legal TTL (epoch seconds) of the events appended now after
    /// `base`, if their stream is kept for the legal period (decision 0078):
    /// [`RetentionPolicy::legal_expires_at`] of the newest of them, never
    /// below what the stream already carries. The earlier items of the
    /// stream are raised to it first (only when the stream's newest item
    /// carries less, or none: a month boundary crossed, the stream's first
    /// erasure event, items from before the TTL), so the whole stream
    /// expires together and a failure leaves items kept longer, never
    /// shorter. `found` is item `base` when the append already read it.
    async fn legal_expiry(
        &self,
        stream_id: &str,
        envelopes: &[EventEnvelope],
        base: u64,
        found: Option<Item>,
    ) -> Result<Option<i64>, StoreError> {
        if !self.legal_ttl || !expires_after_legal_period(stream_id, true) {
            return Ok(None);
        }
        let previous = match (base, found) {
            (0, _) => None,
            (_, Some(item)) => Some(item),
            (_, None) => {
                let item = self.get_item(stream_id, base).await?;
                self.meter.get(&[item.as_ref().map_or(0, items::item_size)]);
                item
            }
        };
        let carried: Option<i64> = previous
            .as_ref()
            .and_then(|item| items::get_n(item, items::EXPIRES_AT).ok());
        let erasing = envelopes
            .iter()
            .any(|e| ERASURE_EVENT_TYPES.contains(&e.event_type.as_str()));
        if !expires_after_legal_period(stream_id, erasing || carried.is_some()) {
            return Ok(None);
        }
        let Some(newest) = envelopes.iter().map(|e| e.occurred_at).max() else {
            return Ok(carried);
        };
        let expires = self
            .retention
            .legal_expires_at(newest)
            .timestamp()
            .max(carried.unwrap_or(i64::MIN));
        if base > 0 && carried.is_none_or(|c| c < expires) {
            self.raise_expiry(stream_id, expires).await?;
        }
        Ok(Some(expires))
    }

    /// Sets `expires_at` to `expires` on every item of `stream_id` (its
    /// events and snapshot) that carries less or none; an item deleted
    /// meanwhile is not written again.
    async fn raise_expiry(&self, stream_id: &str, expires: i64) -> Result<u64, StoreError> {
        let mut raised = 0;
        for item in &self.stream_items(stream_id, items::EXPIRES_AT).await? {
            let carried: Option<i64> = items::get_n(item, items::EXPIRES_AT).ok();
            if carried.is_some_and(|c| c >= expires) {
                continue;
            }
            let sk: u64 = items::get_n(item, SK).map_err(|e| corrupt(&self.table, e))?;
            let updated = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(items::key(stream_id, sk)))
                .update_expression("SET #ttl = :ttl")
                .condition_expression("attribute_exists(#sk) AND (attribute_not_exists(#ttl) OR #ttl < :ttl)")
                .set_expression_attribute_names(Some(names(&[("#sk", SK), ("#ttl", items::EXPIRES_AT)])))
                .set_expression_attribute_values(Some(values(vec![(":ttl", items::n(expires))])))
                .send()
                .await;
            match updated {
                Ok(_) => raised += 1,
                Err(e)
                    if matches!(
                        e.as_service_error(),
                        Some(UpdateItemError::ConditionalCheckFailedException(_))
                    ) => {}
                Err(e) => return Err(sdk_error("UpdateItem", &e)),
            }
        }
        Ok(raised)
    }

    /// Every item of `stream_id` (events, snapshot, ...) with its keys and
    /// `attribute`, read page by page with consistent reads.
    async fn stream_items(&self, stream_id: &str, attribute: &str) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .projection_expression("#pk, #sk, #attr")
                .set_expression_attribute_names(Some(names(&[("#pk", PK), ("#sk", SK), ("#attr", attribute)])))
                .set_expression_attribute_values(Some(values(vec![(":pk", items::s(stream_id))])))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query", &e))?;
            found.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(found),
            }
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The client the store uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A consistent GetItem of `(pk, 0)`.
    async fn get_zero_item(&self, pk: &str) -> Result<Option<Item>, StoreError> {
        self.get_item(pk, 0).await
    }

    /// The version of the stream's last event (0 if it has none).
    async fn last_version(&self, stream_id: &str) -> Result<u64, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk > :zero")
            .set_expression_attribute_names(Some(names(&[("#pk", PK), ("#sk", SK)])))
            .set_expression_attribute_values(Some(values(vec![(":pk", items::s(stream_id)), (":zero", items::n(0))])))
            .projection_expression("#pk, #sk")
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("Query", &e))?;
        match out.items().first() {
            Some(item) => items::get_n(item, SK).map_err(|e| corrupt(&self.table, e)),
            None => Ok(0),
        }
    }

    /// Events of a stream after `after`, at most `limit`, paginating.
    async fn query_events(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut events = Vec::new();
        let mut start: Option<Item> = None;
        while events.len() < limit {
            let remaining = limit - events.len();
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND #sk > :after")
                .set_expression_attribute_names(Some(names(&[("#pk", PK), ("#sk", SK)])))
                .set_expression_attribute_values(Some(values(vec![
                    (":pk", items::s(stream_id)),
                    (":after", items::n(after)),
                ])))
                .consistent_read(true)
                .set_limit(i32::try_from(remaining).ok())
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query", &e))?;
            for item in out.items() {
                if items::kind_of(item) != Some(items::KIND_EVENT) {
                    tracing::warn!(table = %self.table, stream_id, "non-event item at sk > 0 skipped");
                    continue;
                }
                events.push(items::event_from_item(item).map_err(|e| corrupt(&self.table, e))?);
                if events.len() == limit {
                    break;
                }
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        Ok(events)
    }

    fn event_put(&self, envelope: &EventEnvelope, legal: Option<i64>) -> Result<TransactWriteItem, StoreError> {
        let mut item = items::event_to_item(envelope).map_err(|e| corrupt(&self.table, e))?;
        // Raw activity expires through the table's TTL once its day is folded
        // (retention); order streams and erased customers' streams the legal
        // period after their newest event (decision 0078); every other event
        // is kept.
        if is_activity(&envelope.event_type) {
            let expires = self.retention.activity_expires_at(envelope.occurred_at);
            item.insert(items::EXPIRES_AT.into(), items::n(expires.timestamp()));
        } else if let Some(expires) = legal {
            item.insert(items::EXPIRES_AT.into(), items::n(expires));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#sk)")
            .set_expression_attribute_names(Some(names(&[("#sk", SK)])))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn reservation_write(&self, change: &ReservationChange) -> Result<TransactWriteItem, StoreError> {
        let attribute_names = names(&[("#pk", PK), ("#kind", KIND), ("#owner", OWNER)]);
        Ok(match change {
            ReservationChange::Claim { key, owner } => {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(items::reservation_to_item(key, owner)))
                    .condition_expression("attribute_not_exists(#pk) OR (#kind = :reservation AND #owner = :owner)")
                    .set_expression_attribute_names(Some(attribute_names))
                    .set_expression_attribute_values(Some(values(vec![
                        (":reservation", items::s(items::KIND_RESERVATION)),
                        (":owner", items::s(owner)),
                    ])))
                    .build()
                    .map_err(build_error)?;
                TransactWriteItem::builder().put(put).build()
            }
            ReservationChange::Release { key, owner } => {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(items::key(key, 0)))
                    .condition_expression("#kind = :reservation AND #owner = :owner")
                    .set_expression_attribute_names(Some(names(&[("#kind", KIND), ("#owner", OWNER)])))
                    .set_expression_attribute_values(Some(values(vec![
                        (":reservation", items::s(items::KIND_RESERVATION)),
                        (":owner", items::s(owner)),
                    ])))
                    .build()
                    .map_err(build_error)?;
                TransactWriteItem::builder().delete(delete).build()
            }
        })
    }

    fn receipt_put(&self, receipt: &CommandReceipt) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(
                items::receipt_to_item(receipt, Utc::now()).map_err(|e| corrupt(&self.table, e))?,
            ))
            .condition_expression("attribute_not_exists(#pk)")
            .set_expression_attribute_names(Some(names(&[("#pk", PK)])))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The items to write for `request` with its events at `envelopes`.
    fn plan(
        &self,
        request: &AppendRequest,
        envelopes: &[EventEnvelope],
        extra: &[CommandReceipt],
        legal: Option<i64>,
    ) -> Result<Plan, StoreError> {
        let mut plan = Plan::default();
        for envelope in envelopes {
            plan.items.push(self.event_put(envelope, legal)?);
            plan.roles.push(Role::Event);
        }
        for change in &request.reservations {
            plan.items.push(self.reservation_write(change)?);
            plan.roles.push(Role::Reservation(change.key().to_string()));
        }
        for receipt in request.receipt.iter().chain(extra) {
            plan.items.push(self.receipt_put(receipt)?);
            plan.roles.push(Role::Receipt(receipt.key.clone()));
        }
        Ok(plan)
    }

    /// The size of each item of a plan (a delete counts its key).
    fn sizes(plan: &Plan) -> Vec<usize> {
        plan.items
            .iter()
            .map(|w| {
                if let Some(put) = w.put() {
                    items::item_size(put.item())
                } else if let Some(delete) = w.delete() {
                    items::item_size(delete.key())
                } else {
                    0
                }
            })
            .collect()
    }

    /// Writes one put alone: a conditional `PutItem` (half a transaction's
    /// units); a failed condition means what the item's role says.
    async fn write_alone(&self, put: &Put, role: &Role, request: &AppendRequest) -> Result<(), AppendError> {
        self.meter.write(&[items::item_size(put.item())], false);
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(put.item().clone()))
            .set_condition_expression(put.condition_expression().map(str::to_string))
            .set_expression_attribute_names(put.expression_attribute_names().cloned())
            .set_expression_attribute_values(put.expression_attribute_values().cloned())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => Err(match role {
                    // The SDK sends a PutItem again when its answer was lost
                    // (a timeout, a reset, a 5xx after the write): the retry
                    // then finds its own event. That is success, as a
                    // transaction's client token made it before decision 0036.
                    Role::Event if self.holds(put.item()).await? => return Ok(()),
                    Role::Event => Self::conflict(request),
                    Role::Reservation(key) => AppendError::ReservationTaken { key: key.clone() },
                    Role::Receipt(key) => match self.duplicate(key).await {
                        Cancelled::Refused(e) => e,
                        Cancelled::Transient(why) => StoreError::Unavailable(why).into(),
                    },
                }),
                _ => Err(sdk_error("PutItem", &err).into()),
            },
        }
    }

    /// Whether the table holds `item`'s event itself (same key, same event id).
    async fn holds(&self, item: &Item) -> Result<bool, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(
                [items::PK, items::SK]
                    .iter()
                    .filter_map(|k| item.get(*k).map(|v| (k.to_string(), v.clone())))
                    .collect(),
            ))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", &e))?;
        Ok(out.item().is_some_and(|stored| {
            stored.get(items::EVENT_ID).is_some() && stored.get(items::EVENT_ID) == item.get(items::EVENT_ID)
        }))
    }

    /// Writes the plan: one put alone, otherwise one transaction.
    async fn write(
        &self,
        plan: Plan,
        request: &AppendRequest,
        base: u64,
        extra: &[CommandReceipt],
    ) -> Result<(), AppendError> {
        if let ([item], [role]) = (plan.items.as_slice(), plan.roles.as_slice()) {
            if let Some(put) = item.put() {
                return self.write_alone(put, role, request).await;
            }
        }
        self.transact(plan, request, base, extra).await
    }

    /// The event `expected` names must exist (one strongly consistent
    /// GetItem): otherwise the stream is behind it, a conflict.
    async fn check_version(&self, request: &AppendRequest, expected: u64) -> Result<Item, AppendError> {
        let found = self.get_item(&request.stream_id, expected).await?;
        self.meter.get(&[found.as_ref().map_or(0, items::item_size)]);
        match found {
            Some(item) if items::kind_of(&item) == Some(items::KIND_EVENT) => Ok(item),
            _ => Err(Self::conflict(request)),
        }
    }

    /// A consistent GetItem of `(pk, sk)`.
    async fn get_item(&self, pk: &str, sk: u64) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(items::key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", &e))?;
        Ok(out.item().cloned())
    }

    /// Sends the transaction; a cancellation becomes the [`AppendError`] it
    /// stands for. `base` is the version the events were placed after.
    async fn transact(
        &self,
        plan: Plan,
        request: &AppendRequest,
        base: u64,
        extra: &[CommandReceipt],
    ) -> Result<(), AppendError> {
        let sizes = Self::sizes(&plan);
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.meter.write(&sizes, true);
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(plan.items.clone()))
                .send()
                .await;
            let err = match sent {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) = err.as_service_error() else {
                return Err(sdk_error("TransactWriteItems", &err).into());
            };
            let reasons = cancelled.cancellation_reasons();
            let explained = if reasons.len() == plan.roles.len() {
                self.explain_by_reasons(reasons, &plan.roles, request).await
            } else {
                tracing::debug!(
                    table = %self.table,
                    reasons = reasons.len(),
                    items = plan.roles.len(),
                    "transaction cancelled without usable reasons; re-reading"
                );
                self.explain_by_reading(request, base, extra).await
            };
            match explained {
                Cancelled::Refused(e) => return Err(e),
                Cancelled::Transient(why) if attempt < TRANSACTION_CONFLICT_ATTEMPTS => {
                    tracing::debug!(table = %self.table, attempt, why, "transaction retried");
                    pause(&self.client, attempt).await;
                }
                Cancelled::Transient(why) => {
                    return Err(
                        StoreError::Unavailable(format!("TransactWriteItems cancelled {attempt} times: {why}")).into(),
                    )
                }
            }
        }
    }

    fn conflict(request: &AppendRequest) -> AppendError {
        AppendError::Conflict {
            stream_id: request.stream_id.clone(),
            expected: request.expected,
            actual: None,
        }
    }

    /// The existing receipt answers a duplicate command.
    async fn duplicate(&self, key: &str) -> Cancelled {
        match self.receipt(key).await {
            Ok(Some(existing)) => Cancelled::Refused(AppendError::DuplicateCommand(Box::new(existing))),
            Ok(None) => Cancelled::Transient(format!("receipt {key} existed but is gone now")),
            Err(e) => Cancelled::Refused(e.into()),
        }
    }

    /// Explains a cancellation by its reasons, one per item of `roles`.
    /// A duplicate command wins over a conflict, which wins over a taken
    /// reservation (after reloading, the caller may decide differently).
    async fn explain_by_reasons(
        &self,
        reasons: &[CancellationReason],
        roles: &[Role],
        request: &AppendRequest,
    ) -> Cancelled {
        let failed_roles: Vec<&Role> = roles
            .iter()
            .zip(reasons)
            .filter(|(_, r)| r.code() == Some(CONDITIONAL_CHECK_FAILED))
            .map(|(role, _)| role)
            .collect();
        if let Some(Role::Receipt(key)) = failed_roles.iter().find(|r| matches!(r, Role::Receipt(_))) {
            return self.duplicate(key).await;
        }
        if failed_roles.iter().any(|r| matches!(r, Role::Event)) {
            return Cancelled::Refused(Self::conflict(request));
        }
        if let Some(Role::Reservation(key)) = failed_roles.first() {
            return Cancelled::Refused(AppendError::ReservationTaken { key: key.clone() });
        }
        match unexplained(reasons) {
            Unexplained::Transient(described) => Cancelled::Transient(described),
            Unexplained::Store(e) => Cancelled::Refused(e.into()),
        }
    }

    /// Explains a cancellation without reasons by reading what it touched.
    async fn explain_by_reading(&self, request: &AppendRequest, base: u64, extra: &[CommandReceipt]) -> Cancelled {
        for receipt in request.receipt.iter().chain(extra) {
            match self.receipt(&receipt.key).await {
                Ok(Some(existing)) => return Cancelled::Refused(AppendError::DuplicateCommand(Box::new(existing))),
                Ok(None) => {}
                Err(e) => return Cancelled::Refused(e.into()),
            }
        }
        if !request.events.is_empty() {
            match self.last_version(&request.stream_id).await {
                Ok(current) if current != base => return Cancelled::Refused(Self::conflict(request)),
                Ok(_) => {}
                Err(e) => return Cancelled::Refused(e.into()),
            }
        }
        for change in &request.reservations {
            let holder = match self.reservation_owner(change.key()).await {
                Ok(holder) => holder,
                Err(e) => return Cancelled::Refused(e.into()),
            };
            let taken = match change {
                ReservationChange::Claim { owner, .. } => holder.is_some_and(|h| &h != owner),
                ReservationChange::Release { owner, .. } => holder.as_ref() != Some(owner),
            };
            if taken {
                return Cancelled::Refused(AppendError::ReservationTaken {
                    key: change.key().to_string(),
                });
            }
        }
        Cancelled::Transient("transaction cancelled, but nothing it checked has changed".into())
    }

    /// Places the events after `base`; for `check = Some(n)` makes sure event
    /// `n` exists, then writes them (with the reservations and the receipt).
    async fn append_at(
        &self,
        request: &AppendRequest,
        base: u64,
        check: Option<u64>,
        extra: &[CommandReceipt],
    ) -> Result<Appended, AppendError> {
        let envelopes: Vec<EventEnvelope> = request
            .events
            .iter()
            .zip(1u64..)
            .map(|(e, i)| {
                let mut e = e.clone();
                e.version = base + i;
                e.stream_id = request.stream_id.clone();
                e
            })
            .collect();
        let found = match check {
            Some(expected) => Some(self.check_version(request, expected).await?),
            None => None,
        };
        let legal = self.legal_expiry(&request.stream_id, &envelopes, base, found).await?;
        let plan = self.plan(request, &envelopes, extra, legal)?;
        self.write(plan, request, base, extra).await?;
        let version = base + envelopes.len() as u64;
        Ok(Appended {
            events: envelopes,
            version,
        })
    }

    /// An append without events: reservations and the receipt only, no
    /// version check.
    async fn append_without_events(
        &self,
        request: &AppendRequest,
        extra: &[CommandReceipt],
    ) -> Result<Appended, AppendError> {
        let plan = self.plan(request, &[], extra, None)?;
        if !plan.items.is_empty() {
            self.write(plan, request, 0, extra).await?;
        }
        Ok(Appended {
            events: Vec::new(),
            version: self.last_version(&request.stream_id).await?,
        })
    }
}

/// Refuses, before any write, what one transaction cannot hold.
fn check_size(request: &AppendRequest, extra: &[CommandReceipt]) -> Result<(), AppendError> {
    check_receipts(request, extra)?;
    let total =
        request.events.len() + request.reservations.len() + usize::from(request.receipt.is_some()) + extra.len();
    if total > MAX_TRANSACTION_ITEMS {
        return Err(AppendError::TooLarge(format!(
            "{total} items in one transaction (at most {MAX_TRANSACTION_ITEMS})"
        )));
    }
    // DynamoDB refuses a transaction touching one item twice.
    let mut keys = HashSet::new();
    let receipt_keys = request.receipt.iter().chain(extra).map(|r| r.key.as_str());
    for key in request.reservations.iter().map(|r| r.key()).chain(receipt_keys) {
        if !keys.insert(key) {
            return Err(StoreError::Failed(format!("key {key} is written twice in one append")).into());
        }
    }
    Ok(())
}

#[async_trait]
impl EventStore for DynamoEventStore {
    async fn load(&self, stream_id: &str) -> Result<LoadedStream, StoreError> {
        let snapshot = match self.get_zero_item(stream_id).await? {
            Some(item) if items::kind_of(&item) == Some(items::KIND_SNAPSHOT) => {
                Some(items::snapshot_from_item(&item).map_err(|e| corrupt(&self.table, e))?)
            }
            _ => None,
        };
        let after = snapshot.as_ref().map_or(0, |s| s.version);
        let events = self.query_events(stream_id, after, usize::MAX).await?;
        let version = events.last().map_or(after, |e| e.version);
        Ok(LoadedStream {
            snapshot,
            events,
            version,
        })
    }

    async fn read_stream(&self, stream_id: &str, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.query_events(stream_id, after, limit).await
    }

    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        self.append_with_receipts(request, Vec::new()).await
    }

    /// As [`DynamoEventStore::append`], with one receipt put more per
    /// command in the transaction (each `attribute_not_exists`).
    async fn append_with_receipts(
        &self,
        request: AppendRequest,
        receipts: Vec<CommandReceipt>,
    ) -> Result<Appended, AppendError> {
        let extra = receipts.as_slice();
        check_size(&request, extra)?;
        if request.events.is_empty() {
            return self.append_without_events(&request, extra).await;
        }
        match request.expected {
            ExpectedVersion::NoStream | ExpectedVersion::Exactly(0) => self.append_at(&request, 0, None, extra).await,
            ExpectedVersion::Exactly(n) => self.append_at(&request, n, Some(n), extra).await,
            ExpectedVersion::Any => {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let current = self.last_version(&request.stream_id).await?;
                    match self.append_at(&request, current, None, extra).await {
                        Err(AppendError::Conflict { .. }) if attempt < ANY_ATTEMPTS => {
                            tracing::debug!(stream_id = %request.stream_id, attempt, "append at the end lost a race; again");
                            pause(&self.client, attempt).await;
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    async fn receipt(&self, key: &str) -> Result<Option<CommandReceipt>, StoreError> {
        match self.get_zero_item(key).await? {
            Some(item) if items::kind_of(&item) == Some(items::KIND_RECEIPT) => items::receipt_from_item(&item)
                .map(Some)
                .map_err(|e| corrupt(&self.table, e)),
            _ => Ok(None),
        }
    }

    /// `BatchGetItem`s of up to 100 keys, strongly consistent; unprocessed
    /// keys are asked again.
    async fn receipts(&self, keys: &[String]) -> Result<Vec<Option<CommandReceipt>>, StoreError> {
        let mut unique: Vec<&str> = Vec::new();
        let mut seen = HashSet::new();
        for key in keys {
            if seen.insert(key.as_str()) {
                unique.push(key);
            }
        }
        let wanted = unique.iter().map(|k| items::key(k, 0)).collect();
        let mut found: HashMap<String, CommandReceipt> = HashMap::new();
        for item in batch_get(&self.client, &self.table, &self.meter, wanted)
            .await?
            .iter()
            .filter(|i| items::kind_of(i) == Some(items::KIND_RECEIPT))
        {
            let receipt = items::receipt_from_item(item).map_err(|e| corrupt(&self.table, e))?;
            found.insert(receipt.key.clone(), receipt);
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn reservation_owner(&self, key: &str) -> Result<Option<String>, StoreError> {
        match self.get_zero_item(key).await? {
            Some(item) if items::kind_of(&item) == Some(items::KIND_RESERVATION) => {
                items::reservation_owner_from_item(&item)
                    .map(Some)
                    .map_err(|e| corrupt(&self.table, e))
            }
            _ => Ok(None),
        }
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<(), StoreError> {
        let mut item = items::snapshot_to_item(&snapshot).map_err(|e| corrupt(&self.table, e))?;
        // A snapshot of a stream kept for the legal period expires with its
        // events: it takes the TTL of the event it folds up to (decision 0078).
        if self.legal_ttl && expires_after_legal_period(&snapshot.stream_id, true) && snapshot.version > 0 {
            let folded = self.get_item(&snapshot.stream_id, snapshot.version).await?;
            if let Some(expires) = folded.and_then(|event| event.get(items::EXPIRES_AT).cloned()) {
                item.insert(items::EXPIRES_AT.into(), expires);
            }
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #version < :v")
            .set_expression_attribute_names(Some(names(&[("#pk", PK), ("#version", VERSION)])))
            .set_expression_attribute_values(Some(values(vec![(":v", items::n(snapshot.version))])))
            .send()
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                // A snapshot as new or newer is already there.
                Some(PutItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(sdk_error("PutItem", &e)),
            },
        }
    }

    async fn read_all(&self, after: Option<&str>, limit: usize) -> Result<EventPage, StoreError> {
        let limit = limit.max(1);
        let mut start = after.map(decode_cursor).transpose()?;
        let mut events = Vec::new();
        loop {
            let remaining = limit - events.len();
            let page = remaining.clamp(MIN_SCAN_PAGE, MAX_SCAN_PAGE);
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("#kind = :event")
                .set_expression_attribute_names(Some(names(&[("#kind", KIND)])))
                .set_expression_attribute_values(Some(values(vec![(":event", items::s(items::KIND_EVENT))])))
                .consistent_read(true)
                .set_limit(i32::try_from(page).ok())
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Scan", &e))?;
            let found = out.items();
            for (i, item) in found.iter().enumerate() {
                events.push(items::event_from_item(item).map_err(|e| corrupt(&self.table, e))?);
                if events.len() == limit {
                    let page_done = i + 1 == found.len();
                    let next = match out.last_evaluated_key() {
                        // The table ends with this event.
                        None if page_done => None,
                        // Resume right after the last event returned.
                        _ => Some(encode_cursor(item)?),
                    };
                    return Ok(EventPage { events, next });
                }
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(EventPage { events, next: None }),
            }
        }
    }
}

/// Retention's deletions (`crm_core::retention`). On AWS raw activity
/// expires through the table's TTL; these serve an operator's sweep and the
/// legal period.
#[async_trait]
impl EventExpiry for DynamoEventStore {
    /// A Scan of the event items' keys (one pass per call): fine for a daily
    /// job, not for a hot path.
    async fn streams(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut found = BTreeSet::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("#kind = :event AND begins_with(#pk, :prefix)")
                .projection_expression("#pk")
                .set_expression_attribute_names(Some(names(&[("#kind", KIND), ("#pk", PK)])))
                .set_expression_attribute_values(Some(values(vec![
                    (":event", items::s(items::KIND_EVENT)),
                    (":prefix", items::s(prefix)),
                ])))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Scan", &e))?;
            for item in out.items() {
                let pk = items::get_s(item, PK).map_err(|e| corrupt(&self.table, e))?;
                if after.is_none_or(|a| pk > a) {
                    found.insert(pk.to_string());
                }
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        Ok(found.into_iter().take(limit).collect())
    }

    async fn delete_events(&self, stream_id: &str, versions: &[u64]) -> Result<u64, StoreError> {
        let newest = self.last_version(stream_id).await?;
        if versions.contains(&newest) {
            return Err(StoreError::Failed(format!(
                "{stream_id}: the newest event (version {newest}) is never deleted"
            )));
        }
        let mut deleted = 0;
        for v in versions.iter().filter(|v| **v > 0) {
            let out = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(items::key(stream_id, *v)))
                .condition_expression("#kind = :event")
                .set_expression_attribute_names(Some(names(&[("#kind", KIND)])))
                .set_expression_attribute_values(Some(values(vec![(":event", items::s(items::KIND_EVENT))])))
                .send()
                .await;
            match out {
                Ok(_) => deleted += 1,
                // Already gone (the TTL, or an earlier sweep).
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(sdk_error("DeleteItem", &e)),
            }
        }
        Ok(deleted)
    }

    async fn delete_stream(&self, stream_id: &str) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for item in &self.stream_items(stream_id, KIND).await? {
            let kind = items::kind_of(item);
            if kind != Some(items::KIND_EVENT) && kind != Some(items::KIND_SNAPSHOT) {
                continue;
            }
            let sk = items::get_n(item, SK).map_err(|e| corrupt(&self.table, e))?;
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(items::key(stream_id, sk)))
                .send()
                .await
                .map_err(|e| sdk_error("DeleteItem", &e))?;
            if kind == Some(items::KIND_EVENT) {
                deleted += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_core::ports::MAX_EVENTS_PER_APPEND;

    #[test]
    fn cursors_round_trip() {
        let key = items::key("customer-1#x", 42);
        let cursor = encode_cursor(&key).expect("encode");
        assert_eq!(decode_cursor(&cursor).expect("decode"), key);
        assert!(decode_cursor("not a cursor!").is_err());
        assert!(decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"{\"pk\":1}")).is_err());
    }

    fn request(events: usize, reservations: usize, receipt: bool) -> AppendRequest {
        let s = "customer-1";
        AppendRequest {
            stream_id: s.into(),
            expected: ExpectedVersion::Exactly(3),
            events: (0..events as u64)
                .map(|n| crm_core::store_contract::event(s, n))
                .collect(),
            reservations: (0..reservations)
                .map(|i| ReservationChange::Claim {
                    key: format!("email#{i}"),
                    owner: s.into(),
                })
                .collect(),
            receipt: receipt.then(|| CommandReceipt {
                key: "command#1".into(),
                request_hash: "h".into(),
                status: 200,
                body: serde_json::Value::Null,
                recorded_at: Utc::now(),
            }),
        }
    }

    #[test]
    fn sizes_are_checked_before_writing() {
        assert!(check_size(&request(MAX_EVENTS_PER_APPEND, 0, true), &[]).is_ok());
        assert!(matches!(
            check_size(&request(MAX_EVENTS_PER_APPEND + 1, 0, false), &[]),
            Err(AppendError::TooLarge(_))
        ));
        // 90 events + 10 reservations + 1 receipt = 101 (the expected
        // version is read before, not checked in the transaction).
        assert!(matches!(
            check_size(&request(MAX_EVENTS_PER_APPEND, 10, true), &[]),
            Err(AppendError::TooLarge(_))
        ));
        assert!(check_size(&request(MAX_EVENTS_PER_APPEND, 9, true), &[]).is_ok());
        let mut twice = request(1, 1, false);
        twice.reservations.push(twice.reservations[0].clone());
        assert!(matches!(
            check_size(&twice, &[]),
            Err(AppendError::Store(StoreError::Failed(_)))
        ));
    }

    /// On moto: an append of one event alone is one conditional PutItem
    /// (1 unit), after version `n` preceded by the read of `(stream, n)`;
    /// an event with a receipt is a transaction; a stream behind the
    /// expected version is a conflict found by that read, nothing written.
    #[tokio::test]
    async fn a_single_event_is_a_put_and_the_expected_version_is_read() {
        let client = crate::testing::dynamodb_client().await;
        let table = format!("events-unit-{}", uuid::Uuid::now_v7().simple());
        super::super::create_events_table(&client, &table).await.expect("table");
        let store = DynamoEventStore::new(client, table);
        let s = format!("customer-{}", uuid::Uuid::now_v7().simple());
        let one = |expected, n| AppendRequest {
            stream_id: s.clone(),
            expected,
            events: vec![crm_core::store_contract::event(&s, n)],
            reservations: Vec::new(),
            receipt: None,
        };
        let before = store.capacity();
        store.append(one(ExpectedVersion::NoStream, 1)).await.expect("first");
        let first = store.capacity();
        assert_eq!(first.write_units - before.write_units, 1.0);
        assert_eq!((first.transactions, first.read_requests), (0, 0));
        store.append(one(ExpectedVersion::Exactly(1), 2)).await.expect("second");
        let second = store.capacity();
        assert_eq!(second.write_units - first.write_units, 1.0);
        assert_eq!(second.read_units - first.read_units, 1.0);
        assert_eq!(second.transactions, 0);
        // Behind: version 5 does not exist.
        assert!(matches!(
            store.append(one(ExpectedVersion::Exactly(5), 6)).await,
            Err(AppendError::Conflict { .. })
        ));
        // Ahead: version 3 is taken meanwhile.
        store.append(one(ExpectedVersion::Exactly(2), 3)).await.expect("third");
        assert!(matches!(
            store.append(one(ExpectedVersion::Exactly(2), 3)).await,
            Err(AppendError::Conflict { .. })
        ));
        assert_eq!(store.load(&s).await.expect("load").version, 3);
        // A put sent again after its answer was lost finds its own event:
        // success, and nothing more is stored.
        let mine = AppendRequest {
            events: vec![crm_core::store_contract::event(&s, 4)],
            ..one(ExpectedVersion::Exactly(3), 4)
        };
        store.append(mine.clone()).await.expect("fourth");
        store.append(mine).await.expect("the same event again: its own write");
        assert_eq!(store.load(&s).await.expect("load").version, 4);
        let mut with_receipt = request(1, 0, true);
        with_receipt.stream_id = s.clone();
        with_receipt.expected = ExpectedVersion::Exactly(4);
        with_receipt.receipt = with_receipt.receipt.map(|mut r| {
            r.key = format!("command#{s}");
            r
        });
        let before = store.capacity();
        store.append(with_receipt).await.expect("with a receipt");
        let after = store.capacity();
        assert_eq!(after.transactions - before.transactions, 1);
        assert_eq!(after.write_units - before.write_units, 4.0);
    }

    /// The fallback for cancellations without reasons (moto 5.2 always gives
    /// reasons, so the wire tests never reach it): needs the endpoint in
    /// `AWS_ENDPOINT_URL`, like the tests in `tests/`.
    #[tokio::test]
    async fn cancellations_without_reasons_are_explained_by_reading() {
        let client = crate::testing::dynamodb_client().await;
        let table = format!("events-unit-{}", uuid::Uuid::now_v7().simple());
        super::super::create_events_table(&client, &table).await.expect("table");
        let store = DynamoEventStore::new(client, table);

        let s = format!("customer-{}", uuid::Uuid::now_v7().simple());
        let mut seed = request(2, 1, true);
        seed.stream_id = s.clone();
        seed.expected = ExpectedVersion::NoStream;
        seed.reservations = vec![ReservationChange::Claim {
            key: format!("email#{s}"),
            owner: s.clone(),
        }];
        let receipt = seed.receipt.clone();
        store.append(seed.clone()).await.expect("seed");

        let explain = |request: AppendRequest, base: u64| {
            let store = store.clone();
            async move {
                match store.explain_by_reading(&request, base, &[]).await {
                    Cancelled::Refused(e) => Some(e),
                    Cancelled::Transient(_) => None,
                }
            }
        };
        let mut r = seed.clone();
        r.expected = ExpectedVersion::Exactly(2);
        assert_eq!(
            explain(r.clone(), 2).await,
            Some(AppendError::DuplicateCommand(Box::new(receipt.expect("a receipt"))))
        );
        r.receipt = None;
        assert!(matches!(
            explain(r.clone(), 1).await,
            Some(AppendError::Conflict { .. })
        ));
        r.reservations = vec![ReservationChange::Claim {
            key: format!("email#{s}"),
            owner: "someone-else".into(),
        }];
        assert!(matches!(
            explain(r.clone(), 2).await,
            Some(AppendError::ReservationTaken { .. })
        ));
        r.reservations = vec![ReservationChange::Release {
            key: format!("email#nobody-{s}"),
            owner: s.clone(),
        }];
        assert!(matches!(
            explain(r.clone(), 2).await,
            Some(AppendError::ReservationTaken { .. })
        ));
        // Nothing explains it: worth another try.
        r.reservations = vec![ReservationChange::Claim {
            key: format!("email#{s}"),
            owner: s.clone(),
        }];
        assert_eq!(explain(r, 2).await, None);
    }
}
