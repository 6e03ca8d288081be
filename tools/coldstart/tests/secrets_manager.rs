//! The harness's local Secrets Manager endpoint, driven with raw HTTP/1.1
//! as the SDK sends it (AWS JSON 1.1).

mod common;

use common::{header, request_with_headers};
use crm_coldstart::secrets_manager::{LocalSecret, SecretsManager, GET_SECRET_VALUE, VERSION_ID};
use serde_json::Value;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:crm-test-unsubscribe";

fn endpoint() -> SecretsManager {
    SecretsManager::start(vec![
        LocalSecret {
            arn: ARN.into(),
            name: "crm-test-unsubscribe".into(),
            value: "the-unsubscribe-secret".into(),
        },
        LocalSecret {
            arn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:crm-test-other".into(),
            name: "crm-test-other".into(),
            value: "another-value".into(),
        },
    ])
    .expect("start")
}

fn connect(endpoint: &SecretsManager) -> TcpStream {
    let addr = endpoint.url().trim_start_matches("http://").to_string();
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
}

fn get_secret_value(stream: &mut TcpStream, secret_id: &str) -> (String, Vec<(String, String)>, Value) {
    let body = serde_json::json!({ "SecretId": secret_id }).to_string();
    let headers = [
        ("X-Amz-Target", GET_SECRET_VALUE),
        ("Content-Type", "application/x-amz-json-1.1"),
    ];
    let (status, headers, body) = request_with_headers(stream, "POST", "/", &headers, &body);
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
    (status, headers, body)
}

#[test]
fn answers_get_secret_value_by_arn_and_name_on_one_keep_alive_connection() {
    let endpoint = endpoint();
    let mut stream = connect(&endpoint);

    let (status, headers, body) = get_secret_value(&mut stream, ARN);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(header(&headers, "content-type"), Some("application/x-amz-json-1.1"));
    assert_eq!(body["SecretString"], "the-unsubscribe-secret");
    assert_eq!(body["ARN"], ARN);
    assert_eq!(body["Name"], "crm-test-unsubscribe");
    assert_eq!(body["VersionId"], VERSION_ID);
    assert_eq!(body["VersionStages"], serde_json::json!(["AWSCURRENT"]));
    assert!(
        body["CreatedDate"].as_u64().is_some_and(|d| d > 1_700_000_000),
        "{body}"
    );

    // The same connection: the second secret, by name.
    let (status, _, body) = get_secret_value(&mut stream, "crm-test-other");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(body["SecretString"], "another-value");

    let (status, _, body) = get_secret_value(&mut stream, "crm-test-missing");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert_eq!(body["__type"], "ResourceNotFoundException");
    assert!(body.get("SecretString").is_none());

    assert_eq!(endpoint.values_served(), 2);
}

/// Reads until the server closes the connection; what it sent before.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == ErrorKind::ConnectionReset => got,
        Err(e) => panic!(
            "the connection stayed open ({e}); sent {:?}",
            String::from_utf8_lossy(&got)
        ),
    }
}

#[test]
fn closes_the_connection_on_any_other_call() {
    let endpoint = endpoint();

    // Another service on the same endpoint (AWS_ENDPOINT_URL is every service's).
    let mut stream = connect(&endpoint);
    let body = r#"{"TableName":"crm-events","Key":{}}"#;
    let req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: DynamoDB_20120810.GetItem\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).expect("write");
    assert_eq!(read_until_closed(&mut stream), b"");

    // Another Secrets Manager operation, after a GetSecretValue on the same connection.
    let mut stream = connect(&endpoint);
    let (status, _, _) = get_secret_value(&mut stream, ARN);
    assert_eq!(status, "HTTP/1.1 200 OK");
    let body = format!(r#"{{"SecretId":"{ARN}","SecretString":"x"}}"#);
    let req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: secretsmanager.PutSecretValue\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).expect("write");
    assert_eq!(read_until_closed(&mut stream), b"");

    // A query-protocol call (SQS, SES) with no target.
    let mut stream = connect(&endpoint);
    stream
        .write_all(b"GET /?Action=GetQueueUrl HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    assert_eq!(read_until_closed(&mut stream), b"");

    assert_eq!(endpoint.values_served(), 1);
}
