//! `crm_core::ports::ReadModelStore` over one DynamoDB table, `read-models`
//! (ARCHITECTURE.md §6), created by [`super::create_read_models_table`].
//!
//! Every item has `pk` (S), `sk` (S) and a `kind`:
//!
//! | kind         | pk                       | sk           | other attributes |
//! | ------------ | ------------------------ | ------------ | ---------------- |
//! | `doc`        | `<consumer>#<partition>` | sort key     | body (JSON string) |
//! | `checkpoint` | `checkpoint#<stream>`    | `checkpoint` | `v#<consumer>` (N) per consumer |
//!
//! One checkpoint item per stream holds the version of every consumer that
//! applied events of it (decision 0036): a page moving several consumers on
//! a stream writes the item once. Each write sets only its consumers'
//! attributes (`UpdateItem`, conditioned on each one's expected version), so
//! the consumers, and the functions hosting them, never overwrite each
//! other's versions. A consumer name must be non-empty, must not contain `#`
//! and must not be `checkpoint`, so that no document key can be mistaken for
//! another consumer's document or for a checkpoint item.
//!
//! A page's commits ([`ReadModelStore::commit_all`]) are cut by
//! [`crm_core::consumer::capacity::plan`] into chunks of consecutive commits
//! within `TransactWriteItems`' 100 items and 4 MB, each checkpoint and each
//! document written once per chunk as the chunk leaves it (DynamoDB refuses
//! a transaction touching one item twice anyway). The stream items whose
//! commits carry documents and those documents are one `TransactWriteItems`
//! (one item alone: a single conditional write); every other stream item is
//! one conditional `UpdateItem`: atomic on its own, half the write units of
//! a transaction (decisions 0031, 0036).
//! Chunks are written in order; after a failure the chunks before stand, which
//! the checkpoints make safe to deliver again.
//!
//! Every request is metered ([`DynamoReadModels::capacity`]) by DynamoDB's
//! rounding rules from the sizes of the items sent and read
//! ([`crm_core::consumer::capacity`]), not from what the service reports.

use super::batch_get::batch_get;
use super::event_store::sdk_error;
use super::items::{self, CodecError, Item, BODY, KIND, PK, SK};
use super::transact::{
    build_error, pause, unexplained, Unexplained, CONDITIONAL_CHECK_FAILED, TRANSACTION_CONFLICT_ATTEMPTS,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, Delete, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use crm_core::consumer::capacity::{self, Capacity, CapacityMeter, CheckpointMove, Chunk, LooseWrite, StreamMove};
use crm_core::ports::{Commit, CommitError, ReadModelStore, ReadOp, StoreError};
use crm_core::read_model_adapter::{check_commit_sizes, listed, single_commit, ListStart};
use std::collections::HashMap;
use std::sync::Arc;

/// The table's name in the SAM template.
pub const READ_MODELS_TABLE: &str = "read-models";

pub const KIND_DOC: &str = "doc";
pub const KIND_CHECKPOINT: &str = "checkpoint";

/// What starts the partition key of a checkpoint item.
const CHECKPOINT_PREFIX: &str = "checkpoint#";
/// The sort key of every checkpoint item.
const CHECKPOINT_SK: &str = "checkpoint";

/// DynamoDB's limit on one item (names and values, in UTF-8 bytes).
const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Read models over the DynamoDB table `table`. Clones share one meter.
#[derive(Debug, Clone)]
pub struct DynamoReadModels {
    client: Client,
    table: String,
    meter: Arc<CapacityMeter>,
}

/// Why a chunk's transaction was cancelled.
enum Cancelled<'c> {
    /// This checkpoint was not the expected one.
    Conflict(&'c CheckpointMove),
    /// Worth sending the same transaction again.
    Transient(String),
    /// Not worth it.
    Store(StoreError),
}

/// The conflict of a checkpoint that was not the expected one.
fn conflict(moved: &CheckpointMove) -> CommitError {
    CommitError::Conflict {
        consumer: moved.consumer.clone(),
        stream_id: moved.stream_id.clone(),
        expected: moved.expected,
    }
}

/// The stamp of an idempotent document: the stream and version that wrote it.
const STAMP_STREAM: &str = "stamp_stream";
const STAMP_VERSION: &str = "stamp_version";
/// Lets an idempotent write through unless a newer version of the same stream wrote the item.
const NOT_OVERTAKEN: &str = "attribute_not_exists(#ss) OR #ss <> :s OR #sv <= :v";

/// The partition key of a consumer's documents in `partition`.
fn doc_pk(consumer: &str, partition: &str) -> String {
    format!("{consumer}#{partition}")
}

/// The key of a stream's checkpoint item.
fn checkpoint_key(stream_id: &str) -> Item {
    key(format!("{CHECKPOINT_PREFIX}{stream_id}"), CHECKPOINT_SK)
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([(PK.to_string(), items::s(pk)), (SK.to_string(), items::s(sk))])
}

/// Refuses consumer names that would make keys ambiguous.
fn check_consumer(consumer: &str) -> Result<(), StoreError> {
    if consumer.is_empty() || consumer.contains('#') || format!("{consumer}#") == CHECKPOINT_PREFIX {
        return Err(StoreError::Failed(format!(
            "invalid read-model consumer name {consumer:?}: it must be non-empty, \
             without '#', and not \"checkpoint\""
        )));
    }
    Ok(())
}

/// An item's size as DynamoDB counts it ([`items::item_size`]), as
/// [`capacity::doc_item_bytes`] and [`capacity::checkpoint_item_bytes`]
/// compute it for the items this adapter writes.
fn item_size(item: &Item) -> usize {
    items::item_size(item)
}

impl DynamoReadModels {
    /// Read models over `table`, which must exist (see
    /// [`super::create_read_models_table`]).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoReadModels {
            client,
            table: table.into(),
            meter: Arc::new(CapacityMeter::default()),
        }
    }

    /// The capacity units and requests this store (and its clones) spent
    /// so far, counted from the items' sizes by DynamoDB's rules.
    pub fn capacity(&self) -> Capacity {
        self.meter.capacity()
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The client the store uses.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn corrupt(&self, e: CodecError) -> StoreError {
        StoreError::Failed(format!("corrupt item in table {}: {e}", self.table))
    }

    /// Deletes every document of `consumer` and removes its version from
    /// every stream's checkpoint item (the other consumers' versions stay):
    /// one Scan of the table, fine for an operator's rebuild. Returns how
    /// many documents and checkpoints went.
    pub async fn clear_consumer(&self, consumer: &str) -> Result<usize, StoreError> {
        check_consumer(consumer)?;
        let attribute = capacity::checkpoint_attribute(consumer);
        let mut start: Option<Item> = None;
        let mut cleared = 0;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("begins_with(#pk, :docs) OR attribute_exists(#v)")
                .projection_expression("#pk, #sk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_names("#v", &attribute)
                .expression_attribute_values(":docs", items::s(format!("{consumer}#")))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Scan", &e))?;
            for item in out.items() {
                let pk = items::get_s(item, PK).map_err(|e| self.corrupt(e))?;
                let key = Some(item.clone());
                if pk.starts_with(CHECKPOINT_PREFIX) {
                    self.client
                        .update_item()
                        .table_name(&self.table)
                        .set_key(key)
                        .update_expression("REMOVE #v")
                        .expression_attribute_names("#v", &attribute)
                        .send()
                        .await
                        .map_err(|e| sdk_error("UpdateItem", &e))?;
                } else {
                    self.client
                        .delete_item()
                        .table_name(&self.table)
                        .set_key(key)
                        .send()
                        .await
                        .map_err(|e| sdk_error("DeleteItem", &e))?;
                }
                cleared += 1;
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(cleared),
            }
        }
    }

    /// A consistent GetItem.
    async fn get_item(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", &e))?;
        self.meter.get(&[out.item().map_or(0, item_size)]);
        Ok(out.item().cloned())
    }

    /// The body of a document item.
    fn body(&self, item: &Item) -> Result<serde_json::Value, StoreError> {
        match items::kind_of(item) {
            Some(KIND_DOC) => {}
            Some(other) => {
                return Err(self.corrupt(CodecError::WrongKind {
                    expected: KIND_DOC,
                    found: other.to_string(),
                }))
            }
            None => return Err(self.corrupt(CodecError::Missing(KIND))),
        }
        let invalid = |name: &'static str, reason: String| self.corrupt(CodecError::Invalid { name, reason });
        let added = item.keys().any(|name| name.starts_with("n#") || name.starts_with("s#"));
        let body = match item.get(BODY) {
            None if added => serde_json::Value::Object(serde_json::Map::new()),
            _ => {
                let body = items::get_s(item, BODY).map_err(|e| self.corrupt(e))?;
                serde_json::from_str(body).map_err(|e| invalid(BODY, e.to_string()))?
            }
        };
        if !added {
            return Ok(body);
        }
        // What adds made (decision 0088): counts on the body's fields, then the fields set.
        let mut counts = std::collections::BTreeMap::new();
        let mut set = serde_json::Map::new();
        for (name, value) in item {
            if let Some(field) = name.strip_prefix("n#") {
                let n = match value {
                    AttributeValue::N(n) => n.parse::<i64>().ok(),
                    _ => None,
                };
                counts.insert(
                    field.to_string(),
                    n.ok_or_else(|| invalid("n#", format!("{name} is not an integer")))?,
                );
            } else if let Some(field) = name.strip_prefix("s#") {
                let json = match value {
                    AttributeValue::S(text) => serde_json::from_str(text).ok(),
                    _ => None,
                };
                set.insert(
                    field.to_string(),
                    json.ok_or_else(|| invalid("s#", format!("{name} is not a JSON string")))?,
                );
            }
        }
        Ok(crm_core::ports::added(Some(body), &counts, &set))
    }

    /// The update of a stream's checkpoint item setting each consumer's
    /// new version, conditioned on each one's expected version (0: absent
    /// or 0, as `checkpoint` reads it). Other consumers' versions are left
    /// as they are.
    fn stream_update(&self, stream: &StreamMove<'_>) -> Result<Update, StoreError> {
        let mut sets = vec!["#kind = :kind".to_string()];
        let mut conditions = Vec::with_capacity(stream.moves.len());
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(checkpoint_key(stream.stream_id)))
            .expression_attribute_names("#kind", KIND)
            .expression_attribute_values(":kind", items::s(KIND_CHECKPOINT));
        for (i, moved) in stream.moves.iter().enumerate() {
            let (name, new, expected) = (format!("#c{i}"), format!(":n{i}"), format!(":e{i}"));
            sets.push(format!("{name} = {new}"));
            conditions.push(if moved.expected == 0 {
                format!("(attribute_not_exists({name}) OR {name} = {expected})")
            } else {
                format!("{name} = {expected}")
            });
            update = update
                .expression_attribute_names(&name, capacity::checkpoint_attribute(&moved.consumer))
                .expression_attribute_values(&new, items::n(moved.new))
                .expression_attribute_values(&expected, items::n(moved.expected));
        }
        update
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(conditions.join(" AND "))
            .build()
            .map_err(build_error)
    }

    /// The versions a checkpoint item holds, by consumer.
    fn versions(&self, item: &Item) -> Result<HashMap<String, u64>, StoreError> {
        match items::kind_of(item) {
            Some(KIND_CHECKPOINT) => {}
            Some(other) => {
                return Err(self.corrupt(CodecError::WrongKind {
                    expected: KIND_CHECKPOINT,
                    found: other.to_string(),
                }))
            }
            None => return Err(self.corrupt(CodecError::Missing(KIND))),
        }
        let mut out = HashMap::new();
        for (name, value) in item {
            let Some(consumer) = name.strip_prefix("v#") else {
                continue;
            };
            let AttributeValue::N(n) = value else {
                return Err(StoreError::Failed(format!(
                    "corrupt item in table {}: {name} is not a number",
                    self.table
                )));
            };
            let version = n
                .parse()
                .map_err(|_| StoreError::Failed(format!("corrupt item in table {}: {name} = {n:?}", self.table)))?;
            out.insert(consumer.to_string(), version);
        }
        Ok(out)
    }

    /// The write of one document and its item's size.
    fn doc_write(&self, consumer: &str, op: ReadOp) -> Result<(TransactWriteItem, usize), CommitError> {
        Ok(match op {
            ReadOp::Put { partition, sort, body } => {
                let mut item = key(doc_pk(consumer, &partition), &sort);
                item.insert(KIND.into(), items::s(KIND_DOC));
                let json = serde_json::to_string(&body)
                    .map_err(|e| StoreError::Failed(format!("encoding document ({partition}, {sort}): {e}")))?;
                item.insert(BODY.into(), items::s(json));
                // A document that says when it may go (a top-level integer
                // `expires_at`, epoch seconds: the overview's counters,
                // decision 0088) carries it as the table's TTL attribute.
                if let Some(expires) = body.get(items::EXPIRES_AT).and_then(serde_json::Value::as_i64) {
                    item.insert(items::EXPIRES_AT.into(), items::n(expires));
                }
                let size = item_size(&item);
                if size > MAX_ITEM_BYTES {
                    return Err(CommitError::TooLarge(format!(
                        "document ({partition}, {sort}) is {size} bytes \
                         (at most {MAX_ITEM_BYTES} per item)"
                    )));
                }
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()
                    .map_err(build_error)?;
                (TransactWriteItem::builder().put(put).build(), size)
            }
            ReadOp::Add {
                partition,
                sort,
                counts,
                set,
            } => {
                // Counts are numbers `n#<field>` added to (`ADD`, which
                // starts an absent one at 0), set fields JSON strings
                // `s#<field>` (decision 0088); `body` reads them back.
                let doc_key = key(doc_pk(consumer, &partition), &sort);
                let mut sized = doc_key.clone();
                let mut update = Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(doc_key))
                    .expression_attribute_names("#kind", KIND)
                    .expression_attribute_values(":kind", items::s(KIND_DOC));
                sized.insert(KIND.into(), items::s(KIND_DOC));
                let mut sets = vec!["#kind = :kind".to_string()];
                let mut adds = Vec::with_capacity(counts.len());
                for (i, (field, n)) in counts.iter().enumerate() {
                    let (name, value) = (format!("#n{i}"), format!(":n{i}"));
                    adds.push(format!("{name} {value}"));
                    sized.insert(capacity::count_attribute(field), items::n(*n));
                    update = update
                        .expression_attribute_names(&name, capacity::count_attribute(field))
                        .expression_attribute_values(&value, items::n(*n));
                }
                for (i, (field, value)) in set.iter().enumerate() {
                    let (name, placeholder) = (format!("#s{i}"), format!(":s{i}"));
                    let json = items::s(value.to_string());
                    sets.push(format!("{name} = {placeholder}"));
                    sized.insert(capacity::set_attribute(field), json.clone());
                    update = update
                        .expression_attribute_names(&name, capacity::set_attribute(field))
                        .expression_attribute_values(&placeholder, json);
                }
                if let Some(expires) = set.get(items::EXPIRES_AT).and_then(serde_json::Value::as_i64) {
                    sets.push("#ttl = :ttl".into());
                    sized.insert(items::EXPIRES_AT.into(), items::n(expires));
                    update = update
                        .expression_attribute_names("#ttl", items::EXPIRES_AT)
                        .expression_attribute_values(":ttl", items::n(expires));
                }
                let mut expression = format!("SET {}", sets.join(", "));
                if !adds.is_empty() {
                    expression.push_str(&format!(" ADD {}", adds.join(", ")));
                }
                let update = update.update_expression(expression).build().map_err(build_error)?;
                (TransactWriteItem::builder().update(update).build(), item_size(&sized))
            }
            ReadOp::Delete { partition, sort } => {
                // A delete is charged by the deleted item's size, which is not
                // known here: its key is counted (at least 1 unit, as charged).
                let doc_key = key(doc_pk(consumer, &partition), &sort);
                let size = item_size(&doc_key);
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(doc_key))
                    .build()
                    .map_err(build_error)?;
                (TransactWriteItem::builder().delete(delete).build(), size)
            }
        })
    }

    /// Explains a cancellation by its reasons, one per item sent (the
    /// chunk's stream items first): the first stream item whose condition
    /// failed holds the conflict, found by reading it.
    async fn explain<'c>(&self, bound: &[StreamMove<'c>], reasons: &[CancellationReason]) -> Cancelled<'c> {
        if let Some(i) = reasons
            .iter()
            .take(bound.len())
            .position(|r| r.code() == Some(CONDITIONAL_CHECK_FAILED))
        {
            return self.explain_by_reading(&bound[i..=i]).await;
        }
        match unexplained(reasons) {
            Unexplained::Transient(described) => Cancelled::Transient(described),
            Unexplained::Store(e) => Cancelled::Store(e),
        }
    }

    /// Explains a refused write by reading the stream items again: the first
    /// consumer whose version is not the expected one is the conflict.
    async fn explain_by_reading<'c>(&self, streams: &[StreamMove<'c>]) -> Cancelled<'c> {
        for stream in streams {
            let versions = match self.stream_versions(stream.stream_id).await {
                Ok(v) => v,
                Err(e) => return Cancelled::Store(e),
            };
            for moved in &stream.moves {
                if versions.get(&moved.consumer).copied().unwrap_or(0) != moved.expected {
                    return Cancelled::Conflict(moved);
                }
            }
        }
        Cancelled::Transient("write refused, but every checkpoint is still the expected one".into())
    }

    /// Every consumer's version of `stream_id` (one consistent GetItem).
    async fn stream_versions(&self, stream_id: &str) -> Result<HashMap<String, u64>, StoreError> {
        match self.get_item(checkpoint_key(stream_id)).await? {
            Some(item) => self.versions(&item),
            None => Ok(HashMap::new()),
        }
    }

    /// Writes one idempotent document: a put with its stamp (or a delete),
    /// unless a newer version of the same stream wrote it already.
    async fn write_loose(&self, loose: &LooseWrite) -> Result<(), CommitError> {
        let size = capacity::loose_item_bytes(loose);
        self.meter.write(&[size], false);
        let names = HashMap::from([
            ("#ss".to_string(), STAMP_STREAM.to_string()),
            ("#sv".to_string(), STAMP_VERSION.to_string()),
        ]);
        let values = HashMap::from([
            (":s".to_string(), items::s(&loose.stream_id)),
            (":v".to_string(), items::n(loose.version)),
        ]);
        let overtaken = match &loose.op {
            ReadOp::Put { .. } => {
                let (TransactWriteItem { put: Some(put), .. }, _) =
                    self.doc_write(&loose.consumer, loose.op.clone())?
                else {
                    return Err(StoreError::Failed("a document put built no put".into()).into());
                };
                let mut item = put.item().clone();
                item.insert(STAMP_STREAM.into(), items::s(&loose.stream_id));
                item.insert(STAMP_VERSION.into(), items::n(loose.version));
                match self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression(NOT_OVERTAKEN)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .await
                {
                    Ok(_) => false,
                    Err(err)
                        if matches!(
                            err.as_service_error(),
                            Some(PutItemError::ConditionalCheckFailedException(_))
                        ) =>
                    {
                        true
                    }
                    Err(err) => return Err(sdk_error("PutItem", &err).into()),
                }
            }
            ReadOp::Add { .. } => {
                // `capacity::plan` moves adds into the atomic part.
                return Err(StoreError::Failed("an add is never written apart from its checkpoint".into()).into());
            }
            ReadOp::Delete { partition, sort } => {
                match self
                    .client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key(doc_pk(&loose.consumer, partition), sort)))
                    .condition_expression(NOT_OVERTAKEN)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .send()
                    .await
                {
                    Ok(_) => false,
                    Err(err)
                        if matches!(
                            err.as_service_error(),
                            Some(DeleteItemError::ConditionalCheckFailedException(_))
                        ) =>
                    {
                        true
                    }
                    Err(err) => return Err(sdk_error("DeleteItem", &err).into()),
                }
            }
        };
        if overtaken {
            tracing::debug!(table = %self.table, stream = %loose.stream_id, version = loose.version, "idempotent write overtaken by a newer version: skipped");
        }
        Ok(())
    }

    /// A stream item moving without documents: one conditional `UpdateItem`
    /// (sent again if another transaction held the item).
    async fn write_stream(&self, stream: &StreamMove<'_>) -> Result<(), CommitError> {
        let update = self.stream_update(stream)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.meter.write(&[stream.item_bytes()], false);
            let sent = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(update.key().clone()))
                .update_expression(update.update_expression())
                .set_condition_expression(update.condition_expression().map(str::to_string))
                .set_expression_attribute_names(update.expression_attribute_names().cloned())
                .set_expression_attribute_values(update.expression_attribute_values().cloned())
                .send()
                .await;
            let err = match sent {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => {
                    return match self.explain_by_reading(std::slice::from_ref(stream)).await {
                        Cancelled::Conflict(moved) => Err(conflict(moved)),
                        Cancelled::Store(e) => Err(e.into()),
                        // Refused, yet every version is the expected one now:
                        // another writer moved and the caller looks again.
                        Cancelled::Transient(_) => Err(conflict(stream.moves[0])),
                    };
                }
                Some(UpdateItemError::TransactionConflictException(_)) if attempt < TRANSACTION_CONFLICT_ATTEMPTS => {
                    tracing::debug!(table = %self.table, attempt, "checkpoint update met a transaction; again");
                    pause(&self.client, attempt).await;
                }
                _ => return Err(sdk_error("UpdateItem", &err).into()),
            }
        }
    }

    /// Writes one chunk: its idempotent documents, the checkpoints of pairs
    /// without atomic documents each alone, then the atomic part (a
    /// transaction of the other checkpoints and the documents).
    async fn write_chunk(&self, chunk: Chunk) -> Result<(), CommitError> {
        for result in futures::future::join_all(chunk.loose.iter().map(|l| self.write_loose(l))).await {
            result?;
        }
        let alone = chunk.alone();
        for result in futures::future::join_all(alone.iter().map(|s| self.write_stream(s))).await {
            result?;
        }
        let bound = chunk.bound();
        if bound.is_empty() && chunk.docs.is_empty() {
            return Ok(());
        }
        let mut writes = Vec::with_capacity(chunk.items());
        let mut sizes = Vec::with_capacity(chunk.items());
        for stream in &bound {
            let update = self.stream_update(stream)?;
            sizes.push(stream.item_bytes());
            writes.push(TransactWriteItem::builder().update(update).build());
        }
        for doc in &chunk.docs {
            let (write, size) = self.doc_write(&doc.consumer, doc.op.clone())?;
            sizes.push(size);
            writes.push(write);
        }
        let total: usize = sizes.iter().sum();
        if total > capacity::MAX_BYTES_PER_WRITE {
            return Err(CommitError::TooLarge(format!(
                "{total} bytes in one write (at most {})",
                capacity::MAX_BYTES_PER_WRITE
            )));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.meter.write(&sizes, true);
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(writes.clone()))
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
            let explained = if reasons.len() == writes.len() {
                self.explain(&bound, reasons).await
            } else {
                tracing::debug!(
                    table = %self.table,
                    reasons = reasons.len(),
                    items = writes.len(),
                    "commit cancelled without usable reasons; re-reading the checkpoints"
                );
                self.explain_by_reading(&bound).await
            };
            match explained {
                Cancelled::Conflict(moved) => return Err(conflict(moved)),
                Cancelled::Store(e) => return Err(e.into()),
                Cancelled::Transient(why) if attempt < TRANSACTION_CONFLICT_ATTEMPTS => {
                    tracing::debug!(table = %self.table, attempt, why, "commit retried");
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
}

#[async_trait]
impl ReadModelStore for DynamoReadModels {
    async fn checkpoint(&self, consumer: &str, stream_id: &str) -> Result<u64, StoreError> {
        check_consumer(consumer)?;
        Ok(self
            .stream_versions(stream_id)
            .await?
            .get(consumer)
            .copied()
            .unwrap_or(0))
    }

    async fn commit(
        &self,
        consumer: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        ops: Vec<ReadOp>,
    ) -> Result<(), CommitError> {
        self.commit_all(single_commit(consumer, stream_id, expected, new, ops))
            .await
    }

    /// The commits in chunks ([`capacity::plan`]), each one atomic write,
    /// in order; after an error the chunks before it stand.
    async fn commit_all(&self, commits: Vec<Commit>) -> Result<(), CommitError> {
        check_commit_sizes(&commits)?;
        for c in &commits {
            check_consumer(&c.consumer)?;
        }
        let chunks = capacity::plan(
            commits,
            capacity::MAX_ITEMS_PER_WRITE,
            capacity::MAX_BYTES_PER_WRITE,
            capacity::doc_item_bytes,
        )?;
        for chunk in chunks {
            self.write_chunk(chunk).await?;
        }
        Ok(())
    }

    /// `BatchGetItem`s of up to 100 stream items, strongly consistent (one
    /// item per stream, however many of its consumers are asked);
    /// unprocessed keys are asked again.
    async fn checkpoints(&self, keys: &[(String, String)]) -> Result<Vec<u64>, StoreError> {
        let mut streams: Vec<&str> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (consumer, stream) in keys {
            check_consumer(consumer)?;
            if seen.insert(stream.as_str()) {
                streams.push(stream);
            }
        }
        let wanted = streams.iter().map(|s| checkpoint_key(s)).collect();
        let mut found: HashMap<String, HashMap<String, u64>> = HashMap::new();
        for item in &batch_get(&self.client, &self.table, &self.meter, wanted).await? {
            let pk = items::get_s(item, PK).map_err(|e| self.corrupt(e))?;
            let stream = pk.strip_prefix(CHECKPOINT_PREFIX).unwrap_or(pk);
            found.insert(stream.to_string(), self.versions(item)?);
        }
        Ok(keys
            .iter()
            .map(|(consumer, stream)| found.get(stream).and_then(|v| v.get(consumer)).copied().unwrap_or(0))
            .collect())
    }

    async fn get(&self, consumer: &str, partition: &str, sort: &str) -> Result<Option<serde_json::Value>, StoreError> {
        check_consumer(consumer)?;
        match self.get_item(key(doc_pk(consumer, partition), sort)).await? {
            Some(item) => self.body(&item).map(Some),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        consumer: &str,
        partition: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        check_consumer(consumer)?;
        let mut docs = Vec::new();
        if limit == 0 {
            return Ok(docs);
        }
        // A key condition holds one condition on the sort key, and a filter
        // may not use key attributes at all: query from where the listing
        // starts (`sk > after`, or `begins_with` the prefix) and stop at the
        // first key it does not list (past the prefix's contiguous run).
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", items::s(doc_pk(consumer, partition)));
        query = match ListStart::of(prefix, after) {
            ListStart::After(after) => query
                .key_condition_expression("#pk = :pk AND #sk > :after")
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":after", items::s(after)),
            ListStart::Prefix("") => query.key_condition_expression("#pk = :pk"),
            ListStart::Prefix(prefix) => query
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":prefix", items::s(prefix)),
        };
        let mut start: Option<Item> = None;
        loop {
            let remaining = limit - docs.len();
            let out = query
                .clone()
                .set_limit(i32::try_from(remaining).ok())
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| sdk_error("Query", &e))?;
            self.meter
                .query(&out.items().iter().map(item_size).collect::<Vec<_>>(), true);
            for item in out.items() {
                let sort = items::get_s(item, SK).map_err(|e| self.corrupt(e))?;
                if !listed(sort, prefix, after) {
                    return Ok(docs);
                }
                docs.push((sort.to_string(), self.body(item)?));
                if docs.len() == limit {
                    return Ok(docs);
                }
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(docs),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_are_metered_at_their_real_size() {
        let store = DynamoReadModels::new(
            Client::from_conf(
                aws_sdk_dynamodb::Config::builder()
                    .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                    .build(),
            ),
            "t",
        );
        let op = ReadOp::Put {
            partition: "customer-1".into(),
            sort: "entry#0000000007".into(),
            body: json!({"type": "CustomerRegistered", "text": "grüße", "n": [1, 2.5]}),
        };
        let (_, size) = store.doc_write("timeline", op.clone()).expect("doc");
        assert_eq!(size, capacity::doc_item_bytes("timeline", &op));
        let delete = ReadOp::Delete {
            partition: "customer-1".into(),
            sort: "profile".into(),
        };
        let (_, size) = store.doc_write("timeline", delete.clone()).expect("doc");
        assert_eq!(size, capacity::doc_item_bytes("timeline", &delete));
        // A body's `expires_at` becomes the table's TTL attribute (decision 0088).
        let expiring = ReadOp::Put {
            partition: "events#2026-12-07T10:00".into(),
            sort: "e1".into(),
            body: json!({"type": "PageViewed", "expires_at": 1_765_108_800}),
        };
        let (write, _) = store.doc_write("ops-counters", expiring).expect("doc");
        let put = write.put().expect("a put");
        assert_eq!(put.item().get(items::EXPIRES_AT), Some(&items::n(1_765_108_800)));
        let (write, _) = store.doc_write("timeline", op.clone()).expect("doc");
        assert_eq!(write.put().expect("a put").item().get(items::EXPIRES_AT), None);
        // An add: an update of its counts, set fields and time to live.
        let add = crm_core::read_model_contract::add(
            "events#2026-12-07",
            "10#3",
            &[("07", 2), ("08", 11)],
            json!({"expires_at": 1_765_108_800, "label": "x"}),
        );
        let (write, size) = store.doc_write("ops-counters", add.clone()).expect("add");
        assert_eq!(size, capacity::doc_item_bytes("ops-counters", &add));
        let update = write.update().expect("an update");
        assert!(update.update_expression().contains(" ADD "), "{update:?}");
        assert_eq!(
            update.expression_attribute_values().and_then(|v| v.get(":ttl")),
            Some(&items::n(1_765_108_800))
        );
        // The checkpoint item as the update leaves it on a new stream.
        let moved = CheckpointMove {
            consumer: "timeline".into(),
            stream_id: "customer-1".into(),
            expected: 9,
            new: 12,
            with_docs: false,
        };
        let stream = StreamMove {
            stream_id: "customer-1",
            moves: vec![&moved],
        };
        let update = store.stream_update(&stream).expect("checkpoint");
        let mut item = update.key().clone();
        item.insert(KIND.into(), items::s(KIND_CHECKPOINT));
        item.insert(capacity::checkpoint_attribute("timeline"), items::n(12));
        assert_eq!(item_size(&item), stream.item_bytes());
        assert_eq!(
            item_size(&item),
            capacity::checkpoint_item_bytes("timeline", "customer-1", 12)
        );
    }

    /// On moto (`AWS_ENDPOINT_URL`, like the tests in `tests/`): consumers
    /// of one stream share its checkpoint item, a page moving three of them
    /// writes it once, and clearing one consumer leaves the others' versions.
    #[tokio::test]
    async fn consumers_share_a_stream_item_and_clearing_one_leaves_the_others() {
        let client = crate::testing::dynamodb_client().await;
        let table = format!("read-models-unit-{}", uuid::Uuid::now_v7().simple());
        super::super::create_read_models_table(&client, &table)
            .await
            .expect("table");
        let store = DynamoReadModels::new(client, table);
        let stream = format!("customer-{}", uuid::Uuid::now_v7().simple());
        let doc = |n: i64| ReadOp::Put {
            partition: "p".into(),
            sort: format!("d{n}"),
            body: json!(n),
        };
        let commit = |consumer: &str, expected, new, ops| Commit {
            consumer: consumer.into(),
            stream_id: stream.clone(),
            expected,
            new,
            ops,
            idempotent: Vec::new(),
        };
        let before = store.capacity();
        store
            .commit_all(vec![
                commit("alpha", 0, 2, vec![doc(1)]),
                commit("beta", 0, 2, vec![doc(2)]),
                commit("gamma", 0, 3, Vec::new()),
            ])
            .await
            .expect("page");
        let spent = store.capacity();
        // One transaction: the stream item and two documents, 2 units each.
        assert_eq!(spent.write_units - before.write_units, 6.0);
        assert_eq!(spent.write_requests - before.write_requests, 1);
        let keys = ["alpha", "beta", "gamma", "delta"].map(|c| (c.to_string(), stream.clone()));
        assert_eq!(store.checkpoints(&keys).await.expect("checkpoints"), [2, 2, 3, 0]);
        assert_eq!(store.capacity().read_units - spent.read_units, 1.0, "one item read");
        // A stale expectation of one consumer refuses the write, names it.
        let stale = store
            .commit_all(vec![
                commit("alpha", 2, 4, Vec::new()),
                commit("beta", 1, 4, Vec::new()),
            ])
            .await;
        assert!(
            matches!(&stale, Err(CommitError::Conflict { consumer, expected: 1, .. }) if consumer == "beta"),
            "{stale:?}"
        );
        assert_eq!(store.checkpoint("alpha", &stream).await.expect("alpha"), 2);
        // Clearing beta: its document and its version go, alpha's stay.
        assert_eq!(store.clear_consumer("beta").await.expect("clear"), 2);
        assert_eq!(store.checkpoint("beta", &stream).await.expect("beta"), 0);
        assert_eq!(store.checkpoint("alpha", &stream).await.expect("alpha"), 2);
        assert_eq!(store.checkpoint("gamma", &stream).await.expect("gamma"), 3);
        assert_eq!(store.get("beta", "p", "d2").await.expect("get"), None);
        assert_eq!(store.get("alpha", "p", "d1").await.expect("get"), Some(json!(1)));
        // Beta starts again from 0 without disturbing the others.
        store
            .commit("beta", &stream, 0, 5, vec![doc(5)])
            .await
            .expect("beta again");
        assert_eq!(store.checkpoints(&keys).await.expect("checkpoints"), [2, 5, 3, 0]);
    }

    #[test]
    fn ambiguous_consumer_names_are_refused() {
        for bad in ["", "checkpoint", "a#b", "#"] {
            assert!(check_consumer(bad).is_err(), "{bad:?}");
        }
        for good in ["timeline", "c360", "checkpoints", "check"] {
            assert!(check_consumer(good).is_ok(), "{good:?}");
        }
    }
}
