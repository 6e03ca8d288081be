//! Creating the `events` and `read-models` tables exactly as the SAM template
//! declares them: for tests against moto and for a future admin CLI.

use super::items::{EXPIRES_AT, PK, SK};
use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, StreamSpecification,
    StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use std::time::Duration;

/// How long the `create_*_table` functions wait for the table to become ACTIVE.
const ACTIVE_WAIT: Duration = Duration::from_secs(120);

/// The table could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("table {0} already exists")]
    AlreadyExists(String),
    #[error("invalid table definition: {0}")]
    Definition(String),
    #[error("creating table {table}: {message}")]
    Create { table: String, message: String },
    #[error("waiting for table {table} to become active: {message}")]
    NotActive { table: String, message: String },
    #[error("enabling TTL on {table}: {message}")]
    TimeToLive { table: String, message: String },
}

fn definition(e: aws_sdk_dynamodb::error::BuildError) -> TableError {
    TableError::Definition(e.to_string())
}

/// Creates the events table: `pk` (S) HASH, `sk` (N) RANGE, on-demand
/// billing, a NEW_IMAGE stream (the outbox), and TTL on `expires_at` (command
/// receipts expire). Waits until the table is ACTIVE before enabling TTL.
pub async fn create_events_table(client: &Client, table: &str) -> Result<(), TableError> {
    let stream = StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewImage)
        .build()
        .map_err(definition)?;
    create_table(client, table, ScalarAttributeType::N, Some(stream)).await?;
    enable_ttl_on_expires_at(client, table).await
}

/// Creates the read-models table (see [`super::DynamoReadModels`]): `pk` (S)
/// HASH, `sk` (S) RANGE, on-demand billing, no stream, and TTL on
/// `expires_at` (the refused-messages log's items expire, decision 0053;
/// documents carry no `expires_at`). Waits until the table is ACTIVE before
/// enabling TTL.
pub async fn create_read_models_table(client: &Client, table: &str) -> Result<(), TableError> {
    create_table(client, table, ScalarAttributeType::S, None).await?;
    enable_ttl_on_expires_at(client, table).await
}

/// Enables TTL on the `expires_at` attribute (epoch seconds), as the SAM
/// template's `TimeToLiveSpecification` does for both tables.
async fn enable_ttl_on_expires_at(client: &Client, table: &str) -> Result<(), TableError> {
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(EXPIRES_AT)
                .build()
                .map_err(definition)?,
        )
        .send()
        .await
        .map_err(|e| TableError::TimeToLive {
            table: table.to_string(),
            message: DisplayErrorContext(&e).to_string(),
        })?;
    Ok(())
}

/// Creates a table keyed by `pk` (S) HASH and `sk` (`sk_type`) RANGE with
/// on-demand billing and the given stream, and waits until it is ACTIVE.
async fn create_table(
    client: &Client,
    table: &str,
    sk_type: ScalarAttributeType,
    stream: Option<StreamSpecification>,
) -> Result<(), TableError> {
    let created = client
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(PK)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(definition)?,
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(SK)
                .attribute_type(sk_type)
                .build()
                .map_err(definition)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(PK)
                .key_type(KeyType::Hash)
                .build()
                .map_err(definition)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(SK)
                .key_type(KeyType::Range)
                .build()
                .map_err(definition)?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .set_stream_specification(stream)
        .send()
        .await;
    if let Err(e) = created {
        if let Some(CreateTableError::ResourceInUseException(_)) = e.as_service_error() {
            return Err(TableError::AlreadyExists(table.to_string()));
        }
        return Err(TableError::Create {
            table: table.to_string(),
            message: DisplayErrorContext(&e).to_string(),
        });
    }

    client
        .wait_until_table_exists()
        .table_name(table)
        .wait(ACTIVE_WAIT)
        .await
        .map_err(|e| TableError::NotActive {
            table: table.to_string(),
            message: DisplayErrorContext(&e).to_string(),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::TimeToLiveStatus;

    /// On moto (`AWS_ENDPOINT_URL`, like the tests in `tests/`): both tables
    /// expire items on `expires_at`, as template.yaml declares them.
    #[tokio::test]
    async fn both_tables_expire_items_on_expires_at_as_the_template_does() {
        let client = crate::testing::dynamodb_client().await;
        let suffix = uuid::Uuid::now_v7().simple();
        let events = format!("events-ttl-{suffix}");
        let read_models = format!("read-models-ttl-{suffix}");
        create_events_table(&client, &events).await.expect("events table");
        create_read_models_table(&client, &read_models)
            .await
            .expect("read-models table");
        for table in [&events, &read_models] {
            let described = client
                .describe_time_to_live()
                .table_name(table)
                .send()
                .await
                .expect("describe ttl");
            let ttl = described.time_to_live_description().expect("ttl description");
            assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled), "{table}");
            assert_eq!(ttl.attribute_name(), Some(EXPIRES_AT), "{table}");
        }
    }
}
