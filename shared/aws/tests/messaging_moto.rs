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

// ---------------------------------------------------------------------------
// Error classification on the wire (decision 0032): a fault-injecting endpoint
// between the real SDK and moto. Errors that prove nothing was sent (a refused
// connection, throttling) are told apart from those after which the provider
// may have taken the message (a lost answer, a 5xx, a timeout), and a send
// call makes exactly one attempt, so a lost answer never becomes two sends.

mod faults {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// What the endpoint does with each request.
    #[derive(Debug, Clone)]
    pub enum Fault {
        /// Forwards the request to moto, waits for moto's answer, then closes
        /// the connection without passing the answer on: it happened, the
        /// caller cannot know.
        LoseAnswer,
        /// Forwards every request to moto and passes the answers on, except
        /// the answer to a request whose body contains this text: lost.
        LoseAnswerTo(&'static str),
        /// Answers itself with this status, `x-amzn-ErrorType` and body;
        /// moto never sees the request.
        Answer {
            status: u16,
            error_type: &'static str,
            body: &'static str,
        },
        /// Reads the request and never answers.
        Hang,
    }

    pub struct FaultyEndpoint {
        pub url: String,
        requests: Arc<AtomicUsize>,
    }

    impl FaultyEndpoint {
        /// Requests that reached the endpoint.
        pub fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    fn header_end(buf: &[u8]) -> Option<usize> {
        buf.windows(4).position(|w| w == b"\r\n\r\n")
    }

    /// One HTTP/1.1 message (request or answer) with a Content-Length body.
    fn read_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            if let Some(end) = header_end(&buf) {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    return Some(buf);
                }
            }
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn serve(mut client: TcpStream, fault: Fault, moto: String, requests: Arc<AtomicUsize>) {
        while let Some(request) = read_message(&mut client) {
            requests.fetch_add(1, Ordering::SeqCst);
            match &fault {
                Fault::LoseAnswer | Fault::LoseAnswerTo(_) => {
                    let mut upstream = TcpStream::connect(&moto).expect("connect to moto");
                    upstream.write_all(&request).expect("forward to moto");
                    let answer = read_message(&mut upstream).expect("moto answers");
                    let lose = match &fault {
                        Fault::LoseAnswerTo(marker) => {
                            let body = header_end(&request).map(|end| &request[end + 4..]).unwrap_or(&[]);
                            String::from_utf8_lossy(body).contains(marker)
                        }
                        _ => true,
                    };
                    if lose || client.write_all(&answer).is_err() {
                        return; // dropped: the caller sees the connection close
                    }
                }
                Fault::Answer {
                    status,
                    error_type,
                    body,
                } => {
                    let answer = format!(
                        "HTTP/1.1 {status} Fault\r\nx-amzn-ErrorType: {error_type}\r\nx-amzn-RequestId: fault\r\n\
                         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if client.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
                Fault::Hang => {
                    std::thread::sleep(std::time::Duration::from_secs(30));
                    return;
                }
            }
        }
    }

    /// A new endpoint on 127.0.0.1 in front of the moto server.
    pub fn endpoint(fault: Fault) -> FaultyEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let moto = std::env::var("AWS_ENDPOINT_URL")
            .expect("AWS_ENDPOINT_URL")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (fault, moto, counted) = (fault.clone(), moto.clone(), counted.clone());
                std::thread::spawn(move || serve(client, fault, moto, counted));
            }
        });
        FaultyEndpoint { url, requests }
    }

    /// An address where nothing listens: connections are refused.
    pub fn closed_port() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        drop(listener);
        url
    }
}

use faults::{endpoint, Fault};

/// The moto configuration, sent to `url` instead, with a 2 s attempt timeout.
async fn config_via(url: &str) -> aws_config::SdkConfig {
    crm_aws::testing::moto_config()
        .await
        .into_builder()
        .endpoint_url(url)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(std::time::Duration::from_secs(2))
                .build(),
        )
        .build()
}

/// An SES provider that sends through `url`, with a verified sender and a
/// configuration set on moto; the email it sends.
async fn ses_via(url: &str) -> (SesEmailProvider, EmailMessage) {
    let id = unique();
    let sender = format!("faults-{id}@example.com");
    let direct = ses_with_sender(&sender).await;
    let client = aws_sdk_sesv2::Client::new(&config_via(url).await);
    let provider = SesEmailProvider::new(client, direct.configuration_set());
    (
        provider,
        marketing_email(&sender, &format!("ada-{id}@example.net"), &id),
    )
}

/// The raw messages moto kept for our message id.
fn ses_kept(message_id: &str) -> usize {
    let header = format!("X-CRM-Message-Id: {message_id}\r\n");
    array(&moto_data(), "ses", "RawMessage")
        .iter()
        .filter(|m| m["raw_data"].as_str().is_some_and(|raw| raw.contains(&header)))
        .count()
}

#[tokio::test]
async fn ses_answer_lost_after_acceptance_is_unknown_and_the_email_went_once() {
    let faulty = endpoint(Fault::LoseAnswer);
    let (ses, email) = ses_via(&faulty.url).await;
    match ses.send_email(&email).await {
        Err(ProviderError::OutcomeUnknown(reason)) => assert!(reason.contains("SES SendEmail"), "{reason}"),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    // SES (moto) took it, once: the SDK did not try again.
    assert_eq!(faulty.requests(), 1);
    assert_eq!(ses_kept(&email.message_id), 1);
}

#[tokio::test]
async fn ses_server_errors_are_unknown_and_tried_once() {
    for status in [500, 503] {
        let faulty = endpoint(Fault::Answer {
            status,
            error_type: "InternalFailure",
            body: r#"{"message":"injected"}"#,
        });
        let (ses, email) = ses_via(&faulty.url).await;
        match ses.send_email(&email).await {
            Err(e @ ProviderError::OutcomeUnknown(_)) => assert!(!e.proves_nothing_sent()),
            other => panic!("{status}: expected OutcomeUnknown, got {other:?}"),
        }
        assert_eq!(faulty.requests(), 1, "{status}: one attempt");
    }
}

#[tokio::test]
async fn ses_throttling_and_a_refused_connection_prove_nothing_was_sent() {
    let faulty = endpoint(Fault::Answer {
        status: 429,
        error_type: "TooManyRequestsException",
        body: r#"{"message":"Maximum sending rate exceeded."}"#,
    });
    let (ses, email) = ses_via(&faulty.url).await;
    match ses.send_email(&email).await {
        Err(ProviderError::Throttled(reason)) => assert!(reason.contains("TooManyRequestsException"), "{reason}"),
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(faulty.requests(), 1, "the channel retries throttling, not the SDK");

    let (ses, email) = ses_via(&faults::closed_port()).await;
    match ses.send_email(&email).await {
        Err(e @ ProviderError::Unavailable(_)) => assert!(e.is_retryable() && e.proves_nothing_sent()),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_eq!(ses_kept(&email.message_id), 0);
}

#[tokio::test]
async fn ses_timeout_is_unknown() {
    let faulty = endpoint(Fault::Hang);
    let (ses, email) = ses_via(&faulty.url).await;
    match ses.send_email(&email).await {
        Err(ProviderError::OutcomeUnknown(_)) => {}
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(faulty.requests(), 1);
}

#[tokio::test]
async fn sns_sms_answer_lost_is_unknown_and_published_once() {
    let faulty = endpoint(Fault::LoseAnswer);
    let sns = SnsSmsProvider::new(aws_sdk_sns::Client::new(&config_via(&faulty.url).await), None);
    let body = format!("Your code is {}", unique());
    let sms = SmsMessage {
        message_id: unique(),
        to: "+4915112345678".into(),
        body: body.clone(),
        transactional: true,
    };
    match sns.send_sms(&sms).await {
        Err(ProviderError::OutcomeUnknown(reason)) => assert!(reason.contains("SNS Publish (SMS)"), "{reason}"),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(faulty.requests(), 1);
    let data = moto_data();
    let kept = array(&data, "sns", "SMS")
        .iter()
        .filter(|m| m["message"] == body.as_str())
        .count();
    assert_eq!(kept, 1, "SNS (moto) published it once");
}

#[tokio::test]
async fn sns_push_failing_before_publish_is_unavailable_and_publish_failure_unknown() {
    let client = sns_client().await;
    let fcm = platform_application(&client, "GCM").await;
    let applications = PushApplications {
        apns: None,
        fcm: Some(fcm),
    };
    // Every call fails with a 500: CreatePlatformEndpoint already, so
    // nothing was published.
    let failing = endpoint(Fault::Answer {
        status: 500,
        error_type: "InternalFailure",
        body: "<ErrorResponse><Error><Type>Receiver</Type><Code>InternalFailure</Code><Message>injected</Message></Error></ErrorResponse>",
    });
    let provider = SnsPushProvider::new(
        aws_sdk_sns::Client::new(&config_via(&failing.url).await),
        applications.clone(),
    );
    match provider.send_push(&push("fcm", &format!("tok-{}", unique()))).await {
        Err(e @ ProviderError::Unavailable(_)) => assert!(e.proves_nothing_sent()),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // The endpoint is registered; the answer to Publish is lost: unknown,
    // and SNS (moto) published it once.
    let lossy = endpoint(Fault::LoseAnswerTo("Action=Publish"));
    let provider = SnsPushProvider::new(aws_sdk_sns::Client::new(&config_via(&lossy.url).await), applications);
    let token = format!("tok-{}", unique());
    match provider.send_push(&push("fcm", &token)).await {
        Err(ProviderError::OutcomeUnknown(reason)) => assert!(reason.contains("SNS Publish (push)"), "{reason}"),
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(lossy.requests(), 2, "CreatePlatformEndpoint, then one Publish");
    let endpoint_arn = SnsPushProvider::new(client.clone(), PushApplications::default())
        .endpoint_arn(provider.application_arn("fcm").expect("fcm"), &token)
        .await
        .expect("the same endpoint, directly");
    let data = moto_data();
    let published = array(&data, "sns", "PlatformEndpoint")
        .iter()
        .find(|e| e["arn"] == endpoint_arn.as_str())
        .and_then(|e| e["messages"].as_object())
        .map(|m| m.len())
        .unwrap_or(0);
    assert_eq!(published, 1);
}
