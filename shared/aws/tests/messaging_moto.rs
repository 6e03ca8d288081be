//! AWS wire tests: the message providers (SES v2 email, SNS SMS, SNS push)
//! against the moto server in `AWS_ENDPOINT_URL` (started through
//! `scripts/moto_server.py`), read back from moto's `/moto-api/data.json`.
//! Every test uses names of its own, so they run in parallel.

use crm_aws::ses::SesEmailProvider;
use crm_aws::sns::{PushApplications, SnsPushProvider, SnsSmsProvider};
use crm_aws::testing::{moto_data, sesv2_client, sns_client};
use crm_core::messaging::mime;
use crm_core::messaging::provider::{
    EmailMessage, EmailProvider, ProviderError, PushDevice, PushMessage, PushProvider, SmsMessage, SmsProvider,
};
use serde_json::{json, Value};
use uuid::Uuid;

fn unique() -> String {
    Uuid::now_v7().simple().to_string()
}

/// A marketing email as the channel function renders it.
fn marketing_email(from: &str, to: &str, message_id: &str) -> EmailMessage {
    EmailMessage {
        message_id: message_id.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        subject: "Spring picks for you".into(),
        html: "<p>Hello <b>Ada</b></p>".into(),
        text: "Hello Ada".into(),
        headers: vec![
            (
                "List-Unsubscribe".into(),
                "<https://crm.example.com/u/tok123>, <mailto:unsubscribe@example.com?subject=tok123>".into(),
            ),
            ("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into()),
        ],
        tags: vec![
            ("campaign".into(), "spring-sale".into()),
            ("message_id".into(), message_id.to_string()),
            ("customer_id".into(), "0193c5a2-7d1e-7c3a-9f00-5b1d2e3f4a5b".into()),
            ("category".into(), "marketing".into()),
        ],
    }
}

/// An SES provider over a new configuration set, with `sender` verified.
async fn ses_with_sender(sender: &str) -> SesEmailProvider {
    let client = sesv2_client().await;
    let configuration_set = format!("crm-test-{}", unique());
    client
        .create_configuration_set()
        .configuration_set_name(&configuration_set)
        .send()
        .await
        .expect("create the configuration set");
    client
        .create_email_identity()
        .email_identity(sender)
        .send()
        .await
        .expect("create the sender identity");
    SesEmailProvider::new(client, configuration_set)
}

fn array<'a>(data: &'a Value, service: &str, kind: &str) -> &'a [Value] {
    data[service][kind].as_array().map(Vec::as_slice).unwrap_or(&[])
}

#[tokio::test]
async fn ses_sends_the_raw_message_with_one_click_unsubscribe_headers() {
    let id = unique();
    let sender = format!("news-{id}@example.com");
    let recipient = format!("ada-{id}@example.net");
    let ses = ses_with_sender(&sender).await;
    let email = marketing_email(&sender, &recipient, &id);

    let receipt = ses.send_email(&email).await.expect("SES accepts the email");
    assert!(!receipt.provider_message_id.is_empty());

    let data = moto_data();
    let sent = array(&data, "ses", "RawMessage")
        .iter()
        .find(|m| m["id"] == receipt.provider_message_id.as_str())
        .unwrap_or_else(|| panic!("moto kept no raw message {}", receipt.provider_message_id));
    assert_eq!(sent["source"], sender.as_str());
    let destinations: Vec<&str> = sent["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(destinations.iter().all(|d| *d == recipient), "{destinations:?}");
    assert!(!destinations.is_empty());

    let raw = sent["raw_data"].as_str().expect("raw_data");
    assert!(raw.contains("\r\nList-Unsubscribe: <https://crm.example.com/u/tok123>, <mailto:unsubscribe@example.com?subject=tok123>\r\n"), "{raw}");
    assert!(
        raw.contains("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
        "{raw}"
    );
    assert!(raw.contains(&format!("\r\nTo: {recipient}\r\n")), "{raw}");
    assert!(raw.contains("\r\nSubject: Spring picks for you\r\n"), "{raw}");
    assert!(raw.contains(&format!("\r\nX-CRM-Message-Id: {id}\r\n")), "{raw}");

    // And it is the message we rendered, whole.
    let parsed = mime::parse(raw).expect("our MIME");
    assert_eq!(
        parsed.header("List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    assert_eq!(parsed.header("Subject"), Some("Spring picks for you"));
}

#[tokio::test]
async fn ses_refuses_an_unverified_sender() {
    let id = unique();
    let client = sesv2_client().await;
    let ses = SesEmailProvider::new(client, format!("crm-test-{id}"));
    let email = marketing_email(&format!("unverified-{id}@example.com"), "ada@example.net", &id);
    match ses.send_email(&email).await {
        Err(ProviderError::Rejected(reason)) => {
            assert!(reason.contains("MessageRejected"), "{reason}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn sns_sms_publishes_to_the_phone_number() {
    let sns = SnsSmsProvider::new(sns_client().await, Some("CRMTEST".into()));
    let body = format!("Your code is {}", unique());
    let sms = SmsMessage {
        message_id: unique(),
        to: "+4915112345678".into(),
        body: body.clone(),
        transactional: true,
    };
    let receipt = sns.send_sms(&sms).await.expect("SNS accepts the SMS");
    assert!(!receipt.provider_message_id.is_empty());

    let data = moto_data();
    let kept = array(&data, "sns", "SMS")
        .iter()
        .find(|m| m["message_id"] == receipt.provider_message_id.as_str())
        .unwrap_or_else(|| panic!("moto kept no SMS {}", receipt.provider_message_id));
    assert_eq!(kept["phone_number"], "+4915112345678");
    assert_eq!(kept["message"], body.as_str());
}

#[tokio::test]
async fn sns_sms_rejects_a_number_that_is_not_e164() {
    let sns = SnsSmsProvider::new(sns_client().await, None);
    let sms = SmsMessage {
        message_id: unique(),
        to: "not-a-number".into(),
        body: "hello".into(),
        transactional: false,
    };
    match sns.send_sms(&sms).await {
        Err(ProviderError::Rejected(reason)) => assert!(reason.contains("InvalidParameter"), "{reason}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

async fn platform_application(client: &aws_sdk_sns::Client, platform: &str) -> String {
    client
        .create_platform_application()
        .name(format!("crm-test-{}", unique()))
        .platform(platform)
        .attributes("PlatformCredential", "test-credential")
        .send()
        .await
        .expect("create the platform application")
        .platform_application_arn()
        .expect("an application ARN")
        .to_string()
}

fn push(platform: &str, token: &str) -> PushMessage {
    PushMessage {
        message_id: unique(),
        device: PushDevice {
            platform: platform.into(),
            token: token.into(),
        },
        title: "Your cart misses you".into(),
        body: "Two items are still waiting.".into(),
        data: json!({ "cart_id": "cart-1", "items": 2 }),
    }
}

#[tokio::test]
async fn sns_push_registers_the_device_once_and_publishes_to_it() {
    let client = sns_client().await;
    let fcm = platform_application(&client, "GCM").await;
    let apns = platform_application(&client, "APNS").await;
    let provider = SnsPushProvider::new(
        client.clone(),
        PushApplications {
            apns: Some(apns.clone()),
            fcm: Some(fcm.clone()),
        },
    );
    let token = format!("fcm-token-{}", unique());

    let first = provider.send_push(&push("fcm", &token)).await.expect("first push");
    let second = provider.send_push(&push("fcm", &token)).await.expect("second push");
    assert!(!first.provider_message_id.is_empty());
    assert_ne!(first.provider_message_id, second.provider_message_id);

    // One endpoint for the token, however often it is used.
    let endpoints = client
        .list_endpoints_by_platform_application()
        .platform_application_arn(&fcm)
        .send()
        .await
        .expect("list endpoints");
    let endpoints = endpoints.endpoints();
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    let endpoint = &endpoints[0];
    assert_eq!(
        endpoint.attributes().and_then(|a| a.get("Token")).map(String::as_str),
        Some(token.as_str())
    );
    let endpoint_arn = endpoint.endpoint_arn().expect("endpoint ARN");

    // moto keeps what was published to the endpoint.
    let data = moto_data();
    let kept = array(&data, "sns", "PlatformEndpoint")
        .iter()
        .find(|e| e["arn"] == endpoint_arn)
        .expect("moto keeps the endpoint");
    let message = kept["messages"][first.provider_message_id.as_str()]
        .as_str()
        .expect("the published message");
    let message: Value = serde_json::from_str(message).expect("a JSON message");
    assert_eq!(message["default"], "Two items are still waiting.");
    let gcm: Value = serde_json::from_str(message["GCM"].as_str().expect("GCM payload")).expect("GCM JSON");
    let fcm_message = &gcm["fcmV1Message"]["message"];
    assert_eq!(fcm_message["notification"]["title"], "Your cart misses you");
    assert_eq!(fcm_message["data"]["cart_id"], "cart-1");

    // APNS goes through its own application.
    let apns_receipt = provider
        .send_push(&push("apns", &format!("apns-token-{}", unique())))
        .await
        .expect("APNS push");
    assert!(!apns_receipt.provider_message_id.is_empty());
    let apns_endpoints = client
        .list_endpoints_by_platform_application()
        .platform_application_arn(&apns)
        .send()
        .await
        .expect("list APNS endpoints");
    assert_eq!(apns_endpoints.endpoints().len(), 1);
}

#[tokio::test]
async fn sns_push_rejects_a_platform_without_an_application() {
    let provider = SnsPushProvider::new(sns_client().await, PushApplications::default());
    match provider.send_push(&push("fcm", "tok")).await {
        Err(ProviderError::Rejected(reason)) => assert!(reason.contains("fcm"), "{reason}"),
        other => panic!("expected Rejected, got {other:?}"),
    }
}
