//! `crm_core::ports::ReadModelStore` over one DynamoDB table, `read-models`
//! (ARCHITECTURE.md §6), created by [`super::create_read_models_table`].
//!
//! Every item has `pk` (S), `sk` (S) and a `kind`:
//!
//! | kind         | pk                       | sk        | other attributes |
//! | ------------ | ------------------------ | --------- | ---------------- |
//! | `doc`        | `<consumer>#<partition>` | sort key  | body (JSON string) |
//! | `checkpoint` | `checkpoint#<consumer>`  | stream id | version (N) |
//!
//! A consumer name must be non-empty, must not contain `#` and must not be
//! `checkpoint`, so that no document key can be mistaken for another
//! consumer's document or for a checkpoint.
//!
//! A page's commits ([`ReadModelStore::commit_all`]) are cut by
//! [`crm_core::consumer::capacity::plan`] into chunks of consecutive commits
//! within `TransactWriteItems`' 100 items and 4 MB, each checkpoint and each
//! document written once per chunk as the chunk leaves it (DynamoDB refuses
//! a transaction touching one item twice anyway). A chunk of several items is
//! one `TransactWriteItems`: every checkpoint put conditioned on its expected
//! version, an unconditional put or delete per document. A chunk of one item
//! (a checkpoint moving without documents) is one conditional `PutItem`:
//! atomic on its own, half the write units of a transaction (decision 0031).
//! Chunks are written in order; after a failure the chunks before stand, which
//! the checkpoints make safe to deliver again.
//!
//! Every request is metered ([`DynamoReadModels::capacity`]) by DynamoDB's
//! rounding rules from the sizes of the items sent and read
//! ([`crm_core::consumer::capacity`]), not from what the service reports.

use super::event_store::sdk_error;
use super::items::{self, CodecError, Item, BODY, KIND, PK, SK, VERSION};
use super::transact::{
    build_error, pause, unexplained, Unexplained, CONDITIONAL_CHECK_FAILED, TRANSACTION_CONFLICT_ATTEMPTS,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, Delete, KeysAndAttributes, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use crm_core::consumer::capacity::{self, Capacity, CapacityMeter, CheckpointMove, Chunk, LooseWrite};
use crm_core::ports::{check_commit_size, Commit, CommitError, ReadModelStore, ReadOp, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

/// The table's name in the SAM template.
pub const READ_MODELS_TABLE: &str = "read-models";

pub const KIND_DOC: &str = "doc";
pub const KIND_CHECKPOINT: &str = "checkpoint";

/// What starts the partition key of a checkpoint item.
const CHECKPOINT_PREFIX: &str = "checkpoint#";

/// DynamoDB's limit on one item (names and values, in UTF-8 bytes).
const MAX_ITEM_BYTES: usize = 400 * 1024;
/// How many keys one `BatchGetItem` may ask for.
const MAX_KEYS_PER_BATCH_GET: usize = 100;

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

/// The stamp of an idempotent document: the stream and version that wrote it.
const STAMP_STREAM: &str = "stamp_stream";
const STAMP_VERSION: &str = "stamp_version";
/// Lets an idempotent write through unless a newer version of the same stream wrote the item.
const NOT_OVERTAKEN: &str = "attribute_not_exists(#ss) OR #ss <> :s OR #sv <= :v";

/// The partition key of a consumer's documents in `partition`.
fn doc_pk(consumer: &str, partition: &str) -> String {
    format!("{consumer}#{partition}")
}

/// The partition key of a consumer's checkpoints.
fn checkpoint_pk(consumer: &str) -> String {
    format!("{CHECKPOINT_PREFIX}{consumer}")
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

/// An item's size as DynamoDB counts it (attribute names and string or
/// number values, in bytes; numbers slightly over-counted), as
/// [`capacity::doc_item_bytes`] and [`capacity::checkpoint_item_bytes`]
/// compute it for the items this adapter writes.
fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(v) | AttributeValue::N(v) => v.len(),
                    _ => 0,
                }
        })
        .sum()
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
        let body = items::get_s(item, BODY).map_err(|e| self.corrupt(e))?;
        serde_json::from_str(body).map_err(|e| {
            self.corrupt(CodecError::Invalid {
                name: BODY,
                reason: e.to_string(),
            })
        })
    }

    /// The put of a checkpoint item moving from `expected` to `new`,
    /// conditioned on `expected`.
    fn checkpoint_put(&self, moved: &CheckpointMove) -> Result<Put, StoreError> {
        let mut item = key(checkpoint_pk(&moved.consumer), &moved.stream_id);
        item.insert(KIND.into(), items::s(KIND_CHECKPOINT));
        item.insert(VERSION.into(), items::n(moved.new));
        // A checkpoint stored as 0 counts as absent, as `checkpoint` reads it.
        let condition = if moved.expected == 0 {
            "attribute_not_exists(#pk) OR #v = :expected"
        } else {
            "#v = :expected"
        };
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":expected", items::n(moved.expected));
        if moved.expected == 0 {
            put = put.expression_attribute_names("#pk", PK);
        }
        put.build().map_err(build_error)
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
    /// chunk's checkpoints first): the first checkpoint whose condition
    /// failed is the conflict.
    fn explain<'c>(bound: &[&'c CheckpointMove], reasons: &[CancellationReason]) -> Cancelled<'c> {
        if let Some(i) = reasons
            .iter()
            .take(bound.len())
            .position(|r| r.code() == Some(CONDITIONAL_CHECK_FAILED))
        {
            return Cancelled::Conflict(bound[i]);
        }
        match unexplained(reasons) {
            Unexplained::Transient(described) => Cancelled::Transient(described),
            Unexplained::Store(e) => Cancelled::Store(e),
        }
    }

    /// Explains a cancellation without usable reasons by reading the
    /// chunk's checkpoints again.
    async fn explain_by_reading<'c>(&self, bound: &[&'c CheckpointMove]) -> Cancelled<'c> {
        for moved in bound.iter().copied() {
            match self.checkpoint(&moved.consumer, &moved.stream_id).await {
                Ok(current) if current != moved.expected => return Cancelled::Conflict(moved),
                Ok(_) => {}
                Err(e) => return Cancelled::Store(e),
            }
        }
        Cancelled::Transient("transaction cancelled, but every checkpoint is still the expected one".into())
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

    /// A checkpoint moving alone: one conditional `PutItem`.
    async fn write_checkpoint(&self, moved: &CheckpointMove) -> Result<(), CommitError> {
        let put = self.checkpoint_put(moved)?;
        self.meter.write(&[item_size(put.item())], false);
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(put.item().clone()))
            .set_condition_expression(put.condition_expression().map(str::to_string))
            .set_expression_attribute_names(put.expression_attribute_names().cloned())
            .set_expression_attribute_values(put.expression_attribute_values().cloned())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => Err(CommitError::Conflict {
                    consumer: moved.consumer.clone(),
                    stream_id: moved.stream_id.clone(),
                    expected: moved.expected,
                }),
                _ => Err(sdk_error("PutItem", &err).into()),
            },
        }
    }

    /// Writes one chunk: its idempotent documents, the checkpoints of pairs
    /// without atomic documents each alone, then the atomic part (a
    /// transaction of the other checkpoints and the documents).
    async fn write_chunk(&self, chunk: Chunk) -> Result<(), CommitError> {
        for result in futures::future::join_all(chunk.loose.iter().map(|l| self.write_loose(l))).await {
            result?;
        }
        for result in futures::future::join_all(chunk.alone().map(|m| self.write_checkpoint(m))).await {
            result?;
        }
        let conflict = |moved: &CheckpointMove| CommitError::Conflict {
            consumer: moved.consumer.clone(),
            stream_id: moved.stream_id.clone(),
            expected: moved.expected,
        };
        let bound: Vec<&CheckpointMove> = chunk.bound().collect();
        if bound.is_empty() && chunk.docs.is_empty() {
            return Ok(());
        }
        let mut writes = Vec::with_capacity(chunk.items());
        let mut sizes = Vec::with_capacity(chunk.items());
        for moved in &bound {
            let put = self.checkpoint_put(moved)?;
            sizes.push(item_size(put.item()));
            writes.push(TransactWriteItem::builder().put(put).build());
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
                Self::explain(&bound, reasons)
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
        let Some(item) = self.get_item(key(checkpoint_pk(consumer), stream_id)).await? else {
            return Ok(0);
        };
        match items::kind_of(&item) {
            Some(KIND_CHECKPOINT) => items::get_n(&item, VERSION).map_err(|e| self.corrupt(e)),
            Some(other) => Err(self.corrupt(CodecError::WrongKind {
                expected: KIND_CHECKPOINT,
                found: other.to_string(),
            })),
            None => Err(self.corrupt(CodecError::Missing(KIND))),
        }
    }

    async fn commit(
        &self,
        consumer: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
        ops: Vec<ReadOp>,
    ) -> Result<(), CommitError> {
        self.commit_all(vec![Commit {
            consumer: consumer.to_string(),
            stream_id: stream_id.to_string(),
            expected,
            new,
            ops,
            idempotent: Vec::new(),
        }])
        .await
    }

    /// The commits in chunks ([`capacity::plan`]), each one atomic write,
    /// in order; after an error the chunks before it stand.
    async fn commit_all(&self, commits: Vec<Commit>) -> Result<(), CommitError> {
        for c in &commits {
            check_commit_size(&c.all_ops().cloned().collect::<Vec<_>>())?;
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

    /// `BatchGetItem`s of up to 100 keys, strongly consistent; unprocessed
    /// keys are asked again.
    async fn checkpoints(&self, keys: &[(String, String)]) -> Result<Vec<u64>, StoreError> {
        let mut found: HashMap<(String, String), u64> = HashMap::new();
        for batch in keys.chunks(MAX_KEYS_PER_BATCH_GET) {
            let mut wanted: Vec<Item> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (consumer, stream) in batch {
                check_consumer(consumer)?;
                if seen.insert((consumer, stream)) {
                    wanted.push(key(checkpoint_pk(consumer), stream));
                }
            }
            let mut attempt = 0;
            while !wanted.is_empty() {
                attempt += 1;
                let asked = wanted.len();
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(std::mem::take(&mut wanted)))
                    .consistent_read(true)
                    .build()
                    .map_err(build_error)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| sdk_error("BatchGetItem", &e))?;
                let items = out
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                let mut sizes: Vec<usize> = items.iter().map(item_size).collect();
                // Keys not found (or left unprocessed) are counted at the minimum each.
                sizes.resize(sizes.len().max(asked), 0);
                self.meter.get(&sizes);
                for item in &items {
                    let pk = items::get_s(item, PK).map_err(|e| self.corrupt(e))?;
                    let stream = items::get_s(item, SK).map_err(|e| self.corrupt(e))?;
                    let consumer = pk.strip_prefix(CHECKPOINT_PREFIX).unwrap_or(pk);
                    let version = items::get_n(item, VERSION).map_err(|e| self.corrupt(e))?;
                    found.insert((consumer.to_string(), stream.to_string()), version);
                }
                if let Some(left) = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .map(|k| k.keys().to_vec())
                {
                    if attempt >= TRANSACTION_CONFLICT_ATTEMPTS {
                        return Err(StoreError::Unavailable(format!(
                            "BatchGetItem left {} keys unprocessed {attempt} times",
                            left.len()
                        )));
                    }
                    wanted = left;
                    pause(&self.client, attempt).await;
                }
            }
        }
        Ok(keys.iter().map(|k| found.get(k).copied().unwrap_or(0)).collect())
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
        // may not use key attributes at all. The sort keys starting with
        // `prefix` are one contiguous range from `prefix` on, so: after a
        // point at or past `prefix`, query `sk > after` and stop at the first
        // key without the prefix; otherwise (no `after`, or one before the
        // range) `begins_with` alone is exact.
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", items::s(doc_pk(consumer, partition)));
        query = match after {
            // Sort keys are never empty, so `after = ""` bounds nothing.
            Some(after) if !after.is_empty() && after >= prefix => query
                .key_condition_expression("#pk = :pk AND #sk > :after")
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":after", items::s(after)),
            _ if prefix.is_empty() => query.key_condition_expression("#pk = :pk"),
            _ => query
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
                if !sort.starts_with(prefix) {
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
        let moved = CheckpointMove {
            consumer: "timeline".into(),
            stream_id: "customer-1".into(),
            expected: 9,
            new: 12,
            with_docs: false,
        };
        let put = store.checkpoint_put(&moved).expect("checkpoint");
        assert_eq!(
            item_size(put.item()),
            capacity::checkpoint_item_bytes("timeline", "customer-1", 12)
        );
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
