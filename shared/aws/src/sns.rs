//! `SmsProvider` and `PushProvider` over SNS: SMS is a `Publish` to an E.164
//! phone number; push registers the device token as an endpoint of the
//! platform application (`CreatePlatformEndpoint`, idempotent for the same
//! token) and publishes to that endpoint with a per-platform JSON message.
//! `Publish` runs with one attempt (no SDK retries): it has no idempotency
//! token, and a retried request whose first answer was lost would send
//! twice. SNS reports nothing back about SMS or push, so an unknown outcome
//! stays unknown (at most once, decision 0032).

use crate::provider_error::{no_sdk_retries, provider_error};
use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sns::Client;
use crm_core::messaging::provider::{
    ProviderError, ProviderReceipt, PushMessage, PushProvider, SmsMessage, SmsProvider,
};
use serde_json::{json, Map, Value};

/// The SNS message attribute that sets the SMS type.
pub const SMS_TYPE_ATTRIBUTE: &str = "AWS.SNS.SMS.SMSType";
/// The SNS message attribute that sets the alphanumeric sender id.
pub const SENDER_ID_ATTRIBUTE: &str = "AWS.SNS.SMS.SenderID";

fn string_attribute(value: &str) -> Result<MessageAttributeValue, ProviderError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| ProviderError::Rejected(format!("SNS message attribute: {e}")))
}

fn receipt(operation: &str, message_id: Option<&str>) -> Result<ProviderReceipt, ProviderError> {
    match message_id {
        Some(id) if !id.is_empty() => Ok(ProviderReceipt {
            provider_message_id: id.to_string(),
        }),
        // It answered 200: it took the message, but we cannot name it.
        _ => Err(ProviderError::OutcomeUnknown(format!(
            "{operation} answered without a MessageId"
        ))),
    }
}

/// Sends SMS through SNS.
#[derive(Debug, Clone)]
pub struct SnsSmsProvider {
    client: Client,
    sender_id: Option<String>,
}

impl SnsSmsProvider {
    /// `sender_id`: the alphanumeric sender id where the destination country
    /// supports one (`None`: the account's default).
    pub fn new(client: Client, sender_id: Option<String>) -> Self {
        SnsSmsProvider { client, sender_id }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl SmsProvider for SnsSmsProvider {
    async fn send_sms(&self, sms: &SmsMessage) -> Result<ProviderReceipt, ProviderError> {
        let sms_type = if sms.transactional {
            "Transactional"
        } else {
            "Promotional"
        };
        let mut request = self
            .client
            .publish()
            .phone_number(&sms.to)
            .message(&sms.body)
            .message_attributes(SMS_TYPE_ATTRIBUTE, string_attribute(sms_type)?);
        if let Some(sender_id) = self.sender_id.as_deref().filter(|s| !s.is_empty()) {
            request = request.message_attributes(SENDER_ID_ATTRIBUTE, string_attribute(sender_id)?);
        }
        let output = request
            .customize()
            .config_override(aws_sdk_sns::config::Builder::default().retry_config(no_sdk_retries()))
            .send()
            .await
            .map_err(|e| provider_error("SNS Publish (SMS)", &e))?;
        receipt("SNS Publish (SMS)", output.message_id())
    }
}

/// The platform applications push goes through, one per platform of
/// [`crm_core::messaging::provider::PushDevice::platform`]. A platform
/// without an application rejects its messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushApplications {
    /// ARN of the APNS (or APNS_SANDBOX) platform application, for `apns`.
    pub apns: Option<String>,
    /// ARN of the GCM (Firebase Cloud Messaging) platform application, for `fcm`.
    pub fcm: Option<String>,
}

/// Sends push notifications through SNS mobile push.
#[derive(Debug, Clone)]
pub struct SnsPushProvider {
    client: Client,
    applications: PushApplications,
}

impl SnsPushProvider {
    pub fn new(client: Client, applications: PushApplications) -> Self {
        SnsPushProvider { client, applications }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The platform application ARN for `platform` (`apns` or `fcm`).
    pub fn application_arn(&self, platform: &str) -> Option<&str> {
        match platform {
            "apns" => self.applications.apns.as_deref(),
            "fcm" => self.applications.fcm.as_deref(),
            _ => None,
        }
    }

    /// The device's endpoint ARN: created, or the existing one for the same
    /// token (SNS answers the same ARN again). Nothing is published yet, so
    /// no failure here leaves the outcome unknown: an unknown one counts as
    /// unavailable (the delivery is retried). This call keeps the SDK's
    /// retries (it is idempotent).
    pub async fn endpoint_arn(&self, application_arn: &str, token: &str) -> Result<String, ProviderError> {
        let output = self
            .client
            .create_platform_endpoint()
            .platform_application_arn(application_arn)
            .token(token)
            .send()
            .await
            .map_err(|e| match provider_error("SNS CreatePlatformEndpoint", &e) {
                ProviderError::OutcomeUnknown(m) => ProviderError::Unavailable(m),
                known => known,
            })?;
        output
            .endpoint_arn()
            .filter(|arn| !arn.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                ProviderError::Unavailable("SNS CreatePlatformEndpoint answered without an EndpointArn".into())
            })
    }
}

/// The platform of an application ARN
/// (`arn:aws:sns:<region>:<account>:app/<PLATFORM>/<name>`): `APNS`,
/// `APNS_SANDBOX`, `GCM`, ... (the key of its payload in a JSON message).
pub fn application_platform(application_arn: &str) -> Option<&str> {
    let resource = application_arn.splitn(6, ':').nth(5)?;
    let mut parts = resource.split('/');
    match (parts.next(), parts.next()) {
        (Some("app"), Some(platform)) if !platform.is_empty() => Some(platform),
        _ => None,
    }
}

/// FCM v1 data must be a map of strings: strings stay, anything else is
/// written as JSON; a non-object becomes `{"value": ...}`; null is no data.
fn string_map(data: &Value) -> Map<String, Value> {
    let text = |v: &Value| match v {
        Value::String(s) => Value::String(s.clone()),
        other => Value::String(other.to_string()),
    };
    match data {
        Value::Null => Map::new(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        other => Map::from_iter([("value".to_string(), text(other))]),
    }
}

/// The `MessageStructure: json` message for one platform: `default` (the
/// body) and the platform's payload, itself a JSON string.
pub fn push_message_json(platform_key: &str, push: &PushMessage) -> String {
    let payload = if platform_key.starts_with("APNS") {
        let mut payload = json!({
            "aps": { "alert": { "title": push.title, "body": push.body } },
            "message_id": push.message_id,
        });
        if !push.data.is_null() {
            payload["data"] = push.data.clone();
        }
        payload
    } else {
        let mut data = string_map(&push.data);
        data.insert("message_id".into(), Value::String(push.message_id.clone()));
        json!({
            "fcmV1Message": {
                "message": {
                    "notification": { "title": push.title, "body": push.body },
                    "data": data,
                }
            }
        })
    };
    let mut message = Map::new();
    message.insert("default".into(), Value::String(push.body.clone()));
    message.insert(platform_key.to_string(), Value::String(payload.to_string()));
    Value::Object(message).to_string()
}

#[async_trait]
impl PushProvider for SnsPushProvider {
    async fn send_push(&self, push: &PushMessage) -> Result<ProviderReceipt, ProviderError> {
        let platform = push.device.platform.as_str();
        let application_arn = self.application_arn(platform).ok_or_else(|| {
            ProviderError::Rejected(format!("no SNS platform application for push platform {platform:?}"))
        })?;
        let platform_key = application_platform(application_arn).ok_or_else(|| {
            ProviderError::Rejected(format!("not an SNS platform application ARN: {application_arn}"))
        })?;
        if push.device.token.trim().is_empty() {
            return Err(ProviderError::Rejected("push device without a token".into()));
        }
        let endpoint = self.endpoint_arn(application_arn, &push.device.token).await?;
        let output = self
            .client
            .publish()
            .target_arn(&endpoint)
            .message_structure("json")
            .message(push_message_json(platform_key, push))
            .customize()
            .config_override(aws_sdk_sns::config::Builder::default().retry_config(no_sdk_retries()))
            .send()
            .await
            .map_err(|e| provider_error("SNS Publish (push)", &e))?;
        receipt("SNS Publish (push)", output.message_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_core::messaging::provider::PushDevice;

    fn push(data: Value) -> PushMessage {
        PushMessage {
            message_id: "m1".into(),
            device: PushDevice {
                platform: "fcm".into(),
                token: "tok".into(),
            },
            title: "Your cart".into(),
            body: "Still thinking?".into(),
            data,
        }
    }

    #[test]
    fn platform_comes_from_the_application_arn() {
        assert_eq!(
            application_platform("arn:aws:sns:us-east-1:123456789012:app/GCM/crm-fcm"),
            Some("GCM")
        );
        assert_eq!(
            application_platform("arn:aws:sns:eu-west-1:123456789012:app/APNS_SANDBOX/crm"),
            Some("APNS_SANDBOX")
        );
        assert_eq!(application_platform("arn:aws:sns:us-east-1:123456789012:topic"), None);
        assert_eq!(application_platform("nonsense"), None);
    }

    #[test]
    fn fcm_message_has_default_and_a_v1_payload_with_string_data() {
        let message: Value =
            serde_json::from_str(&push_message_json("GCM", &push(json!({"cart": "c1", "items": 2})))).expect("json");
        assert_eq!(message["default"], "Still thinking?");
        let gcm: Value = serde_json::from_str(message["GCM"].as_str().expect("string")).expect("inner json");
        let inner = &gcm["fcmV1Message"]["message"];
        assert_eq!(inner["notification"]["title"], "Your cart");
        assert_eq!(inner["notification"]["body"], "Still thinking?");
        assert_eq!(inner["data"], json!({"cart": "c1", "items": "2", "message_id": "m1"}));
    }

    #[test]
    fn apns_message_has_an_alert_and_the_data() {
        let message: Value =
            serde_json::from_str(&push_message_json("APNS", &push(json!({"cart": "c1"})))).expect("json");
        let apns: Value = serde_json::from_str(message["APNS"].as_str().expect("string")).expect("inner json");
        assert_eq!(apns["aps"]["alert"]["title"], "Your cart");
        assert_eq!(apns["aps"]["alert"]["body"], "Still thinking?");
        assert_eq!(apns["data"], json!({"cart": "c1"}));
        assert_eq!(apns["message_id"], "m1");
        assert!(message.get("GCM").is_none());
    }
}
