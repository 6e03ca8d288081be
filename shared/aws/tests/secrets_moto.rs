//! The secret reader against moto's Secrets Manager, through the real SDK
//! (decision 0047): a value is read once per instance, a missing secret is an
//! error naming the setting and the secret, a blank value is no value.

use crm_aws::secrets::{SecretError, SecretReader, SecretSetting};
use crm_aws::testing::moto_config;

async fn client() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&moto_config().await)
}

/// A new secret holding `value`, named `{prefix}-<uuid>`; its ARN.
async fn fresh_secret(client: &aws_sdk_secretsmanager::Client, prefix: &str, value: &str) -> String {
    let name = format!("{prefix}-{}", uuid::Uuid::now_v7().simple());
    let created = client
        .create_secret()
        .name(&name)
        .secret_string(value)
        .send()
        .await
        .expect("create the secret on moto");
    created.arn().expect("moto answers the ARN").to_string()
}

fn setting(setting: &'static str, secret_id: &str) -> SecretSetting {
    SecretSetting {
        setting,
        secret_id: secret_id.to_string(),
    }
}

#[tokio::test]
async fn secrets_are_read_by_arn_and_by_name_and_kept_for_the_instance() {
    let client = client().await;
    let arn = fresh_secret(&client, "crm-test-unsubscribe", "first-value-0123456789").await;
    let reader = SecretReader::new(client.clone());
    let unsubscribe = setting("UNSUBSCRIBE_SECRET_ARN", &arn);
    assert_eq!(
        reader.read(&unsubscribe).await.unwrap().expose(),
        "first-value-0123456789"
    );

    // Rotated in Secrets Manager: this instance keeps the value it read at cold start ...
    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string("second-value-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(
        reader.read(&unsubscribe).await.unwrap().expose(),
        "first-value-0123456789"
    );
    // ... and a new instance (a cold start) reads the new one.
    let restarted = SecretReader::new(client.clone());
    assert_eq!(
        restarted.read(&unsubscribe).await.unwrap().expose(),
        "second-value-0123456789"
    );

    // By name too (GetSecretValue takes either).
    let name = client
        .describe_secret()
        .secret_id(&arn)
        .send()
        .await
        .unwrap()
        .name()
        .unwrap()
        .to_string();
    let by_name = setting("IDENTIFIER_HASH_SECRET_ARN", &name);
    assert_eq!(
        SecretReader::new(client).read(&by_name).await.unwrap().expose(),
        "second-value-0123456789"
    );
}

#[tokio::test]
async fn secrets_missing_are_an_error_naming_the_setting_and_the_secret() {
    let missing = format!(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:crm-test-missing-{}",
        uuid::Uuid::now_v7().simple()
    );
    let reader = SecretReader::new(client().await);
    let error = reader
        .read(&setting("INGEST_WRITE_KEYS_SECRET_ARN", &missing))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SecretError::NotFound { setting: "INGEST_WRITE_KEYS_SECRET_ARN", secret_id, .. } if *secret_id == missing),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("INGEST_WRITE_KEYS_SECRET_ARN"), "{message}");
    assert!(message.contains(&missing), "{message}");
}

#[tokio::test]
async fn secrets_without_text_are_refused() {
    let client = client().await;
    let name = format!("crm-test-binary-{}", uuid::Uuid::now_v7().simple());
    client
        .create_secret()
        .name(&name)
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(vec![1u8, 2, 3]))
        .send()
        .await
        .unwrap();
    let error = SecretReader::new(client)
        .read(&setting("UNSUBSCRIBE_SECRET_ARN", &name))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        SecretError::NoText {
            setting: "UNSUBSCRIBE_SECRET_ARN",
            secret_id: name
        }
    );
}
