//! SES feedback: the events an SES v2 configuration set's EventBridge event
//! destination publishes (`source: aws.ses`, `detail-type` "Email Sent",
//! "Email Rejected", "Email Delivered", "Email Bounced", "Email Complaint
//! Received", "Email Opened", "Email Clicked"), read into crm-core's
//! [`EmailFeedback`]: our message and customer (from the `message_id` and
//! `customer_id` message tags the send set), the address the feedback is
//! about, and what happened (decision 0059 moved this reading out of
//! crm-core).
//!
//! No AWS SDK types: the event is plain JSON (`serde_json::Value`).
//! Samples: `events/channel/ses-*.json`.

use chrono::{DateTime, Utc};
use crm_core::messaging::events::BounceType;
use crm_core::messaging::feedback::{EmailFeedback, FeedbackKind, CUSTOMER_ID_TAG, MESSAGE_ID_TAG, SES_SOURCE};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Why an event could not be read as SES feedback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    #[error("not an SES event (source {0:?})")]
    NotSes(String),
    /// Mail sent without our tags (not by the channel function, or through
    /// another configuration set): nothing to attach the feedback to.
    #[error("SES {event_type} event for {ses_message_id} without the {tag} tag")]
    MissingTag {
        event_type: String,
        ses_message_id: String,
        tag: &'static str,
    },
    #[error("SES {0} event without a recipient address")]
    NoRecipient(String),
    #[error("malformed SES event: {0}")]
    Malformed(String),
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(default)]
    id: String,
    #[serde(default)]
    source: String,
    #[serde(rename = "detail-type", default)]
    detail_type: String,
    #[serde(default)]
    time: Option<DateTime<Utc>>,
    detail: Option<Detail>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Detail {
    #[serde(default)]
    event_type: Option<String>,
    mail: Mail,
    #[serde(default)]
    reject: Option<Reject>,
    #[serde(default)]
    bounce: Option<Bounce>,
    #[serde(default)]
    complaint: Option<Complaint>,
    #[serde(default)]
    delivery: Option<Stamped>,
    #[serde(default)]
    open: Option<Stamped>,
    #[serde(default)]
    click: Option<Click>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mail {
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    destination: Vec<String>,
    #[serde(default)]
    tags: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Recipient {
    #[serde(default)]
    email_address: String,
    #[serde(default)]
    diagnostic_code: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bounce {
    #[serde(default)]
    bounce_type: String,
    #[serde(default)]
    bounced_recipients: Vec<Recipient>,
    #[serde(default)]
    feedback_id: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Complaint {
    #[serde(default)]
    complained_recipients: Vec<Recipient>,
    #[serde(default)]
    feedback_id: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Reject {
    #[serde(default)]
    reason: String,
}

#[derive(Debug, Deserialize)]
struct Stamped {
    #[serde(default)]
    timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Click {
    #[serde(default)]
    link: String,
    #[serde(default)]
    timestamp: Option<String>,
}

/// The `eventType` an EventBridge `detail-type` stands for (used when the
/// detail has no `eventType`).
fn event_type_of(detail_type: &str) -> Option<&'static str> {
    match detail_type {
        "Email Sent" => Some("Send"),
        "Email Rejected" => Some("Reject"),
        "Email Delivered" => Some("Delivery"),
        "Email Bounced" => Some("Bounce"),
        "Email Complaint Received" => Some("Complaint"),
        "Email Opened" => Some("Open"),
        "Email Clicked" => Some("Click"),
        _ => None,
    }
}

fn bounce_type(raw: &str) -> BounceType {
    match raw {
        "Permanent" => BounceType::Permanent,
        "Transient" => BounceType::Transient,
        _ => BounceType::Undetermined,
    }
}

fn timestamp(raw: Option<&str>) -> Option<DateTime<Utc>> {
    raw.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The first non-empty value of tag `name`.
fn tag(mail: &Mail, name: &str) -> Option<String> {
    mail.tags
        .get(name)
        .and_then(|values| values.iter().find(|v| !v.trim().is_empty()))
        .map(|v| v.trim().to_string())
}

/// The recipient: the one the bounce or complaint names, else the first
/// destination (the channel function sends each message to one address).
fn recipient(listed: &[Recipient], mail: &Mail) -> Option<String> {
    listed
        .iter()
        .map(|r| r.email_address.trim())
        .find(|a| !a.is_empty())
        .or_else(|| mail.destination.iter().map(|a| a.trim()).find(|a| !a.is_empty()))
        .map(str::to_string)
}

/// Reads one EventBridge event. `Ok(None)`: an SES event that is not
/// feedback we record (Rendering Failure, DeliveryDelay, Subscription):
/// acknowledge and drop it.
pub fn parse_eventbridge(event: &Value) -> Result<Option<EmailFeedback>, FeedbackError> {
    let envelope = Envelope::deserialize(event).map_err(|e| FeedbackError::Malformed(e.to_string()))?;
    if envelope.source != SES_SOURCE {
        return Err(FeedbackError::NotSes(envelope.source));
    }
    let detail = envelope
        .detail
        .ok_or_else(|| FeedbackError::Malformed("no detail".into()))?;
    let event_type = match detail.event_type.as_deref() {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => match event_type_of(&envelope.detail_type) {
            Some(t) => t.to_string(),
            None => return Ok(None),
        },
    };
    let no_recipient = || FeedbackError::NoRecipient(event_type.clone());
    let (kind, recipient, feedback_id, at) = match event_type.as_str() {
        // `send` is an empty object: the mail's own timestamp is when SES took it.
        "Send" => (
            FeedbackKind::Accepted,
            recipient(&[], &detail.mail),
            None,
            detail.mail.timestamp.as_deref(),
        ),
        "Reject" => (
            FeedbackKind::ContentRejected {
                reason: detail
                    .reject
                    .as_ref()
                    .map(|r| r.reason.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "rejected by SES".into()),
            },
            recipient(&[], &detail.mail),
            None,
            detail.mail.timestamp.as_deref(),
        ),
        "Delivery" => (
            FeedbackKind::Delivered,
            recipient(&[], &detail.mail),
            None,
            detail.delivery.as_ref().and_then(|d| d.timestamp.as_deref()),
        ),
        "Bounce" => {
            let bounce = detail
                .bounce
                .as_ref()
                .ok_or_else(|| FeedbackError::Malformed("Bounce event without bounce".into()))?;
            let diagnostic = bounce
                .bounced_recipients
                .iter()
                .find_map(|r| r.diagnostic_code.clone())
                .filter(|d| !d.trim().is_empty());
            (
                FeedbackKind::Bounced {
                    bounce_type: bounce_type(&bounce.bounce_type),
                    diagnostic,
                },
                recipient(&bounce.bounced_recipients, &detail.mail),
                bounce.feedback_id.clone(),
                bounce.timestamp.as_deref(),
            )
        }
        "Complaint" => {
            let complaint = detail
                .complaint
                .as_ref()
                .ok_or_else(|| FeedbackError::Malformed("Complaint event without complaint".into()))?;
            (
                FeedbackKind::Complained,
                recipient(&complaint.complained_recipients, &detail.mail),
                complaint.feedback_id.clone(),
                complaint.timestamp.as_deref(),
            )
        }
        "Open" => (
            FeedbackKind::Opened,
            recipient(&[], &detail.mail),
            None,
            detail.open.as_ref().and_then(|o| o.timestamp.as_deref()),
        ),
        "Click" => {
            let click = detail
                .click
                .as_ref()
                .ok_or_else(|| FeedbackError::Malformed("Click event without click".into()))?;
            (
                FeedbackKind::Clicked {
                    link: click.link.clone(),
                },
                recipient(&[], &detail.mail),
                None,
                click.timestamp.as_deref(),
            )
        }
        _ => return Ok(None),
    };
    let missing = |tag: &'static str| FeedbackError::MissingTag {
        event_type: event_type.clone(),
        ses_message_id: detail.mail.message_id.clone(),
        tag,
    };
    let message_id = tag(&detail.mail, MESSAGE_ID_TAG).ok_or_else(|| missing(MESSAGE_ID_TAG))?;
    let customer_id = tag(&detail.mail, CUSTOMER_ID_TAG).ok_or_else(|| missing(CUSTOMER_ID_TAG))?;
    let recipient = recipient.ok_or_else(no_recipient)?;
    let feedback_id = feedback_id
        .filter(|id| !id.trim().is_empty())
        .unwrap_or_else(|| envelope.id.clone());
    if feedback_id.is_empty() {
        return Err(FeedbackError::Malformed("no event id".into()));
    }
    Ok(Some(EmailFeedback {
        message_id,
        customer_id,
        feedback_id,
        provider_message_id: detail.mail.message_id,
        recipient,
        occurred_at: timestamp(at).or(envelope.time),
        kind,
    }))
}

/// [`parse_eventbridge`] over the event's JSON text.
pub fn parse_eventbridge_json(json: &str) -> Result<Option<EmailFeedback>, FeedbackError> {
    let value: Value = serde_json::from_str(json).map_err(|e| FeedbackError::Malformed(e.to_string()))?;
    parse_eventbridge(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_core::messaging::events::MessageEvent;
    use crm_core::privacy::IdentifierHasher;
    use serde_json::json;

    fn hasher() -> IdentifierHasher {
        IdentifierHasher::new(b"feedback tests")
    }

    const MESSAGE_ID: &str = "msg-5f1c0a9e7b2d4c6a8e0f1a2b3c4d5e6f";
    const CUSTOMER_ID: &str = "0193a6f3-1a2b-7c3d-8e4f-5a6b7c8d9e0f";
    const RECIPIENT: &str = "grace.hopper@example.com";
    const SES_MESSAGE_ID: &str = "010001937a5b2c3d-8f2e4a1b-6c7d-4e8f-9a0b-1c2d3e4f5a6b-000000";

    fn sample(name: &str) -> Value {
        let path = format!("{}/../../events/channel/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn parsed(name: &str) -> EmailFeedback {
        let feedback = parse_eventbridge(&sample(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .unwrap_or_else(|| panic!("{name}: not feedback"));
        assert_eq!(feedback.message_id, MESSAGE_ID);
        assert_eq!(feedback.customer_id, CUSTOMER_ID);
        assert_eq!(feedback.provider_message_id, SES_MESSAGE_ID);
        assert_eq!(feedback.recipient, RECIPIENT);
        assert!(feedback.occurred_at.is_some());
        feedback
    }

    fn at(text: &str) -> Option<DateTime<Utc>> {
        Some(DateTime::parse_from_rfc3339(text).expect("time").with_timezone(&Utc))
    }

    #[test]
    fn permanent_bounce() {
        let f = parsed("ses-bounce-permanent.json");
        assert_eq!(
            f.kind,
            FeedbackKind::Bounced {
                bounce_type: BounceType::Permanent,
                diagnostic: Some("smtp; 550 5.1.1 The email account that you tried to reach does not exist.".into()),
            }
        );
        assert_eq!(
            f.feedback_id,
            "010201937a5b3f10-2d4c6e8a-0b1c-4d2e-9f3a-5b6c7d8e9f00-000000"
        );
        assert_eq!(f.occurred_at, at("2026-11-29T10:15:02.455Z"));
        assert_eq!(f.event_type(), "EmailBounced");
        assert_eq!(
            f.to_event(&hasher()),
            MessageEvent::EmailBounced {
                message_id: MESSAGE_ID.into(),
                customer_id: CUSTOMER_ID.into(),
                bounce_type: BounceType::Permanent,
                address_hash: hasher().email(RECIPIENT),
                diagnostic: Some("smtp; 550 5.1.1 The email account that you tried to reach does not exist.".into()),
            }
        );
    }

    #[test]
    fn complaint() {
        let f = parsed("ses-complaint.json");
        assert_eq!(f.kind, FeedbackKind::Complained);
        assert_eq!(
            f.feedback_id,
            "010201937a8c9d0e-3e5f7a9b-1c2d-4e3f-8a4b-6c7d8e9f0a1b-000000"
        );
        assert_eq!(
            f.to_event(&hasher()),
            MessageEvent::EmailComplained {
                message_id: MESSAGE_ID.into(),
                customer_id: CUSTOMER_ID.into(),
                address_hash: hasher().email(RECIPIENT),
            }
        );
    }

    #[test]
    fn delivery() {
        let f = parsed("ses-delivery.json");
        assert_eq!(f.kind, FeedbackKind::Delivered);
        // No SES feedback id: the EventBridge event id.
        assert_eq!(f.feedback_id, "4e2f7c1a-9b3d-4a5e-8f60-1b2c3d4e5f01");
        assert_eq!(f.occurred_at, at("2026-11-29T10:15:01.874Z"));
        assert_eq!(
            f.to_event(&hasher()),
            MessageEvent::EmailDelivered {
                message_id: MESSAGE_ID.into(),
                customer_id: CUSTOMER_ID.into(),
            }
        );
    }

    #[test]
    fn open() {
        let f = parsed("ses-open.json");
        assert_eq!(f.kind, FeedbackKind::Opened);
        assert_eq!(f.feedback_id, "4e2f7c1a-9b3d-4a5e-8f60-1b2c3d4e5f04");
        assert_eq!(f.event_type(), "EmailOpened");
    }

    #[test]
    fn click() {
        let f = parsed("ses-click.json");
        let link = "https://shop.example.com/cart?utm_source=crm&utm_campaign=cart-abandonment";
        assert_eq!(f.kind, FeedbackKind::Clicked { link: link.into() });
        assert_eq!(
            f.to_event(&hasher()),
            MessageEvent::EmailClicked {
                message_id: MESSAGE_ID.into(),
                customer_id: CUSTOMER_ID.into(),
                link: link.into(),
            }
        );
    }

    #[test]
    fn samples_are_eventbridge_envelopes() {
        for (name, detail_type) in [
            ("ses-bounce-permanent.json", "Email Bounced"),
            ("ses-complaint.json", "Email Complaint Received"),
            ("ses-delivery.json", "Email Delivered"),
            ("ses-open.json", "Email Opened"),
            ("ses-click.json", "Email Clicked"),
        ] {
            let event = sample(name);
            for field in [
                "version",
                "id",
                "detail-type",
                "source",
                "account",
                "time",
                "region",
                "resources",
                "detail",
            ] {
                assert!(event.get(field).is_some(), "{name} has no {field}");
            }
            assert_eq!(event["source"], SES_SOURCE, "{name}");
            assert_eq!(event["detail-type"], detail_type, "{name}");
        }
    }

    #[test]
    fn transient_and_odd_bounce_types_and_the_detail_type_fallback() {
        let mut event = sample("ses-bounce-permanent.json");
        event["detail"]["bounce"]["bounceType"] = json!("Transient");
        let f = parse_eventbridge(&event).expect("parse").expect("feedback");
        assert!(matches!(
            f.kind,
            FeedbackKind::Bounced {
                bounce_type: BounceType::Transient,
                ..
            }
        ));
        event["detail"]["bounce"]["bounceType"] = json!("Something");
        event["detail"].as_object_mut().expect("object").remove("eventType");
        let f = parse_eventbridge(&event).expect("parse").expect("feedback");
        assert!(matches!(
            f.kind,
            FeedbackKind::Bounced {
                bounce_type: BounceType::Undetermined,
                ..
            }
        ));
    }

    /// SES's `Send` and `Reject` events, made from the delivery sample as
    /// SES shapes them (`send: {}`, `reject: {reason}`), with a new event id.
    fn send_and_reject() -> (Value, Value) {
        let mut send = sample("ses-delivery.json");
        let detail = send["detail"].as_object_mut().expect("detail");
        detail.remove("delivery");
        detail.insert("eventType".into(), json!("Send"));
        detail.insert("send".into(), json!({}));
        send["detail-type"] = json!("Email Sent");
        send["id"] = json!("4e2f7c1a-9b3d-4a5e-8f60-1b2c3d4e5f10");
        let mut reject = send.clone();
        let detail = reject["detail"].as_object_mut().expect("detail");
        detail.remove("send");
        detail.insert("eventType".into(), json!("Reject"));
        detail.insert("reject".into(), json!({ "reason": "Bad content" }));
        reject["detail-type"] = json!("Email Rejected");
        reject["id"] = json!("4e2f7c1a-9b3d-4a5e-8f60-1b2c3d4e5f11");
        (send, reject)
    }

    #[test]
    fn send_is_the_provider_accepting_the_message() {
        let (send, _) = send_and_reject();
        let f = parse_eventbridge(&send).expect("parse").expect("feedback");
        assert_eq!(f.kind, FeedbackKind::Accepted);
        assert_eq!(f.message_id, MESSAGE_ID);
        assert_eq!(f.recipient, RECIPIENT);
        assert_eq!(f.feedback_id, "4e2f7c1a-9b3d-4a5e-8f60-1b2c3d4e5f10");
        assert_eq!(f.occurred_at, timestamp(send["detail"]["mail"]["timestamp"].as_str()));
        assert!(f.occurred_at.is_some());
        assert_eq!(f.event_type(), "MessageAccepted");
        assert_eq!(
            f.to_event(&hasher()),
            MessageEvent::MessageAccepted {
                message_id: MESSAGE_ID.into(),
                customer_id: CUSTOMER_ID.into(),
                provider_message_id: SES_MESSAGE_ID.into(),
            }
        );
        // Without `eventType`, the detail-type says what it is.
        let mut bare = send.clone();
        bare["detail"].as_object_mut().expect("detail").remove("eventType");
        assert_eq!(
            parse_eventbridge(&bare).expect("parse").map(|f| f.kind),
            Some(FeedbackKind::Accepted)
        );
    }

    #[test]
    fn reject_is_content_refused_after_acceptance() {
        let (_, mut reject) = send_and_reject();
        let f = parse_eventbridge(&reject).expect("parse").expect("feedback");
        assert_eq!(
            f.kind,
            FeedbackKind::ContentRejected {
                reason: "Bad content".into()
            }
        );
        assert_eq!(
            f.to_event(&hasher()),
            MessageEvent::MessageContentRejected {
                message_id: MESSAGE_ID.into(),
                customer_id: CUSTOMER_ID.into(),
                reason: "Bad content".into(),
            }
        );
        reject["detail"].as_object_mut().expect("detail").remove("reject");
        reject["detail"].as_object_mut().expect("detail").remove("eventType");
        let f = parse_eventbridge(&reject).expect("parse").expect("feedback");
        assert_eq!(
            f.kind,
            FeedbackKind::ContentRejected {
                reason: "rejected by SES".into()
            }
        );
    }

    #[test]
    fn other_ses_events_are_not_feedback() {
        let mut event = sample("ses-delivery.json");
        event["detail-type"] = json!("Email Rendering Failure");
        event["detail"]["eventType"] = json!("Rendering Failure");
        assert_eq!(parse_eventbridge(&event), Ok(None));
        event["detail-type"] = json!("Email Delivery Delayed");
        event["detail"]["eventType"] = json!("DeliveryDelay");
        assert_eq!(parse_eventbridge(&event), Ok(None));
    }

    #[test]
    fn untagged_mail_and_foreign_events_are_errors() {
        let mut event = sample("ses-complaint.json");
        event["detail"]["mail"]["tags"]
            .as_object_mut()
            .expect("tags")
            .remove("customer_id");
        assert!(matches!(
            parse_eventbridge(&event),
            Err(FeedbackError::MissingTag {
                tag: CUSTOMER_ID_TAG,
                ..
            })
        ));
        event["detail"]["mail"]["tags"]
            .as_object_mut()
            .expect("tags")
            .remove("message_id");
        assert!(matches!(
            parse_eventbridge(&event),
            Err(FeedbackError::MissingTag {
                tag: MESSAGE_ID_TAG,
                ..
            })
        ));

        let mut foreign = sample("ses-open.json");
        foreign["source"] = json!("crm.customer");
        assert_eq!(
            parse_eventbridge(&foreign),
            Err(FeedbackError::NotSes("crm.customer".into()))
        );
        assert!(matches!(
            parse_eventbridge_json("{not json"),
            Err(FeedbackError::Malformed(_))
        ));
        assert!(matches!(
            parse_eventbridge(&json!({"source": "aws.ses", "detail-type": "Email Opened"})),
            Err(FeedbackError::Malformed(_))
        ));
    }

    #[test]
    fn recipient_falls_back_to_the_destination() {
        let mut event = sample("ses-complaint.json");
        event["detail"]["complaint"]["complainedRecipients"] = json!([]);
        let f = parse_eventbridge(&event).expect("parse").expect("feedback");
        assert_eq!(f.recipient, RECIPIENT);
        event["detail"]["mail"]["destination"] = json!([]);
        assert_eq!(
            parse_eventbridge(&event),
            Err(FeedbackError::NoRecipient("Complaint".into()))
        );
    }

    #[test]
    fn the_address_hash_normalises() {
        let f = parsed("ses-open.json");
        assert_eq!(f.address_hash(&hasher()), hasher().email("  Grace.Hopper@Example.COM "));
        assert_eq!(f.address_hash(&hasher()).len(), 64);
        assert_ne!(
            f.address_hash(&hasher()),
            f.address_hash(&IdentifierHasher::new(b"another deployment"))
        );
    }
}
