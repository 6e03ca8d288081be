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
//! A commit is one `TransactWriteItems`: the checkpoint put, conditioned on
//! the expected version, and an unconditional put or delete per document.
//! DynamoDB refuses a transaction touching one item twice, so operations on
//! the same document are collapsed first (the last one wins, as if applied in
//! order).

use super::event_store::sdk_error;
use super::items::{self, CodecError, Item, BODY, KIND, PK, SK, VERSION};
use super::transact::{
    build_error, pause, unexplained, Unexplained, CONDITIONAL_CHECK_FAILED, TRANSACTION_CONFLICT_ATTEMPTS,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, Delete, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use crm_core::ports::{check_commit_size, CommitError, ReadModelStore, ReadOp, StoreError};
use std::collections::HashMap;

/// The table's name in the SAM template.
pub const READ_MODELS_TABLE: &str = "read-models";

pub const KIND_DOC: &str = "doc";
pub const KIND_CHECKPOINT: &str = "checkpoint";

/// What starts the partition key of a checkpoint item.
const CHECKPOINT_PREFIX: &str = "checkpoint#";

/// DynamoDB's limit on one item (names and values, in UTF-8 bytes).
const MAX_ITEM_BYTES: usize = 400 * 1024;
/// DynamoDB's limit on the items of one transaction together.
const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;

/// Read models over the DynamoDB table `table`.
#[derive(Debug, Clone)]
pub struct DynamoReadModels {
    client: Client,
    table: String,
}

/// Why a commit's transaction was cancelled.
enum Cancelled {
    /// The checkpoint was not the expected one.
    Conflict,
    /// Worth sending the same transaction again.
    Transient(String),
    /// Not worth it.
    Store(StoreError),
}

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

/// Operations on the same (partition, sort) collapsed into the last one,
/// in the order each document was first touched.
fn collapse(ops: Vec<ReadOp>) -> Vec<ReadOp> {
    let mut out: Vec<ReadOp> = Vec::with_capacity(ops.len());
    let mut at: HashMap<(String, String), usize> = HashMap::new();
    for op in ops {
        let (partition, sort) = match &op {
            ReadOp::Put { partition, sort, .. } | ReadOp::Delete { partition, sort } => {
                (partition.clone(), sort.clone())
            }
        };
        match at.get(&(partition.clone(), sort.clone())) {
            Some(&i) => out[i] = op,
            None => {
                at.insert((partition, sort), out.len());
                out.push(op);
            }
        }
    }
    out
}

/// An item's size as DynamoDB counts it (attribute names and string or
/// number values, in bytes; numbers slightly over-counted).
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

    fn checkpoint_put(
        &self,
        consumer: &str,
        stream_id: &str,
        expected: u64,
        new: u64,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut item = key(checkpoint_pk(consumer), stream_id);
        item.insert(KIND.into(), items::s(KIND_CHECKPOINT));
        item.insert(VERSION.into(), items::n(new));
        // A checkpoint stored as 0 counts as absent, as `checkpoint` reads it.
        let condition = if expected == 0 {
            "attribute_not_exists(#pk) OR #v = :expected"
        } else {
            "#v = :expected"
        };
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .expression_attribute_names("#v", VERSION)
            .expression_attribute_values(":expected", items::n(expected));
        if expected == 0 {
            put = put.expression_attribute_names("#pk", PK);
        }
        Ok(TransactWriteItem::builder()
            .put(put.build().map_err(build_error)?)
            .build())
    }

    fn doc_write(&self, consumer: &str, op: ReadOp) -> Result<TransactWriteItem, CommitError> {
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
                TransactWriteItem::builder().put(put).build()
            }
            ReadOp::Delete { partition, sort } => {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(doc_pk(consumer, &partition), &sort)))
                    .build()
                    .map_err(build_error)?;
                TransactWriteItem::builder().delete(delete).build()
            }
        })
    }

    /// Explains a cancellation by its reasons, one per item sent (the
    /// checkpoint first).
    fn explain(reasons: &[CancellationReason]) -> Cancelled {
        if reasons.first().and_then(|r| r.code()) == Some(CONDITIONAL_CHECK_FAILED) {
            return Cancelled::Conflict;
        }
        match unexplained(reasons) {
            Unexplained::Transient(described) => Cancelled::Transient(described),
            Unexplained::Store(e) => Cancelled::Store(e),
        }
    }

    /// Explains a cancellation without usable reasons by reading the
    /// checkpoint again.
    async fn explain_by_reading(&self, consumer: &str, stream_id: &str, expected: u64) -> Cancelled {
        match self.checkpoint(consumer, stream_id).await {
            Ok(current) if current != expected => Cancelled::Conflict,
            Ok(_) => Cancelled::Transient("transaction cancelled, but the checkpoint is still the expected one".into()),
            Err(e) => Cancelled::Store(e),
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
        check_commit_size(&ops)?;
        check_consumer(consumer)?;
        let mut transaction = vec![self.checkpoint_put(consumer, stream_id, expected, new)?];
        for op in collapse(ops) {
            transaction.push(self.doc_write(consumer, op)?);
        }
        let total: usize = transaction
            .iter()
            .filter_map(|w| w.put())
            .map(|p| item_size(p.item()))
            .sum();
        if total > MAX_TRANSACTION_BYTES {
            return Err(CommitError::TooLarge(format!(
                "{total} bytes in one commit (at most {MAX_TRANSACTION_BYTES})"
            )));
        }

        let conflict = || CommitError::Conflict {
            consumer: consumer.to_string(),
            stream_id: stream_id.to_string(),
            expected,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(transaction.clone()))
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
            let explained = if reasons.len() == transaction.len() {
                Self::explain(reasons)
            } else {
                tracing::debug!(
                    table = %self.table,
                    reasons = reasons.len(),
                    items = transaction.len(),
                    "commit cancelled without usable reasons; re-reading the checkpoint"
                );
                self.explain_by_reading(consumer, stream_id, expected).await
            };
            match explained {
                Cancelled::Conflict => return Err(conflict()),
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

    fn put(partition: &str, sort: &str, n: i64) -> ReadOp {
        ReadOp::Put {
            partition: partition.into(),
            sort: sort.into(),
            body: json!(n),
        }
    }

    #[test]
    fn collapse_keeps_the_last_op_per_document() {
        let del = ReadOp::Delete {
            partition: "p".into(),
            sort: "a".into(),
        };
        let ops = vec![
            put("p", "a", 1),
            put("p", "b", 2),
            put("q", "a", 3),
            del.clone(),
            put("p", "b", 4),
        ];
        assert_eq!(collapse(ops), vec![del, put("p", "b", 4), put("q", "a", 3)]);
        assert_eq!(
            collapse(vec![
                ReadOp::Delete {
                    partition: "p".into(),
                    sort: "a".into(),
                },
                put("p", "a", 5)
            ]),
            vec![put("p", "a", 5)]
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
