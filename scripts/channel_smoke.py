#!/usr/bin/env python3
"""Channel smoke test: invoke the channel function, running under `cargo
lambda watch` against moto, with its sample events in events/channel/, and
check what it sent through SES v2 (read back from moto's
`/moto-api/data.json`) and what it recorded on the message stream.

The sample MessageRequested asks for the abandoned-cart reminder (marketing
email) to customer 0193a6f3-1a2b-7c3d-8e4f-5a6b7c8d9e0f, the customer of
events/projector/customer-registered.json and events/consent/consent-granted.json
(registered with marketing email consent). consumer_smoke.py seeds that
stream into the events table; this script seeds it too when it is missing
(conditional puts: an existing stream is left alone), so it runs on its own.

Steps:
  1. message-requested.json three times: the first delivery sends, the next
     two are duplicates; moto's SES holds exactly one email for the message
     id, from FROM_ADDRESS to the customer's address, with the RFC 8058
     List-Unsubscribe headers; the stream message-<id> holds MessageClaimed
     and MessageSent;
  2. ses-bounce-permanent.json: recorded (EmailBounced on the message
     stream); delivered again: a duplicate, nothing appended;
  3. timer-fired-deferral.json: handled; the message was sent
     already, so nothing is appended and nothing is sent again.

Usage: channel_smoke.py <invoke-port>
Environment: AWS_ENDPOINT_URL (moto), EVENTS_TABLE, READ_MODELS_TABLE,
FROM_ADDRESS, PUBLIC_BASE_URL, the same values the functions under `cargo
lambda watch` were given; AWS credentials and region for boto3. The sender's
SES identity must exist in moto (scripts/test creates it).
Needs: boto3 and cargo-lambda on PATH.
"""
import json
import pathlib
import sys
from email.utils import parseaddr

import boto3
from botocore.exceptions import ClientError

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from consumer_smoke import (  # noqa: E402
    SmokeFailure,
    check,
    ensure_table,
    env,
    event_item,
    invoke,
    moto_raw_emails,
    smoke_main,
)
from smoke_pipeline import sqs_batch  # noqa: E402

CHANNEL = REPO / "events" / "channel"
REGISTERED = REPO / "events" / "projector" / "customer-registered.json"
GRANTED = REPO / "events" / "consent" / "consent-granted.json"


def sent_emails(endpoint: str, message_id: str) -> list:
    """The raw messages moto's SES keeps for our message id (X-CRM-Message-Id)."""
    header = f"\r\nX-CRM-Message-Id: {message_id}\r\n"
    return [m for m in moto_raw_emails(endpoint) if header in (m.get("raw_data") or "")]


def stream_types(ddb, table: str, stream_id: str) -> list:
    items, start = [], None
    while True:
        args = dict(TableName=table, KeyConditionExpression="pk = :pk",
                    ExpressionAttributeValues={":pk": {"S": stream_id}}, ConsistentRead=True)
        if start:
            args["ExclusiveStartKey"] = start
        page = ddb.query(**args)
        items += page.get("Items", [])
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    events = [i for i in items if i.get("kind", {}).get("S") == "event"]
    events.sort(key=lambda i: int(i["sk"]["N"]))
    return [i["type"]["S"] for i in events]


def seed_customer(ddb, table: str) -> dict:
    """The sample customer's stream (versions 1 and 2), unless it is there."""
    v1 = json.loads(REGISTERED.read_text())["detail"]
    v2 = json.loads(GRANTED.read_text())["detail"]
    for envelope in (v1, v2):
        try:
            ddb.put_item(TableName=table, Item=event_item(envelope),
                         ConditionExpression="attribute_not_exists(pk)")
        except ClientError as e:
            if e.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise
    return v1


def run(port: int) -> None:
    endpoint = env("AWS_ENDPOINT_URL")
    events_table = env("EVENTS_TABLE")
    read_models = env("READ_MODELS_TABLE")
    from_address = env("FROM_ADDRESS")
    public_base_url = env("PUBLIC_BASE_URL").rstrip("/")
    ddb = boto3.client("dynamodb")

    requested = json.loads((CHANNEL / "message-requested.json").read_text())
    request = requested["detail"]["data"]
    message_id, customer_id = request["message_id"], request["customer_id"]
    message_stream = f"message-{message_id}"

    ensure_table(ddb, events_table, "N", stream=True)
    ensure_table(ddb, read_models, "S", stream=False)
    registered = seed_customer(ddb, events_table)
    if registered["customer_id"] != customer_id:
        raise SmokeFailure(f"the channel sample names customer {customer_id}, "
                           f"the seeded stream is {registered['customer_id']}")
    address = registered["data"]["email"]
    print(f"customer {customer_id} ({address}) in {events_table}; message {message_id}")
    check("channel: nothing sent for the sample message yet",
          not sent_emails(endpoint, message_id) and not stream_types(ddb, events_table, message_stream))

    # 1. The same MessageRequested three times: one send.
    # Once alone, then twice in one SQS batch (EventBridge delivers at least once).
    answers = [invoke(port, "channel", requested), invoke(port, "channel", sqs_batch([requested, requested]))]
    for i, answer in enumerate(answers, 1):
        if answer.get("batchItemFailures") != []:
            raise SmokeFailure(f"channel: batch {i} of message-requested.json: {answer}")
    print("ok   channel: three deliveries of message-requested.json, no batch item failures")
    types = stream_types(ddb, events_table, message_stream)
    check(f"channel: {message_stream} holds MessageClaimed, MessageSent",
          types == ["MessageClaimed", "MessageSent"], json.dumps(types))
    emails = sent_emails(endpoint, message_id)
    check("channel: moto's SES received exactly one email for the message",
          len(emails) == 1, f"{len(emails)} emails")
    email = emails[0]
    raw = email["raw_data"]
    check("channel: sent from FROM_ADDRESS to the customer",
          parseaddr(email.get("source") or "")[1] == parseaddr(from_address)[1]
          and address in [parseaddr(d)[1] for d in email.get("destinations", [])]
          and f"\r\nTo: {address}\r\n" in raw,
          json.dumps({k: email.get(k) for k in ("source", "destinations")}))
    check("channel: marketing email carries RFC 8058 one-click unsubscribe headers",
          f"\r\nList-Unsubscribe: <{public_base_url}/u/" in raw
          and "\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n" in raw,
          raw[:1500])

    # 2. A permanent bounce of that message: recorded once.
    bounce = json.loads((CHANNEL / "ses-bounce-permanent.json").read_text())
    answer = invoke(port, "channel", bounce)
    check("channel: ses-bounce-permanent.json handled",
          answer.get("batchItemFailures") == [], json.dumps(answer))
    types = stream_types(ddb, events_table, message_stream)
    check("channel: EmailBounced on the message stream",
          types == ["MessageClaimed", "MessageSent", "EmailBounced"], json.dumps(types))
    customer_types = stream_types(ddb, events_table, f"customer-{customer_id}")
    check("channel: the bounce invalidated the customer's email (CustomerEmailInvalidated)",
          customer_types[-1:] == ["CustomerEmailInvalidated"], json.dumps(customer_types))
    answer = invoke(port, "channel", bounce)
    check("channel: the same bounce again is a duplicate",
          answer.get("batchItemFailures") == []
          and stream_types(ddb, events_table, message_stream) == types,
          json.dumps(answer))

    # 3. The deferral timer of a message that was sent already: nothing more.
    timer = json.loads((CHANNEL / "timer-fired-deferral.json").read_text())
    answer = invoke(port, "channel", timer)
    check("channel: timer-fired-deferral.json handled",
          answer.get("batchItemFailures") == [], json.dumps(answer))
    check("channel: the timer appended nothing and sent nothing",
          stream_types(ddb, events_table, message_stream) == types
          and len(sent_emails(endpoint, message_id)) == 1)


if __name__ == "__main__":
    sys.exit(smoke_main(run, "channel", __doc__))
