//! Secrets at runtime (decision 0047): the values a function needs that must
//! never sit in its environment (the unsubscribe links' HMAC key, the
//! identifier-hash secret, the ingestion write keys) are read from Secrets
//! Manager with `GetSecretValue` at cold start, before the function takes its
//! first event. The environment holds only each secret's ARN, in a setting
//! named `<WHAT>_SECRET_ARN` ([`SecretSetting`]).
//!
//! A [`SecretReader`] reads each secret at most once per instance (execution
//! environment) and keeps its value in memory for the instance's life: a
//! rotated value reaches an instance only when it starts again (a new cold
//! start, e.g. after a deployment or `update-function-configuration`).
//! The values never show in a `Debug` print or a log line; the log says
//! which setting and which secret were read.

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use std::collections::HashMap;
use std::sync::Mutex;

use crate::lambda::{required, ConfigError};

/// A secret a function's settings name: the setting that holds its id (for
/// example `UNSUBSCRIBE_SECRET_ARN`) and that id (an ARN, or a name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSetting {
    /// The environment variable that names the secret.
    pub setting: &'static str,
    /// The secret's ARN (or name), as `GetSecretValue` takes it.
    pub secret_id: String,
}

impl SecretSetting {
    /// The required setting `setting` from `lookup` (the environment on
    /// Lambda): a missing or blank one is a [`ConfigError`] naming it.
    pub fn required(lookup: &impl Fn(&str) -> Option<String>, setting: &'static str) -> Result<Self, ConfigError> {
        Ok(SecretSetting {
            setting,
            secret_id: required(lookup, setting)?.trim().to_string(),
        })
    }
}

/// A secret's value, as Secrets Manager holds it (its `SecretString`): a
/// `Debug` print shows only its length.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// A value the caller already holds (tests, the local runtime).
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue({} chars)", self.0.chars().count())
    }
}

/// Why a secret cannot be read. Each names the setting and the secret, so a
/// function that fails to start says which one it could not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Secrets Manager has no such secret, or it has no current value
    /// (`ResourceNotFoundException`).
    #[error("the secret {secret_id} named by {setting} is not in Secrets Manager, or has no current value: {message}")]
    NotFound {
        setting: &'static str,
        secret_id: String,
        message: String,
    },
    /// The secret holds a binary value or a blank string, not text.
    #[error("the secret {secret_id} named by {setting} holds no text value (SecretString)")]
    NoText { setting: &'static str, secret_id: String },
    /// Any other failure (access denied, throttled, unreachable).
    #[error("the secret {secret_id} named by {setting} cannot be read: {message}")]
    Unreadable {
        setting: &'static str,
        secret_id: String,
        message: String,
    },
}

/// Reads secrets with `GetSecretValue` (their `AWSCURRENT` version), each at
/// most once: the value is kept in this instance for as long as it lives.
/// One per function process, made at cold start.
pub struct SecretReader {
    client: aws_sdk_secretsmanager::Client,
    read: Mutex<HashMap<String, SecretValue>>,
}

impl SecretReader {
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        SecretReader {
            client,
            read: Mutex::new(HashMap::new()),
        }
    }

    /// The reader over a Secrets Manager client of `config`.
    pub fn from_config(config: &aws_config::SdkConfig) -> Self {
        SecretReader::new(aws_sdk_secretsmanager::Client::new(config))
    }

    /// The value of `secret`: from this instance when it was read before,
    /// else from Secrets Manager (one `GetSecretValue`), then kept.
    pub async fn read(&self, secret: &SecretSetting) -> Result<SecretValue, SecretError> {
        if let Some(value) = self.kept(&secret.secret_id) {
            return Ok(value);
        }
        let out = self
            .client
            .get_secret_value()
            .secret_id(&secret.secret_id)
            .send()
            .await
            .map_err(|e| read_error(secret, e))?;
        let value = out
            .secret_string()
            .filter(|v| !v.trim().is_empty())
            .map(SecretValue::new)
            .ok_or_else(|| SecretError::NoText {
                setting: secret.setting,
                secret_id: secret.secret_id.clone(),
            })?;
        tracing::info!(
            setting = secret.setting,
            secret = %secret.secret_id,
            version = out.version_id().unwrap_or_default(),
            "secret read from Secrets Manager"
        );
        if let Ok(mut read) = self.read.lock() {
            read.insert(secret.secret_id.clone(), value.clone());
        }
        Ok(value)
    }

    fn kept(&self, secret_id: &str) -> Option<SecretValue> {
        self.read.lock().ok().and_then(|read| read.get(secret_id).cloned())
    }
}

fn read_error<R: std::fmt::Debug>(secret: &SecretSetting, e: SdkError<GetSecretValueError, R>) -> SecretError {
    let (setting, secret_id, message) = (
        secret.setting,
        secret.secret_id.clone(),
        DisplayErrorContext(&e).to_string(),
    );
    match e.as_service_error() {
        Some(service)
            if service.is_resource_not_found_exception() || service.code() == Some("ResourceNotFoundException") =>
        {
            SecretError::NotFound {
                setting,
                secret_id,
                message,
            }
        }
        _ => SecretError::Unreadable {
            setting,
            secret_id,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_setting_is_required_and_named() {
        let lookup = |name: &str| (name == "UNSUBSCRIBE_SECRET_ARN").then(|| " arn:aws:secretsmanager:x ".to_string());
        assert_eq!(
            SecretSetting::required(&lookup, "UNSUBSCRIBE_SECRET_ARN"),
            Ok(SecretSetting {
                setting: "UNSUBSCRIBE_SECRET_ARN",
                secret_id: "arn:aws:secretsmanager:x".into()
            })
        );
        assert_eq!(
            SecretSetting::required(&lookup, "IDENTIFIER_HASH_SECRET_ARN"),
            Err(ConfigError("IDENTIFIER_HASH_SECRET_ARN"))
        );
        let blank = |_: &str| Some("  ".to_string());
        assert_eq!(
            SecretSetting::required(&blank, "IDENTIFIER_HASH_SECRET_ARN"),
            Err(ConfigError("IDENTIFIER_HASH_SECRET_ARN"))
        );
    }

    #[test]
    fn a_value_never_shows_in_debug() {
        let value = SecretValue::new("hunter2-hunter2");
        assert_eq!(format!("{value:?}"), "SecretValue(15 chars)");
        assert_eq!(value.expose(), "hunter2-hunter2");
    }
}
