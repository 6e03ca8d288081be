//! `crm_core::ingest::refusals::RefusalLog` on the read-models table
//! (decision 0053): one item per refusal, partition
//! `refused-messages#<source>`, sort key the refusal's cursor (its time to
//! the microsecond, then its id), so a `Query` in reverse lists a source's
//! refusals newest first. `expires_at` (epoch seconds, a week after the
//! refusal) is the table's TTL attribute: DynamoDB deletes the item within
//! a few days of it, and [`RefusalLog::list`] never answers an expired one.
//! No consumer is named `refused-messages`, so no read-model document
//! (`<consumer>#<partition>`) shares these partitions; the items' `kind` is
//! `refusal`.

use crate::dynamodb::items::{self, BODY, EXPIRES_AT, KIND, PK, SK};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use crm_core::ingest::refusals::{Refusal, RefusalLog, RefusalPage, MAX_PAGE};
use crm_core::ports::StoreError;

/// What starts the partition key of a source's refusals.
pub const PARTITION_PREFIX: &str = "refused-messages#";
/// The items' `kind`.
pub const KIND_REFUSAL: &str = "refusal";

/// The log over the read-models table `table`.
#[derive(Debug, Clone)]
pub struct DynamoRefusals {
    client: Client,
    table: String,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

impl DynamoRefusals {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoRefusals {
            client,
            table: table.into(),
        }
    }

    fn partition(source: &str) -> String {
        format!("{PARTITION_PREFIX}{source}")
    }
}

#[async_trait]
impl RefusalLog for DynamoRefusals {
    async fn record(&self, refusal: &Refusal) -> Result<(), StoreError> {
        let body = serde_json::to_string(refusal).map_err(|e| StoreError::Failed(e.to_string()))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item(PK, items::s(Self::partition(&refusal.source)))
            .item(SK, items::s(refusal.cursor()))
            .item(KIND, items::s(KIND_REFUSAL))
            .item(EXPIRES_AT, items::n(refusal.expires_at.timestamp()))
            .item(BODY, items::s(body))
            .send()
            .await
            .map_err(|e| unavailable("PutItem refusal", aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
        Ok(())
    }

    async fn list(
        &self,
        source: &str,
        after: Option<&str>,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<RefusalPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let pk = Self::partition(source);
        let start = after.map(|cursor| {
            [
                (PK.to_string(), items::s(pk.clone())),
                (SK.to_string(), items::s(cursor)),
            ]
            .into_iter()
            .collect()
        });
        // Newest first: once an expired item shows, every later one is older.
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_values(":pk", items::s(pk))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit((limit + 1) as i32)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| unavailable("Query refusals", aws_sdk_dynamodb::error::DisplayErrorContext(&e)))?;
        let mut refusals = Vec::new();
        for item in out.items() {
            let expires = item
                .get(EXPIRES_AT)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            if expires <= now.timestamp() {
                break;
            }
            let body = match item.get(BODY) {
                Some(AttributeValue::S(body)) => body,
                _ => return Err(StoreError::Failed("a refusal item has no body".into())),
            };
            let refusal: Refusal = serde_json::from_str(body)
                .map_err(|e| StoreError::Failed(format!("a refusal is not readable: {e}")))?;
            refusals.push(refusal);
        }
        let more = refusals.len() > limit;
        refusals.truncate(limit);
        let next_after = if more {
            refusals.last().map(Refusal::cursor)
        } else {
            None
        };
        Ok(RefusalPage { refusals, next_after })
    }
}
