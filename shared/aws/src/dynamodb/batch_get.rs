//! `BatchGetItem` as the event store and the read models use it: requests
//! of at most 100 keys, strongly consistent, metered, and the keys DynamoDB
//! leaves unprocessed asked again.

use super::event_store::sdk_error;
use super::items::{item_size, Item};
use super::transact::{build_error, pause, TRANSACTION_CONFLICT_ATTEMPTS};
use aws_sdk_dynamodb::types::KeysAndAttributes;
use aws_sdk_dynamodb::Client;
use crm_core::consumer::capacity::CapacityMeter;
use crm_core::ports::StoreError;

/// How many keys one `BatchGetItem` may ask for.
pub(crate) const MAX_KEYS_PER_BATCH_GET: usize = 100;

/// The items of `table` found under `keys` (in no particular order; a key
/// with no item gives nothing). Each request's read is metered, keys not
/// found or left unprocessed at the minimum each. Keys left unprocessed
/// are asked again after a pause, up to [`TRANSACTION_CONFLICT_ATTEMPTS`]
/// times a request; then the read is [`StoreError::Unavailable`].
pub(crate) async fn batch_get(
    client: &Client,
    table: &str,
    meter: &CapacityMeter,
    keys: Vec<Item>,
) -> Result<Vec<Item>, StoreError> {
    let mut found = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(MAX_KEYS_PER_BATCH_GET) {
        let mut wanted: Vec<Item> = chunk.to_vec();
        let mut attempt = 0;
        while !wanted.is_empty() {
            attempt += 1;
            let asked = wanted.len();
            let request = KeysAndAttributes::builder()
                .set_keys(Some(std::mem::take(&mut wanted)))
                .consistent_read(true)
                .build()
                .map_err(build_error)?;
            let out = client
                .batch_get_item()
                .request_items(table, request)
                .send()
                .await
                .map_err(|e| sdk_error("BatchGetItem", &e))?;
            let got = out.responses().and_then(|r| r.get(table)).cloned().unwrap_or_default();
            let mut sizes: Vec<usize> = got.iter().map(item_size).collect();
            // Keys not found (or left unprocessed) are counted at the minimum each.
            sizes.resize(sizes.len().max(asked), 0);
            meter.get(&sizes);
            found.extend(got);
            if let Some(left) = out
                .unprocessed_keys()
                .and_then(|u| u.get(table))
                .map(|k| k.keys().to_vec())
            {
                if attempt >= TRANSACTION_CONFLICT_ATTEMPTS {
                    return Err(StoreError::Unavailable(format!(
                        "BatchGetItem left {} keys unprocessed {attempt} times",
                        left.len()
                    )));
                }
                wanted = left;
                pause(client, attempt).await;
            }
        }
    }
    Ok(found)
}
